//! Taking translations away, in the one order that keeps every CPU safe:
//!
//! 1. present entries become in-transit markers stamped with this
//!    operation (`marker`): not present, frame address kept, so nothing new
//!    is mapped where a CPU may still hold the old translation. Under the
//!    shared table lock, or (paging's `unmap_one`) with interrupts off and
//!    no point between the walk and the change where this CPU answers a
//!    shootdown, which keeps the table alive the same way;
//! 2. under the exclusive lock (only tried, never waited for), tables left
//!    with nothing mapped are detached;
//! 3. a full fence, then the range is shot down on every CPU the space is
//!    active on (invariant 8), still under the exclusive lock if tables
//!    were detached, so no CPU installs into a detached entry while another
//!    may cache the old pointer (CPUs waiting for the shared side answer
//!    the shootdown while they wait: `table_lock`);
//! 4. only then are this operation's markers cleared and their frames and
//!    the detached tables freed. Markers of other operations are left
//!    alone, except in tables this operation detached: those it takes over
//!    and frees after its own flush, and their placers find them gone
//!    (invariant 7).
//!
//! If the shootdown fails, this operation's markers still in the tables
//! are quarantined: they, their frames and their tables stay for good, that
//! address range is never reused, and `Vm::quarantined_frames` counts
//! exactly those pages. (If a sweep already took every one of them over,
//! its own flush covered them and the call succeeds.)

use core::sync::atomic::{fence, AtomicU64, Ordering};

use cpus::CpuSet;

use arrayvec::ArrayVec;

use super::mapping::Vm;
use super::marker::{self, FrameTo, UnmapOp};
use super::pte::{self, PageSize};
use super::space::{Space, SpaceKind};
use super::table::{self, Detached, Lookup, PRUNE_MAX, TOP};
use super::table_lock::Exclusive;
use super::{VmError, VmPlatform, KERNEL_REGION_AREA, KERNEL_SEED_AREA, PAGE_SIZE, USER_END, USER_START};
use crate::frame::PhysAddr;

/// Attempts at the exclusive table lock before pruning is left to a later
/// unmap (mappers hold the shared lock only briefly).
const PRUNE_ATTEMPTS: usize = 1000;

impl<P: VmPlatform> Vm<P> {
    /// Begins an unmap operation on this CPU: its markers carry its stamp.
    pub(crate) fn begin_unmap(&self) -> UnmapOp {
        let cpu = self.p.cpu_index();
        // Only this CPU advances its generation (a host test may play one
        // CPU on two threads: fetch_add keeps their stamps apart too).
        // Unguarded: one atomic operation, which no interrupt can tear, and
        // interrupt handlers do not unmap.
        let generation = self.unmap_generation.unguarded(cpu).fetch_add(1, Ordering::Relaxed);
        UnmapOp::new(cpu, u64::from(generation))
    }

    /// Calls `f` on the 4 KiB leaf entry of each of `npages` pages from
    /// `virt`, with the present value it was found with (one load: `f`
    /// judges the value that was seen present). A page that is not mapped
    /// is `NotMapped`, part of a bigger page `SizeMismatch`. The caller
    /// holds the shared table lock.
    pub(super) fn for_each_leaf(
        &self,
        space: &Space,
        virt: u64,
        npages: u64,
        f: &mut dyn FnMut(u64, &AtomicU64, u64) -> Result<(), VmError>,
    ) -> Result<(), VmError> {
        for i in 0..npages {
            let va = virt + i * PAGE_SIZE;
            match table::lookup(&self.p, space.root, va, 0) {
                Lookup::Entry { entry, level } => match entry.load(Ordering::Acquire) {
                    e if !pte::is_present(e) => return Err(VmError::NotMapped { virt: va }),
                    _ if level != 0 => {
                        return Err(VmError::SizeMismatch { virt: va, mapped: PageSize::at_level(level) })
                    }
                    e => f(va, entry, e)?,
                },
                Lookup::NoTable => return Err(VmError::NotMapped { virt: va }),
            }
        }
        Ok(())
    }

