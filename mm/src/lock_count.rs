//! Counts of one lock's acquisitions by one CPU: how often it took the
//! lock, how often the lock was held by someone else at the first try
//! (contended), and how many wait iterations those waits took (spins).
//!
//! A `LockCounts` lives in a CPU's own counter block (cache-line aligned,
//! written only by that CPU), so it is bumped with a plain load and store,
//! never a locked instruction, and shares no line with another CPU. The
//! spins of one wait are summed in a local and stored once, after the
//! lock is taken: counting adds nothing to the wait loop itself, and
//! nothing here reads the clock.

use core::sync::atomic::{AtomicU64, Ordering};

#[derive(Default)]
pub struct LockCounts {
    acquired: AtomicU64,
    contended: AtomicU64,
    spins: AtomicU64,
}

/// A copy of one CPU's counts of one lock.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct LockSnapshot {
    pub acquired: u64,
    pub contended: u64,
    pub spins: u64,
}

fn add(c: &AtomicU64, n: u64) {
    c.store(c.load(Ordering::Relaxed).wrapping_add(n), Ordering::Relaxed);
}

impl LockCounts {
    pub const fn new() -> LockCounts {
        LockCounts { acquired: AtomicU64::new(0), contended: AtomicU64::new(0), spins: AtomicU64::new(0) }
    }

    /// One acquisition that waited `spins` iterations (0: taken at once).
    /// Only the CPU owning these counts calls it.
    pub fn taken(&self, spins: u64) {
        add(&self.acquired, 1);
        if spins > 0 {
            add(&self.contended, 1);
            add(&self.spins, spins);
        }
    }

    /// An attempt that gave up after `spins` failed tries or wait steps
    /// (a try-lock the caller does not retry, a bounded wait that ran
    /// out): contended, not acquired.
    pub fn refused(&self, spins: u64) {
        add(&self.contended, 1);
        add(&self.spins, spins);
    }

    pub fn snapshot(&self) -> LockSnapshot {
        let r = |c: &AtomicU64| c.load(Ordering::Relaxed);
        LockSnapshot { acquired: r(&self.acquired), contended: r(&self.contended), spins: r(&self.spins) }
    }
}

record::snapshot_arithmetic!(LockSnapshot { acquired, contended, spins });

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_free_lock_counts_one_acquisition_and_no_contention() {
        let c = LockCounts::new();
        c.taken(0);
        assert_eq!(c.snapshot(), LockSnapshot { acquired: 1, contended: 0, spins: 0 });
    }

    #[test]
    fn a_wait_counts_contention_and_its_spins() {
        let c = LockCounts::new();
        c.taken(0);
        c.taken(7);
        c.refused(3);
        assert_eq!(c.snapshot(), LockSnapshot { acquired: 2, contended: 2, spins: 10 });
        let d = c.snapshot() - LockSnapshot { acquired: 1, contended: 0, spins: 0 };
        assert_eq!(d, LockSnapshot { acquired: 1, contended: 2, spins: 10 });
    }
}
