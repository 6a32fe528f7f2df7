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

use core::sync::atomic::{AtomicU64, Ordering};

use arrayvec::ArrayVec;

use super::mapping::Vm;
use super::marker::{self, FrameTo, UnmapOp};
use super::pte::{self, PageSize};
use super::space::{AddressSpace, SpaceKind};
use super::table::{self, Lookup, PRUNE_MAX, TOP};
use super::table_lock::Exclusive;
use super::{VmError, VmPlatform, KERNEL_REGION_AREA, KERNEL_SEED_AREA, PAGE_SIZE, USER_END, USER_START};

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
        space: &AddressSpace,
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
        space: &AddressSpace,
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
    pub(super) fn mark_mapped(&self, space: &AddressSpace, op: &UnmapOp, virt: u64, npages: u64) {
        for i in 0..npages {
            let _ = self.take_leaf(space, op, virt + i * PAGE_SIZE, &|_, _| Ok(()));
        }
    }

    /// Finishes a rollback's `op` over `npages` pages from `virt`. Tables
    /// made for the page that failed lie past the range: the next unmap
    /// sweeps them.
    pub(crate) fn finish_rollback(
        &self,
        space: &AddressSpace,
        op: UnmapOp,
        virt: u64,
        npages: u64,
    ) -> Result<(), VmError> {
        space.prune_pending.store(true, Ordering::Relaxed);
        self.finish_unmap(space, op, virt, npages, PageSize::Size4K)
    }

    /// Turns the present 4 KiB entry at `va` into a marker of `op` (owning
    /// the frame if the entry does) if `check` accepts its value; else
    /// `NotMapped` (not, or no longer, present) or `check`'s error. The
    /// caller holds the shared table lock.
    fn take_leaf(
        &self,
        space: &AddressSpace,
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
    fn restore_leaf(&self, space: &AddressSpace, op: &UnmapOp, va: u64) {
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

    /// Steps 2-4 for `count` entries of size `size` from `virt`, of which
    /// those `op` turned into markers are finished (entries others hold,
    /// or that a sweep took over, are left alone).
    pub(crate) fn finish_unmap(
        &self,
        space: &AddressSpace,
        op: UnmapOp,
        virt: u64,
        count: u64,
        size: PageSize,
    ) -> Result<(), VmError> {
        let pages = count * (size.bytes() / PAGE_SIZE);
        let mut tables = ArrayVec::<(&AtomicU64, u64), PRUNE_MAX>::new();
        let exclusive = self.lock_exclusive(space);
        let mut flush = (virt, pages);
        if exclusive.is_some() {
            let area = Self::prune_area(space);
            let sweep = space.prune_pending.swap(false, Ordering::Relaxed);
            let range = if sweep { area } else { (virt, virt + pages.max(1) * PAGE_SIZE) };
            let keep = space.kind() == SpaceKind::Kernel;
            if !table::prune(&self.p, space.root, TOP, 0, range, keep, &mut tables) {
                space.prune_pending.store(true, Ordering::Relaxed);
            }
            if sweep && !tables.is_empty() {
                // Tables far from this range went: flush everything.
                flush = (area.0, (area.1 - area.0) / PAGE_SIZE);
            }
        } else {
            space.prune_pending.store(true, Ordering::Relaxed);
        }
        // Nothing detached: mappers need not wait for the flush.
        let exclusive = exclusive.filter(|_| !tables.is_empty());
        if pages == 0 && tables.is_empty() {
            return Ok(());
        }
        // `shoot_down` fences before it reads who is active (invariant 8).
        let flushed = self.shoot_down(space, flush.0, flush.1.max(1));
        if flushed.is_err() && !tables.is_empty() {
            // Put the tables back, so their markers keep the range
            // reserved and their placers find them; nothing is freed. A
            // later unmap prunes them.
            for (entry, old) in tables.iter().rev() {
                entry.store(*old, Ordering::Release);
            }
            space.prune_pending.store(true, Ordering::Relaxed);
        }
        // The walks below need the lock: the exclusive side we hold, or
        // else the shared one (a pruner must not free a table under us).
        // That wait is bounded by the pruner's own shootdown; should it
        // still time out, this call's markers stay in transit, holding
        // their frames and range (safely: a later sweep over them may
        // take them over after its own flush).
        let _shared = match exclusive {
            Some(_) => None,
            None => Some(self.shared(space)?),
        };
        if let Err(e) = flushed {
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
        for &(_, old) in &tables {
            let t = pte::addr(old);
            // Every marker in a table this call detached is taken over:
            // the flush above covered it (the table was detached after the
            // marker was placed), and its placer will not find it.
            for e in super::table::at(&self.p, t).iter().map(|e| e.load(Ordering::Acquire)) {
                if marker::is_marker(e) {
                    debug_assert!(!marker::is_quarantined(e), "a quarantined marker's table was pruned");
                    self.release(e);
                }
            }
            self.free_kept(t);
        }
        self.my_counts().tables_freed(tables.len() as u64);
        drop(exclusive);
        Ok(())
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
        space: &AddressSpace,
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
    fn lock_exclusive<'s>(&self, space: &'s AddressSpace) -> Option<Exclusive<'s>> {
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
    fn prune_area(space: &AddressSpace) -> (u64, u64) {
        match space.kind() {
            SpaceKind::Kernel => (KERNEL_SEED_AREA.start, KERNEL_REGION_AREA.end),
            SpaceKind::User => (USER_START, USER_END),
        }
    }
}