    /// Unmaps all `npages` 4 KiB pages from `virt` or none: each must be
    /// mapped and pass `check` (given its entry), and none may be taken by
    /// a concurrent unmap meanwhile; then frees the frames their entries
    /// own once no CPU can reach them. On an error nothing has changed.
    pub(super) fn unmap_all(
        &self,
        space: &Space,
        virt: u64,
        npages: u64,
        check: &dyn Fn(u64, u64) -> Result<(), VmError>,
    ) -> Result<(), VmError> {
        let op = self.begin_unmap();
        {
            let _shared = self.shared(space)?;
            // Check everything before changing anything, so bad input
            // never unmaps a page even for a moment.
            self.for_each_leaf(space, virt, npages, &mut |va, _, e| check(va, e))?;
            // Then take each page, judging again the value taken: a racing
            // unmap may have taken a page, and a mapper put another there.
            let mut lost = None;
            for i in 0..npages {
                let va = virt + i * PAGE_SIZE;
                if let Err(e) = self.take_leaf(space, &op, va, check) {
                    lost = Some((i, e));
                    break;
                }
            }
            if let Some((i, e)) = lost {
                // Put back what this call took (no sweep can have touched
                // it: that needs the exclusive lock, and we hold the
                // shared one).
                for j in 0..i {
                    self.restore_leaf(space, &op, virt + j * PAGE_SIZE);
                }
                return Err(e);
            }
        }
        self.finish_unmap(space, op, virt, npages, PageSize::Size4K)
    }

    /// Marks for `op` those of `npages` 4 KiB pages from `virt` that are
    /// still mapped, undoing a mapping call that failed part-way (a racing
    /// unmap of a page it made may have won). The caller holds the shared
    /// table lock, then calls `finish_rollback`.
    pub(super) fn mark_mapped(&self, space: &Space, op: &UnmapOp, virt: u64, npages: u64) {
        for i in 0..npages {
            let _ = self.take_leaf(space, op, virt + i * PAGE_SIZE, &|_, _| Ok(()));
        }
    }

    /// Finishes a rollback's `op` over the `mapped` pages from `virt` of a
    /// call that was to map `total`, and sweeps that range: a failed call
    /// leaves the free count as it was, so the tables it made go too
    /// (opportunistically, as every sweep: not while another CPU holds the
    /// table lock).
    pub(crate) fn finish_rollback(
        &self,
        space: &Space,
        op: UnmapOp,
        virt: u64,
        mapped: u64,
        total: u64,
    ) -> Result<(), VmError> {
        self.finish_unmap(space, op, virt, mapped, PageSize::Size4K)?;
        if !matches!(self.sweep_range(space, (virt, virt + total * PAGE_SIZE)), Ok(Some(_))) {
            // Busy, or its flush failed (nothing freed): a later unmap
            // sweeps. The caller reports its own error either way.
            space.sweep_pending.store(true, Ordering::Relaxed);
        }
        Ok(())
    }

    /// Turns the present 4 KiB entry at `va` into a marker of `op` (owning
    /// the frame if the entry does) if `check` accepts its value; else
    /// `NotMapped` (not, or no longer, present) or `check`'s error. The
    /// caller holds the shared table lock.
    fn take_leaf(
        &self,
        space: &Space,
        op: &UnmapOp,
        va: u64,
        check: &dyn Fn(u64, u64) -> Result<(), VmError>,
    ) -> Result<(), VmError> {
        let Lookup::Entry { entry, level: 0 } = table::lookup(&self.p, space.root, va, 0) else {
            return Err(VmError::NotMapped { virt: va });
        };
        let mut e = entry.load(Ordering::Acquire);
        while pte::is_present(e) {
            check(va, e)?;
            match entry.compare_exchange(e, op.marker(e, PAGE_SIZE, FrameTo::Free), Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => return Ok(()),
                Err(now) => e = now, // accessed/dirty bits changed, or a protect
            }
        }
        Err(VmError::NotMapped { virt: va })
    }

    /// Puts back the entry `op`'s marker at `va` was made from. The caller
    /// holds the shared table lock since it placed the marker, so no sweep
    /// can have taken it (a `protect` may have changed its access bits:
    /// the entry comes back with those).
    fn restore_leaf(&self, space: &Space, op: &UnmapOp, va: u64) {
        if let Lookup::Entry { entry, level: 0 } = table::lookup(&self.p, space.root, va, 0) {
            let back = Self::settle(entry, op, &marker::restored);
            debug_assert!(back.is_some(), "marker at {va:#x} vanished under the shared lock");
        }
    }

