//! The explicit paging calls (Zephyr's `k_mem_page_in`, `k_mem_page_out`,
//! `k_mem_pin`, `k_mem_unpin`, `k_mem_page_frame_evict`). Each checks its
//! whole range first, so bad input is an error that changes nothing.

use super::wait::WaitBound;
use core::sync::atomic::Ordering;

use alloc::vec;

use super::evict::Victims;
use super::fault::{frame_of, is_dirty, Access};
use super::slots::SlotFor;
use super::token;
use super::transition::{self, FrameClaim};
use super::{Pager, Paging, PagingError};
use crate::frame::PhysAddr;
use crate::frame_db::paging::{BUSY, FRESH_UNINIT, FRESH_ZERO, MAPPED, PINNED};
use crate::vm::space::check_range_in;
use crate::vm::{VmError, VmPlatform, KERNEL_REGION_AREA, PAGE_SIZE};

/// Pages in `virt .. virt + size`, checked for alignment and for lying in
/// the region area.
fn pages_of(virt: u64, size: u64) -> Result<u64, PagingError> {
    if size == 0 {
        return Err(PagingError::Range(VmError::ZeroSize));
    }
    if !virt.is_multiple_of(PAGE_SIZE) || !size.is_multiple_of(PAGE_SIZE) {
        return Err(PagingError::Range(VmError::NotAligned {
            value: if !virt.is_multiple_of(PAGE_SIZE) { virt } else { size },
        }));
    }
    check_range_in(KERNEL_REGION_AREA, virt, size / PAGE_SIZE).map_err(PagingError::Range)?;
    Ok(size / PAGE_SIZE)
}

