//! The steps that move one pageable page between its states: each is a
//! compare-and-swap or a store on the page's 4 KiB entry and on its
//! frame's paging flags (`frame_db::paging`). The fault, eviction, pin and
//! unmap paths change a page's state only through these, so the loom
//! model (`transition/loom_tests.rs`), which runs them on one page, checks
//! the protocol the kernel runs. What lies around them (page-table walks,
//! the store, the allocator, statistics) stays with the callers.
//!
//! The atomics are `crate::sync`'s: core's in the kernel (page-table
//! entries are core atomics), loom's under `cfg(loom)`.

use super::token::{self, Location, KEPT, SW_BUSY, SW_PAGED};
use crate::frame_db::paging::{ALL, BUSY, FRESH_UNINIT, FRESH_ZERO, MAPPED, PINNED};
use crate::frame_db::FrameDb;
use crate::sync::{AtomicU64, Ordering};
use crate::vm::pte::{self, ACCESSED, DIRTY, PRESENT};

/// A page's entry as the paths that act on it classify it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Look {
    /// Maps the page's frame.
    Resident(u64),
    /// Some CPU is paging it in or out: wait and look again.
    Busy,
    /// Not resident; `token` says where the contents are.
    Token { token: u64, loc: Location, perms: u64 },
    /// Not a pageable page (a hole, an ordinary mapping, a marker).
    Other(u64),
}

pub fn look(entry: &AtomicU64) -> Look {
    let e = entry.load(Ordering::Acquire);
    if token::is_resident(e) {
        Look::Resident(e)
    } else if token::is_busy(e) {
        Look::Busy
    } else if let Some((loc, perms)) = token::decode(e) {
        Look::Token { token: e, loc, perms }
    } else {
        Look::Other(e)
    }
}

/// Page-in, first step: turns `token` into a busy marker, making this CPU
/// the page's one owner. False if the entry changed meanwhile.
pub fn claim_token(entry: &AtomicU64, token: u64) -> bool {
    entry.compare_exchange(token, token | SW_BUSY, Ordering::AcqRel, Ordering::Relaxed).is_ok()
}

/// A page-in that failed: the page is out again, exactly as it was.
pub fn restore_token(entry: &AtomicU64, token: u64) {
    entry.store(token, Ordering::Release);
}

/// Page-in, last step, for the page at `va` (its `entry`, claimed from
/// `token`) now in frame `index`: the reverse map, the copy slot and
/// `MAPPED | BUSY | fresh` go in first, then the entry maps the frame, so
/// an evictor that finds the frame by the reverse map finds the entry
/// that maps it. The frame stays busy until the caller `release`s it.
/// False if the frame had paging flags already (it should be fresh from
/// the allocator); the entry is installed all the same.
pub fn install_resident(
    db: &FrameDb<'_>,
    index: usize,
    entry: &AtomicU64,
    token: u64,
    va: u64,
    copy: u64,
    fresh: u32,
) -> bool {
    let frame = db.entry(index);
    frame.vaddr.store(va, Ordering::Relaxed);
    frame.copy.store(copy, Ordering::Relaxed);
    let marked = db.update_paging(index, 0, u32::MAX, MAPPED | BUSY | fresh, 0).is_ok();
    entry.store(db.phys_of(index).as_u64() | (token & KEPT) | PRESENT | SW_PAGED | ACCESSED, Ordering::Release);
    marked
}

/// Gives up this CPU's `BUSY` claim on frame `index`.
pub fn release(db: &FrameDb<'_>, index: usize) {
    let _ = db.update_paging(index, BUSY, 0, 0, BUSY);
}

/// Frame `index`, claimed busy, backs no page any more: its reverse map,
/// copy slot (handed on or freed by the caller) and paging flags go.
pub fn forget_frame(db: &FrameDb<'_>, index: usize) {
    let entry = db.entry(index);
    entry.vaddr.store(0, Ordering::Relaxed);
    entry.copy.store(0, Ordering::Relaxed);
    let _ = db.update_paging(index, BUSY, 0, 0, ALL);
}

/// An eviction's claim: frame busy, entry a busy marker.
pub struct Claimed<'t> {
    pub va: u64,
    pub entry: &'t AtomicU64,
    /// The entry as it was (accessed and dirty bits included).
    pub old: u64,
}

/// Claims frame `index` for eviction if it backs a resident, unpinned page
/// nobody else is working on: the frame goes busy first, then the entry
/// that `lookup` finds for the frame's page becomes a busy marker that
/// keeps the frame address. On any failure the frame is released.
pub fn claim_victim_entry<'t>(
    db: &FrameDb<'_>,
    index: usize,
    lookup: impl FnOnce(u64) -> Option<&'t AtomicU64>,
) -> Option<Claimed<'t>> {
    db.update_paging(index, MAPPED, PINNED | BUSY, BUSY, 0).ok()?;
    let frame = db.phys_of(index).as_u64();
    let va = db.entry(index).vaddr.load(Ordering::Acquire);
    if let Some(entry) = lookup(va) {
        let mut e = entry.load(Ordering::Acquire);
        // Loop: the CPU may set accessed or dirty bits meanwhile.
        while token::is_resident(e) && pte::addr(e) == frame {
            let marker = (e & KEPT) | SW_PAGED | SW_BUSY | frame;
            match entry.compare_exchange_weak(e, marker, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => return Some(Claimed { va, entry, old: e }),
                Err(now) => e = now,
            }
        }
    }
    release(db, index);
    None
}

