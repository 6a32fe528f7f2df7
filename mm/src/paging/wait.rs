//! The bound on a paging wait (a busy page, or the baseline's global
//! lock), checked without reading the clock on every step.
//!
//! Under QEMU's TCG every `rdtsc` takes a lock all vCPUs share, so seven
//! CPUs that each read the clock per spin slow down the very CPU they wait
//! for (a page-out holding the baseline's lock ran for seconds at
//! `-smp 8`, and waiters hit their bound). A step is short (answer
//! cross-calls, spin), so looking at the clock every `CLOCK_EVERY` steps
//! overshoots the bound by microseconds, not more.

use crate::vm::Waited;

/// Steps between two looks at the clock.
pub(crate) const CLOCK_EVERY: u32 = 64;

/// A wait's deadline, set at its first step (so an operation that never
/// waits never reads the clock), the steps since the last look, and the
/// steps in all (for `wait_step`, which naps once a wait goes on).
#[derive(Debug, Default)]
pub(crate) struct WaitBound {
    deadline: Option<u64>,
    steps: u32,
    waited: Waited,
}

impl WaitBound {
    pub(crate) const fn new() -> WaitBound {
        WaitBound { deadline: None, steps: 0, waited: Waited::FIRST }
    }

    /// The steps taken before the one about to be taken; advances.
    pub(crate) fn step(&mut self) -> Waited {
        let w = self.waited;
        self.waited = w.next();
        w
    }

    /// One step: `true` once `bound_ns` have passed since the first step.
    /// `now` is called on the first step and then every `CLOCK_EVERY`th.
    pub(crate) fn expired(&mut self, bound_ns: u64, now: impl FnOnce() -> u64) -> bool {
        let look = self.deadline.is_none() || self.steps >= CLOCK_EVERY;
        self.steps += 1;
        if !look {
            return false;
        }
        self.steps = 1;
        let now = now();
        now > *self.deadline.get_or_insert(now.saturating_add(bound_ns))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::cell::Cell;

    #[test]
    fn looks_at_the_clock_once_per_clock_every_steps_and_still_expires() {
        let (clock, reads) = (Cell::new(0u64), Cell::new(0u64));
        let now = || {
            reads.set(reads.get() + 1);
            clock.get()
        };
        let mut w = WaitBound::new();
        let mut steps = 0u64;
        // Time advances 1 ns per step; the bound is 10 000 ns.
        while !w.expired(10_000, now) {
            steps += 1;
            clock.set(clock.get() + 1);
            assert!(steps < 20_000, "never expired");
        }
        assert!((10_000..10_000 + CLOCK_EVERY as u64 + 1).contains(&steps), "expired after {steps} steps");
        assert!(reads.get() <= steps / CLOCK_EVERY as u64 + 2, "{} clock reads for {steps} steps", reads.get());
    }

    #[test]
    fn each_step_is_told_how_far_the_wait_has_got() {
        let mut w = WaitBound::new();
        let told: Vec<u32> = (0..100).map(|_| w.step().steps()).collect();
        assert_eq!(
            told,
            (0..100).collect::<Vec<_>>(),
            "the kernel's step naps from its 64th: it must see the count grow"
        );
    }

    #[test]
    fn a_wait_that_never_steps_never_reads_the_clock() {
        let w = WaitBound::new();
        assert_eq!(w.deadline, None);
    }
}