    /// Replaces `op`'s marker in `entry`, if it is there, with `new(marker)`;
    /// returns the marker replaced. Loops: a `protect` may change the
    /// access bits a marker keeps.
    fn settle(entry: &AtomicU64, op: &UnmapOp, new: &dyn Fn(u64) -> u64) -> Option<u64> {
        let mut m = entry.load(Ordering::Acquire);
        while op.placed(m) {
            match entry.compare_exchange(m, new(m), Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => return Some(m),
                Err(now) => m = now,
            }
        }
        None
    }

    /// Steps 2 and 3 for `count` entries of size `size` from `virt`, of
    /// which those `op` turned into markers are finished (entries others
    /// hold, or that a sweep took over, are left alone).
    pub(crate) fn finish_unmap(
        &self,
        space: &Space,
        op: UnmapOp,
        virt: u64,
        count: u64,
        size: PageSize,
    ) -> Result<(), VmError> {
        let pages = count * (size.bytes() / PAGE_SIZE);
        if pages == 0 {
            return Ok(());
        }
        // The shared side for the walks below: a sweep must not free a
        // table under them. Its wait is bounded by a sweep's own
        // shootdown; should it still time out, this call's markers stay in
        // transit, holding their frames and range (safely: a later sweep
        // over them may take them over after its own flush).
        let shared = self.shared(space)?;
        // `shoot_down` fences before it reads who may hold the range
        // (invariant 8).
        if let Err(e) = self.shoot_down(space, virt, pages) {
            let held = self.settle_own(space, &op, virt, count, size, &marker::quarantined, &|_| {});
            if held == 0 {
                // Every marker was taken over by sweeps whose flushes
                // covered them: nothing of this call is held back.
                return Ok(());
            }
            self.quarantine(held * (size.bytes() / PAGE_SIZE));
            return Err(e.into());
        }
        self.settle_own(space, &op, virt, count, size, &|_| 0, &|m| self.release(m));
        drop(shared);
        // A plain load of a line written only when a sweep was left undone.
        if space.sweep_pending.load(Ordering::Relaxed) {
            self.sweep(space)?;
        }
        Ok(())
    }

    /// Frees the page tables of `space` that map nothing any more, in
    /// batches of up to `PRUNE_MAX` tables, each with one shootdown: empty
    /// tables stay where an unmap left them (the next map there reuses
    /// them) until a sweep, so no map or unmap allocates, zeroes or frees
    /// a table of a range in steady use. Returns how many tables went;
    /// a sweep is only ever tried, so 0 too when another CPU held the
    /// table lock throughout.
    ///
    /// Under the exclusive table lock, each batch detaches the tables, takes
    /// them out of every replica whose CPU is in their sets, shoots down
    /// the CPUs that may hold them (every online CPU for the kernel space;
    /// for a user space those in the sets that run it now), and only then
    /// frees them, with the markers of other unmaps they held (taken over:
    /// the flush covered them; invariant 7).
    ///
    /// A sweep that cannot have the lock leaves `sweep_pending` set, and
    /// the next unmap of the space sweeps (so a failed call's tables go
    /// soon even while other CPUs keep the lock busy).
    pub fn sweep(&self, space: &Space) -> Result<u64, VmError> {
        let area = Self::prune_area(space);
        space.sweep_pending.store(false, Ordering::Relaxed);
        let swept = self.sweep_range(space, area);
        if !matches!(swept, Ok(Some(_))) {
            space.sweep_pending.store(true, Ordering::Relaxed);
        }
        Ok(swept?.unwrap_or(0))
    }

    /// `sweep` of the tables inside `range` only: how many went, `None` if
    /// the lock stayed busy (before or between batches).
    pub(crate) fn sweep_range(&self, space: &Space, range: (u64, u64)) -> Result<Option<u64>, VmError> {
        let mut freed = 0;
        loop {
            let Some(exclusive) = self.lock_exclusive(space) else { return Ok(None) };
            let (tables, more) = self.sweep_batch(space, range)?;
            drop(exclusive);
            freed += tables;
            if !more {
                return Ok(Some(freed));
            }
        }
    }

