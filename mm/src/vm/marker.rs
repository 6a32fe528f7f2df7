//! In-transit markers: what an unmap leaves in an entry between taking the
//! translation away and the shootdown after which the frame may be freed.
//!
//! A marker is a not-present entry with `SW_TRANSIT` that keeps the frame
//! address (and `SW_OWNED` if the frame is freed after the flush), so the
//! entry counts as used and nothing new is mapped where a CPU may still
//! hold the old translation.
//!
//! Every marker carries the stamp of the operation that placed it (the
//! invariant "an unmapper finishes only what it placed"): a sweep may take
//! over other unmappers' markers (it detaches their table and frees them
//! after its own full flush), after which the address can be mapped and
//! unmapped again, and the same frame can come back at the same address.
//! Equal address bits therefore prove nothing; the stamp does.
//!
//! Layout of a marker (a not-present entry: the hardware ignores every bit
//! but bit 0). It keeps the entry's access and software bits, so a call
//! that loses a race part-way can put back exactly what it took:
//!
//! | bits             | what |
//! |------------------|------|
//! | 0                | 0 (not present) |
//! | 1..=4            | kept: `WRITABLE`, `USER`, `WRITE_THROUGH`, `CACHE_DISABLE` |
//! | 5                | `QUARANTINED`: the placer's shootdown failed; held for good |
//! | 6..=7            | the placing CPU's operation generation (2 bits) |
//! | 8..=11           | kept: `GLOBAL`, `SW_PINNED`, `SW_DEVICE`, `SW_OWNED` (if the marker frees the frame) |
//! | 12..=51          | frame address |
//! | 52               | `SW_TRANSIT` |
//! | 53, 56           | 0 (`SW_PAGED`, `SW_BUSY`: a marker is never a paging entry) |
//! | 54..=55, 57..=62 | the placing CPU (8 bits: up to 256 CPUs) |
//! | 63               | kept: `NO_EXECUTE` |
//!
//! (Accessed and dirty are dropped, and bit 7, which in a 4 KiB entry would
//! be the PAT bit the kernel never sets and in a huge entry says huge.)
//!
//! Why the stamp cannot repeat while an operation is outstanding: the CPU
//! is part of it, and a CPU has one unmap outstanding at most. An unmap
//! runs to its end on the CPU that began it, and nothing that runs on that
//! CPU meanwhile (the page-fault path, cross-call handlers) begins another,
//! so while an operation waits for its shootdown — however many seconds
//! that takes — no other live operation has its CPU. Every operation
//! finishes or quarantines each marker it still holds before it returns, so
//! no older marker of this CPU is left to be mistaken for the current
//! one's either. The generation is a second line (a host test that plays
//! one CPU on two threads, a future nested unmap): nothing relies on it.

use super::pte::{
    self, ACCESSED, CACHE_DISABLE, DIRTY, GLOBAL, NO_EXECUTE, PRESENT, SW_DEVICE, SW_OWNED, SW_PINNED, SW_TRANSIT,
    USER, WRITABLE, WRITE_THROUGH,
};

/// Entry bits a marker keeps (`SW_OWNED` only when it frees the frame).
const KEPT: u64 = WRITABLE | USER | WRITE_THROUGH | CACHE_DISABLE | GLOBAL | SW_PINNED | SW_DEVICE | NO_EXECUTE;
/// The placer's shootdown failed: the frame is held back for good, and no
/// sweep may reclaim the marker or its table.
pub const QUARANTINED: u64 = 1 << 5;
const GEN_SHIFT: u32 = 6;
const GEN_MASK: u64 = 0b11 << GEN_SHIFT;
/// The CPU's low two bits sit at 54..=55, its high six at 57..=62.
const CPU_LO_SHIFT: u32 = 54;
const CPU_HI_SHIFT: u32 = 57;
const CPU_MASK: u64 = (0b11 << CPU_LO_SHIFT) | (0x3F << CPU_HI_SHIFT);
const STAMP_MASK: u64 = CPU_MASK | GEN_MASK | QUARANTINED;

/// Generations per CPU before the stamp repeats.
pub const GENERATIONS: u64 = 4;

/// One unmap operation: the only way to make markers, and the only thing
/// that can tell its own markers from everyone else's.
#[derive(Debug)]
pub struct UnmapOp {
    stamp: u64,
}

/// Who gets the frame of an entry an unmap takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameTo {
    /// The marker keeps the entry's `SW_OWNED`: a frame the mapping owns
    /// is freed after the shootdown.
    Free,
    /// The caller takes the frame back (`umap_single`): the marker owns
    /// nothing.
    Caller,
}

