//! How far a wait on another CPU has got, which `VmPlatform::wait_step`
//! needs to choose its step: most waits end within a few checks, so the
//! first steps only check; a wait that goes on should give the core away
//! (in the kernel: nap, answering IPIs), since under QEMU's TCG a
//! spinning vCPU keeps the host core from the vCPU it waits for.
//!
//! A type rather than a bare count, so that a step is told what it is for
//! (not a time, not a loop index that restarts) and a wait cannot forget
//! to count: it gets the next one from `next`.

/// The steps a wait has taken before this one (0 at its first).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct Waited(u32);

impl Waited {
    /// A wait's first step.
    pub const FIRST: Waited = Waited(0);

    /// Steps taken before this one.
    pub const fn steps(self) -> u32 {
        self.0
    }

    /// The step after this one (saturating: a wait past 2^32 steps stays
    /// in its napping phase).
    #[must_use]
    pub const fn next(self) -> Waited {
        Waited(self.0.saturating_add(1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_count_up_from_the_first_and_saturate() {
        let w = Waited::FIRST.next().next();
        assert_eq!((Waited::FIRST.steps(), w.steps()), (0, 2));
        assert_eq!(Waited(u32::MAX).next(), Waited(u32::MAX));
    }
}
