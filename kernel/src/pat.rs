//! The page attribute table. Page-table entries pick a memory type with
//! their PWT/PCD bits (`mm::vm::CacheMode`); writing the architectural
//! reset layout on every CPU makes that choice mean the same everywhere,
//! whatever firmware left behind.

use x86_64::registers::model_specific::Msr;

const IA32_PAT: u32 = 0x277;
/// Entries 0..7: WB, WT, UC-, UC, then the same again.
pub const LAYOUT: u64 = 0x0007_0406_0007_0406;

/// Programs this CPU's PAT.
pub fn init() {
    let mut msr = Msr::new(IA32_PAT);
    // SAFETY: every x86_64 CPU has the PAT MSR; LAYOUT is its reset value,
    // which only selects memory types, and no mapping yet relies on a
    // different layout.
    unsafe { msr.write(LAYOUT) };
}

/// This CPU's PAT as the CPU holds it (for the tests).
#[cfg(feature = "test-hooks")]
pub fn read() -> u64 {
    // SAFETY: reading the PAT MSR has no side effects.
    unsafe { Msr::new(IA32_PAT).read() }
}
