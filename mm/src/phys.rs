//! The physical frame allocator: per-CPU magazines and a depot in front of
//! one buddy allocator, with the frame database checking every transition.
//!
//! Order-0 allocations and frees go to the running CPU's magazines; only
//! when both are empty (full) does the CPU exchange a magazine with the
//! depot, and only when the depot cannot help does it take the buddy lock,
//! once per magazine's worth of frames. Frees from any CPU go to the local
//! magazines. Under memory pressure an allocation drains every CPU's
//! magazines and the depot back to the buddy before reporting
//! `OutOfMemory`.
//!
//! `Policy::GlobalLock` is the baseline design (Zephyr's: one free list
//! under one lock): every order-0 request goes straight to the buddy under
//! its lock. Both policies share the frame database and the buddy, so
//! benchmarks can switch between them at run time.
//!
//! A CPU's magazines are an `OwnerCell`: the CPU itself uses them without
//! a lock (interrupts off), and another CPU (a reclaim under pressure, a
//! policy switch, the audit) reaches them only after quiescing the owner
//! with an empty cross-call (`owner_cell`, docs/protocols.md "Frame fast
//! path"). So an order-0 alloc + free pair on the fast path makes one locked
//! RMW: the free's CAS `Allocated → Cached` (of two CPUs double-freeing a
//! frame exactly one wins); the alloc's `Cached → Allocated` is a checked
//! store (`FrameDb::allocate_from_own_magazine`).
//!
//! Lock order: a CPU cache, then the depot or the buddy; the depot and the
//! buddy are never held together. Only the audit holds several caches, all
//! of them, taken in index order. Nothing quiesces (waits for other CPUs)
//! while holding a cache or inside its owner access.

use core::ops::Range;

use crate::buddy::{order_for, Buddy, Link, MAX_ORDER};
use crate::counters::{bump, CounterSnapshot, CpuCounters};
use crate::frame::{Frame, FrameError, FrameKind, PhysAddr};
use crate::frame_db::FrameDb;
use crate::magazine::{CpuCache, Depot, Magazine, MAG_MAX};
use crate::owner_cell::{Freeze, OwnerCell};
use crate::platform::CpuPlatform;
use crate::sync::{AtomicU64, AtomicUsize, Mutex, Ordering};
use crate::PAGE_SIZE;
use cpus::{CachePadded, CpuGuard, CpuSet, PerCpuRef};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Policy {
    Magazine = 0,
    GlobalLock = 1,
}

/// Drain-and-retry rounds before an allocation reports `OutOfMemory`.
const RECLAIM_ATTEMPTS: usize = 4;

/// Depot lock contentions between magazine growth steps (illumos rule:
/// a contended depot means magazines are too small).
const GROW_AFTER_CONTENTIONS: u64 = 16;

/// One CPU's share of the allocator.
pub struct CpuShare {
    /// The CPU's magazines: its own without a lock, others' after a quiesce.
    cache: OwnerCell<CpuCache>,
    /// Frames in `cache`, kept for `free_bytes` (written by whoever holds
    /// the cache).
    cached: AtomicU64,
    pub counters: CpuCounters,
}

impl CpuShare {
    #[cfg(not(loom))]
    pub const fn new() -> CpuShare {
        CpuShare { cache: OwnerCell::new(CpuCache::new()), cached: AtomicU64::new(0), counters: CpuCounters::new() }
    }

    #[cfg(loom)]
    pub fn new() -> CpuShare {
        CpuShare { cache: OwnerCell::new(CpuCache::new()), cached: AtomicU64::new(0), counters: CpuCounters::new() }
    }
}

impl Default for CpuShare {
    fn default() -> Self {
        Self::new()
    }
}

