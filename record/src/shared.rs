//! Facts both sides must agree on, kept here because `record` is the one
//! crate the kernel and the (stable-built) host tool both depend on.

/// Most CPUs the kernel runs on (its CPU sets are one 64-bit word). `smp`
/// and `mm` size their per-CPU tables with it; xtask refuses a larger
/// `--smp` before booting instead of letting the guest ignore the rest.
pub const MAX_CPUS: u32 = 64;

/// Bytes in a page: the one definition, for `mm` (which re-exports it),
/// `smp`'s shootdown ranges and xtask's swap-disk sizes.
pub const PAGE_SIZE: u64 = 4096;

/// Where the bootloader maps the kernel ELF (`Mapping::FixedAddress` in the
/// kernel's bootloader config). The ELF is position-independent, so its
/// symbols are this much below their run-time addresses: gdb is told the
/// offset (`symbol-file -o`).
pub const KERNEL_BASE: u64 = 0xFFFF_8000_0000_0000;

/// Every benchmark in the guest's table (`bench::workloads::all`), in its
/// order. A host test in `bench` checks the table against this list, and
/// xtask refuses a `bench --only` that selects none of them.
pub const BENCHMARKS: &[&str] = &[
    "floor.clock",
    "floor.rmw",
    "floor.zero",
    "floor.ipi",
    "frames.pair",
    "frames.batch",
    "frames.remote",
    "vm.local",
    "vm.pipeline",
    "vm.global",
    "tlb.shootdown",
    "fault.anon",
    "fault.shared",
    "paging.thrash",
    "heap.small",
];

/// Whether benchmark `name` is selected by the comma-separated prefixes in
/// `only` (empty: all). Each word selects the names it is a prefix of, so
/// `frames` selects `frames.pair`, `frames.batch` and `frames.remote`.
pub fn selected(only: &str, name: &str) -> bool {
    let mut words = only.split(',').filter(|w| !w.is_empty()).peekable();
    words.peek().is_none() || words.any(|w| name.starts_with(w))
}

/// The accelerator the guest finds itself on, from the hypervisor CPUID
/// leaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[cfg_attr(feature = "parse", derive(serde::Deserialize))]
#[serde(rename_all = "lowercase")]
pub enum Accel {
    /// QEMU's TCG (vendor `TCGTCGTCGTCG`).
    Tcg,
    /// KVM (vendor `KVMKVMKVM\0\0\0`).
    Kvm,
    /// CPUID.1:ECX.31 is clear: no hypervisor says it is there.
    None,
    /// A hypervisor with another vendor string.
    Unknown,
}

impl Accel {
    /// Reads the answer of CPUID leaf 0x4000_0000 (vendor in EBX, ECX,
    /// EDX), given only when CPUID.1:ECX.31 (hypervisor present) is set:
    /// without it the leaf may return another leaf's data.
    pub fn from_cpuid(hypervisor_bit: bool, ebx: u32, ecx: u32, edx: u32) -> Accel {
        if !hypervisor_bit {
            return Accel::None;
        }
        let mut vendor = [0u8; 12];
        vendor[0..4].copy_from_slice(&ebx.to_le_bytes());
        vendor[4..8].copy_from_slice(&ecx.to_le_bytes());
        vendor[8..12].copy_from_slice(&edx.to_le_bytes());
        match &vendor {
            b"TCGTCGTCGTCG" => Accel::Tcg,
            b"KVMKVMKVM\0\0\0" => Accel::Kvm,
            _ => Accel::Unknown,
        }
    }

    /// The name the record format uses for it.
    pub fn name(self) -> &'static str {
        match self {
            Accel::Tcg => "tcg",
            Accel::Kvm => "kvm",
            Accel::None => "none",
            Accel::Unknown => "unknown",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(vendor: &[u8; 12]) -> (u32, u32, u32) {
        let w = |i: usize| u32::from_le_bytes(vendor[i..i + 4].try_into().unwrap());
        (w(0), w(4), w(8))
    }

    #[test]
    fn hypervisor_vendors() {
        let (b, c, d) = words(b"TCGTCGTCGTCG");
        assert_eq!(Accel::from_cpuid(true, b, c, d), Accel::Tcg);
        assert_eq!(Accel::from_cpuid(false, b, c, d), Accel::None, "no hypervisor bit: the leaf means nothing");
        let (b, c, d) = words(b"KVMKVMKVM\0\0\0");
        assert_eq!(Accel::from_cpuid(true, b, c, d), Accel::Kvm);
        let (b, c, d) = words(b"Microsoft Hv");
        assert_eq!(Accel::from_cpuid(true, b, c, d), Accel::Unknown);
        assert_eq!(Accel::from_cpuid(true, 0, 0, 0), Accel::Unknown);
    }

    #[test]
    fn names_match_the_serialised_form() {
        for a in [Accel::Tcg, Accel::Kvm, Accel::None, Accel::Unknown] {
            assert_eq!(serde_json::to_string(&a).unwrap(), format!("\"{}\"", a.name()));
        }
    }

    #[test]
    fn prefixes_select() {
        assert!(selected("", "frames.pair"));
        assert!(selected("frames", "frames.pair"));
        assert!(selected("vm.local,frames.remote", "frames.remote"));
        assert!(!selected("vm.local,frames.remote", "frames.pair"));
        assert!(!selected("bogus", "frames.pair"));
        assert!(!selected("fault.shared", "fault.anon"));
        assert!(selected(",fault", "fault.anon"));
    }

    #[test]
    fn benchmark_names_are_unique() {
        let mut names = BENCHMARKS.to_vec();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), BENCHMARKS.len());
    }
}
