//! The frames as an eviction policy sees them: the frame database's
//! paging flags, and the accessed and dirty bits of the entry the reverse
//! map points at.

use core::sync::atomic::{AtomicU64, Ordering};

use super::fault::frame_of;
use super::policy::{FrameInfo, FrameView};
use super::{token, Paging};
use crate::frame_db::paging::{BUSY, MAPPED, PINNED};
use crate::frame_db::FrameDb;
use crate::vm::pte::{ACCESSED, DIRTY};
use crate::vm::VmPlatform;

pub(crate) struct View<'v, P: VmPlatform> {
    pub paging: Paging<'v, P>,
    pub db: &'v FrameDb<'static>,
}

impl<P: VmPlatform> View<'_, P> {
    /// The entry mapping frame `i`, if the reverse map still leads to one.
    fn entry(&self, i: usize) -> Option<&AtomicU64> {
        let va = self.db.entry(i).vaddr.load(Ordering::Acquire);
        let entry = self.paging.paged_entry(va).ok()?;
        let e = entry.load(Ordering::Acquire);
        (token::is_resident(e) && frame_of(e) == self.db.phys_of(i)).then_some(entry)
    }
}

impl<P: VmPlatform> FrameView for View<'_, P> {
    fn len(&self) -> usize {
        self.db.len()
    }

    fn info(&self, i: usize) -> FrameInfo {
        let none = FrameInfo { evictable: false, accessed: false, dirty: false };
        let flags = self.db.paging_flags(i);
        if flags & MAPPED == 0 || flags & (PINNED | BUSY) != 0 {
            return none;
        }
        match self.entry(i) {
            Some(entry) => {
                let e = entry.load(Ordering::Acquire);
                FrameInfo { evictable: true, accessed: e & ACCESSED != 0, dirty: e & DIRTY != 0 }
            }
            None => none,
        }
    }

    fn clear_accessed(&self, i: usize) -> bool {
        let Some(entry) = self.entry(i) else { return false };
        let frame = self.db.phys_of(i);
        let mut e = entry.load(Ordering::Acquire);
        // Without a flush: a CPU that still caches the entry may not set
        // the bit again at once, which only makes the page look older (as
        // on every x86 kernel).
        while token::is_resident(e) && frame_of(e) == frame && e & ACCESSED != 0 {
            match entry.compare_exchange_weak(e, e & !ACCESSED, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => return true,
                Err(now) => e = now,
            }
        }
        false
    }

    fn next_candidate(&self, i: usize) -> usize {
        self.paging.pager().next_candidate(i)
    }
}
