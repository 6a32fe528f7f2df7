//! Frame numbers, frame states and the errors of the physical allocator.

/// Index of a 4 KiB frame: physical address >> 12.
pub type Pfn = u64;

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
    NotAligned { phys: u64 },
    /// The address is not in usable RAM.
    NotRam { phys: u64 },
    /// The frame is reserved and can never be freed.
    Reserved { phys: u64 },
    /// The frame is already free (double free).
    AlreadyFree { phys: u64 },
}