/// Where every frame is, as counted by `audit`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Census {
    pub usable: u64,
    pub buddy: u64,
    pub magazines: u64,
    pub depot: u64,
    pub allocated: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuditViolation {
    /// A frame found in a structure has the wrong state word.
    WrongState { phys: PhysAddr, found_in: &'static str, state: FrameKind },
    /// A frame is in more than one structure (or twice in one).
    InTwoPlaces { phys: PhysAddr, found_in: &'static str },
    /// The structures hold a different number of frames than the frame
    /// database says are in that state: some frame is in two places.
    CountMismatch { what: &'static str, structures: u64, database: u64 },
    /// buddy + magazines + depot + allocated != usable.
    NotConserved { census: Census },
    /// These CPUs did not answer the quiesce in time (or answered from
    /// inside their cache access): their caches could not be frozen, so
    /// nothing was audited.
    NotFrozen { cpus: CpuSet },
}

/// The first fields are read by every operation and written only at set-up
/// or rarely (`mag_cap` grows, `policy` switches between benchmark runs):
/// they share lines no operation writes. The locks and the fields written
/// under them each get lines of their own, so writing one never makes
/// another CPU miss on the read-mostly ones.
pub struct PhysAllocator<'a, P: CpuPlatform> {
    db: FrameDb<'a>,
    cpus: PerCpuRef<'a, CpuShare>,
    policy: AtomicUsize,
    mag_cap: AtomicUsize,
    usable: u64,
    platform: P,
    buddy: CachePadded<Mutex<Buddy<'a>>>,
    /// Written on every buddy lock hold.
    buddy_free: CachePadded<AtomicU64>,
    depot: CachePadded<Mutex<Depot<'a>>>,
    /// Written on every depot lock hold.
    depot_frames: CachePadded<AtomicU64>,
    depot_contention: CachePadded<AtomicU64>,
}

impl<'a, P: CpuPlatform> PhysAllocator<'a, P> {
    /// Takes over `db`, whose frames are all `Reserved`, and makes the
    /// frames in `usable` (index ranges) free. `links` has one entry per
    /// frame; `cpus` one share per CPU; `depot` has room for each full
    /// magazine the depot may keep. `db.base()` must be aligned to `2^MAX_ORDER`
    /// frames so buddy blocks are physically aligned.
    pub fn new(
        db: FrameDb<'a>,
        links: &'a mut [Link],
        usable: impl IntoIterator<Item = Range<usize>>,
        cpus: PerCpuRef<'a, CpuShare>,
        magazine_capacity: usize,
        depot: &'a mut [Magazine],
        platform: P,
    ) -> PhysAllocator<'a, P> {
        assert_eq!(
            db.base().as_u64() / PAGE_SIZE % (1 << MAX_ORDER),
            0,
            "frame database base must be 2^MAX_ORDER aligned"
        );
        assert_eq!(links.len(), db.len());
        let mut buddy = Buddy::new(links);
        let mut count = 0;
        for r in usable {
            for i in r.clone() {
                db.transition(i, FrameKind::Reserved, FrameKind::Free, 0).expect("usable ranges overlap");
            }
            count += r.len() as u64;
            buddy.free_range(r.start, r.end);
        }
        for (cpu, share) in cpus.iter().enumerate() {
            share.cache.bind(cpu);
        }
        PhysAllocator {
            db,
            buddy_free: CachePadded::new(AtomicU64::new(buddy.free_frames())),
            buddy: CachePadded::new(Mutex::new(buddy)),
            depot: CachePadded::new(Mutex::new(Depot::new(depot))),
            depot_frames: CachePadded::new(AtomicU64::new(0)),
            depot_contention: CachePadded::new(AtomicU64::new(0)),
            cpus,
            policy: AtomicUsize::new(Policy::Magazine as usize),
            mag_cap: AtomicUsize::new(magazine_capacity.clamp(1, MAG_MAX)),
            usable: count,
            platform,
        }
    }

    pub fn db(&self) -> &FrameDb<'a> {
        &self.db
    }

    pub fn usable_frames(&self) -> u64 {
        self.usable
    }

    pub fn policy(&self) -> Policy {
        match self.policy.load(Ordering::Relaxed) {
            0 => Policy::Magazine,
            _ => Policy::GlobalLock,
        }
    }

    /// Switches policy; cached frames go back to the buddy first. Call at
    /// a quiescent point (benchmarks switch between runs). A CPU that does
    /// not answer the quiesce keeps its cached frames (counted in
    /// `reclaim_skips`) until a later reclaim: they stay `Cached`, and the
    /// audit still finds them.
    pub fn set_policy(&self, policy: Policy) {
        self.platform.without_interrupts(|me| self.reclaim_all(me));
        self.policy.store(policy as usize, Ordering::Relaxed);
    }

    pub fn magazine_capacity(&self) -> usize {
        self.mag_cap.load(Ordering::Relaxed)
    }

    pub fn set_magazine_capacity(&self, cap: usize) {
        self.mag_cap.store(cap.clamp(1, MAG_MAX), Ordering::Relaxed);
    }

    /// Free bytes, cached frames included. A snapshot: other CPUs may be
    /// allocating while it is summed.
    pub fn free_bytes(&self) -> u64 {
        let cached: u64 = self.cpus.iter().map(|c| c.cached.load(Ordering::Relaxed)).sum();
        (self.buddy_free.load(Ordering::Relaxed) + self.depot_frames.load(Ordering::Relaxed) + cached) * PAGE_SIZE
    }

    pub fn counters(&self, cpu: usize) -> CounterSnapshot {
        // Any CPU's counters: reports read every CPU's by design.
        self.cpus.remote(cpu).counters.snapshot()
    }

    /// Allocates one frame; the caller owns it until it gives it back.
    // Makes the handle for the frame it just took out of the free state.
    #[allow(unsafe_code)]
    pub fn alloc_page(&self) -> Result<Frame, FrameError> {
        self.platform.without_interrupts(|me| {
            bump(&self.cpus.local(me).counters.allocs);
            let index = match self.policy() {
                Policy::GlobalLock => self.buddy_alloc(me, 0)?,
                Policy::Magazine => self.magazine_alloc(me)?,
            };
            // SAFETY: the frame just went from free to `Allocated` under
            // this call, so nobody else owns it or holds a handle to it.
            Ok(unsafe { Frame::from_phys(self.db.phys_of(index)) })
        })
    }

    /// Gives back a frame `alloc_page` handed out, on any CPU. The frame
    /// database still checks it (a handle made with `Frame::from_phys`
    /// may name anything): bad input changes nothing.
    // Frees by address the frame whose handle it was given.
    #[allow(unsafe_code)]
    pub fn free_page(&self, frame: Frame) -> Result<(), FrameError> {
        // SAFETY: the caller gave up its handle, so it owned the frame and
        // nobody else does.
        unsafe { self.free_raw(frame.into_phys()) }
    }

    /// Frees one frame by address: the path for frames kept by address
    /// (one frame of an `alloc_contiguous` run) and for the frame
    /// database's own checks. A double free, a reserved frame, an address
    /// outside RAM or an unaligned one give their `FrameError` and change
    /// nothing.
    ///
    /// # Safety
    /// If `phys` names an allocated frame, the caller owns it and nobody
    /// uses it any more: after this call the allocator may hand it to
    /// someone else.
    // A free by address: the caller vouches it owns the frame.
    #[allow(unsafe_code)]
    pub unsafe fn free_raw(&self, phys: PhysAddr) -> Result<(), FrameError> {
        let index = self.db.index_of(phys)?;
        self.platform.without_interrupts(|me| {
            let cpu = me.cpu();
            let owner = self.db.owner_cpu(index);
            let to = match self.policy() {
                Policy::Magazine => FrameKind::Cached,
                Policy::GlobalLock => FrameKind::Free,
            };
            self.db.transition(index, FrameKind::Allocated, to, cpu).map_err(|k| self.db.free_error(index, k))?;
            let counters = &self.cpus.local(me).counters;
            bump(&counters.frees);
            if owner != cpu {
                bump(&counters.remote_frees);
            }
            match to {
                FrameKind::Cached => self.magazine_free(me, index as u32),
                _ => self.buddy_free_range(me, index..index + 1),
            }
            Ok(())
        })
    }

    /// `count` physically contiguous frames; a power-of-two `count` is
    /// naturally aligned to its size. The run is kept by address (no
    /// handle per frame); `free_contiguous` gives it back.
    pub fn alloc_contiguous(&self, count: u64) -> Result<PhysAddr, FrameError> {
        if count == 0 {
            return Err(FrameError::ZeroCount);
        }
        let max = (1u64 << MAX_ORDER).min(self.usable);
        if count > max {
            return Err(FrameError::TooLarge { count, max });
        }
        self.platform.without_interrupts(|me| {
            let cpu = me.cpu();
            let order = order_for(count);
            // The block is trimmed to `count` frames under the same lock hold.
            let take = || {
                self.with_buddy(me, |buddy| {
                    let s = buddy.alloc(order)?;
                    buddy.free_range(s + count as usize, s + (1 << order));
                    Some(s)
                })
            };
            let start = match take() {
                Some(s) => s,
                None => self.after_reclaim(me, take).ok_or(FrameError::OutOfMemory)?,
            };
            for i in start..start + count as usize {
                self.expect_transition(i, FrameKind::Free, FrameKind::Allocated, cpu);
            }
            Ok(self.db.phys_of(start))
        })
    }

    /// Frees `count` frames starting at `phys`. Every frame must be
    /// allocated; otherwise nothing is freed.
    ///
    /// # Safety
    /// As for `free_raw`, for every frame of the run: the caller owns them
    /// (an `alloc_contiguous` run, or pages of one) and uses them no more.
    // A free by address: the caller vouches it owns the run.
    #[allow(unsafe_code)]
    pub unsafe fn free_contiguous(&self, phys: PhysAddr, count: u64) -> Result<(), FrameError> {
        if count == 0 {
            return Err(FrameError::ZeroCount);
        }
        let start = self.db.index_of(phys)?;
        let end = match start.checked_add(count as usize) {
            Some(end) if count <= self.db.len() as u64 && end <= self.db.len() => end,
            _ => return Err(FrameError::NotRam { phys: self.db.phys_of(self.db.len()) }),
        };
        self.platform.without_interrupts(|me| {
            let cpu = me.cpu();
            for i in start..end {
                if let Err(kind) = self.db.transition(i, FrameKind::Allocated, FrameKind::Free, cpu) {
                    // Put back the ones already taken: nothing changes.
                    for j in start..i {
                        self.expect_transition(j, FrameKind::Free, FrameKind::Allocated, cpu);
                    }
                    return Err(self.db.free_error(i, kind));
                }
            }
            self.buddy_free_range(me, start..end);
            Ok(())
        })
    }

    fn expect_transition(&self, index: usize, from: FrameKind, to: FrameKind, cpu: usize) {
        if let Err(actual) = self.db.transition(index, from, to, cpu) {
            panic!(
                "frame {:#x}: expected {from:?} on the way to {to:?}, found {actual:?}",
                self.db.phys_of(index).as_u64()
            );
        }
    }

    /// Runs `f` under the buddy lock (counted for the guard's CPU) and keeps the
    /// lock-free copy of the buddy's free count current.
    fn with_buddy<R>(&self, me: &CpuGuard, f: impl FnOnce(&mut Buddy<'a>) -> R) -> R {
        let mut buddy = self.buddy.lock_counted(&self.cpus.local(me).counters.buddy);
        let r = f(&mut buddy);
        self.buddy_free.store(buddy.free_frames(), Ordering::Relaxed);
        r
    }

    /// One block of `2^order` frames straight from the buddy, reclaiming
    /// cached frames if it is empty.
    fn buddy_alloc(&self, me: &CpuGuard, order: usize) -> Result<usize, FrameError> {
        let take = || self.with_buddy(me, |buddy| buddy.alloc(order));
        let index = match take() {
            Some(i) => i,
            None => self.after_reclaim(me, take).ok_or(FrameError::OutOfMemory)?,
        };
        for i in index..index + (1 << order) {
            self.expect_transition(i, FrameKind::Free, FrameKind::Allocated, me.cpu());
        }
        Ok(index)
    }

    /// Drains every cache and retries `take`. Another CPU may refill its
    /// magazine between the drain and the retry, so while frames are still
    /// cached somewhere the drain is repeated (a bounded number of times).
    fn after_reclaim<T>(&self, me: &CpuGuard, mut take: impl FnMut() -> Option<T>) -> Option<T> {
        for _ in 0..RECLAIM_ATTEMPTS {
            self.reclaim_all(me);
            if let Some(t) = take() {
                return Some(t);
            }
            if self.free_bytes() == 0 {
                break;
            }
        }
        None
    }

    /// Frames whose state is already `Free` go back into the buddy.
    fn buddy_free_range(&self, me: &CpuGuard, range: Range<usize>) {
        self.with_buddy(me, |buddy| buddy.free_range(range.start, range.end));
    }

    fn magazine_alloc(&self, me: &CpuGuard) -> Result<usize, FrameError> {
        let share = self.cpus.local(me);
        let index = share.cache.with_owner(me, |cache| {
            let index = match cache.pop() {
                Some(i) => {
                    bump(&share.counters.fast_allocs);
                    Some(i)
                }
                None => {
                    self.refill(me, cache);
                    cache.pop()
                }
            };
            share.cached.store(cache.len() as u64, Ordering::Relaxed);
            if let Some(i) = index {
                // Popped from this CPU's own magazine: nobody else can
                // change its state (`allocate_from_own_magazine`).
                if let Err(actual) = self.db.allocate_from_own_magazine(i as usize, me.cpu()) {
                    panic!("frame {:#x} in a magazine is {actual:?}, not Cached", self.db.phys_of(i as usize).as_u64());
                }
            }
            index
        });
        match index {
            Some(i) => Ok(i as usize),
            // Nothing here, in the depot or in the buddy: take back what
            // other CPUs have parked, then try the buddy once more. Outside
            // the cache access: the reclaim quiesces other CPUs.
            None => self.buddy_alloc(me, 0),
        }
    }

    /// Loads a magazine from this CPU's reserve, or from the depot, or a
    /// batch of frames from the buddy.
    fn refill(&self, me: &CpuGuard, cache: &mut CpuCache) {
        let counters = &self.cpus.local(me).counters;
        if cache.load_reserved() {
            return;
        }
        if let Some(mag) = self.with_depot(me, |d| d.take()) {
            bump(&counters.depot_exchanges);
            cache.loaded = mag;
            return;
        }
        let cap = self.magazine_capacity();
        let mut batch = Magazine::new();
        self.with_buddy(me, |buddy| {
            while batch.len() < cap {
                match buddy.alloc(0) {
                    Some(i) => batch.push(i as u32),
                    None => break,
                }
            }
        });
        for &i in &batch {
            self.expect_transition(i as usize, FrameKind::Free, FrameKind::Cached, me.cpu());
        }
        cache.loaded = batch;
    }

    fn magazine_free(&self, me: &CpuGuard, index: u32) {
        let share = self.cpus.local(me);
        let cap = self.magazine_capacity();
        share.cache.with_owner(me, |cache| {
            match cache.push(index, cap) {
                Ok(()) => bump(&share.counters.fast_frees),
                Err(index) => {
                    // Both magazines full: the previous one goes to this CPU's
                    // reserve, or to the depot when that is full (or, if the
                    // depot is at its limit, back to the buddy).
                    let full = core::mem::take(&mut cache.previous);
                    if let Err(full) = cache.keep(full) {
                        bump(&share.counters.depot_exchanges);
                        if let Err(full) = self.with_depot(me, |d| d.put(full)) {
                            self.drain(me, &full);
                        }
                    }
                    cache.push(index, cap).expect("previous magazine was just emptied");
                }
            }
            share.cached.store(cache.len() as u64, Ordering::Relaxed);
        });
    }

    /// Runs `f` on the depot, keeping its frame count current, and grows
    /// magazines when the depot lock is contended.
    fn with_depot<R>(&self, me: &CpuGuard, f: impl FnOnce(&mut Depot<'a>) -> R) -> R {
        let counts = &self.cpus.local(me).counters.depot;
        let mut depot = match self.depot.try_lock() {
            Some(d) => {
                counts.taken(0);
                d
            }
            None => {
                let n = self.depot_contention.fetch_add(1, Ordering::Relaxed) + 1;
                let cap = self.magazine_capacity();
                // At the largest size already: no write to the read-mostly
                // line every operation reads.
                if n.is_multiple_of(GROW_AFTER_CONTENTIONS) && cap < MAG_MAX {
                    let _ = self.mag_cap.compare_exchange(
                        cap,
                        (cap + 1).min(MAG_MAX),
                        Ordering::Relaxed,
                        Ordering::Relaxed,
                    );
                }
                self.depot.lock_contended(counts)
            }
        };
        let r = f(&mut depot);
        self.depot_frames.store(depot.frames() as u64, Ordering::Relaxed);
        r
    }

    /// Cached frames back to the buddy, under one buddy lock hold.
    fn drain(&self, me: &CpuGuard, frames: &[u32]) {
        if frames.is_empty() {
            return;
        }
        for &i in frames {
            self.expect_transition(i as usize, FrameKind::Cached, FrameKind::Free, me.cpu());
        }
        self.with_buddy(me, |buddy| {
            for &i in frames {
                buddy.free(i as usize, 0);
            }
        });
    }

    /// Empties every CPU's magazines and the depot into the buddy. Called
    /// with no cache held and outside this CPU's cache access: it quiesces
    /// every other CPU (`Freeze`) and then drains each cache under its lock.
    /// A CPU that does not answer in time keeps its cache (counted in
    /// `reclaim_skips`); nothing of it is touched.
    fn reclaim_all(&self, me: &CpuGuard) {
        let counters = &self.cpus.local(me).counters;
        bump(&counters.reclaims);
        let freeze = Freeze::begin(self.cpus.iter().map(|s| &s.cache), me, &self.platform);
        for (i, share) in self.cpus.iter().enumerate() {
            let drained = freeze.with(i, |cache| {
                while let Some(mag) = cache.take_one() {
                    self.drain(me, &mag);
                }
                share.cached.store(0, Ordering::Relaxed);
            });
            if drained.is_none() {
                bump(&counters.reclaim_skips);
            }
        }
        drop(freeze);
        // One magazine at a time: the depot lock is never held with the
        // buddy lock, and nothing large lands on the stack.
        while let Some(mag) = self.with_depot(me, |d| d.take()) {
            self.drain(me, &mag);
        }
    }

    /// Proves frame conservation at a quiescent point: every frame in the
    /// buddy is `Free`, every frame in a magazine or the depot is `Cached`,
    /// each structure holds exactly as many frames as the database has in
    /// that state (so none is in two places), and the states add up.
    ///
    /// Every cache is frozen first (every other CPU quiesced, `Freeze`); a
    /// CPU that does not answer in time gives `NotFrozen` and nothing is
    /// audited or changed.
    pub fn audit(&self) -> Result<Census, AuditViolation> {
        self.platform.without_interrupts(|me| {
            let freeze = Freeze::begin(self.cpus.iter().map(|s| &s.cache), me, &self.platform);
            let mut caches = freeze.lock_all().map_err(|cpus| AuditViolation::NotFrozen { cpus })?;
            let depot = self.depot.lock();
            let buddy = self.buddy.lock();
            // Each frame found in a structure gets the database's audit mark;
            // finding it marked already means it is in two places.
            let check = |index: usize, want: FrameKind, found_in: &'static str| {
                let phys = self.db.phys_of(index);
                let state = self.db.kind(index);
                if state != want {
                    return Err(AuditViolation::WrongState { phys, found_in, state });
                }
                if !self.db.mark_seen(index) {
                    return Err(AuditViolation::InTwoPlaces { phys, found_in });
                }
                Ok(())
            };
            let result = self.census(&mut caches, &depot, &buddy, check);
            // Still frozen: no owner writes a cached frame's state meanwhile.
            self.db.clear_seen_marks();
            result
        })
    }

    /// The walk behind `audit`, with every lock held.
    fn census(
        &self,
        caches: &mut crate::owner_cell::AllLocked<'_, '_, CpuCache>,
        depot: &Depot<'a>,
        buddy: &Buddy<'a>,
        check: impl Fn(usize, FrameKind, &'static str) -> Result<(), AuditViolation>,
    ) -> Result<Census, AuditViolation> {
        let mut census = Census { usable: self.usable, ..Census::default() };
        for order in 0..=MAX_ORDER {
            for head in buddy.iter_order(order) {
                for i in head..head + (1 << order) {
                    check(i, FrameKind::Free, "buddy")?;
                }
                census.buddy += 1 << order;
            }
        }
        for c in 0..caches.len() {
            caches.with(c, |cache| {
                for i in cache.frames() {
                    check(i as usize, FrameKind::Cached, "magazine")?;
                    census.magazines += 1;
                }
                Ok(())
            })?;
        }
        for mag in depot.magazines() {
            for &i in mag {
                check(i as usize, FrameKind::Cached, "depot")?;
                census.depot += 1;
            }
        }
        let (mut free, mut cached) = (0u64, 0u64);
        for i in 0..self.db.len() {
            match self.db.kind(i) {
                FrameKind::Free => free += 1,
                FrameKind::Cached => cached += 1,
                FrameKind::Allocated => census.allocated += 1,
                FrameKind::Reserved => {}
            }
        }
        let mismatch = |what, structures, database| AuditViolation::CountMismatch { what, structures, database };
        if census.buddy != free || buddy.free_frames() != free {
            return Err(mismatch("buddy", census.buddy, free));
        }
        if census.magazines + census.depot != cached {
            return Err(mismatch("magazines + depot", census.magazines + census.depot, cached));
        }
        if census.buddy + census.magazines + census.depot + census.allocated != census.usable {
            return Err(AuditViolation::NotConserved { census });
        }
        Ok(census)
    }
}

#[cfg(all(test, loom))]
mod loom_tests;
#[cfg(all(test, not(loom)))]
mod tests;