impl UnmapOp {
    /// The operation CPU `cpu` begins as its `generation`-th.
    pub fn new(cpu: usize, generation: u64) -> UnmapOp {
        assert!(cpu < 256, "markers hold 8-bit CPU indexes");
        let cpu = cpu as u64;
        let stamp =
            ((cpu & 0b11) << CPU_LO_SHIFT) | ((cpu >> 2) << CPU_HI_SHIFT) | ((generation % GENERATIONS) << GEN_SHIFT);
        UnmapOp { stamp }
    }

    /// The marker for removed entry `e` mapping `bytes`; `frame` says
    /// whether an owned frame is freed after the shootdown.
    pub fn marker(&self, e: u64, bytes: u64, frame: FrameTo) -> u64 {
        // In huge entries bit 12 is the PAT bit, not address.
        let owner = match frame {
            FrameTo::Free => e & SW_OWNED,
            FrameTo::Caller => 0,
        };
        (pte::addr(e) & !(bytes - 1)) | (e & KEPT) | owner | SW_TRANSIT | self.stamp
    }

    /// Whether `e` is a marker this operation placed (and not quarantined).
    pub fn placed(&self, e: u64) -> bool {
        is_marker(e) && e & STAMP_MASK == self.stamp
    }
}

/// The 4 KiB entry marker `m` (made with `FrameTo::Free`) was made from, as
/// far as anything reads it: accessed and dirty come back set.
pub const fn restored(m: u64) -> u64 {
    pte::addr(m) | (m & (KEPT | SW_OWNED)) | PRESENT | ACCESSED | DIRTY
}

/// Marker `m` with the access bits (`WRITABLE`, `USER`, `NO_EXECUTE`) of
/// leaf bits `access` instead of its own, for a `restored` entry.
pub const fn with_access(m: u64, access: u64) -> u64 {
    const ACCESS: u64 = WRITABLE | USER | NO_EXECUTE;
    (m & !ACCESS) | (access & ACCESS)
}

/// Whether `e` is an in-transit marker (of any operation).
pub const fn is_marker(e: u64) -> bool {
    e & (PRESENT | SW_TRANSIT) == SW_TRANSIT
}

/// Whether `e` is a marker held back after a failed shootdown.
pub const fn is_quarantined(e: u64) -> bool {
    is_marker(e) && e & QUARANTINED != 0
}

/// Marker `e`, quarantined.
pub const fn quarantined(e: u64) -> u64 {
    e | QUARANTINED
}

/// The frame marker `e` frees after its flush, if it owns one.
pub const fn owned_frame(e: u64) -> Option<u64> {
    if e & SW_OWNED != 0 {
        Some(pte::addr(e))
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_marker_is_its_placers_only() {
        let e = 0x1234_5000 | PRESENT | WRITABLE | SW_OWNED | NO_EXECUTE | 0x60;
        let op = UnmapOp::new(255, 3);
        let m = op.marker(e, 4096, FrameTo::Free);
        assert!(op.placed(m) && is_marker(m) && !is_quarantined(m));
        assert_eq!(restored(m), e | DIRTY, "a lost race puts back what it took");
        assert_eq!(owned_frame(m), Some(0x1234_5000));
        assert_eq!(owned_frame(op.marker(e, 4096, FrameTo::Caller)), None);
        for other in [UnmapOp::new(254, 3), UnmapOp::new(127, 3), UnmapOp::new(255, 2), UnmapOp::new(0, 0)] {
            assert!(!other.placed(m), "{other:?} took {m:#x}");
            assert_eq!(
                m & !STAMP_MASK,
                other.marker(e, 4096, FrameTo::Free) & !STAMP_MASK,
                "same frame, same bits but the stamp"
            );
        }
        assert!(!op.placed(quarantined(m)) && is_quarantined(quarantined(m)));
        let read_only = with_access(m, PRESENT | NO_EXECUTE);
        assert!(op.placed(read_only), "a protect keeps the stamp");
        assert_eq!(restored(read_only), (e | DIRTY) & !WRITABLE, "and the restored entry has the new access");
        assert!(
            UnmapOp::new(7, 1).placed(UnmapOp::new(7, 1 + GENERATIONS).marker(e, 4096, FrameTo::Free)),
            "the generation wraps at GENERATIONS"
        );
    }

    #[test]
    fn huge_markers_drop_the_pat_bit() {
        let m = UnmapOp::new(1, 2).marker(0x4000_0000 | (1 << 12) | PRESENT | pte::HUGE, 1 << 21, FrameTo::Caller);
        assert_eq!(pte::addr(m), 0x4000_0000);
    }
}
