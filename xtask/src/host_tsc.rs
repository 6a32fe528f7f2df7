//! The host's TSC rate, measured against its monotonic clock, to check the
//! guest's calibration. Under TCG the guest's `rdtsc` reads the host's TSC
//! (plus an offset), so a correct calibration reports the host's rate; a
//! boot that disagrees by more than 1% has every ns and ops/s figure off by
//! as much. Under KVM the guest TSC may be scaled, so there the comparison
//! means nothing; xtask only runs TCG today.
//!
//! The measurement is bracketed like the guest's (monotonic clock, TSC,
//! monotonic clock; the tightest of a few), so a busy host that preempts
//! xtask spoils an attempt, not the figure.

use std::time::Instant;

/// More than this apart (1%), a boot's TSC frequency is flagged.
pub const MAX_DISAGREEMENT_PPM: u64 = 10_000;
/// The note every report and warning carries with the comparison.
pub const TCG_ONLY: &str = "meaningful under TCG only, where the guest reads the host's TSC";

const WINDOWS: usize = 4;
const WINDOW_NS: u64 = 50_000_000;
const ATTEMPTS: usize = 8;
/// A bracket wider than this was preempted.
const MAX_BRACKET_NS: u64 = 20_000;

/// The monotonic clock before and after a TSC read (ns from a base).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sample {
    pub before_ns: u64,
    pub tsc: u64,
    pub after_ns: u64,
}

impl Sample {
    fn width(&self) -> u64 {
        self.after_ns.saturating_sub(self.before_ns)
    }
}

/// A measured rate and its worst-case error from the brackets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    pub hz: u64,
    pub bound_ppm: u64,
}

/// The rate between two samples; `None` unless both brackets are tight and
/// time and TSC both advanced.
pub fn window(start: &Sample, end: &Sample) -> Option<Rate> {
    if start.width() > MAX_BRACKET_NS || end.width() > MAX_BRACKET_NS {
        return None;
    }
    let ns2 = (end.before_ns + end.after_ns).checked_sub(start.before_ns + start.after_ns).filter(|&d| d > 0)?;
    let ticks = end.tsc.checked_sub(start.tsc).filter(|&d| d > 0)?;
    let hz = (2 * ticks as u128 * 1_000_000_000 / ns2 as u128) as u64;
    let bound_ppm = ((start.width() + end.width()) as u128 * 1_000_000).div_ceil(ns2 as u128) as u64;
    Some(Rate { hz, bound_ppm })
}

/// The window with the smallest bound (the first of equals).
pub fn best(windows: &[Rate]) -> Option<Rate> {
    windows.iter().copied().reduce(|b, w| if w.bound_ppm < b.bound_ppm { w } else { b })
}

/// How far the guest's figure is from the host's, in ppm of the host's.
pub fn disagreement_ppm(guest_hz: u64, host_hz: u64) -> Option<u64> {
    (host_hz > 0).then(|| (guest_hz.abs_diff(host_hz) as u128 * 1_000_000 / host_hz as u128) as u64)
}

/// The warning for a boot whose TSC frequency is more than 1% from the
/// host's, or `None` when it agrees or either figure is missing.
pub fn flag(guest_hz: Option<u64>, host_hz: Option<u64>) -> Option<String> {
    let (guest, host) = (guest_hz?, host_hz?);
    let ppm = disagreement_ppm(guest, host)?;
    (ppm > MAX_DISAGREEMENT_PPM).then(|| {
        format!(
            "the guest calibrated its TSC at {:.3} GHz but the host's ticks at {:.3} GHz ({:.1}% apart, more than {}%): \
             this boot's ns and ops/s figures are off by as much ({TCG_ONLY})",
            guest as f64 / 1e9,
            host as f64 / 1e9,
            ppm as f64 / 1e4,
            MAX_DISAGREEMENT_PPM / 10_000
        )
    })
}

