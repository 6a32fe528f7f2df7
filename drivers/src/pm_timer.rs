//! The ACPI power-management timer: a 3.579545 MHz counter in I/O space,
//! the fallback second clock when there is no HPET.

use x86_64::instructions::port::Port;

pub const PM_TIMER_HZ: u64 = 3_579_545;

#[derive(Debug, Clone, Copy)]
pub struct PmTimer {
    pub port: u16,
    pub is_32bit: bool,
}

impl PmTimer {
    pub fn read(&self) -> u32 {
        // SAFETY: the port comes from the FADT's PM timer block; reading it
        // has no side effects.
        let v = unsafe { Port::<u32>::new(self.port).read() };
        if self.is_32bit {
            v
        } else {
            v & 0x00FF_FFFF
        }
    }

    /// Ticks between two reads, allowing one wrap of the counter.
    pub fn elapsed(&self, start: u32, end: u32) -> u64 {
        let mask: u64 = if self.is_32bit { 0xFFFF_FFFF } else { 0x00FF_FFFF };
        (end as u64).wrapping_sub(start as u64) & mask
    }

    pub fn ticks_to_ns(&self, ticks: u64) -> u64 {
        ticks * 1_000_000_000 / PM_TIMER_HZ
    }
}
