//! On-demand `k_mem_map` regions: mapping tokens instead of frames
//! (within the commit limit), `k_mem_map_unpaged` over caller-given store
//! slots, and unmapping pages in any paging state.

use super::wait::WaitBound;
use core::sync::atomic::Ordering;

use super::fault::frame_of;
use super::token::{self, Location};
use super::transition::{self, Refused};
use super::{Pager, Paging, PagingError};
use crate::vm::marker::{FrameTo, UnmapOp};
use crate::vm::pte::{self, PageSize};
use crate::vm::table::{self, Lookup};
use crate::vm::{KMemFlags, VmError, VmPlatform, PAGE_SIZE};

impl<P: VmPlatform> Paging<'_, P> {
    /// Reserves `pages` pages of the commit limit.
    fn commit(&self, pg: &Pager, pages: u64) -> Result<(), VmError> {
        let available = pg.commit_limit(self.vm.p.free_frames());
        let mut cur = pg.committed.load(Ordering::Relaxed);
        loop {
            if cur.checked_add(pages).is_none_or(|n| n > available) {
                return Err(VmError::CommitLimit { pages, available: available.saturating_sub(cur) });
            }
            match pg.committed.compare_exchange_weak(cur, cur + pages, Ordering::AcqRel, Ordering::Relaxed) {
                Ok(_) => return Ok(()),
                Err(now) => cur = now,
            }
        }
    }

    /// Maps `pages` pages from `virt` (inside a fresh region) as tokens:
    /// page `i` at `loc(i)`, with the permission bits `perms`. On failure
    /// removes what it installed; the slots stay the caller's.
    pub(crate) fn map_tokens(
        &self,
        virt: u64,
        pages: u64,
        perms: u64,
        loc: &dyn Fn(u64) -> Location,
    ) -> Result<(), VmError> {
        let pg = self.pg;
        self.commit(pg, pages)?;
        let shared = match self.vm.shared(self.vm.kernel()) {
            Ok(g) => g,
            Err(e) => {
                pg.committed.fetch_sub(pages, Ordering::Relaxed);
                return Err(e);
            }
        };
        for i in 0..pages {
            let t = token::encode(loc(i), perms).expect("callers pass slots that fit");
            if let Err(e) = self.vm.install(self.vm.kernel(), virt + i * PAGE_SIZE, t, 0) {
                // Nobody has touched the tokens yet (the region is this
                // call's): clear them under the same lock.
                self.clear_tokens(virt, i);
                drop(shared);
                pg.committed.fetch_sub(pages, Ordering::Relaxed);
                // Tables made on the way go after a shootdown.
                self.vm.finish_rollback(self.vm.kernel(), self.vm.begin_unmap(), virt, i, pages)?;
                return Err(e);
            }
        }
        Ok(())
    }

    /// Clears the `pages` tokens from `virt` (nobody has touched them).
    /// The caller holds the shared table lock.
    fn clear_tokens(&self, virt: u64, pages: u64) {
        for i in 0..pages {
            if let Lookup::Entry { entry, level: 0 } =
                table::lookup(&self.vm.p, self.vm.kernel().root, virt + i * PAGE_SIZE, 0)
            {
                entry.store(0, Ordering::Release);
            }
        }
    }

    /// Maps `size` bytes whose pages are already in the backing store,
    /// page `i` in slot `first_slot + i` (slots the caller got from the
    /// store and filled), between guard pages; Zephyr's
    /// `k_mem_map_unpaged`. The mapping takes the slots over: they are
    /// freed when their pages are paged in for good or unmapped.
    pub fn k_mem_map_unpaged(&self, first_slot: u64, size: u64, flags: KMemFlags) -> Result<u64, PagingError> {
        let pg = self.pg;
        if flags.contains(KMemFlags::LOCK) || flags.contains(KMemFlags::UNINIT) {
            // Pinned or uninitialised pages have no store contents to map.
            return Err(PagingError::Range(VmError::NotARegion { addr: first_slot, size }));
        }
        if size == 0 || !size.is_multiple_of(PAGE_SIZE) {
            return Err(PagingError::Range(if size == 0 {
                VmError::ZeroSize
            } else {
                VmError::NotAligned { value: size }
            }));
        }
        let pages = size / PAGE_SIZE;
        for s in first_slot
            ..first_slot
                .checked_add(pages)
                .ok_or(PagingError::Store(super::StoreError::BadSlot { slot: first_slot }))?
        {
            if !pg.store.holds(s) || s > token::MAX_SLOT {
                return Err(PagingError::Store(super::StoreError::BadSlot { slot: s }));
            }
        }
        self.k_mem_map_with(size, flags, &|i| Location::Slot(first_slot + i)).map_err(PagingError::Range)
    }

    /// `k_mem_map` of on-demand pages, page `i` at `loc(i)`.
    pub(crate) fn k_mem_map_with(
        &self,
        size: u64,
        flags: KMemFlags,
        loc: &dyn Fn(u64) -> Location,
    ) -> Result<u64, VmError> {
        let perms = flags.access().pte_bits() | pte::SW_OWNED;
        self.vm.in_region(size, &|start, pages| self.map_tokens(start, pages, perms, loc))
    }

    /// Unmaps `pages` pages of a `k_mem_map` region from `virt`, whatever
    /// their paging state: frames are freed after the shootdown, store
    /// slots (of paged-out pages and of copies) at once, and a page being
    /// paged in or out is waited for. A wait past the bound is `Busy`,
    /// with the pages before it unmapped (the region stays claimed).
    pub(super) fn unmap_kmem_pages(&self, virt: u64, pages: u64) -> Result<(), VmError> {
        let mut paged = 0;
        let op = self.vm.begin_unmap();
        let result = self.vm.p.without_interrupts(|| {
            (0..pages).try_for_each(|i| {
                let va = virt + i * PAGE_SIZE;
                let done = self.unmap_one(&op, va)?;
                paged += u64::from(done);
                Ok(())
            })
        });
        self.pg.committed.fetch_sub(paged, Ordering::Relaxed);
        let flushed = self.vm.finish_unmap(self.vm.kernel(), op, virt, pages, PageSize::Size4K);
        result.and(flushed)
    }

    /// Takes page `va` out of its table (a resident or ordinary page
    /// becomes an in-transit marker for `finish_unmap`). True if it was a
    /// pageable page.
    ///
    /// Takes no table lock: the caller runs with interrupts off, and there
    /// is no point between the walk and the entry's change where this CPU
    /// answers a shootdown (the busy wait below looks the entry up again),
    /// so no table it walks can be freed under it.
    fn unmap_one(&self, op: &UnmapOp, va: u64) -> Result<bool, VmError> {
        let mut deadline = WaitBound::new();
        let pg = self.pg;
        let mut waited = false;
        loop {
            let Lookup::Entry { entry, level: 0 } = table::lookup(&self.vm.p, self.vm.kernel().root, va, 0) else {
                return Ok(false);
            };
            let e = entry.load(Ordering::Acquire);
            if token::is_resident(e) {
                let index = pg.db.index_of(frame_of(e)).expect("a resident page's frame is in the database");
                match transition::unmap_resident(pg.db, index, entry, e, op.marker(e, PAGE_SIZE, FrameTo::Free)) {
                    Ok(copy) => {
                        if let Some(s) = copy {
                            let _ = pg.store.location_free(s);
                        }
                        pg.forget(self.vm.p.cpu_index(), index);
                        return Ok(true);
                    }
                    Err(Refused::Changed) => continue, // accessed or dirty bits changed
                    Err(Refused::Busy) => {}
                }
            } else if let Some((loc, _)) = token::decode(e) {
                if transition::clear_token(entry, e) {
                    if let Location::Slot(s) = loc {
                        let _ = pg.store.location_free(s);
                    }
                    return Ok(true);
                }
                continue;
            } else if pte::is_present(e) {
                if entry
                    .compare_exchange(e, op.marker(e, PAGE_SIZE, FrameTo::Free), Ordering::AcqRel, Ordering::Relaxed)
                    .is_ok()
                {
                    return Ok(false);
                }
                continue;
            } else if !token::is_busy(e) {
                return Ok(false);
            }
            if !waited {
                pg.stats.count(self.vm.p.cpu_index(), super::Event::BusyWait);
                waited = true;
            }
            self.wait_busy(&mut deadline, va).map_err(|_| VmError::Busy { virt: va })?;
        }
    }
}
