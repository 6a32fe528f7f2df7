//! The arithmetic of TSC calibration against a reference counter: taking
//! bracketed samples, turning pairs of them into a frequency with an error
//! bound, and choosing among windows. No hardware here: the reads come in
//! as closures, so host tests can feed clocks that get descheduled.
//!
//! Why brackets: a vCPU can be descheduled by the host between any two
//! instructions, for milliseconds. Reading reference, TSC, reference and
//! keeping the sample only when the two reference reads are close pins the
//! TSC read to a known instant within half that gap, whatever happened
//! before or after. A window is then two such samples a short time apart,
//! and its frequency is exact to within the two brackets over its length;
//! the window with the smallest such bound is the best estimate.

use arrayvec::ArrayVec;

/// Length of one reference tick: `fs_num / fs_den` femtoseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TickLength {
    pub fs_num: u64,
    pub fs_den: u64,
}

impl TickLength {
    /// A counter whose period is stated in femtoseconds (the HPET).
    pub const fn femtos(fs: u64) -> TickLength {
        TickLength { fs_num: fs, fs_den: 1 }
    }

    /// A counter of a known frequency (PM timer, PIT).
    pub const fn hz(hz: u64) -> TickLength {
        TickLength { fs_num: 1_000_000_000_000_000, fs_den: hz }
    }

    /// Reference ticks in `ns` nanoseconds, at least 1.
    pub fn ticks_in_ns(self, ns: u64) -> u64 {
        let ticks = ns as u128 * 1_000_000 * self.fs_den as u128 / self.fs_num as u128;
        (ticks as u64).max(1)
    }

    /// Femtoseconds in `ticks` reference ticks.
    pub fn fs(self, ticks: u128) -> u128 {
        ticks * self.fs_num as u128 / self.fs_den as u128
    }
}

/// Extends a counter of `bits` bits that wraps to a 64-bit count. Correct
/// as long as it is fed at least once per wrap, which the calibration loop
/// (reading continuously) does for every counter here (the PIT, the
/// shortest, wraps every 55 ms).
#[derive(Debug, Clone, Copy)]
pub struct Unwrap {
    mask: u64,
    last: u64,
    total: u64,
}

impl Unwrap {
    pub fn new(bits: u32, first: u64) -> Unwrap {
        let mask = if bits >= 64 { u64::MAX } else { (1u64 << bits) - 1 };
        Unwrap { mask, last: first & mask, total: 0 }
    }

    /// The count since the first value, given the next raw value.
    pub fn extend(&mut self, raw: u64) -> u64 {
        let raw = raw & self.mask;
        self.total = self.total.wrapping_add(raw.wrapping_sub(self.last) & self.mask);
        self.last = raw;
        self.total
    }
}

/// One bracketed reading: the reference before, the TSC, the reference after.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sample {
    pub ref_before: u64,
    pub tsc: u64,
    pub ref_after: u64,
}

impl Sample {
    /// The bracket: reference ticks between the two reference reads.
    pub fn width(&self) -> u64 {
        self.ref_after.saturating_sub(self.ref_before)
    }

    /// Twice the reference time of the TSC read (the bracket's midpoint),
    /// doubled to keep the half tick.
    fn mid2(&self) -> u128 {
        self.ref_before as u128 + self.ref_after as u128
    }
}

/// The frequency one window measured and how far off it can be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    pub hz: u64,
    /// Worst-case error from the two brackets, in parts per million.
    pub bound_ppm: u64,
}

/// How to measure; [`Plan::for_reference`] gives the one the kernel uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Plan {
    pub windows: usize,
    /// Reference ticks between a window's two samples.
    pub window_ticks: u64,
    /// Widest bracket a sample may have.
    pub max_bracket_ticks: u64,
    /// Brackets tried per sample; the tightest is kept.
    pub attempts: u32,
    /// Windows whose bound is above this are not kept.
    pub max_bound_ppm: u64,
    /// Fewer kept windows than this is a failed calibration.
    pub min_kept: usize,
    /// Bound on reference reads while waiting out one window, so a stopped
    /// counter is an error instead of a hang.
    pub max_reads: u64,
}

/// Most windows a plan may ask for.
pub const MAX_WINDOWS: usize = 16;
/// 10 ms windows: with brackets of a few µs (an emulated MMIO or port read)
/// that is a bound of a few hundred ppm; eight of them take 80 ms of boot.
pub const WINDOW_NS: u64 = 10_000_000;
pub const WINDOWS: usize = 8;
/// A bracket wider than 20 µs means the vCPU was interrupted inside it.
pub const MAX_BRACKET_NS: u64 = 20_000;
/// 0.2%: a kept window is good to well under the 1% the host checks.
pub const MAX_BOUND_PPM: u64 = 2_000;
pub const MIN_KEPT: usize = 3;

