//! Which benchmarks run and how long: from the kernel command line's
//! `only=` (comma-separated name prefixes) and `quick=1`.

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

/// Whether benchmark `name` is selected by `only` (empty: all). Each
/// comma-separated word selects the names it is a prefix of, so `frames`
/// selects `frames.pair`, `frames.batch` and `frames.remote`. The rule
/// lives in `record`, so xtask's check of `bench --only` and the guest's
/// choice cannot disagree.
pub fn selected(only: &str, name: &str) -> bool {
    record::selected(only, name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_select() {
        assert!(selected("", "frames.pair"));
        assert!(selected("frames", "frames.pair"));
        assert!(selected("vm.local,frames.remote", "frames.remote"));
        assert!(!selected("vm.local,frames.remote", "frames.pair"));
        assert!(!selected("fault.shared", "fault.anon"));
        assert!(selected(",fault", "fault.anon"));
    }
}
