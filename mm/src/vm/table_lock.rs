//! A space's table lock: shared by everything that walks or changes its
//! tables, exclusive only for detaching empty tables, which the holder keeps
//! across a shootdown (so no CPU installs into a detached entry while another
//! may cache the old pointer).
//!
//! That makes a plain spin on the shared side a deadlock waiting to happen
//! (invariant 5): a CPU spinning with interrupts off for the shared side
//! never answers the shootdown the exclusive holder is waiting for. So the
//! lock has no plain `read()` and no blocking `write()`:
//! - `read` waits through `VmPlatform::wait_step`, which runs the
//!   cross-calls aimed at this CPU on every step, and gives up after
//!   `TABLE_WAIT_NS` with `VmError::TablesBusy`;
//! - the exclusive side is only ever tried (`try_write`): a pruner that
//!   cannot have it leaves the work to a later unmap.
//!
//! Because `read` may answer shootdowns while it waits, it must not be
//! called in the middle of a walk that only interrupts-off protects (the
//! paging code's lock-free walks): take it before walking, as every caller
//! does. A wait that answers a shootdown there is no different from an
//! interrupt arriving just before the call.

use spin::{RwLock, RwLockReadGuard, RwLockWriteGuard};

use super::{VmError, VmPlatform};
use crate::lock_count::LockCounts;

/// Longest wait for the shared side. The exclusive holder keeps it for one
/// prune and one shootdown, and a shootdown is bounded itself (in the
/// kernel: 5 s for targets to pick it up, then 5 s to finish or the kernel
/// stops); pruners may follow one another, each after a bounded wait of
/// its own. Past this, something is broken, and the caller says so.
pub const TABLE_WAIT_NS: u64 = 60_000_000_000;

pub struct TableLock {
    inner: RwLock<()>,
}

/// The shared side, held.
pub struct Shared<'a>(#[allow(dead_code)] RwLockReadGuard<'a, ()>);

/// The exclusive side, held.
pub struct Exclusive<'a>(#[allow(dead_code)] RwLockWriteGuard<'a, ()>);

impl TableLock {
    pub const fn new() -> TableLock {
        TableLock { inner: RwLock::new(()) }
    }

    /// The shared side: at once unless a pruner holds the lock; then waits,
    /// answering cross-calls at every step, for at most `TABLE_WAIT_NS`.
    /// Counted in `counts` (the running CPU's): a wait is contended, its
    /// wait steps are its spins.
    pub fn read<P: VmPlatform>(&self, p: &P, counts: &LockCounts) -> Result<Shared<'_>, VmError> {
        if let Some(g) = self.inner.try_read() {
            counts.taken(0);
            return Ok(Shared(g));
        }
        // The clock is read only once the fast path failed.
        let deadline = p.now_ns().saturating_add(TABLE_WAIT_NS);
        let mut steps = 0;
        loop {
            p.wait_step();
            steps += 1;
            // A plain load while a pruner holds the lock: a failed
            // `try_read` is two locked writes of the line (add, then take
            // back the reader), and the pruner keeps the lock across a
            // shootdown to every CPU.
            if self.inner.writer_count() != 0 {
                if p.now_ns() > deadline {
                    counts.refused(steps);
                    return Err(VmError::TablesBusy);
                }
                continue;
            }
            if let Some(g) = self.inner.try_read() {
                counts.taken(steps);
                return Ok(Shared(g));
            }
            if p.now_ns() > deadline {
                counts.refused(steps);
                return Err(VmError::TablesBusy);
            }
        }
    }

    /// The exclusive side if nobody holds the lock now. A plain load first
    /// (test and test-and-set): while mappers hold the shared side, which
    /// they do for a whole region's worth of entries, a pruner's failed
    /// tries are reads of the lock word, not compare-and-swaps that take
    /// its line from every holder (at 8 CPUs `fault.anon` showed about 13
    /// writes per fault on this line, nearly all failed tries).
    pub fn try_write(&self) -> Option<Exclusive<'_>> {
        if self.inner.reader_count() != 0 || self.inner.writer_count() != 0 {
            return None;
        }
        self.inner.try_write().map(Exclusive)
    }
}

impl Default for TableLock {
    fn default() -> Self {
        Self::new()
    }
}
