//! Demand paging for the kernel's `k_mem_map` regions, on all CPUs at once.
//!
//! Zephyr's demand paging (`kernel/mmu.c`) is the functional model; it is
//! uniprocessor and takes `irq_lock()` around every fault. Here no lock is
//! shared by all CPUs on the fault path. A page is serialised by its own
//! state:
//! - a page with no frame has a location token in its not-present entry
//!   (`token`); the CPU that swaps the token for a busy marker (one
//!   compare-and-swap) pages it in, others wait and look again;
//! - a resident page's frame carries flags in the frame database
//!   (`frame_db::paging`): `MAPPED` with the page's address (the reverse
//!   map), `PINNED`, and `BUSY` for the one CPU evicting, pinning or
//!   unmapping it.
//!
//! Eviction picks victims with a replaceable policy (`policy`), marks
//! them busy, swaps their entries for busy markers, shoots the batch down
//! once, writes dirty pages (or pages with no valid copy) to the backing
//! store (`store`) and leaves a token with the slot. A clean page whose
//! copy is still valid, or a fresh page never written, is dropped.
//!
//! Every entry point runs with interrupts off and answers shootdowns only
//! in its waits, between walks: page tables are freed only after a
//! shootdown to every CPU, so that is what keeps the tables a walk is
//! reading alive without a lock. The baseline mode (`Mode::GlobalLock`)
//! wraps the same code in one global lock, as Zephyr does, for
//! benchmarks.

mod api;
mod audit;
pub mod block_store;
mod candidates;
mod demand;
mod evict;
mod fault;
/// A test hook: not in the production kernel.
#[cfg(any(test, feature = "test-hooks"))]
pub mod faulty_store;
mod kmem;
pub mod policy;
pub mod slots;
pub mod stats;
pub mod store;
pub mod store_switch;
#[cfg(test)]
mod tests;
pub mod token;
pub(crate) mod transition;
mod view;
pub(crate) mod wait;

use self::candidates::Candidates;
use self::wait::WaitBound;
use crate::batched::BatchedCount;
use core::sync::atomic::{AtomicU64, AtomicU8, AtomicUsize, Ordering};
use cpus::{CachePadded, PerCpu};

pub use audit::{PagingAudit, PagingViolation};
pub use fault::Access;
pub use policy::{EvictionPolicy, PolicyError};
pub use slots::SlotFor;
pub use stats::{Counts, Event, HistogramSnapshot, Stats, Timing};
pub use store::{BackingStore, StoreError};

use crate::frame_db::FrameDb;
use crate::vm::{Vm, VmError, VmPlatform};

/// How long a CPU waits for a busy page (or, in the baseline, for the
/// global lock) before it reports `BusyTimeout`. Generous: with 8 vCPUs
/// time-sharing 2 host cores, a thrash test has seen a fault wait 2.8 s
/// for frames other CPUs were evicting; a real hang still ends in a
/// report.
pub const BUSY_WAIT_NS: u64 = 10_000_000_000;

/// No CPU is next in line for the baseline's global lock.
const NO_HEIR: usize = usize::MAX;
/// Wait steps after which a CPU claims the place next in line. Not small:
/// a strict hand-off to the longest waiter turns contention into a convoy
/// (each hand-off waits for that vCPU to run); with 64 the baseline's
/// thrash at 8 CPUs ran far slower. Long enough that the try-lock decides
/// most acquisitions, short enough that nobody waits out `BUSY_WAIT_NS`.
const HEIR_AFTER: u64 = 1024;

/// Changes of a CPU's resident delta before it folds them into the shared
/// count (`BatchedCount`): one shared write per 32 page-ins or evictions.
pub const RESIDENT_BATCH: u32 = 32;
/// Most page-ins a CPU makes on one reading of the free-frame count.
pub const FREE_GRANT_MAX: u64 = 64;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PagingError {
    /// `enable_paging` has not run.
    NotEnabled,
    /// `enable_paging` ran before.
    AlreadyEnabled,
    /// Nothing pageable is mapped at `virt`: a guard page, a hole, or a
    /// mapping made with `LOCK` or by `phys_map`.
    NotPageable { virt: u64 },
    /// The page's mapping does not allow the access.
    Protection { virt: u64 },
    /// The page is pinned.
    Pinned { virt: u64 },
    /// `evict_frame` of a frame that backs no pageable page.
    NotAPageFrame { phys: crate::frame::PhysAddr },
    /// A frame was needed and every resident page is pinned or busy.
    NoEvictableFrame,
    /// The backing store has no slot left.
    StoreFull,
    /// The backing store failed a transfer.
    Store(StoreError),
    /// The page (or the baseline's global lock) stayed busy past
    /// `BUSY_WAIT_NS`.
    BusyTimeout { virt: u64 },
    /// CPUs in `cpus` did not confirm an eviction's shootdown; the pages
    /// stay resident.
    Shootdown { cpus: cpus::CpuSet },
    /// The range itself is bad (alignment, size, outside the region area).
    Range(VmError),
}

