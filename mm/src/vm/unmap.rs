//! Taking translations away, in the one order that keeps every CPU safe:
//!
//! 1. under the shared table lock, present entries become in-transit
//!    markers stamped with this operation (`marker`): not present, frame
//!    address kept, so nothing new is mapped where a CPU may still hold the
//!    old translation;
//! 2. under the exclusive lock (only tried, never waited for), tables left
//!    with nothing mapped are detached;
//! 3. a full fence, then the range is shot down on every CPU the space is
//!    active on (invariant 8), still under the exclusive lock if tables
//!    were detached, so no CPU installs into a detached slot while another
//!    may cache the old pointer (CPUs waiting for the shared side answer
//!    the shootdown while they wait: `table_lock`);
//! 4. only then are frames and detached tables freed and this operation's
//!    markers cleared. Markers of other operations are left alone, except
//!    in tables this operation detached: those it takes over, frees after
//!    its own flush, and their placers find them gone (invariant 7).
//!
//! If the shootdown fails, this operation's markers are quarantined and
//! they, their frames and their tables stay as they are for good: that
//! memory and that address range are never reused, and
//! `Vm::quarantined_frames` counts exactly those markers.

use core::sync::atomic::{AtomicU64, Ordering};

use arrayvec::ArrayVec;

use super::mapping::Vm;
use super::marker::{self, UnmapOp};
use super::pte::{self, PageSize};
use super::space::{AddressSpace, SpaceKind};
use super::table::{self, Lookup, PRUNE_MAX, TOP};
use super::table_lock::Exclusive;
use super::{VmError, VmPlatform, KERNEL_REGION_AREA, KERNEL_SEED_AREA, PAGE, USER_END, USER_START};

/// Attempts at the exclusive table lock before pruning is left to a later
/// unmap (mappers hold the shared lock only briefly).
const PRUNE_ATTEMPTS: usize = 1000;

impl<P: VmPlatform> Vm<P> {
    /// Begins an unmap operation on this CPU: its markers carry its stamp.
    pub(crate) fn begin_unmap(&self) -> UnmapOp {
        let cpu = self.p.cpu_index();
        // Only this CPU advances its generation (a host test may play one
        // CPU on two threads: fetch_add keeps their stamps apart too).
        let generation = self.unmap_generation[cpu].fetch_add(1, Ordering::Relaxed);
        UnmapOp::new(cpu, u64::from(generation))
    }

