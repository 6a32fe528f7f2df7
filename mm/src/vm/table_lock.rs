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
//!
//! # No line every CPU writes
//!
//! Every map and unmap takes the shared side, so a reader count in one
//! word (as `spin::RwLock` kept it) was a line every CPU wrote per
//! operation. Instead each CPU counts its readers in its own slot (a
//! `PerCpu` element, a line of its own), and the exclusive side is a
//! writer flag on another line, which readers only read:
//! - shared: `slot[cpu].fetch_add(1)`, `fence(SeqCst)`, then
//!   `writer.load(Acquire)`; false: held. True: `slot.fetch_sub(1)` (the count is withdrawn before
//!   waiting, so the writer's next try can succeed and nobody waits on a
//!   waiter), wait while the flag stays set (plain loads), try again.
//!   Release: `slot.fetch_sub(1, Release)`.
//! - exclusive (`try_write`, never waits): plain loads first (the flag and
//!   every slot; a failed try writes nothing), then
//!   `writer.compare_exchange(false, true)` (one writer at a time),
//!   `fence(SeqCst)`, then every slot `load(Acquire)`; one nonzero: clear
//!   the flag, refused. Release: `writer.store(false, Release)`.
//!
//! The slot's add is a locked instruction on the CPU's own line, not a
//! conflicting access: the count is atomic because the interrupted code
//! and an interrupt handler on one CPU (or, on the host, two threads
//! playing one CPU) may both hold the shared side.
//!
//! Ordering (Dekker): each side writes its own word and then reads the
//! other's, with a SeqCst fence between. The two fences are ordered one
//! way or the other. If the reader's fence comes first, its increment
//! (before its fence) is visible to the writer's slot loads (after its
//! fence), which see the count and refuse. If the writer's fence comes
//! first, the reader's flag load sees `true` (or a later value: the
//! writer dropped it or gave up) and withdraws. So a reader and a writer
//! never both hold it; a reader that withdrew and a writer that gave up
//! may both fail one try, which costs a retry, never safety. On x86 the
//! RMWs are locked instructions, already full barriers, and the fence an
//! `mfence`: a plain store in place of the RMW without the fence would let
//! the load pass it, and both sides could miss each other. (SeqCst RMWs
//! and loads alone would do too, but loom models SeqCst accesses as
//! AcqRel and only fences as SeqCst, so the model checks the fenced form,
//! which is what runs.) Release on the unlocks and Acquire on the
//! successful loads carry the holders' table writes from one side to the
//! other. Loom model: `table_lock_loom.rs`.
//!
//! Cost: `N` padded slots per space (`MAX_CPUS` × 128 bytes; the writer
//! scans all of them, which is fine since pruning is rare); a shared
//! acquisition is two locked RMWs on the CPU's own line and a read of the
//! writer's line, which stays shared in every cache until a prune.

use alloc::boxed::Box;
use cpus::{CachePadded, PerCpu, MAX_CPUS};

use super::Waited;
#[cfg(not(loom))]
use super::{VmError, VmPlatform};
use crate::lock_count::LockCounts;
use crate::sync::{fence, AtomicBool, AtomicU32, Ordering};

/// Longest wait for the shared side. The exclusive holder keeps it for one
/// prune and one shootdown, and a shootdown is bounded itself (in the
/// kernel: 5 s for targets to pick it up, then 5 s to finish or the kernel
/// stops); pruners may follow one another, each after a bounded wait of
/// its own. Past this, something is broken, and the caller says so.
pub const TABLE_WAIT_NS: u64 = 60_000_000_000;

/// Wait steps between two looks at the clock: under TCG every clock read
/// takes a lock all vCPUs share, the pruner's among them.
const CLOCK_EVERY: u32 = 64;

/// See the module documentation. `N` is `MAX_CPUS` but in models.
pub struct TableLock<const N: usize = MAX_CPUS> {
    /// Set while a pruner holds the lock or tries to. Read by every
    /// reader, written only by pruners: a line of its own.
    writer: CachePadded<AtomicBool>,
    /// Per CPU: how many shared holders it has now.
    readers: Slots<N>,
}

/// The per-CPU reader counts: inline for the kernel space (made at boot,
/// before there is a heap), on the heap for user spaces (`MAX_CPUS` padded
/// slots are 32 KiB at 256 CPUs: too big to build on a 64 KiB CPU stack
/// and move into a space).
enum Slots<const N: usize> {
    Inline(PerCpu<AtomicU32, N>),
    Heap(Box<[CachePadded<AtomicU32>]>),
}

impl<const N: usize> Slots<N> {
    fn get(&self, cpu: usize) -> &AtomicU32 {
        match self {
            Slots::Inline(s) => s.unguarded(cpu),
            Slots::Heap(s) => &s[cpu],
        }
    }

    fn any_held(&self, order: Ordering) -> bool {
        match self {
            Slots::Inline(s) => s.iter().any(|r| r.load(order) != 0),
            Slots::Heap(s) => s.iter().any(|r| r.load(order) != 0),
        }
    }
}

/// `read_on` waited `TABLE_WAIT_NS` in vain (`read`: `TablesBusy`).
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct TimedOut;

/// The shared side, held: gives back the count it added to its CPU's slot
/// when dropped (that slot, whichever CPU drops it).
pub struct Shared<'a> {
    slot: &'a AtomicU32,
}

