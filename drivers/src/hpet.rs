//! The HPET main counter: the reference the TSC is calibrated against
//! (`tsc::calibrate`) and one of the clocks the time test checks it with.

use core::ptr::{read_volatile, write_volatile};

const CAPABILITIES: usize = 0x00;
const CONFIG: usize = 0x10;
const MAIN_COUNTER: usize = 0xF0;
const ENABLE_CNF: u64 = 1;
/// Capabilities bit: the main counter is 64 bits wide (else 32).
const COUNT_SIZE_CAP: u64 = 1 << 13;

pub struct Hpet {
    base: *mut u64,
    period_fs: u64,
    bits: u32,
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
    pub unsafe fn new(virt_base: x86_64::VirtAddr) -> Option<Hpet> {
        let base = virt_base.as_mut_ptr::<u64>();
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
        let bits = if caps & COUNT_SIZE_CAP != 0 { 64 } else { 32 };
        Some(Hpet { base, period_fs, bits })
    }

    pub fn counter(&self) -> u64 {
        // SAFETY: `new`'s contract keeps the block mapped.
        unsafe { read_volatile(self.base.byte_add(MAIN_COUNTER)) }
    }

    /// The counter's tick, as the capabilities register states it.
    pub fn period_fs(&self) -> u64 {
        self.period_fs
    }

    /// Width of the main counter (32 or 64 bits).
    pub fn counter_bits(&self) -> u32 {
        self.bits
    }

    pub fn ticks_to_ns(&self, ticks: u64) -> u64 {
        (ticks as u128 * self.period_fs as u128 / 1_000_000) as u64
    }
}
