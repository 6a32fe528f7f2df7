//! Counter snapshots that cross crates: `smp` counts TLB work and `bench`
//! reports it, and neither depends on the other, so the one snapshot type
//! lives here, below both.

use core::ops::{AddAssign, Sub};

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

impl AddAssign for TlbSnapshot {
    fn add_assign(&mut self, o: TlbSnapshot) {
        self.shootdowns = self.shootdowns.wrapping_add(o.shootdowns);
        self.targets = self.targets.wrapping_add(o.targets);
        self.ipis = self.ipis.wrapping_add(o.ipis);
        self.pages_invalidated = self.pages_invalidated.wrapping_add(o.pages_invalidated);
        self.full_flushes = self.full_flushes.wrapping_add(o.full_flushes);
    }
}

impl Sub for TlbSnapshot {
    type Output = TlbSnapshot;

    /// What happened between two snapshots of the same CPU.
    fn sub(self, o: TlbSnapshot) -> TlbSnapshot {
        TlbSnapshot {
            shootdowns: self.shootdowns.wrapping_sub(o.shootdowns),
            targets: self.targets.wrapping_sub(o.targets),
            ipis: self.ipis.wrapping_sub(o.ipis),
            pages_invalidated: self.pages_invalidated.wrapping_sub(o.pages_invalidated),
            full_flushes: self.full_flushes.wrapping_sub(o.full_flushes),
        }
    }
}
