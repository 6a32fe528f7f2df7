//! What the kernel needs from the ACPI tables: the CPUs in the MADT, the
//! local APIC address, and the HPET and PM timer for timekeeping.
//!
//! Parsing is done by the `acpi` crate; this module only maps physical
//! addresses through the direct map and distils the result.

use acpi::{
    fadt::Fadt,
    madt::{Madt, MadtEntry},
    mcfg::Mcfg,
    AcpiHandler, AcpiTables, HpetInfo, PhysicalMapping,
};
use arrayvec::ArrayVec;
use core::ptr::NonNull;
use x86_64::PhysAddr;

use crate::lapic::DEFAULT_XAPIC_PHYS;
use crate::pm_timer::PmTimer;

pub use acpi::AcpiError;

/// Upper bound on MADT processor entries we record. CPUs beyond what the
/// kernel can run are still counted in `cpus_total`.
pub const MAX_MADT_CPUS: usize = 256;

/// What the ACPI tables say about the machine: its CPUs, interrupt and
/// timer hardware, and PCIe configuration space.
#[derive(Debug)]
pub struct AcpiInfo {
    /// APIC ids of the enabled processors, in MADT order.
    pub apic_ids: ArrayVec<u32, MAX_MADT_CPUS>,
    /// Enabled processors in the MADT, including any beyond `apic_ids`.
    pub cpus_total: u32,
    pub lapic_phys: PhysAddr,
    pub hpet_phys: Option<PhysAddr>,
    pub pm_timer: Option<PmTimer>,
    /// PCIe memory-mapped configuration of segment 0, from the MCFG.
    pub ecam: Option<Ecam>,
}

/// Where ECAM puts the configuration space of buses `buses`.
#[derive(Debug, Clone)]
pub struct Ecam {
    pub phys: PhysAddr,
    pub buses: core::ops::RangeInclusive<u8>,
}

/// Maps ACPI tables through the bootloader's direct map of physical memory.
#[derive(Clone)]
struct DirectMap {
    offset: u64,
}

impl AcpiHandler for DirectMap {
    unsafe fn map_physical_region<T>(&self, phys: usize, size: usize) -> PhysicalMapping<Self, T> {
        let virt = (phys as u64 + self.offset) as *mut T;
        // SAFETY: the direct map covers all physical memory (and at least
        // the first 4 GiB), so `virt` is mapped; it is never null because
        // the offset lies in the upper half.
        unsafe { PhysicalMapping::new(phys, NonNull::new_unchecked(virt), size, size, self.clone()) }
    }

    fn unmap_physical_region<T>(_region: &PhysicalMapping<Self, T>) {}
}

/// MADT flag: the processor is enabled and may be started.
const MADT_ENABLED: u32 = 1;

/// Reads the platform description from the tables under `rsdp_phys`.
///
/// # Safety
/// `rsdp_phys` must be the RSDP the firmware reported and `phys_offset` the
/// offset of a direct map covering all tables it references.
pub unsafe fn read_platform(rsdp_phys: PhysAddr, phys_offset: u64) -> Result<AcpiInfo, AcpiError> {
    let handler = DirectMap { offset: phys_offset };
    // SAFETY: per this function's contract.
    let tables = unsafe { AcpiTables::from_rsdp(handler, rsdp_phys.as_u64() as usize)? };

    let madt = tables.find_table::<Madt>()?;
    let mut platform = AcpiInfo {
        apic_ids: ArrayVec::new(),
        cpus_total: 0,
        lapic_phys: match madt.get().local_apic_address {
            0 => DEFAULT_XAPIC_PHYS,
            // A 32-bit field: always a valid physical address.
            a => PhysAddr::new(a as u64),
        },
        hpet_phys: None,
        pm_timer: None,
        ecam: None,
    };
    for entry in madt.get().entries() {
        let (apic_id, flags) = match entry {
            MadtEntry::LocalApic(e) => (e.apic_id as u32, e.flags),
            MadtEntry::LocalX2Apic(e) => (e.x2apic_id, e.flags),
            MadtEntry::LocalApicAddressOverride(e) => {
                // An override beyond 52 bits no machine can have: ignored.
                if let Ok(a) = PhysAddr::try_new(e.local_apic_address) {
                    platform.lapic_phys = a;
                }
                continue;
            }
            _ => continue,
        };
        if flags & MADT_ENABLED == 0 || platform.apic_ids.contains(&apic_id) {
            continue;
        }
        platform.cpus_total += 1;
        let _ = platform.apic_ids.try_push(apic_id);
    }

    platform.hpet_phys = HpetInfo::new(&tables).ok().and_then(|h| PhysAddr::try_new(h.base_address as u64).ok());
    if let Ok(mcfg) = tables.find_table::<Mcfg>() {
        // ECAM's base address is that of bus 0 even when the range starts later.
        platform.ecam = mcfg.get().entries().iter().find(|e| { e.pci_segment_group } == 0).and_then(|e| {
            let phys = PhysAddr::try_new(e.base_address).ok()?;
            Some(Ecam { phys, buses: e.bus_number_start..=e.bus_number_end })
        });
    }
    if let Ok(fadt) = tables.find_table::<Fadt>() {
        if let Ok(Some(block)) = fadt.pm_timer_block() {
            if block.address_space == acpi::address::AddressSpace::SystemIo {
                platform.pm_timer =
                    Some(PmTimer { port: block.address as u16, is_32bit: { fadt.flags }.pm_timer_is_32_bit() });
            }
        }
    }
    Ok(platform)
}