    /// One batch of `sweep`; the caller holds the exclusive lock. Returns
    /// the tables freed and whether more may be left.
    fn sweep_batch(&self, space: &Space, area: (u64, u64)) -> Result<(u64, bool), VmError> {
        let keep = space.kind() == SpaceKind::Kernel;
        let mut tables = ArrayVec::<Detached, PRUNE_MAX>::new();
        let done = table::prune(&self.p, space.root, TOP, 0, area, keep, &mut tables);
        if tables.is_empty() {
            return Ok((0, false));
        }
        // Invariant 8: the detaching stores before the reads of who holds.
        fence(Ordering::SeqCst);
        let targets = match space.kind() {
            SpaceKind::Kernel => self.p.online_cpus(),
            SpaceKind::User => {
                let mut holders = CpuSet::EMPTY;
                for d in &tables {
                    let Some(set) = self.p.table_cpus(PhysAddr::new_truncate(pte::addr(d.old))) else { continue };
                    let cpus = set.load(Ordering::SeqCst);
                    // Replicas link only page tables (level-1 entries). A
                    // detached PD or PDPT adds the CPUs that copied huge
                    // leaves from it: one may hold a leaf whose unmap this
                    // sweep takes over (its marker is in the table).
                    if d.level == 1 {
                        self.unlink(space, cpus, d.virt, 1, d.old);
                    }
                    holders = holders.union(cpus);
                }
                holders.intersect(space.active_cpus())
            }
        };
        if let Err(e) = self.shoot_down_to(targets, area.0, (area.1 - area.0) / PAGE_SIZE) {
            // Put the tables back, so their markers keep the range reserved
            // and their placers find them; nothing is freed. Replicas link
            // them again at their next soft faults.
            for d in tables.iter().rev() {
                d.entry.store(d.old, Ordering::Release);
            }
            return Err(e.into());
        }
        for d in &tables {
            let t = pte::addr(d.old);
            for e in table::at(&self.p, t).iter().map(|e| e.load(Ordering::Acquire)) {
                if marker::is_marker(e) {
                    debug_assert!(!marker::is_quarantined(e), "a quarantined marker's table was pruned");
                    self.release(e);
                }
            }
            self.free_kept(t);
        }
        self.my_counts().tables_freed(tables.len() as u64);
        Ok((tables.len() as u64, !done))
    }

    /// Replaces each marker `op` placed among `count` entries of size
    /// `size` from `virt` with `new(marker)`, then calls `after(marker)`
    /// (once the marker is out of the entry); returns how many. The caller
    /// holds the table lock.
    // Eight arguments, one over clippy's limit: they are one step's whole
    // context, and bundling them in a struct only for this private helper
    // would restructure the unmap path for a lint.
    #[allow(clippy::too_many_arguments)]
    fn settle_own(
        &self,
        space: &Space,
        op: &UnmapOp,
        virt: u64,
        count: u64,
        size: PageSize,
        new: &dyn Fn(u64) -> u64,
        after: &dyn Fn(u64),
    ) -> u64 {
        let mut n = 0;
        for i in 0..count {
            let va = virt + i * size.bytes();
            if let Lookup::Entry { entry, level } = table::lookup(&self.p, space.root, va, size.level()) {
                if level == size.level() {
                    if let Some(m) = Self::settle(entry, op, new) {
                        after(m);
                        n += 1;
                    }
                }
            }
        }
        n
    }

    /// Frees the frame an in-transit marker owns, if it owns one.
    fn release(&self, marker: u64) {
        if let Some(frame) = marker::owned_frame(marker) {
            self.free_kept(frame);
        }
    }

    /// The exclusive table lock, if it comes free within a bounded number
    /// of attempts.
    fn lock_exclusive<'s>(&self, space: &'s Space) -> Option<Exclusive<'s>> {
        let counts = &self.my_counts().table_lock;
        for failed in 0..PRUNE_ATTEMPTS {
            if let Some(g) = space.tables.try_write() {
                counts.taken(failed as u64);
                return Some(g);
            }
            core::hint::spin_loop();
        }
        counts.refused(PRUNE_ATTEMPTS as u64);
        None
    }

    /// Where tables of `space` may be pruned: never the stack area.
    fn prune_area(space: &Space) -> (u64, u64) {
        match space.kind() {
            SpaceKind::Kernel => (KERNEL_SEED_AREA.start, KERNEL_REGION_AREA.end),
            SpaceKind::User => (USER_START, USER_END),
        }
    }
}
