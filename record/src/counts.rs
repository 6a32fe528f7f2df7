//! Counter snapshots that cross crates: `smp` counts TLB work and `bench`
//! reports it, and neither depends on the other, so the one snapshot type
//! lives here, below both.

/// One CPU's TLB and IPI counts at one moment (or a sum over CPUs).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct TlbSnapshot {
    /// Shootdowns this CPU started.
    pub shootdowns: u64,
    /// CPUs other than itself those shootdowns asked.
    pub targets: u64,
    /// IPIs this CPU sent (ICR writes; a broadcast is one), for shootdowns
    /// or anything else.
    pub ipis: u64,
    /// Pages this CPU invalidated one by one (for itself or others).
    pub pages_invalidated: u64,
    /// Full flushes this CPU performed.
    pub full_flushes: u64,
}

crate::snapshot_arithmetic!(TlbSnapshot { shootdowns, targets, ipis, pages_invalidated, full_flushes });

/// Implements `Sub` (what happened between two snapshots of one CPU) and
/// `AddAssign` (a sum over CPUs) for a snapshot struct, from its field
/// list written once: `u64` fields wrap (counters wrap too), `nested`
/// fields are snapshots with these operations themselves.
#[macro_export]
macro_rules! snapshot_arithmetic {
    ($snap:ident { $($field:ident),* $(,)? } $(nested { $($nested:ident),* $(,)? })?) => {
        impl core::ops::Sub for $snap {
            type Output = $snap;

            fn sub(self, o: $snap) -> $snap {
                $snap {
                    $($field: self.$field.wrapping_sub(o.$field),)*
                    $($($nested: self.$nested - o.$nested,)*)?
                }
            }
        }

        impl core::ops::AddAssign for $snap {
            fn add_assign(&mut self, o: $snap) {
                $(self.$field = self.$field.wrapping_add(o.$field);)*
                $($(self.$nested += o.$nested;)*)?
            }
        }
    };
}
