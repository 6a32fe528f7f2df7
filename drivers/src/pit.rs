//! The 8254 programmable interval timer, used only as a known-frequency
//! reference to calibrate the TSC. Channel 2 is gated through port 0x61 so
//! no interrupt is involved.

use x86_64::instructions::port::Port;

pub const PIT_HZ: u64 = 1_193_182;

const CHANNEL2_DATA: u16 = 0x42;
const COMMAND: u16 = 0x43;
const GATE_PORT: u16 = 0x61;
/// Channel 2, lobyte/hibyte access, mode 0 (interrupt on terminal count).
const CH2_ONESHOT: u8 = 0b1011_0000;
const GATE: u8 = 0x01;
const SPEAKER: u8 = 0x02;
const OUT2: u8 = 0x20;

/// Bound on polls of OUT2: far more than a 55 ms countdown can take.
const MAX_POLLS: u64 = 1 << 32;

/// Counts `ticks` PIT ticks on channel 2 and returns `sample()` taken right
/// after the countdown starts and right after it ends, or `None` if the
/// PIT never signalled the end (no PIT).
pub fn measure(ticks: u16, mut sample: impl FnMut() -> u64) -> Option<(u64, u64)> {
    let mut gate = Port::<u8>::new(GATE_PORT);
    let mut command = Port::<u8>::new(COMMAND);
    let mut data = Port::<u8>::new(CHANNEL2_DATA);
    // SAFETY: ports 0x42, 0x43 and 0x61 are the PIT channel 2 and its gate
    // on every PC; only the calibration code (BSP, before APs start) uses
    // them.
    unsafe {
        let g = gate.read() & !(GATE | SPEAKER);
        gate.write(g); // gate low: counter holds
        command.write(CH2_ONESHOT);
        data.write(ticks as u8);
        data.write((ticks >> 8) as u8);
        let start = sample();
        gate.write(g | GATE); // rising gate edge starts the countdown
        let mut polls = 0u64;
        while gate.read() & OUT2 == 0 {
            polls += 1;
            if polls > MAX_POLLS {
                return None;
            }
        }
        let end = sample();
        gate.write(g);
        Some((start, end))
    }
}
