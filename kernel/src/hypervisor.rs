//! Which accelerator the kernel runs on (TCG, KVM, none), for the Boot
//! record: xtask checks it against the `-accel` it asked QEMU for.

use core::arch::x86_64::__cpuid;

/// Reads CPUID.1:ECX.31 (a hypervisor is present) and, when set, the
/// vendor of hypervisor leaf 0x4000_0000. QEMU's TCG answers
/// `TCGTCGTCGTCG` there and KVM `KVMKVMKVM`; the decoding is
/// `record::Accel::from_cpuid` (host-tested).
pub fn detect() -> record::Accel {
    let hypervisor_bit = __cpuid(1).ecx & (1 << 31) != 0;
    if !hypervisor_bit {
        return record::Accel::None;
    }
    let leaf = __cpuid(0x4000_0000);
    record::Accel::from_cpuid(true, leaf.ebx, leaf.ecx, leaf.edx)
}