impl<P: VmPlatform> Paging<'_, P> {
    /// Checks that every page of the range is a pageable page.
    fn check_pageable(&self, virt: u64, npages: u64) -> Result<(), PagingError> {
        for va in (0..npages).map(|i| virt + i * PAGE_SIZE) {
            let e = self.paged_entry(va)?.load(Ordering::Acquire);
            if !token::is_pageable(e) {
                return Err(PagingError::NotPageable { virt: va });
            }
        }
        Ok(())
    }

    /// Makes every page of the range resident. Pages are read in order; if
    /// one fails (no frame, store error), those before it stay resident:
    /// residency is the only change, never contents.
    pub fn page_in(&self, virt: u64, size: u64) -> Result<(), PagingError> {
        let npages = pages_of(virt, size)?;
        self.paging_op(|pg| {
            self.check_pageable(virt, npages)?;
            for va in (0..npages).map(|i| virt + i * PAGE_SIZE) {
                self.fault_in(pg, va, Access::READ, SlotFor::Other)?;
            }
            Ok(())
        })
    }

    /// Evicts every resident page of the range, writing those that need
    /// it. Refused up front, changing nothing, if a page is pinned or the
    /// store lacks the slots. An error part-way (a store I/O error, a race
    /// with `pin`) leaves the pages before the failing batch paged out and
    /// the rest resident; no page is ever half done.
    pub fn page_out(&self, virt: u64, size: u64) -> Result<(), PagingError> {
        let npages = pages_of(virt, size)?;
        self.paging_op(|pg| {
            self.check_pageable(virt, npages)?;
            let mut writes = 0;
            for va in (0..npages).map(|i| virt + i * PAGE_SIZE) {
                let e = self.paged_entry(va)?.load(Ordering::Acquire);
                if !token::is_resident(e) {
                    continue;
                }
                let index = pg.db.index_of(frame_of(e)).map_err(|_| PagingError::NotPageable { virt: va })?;
                let flags = pg.db.paging_flags(index);
                if flags & PINNED != 0 {
                    return Err(PagingError::Pinned { virt: va });
                }
                let fresh = flags & (FRESH_ZERO | FRESH_UNINIT) != 0;
                if is_dirty(e) || (!fresh && pg.db.entry(index).copy.load(Ordering::Relaxed) == 0) {
                    writes += 1;
                }
            }
            let (used, total) = pg.store.usage();
            // The last slot stays for page faults.
            if used + writes + 1 > total {
                return Err(PagingError::StoreFull);
            }
            let mut batch = Victims::new();
            for va in (0..npages).map(|i| virt + i * PAGE_SIZE) {
                let mut deadline = WaitBound::new();
                let claimed = loop {
                    match self.claim_page(pg, va) {
                        Ok(v) => break v,
                        // Never wait holding claimed pages: the CPU that has
                        // this page busy may be waiting for one of them.
                        Err(PagingError::BusyTimeout { .. }) => {
                            self.evict_now(pg, &mut batch)?;
                            self.wait_busy(&mut deadline, va)?;
                        }
                        Err(e) => {
                            let _ = self.evict_now(pg, &mut batch);
                            return Err(e);
                        }
                    }
                };
                if let Some(v) = claimed {
                    batch.push(v);
                }
                if batch.is_full() {
                    self.evict_now(pg, &mut batch)?;
                }
            }
            self.evict_now(pg, &mut batch)
        })
    }

    /// Claims resident page `va` for eviction. `None` if it is not
    /// resident; `BusyTimeout` at once if another CPU has it busy.
    fn claim_page(&self, pg: &Pager, va: u64) -> Result<Option<super::evict::Victim<'_>>, PagingError> {
        let busy = Err(PagingError::BusyTimeout { virt: va });
        {
            let e = self.paged_entry(va)?.load(Ordering::Acquire);
            if token::is_busy(e) {
                return busy;
            }
            if !token::is_resident(e) {
                return Ok(None);
            }
            let index = pg.db.index_of(frame_of(e)).map_err(|_| PagingError::NotPageable { virt: va })?;
            if let Some(v) = self.claim_victim(pg, index) {
                if v.va == va {
                    return Ok(Some(v));
                }
                // The frame went to another page since the look.
                self.unclaim(pg, &v);
                return busy;
            }
            if pg.db.paging_flags(index) & PINNED != 0
                && frame_of(self.paged_entry(va)?.load(Ordering::Acquire)) == frame_of(e)
            {
                return Err(PagingError::Pinned { virt: va });
            }
            busy
        }
    }

    /// Evicts the claimed pages in `batch` (one shootdown) and frees
    /// their frames.
    fn evict_now(&self, pg: &Pager, batch: &mut Victims<'_>) -> Result<(), PagingError> {
        if batch.is_empty() {
            return Ok(());
        }
        let (frames, error) = self.evict_claimed(pg, core::mem::take(batch), SlotFor::Other);
        for f in frames {
            self.vm.free_kept(f);
        }
        error.map_or(Ok(()), Err)
    }

    /// Makes every page of the range resident and keeps it so until
    /// `unpin`. On failure the pages this call pinned are unpinned again
    /// (pages pinned before stay pinned).
    pub fn pin(&self, virt: u64, size: u64) -> Result<(), PagingError> {
        let npages = pages_of(virt, size)?;
        // Which pages this call pinned, for the rollback.
        let mut newly = vec![0u64; npages.div_ceil(64) as usize];
        self.paging_op(|pg| {
            self.check_pageable(virt, npages)?;
            let result = (0..npages).try_for_each(|i| {
                if self.pin_page(pg, virt + i * PAGE_SIZE)? {
                    newly[(i / 64) as usize] |= 1 << (i % 64);
                }
                Ok(())
            });
            if result.is_err() {
                for i in (0..npages).filter(|i| newly[(i / 64) as usize] & (1 << (i % 64)) != 0) {
                    self.with_page_frame(pg, virt + i * PAGE_SIZE, &mut |index| {
                        transition::unpin_claimed(pg.db, index)
                    })?;
                }
            }
            result
        })
    }

    /// Pins page `va`, paging it in first; true if it was not pinned.
    fn pin_page(&self, pg: &Pager, va: u64) -> Result<bool, PagingError> {
        let mut deadline = WaitBound::new();
        loop {
            self.fault_in(pg, va, Access::READ, SlotFor::Other)?;
            let mut old = 0;
            let pinned = self.with_page_frame(pg, va, &mut |index| old = transition::pin_claimed(pg.db, index))?;
            if pinned {
                return Ok(old & PINNED == 0);
            }
            self.wait_busy(&mut deadline, va)?; // evicted again meanwhile
        }
    }

    /// Runs `f(frame index)` with the frame that backs page `va` claimed
    /// busy, so it cannot change page (be evicted, reused) meanwhile.
    /// False if the page is not resident. Waits, bounded, while another
    /// CPU has the frame busy.
    fn with_page_frame(&self, pg: &Pager, va: u64, f: &mut dyn FnMut(usize)) -> Result<bool, PagingError> {
        let mut deadline = WaitBound::new();
        loop {
            match transition::claim_frame_of(pg.db, self.paged_entry(va)?) {
                Ok(index) => {
                    f(index);
                    pg.release(index);
                    return Ok(true);
                }
                Err(FrameClaim::Busy) => self.wait_busy(&mut deadline, va)?,
                Err(FrameClaim::NotResident) => return Ok(false),
                Err(FrameClaim::NotInDb) => return Err(PagingError::NotPageable { virt: va }),
                Err(FrameClaim::Moved) => {}
            }
        }
    }

    /// Lets the range's pages be evicted again.
    pub fn unpin(&self, virt: u64, size: u64) -> Result<(), PagingError> {
        let npages = pages_of(virt, size)?;
        self.paging_op(|pg| {
            self.check_pageable(virt, npages)?;
            for va in (0..npages).map(|i| virt + i * PAGE_SIZE) {
                self.with_page_frame(pg, va, &mut |index| transition::unpin_claimed(pg.db, index))?;
            }
            Ok(())
        })
    }

    /// Evicts the page frame `phys` backs (Zephyr's
    /// `k_mem_page_frame_evict`).
    pub fn evict_frame(&self, phys: PhysAddr) -> Result<(), PagingError> {
        self.paging_op(|pg| {
            let index = pg.db.index_of(phys).map_err(|_| PagingError::NotAPageFrame { phys })?;
            let mut deadline = WaitBound::new();
            loop {
                let flags = pg.db.paging_flags(index);
                let va = pg.db.entry(index).vaddr.load(Ordering::Acquire);
                if flags & MAPPED == 0 {
                    return Err(PagingError::NotAPageFrame { phys });
                }
                if flags & PINNED != 0 {
                    return Err(PagingError::Pinned { virt: va });
                }
                if flags & BUSY == 0 {
                    if let Some(v) = self.claim_victim(pg, index) {
                        let mut batch = Victims::new();
                        batch.push(v);
                        return self.evict_now(pg, &mut batch);
                    }
                }
                self.wait_busy(&mut deadline, va)?;
            }
        })
    }
}