/// Where an evicted page's contents can be had again without a write, if
/// it was not written since it was installed (`old`: the entry when
/// claimed): its fresh kind (frame flags `flags`), or its valid copy
/// (`copy`: slot + 1, 0 for none).
pub fn clean_location(old: u64, flags: u32, copy: u64) -> Option<Location> {
    if old & DIRTY != 0 {
        None
    } else if flags & FRESH_ZERO != 0 {
        Some(Location::AnonZero)
    } else if flags & FRESH_UNINIT != 0 {
        Some(Location::AnonUninit)
    } else {
        copy.checked_sub(1).map(Location::Slot)
    }
}

/// Eviction, last step (after the shootdown and any write): the entry
/// takes the token, then the frame is forgotten. The caller then owns an
/// allocated frame with no paging state.
pub fn finish_eviction(db: &FrameDb<'_>, index: usize, entry: &AtomicU64, token: u64) {
    entry.store(token, Ordering::Release);
    forget_frame(db, index);
}

/// Puts a claimed victim back as it was.
pub fn unclaim(db: &FrameDb<'_>, index: usize, entry: &AtomicU64, old: u64) {
    entry.store(old, Ordering::Release);
    release(db, index);
}

/// Why `unmap_resident` did not unmap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// Another CPU has the frame busy: wait, then look again.
    Busy,
    /// The entry changed (accessed or dirty bits, an eviction): look again.
    Changed,
}

/// Unmaps resident entry `e` of frame `index`: claims the frame busy,
/// swaps the entry for `marker` (the in-transit marker the frame is freed
/// through after the shootdown) and takes the frame's copy slot, which it
/// returns for the caller to free; the caller then forgets the frame.
pub fn unmap_resident(
    db: &FrameDb<'_>,
    index: usize,
    entry: &AtomicU64,
    e: u64,
    marker: u64,
) -> Result<Option<u64>, Refused> {
    db.update_paging(index, MAPPED, BUSY, BUSY, 0).map_err(|_| Refused::Busy)?;
    if entry.compare_exchange(e, marker, Ordering::AcqRel, Ordering::Relaxed).is_err() {
        release(db, index);
        return Err(Refused::Changed);
    }
    Ok(db.entry(index).copy.swap(0, Ordering::AcqRel).checked_sub(1))
}

/// Unmaps a page that is out: clears its `token`. False if the entry
/// changed meanwhile.
pub fn clear_token(entry: &AtomicU64, token: u64) -> bool {
    entry.compare_exchange(token, 0, Ordering::AcqRel, Ordering::Relaxed).is_ok()
}

/// Why `claim_frame_of` did not claim.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameClaim {
    /// The page or its frame is busy: wait, then look again.
    Busy,
    /// The page is not resident.
    NotResident,
    /// The entry maps a frame outside the database.
    NotInDb,
    /// The frame went to another page meanwhile: look again at once.
    Moved,
}

/// Claims busy the frame that backs the page of `entry`, so it cannot
/// be evicted or reused until `release`, and returns its index.
pub fn claim_frame_of(db: &FrameDb<'_>, entry: &AtomicU64) -> Result<usize, FrameClaim> {
    let e = match look(entry) {
        Look::Resident(e) => e,
        Look::Busy => return Err(FrameClaim::Busy),
        _ => return Err(FrameClaim::NotResident),
    };
    let index = db.index_of(crate::frame::PhysAddr::new_truncate(pte::addr(e))).map_err(|_| FrameClaim::NotInDb)?;
    db.update_paging(index, MAPPED, BUSY, BUSY, 0).map_err(|_| FrameClaim::Busy)?;
    // Claimed: still this page's frame?
    let now = entry.load(Ordering::Acquire);
    if token::is_resident(now) && pte::addr(now) == pte::addr(e) {
        return Ok(index);
    }
    release(db, index);
    Err(FrameClaim::Moved)
}

/// Pins frame `index`, claimed busy; returns its flags before.
pub fn pin_claimed(db: &FrameDb<'_>, index: usize) -> u32 {
    db.update_paging(index, BUSY, 0, PINNED, 0).unwrap_or(0)
}

/// Unpins frame `index`, claimed busy.
pub fn unpin_claimed(db: &FrameDb<'_>, index: usize) {
    let _ = db.update_paging(index, BUSY, 0, 0, PINNED);
}

#[cfg(all(test, loom))]
mod loom_machine;
#[cfg(all(test, loom))]
mod loom_tests;