/// The exclusive side, held.
pub struct Exclusive<'a> {
    writer: &'a AtomicBool,
}

impl Drop for Shared<'_> {
    fn drop(&mut self) {
        // Release: the holder's table accesses come before a pruner's
        // SeqCst scan that sees the slot drop.
        self.slot.fetch_sub(1, Ordering::Release);
    }
}

impl Drop for Exclusive<'_> {
    fn drop(&mut self) {
        // Release: the pruner's detaches come before a reader's load of
        // `false`.
        self.writer.store(false, Ordering::Release);
    }
}

impl<const N: usize> TableLock<N> {
    #[cfg(not(loom))]
    pub const fn new() -> Self {
        TableLock {
            writer: CachePadded::new(AtomicBool::new(false)),
            readers: Slots::Inline(cpus::per_cpu![AtomicU32::new(0); N]),
        }
    }

    #[cfg(loom)]
    pub fn new() -> Self {
        TableLock {
            writer: CachePadded::new(AtomicBool::new(false)),
            readers: Slots::Inline(PerCpu::from_fn(|_| AtomicU32::new(0))),
        }
    }

    /// A lock whose reader counts are on the heap (user spaces).
    pub fn on_heap() -> Self {
        // Collected straight into their allocation: never on the stack.
        let slots = (0..N).map(|_| CachePadded::new(AtomicU32::new(0))).collect();
        TableLock { writer: CachePadded::new(AtomicBool::new(false)), readers: Slots::Heap(slots) }
    }

    /// The shared side: at once unless a pruner holds the lock; then waits,
    /// answering cross-calls at every step, for at most `TABLE_WAIT_NS`.
    /// Counted in `counts` (the running CPU's): a wait is contended, its
    /// wait steps are its spins.
    #[cfg(not(loom))]
    pub fn read<P: VmPlatform>(&self, p: &P, counts: &LockCounts) -> Result<Shared<'_>, VmError> {
        self.read_on(p.cpu_index(), counts, || p.now_ns(), |w| p.wait_step(w)).map_err(|TimedOut| VmError::TablesBusy)
    }

    /// `read` on CPU `cpu`, with the platform's clock and wait step given
    /// as closures (the loom model and host tests drive them).
    pub(crate) fn read_on(
        &self,
        cpu: usize,
        counts: &LockCounts,
        mut now: impl FnMut() -> u64,
        mut step: impl FnMut(Waited),
    ) -> Result<Shared<'_>, TimedOut> {
        // The running CPU's slot, reached by index: every access to it is
        // one atomic RMW, which an interrupt handler on this CPU taking the
        // shared side too cannot tear.
        let slot = self.readers.get(cpu);
        if let Some(g) = self.try_read(slot) {
            counts.taken(0);
            return Ok(g);
        }
        // The clock is read only once the fast path failed, then every
        // `CLOCK_EVERY` steps.
        let deadline = now().saturating_add(TABLE_WAIT_NS);
        let mut waited = Waited::FIRST;
        loop {
            step(waited);
            waited = waited.next();
            // A plain load while a pruner holds the lock (across its
            // shootdown to every CPU): a failed try is two locked writes.
            if !self.writer.load(Ordering::Relaxed) {
                if let Some(g) = self.try_read(slot) {
                    counts.taken(u64::from(waited.steps()));
                    return Ok(g);
                }
            }
            if waited.steps().is_multiple_of(CLOCK_EVERY) && now() > deadline {
                counts.refused(u64::from(waited.steps()));
                return Err(TimedOut);
            }
        }
    }

    /// One try for the shared side with `slot`, the running CPU's: count,
    /// then look at the flag; withdraw the count if a pruner has it.
    fn try_read<'a>(&'a self, slot: &'a AtomicU32) -> Option<Shared<'a>> {
        slot.fetch_add(1, Ordering::Relaxed);
        // Dekker: the count before the look at the flag (module comment).
        fence(Ordering::SeqCst);
        if !self.writer.load(Ordering::Acquire) {
            return Some(Shared { slot });
        }
        slot.fetch_sub(1, Ordering::Relaxed);
        None
    }

    /// The exclusive side if nobody holds the lock now; never waits. Plain
    /// loads first (test and test-and-set): while mappers hold the shared
    /// side, which they do for a whole region's worth of entries, a
    /// pruner's failed tries only read (at 8 CPUs `fault.anon` once showed
    /// about 13 writes per fault on the lock's line, nearly all failed
    /// tries).
    pub fn try_write(&self) -> Option<Exclusive<'_>> {
        if self.writer.load(Ordering::Relaxed) || self.readers.any_held(Ordering::Relaxed) {
            return None;
        }
        if self.writer.compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed).is_err() {
            return None;
        }
        // Dekker: the flag before the look at the counts (module comment).
        fence(Ordering::SeqCst);
        if self.readers.any_held(Ordering::Acquire) {
            self.writer.store(false, Ordering::Release);
            return None;
        }
        Some(Exclusive { writer: &self.writer })
    }
}

impl<const N: usize> Default for TableLock<N> {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(all(test, not(loom)))]
#[path = "table_lock_tests.rs"]
mod tests;

#[cfg(all(test, loom))]
#[path = "table_lock_loom.rs"]
mod loom_tests;
