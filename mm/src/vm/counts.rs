//! What the virtual-memory code did, per CPU: page tables allocated,
//! zeroed and freed, and the table lock's acquisitions (shared and
//! exclusive sides together). Each CPU writes only its own block, which
//! fills cache lines of its own, with plain loads and stores.

use core::sync::atomic::{AtomicU64, Ordering};

use crate::lock_count::{LockCounts, LockSnapshot};
use crate::MAX_CPUS;

#[repr(align(64))]
pub struct CpuVmCounts {
    tables_allocated: AtomicU64,
    tables_zeroed: AtomicU64,
    tables_freed: AtomicU64,
    /// Shared side: contended when a pruner held it at the first try,
    /// spins are the wait steps. Exclusive side (pruning): contended when
    /// the first try failed, spins are the failed tries.
    pub table_lock: LockCounts,
}

/// A copy of one CPU's counts (or a sum over CPUs).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct VmCountSnapshot {
    pub tables_allocated: u64,
    pub tables_zeroed: u64,
    pub tables_freed: u64,
    pub table_lock: LockSnapshot,
}

fn add(c: &AtomicU64, n: u64) {
    c.store(c.load(Ordering::Relaxed).wrapping_add(n), Ordering::Relaxed);
}

impl CpuVmCounts {
    pub const fn new() -> CpuVmCounts {
        CpuVmCounts {
            tables_allocated: AtomicU64::new(0),
            tables_zeroed: AtomicU64::new(0),
            tables_freed: AtomicU64::new(0),
            table_lock: LockCounts::new(),
        }
    }

    pub fn table_allocated(&self) {
        add(&self.tables_allocated, 1);
    }

    pub fn table_zeroed(&self) {
        add(&self.tables_zeroed, 1);
    }

    pub fn tables_freed(&self, n: u64) {
        add(&self.tables_freed, n);
    }

    pub fn snapshot(&self) -> VmCountSnapshot {
        let r = |c: &AtomicU64| c.load(Ordering::Relaxed);
        VmCountSnapshot {
            tables_allocated: r(&self.tables_allocated),
            tables_zeroed: r(&self.tables_zeroed),
            tables_freed: r(&self.tables_freed),
            table_lock: self.table_lock.snapshot(),
        }
    }
}

impl Default for CpuVmCounts {
    fn default() -> Self {
        Self::new()
    }
}

pub struct VmCounts {
    cpus: [CpuVmCounts; MAX_CPUS],
}

impl VmCounts {
    pub const fn new() -> VmCounts {
        VmCounts { cpus: [const { CpuVmCounts::new() }; MAX_CPUS] }
    }

    pub fn cpu(&self, cpu: usize) -> &CpuVmCounts {
        &self.cpus[cpu]
    }
}

impl Default for VmCounts {
    fn default() -> Self {
        Self::new()
    }
}

record::snapshot_arithmetic!(VmCountSnapshot { tables_allocated, tables_zeroed, tables_freed } nested { table_lock });