/// How faults, evictions and page-ins are serialised.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Mode {
    /// Per-page busy states; no lock shared by all CPUs.
    BusyState = 0,
    /// Zephyr's way: everything under one global lock with interrupts off.
    GlobalLock = 1,
}

pub struct PagerConfig {
    pub db: &'static FrameDb<'static>,
    pub store: &'static dyn BackingStore,
    pub policy: &'static dyn EvictionPolicy,
    /// Most frames pageable pages may hold at once (`u64::MAX`: as many as
    /// the allocator gives).
    pub resident_limit: u64,
    /// Free frames kept for the rest of the kernel: below this, a page-in
    /// evicts first.
    pub reserve: u64,
}

pub struct Pager {
    pub(crate) db: &'static FrameDb<'static>,
    pub(crate) store: &'static dyn BackingStore,
    pub(crate) policy: &'static dyn EvictionPolicy,
    resident_limit: AtomicU64,
    reserve: u64,
    /// Pageable pages that have a frame: a delta per CPU, folded into one
    /// shared word every `RESIDENT_BATCH` changes (`crate::batched`).
    resident: BatchedCount,
    /// The frames backing pageable pages, one map per CPU (`candidates`):
    /// the clock jumps over the frames paging does not use.
    candidates: Candidates,
    /// Per CPU: page-ins it may still make before it reads the free-frame
    /// count again (`free_grant`). Written only by its CPU.
    free_grant: PerCpu<AtomicU64>,
    /// Pageable pages mapped (resident or not). Written per region map and
    /// unmap: on a line of its own, away from the fields every fault reads.
    pub(crate) committed: CachePadded<AtomicU64>,
    mode: AtomicU8,
    global: spin::Mutex<()>,
    /// The CPU that waited longest for `global` and is next in line, or
    /// `NO_HEIR`: a try-lock alone let one CPU lose every race for 10 s at
    /// `-smp 8` (see `lock_global`).
    heir: AtomicUsize,
    pub(crate) stats: Stats,
}

