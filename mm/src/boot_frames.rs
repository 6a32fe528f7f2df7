//! Boot-time frame allocator: hands out 4 KiB frames from the firmware's
//! usable regions before the real frame allocator exists.
//!
//! It never gives out memory inside a reserved range (the first MiB, with
//! the AP trampoline and legacy BIOS areas), and it takes frames from the
//! top of the highest region, so what it leaves is still a list of whole
//! regions (`remaining`) the later allocator can take over as-is.

use arrayvec::ArrayVec;
use core::ops::Range;

use crate::frame::PhysAddr;
use crate::PAGE_SIZE;

pub const MAX_REGIONS: usize = 128;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BootAllocError {
    /// More usable regions than `MAX_REGIONS` after cutting out reserved ranges.
    TooManyRegions,
}

pub struct BootFrames {
    /// Page-aligned, non-empty, sorted by start, reserved ranges removed.
    regions: ArrayVec<Range<PhysAddr>, MAX_REGIONS>,
    allocated: u64,
}

impl BootFrames {
    /// Builds the allocator from usable `regions` (any order, any
    /// alignment) minus `reserved`.
    pub fn new(
        regions: impl IntoIterator<Item = Range<PhysAddr>>,
        reserved: &[Range<PhysAddr>],
    ) -> Result<BootFrames, BootAllocError> {
        let mut out: ArrayVec<Range<PhysAddr>, MAX_REGIONS> = ArrayVec::new();
        for r in regions {
            let (start, end) = (r.start.align_up(PAGE_SIZE), r.end.align_down(PAGE_SIZE));
            let mut pieces: ArrayVec<Range<PhysAddr>, 8> = ArrayVec::new();
            pieces.push(start..end);
            for cut in reserved {
                let mut next = ArrayVec::<Range<PhysAddr>, 8>::new();
                for p in pieces.drain(..) {
                    let (a, b) = (p.start..p.end.min(cut.start), p.start.max(cut.end)..p.end);
                    for part in [a, b] {
                        if part.start < part.end {
                            next.try_push(part).map_err(|_| BootAllocError::TooManyRegions)?;
                        }
                    }
                }
                pieces = next;
            }
            for p in pieces {
                out.try_push(p).map_err(|_| BootAllocError::TooManyRegions)?;
            }
        }
        out.sort_unstable_by_key(|r| r.start);
        Ok(BootFrames { regions: out, allocated: 0 })
    }

    /// One frame, or `None` when memory is exhausted.
    pub fn alloc(&mut self) -> Option<PhysAddr> {
        let last = self.regions.last_mut()?;
        last.end -= PAGE_SIZE;
        let frame = last.end;
        if last.start == last.end {
            self.regions.pop();
        }
        self.allocated += 1;
        Some(frame)
    }

    /// `pages` physically contiguous frames from the top of the highest
    /// region that has room; returns the first frame's address.
    pub fn alloc_contiguous(&mut self, pages: u64) -> Option<PhysAddr> {
        let bytes = pages.checked_mul(PAGE_SIZE)?;
        let pos = self.regions.iter().rposition(|r| r.end - r.start >= bytes)?;
        let r = &mut self.regions[pos];
        r.end -= bytes;
        let start = r.end;
        if r.start == r.end {
            self.regions.remove(pos);
        }
        self.allocated += pages;
        Some(start)
    }

    /// Frames handed out so far.
    pub fn allocated(&self) -> u64 {
        self.allocated
    }

    /// Bytes still free.
    pub fn free_bytes(&self) -> u64 {
        self.regions.iter().map(|r| r.end - r.start).sum()
    }

    /// What is left, for the allocator that takes over.
    pub fn remaining(&self) -> &[Range<PhysAddr>] {
        &self.regions
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    /// Physical ranges from numbers.
    fn ranges<const N: usize>(r: [Range<u64>; N]) -> [Range<PhysAddr>; N] {
        r.map(|r| PhysAddr::new(r.start)..PhysAddr::new(r.end))
    }

    #[test]
    fn cuts_reserved_ranges_and_aligns() {
        let f = BootFrames::new(ranges([0x500..0x9F000, MIB + 1..8 * MIB + 100]), &ranges([0..MIB])).unwrap();
        assert_eq!(f.remaining(), &ranges([MIB + PAGE_SIZE..8 * MIB]));
    }

    #[test]
    fn reserved_range_in_the_middle_splits_a_region() {
        let f = BootFrames::new(ranges([0..4 * PAGE_SIZE]), &ranges([PAGE_SIZE..2 * PAGE_SIZE])).unwrap();
        assert_eq!(f.remaining(), &ranges([0..PAGE_SIZE, 2 * PAGE_SIZE..4 * PAGE_SIZE]));
    }

    #[test]
    fn allocates_from_the_top_until_exhausted_without_duplicates() {
        let mut f = BootFrames::new(ranges([3 * MIB..3 * MIB + 2 * PAGE_SIZE, MIB..MIB + PAGE_SIZE]), &[]).unwrap();
        let total = f.free_bytes() / PAGE_SIZE;
        let got: Vec<u64> = core::iter::from_fn(|| f.alloc()).map(|p| p.as_u64()).collect();
        assert_eq!(got, vec![3 * MIB + PAGE_SIZE, 3 * MIB, MIB]);
        assert_eq!(got.len() as u64, total);
        assert_eq!(f.allocated(), 3);
        assert_eq!(f.free_bytes(), 0);
        assert_eq!(f.alloc(), None);
    }

    #[test]
    fn contiguous_runs_come_from_a_region_big_enough() {
        let mut f = BootFrames::new(ranges([MIB..MIB + 8 * PAGE_SIZE, 4 * MIB..4 * MIB + 2 * PAGE_SIZE]), &[]).unwrap();
        assert_eq!(f.alloc_contiguous(3), Some(PhysAddr::new(MIB + 5 * PAGE_SIZE)));
        assert_eq!(f.alloc_contiguous(6), None);
        assert_eq!(f.alloc_contiguous(2), Some(PhysAddr::new(4 * MIB)));
        assert_eq!(f.remaining(), &ranges([MIB..MIB + 5 * PAGE_SIZE]));
        assert_eq!(f.allocated(), 5);
    }

    #[test]
    fn never_returns_reserved_frames() {
        let mut f = BootFrames::new(ranges([0..2 * MIB]), &ranges([0..MIB, 0x8000..0xC000])).unwrap();
        while let Some(frame) = f.alloc().map(|p| p.as_u64()) {
            assert!(frame >= MIB, "frame {frame:#x} is reserved");
        }
    }
}
