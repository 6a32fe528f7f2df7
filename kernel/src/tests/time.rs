//! The calibrated TSC against the other clocks the machine has.

use drivers::tsc;

use super::{ensure, Test, TestResult};

pub const TESTS: &[Test] = &[Test::new("time::tsc_agrees_with_hpet_and_pm_timer", tsc_agrees)];

const WINDOW_NS: u64 = 100_000_000;
const TOLERANCE_PERCENT: u64 = 5;
/// Windows measured per clock. A vCPU descheduled by the host between
/// reading the two clocks spoils one window; a miscalibrated TSC is off in
/// all of them. So the clock agrees if any window does.
const WINDOWS: usize = 5;

fn within_tolerance(tsc_ns: u64, other_ns: u64) -> bool {
    tsc_ns.abs_diff(other_ns) * 100 <= other_ns * TOLERANCE_PERCENT
}

/// Measures the same interval with the TSC and with `other` (a clock read
/// and its elapsed time in ns), up to `WINDOWS` times.
fn agrees(name: &str, read: &dyn Fn() -> u64, elapsed_ns: &dyn Fn(u64, u64) -> u64) -> TestResult {
    let mut last = (0, 0);
    for _ in 0..WINDOWS {
        let (c0, t0) = (read(), tsc::now_ns());
        tsc::delay_ns(WINDOW_NS);
        let (c1, t1) = (read(), tsc::now_ns());
        last = (t1 - t0, elapsed_ns(c0, c1));
        log::info!("time: {} ns by TSC = {} ns by {name}", last.0, last.1);
        if within_tolerance(last.0, last.1) {
            return Ok(());
        }
    }
    ensure!(false, "in {WINDOWS} windows TSC and {name} disagree; last: TSC {} ns, {name} {} ns", last.0, last.1);
    Ok(())
}

/// Measures the same interval with the TSC and each independent clock.
fn tsc_agrees() -> TestResult {
    let facts = crate::FACTS.get().expect("boot facts");
    ensure!(facts.hpet.is_some() || facts.pm_timer.is_some(), "no HPET and no PM timer to check the TSC against");
    if let Some(hpet) = &facts.hpet {
        agrees("HPET", &|| hpet.counter(), &|c0, c1| hpet.ticks_to_ns(c1 - c0))?;
    }
    if let Some(pm) = &facts.pm_timer {
        agrees("PM timer", &|| pm.read() as u64, &|c0, c1| pm.ticks_to_ns(pm.elapsed(c0 as _, c1 as _)))?;
    }
    Ok(())
}
