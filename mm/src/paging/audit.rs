//! The paging audit, for quiescent points: every resident page's frame
//! says it backs that page (the reverse map), as many frames say so as
//! there are resident pages, and the store's used slots are exactly the
//! paged-out pages plus the copies resident pages keep (plus pages in
//! flight, if any are), and every frame backing a page is an eviction
//! candidate in some CPU's map.

use core::sync::atomic::Ordering;

use alloc::vec;

use super::fault::frame_of;
use super::token::{self, Location};
use super::Paging;
use crate::frame::PhysAddr;
use crate::frame_db::paging::{BUSY, MAPPED};
use crate::vm::table::{self, TOP};
use crate::vm::{VmPlatform, KERNEL_REGION_AREA};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PagingAudit {
    pub resident: u64,
    /// Pages whose token names a store slot.
    pub paged_out: u64,
    /// Pages never touched (or dropped clean): anonymous tokens.
    pub anonymous: u64,
    /// Pages some CPU is paging in or out right now.
    pub in_flight: u64,
    /// Resident pages that keep a valid copy in the store.
    pub copies: u64,
    pub slots_used: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PagingViolation {
    /// A resident page whose frame does not name it (flags, address).
    ReverseMap { virt: u64, phys: PhysAddr, flags: u32, vaddr: u64 },
    /// A resident page's frame is outside the frame database.
    NotAFrame { virt: u64, phys: PhysAddr },
    /// A token or copy names a slot the store has not handed out.
    SlotNotHeld { virt: u64, slot: u64 },
    /// Two pages claim one slot.
    SlotTwice { virt: u64, slot: u64 },
    /// Used slots do not add up to paged-out pages + copies (+ in flight).
    SlotCount { paged_out: u64, copies: u64, in_flight: u64, used: u64 },
    /// A frame backs a page (mapped, not busy) but is in no CPU's
    /// candidate map: the evictor would never find it.
    NotACandidate { phys: PhysAddr },
    /// Frames marked as backing a page, resident pages found, and the
    /// pager's count disagree.
    ResidentCount { frames: u64, pages: u64, counted: u64 },
}

impl<P: VmPlatform> Paging<'_, P> {
    /// Walks every page of the region area and the frame database.
    pub fn audit(&self) -> Result<PagingAudit, PagingViolation> {
        let pg = self.pg;
        let (used, total) = pg.store.usage();
        let mut seen = vec![0u64; total.div_ceil(64) as usize];
        let mut a = PagingAudit { slots_used: used, ..PagingAudit::default() };
        let mut bad = None;
        let mut claim = |virt: u64, slot: u64| -> Result<(), PagingViolation> {
            if !pg.store.holds(slot) {
                return Err(PagingViolation::SlotNotHeld { virt, slot });
            }
            let (w, b) = ((slot / 64) as usize, 1u64 << (slot % 64));
            if seen[w] & b != 0 {
                return Err(PagingViolation::SlotTwice { virt, slot });
            }
            seen[w] |= b;
            Ok(())
        };
        self.vm.p.without_interrupts(|| {
            let range = (KERNEL_REGION_AREA.start, KERNEL_REGION_AREA.end);
            table::for_each_pte(&self.vm.p, self.vm.kernel().root, TOP, 0, range, &mut |virt, e| {
                if bad.is_some() {
                    return;
                }
                let r = if token::is_resident(e) {
                    a.resident += 1;
                    self.check_resident(pg, virt, e, &mut a, &mut claim)
                } else if token::is_busy(e) {
                    a.in_flight += 1;
                    Ok(())
                } else {
                    match token::decode(e) {
                        Some((Location::Slot(s), _)) => {
                            a.paged_out += 1;
                            claim(virt, s)
                        }
                        Some(_) => {
                            a.anonymous += 1;
                            Ok(())
                        }
                        None => Ok(()),
                    }
                };
                if let Err(v) = r {
                    bad = Some(v);
                }
            });
        });
        if let Some(v) = bad {
            return Err(v);
        }
        let mut frames = 0u64;
        for i in 0..pg.db.len() {
            let flags = pg.db.paging_flags(i);
            if flags & MAPPED == 0 {
                continue;
            }
            frames += 1;
            // A frame being paged in is mapped before it is tracked (both
            // while busy): only frames nobody holds must be candidates.
            if flags & BUSY == 0 && !pg.is_candidate(i) {
                return Err(PagingViolation::NotACandidate { phys: pg.db.phys_of(i) });
            }
        }
        let counted = pg.resident();
        // A page in flight may hold a frame already marked (page-in) or
        // still marked (eviction): only at quiescent points are they equal.
        let fits = |n: u64| n >= a.resident && n <= a.resident + a.in_flight;
        if !fits(frames) || !fits(counted) {
            return Err(PagingViolation::ResidentCount { frames, pages: a.resident, counted });
        }
        let held = a.paged_out + a.copies;
        if used < held || used > held + a.in_flight {
            return Err(PagingViolation::SlotCount {
                paged_out: a.paged_out,
                copies: a.copies,
                in_flight: a.in_flight,
                used,
            });
        }
        Ok(a)
    }

    fn check_resident(
        &self,
        pg: &super::Pager,
        virt: u64,
        e: u64,
        a: &mut PagingAudit,
        claim: &mut dyn FnMut(u64, u64) -> Result<(), PagingViolation>,
    ) -> Result<(), PagingViolation> {
        // An entry holds at most 52 address bits.
        let phys = frame_of(e);
        let index = pg.db.index_of(phys).map_err(|_| PagingViolation::NotAFrame { virt, phys })?;
        let flags = pg.db.paging_flags(index);
        let entry = pg.db.entry(index);
        let vaddr = entry.vaddr.load(Ordering::Relaxed);
        if flags & MAPPED == 0 || (flags & BUSY == 0 && vaddr != virt) {
            return Err(PagingViolation::ReverseMap { virt, phys, flags, vaddr });
        }
        if let Some(s) = entry.copy.load(Ordering::Relaxed).checked_sub(1) {
            a.copies += 1;
            claim(virt, s)?;
        }
        Ok(())
    }
}
