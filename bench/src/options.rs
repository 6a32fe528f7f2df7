//! How long benchmarks run: the plans for the kernel command line's
//! `quick=1`, the default and the in-kernel smoke test. Which benchmarks
//! run (`only=`) is `record::selected`, shared with xtask's `--only` check.

/// Repetitions, warm-up and length of one repetition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Plan {
    pub reps: u32,
    pub warmups: u32,
    pub rep_ns: u64,
}

impl Plan {
    pub const FULL: Plan = Plan { reps: 5, warmups: 1, rep_ns: 400_000_000 };
    pub const QUICK: Plan = Plan { reps: 3, warmups: 1, rep_ns: 60_000_000 };
    /// For the in-kernel test that runs every benchmark once.
    pub const SMOKE: Plan = Plan { reps: 1, warmups: 0, rep_ns: 10_000_000 };
}
