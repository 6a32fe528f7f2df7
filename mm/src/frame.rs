//! Frame numbers, the owning frame handle, frame states and the errors of
//! the physical allocator.

use core::sync::atomic::{AtomicU64, Ordering};

pub use x86_64::PhysAddr;

use crate::PAGE_SIZE;

/// Index of a 4 KiB frame: physical address >> 12. Crate-private: frames
/// cross the crate's boundary as `Frame` or `PhysAddr`.
pub(crate) type Pfn = u64;

/// What a frame is doing. Stored in the low byte of the frame's state word.
/// Zero is `Reserved`, so zeroed memory describes frames nobody may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum FrameKind {
    /// Never handed out: kernel image, boot structures, the allocator's own
    /// tables, or not RAM at all.
    Reserved = 0,
    /// In the buddy allocator.
    Free = 1,
    /// Free, parked in a CPU's magazine or in the depot.
    Cached = 2,
    /// Owned by whoever allocated it.
    Allocated = 3,
}

impl FrameKind {
    pub(crate) fn from_bits(b: u32) -> FrameKind {
        match b & 0xFF {
            1 => FrameKind::Free,
            2 => FrameKind::Cached,
            3 => FrameKind::Allocated,
            _ => FrameKind::Reserved,
        }
    }

    pub fn is_free(self) -> bool {
        matches!(self, FrameKind::Free | FrameKind::Cached)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameError {
    /// No frame (or no contiguous run) left, after reclaiming every cache.
    OutOfMemory,
    /// A contiguous request for zero frames.
    ZeroCount,
    /// More contiguous frames than the largest block the allocator has.
    TooLarge { count: u64, max: u64 },
    /// The address is not page-aligned.
    NotAligned { phys: PhysAddr },
    /// The address is not in usable RAM.
    NotRam { phys: PhysAddr },
    /// The frame is reserved and can never be freed.
    Reserved { phys: PhysAddr },
    /// The frame is already free (double free).
    AlreadyFree { phys: PhysAddr },
}

/// One 4 KiB frame of RAM, owned: the allocator hands it out
/// (`PhysAllocator::alloc_page`) and takes it back by value (`free_page`),
/// so whoever holds a `Frame` is the only one who may write the frame, and
/// the safe ways to reach its memory (`Vm::fill_frame`, the backing
/// stores) take one. Not `Clone`, not `Copy`.
///
/// It does not free itself on drop: that would need the allocator (and,
/// for a frame a mapping held, a shootdown first) reachable from every
/// place a frame can be dropped, which mm's portable code does not have.
/// Instead it must be given back: dropping one leaks the frame (it stays
/// `Allocated` in the frame database, which the audit shows) and counts
/// it in [`leaked_frames`].
#[must_use = "a frame must be given back (`free_page`) or handed to a mapping"]
#[derive(Debug, PartialEq, Eq)]
pub struct Frame {
    phys: PhysAddr,
}

/// Frames dropped instead of given back, since boot.
static LEAKED: AtomicU64 = AtomicU64::new(0);

/// How many `Frame`s were dropped without being given back.
pub fn leaked_frames() -> u64 {
    LEAKED.load(Ordering::Relaxed)
}

impl Frame {
    /// Takes ownership of the frame at `phys`.
    ///
    /// # Safety
    /// `phys` is page-aligned and names a frame of RAM the caller owns and
    /// hands over: nobody else writes it or holds a `Frame` for it (for
    /// example one the allocator handed out and `into_phys` turned into an
    /// address, or one a mapping held and gave back).
    // Asserts ownership the type cannot check: the one way to make a handle from an address.
    #[allow(unsafe_code)]
    pub const unsafe fn from_phys(phys: PhysAddr) -> Frame {
        Frame { phys }
    }

    /// The frame's physical address.
    pub fn phys(&self) -> PhysAddr {
        self.phys
    }

    /// Gives up the handle without freeing the frame, for an owner that
    /// keeps frames by address (a page-table entry): the owner becomes
    /// responsible for it, and only `from_phys` turns it back into a handle.
    pub fn into_phys(self) -> PhysAddr {
        let phys = self.phys;
        core::mem::forget(self);
        phys
    }
}

impl Drop for Frame {
    fn drop(&mut self) {
        debug_assert!(self.phys.as_u64().is_multiple_of(PAGE_SIZE));
        LEAKED.fetch_add(1, Ordering::Relaxed);
    }
}

// Host tests map and free frames by address: host memory is a vector of
// atomics, so a wrong address is test data, never undefined behaviour.
#[cfg(test)]
#[allow(unsafe_code)]
mod tests {
    use super::*;

    #[test]
    fn a_dropped_frame_is_counted_as_leaked_and_one_given_up_is_not_freed() {
        // SAFETY: host test: the address names no memory anyone uses.
        let frame = unsafe { Frame::from_phys(PhysAddr::new(0x5000)) };
        assert_eq!(frame.phys(), PhysAddr::new(0x5000));
        let before = leaked_frames();
        drop(frame);
        // Other tests may leak frames meanwhile: at least this one counted.
        assert!(leaked_frames() > before);
        // SAFETY: as above.
        let kept = unsafe { Frame::from_phys(PhysAddr::new(0x6000)) };
        assert_eq!(kept.into_phys(), PhysAddr::new(0x6000));
    }
}