impl Pager {
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    pub fn store(&self) -> &'static dyn BackingStore {
        self.store
    }

    pub fn mode(&self) -> Mode {
        match self.mode.load(Ordering::Relaxed) {
            1 => Mode::GlobalLock,
            _ => Mode::BusyState,
        }
    }

    /// Switches serialisation. Only between workloads: a CPU inside a
    /// paging call keeps the mode it started with.
    pub fn set_mode(&self, mode: Mode) {
        self.mode.store(mode as u8, Ordering::Relaxed);
    }

    /// Resident pageable pages, summed over every CPU's delta: exact at a
    /// quiescent point (audits, statistics, tests).
    pub fn resident(&self) -> u64 {
        self.resident.sum().max(0) as u64
    }

    /// The resident count's parts: the folded word and CPU `cpu`'s delta.
    pub fn resident_parts(&self, cpu: usize) -> (i64, i64) {
        (self.resident.folded(), self.resident.delta(cpu))
    }

    /// Whether the resident count has reached the limit, asked by CPU
    /// `cpu`. Far from the limit (by more than `RESIDENT_BATCH - 1` per
    /// counting CPU) this reads only the folded word and `cpu`'s own
    /// delta; near it, every CPU's delta, so the answer is exact but for
    /// page-ins in flight (a check-then-act window of one page per CPU, as
    /// with one shared counter).
    pub(crate) fn at_resident_limit(&self, cpu: usize) -> bool {
        self.resident.at_least(cpu, self.resident_limit())
    }

    pub fn resident_limit(&self) -> u64 {
        self.resident_limit.load(Ordering::Relaxed)
    }

    /// Caps the frames pageable pages hold; pages over the cap are evicted
    /// by the next page-ins, not at once.
    pub fn set_resident_limit(&self, frames: u64) {
        self.resident_limit.store(frames.max(1), Ordering::Relaxed);
    }

    pub fn committed(&self) -> u64 {
        self.committed.load(Ordering::Relaxed)
    }

    /// Frame `i`, just installed by CPU `cpu` (still busy), backs a
    /// pageable page: counted resident and marked as a candidate.
    pub(crate) fn track(&self, cpu: usize, i: usize) {
        self.resident.add(cpu, 1);
        self.policy.on_mapped(i);
        self.candidates.track(cpu, i);
    }

    /// Whether frame `i` is marked as a candidate (the audit).
    pub(crate) fn is_candidate(&self, i: usize) -> bool {
        self.candidates.contains(i)
    }

    /// The first frame at or after `i` marked as backing a pageable page,
    /// or the database length.
    pub(crate) fn next_candidate(&self, i: usize) -> usize {
        self.candidates.next(i)
    }

    /// Gives up this CPU's `BUSY` claim on frame `i`.
    pub(crate) fn release(&self, i: usize) {
        transition::release(self.db, i);
    }

    /// Frame `i`, claimed busy, no longer backs a page (evicted or
    /// unmapped; its copy slot, if any, was handed on or freed): clears
    /// its paging state and takes it out of the policy and the counts.
    pub(crate) fn forget(&self, cpu: usize, i: usize) {
        transition::forget_frame(self.db, i);
        self.untrack(cpu, i);
    }

    /// Frame `i`, just forgotten by CPU `cpu` (the running one, holding it
    /// busy), leaves the policy and the counts.
    pub(crate) fn untrack(&self, cpu: usize, i: usize) {
        self.candidates.untrack(cpu, i);
        self.policy.on_unmapped(i);
        self.resident.add(cpu, -1);
    }

    /// Whether a page-in on CPU `cpu` must evict first: the resident
    /// count at its limit (`at_resident_limit`), or free frames below the
    /// reserve. The free-frame count (which sums every CPU's magazine
    /// count) is read only when this CPU's grant is used up: one reading
    /// grants `(free - reserve) / (2 * online CPUs)` page-ins, at most
    /// `FREE_GRANT_MAX`. So even if every CPU holds a full grant from the
    /// same reading, together they take at most half the frames above the
    /// reserve before one of them reads again, and near the reserve (a
    /// grant of 0) every page-in reads, as before.
    /// `free_frames` gives the free frames and the CPUs online (not
    /// `MAX_CPUS`: a grant 256 CPUs could share would be a quarter of one
    /// at 64 and would read the free frames four times as often).
    fn over_budget(&self, cpu: usize, free_frames: impl FnOnce() -> (u64, usize)) -> bool {
        if self.at_resident_limit(cpu) {
            return true;
        }
        // Only this CPU writes its grant, with interrupts off.
        let grant = self.free_grant.unguarded(cpu);
        let left = grant.load(Ordering::Relaxed);
        if left > 0 {
            grant.store(left - 1, Ordering::Relaxed);
            return false;
        }
        let (free, online) = free_frames();
        if free < self.reserve {
            return true;
        }
        let share = (free - self.reserve) / (2 * online.max(1) as u64);
        grant.store(share.min(FREE_GRANT_MAX), Ordering::Relaxed);
        false
    }

    /// Forgets every CPU's grant: the next page-in on each reads the free
    /// frames again (after the reserve or the memory changed, in tests).
    pub fn reset_free_grants(&self) {
        for g in self.free_grant.iter() {
            g.store(0, Ordering::Relaxed);
        }
    }

    /// Pages that on-demand mappings may commit in all: RAM for paging
    /// (the resident limit, or what is free now plus what paging holds)
    /// plus the store's slots but the one kept for faults. Exact as
    /// before: `resident()` is the sum over every CPU's delta (read once
    /// per `k_mem_map`, not per fault).
    pub(crate) fn commit_limit(&self, free_frames: u64) -> u64 {
        let ram = self.resident_limit().min(free_frames.saturating_sub(self.reserve) + self.resident());
        ram + self.store.usage().1.saturating_sub(1)
    }
}

/// The paging operations' context: one VM and the pager demand paging
/// runs it with. Every paging call (`page_fault`, `page_in`, `pin`, the
/// audit...) is a method of this type, not of `Vm`: the mapping code knows
/// paging only through the hook it defines (`vm::DemandPaging`).
pub struct Paging<'v, P: VmPlatform> {
    vm: &'v Vm<P>,
    pg: &'v Pager,
}

// By hand: a derive would ask for `P: Copy`, and only references are copied.
impl<P: VmPlatform> Clone for Paging<'_, P> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<P: VmPlatform> Copy for Paging<'_, P> {}

