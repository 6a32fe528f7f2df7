//! The calibrated TSC against the other clocks the machine has.
//!
//! Each check measures windows with bracketed reads (other clock, TSC,
//! other clock) so that a host descheduling this vCPU cannot spoil it: the
//! window with the tightest brackets decides, not "any of several". Under
//! QEMU every clock follows the host's, so a correct calibration agrees to
//! within the brackets plus the host's NTP slew of its monotonic clock.

use drivers::calibrate::Unwrap;
use drivers::tsc;

use super::{ensure, note, register, Failure, Test, TestResult};

/// Long enough that brackets of a few µs are a bound of a few hundred ppm.
const WINDOW_NS: u64 = 20_000_000;
const WINDOWS: usize = 6;
/// Brackets tried per sample; the tightest is kept.
const ATTEMPTS: usize = 4;
/// The TSC and the other clock must agree within this, plus the chosen
/// window's bracket bound and the calibration's own bound. 1000 ppm: NTP
/// may slew the host's monotonic clock (which the HPET and PM timer follow
/// under QEMU, the TSC does not) by up to 500 ppm; twice that leaves room,
/// and it is still a tenth of the 1% the host's report check allows. The
/// old PIT calibration's errors (0.19%, 4%, 23% under load) all fail it.
const TOLERANCE_PPM: u64 = 1_000;
/// A tightest window with a worse bound than this means the host never
/// let a bracket through: the check cannot be made.
const MAX_WINDOW_BOUND_PPM: u64 = 1_000;
/// Off by this much, the TSC must fail the same comparison: shows every
/// run that the check can see a 2% error.
const MUTATION_PERCENT: u64 = 2;

/// One window as both clocks saw it, from bracket midpoints.
#[derive(Clone, Copy, Debug)]
struct Measured {
    tsc_ticks: u64,
    other_ns: u64,
    /// Worst-case error of `other_ns` as the time between the TSC reads.
    bound_ns: u64,
}

impl Measured {
    /// The TSC's elapsed time at `hz` minus the other clock's, and what it
    /// may be: `Ok(diff)` within tolerance, `Err(diff)` beyond.
    fn check(&self, hz: u64) -> Result<u64, u64> {
        let tsc_ns = (self.tsc_ticks as u128 * 1_000_000_000 / hz as u128) as u64;
        let diff = tsc_ns.abs_diff(self.other_ns);
        let allowed = self.other_ns * (TOLERANCE_PPM + tsc::bound_ppm()) / 1_000_000 + self.bound_ns;
        if diff <= allowed {
            Ok(diff)
        } else {
            Err(diff)
        }
    }
}

/// Tightest of `ATTEMPTS` brackets: (other before, TSC, other after).
fn sample(read: &mut dyn FnMut() -> u64) -> (u64, u64, u64) {
    let mut best = (0, 0, u64::MAX);
    for _ in 0..ATTEMPTS {
        let (b, t, a) = (read(), tsc::rdtsc(), read());
        if a.saturating_sub(b) < best.2.saturating_sub(best.0) {
            best = (b, t, a);
        }
    }
    best
}

/// Measures `WINDOWS` windows against a clock read by `read` (a growing
/// count) whose ticks `to_ns` converts; returns the tightest.
fn tightest(read: &mut dyn FnMut() -> u64, to_ns: &dyn Fn(u64) -> u64) -> Result<Measured, &'static str> {
    // From the clock's stated tick, so a deschedule cannot resize it.
    let window_ticks = (WINDOW_NS as u128 * 1_000_000 / to_ns(1_000_000).max(1) as u128) as u64;
    let mut best: Option<Measured> = None;
    for _ in 0..WINDOWS {
        let s = sample(read);
        // Bounded: the TSC deadline stops a clock that does not advance.
        let deadline = tsc::now_ns() + 10 * WINDOW_NS;
        while read() - s.2 < window_ticks {
            if tsc::now_ns() > deadline {
                return Err("the clock stopped advancing");
            }
        }
        let e = sample(read);
        let mid2 = (e.0 + e.2) - (s.0 + s.2);
        let m = Measured {
            tsc_ticks: e.1 - s.1,
            other_ns: to_ns(mid2) / 2,
            // One tick more per bracket: a read of v means [v, v + 1).
            bound_ns: to_ns((s.2 - s.0) + (e.2 - e.0) + 2).div_ceil(2),
        };
        if best.is_none_or(|b| m.bound_ns < b.bound_ns) {
            best = Some(m);
        }
    }
    best.ok_or("no window")
}

/// Checks the calibrated TSC against one clock; returns how far apart they
/// were and the window's bound, both in ppm, for the note.
fn agrees(name: &str, read: &mut dyn FnMut() -> u64, to_ns: &dyn Fn(u64) -> u64) -> Result<(u64, u64), Failure> {
    let m = tightest(read, to_ns).map_err(|e| super::failure(format_args!("{name}: {e}")))?;
    let bound_ppm = m.bound_ns * 1_000_000 / m.other_ns.max(1);
    ensure!(
        bound_ppm <= MAX_WINDOW_BOUND_PPM,
        "{name}: the tightest of {WINDOWS} windows has a bound of {bound_ppm} ppm: {m:?}"
    );
    let hz = tsc::tsc_hz();
    let diff = m.check(hz);
    ensure!(
        diff.is_ok(),
        "{name}: TSC at {hz} Hz is off by {} ns in {} ns ({m:?})",
        diff.unwrap_or_else(|d| d),
        m.other_ns
    );
    let (up, down) = (hz + hz * MUTATION_PERCENT / 100, hz - hz * MUTATION_PERCENT / 100);
    ensure!(
        m.check(up).is_err() && m.check(down).is_err(),
        "{name}: a TSC off by {MUTATION_PERCENT}% would pass too: the check is blind ({m:?})"
    );
    let apart = diff.unwrap_or(0) * 1_000_000 / m.other_ns.max(1);
    Ok((apart, bound_ppm))
}

register!(Test::new("time::tsc_agrees_with_hpet_and_pm_timer", tsc_agrees));
/// Measures the same intervals with the TSC and each independent clock.
fn tsc_agrees() -> TestResult {
    let facts = crate::FACTS.get().expect("boot facts");
    ensure!(facts.hpet.is_some() || facts.pm_timer.is_some(), "no HPET and no PM timer to check the TSC against");
    let (mut hpet_ppm, mut pm_ppm) = (None, None);
    if let Some(hpet) = &facts.hpet {
        let mut u = Unwrap::new(hpet.counter_bits(), hpet.counter());
        hpet_ppm = Some(agrees("HPET", &mut || u.extend(hpet.counter()), &|t| hpet.ticks_to_ns(t))?);
    }
    if let Some(pm) = &facts.pm_timer {
        let mut u = Unwrap::new(if pm.is_32bit { 32 } else { 24 }, pm.read() as u64);
        pm_ppm = Some(agrees("PM timer", &mut || u.extend(pm.read() as u64), &|t| pm.ticks_to_ns(t))?);
    }
    note(format_args!(
        "TSC {} Hz (bound {} ppm) vs HPET {:?}, PM timer {:?} (ppm apart, window bound); allowed {TOLERANCE_PPM} ppm + bounds; {MUTATION_PERCENT}% off fails",
        tsc::tsc_hz(),
        tsc::bound_ppm(),
        hpet_ppm,
        pm_ppm
    ));
    Ok(())
}
