//! The HPET main counter: a second, independent clock used to check the
//! TSC calibration.

use core::ptr::{read_volatile, write_volatile};

const CAPABILITIES: usize = 0x00;
const CONFIG: usize = 0x10;
const MAIN_COUNTER: usize = 0xF0;
const ENABLE_CNF: u64 = 1;

pub struct Hpet {
    base: *mut u64,
    period_fs: u64,
}

// SAFETY: the HPET registers are global MMIO; reads of the main counter are
// safe from any CPU and the only write (enable) is idempotent.
unsafe impl Send for Hpet {}
// SAFETY: as above.
unsafe impl Sync for Hpet {}

impl Hpet {
    /// Starts the main counter if it is stopped.
    ///
    /// # Safety
    /// `virt_base` must map the HPET register block (1 KiB) for the life of
    /// the returned value.
    pub unsafe fn new(virt_base: u64) -> Option<Hpet> {
        let base = virt_base as *mut u64;
        // SAFETY: per the contract the block is mapped; register offsets are
        // from the HPET specification.
        let caps = unsafe { read_volatile(base.byte_add(CAPABILITIES)) };
        let period_fs = caps >> 32;
        if period_fs == 0 || period_fs > 100_000_000 {
            return None; // the spec caps the period at 100 ns
        }
        // SAFETY: as above; setting ENABLE_CNF only starts the counter.
        unsafe {
            let cfg = read_volatile(base.byte_add(CONFIG));
            write_volatile(base.byte_add(CONFIG), cfg | ENABLE_CNF);
        }
        Some(Hpet { base, period_fs })
    }

    pub fn counter(&self) -> u64 {
        // SAFETY: `new`'s contract keeps the block mapped.
        unsafe { read_volatile(self.base.byte_add(MAIN_COUNTER)) }
    }

    pub fn ticks_to_ns(&self, ticks: u64) -> u64 {
        (ticks as u128 * self.period_fs as u128 / 1_000_000) as u64
    }
}
