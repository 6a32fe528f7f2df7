//! Protection features every CPU turns on at start-up: CR0.WP (the kernel
//! honours read-only pages too), EFER.NXE (no-execute pages), CR4.SMEP
//! (the kernel never executes user pages) and CR4.SMAP (the kernel never
//! touches user pages by accident), each where CPUID reports it.

use core::arch::x86_64::{__cpuid, __cpuid_count};

use x86_64::registers::control::{Cr0, Cr0Flags, Cr4, Cr4Flags};
use x86_64::registers::model_specific::{Efer, EferFlags};

/// What CPUID says this CPU can do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Support {
    pub nx: bool,
    pub smep: bool,
    pub smap: bool,
}

/// Reads the feature bits from CPUID (leaf 0x8000_0001 EDX.20 for NX, leaf
/// 7 EBX.7 and EBX.20 for SMEP and SMAP), checking each leaf exists first:
/// a leaf above the maximum returns another leaf's data.
pub fn supported() -> Support {
    let max_basic = __cpuid(0).eax;
    let max_extended = __cpuid(0x8000_0000).eax;
    let nx = max_extended >= 0x8000_0001 && __cpuid(0x8000_0001).edx & (1 << 20) != 0;
    let leaf7 = if max_basic >= 7 { __cpuid_count(7, 0).ebx } else { 0 };
    Support { nx, smep: leaf7 & (1 << 7) != 0, smap: leaf7 & (1 << 20) != 0 }
}

/// Turns on every protection the running CPU supports. Runs on each CPU,
/// before it runs anything but kernel code; logs the result on the BSP.
pub fn enable() {
    let support = supported();
    // SAFETY: WP only makes the kernel fault on writes to read-only pages,
    // and the kernel writes only through writable mappings (stacks, heap,
    // direct map, statics).
    unsafe { Cr0::update(|f| f.insert(Cr0Flags::WRITE_PROTECT)) };
    if support.nx {
        // SAFETY: NXE only gives meaning to the NX bit, which the kernel's
        // page tables already use (the bootloader and the AP trampoline set
        // NXE before any code depends on it).
        unsafe { Efer::update(|f| f.insert(EferFlags::NO_EXECUTE_ENABLE)) };
    }
    let mut cr4 = Cr4Flags::empty();
    if support.smep {
        cr4 |= Cr4Flags::SUPERVISOR_MODE_EXECUTION_PROTECTION;
    }
    if support.smap {
        cr4 |= Cr4Flags::SUPERVISOR_MODE_ACCESS_PREVENTION;
    }
    // SAFETY: SMEP and SMAP only stop the kernel from executing or touching
    // USER pages; kernel code, data and stacks are never USER (only pages for
    // ring 3 are, and the kernel reaches those through the direct map).
    unsafe { Cr4::update(|f| f.insert(cr4)) };
    if smp::percpu::current_index() == 0 {
        log::info!(
            "cpu: write protect {}, NX {}, SMEP {}, SMAP {}",
            on_off(write_protect_enabled()),
            on_off(nx_enabled()),
            on_off(smep_enabled()),
            on_off(smap_enabled())
        );
    }
}

fn on_off(b: bool) -> &'static str {
    if b {
        "on"
    } else {
        "off"
    }
}

/// Whether the running CPU has CR0.WP set.
pub fn write_protect_enabled() -> bool {
    Cr0::read().contains(Cr0Flags::WRITE_PROTECT)
}

/// Whether the running CPU has EFER.NXE set.
pub fn nx_enabled() -> bool {
    Efer::read().contains(EferFlags::NO_EXECUTE_ENABLE)
}

/// Whether the running CPU has CR4.SMEP set.
pub fn smep_enabled() -> bool {
    Cr4::read().contains(Cr4Flags::SUPERVISOR_MODE_EXECUTION_PROTECTION)
}

/// Whether the running CPU has CR4.SMAP set.
pub fn smap_enabled() -> bool {
    Cr4::read().contains(Cr4Flags::SUPERVISOR_MODE_ACCESS_PREVENTION)
}
