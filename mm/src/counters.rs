//! Per-CPU allocator counters. Each CPU only bumps its own, with a plain
//! load and store (no locked instruction); readers get a snapshot. One
//! CPU's counters fill cache lines of their own (`align(64)`), so counting
//! never makes two CPUs write one line.

use core::sync::atomic::{AtomicU64, Ordering};

use crate::lock_count::{LockCounts, LockSnapshot};

#[derive(Default)]
#[repr(align(64))]
pub struct CpuCounters {
    pub fast_allocs: AtomicU64,
    pub fast_frees: AtomicU64,
    pub depot_exchanges: AtomicU64,
    /// Acquisitions of the buddy lock (under `Policy::GlobalLock` the buddy
    /// lock is the baseline's one global lock).
    pub buddy: LockCounts,
    /// Acquisitions of the depot lock.
    pub depot: LockCounts,
    pub remote_frees: AtomicU64,
    pub reclaims: AtomicU64,
    /// CPUs whose caches a reclaim by this CPU left alone: they did not
    /// answer the quiesce in time (`owner_cell::Freeze`).
    pub reclaim_skips: AtomicU64,
    /// All order-0 allocations, however served.
    pub allocs: AtomicU64,
    pub frees: AtomicU64,
}

/// A copy of one CPU's counters.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct CounterSnapshot {
    pub fast_allocs: u64,
    pub fast_frees: u64,
    pub depot_exchanges: u64,
    /// Buddy lock acquisitions (`buddy.acquired`, kept under its old name).
    pub buddy_locks: u64,
    pub buddy: LockSnapshot,
    pub depot: LockSnapshot,
    pub remote_frees: u64,
    pub reclaims: u64,
    pub reclaim_skips: u64,
    pub allocs: u64,
    pub frees: u64,
}

/// Adds one to a counter only its owner writes.
pub fn bump(c: &AtomicU64) {
    c.store(c.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
}

impl CpuCounters {
    pub const fn new() -> CpuCounters {
        CpuCounters {
            fast_allocs: AtomicU64::new(0),
            fast_frees: AtomicU64::new(0),
            depot_exchanges: AtomicU64::new(0),
            buddy: LockCounts::new(),
            depot: LockCounts::new(),
            remote_frees: AtomicU64::new(0),
            reclaims: AtomicU64::new(0),
            reclaim_skips: AtomicU64::new(0),
            allocs: AtomicU64::new(0),
            frees: AtomicU64::new(0),
        }
    }

    pub fn snapshot(&self) -> CounterSnapshot {
        let r = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let buddy = self.buddy.snapshot();
        CounterSnapshot {
            fast_allocs: r(&self.fast_allocs),
            fast_frees: r(&self.fast_frees),
            depot_exchanges: r(&self.depot_exchanges),
            buddy_locks: buddy.acquired,
            buddy,
            depot: self.depot.snapshot(),
            remote_frees: r(&self.remote_frees),
            reclaims: r(&self.reclaims),
            reclaim_skips: r(&self.reclaim_skips),
            allocs: r(&self.allocs),
            frees: r(&self.frees),
        }
    }
}

record::snapshot_arithmetic!(CounterSnapshot {
    fast_allocs,
    fast_frees,
    depot_exchanges,
    buddy_locks,
    remote_frees,
    reclaims,
    reclaim_skips,
    allocs,
    frees,
} nested { buddy, depot });

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_cpus_counters_fill_lines_of_their_own() {
        assert_eq!(core::mem::align_of::<CpuCounters>(), 64);
        assert_eq!(core::mem::size_of::<CpuCounters>() % 64, 0);
        let two = [CpuCounters::new(), CpuCounters::new()];
        let (a, b) = (&two[0] as *const _ as usize, &two[1] as *const _ as usize);
        assert!(b - a >= 64 && a % 64 == 0, "neighbours share no line");
    }
}
