//! The 8254 programmable interval timer, used only as a known-frequency
//! reference to calibrate the TSC (the last resort, after the HPET and the
//! PM timer). Channel 2 is gated through port 0x61 so no interrupt is
//! involved.

use x86_64::instructions::port::Port;

pub const PIT_HZ: u64 = 1_193_182;

const CHANNEL2_DATA: u16 = 0x42;
const COMMAND: u16 = 0x43;
const GATE_PORT: u16 = 0x61;
const GATE: u8 = 0x01;
const SPEAKER: u8 = 0x02;

/// Channel 2, lobyte/hibyte access, mode 2 (rate generator), binary.
const CH2_RATE: u8 = 0b1011_0100;
/// Channel 2, counter latch.
const CH2_LATCH: u8 = 0b1000_0000;

/// Channel 2 counting down from 65536 over and over, read as ticks elapsed
/// modulo 2^16 (wraps every 55 ms: extend it with `calibrate::Unwrap`).
pub struct FreeRunning {
    gate_idle: u8,
}

impl FreeRunning {
    /// Starts channel 2 in rate-generator mode with the longest period.
    pub fn start() -> FreeRunning {
        let mut gate = Port::<u8>::new(GATE_PORT);
        let mut command = Port::<u8>::new(COMMAND);
        let mut data = Port::<u8>::new(CHANNEL2_DATA);
        // SAFETY: ports 0x42, 0x43 and 0x61 are the PIT channel 2 and its
        // gate on every PC; only the calibration code (BSP, before APs
        // start) uses them.
        unsafe {
            let g = gate.read() & !(GATE | SPEAKER);
            gate.write(g | GATE); // gate high: counts once loaded
            command.write(CH2_RATE);
            data.write(0); // 0 is 65536
            data.write(0);
            FreeRunning { gate_idle: g }
        }
    }

    /// Ticks elapsed since `start`, modulo 2^16.
    pub fn read(&self) -> u64 {
        let mut command = Port::<u8>::new(COMMAND);
        let mut data = Port::<u8>::new(CHANNEL2_DATA);
        // SAFETY: as in `start`; the latch freezes the count for the two
        // byte reads, so they belong together.
        let count = unsafe {
            command.write(CH2_LATCH);
            let lo = data.read() as u16;
            let hi = data.read() as u16;
            lo | hi << 8
        };
        0u16.wrapping_sub(count) as u64
    }
}

impl Drop for FreeRunning {
    fn drop(&mut self) {
        // SAFETY: as in `start`; gate low stops channel 2.
        unsafe { Port::<u8>::new(GATE_PORT).write(self.gate_idle) };
    }
}
