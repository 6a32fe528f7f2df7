//! What the virtual-memory code did, per CPU: page tables allocated,
//! zeroed and freed, and the table lock's acquisitions (shared and
//! exclusive sides together). Each CPU writes only its own block, which
//! fills cache lines of its own (a `PerCpu` element), with plain loads and
//! stores.
//!
//! The writer reaches its block without a `CpuGuard` (`running`): mapping
//! code runs with interrupts on, but no interrupt handler maps, unmaps or
//! takes a table lock, so nothing on the same CPU interleaves with a count;
//! readers sum any CPU's (`cpu`).

use core::sync::atomic::{AtomicU64, Ordering};

use cpus::PerCpu;

use crate::lock_count::{LockCounts, LockSnapshot};

/// One CPU's counts; the alignment says the block itself fits one line.
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
    cpus: PerCpu<CpuVmCounts>,
}

impl VmCounts {
    pub const fn new() -> VmCounts {
        VmCounts { cpus: cpus::per_cpu![CpuVmCounts::new()] }
    }

    /// CPU `cpu`'s counts, for reading (any CPU's).
    pub fn cpu(&self, cpu: usize) -> &CpuVmCounts {
        self.cpus.remote(cpu)
    }

    /// The running CPU's counts, `cpu` being its index, for counting
    /// (unguarded: see the module documentation).
    pub fn running(&self, cpu: usize) -> &CpuVmCounts {
        self.cpus.unguarded(cpu)
    }
}

impl Default for VmCounts {
    fn default() -> Self {
        Self::new()
    }
}

record::snapshot_arithmetic!(VmCountSnapshot { tables_allocated, tables_zeroed, tables_freed } nested { table_lock });