    /// Calls `f` on the 4 KiB leaf entry of each of `npages` pages from
    /// `virt`. A page that is not mapped is `NotMapped`, part of a bigger
    /// page `SizeMismatch`. The caller holds the shared table lock.
    pub(super) fn for_each_leaf(
        &self,
        space: &AddressSpace,
        virt: u64,
        npages: u64,
        f: &mut dyn FnMut(u64, &AtomicU64) -> Result<(), VmError>,
    ) -> Result<(), VmError> {
        for i in 0..npages {
            let va = virt + i * PAGE;
            match table::lookup(&self.p, space.root, va, 0) {
                Lookup::Entry { slot, level } if pte::is_present(slot.load(Ordering::Acquire)) => {
                    if level != 0 {
                        return Err(VmError::SizeMismatch { virt: va, mapped: PageSize::at_level(level) });
                    }
                    f(va, slot)?;
                }
                _ => return Err(VmError::NotMapped { virt: va }),
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
            let _shared = space.tables.read(&self.p)?;
            // One load per entry: the check must judge the value it saw
            // present (a racing unmap may turn it into a marker at once).
            for i in 0..npages {
                let va = virt + i * PAGE;
                match table::lookup(&self.p, space.root, va, 0) {
                    Lookup::Entry { slot, level } => match slot.load(Ordering::Acquire) {
                        e if !pte::is_present(e) => return Err(VmError::NotMapped { virt: va }),
                        _ if level != 0 => return Err(VmError::SizeMismatch { virt: va, mapped: PageSize::at_level(level) }),
                        e => check(va, e)?,
                    },
                    Lookup::NoTable => return Err(VmError::NotMapped { virt: va }),
                }
            }
            let mut placed = 0;
            let lost = (0..npages).find(|&i| {
                let taken = self.take_leaf(space, &op, virt + i * PAGE, true);
                placed += u64::from(taken);
                !taken
            });
            if let Some(i) = lost {
                // A concurrent unmap won page i: put back what this call
                // took (no sweep can have touched it: that needs the
                // exclusive lock, and we hold the shared one).
                for j in 0..placed {
                    self.restore_leaf(space, &op, virt + j * PAGE);
                }
                return Err(VmError::NotMapped { virt: virt + i * PAGE });
            }
        }
        self.finish_unmap(space, op, virt, npages, PageSize::Size4K)
    }

    /// Unmaps those of `npages` 4 KiB pages from `virt` that are still
    /// mapped (undoing a mapping call that failed part-way: a concurrent
    /// unmap of a page it made may have won), freeing owned frames once no
    /// CPU can reach them.
    pub(super) fn unmap_mapped(&self, space: &AddressSpace, virt: u64, npages: u64) -> Result<(), VmError> {
        let op = self.begin_unmap();
        {
            let _shared = space.tables.read(&self.p)?;
            for i in 0..npages {
                self.take_leaf(space, &op, virt + i * PAGE, true);
            }
        }
        self.finish_unmap(space, op, virt, npages, PageSize::Size4K)
    }

    /// Turns the present 4 KiB entry at `va` into a marker of `op`; false
    /// if it is not (or no longer) present. The caller holds the shared
    /// table lock.
    fn take_leaf(&self, space: &AddressSpace, op: &UnmapOp, va: u64, keep_owner: bool) -> bool {
        let Lookup::Entry { slot, level: 0 } = table::lookup(&self.p, space.root, va, 0) else { return false };
        let mut e = slot.load(Ordering::Acquire);
        while pte::is_present(e) {
            match slot.compare_exchange(e, op.marker(e, PAGE, keep_owner), Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => return true,
                Err(now) => e = now, // accessed/dirty bits changed
            }
        }
        false
    }
    /// Puts back the entry `op`'s marker at `va` was made from (made with
    /// `keep_owner`). The caller holds the shared table lock since it
    /// placed the marker, so no sweep can have taken it.
    fn restore_leaf(&self, space: &AddressSpace, op: &UnmapOp, va: u64) {
        if let Lookup::Entry { slot, level: 0 } = table::lookup(&self.p, space.root, va, 0) {
            let m = slot.load(Ordering::Acquire);
            let back = op.placed(m) && slot.compare_exchange(m, marker::restored(m), Ordering::AcqRel, Ordering::Relaxed).is_ok();
            debug_assert!(back, "marker at {va:#x} vanished under the shared lock");
        }
    }

    /// Steps 2-4 for `count` entries of size `size` from `virt`, of which
    /// those `op` turned into markers are finished (entries others hold,
    /// or that a sweep took over, are left alone).
    pub(crate) fn finish_unmap(&self, space: &AddressSpace, op: UnmapOp, virt: u64, count: u64, size: PageSize) -> Result<(), VmError> {
        let pages = count * (size.bytes() / PAGE);
        let mut tables = ArrayVec::<(&AtomicU64, u64), PRUNE_MAX>::new();
        let exclusive = self.lock_exclusive(space);
        let mut flush = (virt, pages);
        if exclusive.is_some() {
            let area = Self::prune_area(space);
            let sweep = space.prune_pending.swap(false, Ordering::Relaxed);
            let range = if sweep { area } else { (virt, virt + pages.max(1) * PAGE) };
            let keep = space.kind() == SpaceKind::Kernel;
            if !table::prune(&self.p, space.root, TOP, 0, range, keep, &mut tables) {
                space.prune_pending.store(true, Ordering::Relaxed);
            }
            if sweep && !tables.is_empty() {
                // Tables far from this range went: flush everything.
                flush = (area.0, (area.1 - area.0) / PAGE);
            }
        } else {
            space.prune_pending.store(true, Ordering::Relaxed);
        }
        // Nothing detached: mappers need not wait for the flush.
        let exclusive = exclusive.filter(|_| !tables.is_empty());
        if pages == 0 && tables.is_empty() {
            return Ok(());
        }
        // `flush` fences before it reads who is active (invariant 8).
        let flushed = self.flush(space, flush.0, flush.1.max(1));
        if flushed.is_err() {
            // Put the tables back, so their markers keep the range
            // reserved; nothing is freed.
            for (slot, old) in tables.iter().rev() {
                slot.store(*old, Ordering::Release);
            }
        }
        // The walks below need the lock: the exclusive side we hold, or
        // else the shared one (a pruner must not free a table under us).
        // If even that cannot be had, this call's markers stay as they
        // are, in transit: a later sweep takes them over after its own
        // full flush.
        let shared = match exclusive {
            Some(_) => Ok(None),
            None => space.tables.read(&self.p).map(Some),
        };
        if let Err(e) = flushed {
            if shared.is_ok() {
                let held = self.settle_own(space, &op, virt, count, size, &|m| Some(marker::quarantined(m)));
                self.quarantine(held);
            }
            return Err(e);
        }
        let _shared = shared?;
        self.settle_own(space, &op, virt, count, size, &|m| {
            self.release(m);
            Some(0)
        });
        for &(_, old) in &tables {
            let t = pte::addr(old);
            // Every marker in a table this call detached is taken over:
            // the flush above covered it (the table was detached after the
            // marker was placed), and its placer will not find it.
            for e in self.p.table(t).iter().map(|e| e.load(Ordering::Acquire)) {
                if marker::is_marker(e) {
                    debug_assert!(!marker::is_quarantined(e), "a quarantined marker's table was pruned");
                    self.release(e);
                }
            }
            let _ = self.p.free_frame(t);
        }
        drop(exclusive);
        Ok(())
    }

    /// Replaces each marker `op` placed among `count` entries of size
    /// `size` from `virt` with `f(marker)`; returns how many. The caller
    /// holds the table lock.
    fn settle_own(&self, space: &AddressSpace, op: &UnmapOp, virt: u64, count: u64, size: PageSize, f: &dyn Fn(u64) -> Option<u64>) -> u64 {
        let mut n = 0;
        for i in 0..count {
            let va = virt + i * size.bytes();
            if let Lookup::Entry { slot, level } = table::lookup(&self.p, space.root, va, size.level()) {
                let m = slot.load(Ordering::Acquire);
                if level != size.level() || !op.placed(m) {
                    continue;
                }
                if let Some(new) = f(m) {
                    // Only this operation changes its own markers.
                    let swapped = slot.compare_exchange(m, new, Ordering::AcqRel, Ordering::Relaxed);
                    debug_assert!(swapped.is_ok(), "someone else changed the marker at {va:#x}");
                    n += 1;
                }
            }
        }
        n
    }

    /// Frees the frame an in-transit marker owns, if it owns one.
    fn release(&self, marker: u64) {
        if let Some(frame) = marker::owned_frame(marker) {
            let _ = self.p.free_frame(frame);
        }
    }

    /// The exclusive table lock, if it comes free within a bounded number
    /// of attempts.
    fn lock_exclusive<'s>(&self, space: &'s AddressSpace) -> Option<Exclusive<'s>> {
        (0..PRUNE_ATTEMPTS).find_map(|_| {
            let g = space.tables.try_write();
            if g.is_none() {
                core::hint::spin_loop();
            }
            g
        })
    }

    /// Where tables of `space` may be pruned: never the stack area.
    fn prune_area(space: &AddressSpace) -> (u64, u64) {
        match space.kind() {
            SpaceKind::Kernel => (KERNEL_SEED_AREA.start, KERNEL_REGION_AREA.end),
            SpaceKind::User => (USER_START, USER_END),
        }
    }
}
