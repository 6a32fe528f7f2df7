//! Taking translations away, in the one order that keeps every CPU safe:
//!
//! 1. under the shared table lock, present entries become in-transit
//!    markers (not present; frame address kept), so nothing new can be
//!    mapped where a CPU may still hold the old translation;
//! 2. under the exclusive lock (taken boundedly), tables left with nothing
//!    mapped are detached;
//! 3. the range is shot down on every CPU that may cache it, still under
//!    the exclusive lock, so no CPU installs into a detached slot while
//!    another may cache the old pointer (CPUs waiting for the lock spin
//!    with interrupts on and answer the IPI);
//! 4. only then are frames and detached tables freed and the markers
//!    cleared.
//!
//! If the shootdown fails, markers, frames and tables all stay as they
//! are: that memory and that address range are never reused.

use core::sync::atomic::{AtomicU64, Ordering};

use arrayvec::ArrayVec;
use spin::RwLockWriteGuard;

use super::mapping::Vm;
use super::pte::{self, PageSize, SW_OWNED, SW_TRANSIT};
use super::space::{AddressSpace, SpaceKind};
use super::table::{self, Lookup, PRUNE_MAX, TOP};
use super::{VmError, VmPlatform, KERNEL_REGION_AREA, KERNEL_SEED_AREA, PAGE, USER_END, USER_START};

/// Attempts at the exclusive table lock before pruning is left to a later
/// unmap (mappers hold the shared lock only briefly).
const PRUNE_ATTEMPTS: usize = 1000;

/// The in-transit marker for a removed entry `e` mapping `bytes`.
/// `keep_owner`: the frame is freed after the flush (else the caller
/// takes it back).
pub(crate) fn transit(e: u64, bytes: u64, keep_owner: bool) -> u64 {
    // In huge entries bit 12 is the PAT bit, not address.
    let owner = if keep_owner { e & SW_OWNED } else { 0 };
    (pte::addr(e) & !(bytes - 1)) | owner | SW_TRANSIT
}

impl<P: VmPlatform> Vm<P> {
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

    /// Unmaps `npages` 4 KiB pages from `virt` (those mapped), frees the
    /// frames their entries own once no CPU can reach them.
    pub(super) fn teardown(&self, space: &AddressSpace, virt: u64, npages: u64) -> Result<(), VmError> {
        {
            let _shared = space.tables.read();
            for i in 0..npages {
                if let Lookup::Entry { slot, level: 0 } = table::lookup(&self.p, space.root, virt + i * PAGE, 0) {
                    let mut e = slot.load(Ordering::Acquire);
                    while pte::is_present(e) {
                        match slot.compare_exchange(e, transit(e, PAGE, true), Ordering::AcqRel, Ordering::Acquire) {
                            Ok(_) => break,
                            Err(now) => e = now, // accessed/dirty bits changed
                        }
                    }
                }
            }
        }
        self.finish_unmap(space, virt, npages, PageSize::Size4K)
    }

    /// Steps 2-4 for `count` entries of size `size` from `virt` that are
    /// now in-transit markers.
    pub(crate) fn finish_unmap(&self, space: &AddressSpace, virt: u64, count: u64, size: PageSize) -> Result<(), VmError> {
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
        if let Err(e) = self.flush(space, flush.0, flush.1.max(1)) {
            // Put the tables back, so their in-transit markers keep the
            // range reserved; nothing is freed.
            for (slot, old) in tables.iter().rev() {
                slot.store(*old, Ordering::Release);
            }
            self.quarantine(pages);
            return Err(e);
        }
        let shared = if exclusive.is_none() { Some(space.tables.read()) } else { None };
        for i in 0..count {
            let va = virt + i * size.bytes();
            if let Lookup::Entry { slot, level } = table::lookup(&self.p, space.root, va, size.level()) {
                let e = slot.load(Ordering::Acquire);
                if level == size.level() && e & SW_TRANSIT != 0 && slot.compare_exchange(e, 0, Ordering::AcqRel, Ordering::Relaxed).is_ok() {
                    self.release(e);
                }
            }
        }
        for &(_, old) in &tables {
            let t = pte::addr(old);
            for e in self.p.table(t).iter().map(|e| e.load(Ordering::Acquire)) {
                if e & SW_TRANSIT != 0 {
                    self.release(e);
                }
            }
            let _ = self.p.free_frame(t);
        }
        drop(shared);
        drop(exclusive);
        Ok(())
    }

    /// Frees the frame an in-transit marker owns, if it owns one.
    fn release(&self, marker: u64) {
        if marker & SW_OWNED != 0 {
            let _ = self.p.free_frame(pte::addr(marker));
        }
    }

    /// The exclusive table lock, if it comes free within a bounded number
    /// of attempts.
    fn lock_exclusive<'s>(&self, space: &'s AddressSpace) -> Option<RwLockWriteGuard<'s, ()>> {
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