impl Plan {
    pub fn for_reference(len: TickLength) -> Plan {
        Plan {
            windows: WINDOWS,
            window_ticks: len.ticks_in_ns(WINDOW_NS),
            max_bracket_ticks: len.ticks_in_ns(MAX_BRACKET_NS),
            attempts: 8,
            max_bound_ppm: MAX_BOUND_PPM,
            min_kept: MIN_KEPT,
            // A reference read (MMIO or port I/O) takes well over 50 ns, so
            // a running counter ends a window in fewer than WINDOW_NS / 50
            // reads; ten times that, and it has stopped (about 2 s at 1 µs
            // a read, not minutes).
            max_reads: WINDOW_NS / 5,
        }
    }
}

/// The outcome: the chosen frequency and how much the kept windows agree.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Calibration {
    pub hz: u64,
    /// Error bound of the chosen window (ppm).
    pub bound_ppm: u64,
    /// (max − min) over the kept windows, relative to `hz` (ppm).
    pub spread_ppm: u64,
    pub kept: u32,
    pub windows: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CalibrationError {
    /// The reference counter did not advance a window's worth in
    /// `max_reads` reads.
    ReferenceStuck,
    /// Too few windows had tight brackets (the host kept interrupting).
    TooFewWindows { kept: u32, needed: u32 },
    /// The TSC did not advance, or a plan asked for no windows.
    Degenerate,
}

/// The frequency between two samples and its error bound; `None` when the
/// samples are not in order or the TSC did not advance.
pub fn window(start: &Sample, end: &Sample, len: TickLength) -> Option<Window> {
    let ref2 = end.mid2().checked_sub(start.mid2()).filter(|&d| d > 0)?;
    let tsc = end.tsc.checked_sub(start.tsc).filter(|&d| d > 0)? as u128;
    // hz = tsc / (ref2 / 2 ticks in seconds) = 2 · tsc · 1e15 / fs(ref2).
    let fs2 = len.fs(ref2);
    if fs2 == 0 {
        return None;
    }
    let hz = (2 * tsc * 1_000_000_000_000_000 / fs2) as u64;
    // Each TSC read lies within half its bracket of the midpoint, so the
    // elapsed reference time is off by at most (w_start + w_end) / 2:
    // relative to ref2 / 2 that is (w_start + w_end) / ref2. A counter read
    // of v means a time in [v, v + 1) ticks, so each bracket is one tick
    // wider than its reads' difference (a PM timer tick is 279 ns, longer
    // than an emulated read).
    let widths = start.width() as u128 + end.width() as u128 + 2;
    let bound_ppm = (widths * 1_000_000).div_ceil(ref2) as u64;
    Some(Window { hz, bound_ppm })
}

/// Keeps the windows within the plan's bound and chooses the tightest;
/// the spread of the kept ones says how consistent they are.
pub fn choose(windows: &[Window], plan: &Plan) -> Result<Calibration, CalibrationError> {
    if windows.is_empty() && plan.windows == 0 {
        return Err(CalibrationError::Degenerate);
    }
    let kept = || windows.iter().filter(|w| w.bound_ppm <= plan.max_bound_ppm);
    let count = kept().count();
    if count < plan.min_kept.max(1) {
        return Err(CalibrationError::TooFewWindows { kept: count as u32, needed: plan.min_kept.max(1) as u32 });
    }
    // A tight window can still be wrong: a reference counter that wrapped
    // more than once while the vCPU was descheduled (the PIT wraps every
    // 55 ms) loses whole wraps, and both brackets stay tight. Such a
    // window is far from the others; keep only windows that agree with
    // the median of the tight ones within their own bound plus
    // `max_bound_ppm`.
    let mut rates: ArrayVec<u64, MAX_WINDOWS> = kept().map(|w| w.hz).take(MAX_WINDOWS).collect();
    rates.sort_unstable();
    let median = rates[rates.len() / 2] as u128;
    let agrees = |w: &&Window| {
        (w.hz as u128).abs_diff(median) * 1_000_000 <= median * (w.bound_ppm + plan.max_bound_ppm) as u128
    };
    let kept = || windows.iter().filter(|w| w.bound_ppm <= plan.max_bound_ppm).filter(agrees);
    let count = kept().count();
    if count < plan.min_kept.max(1) {
        return Err(CalibrationError::TooFewWindows { kept: count as u32, needed: plan.min_kept.max(1) as u32 });
    }
    // First of the tightest, so equal bounds keep the earliest window.
    let best = kept().fold(None::<&Window>, |b, w| match b {
        Some(b) if b.bound_ppm <= w.bound_ppm => Some(b),
        _ => Some(w),
    });
    let best = best.ok_or(CalibrationError::Degenerate)?;
    let max = kept().map(|w| w.hz).max().unwrap_or(best.hz);
    let min = kept().map(|w| w.hz).min().unwrap_or(best.hz);
    let spread_ppm = ((max - min) as u128 * 1_000_000 / best.hz.max(1) as u128) as u64;
    Ok(Calibration {
        hz: best.hz,
        bound_ppm: best.bound_ppm,
        spread_ppm,
        kept: count as u32,
        windows: windows.len() as u32,
    })
}

