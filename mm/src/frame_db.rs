//! The page-frame database: one entry per frame from the lowest to the
//! highest usable frame, each with an atomic state word and the virtual
//! address the frame backs (for the reverse map eviction needs).
//!
//! Every state change is checked against an expected state: an illegal
//! transition (double free, freeing a reserved frame) fails without
//! changing anything, and of two CPUs racing on one frame exactly one wins.
//! All are compare-and-swaps but one: a CPU allocating from its own
//! magazine, which nobody else can race (`allocate_from_own_magazine`).

use crate::frame::{FrameError, FrameKind, Pfn, PhysAddr};
use crate::sync::{AtomicU32, AtomicU64, Ordering};
use crate::PAGE_SIZE;
use cpus::{AtomicCpuSet, CpuSet};

/// Bits 8..16 of the state word: the CPU that allocated the frame.
const CPU_SHIFT: u32 = 8;
/// Set by the auditor on frames it has found in a structure; transitions
/// never look at it and clear it.
const AUDIT_SEEN: u32 = 1 << 16;

/// Demand-paging flags of an `Allocated` frame (bits 17..). Any transition
/// of the kind (a free) clears them.
pub mod paging {
    /// Backs the pageable kernel page at the entry's `vaddr` (the reverse
    /// map eviction follows to the page-table entry).
    pub const MAPPED: u32 = 1 << 17;
    /// Never evicted until unpinned.
    pub const PINNED: u32 = 1 << 18;
    /// One CPU owns the frame for an eviction, page-out, pin or unmap;
    /// everyone else leaves it alone or waits.
    pub const BUSY: u32 = 1 << 19;
    /// Holds what its location token would give again (zeroes for an
    /// anonymous page, nothing for an uninitialised one) and has not been
    /// written since: eviction drops it without a write.
    pub const FRESH_ZERO: u32 = 1 << 20;
    pub const FRESH_UNINIT: u32 = 1 << 21;
    pub const ALL: u32 = MAPPED | PINNED | BUSY | FRESH_ZERO | FRESH_UNINIT;
}

/// One line per frame (as Linux's `struct page`): neighbouring frames often
/// sit in different CPUs' magazines, and with 24-byte entries one CPU's
/// state CAS on its frame made the line of a frame another CPU allocates
/// and frees in a loop conflicting for the whole run (the sharing tracer
/// showed 3.7 conflicting accesses per frames.pair op at 8 CPUs, all on
/// frame-database lines). Costs 1/64 of RAM instead of 3/512.
#[repr(align(64))]
pub struct FrameEntry {
    state: AtomicU32,
    /// Virtual address this frame backs when mapped (0: none).
    pub vaddr: AtomicU64,
    /// Backing-store slot + 1 holding a valid copy of this frame's page
    /// (0: none), so a clean eviction needs no write.
    pub copy: AtomicU64,
    /// While the frame is a user space's page table: the CPUs whose
    /// page-table replica references it (links it, or copied a huge leaf
    /// out of it), which are the only CPUs that can cache what it maps
    /// (`vm::replica`). A table's own field, as Linux keeps page-table
    /// state in its `struct page`; cleared when a table is made.
    pub table_cpus: AtomicCpuSet,
}

impl FrameEntry {
    #[cfg(not(loom))]
    pub const fn new() -> FrameEntry {
        FrameEntry {
            state: AtomicU32::new(FrameKind::Reserved as u32),
            vaddr: AtomicU64::new(0),
            copy: AtomicU64::new(0),
            table_cpus: AtomicCpuSet::new(CpuSet::EMPTY),
        }
    }

    #[cfg(loom)]
    pub fn new() -> FrameEntry {
        FrameEntry {
            state: AtomicU32::new(FrameKind::Reserved as u32),
            vaddr: AtomicU64::new(0),
            copy: AtomicU64::new(0),
            table_cpus: AtomicCpuSet::new(CpuSet::EMPTY),
        }
    }
}

impl Default for FrameEntry {
    fn default() -> Self {
        Self::new()
    }
}

pub struct FrameDb<'a> {
    /// PFN of `entries[0]`.
    base: Pfn,
    entries: &'a [FrameEntry],
}