// `_rdtsc` is an `unsafe` intrinsic; this is the crate's only `unsafe`.
#[allow(unsafe_code)]
fn rdtsc() -> u64 {
    // SAFETY: RDTSC exists on every x86_64 CPU and has no side effects.
    unsafe { std::arch::x86_64::_rdtsc() }
}

/// The tightest of `ATTEMPTS` brackets.
fn sample(base: Instant) -> Sample {
    let ns = || base.elapsed().as_nanos() as u64;
    (0..ATTEMPTS)
        .map(|_| {
            let before_ns = ns();
            let tsc = rdtsc();
            Sample { before_ns, tsc, after_ns: ns() }
        })
        .min_by_key(Sample::width)
        .expect("ATTEMPTS > 0")
}

/// Measures the host's TSC rate over `WINDOWS` windows of 50 ms (200 ms in
/// all). `None` when no window could be bracketed (a host so loaded that
/// every attempt was preempted).
pub fn measure() -> Option<Rate> {
    let base = Instant::now();
    let windows: Vec<Rate> = (0..WINDOWS)
        .filter_map(|_| {
            let start = sample(base);
            std::thread::sleep(std::time::Duration::from_nanos(WINDOW_NS));
            window(&start, &sample(base))
        })
        .collect();
    best(&windows)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(before_ns: u64, tsc: u64, after_ns: u64) -> Sample {
        Sample { before_ns, tsc, after_ns }
    }

    #[test]
    fn window_arithmetic_and_bound() {
        // 50 ms, 129.8e6 ticks: 2.596 GHz; brackets 100 + 300 ns: 4 ppm.
        let r = window(&s(1_000, 0, 1_100), &s(50_000_900, 129_800_000, 50_001_200)).unwrap();
        assert_eq!(r, Rate { hz: 2_596_000_000, bound_ppm: 4 });
    }

    #[test]
    fn a_preempted_bracket_is_rejected() {
        // Preempted for 4 ms between the clock read and the TSC read.
        assert_eq!(window(&s(0, 0, 100), &s(50_000_000, 129_800_000, 54_000_000)), None);
        // Time or TSC standing still.
        assert_eq!(window(&s(0, 0, 100), &s(0, 5, 100)), None);
        assert_eq!(window(&s(0, 5, 100), &s(1_000, 5, 1_100)), None);
    }

    #[test]
    fn best_is_the_tightest_window() {
        let ws = [
            Rate { hz: 2_700_000_000, bound_ppm: 300 },
            Rate { hz: 2_596_000_000, bound_ppm: 2 },
            Rate { hz: 2_597_000_000, bound_ppm: 2 },
        ];
        assert_eq!(best(&ws), Some(ws[1]));
        assert_eq!(best(&[]), None);
    }

    #[test]
    fn flags_more_than_one_percent() {
        let host = Some(2_596_000_000);
        // The figures boots reported under load with the old calibration.
        assert_eq!(flag(Some(2_601_000_000), host), None); // 0.19%
        let w = flag(Some(2_700_000_000), host).expect("4% is flagged");
        assert!(
            w.contains("2.700 GHz") && w.contains("2.596 GHz") && w.contains("4.0% apart") && w.contains("TCG"),
            "{w}"
        );
        assert!(flag(Some(3_190_000_000), host).is_some());
        assert!(flag(Some(2_560_000_000), host).is_some(), "low is flagged too (1.4%)");
        // Exactly 1% is not more than 1%.
        assert_eq!(flag(Some(2_020_000_000), Some(2_000_000_000)), None);
        assert!(flag(Some(2_020_002_000), Some(2_000_000_000)).is_some());
        // Nothing to compare.
        assert_eq!(flag(None, host), None);
        assert_eq!(flag(Some(1), None), None);
        assert_eq!(flag(Some(1), Some(0)), None);
    }

    #[test]
    fn this_host_measures_a_plausible_rate() {
        let r = measure().expect("some window bracketed");
        assert!((100_000_000..100_000_000_000).contains(&r.hz), "{r:?}");
        assert!(r.bound_ppm < 2_000, "{r:?}");
    }
}
