//! The calibrated TSC against the other clocks the machine has.

use drivers::tsc;

use super::{ensure, Test, TestResult};

pub const TESTS: &[Test] = &[Test::new("time::tsc_agrees_with_hpet_and_pm_timer", tsc_agrees)];

const WINDOW_NS: u64 = 100_000_000;
const TOLERANCE_PERCENT: u64 = 5;

fn within_tolerance(tsc_ns: u64, other_ns: u64) -> bool {
    tsc_ns.abs_diff(other_ns) * 100 <= other_ns * TOLERANCE_PERCENT
}

/// Measures the same interval with the TSC and each independent clock.
fn tsc_agrees() -> TestResult {
    let facts = crate::FACTS.get().expect("boot facts");
    ensure!(facts.hpet.is_some() || facts.pm_timer.is_some(), "no HPET and no PM timer to check the TSC against");
    if let Some(hpet) = &facts.hpet {
        let (c0, t0) = (hpet.counter(), tsc::now_ns());
        tsc::delay_ns(WINDOW_NS);
        let (c1, t1) = (hpet.counter(), tsc::now_ns());
        let (tsc_ns, hpet_ns) = (t1 - t0, hpet.ticks_to_ns(c1 - c0));
        log::info!("time: {WINDOW_NS} ns by TSC = {hpet_ns} ns by HPET");
        ensure!(within_tolerance(tsc_ns, hpet_ns), "TSC says {tsc_ns} ns, HPET {hpet_ns} ns");
    }
    if let Some(pm) = &facts.pm_timer {
        let (c0, t0) = (pm.read(), tsc::now_ns());
        tsc::delay_ns(WINDOW_NS);
        let (c1, t1) = (pm.read(), tsc::now_ns());
        let (tsc_ns, pm_ns) = (t1 - t0, pm.ticks_to_ns(pm.elapsed(c0, c1)));
        log::info!("time: {WINDOW_NS} ns by TSC = {pm_ns} ns by PM timer");
        ensure!(within_tolerance(tsc_ns, pm_ns), "TSC says {tsc_ns} ns, PM timer {pm_ns} ns");
    }
    Ok(())
}