impl<'a> FrameDb<'a> {
    /// `entries[i]` describes the `i`th frame from `base` (page-aligned).
    /// All start `Reserved`.
    pub fn new(base: PhysAddr, entries: &'a [FrameEntry]) -> FrameDb<'a> {
        debug_assert_eq!(base.as_u64() % PAGE_SIZE, 0);
        FrameDb { base: base.as_u64() / PAGE_SIZE, entries }
    }

    /// The first frame the database describes.
    pub fn base(&self) -> PhysAddr {
        PhysAddr::new(self.base * PAGE_SIZE)
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn phys_of(&self, index: usize) -> PhysAddr {
        PhysAddr::new((self.base + index as u64) * PAGE_SIZE)
    }

    /// Entry index of physical address `phys`, checking it names a frame.
    pub fn index_of(&self, phys: PhysAddr) -> Result<usize, FrameError> {
        if !phys.as_u64().is_multiple_of(PAGE_SIZE) {
            return Err(FrameError::NotAligned { phys });
        }
        let pfn = phys.as_u64() / PAGE_SIZE;
        match pfn.checked_sub(self.base) {
            Some(i) if (i as usize) < self.entries.len() => Ok(i as usize),
            _ => Err(FrameError::NotRam { phys }),
        }
    }

    pub fn kind(&self, index: usize) -> FrameKind {
        FrameKind::from_bits(self.entries[index].state.load(Ordering::Acquire))
    }

    /// CPU recorded by the last transition to `Allocated`.
    pub fn owner_cpu(&self, index: usize) -> usize {
        ((self.entries[index].state.load(Ordering::Relaxed) >> CPU_SHIFT) & 0xFF) as usize
    }

    pub fn entry(&self, index: usize) -> &FrameEntry {
        &self.entries[index]
    }

    /// Moves frame `index` from `from` to `to`, recording `cpu`. On failure
    /// returns the kind the frame actually has and changes nothing.
    pub fn transition(&self, index: usize, from: FrameKind, to: FrameKind, cpu: usize) -> Result<(), FrameKind> {
        let state = &self.entries[index].state;
        let mut current = state.load(Ordering::Relaxed);
        loop {
            if FrameKind::from_bits(current) != from {
                return Err(FrameKind::from_bits(current));
            }
            let new = (to as u32) | ((cpu as u32 & 0xFF) << CPU_SHIFT);
            match state.compare_exchange_weak(current, new, Ordering::AcqRel, Ordering::Relaxed) {
                Ok(_) => return Ok(()),
                Err(actual) => current = actual,
            }
        }
    }

    /// `Cached → Allocated` for a frame the running CPU `cpu` has just
    /// popped from its *own* magazine: a checked load and a store, no CAS.
    /// Only that CPU may call it, for that frame: while a frame sits in a
    /// CPU's magazine nobody else writes its state word (a free's CAS
    /// expects `Allocated` and fails without writing, `update_paging`
    /// requires `Allocated`, the auditor marks and unmarks frames only with
    /// every cache frozen, and a remote drain takes frames out of a magazine
    /// only after quiescing its owner: `owner_cell`), so no update can be
    /// lost between the load and the store. On a frame that is not `Cached`
    /// returns its kind and changes nothing.
    pub fn allocate_from_own_magazine(&self, index: usize, cpu: usize) -> Result<(), FrameKind> {
        let state = &self.entries[index].state;
        // Acquire/Release: plain moves on x86, ordered as the CAS they
        // replace for whoever reads the state next.
        let current = state.load(Ordering::Acquire);
        if FrameKind::from_bits(current) != FrameKind::Cached {
            return Err(FrameKind::from_bits(current));
        }
        state.store(FrameKind::Allocated as u32 | ((cpu as u32 & 0xFF) << CPU_SHIFT), Ordering::Release);
        Ok(())
    }

    /// The paging flags of frame `index` (0 unless it is `Allocated`).
    pub fn paging_flags(&self, index: usize) -> u32 {
        let s = self.entries[index].state.load(Ordering::Acquire);
        if FrameKind::from_bits(s) == FrameKind::Allocated {
            s & paging::ALL
        } else {
            0
        }
    }

    /// If frame `index` is `Allocated` with every flag of `need` set and
    /// every flag of `refuse` clear, sets `set` and clears `clear` in one
    /// compare-and-swap and returns the flags it had; otherwise changes
    /// nothing and returns them in the error.
    pub fn update_paging(&self, index: usize, need: u32, refuse: u32, set: u32, clear: u32) -> Result<u32, u32> {
        let state = &self.entries[index].state;
        let mut current = state.load(Ordering::Relaxed);
        loop {
            let flags = current & paging::ALL;
            if FrameKind::from_bits(current) != FrameKind::Allocated || flags & need != need || flags & refuse != 0 {
                return Err(flags);
            }
            let new = (current | set) & !clear;
            match state.compare_exchange_weak(current, new, Ordering::AcqRel, Ordering::Relaxed) {
                Ok(_) => return Ok(flags),
                Err(actual) => current = actual,
            }
        }
    }

    /// Marks frame `index` as found by the auditor; false if it already was.
    pub fn mark_seen(&self, index: usize) -> bool {
        self.entries[index].state.fetch_or(AUDIT_SEEN, Ordering::Relaxed) & AUDIT_SEEN == 0
    }

    /// Clears every audit mark.
    pub fn clear_seen_marks(&self) {
        for e in self.entries {
            e.state.fetch_and(!AUDIT_SEEN, Ordering::Relaxed);
        }
    }

    /// The error for trying to free frame `index` whose kind is `actual`.
    pub fn free_error(&self, index: usize, actual: FrameKind) -> FrameError {
        let phys = self.phys_of(index);
        match actual {
            FrameKind::Reserved => FrameError::Reserved { phys },
            FrameKind::Free | FrameKind::Cached => FrameError::AlreadyFree { phys },
            FrameKind::Allocated => unreachable!("freeing an allocated frame is legal"),
        }
    }
}

#[cfg(all(test, not(loom)))]
mod layout_tests {
    use super::FrameEntry;

    #[test]
    fn neighbouring_frames_share_no_line() {
        assert_eq!(core::mem::align_of::<FrameEntry>(), 64);
        assert_eq!(core::mem::size_of::<FrameEntry>(), 64);
        let two = [FrameEntry::new(), FrameEntry::new()];
        let (a, b) = (&two[0] as *const _ as usize, &two[1] as *const _ as usize);
        assert!(a % 64 == 0 && b - a == 64);
    }
}