/// The tightest of up to `plan.attempts` brackets, or `None` when none is
/// within `plan.max_bracket_ticks`. Stops early on a bracket of at most
/// one tick, which cannot be beaten.
pub fn sample(plan: &Plan, read_ref: &mut impl FnMut() -> u64, read_tsc: &mut impl FnMut() -> u64) -> Option<Sample> {
    let mut best: Option<Sample> = None;
    for _ in 0..plan.attempts.max(1) {
        let ref_before = read_ref();
        let tsc = read_tsc();
        let ref_after = read_ref();
        let s = Sample { ref_before, tsc, ref_after };
        if ref_after < ref_before {
            continue; // not monotonic: not a usable bracket
        }
        if best.is_none_or(|b| s.width() < b.width()) {
            best = Some(s);
        }
        if s.width() <= 1 {
            break;
        }
    }
    best.filter(|b| b.width() <= plan.max_bracket_ticks)
}

/// Runs `plan`: per window a start sample, a wait of `plan.window_ticks`
/// on the reference, an end sample. `read_ref` must return a count that
/// only grows (wrap it in [`Unwrap`]). Windows whose samples could not be
/// bracketed are dropped.
pub fn measure(
    plan: &Plan,
    len: TickLength,
    mut read_ref: impl FnMut() -> u64,
    mut read_tsc: impl FnMut() -> u64,
) -> Result<Calibration, CalibrationError> {
    if plan.windows == 0 {
        return Err(CalibrationError::Degenerate);
    }
    let mut windows: ArrayVec<Window, MAX_WINDOWS> = ArrayVec::new();
    for _ in 0..plan.windows.min(MAX_WINDOWS) {
        let start = sample(plan, &mut read_ref, &mut read_tsc);
        let from = start.map_or_else(&mut read_ref, |s| s.ref_after);
        let mut reads = 0u64;
        while read_ref().wrapping_sub(from) < plan.window_ticks {
            reads += 1;
            if reads > plan.max_reads {
                return Err(CalibrationError::ReferenceStuck);
            }
            // No PAUSE: under TCG it retakes QEMU's big lock, and each
            // reference read is slow enough already.
        }
        let end = sample(plan, &mut read_ref, &mut read_tsc);
        if let (Some(s), Some(e)) = (start, end) {
            if let Some(w) = window(&s, &e, len) {
                windows.push(w);
            }
        }
    }
    choose(&windows, plan)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::{Cell, RefCell};

    const TSC_HZ: u64 = 2_596_000_000;
    const HPET: TickLength = TickLength::femtos(10_000_000); // QEMU: 100 MHz
    const PM: TickLength = TickLength::hz(3_579_545);

    /// A guest whose clocks both follow one simulated time (ns). Every read
    /// costs some time; `pauses` lists, by read number, host deschedules.
    struct Sim {
        now_fs: Cell<u128>,
        reads: Cell<u64>,
        pauses: RefCell<Vec<(u64, u128)>>,
    }

    impl Sim {
        fn new(pauses: &[(u64, u64)]) -> Sim {
            Sim {
                now_fs: Cell::new(1_000_000_000_000_000),
                reads: Cell::new(0),
                pauses: RefCell::new(pauses.iter().map(|&(n, ns)| (n, ns as u128 * 1_000_000)).collect()),
            }
        }
        fn tick(&self, cost_ns: u128) {
            let n = self.reads.get() + 1;
            self.reads.set(n);
            let pause: u128 = self.pauses.borrow().iter().filter(|p| p.0 == n).map(|p| p.1).sum();
            self.now_fs.set(self.now_fs.get() + cost_ns * 1_000_000 + pause);
        }
        fn reference(&self, len: TickLength) -> u64 {
            self.tick(1_500); // an emulated MMIO read
            (self.now_fs.get() * len.fs_den as u128 / len.fs_num as u128) as u64
        }
        fn tsc(&self) -> u64 {
            self.tick(30);
            (self.now_fs.get() * TSC_HZ as u128 / 1_000_000_000_000_000) as u64
        }
    }

    fn ppm(hz: u64) -> u64 {
        (hz.abs_diff(TSC_HZ) as u128 * 1_000_000 / TSC_HZ as u128) as u64
    }

    fn run(sim: &Sim, len: TickLength) -> Result<Calibration, CalibrationError> {
        measure(&Plan::for_reference(len), len, || sim.reference(len), || sim.tsc())
    }

    #[test]
    fn steady_clocks_give_the_true_frequency() {
        for len in [HPET, PM] {
            let sim = Sim::new(&[]);
            let c = run(&sim, len).unwrap();
            assert!(ppm(c.hz) <= c.bound_ppm, "{c:?}");
            assert!(c.bound_ppm < 1_000, "{c:?}");
            assert_eq!((c.kept, c.windows), (WINDOWS as u32, WINDOWS as u32));
            assert!(c.spread_ppm <= 2 * c.bound_ppm, "{c:?}");
        }
    }

    #[test]
    fn deschedule_inside_brackets_is_rejected() {
        // 5 ms pauses between the first reference read and the TSC read of
        // many brackets: each spoils its attempt, never the result. (Read
        // numbers 1, 2, 3 are the first bracket of the first window.)
        let pauses: Vec<(u64, u64)> = (0..40).map(|i| (2 + i * 997, 5_000_000)).collect();
        let sim = Sim::new(&pauses);
        let c = run(&sim, HPET).unwrap();
        assert!(ppm(c.hz) <= c.bound_ppm, "{c:?} off by {} ppm", ppm(c.hz));
        assert!(c.bound_ppm < 1_000, "{c:?}");
    }

    #[test]
    fn unbracketed_reads_would_be_skewed() {
        // The same kind of pause, between the TSC read and a window's end
        // reference read, moves a plain two-read measurement by 50%: the
        // brackets are what protects the result.
        let (s, e) = (
            Sample { ref_before: 0, tsc: 0, ref_after: 0 },
            Sample {
                ref_before: 1_000_000,
                tsc: TSC_HZ / 100,
                ref_after: 1_500_000, // 5 ms pause after the TSC read
            },
        );
        let w = window(&s, &e, HPET).unwrap();
        assert!(w.bound_ppm > MAX_BOUND_PPM, "{w:?}");
        assert!(choose(&[w], &Plan { min_kept: 1, ..Plan::for_reference(HPET) }).is_err());
    }

    #[test]
    fn sample_keeps_a_tight_bracket_not_the_interrupted_one() {
        // The first attempt's TSC read (read 2) comes 3 ms late.
        let sim = Sim::new(&[(2, 3_000_000)]);
        let plan = Plan::for_reference(HPET);
        let s = sample(&plan, &mut || sim.reference(HPET), &mut || sim.tsc()).unwrap();
        assert!(s.width() <= 200, "{s:?}");
        assert!(s.ref_before > 300_000, "kept the interrupted attempt: {s:?}");
        // All attempts interrupted: no sample.
        let sim = Sim::new(&(0..8).map(|i| (2 + 3 * i, 100_000)).collect::<Vec<_>>());
        assert_eq!(sample(&plan, &mut || sim.reference(HPET), &mut || sim.tsc()), None);
    }

    #[test]
    fn every_bracket_of_a_window_interrupted_drops_that_window() {
        // Pause inside every attempt of the first window's start sample.
        let pauses: Vec<(u64, u64)> = (0..8).map(|i| (2 + 3 * i, 1_000_000)).collect();
        let sim = Sim::new(&pauses);
        let c = run(&sim, HPET).unwrap();
        assert_eq!((c.kept, c.windows), (WINDOWS as u32 - 1, WINDOWS as u32 - 1), "{c:?}");
        assert!(ppm(c.hz) <= c.bound_ppm, "{c:?}");
    }

    #[test]
    fn choose_keeps_the_tightest_and_reports_the_spread() {
        let plan = Plan::for_reference(HPET);
        let ws = [
            Window { hz: 2_600_000_000, bound_ppm: 300 },
            Window { hz: 3_190_000_000, bound_ppm: 230_000 }, // descheduled
            Window { hz: 2_596_000_000, bound_ppm: 120 },
            Window { hz: 2_597_000_000, bound_ppm: 120 },
            Window { hz: 2_595_000_000, bound_ppm: 400 },
        ];
        let c = choose(&ws, &plan).unwrap();
        assert_eq!((c.hz, c.bound_ppm, c.kept, c.windows), (2_596_000_000, 120, 4, 5));
        // (2.600 − 2.595) GHz relative to 2.596 GHz.
        assert_eq!(c.spread_ppm, 1_926);
    }

    #[test]
    fn a_tight_window_far_from_the_others_is_dropped() {
        // A PIT that wrapped during a 60 ms deschedule: 65536 ticks lost,
        // the window reads about 6× the true rate with tight brackets.
        let plan = Plan::for_reference(TickLength::hz(1_193_182));
        let ws = [
            Window { hz: 2_596_000_000, bound_ppm: 400 },
            Window { hz: 15_400_000_000, bound_ppm: 50 },
            Window { hz: 2_597_000_000, bound_ppm: 300 },
            Window { hz: 2_595_500_000, bound_ppm: 500 },
        ];
        let c = choose(&ws, &plan).unwrap();
        assert_eq!((c.hz, c.bound_ppm, c.kept, c.windows), (2_597_000_000, 300, 3, 4));
        assert!(c.spread_ppm < 1_000, "{c:?}");
        // Outliers that leave too few agreeing windows are an error.
        let ws = [ws[0], ws[1], Window { hz: 15_300_000_000, bound_ppm: 60 }];
        assert_eq!(choose(&ws, &plan), Err(CalibrationError::TooFewWindows { kept: 1, needed: 3 }));
    }

    #[test]
    fn too_few_tight_windows_is_an_error() {
        let plan = Plan::for_reference(HPET);
        let ws = [Window { hz: 1, bound_ppm: 10 }, Window { hz: 2, bound_ppm: 5_000 }, Window { hz: 3, bound_ppm: 9 }];
        assert_eq!(choose(&ws, &plan), Err(CalibrationError::TooFewWindows { kept: 2, needed: 3 }));
        assert_eq!(choose(&[], &plan), Err(CalibrationError::TooFewWindows { kept: 0, needed: 3 }));
    }

    #[test]
    fn window_arithmetic() {
        // 10 ms of HPET (1e6 ticks of 10 ns), 26e6 TSC ticks: 2.6 GHz;
        // brackets of 100 + 100 ticks, each one more for the counter's
        // resolution: the elapsed time is off by at most their mean, 101
        // ticks of 1e6: 101 ppm.
        let s = Sample { ref_before: 0, tsc: 0, ref_after: 100 };
        let e = Sample { ref_before: 1_000_000, tsc: 26_000_000, ref_after: 1_000_100 };
        assert_eq!(window(&s, &e, HPET), Some(Window { hz: 2_600_000_000, bound_ppm: 101 }));
        // The PM timer's tick is not a whole number of fs.
        let e = Sample { ref_before: 3_579_545, tsc: 2_000_000_000, ref_after: 3_579_545 };
        let s = Sample { ref_before: 0, tsc: 0, ref_after: 0 };
        assert_eq!(window(&s, &e, PM).unwrap(), Window { hz: 2_000_000_000, bound_ppm: 1 });
        // Out of order or a TSC that stood still: no window.
        assert_eq!(window(&e, &s, PM), None);
        assert_eq!(window(&s, &Sample { tsc: 0, ..e }, PM), None);
    }

    #[test]
    fn unwrap_extends_a_24_bit_counter() {
        let mut u = Unwrap::new(24, 0xFF_FFF0);
        assert_eq!(u.extend(0xFF_FFFF), 0xF);
        assert_eq!(u.extend(0x00_0010), 0x20);
        assert_eq!(u.extend(0x80_0010), 0x80_0020);
        assert_eq!(u.extend(0x00_0000), 0x100_0010);
        let mut u = Unwrap::new(64, u64::MAX);
        assert_eq!(u.extend(1), 2);
    }

    #[test]
    fn stuck_reference_is_an_error_not_a_hang() {
        let tsc = Cell::new(0u64);
        let r = measure(
            &Plan::for_reference(HPET),
            HPET,
            || 7,
            || {
                tsc.set(tsc.get() + 100);
                tsc.get()
            },
        );
        assert_eq!(r, Err(CalibrationError::ReferenceStuck));
    }

    #[test]
    fn tick_lengths() {
        assert_eq!(HPET.ticks_in_ns(10_000_000), 1_000_000);
        assert_eq!(PM.ticks_in_ns(1_000_000_000), 3_579_545);
        assert_eq!(PM.ticks_in_ns(0), 1);
        assert_eq!(HPET.fs(3), 30_000_000);
    }
}