impl<'v, P: VmPlatform> Paging<'v, P> {
    /// Turns on demand paging for `vm`: from now on `k_mem_map` without
    /// `LOCK` maps pages on demand.
    pub fn enable(vm: &'v Vm<P>, c: PagerConfig) -> Result<Paging<'v, P>, PagingError> {
        if vm.demand().is_some() {
            return Err(PagingError::AlreadyEnabled);
        }
        let pager = Pager {
            db: c.db,
            store: c.store,
            policy: c.policy,
            resident_limit: AtomicU64::new(c.resident_limit.max(1)),
            reserve: c.reserve,
            resident: BatchedCount::new(RESIDENT_BATCH),
            candidates: Candidates::new(c.db.len(), vm.p.online_cpus()),
            free_grant: PerCpu::default(),
            committed: CachePadded::new(AtomicU64::new(0)),
            mode: AtomicU8::new(Mode::BusyState as u8),
            global: spin::Mutex::new(()),
            heir: AtomicUsize::new(NO_HEIR),
            stats: Stats::new(),
        };
        if !vm.set_demand(alloc::boxed::Box::new(pager)) {
            return Err(PagingError::AlreadyEnabled);
        }
        Paging::of(vm)
    }

    /// `vm`'s paging, once `enable` ran.
    pub fn of(vm: &'v Vm<P>) -> Result<Paging<'v, P>, PagingError> {
        let pg = vm.demand().and_then(|d| d.as_any().downcast_ref::<Pager>()).ok_or(PagingError::NotEnabled)?;
        Ok(Paging { vm, pg })
    }

    pub fn pager(&self) -> &'v Pager {
        self.pg
    }

    pub fn vm(&self) -> &'v Vm<P> {
        self.vm
    }
}

impl<P: VmPlatform> Paging<'_, P> {
    /// Runs one paging operation with interrupts off, under the global
    /// lock in the baseline mode.
    pub(crate) fn paging_op<R>(&self, f: impl FnOnce(&Pager) -> Result<R, PagingError>) -> Result<R, PagingError> {
        let pg = self.pg;
        self.vm.p.without_interrupts(|| {
            let _global = match pg.mode() {
                Mode::GlobalLock => Some(self.lock_global(pg)?),
                Mode::BusyState => None,
            };
            f(pg)
        })
    }

    /// The baseline's lock. Waiters answer shootdowns: the holder may be
    /// waiting for them. Counted for this CPU: a wait is contended, its
    /// steps are spins.
    ///
    /// Fair enough to be bounded: a waiter that has spun `HEIR_AFTER` steps
    /// claims the one heir place, and while a heir waits only it may take
    /// the lock, so the next release goes to it. Mutual exclusion is the
    /// mutex's; the heir word is only a hint of who goes next (relaxed: a
    /// stale read costs one more turn for someone, never exclusion), and a
    /// heir that gives up at its bound vacates the place.
    fn lock_global<'g>(&self, pg: &'g Pager) -> Result<spin::MutexGuard<'g, ()>, PagingError> {
        let me = self.vm.p.cpu_index();
        let counts = pg.stats.global_lock(me);
        if pg.heir.load(Ordering::Relaxed) == NO_HEIR {
            if let Some(g) = pg.global.try_lock() {
                counts.taken(0);
                return Ok(g);
            }
        }
        let mut bound = WaitBound::new();
        let mut steps = 0;
        loop {
            if let Err(e) = self.wait_busy(&mut bound, 0) {
                let _ = pg.heir.compare_exchange(me, NO_HEIR, Ordering::Relaxed, Ordering::Relaxed);
                counts.refused(steps);
                return Err(e);
            }
            steps += 1;
            let mut heir = pg.heir.load(Ordering::Relaxed);
            if heir == NO_HEIR && steps >= HEIR_AFTER {
                let _ = pg.heir.compare_exchange(NO_HEIR, me, Ordering::Relaxed, Ordering::Relaxed);
                heir = pg.heir.load(Ordering::Relaxed);
            }
            if heir != NO_HEIR && heir != me {
                continue; // someone waited longer: its turn first
            }
            if let Some(g) = pg.global.try_lock() {
                if heir == me {
                    pg.heir.store(NO_HEIR, Ordering::Relaxed);
                }
                counts.taken(steps);
                return Ok(g);
            }
        }
    }

    /// One step of waiting for busy page `virt`, or `BusyTimeout` once
    /// `BUSY_WAIT_NS` have passed since the first step (`wait`'s clock
    /// reads are sparse: see `wait.rs`).
    pub(crate) fn wait_busy(&self, bound: &mut WaitBound, virt: u64) -> Result<(), PagingError> {
        if bound.expired(BUSY_WAIT_NS, || self.vm.p.now_ns()) {
            return Err(PagingError::BusyTimeout { virt });
        }
        self.vm.p.wait_step(bound.step());
        Ok(())
    }
}
