//! The machine around one pageable page for the loom model: its entry, a
//! frame database of two frames with their contents, a store of one slot,
//! and a TLB. What is here stands in for the allocator, the store and
//! the hardware; the page's state changes only through `transition`.

use crate::frame::FrameKind;
use crate::frame_db::{FrameDb, FrameEntry};
use crate::paging::token::{self, Location};
use crate::sync::{AtomicU64, Ordering::*};
use crate::vm::pte::{self, NO_EXECUTE, SW_OWNED, SW_TRANSIT, WRITABLE};
use crate::PAGE_SIZE;
use std::sync::atomic::{AtomicU32 as StdU32, AtomicUsize as StdUsize, Ordering::SeqCst};
use std::sync::Arc as StdArc;

/// What a model's interleavings reached, one bit per `Seen` (over all
/// iterations): a model that never reaches its race checks nothing.
pub type Coverage = StdArc<StdU32>;

#[derive(Debug, Clone, Copy)]
pub enum Seen {
    /// A read after the write found the page paged back in from the store.
    ReadBackFromStore = 1,
    /// A pin held the page resident.
    PinnedResident = 2,
    /// An unmap took a resident page.
    UnmappedResident = 4,
    /// An unmap took a page that was out, in the store.
    UnmappedInStore = 8,
}

/// The page's address.
pub const VA: u64 = 0x4000_0000;
/// Its permissions: a writable `k_mem_map` page that owns its frame.
pub const PERMS: u64 = WRITABLE | SW_OWNED | NO_EXECUTE;
pub const FRAMES: usize = 2;
const BASE_PFN: u64 = 0x100;

pub struct LoomMachine {
    /// The page's 4 KiB entry; it starts as a zero-fill token.
    pub entry: AtomicU64,
    pub db: FrameDb<'static>,
    /// What each frame and the store's slot 0 hold. Plain memory: read and
    /// written relaxed, so only the protocol's own orderings make a write
    /// visible to the next reader.
    pub frame_data: [AtomicU64; FRAMES],
    pub slot_data: AtomicU64,
    slot_used: AtomicU64,
    /// One CPU instruction against a TLB shootdown. A CPU holds it while
    /// it walks to the entry, sets accessed/dirty and touches the frame,
    /// as an instruction is never split by the shootdown's interrupt; the
    /// shootdown takes and drops it, so it returns only once no CPU is in
    /// the middle of an access through the entry it replaced.
    tlb: loom::sync::Mutex<()>,
    /// Who holds the page's busy state (not loom: the model's own
    /// bookkeeping must add no interleavings, and loom runs one thread at
    /// a time, so it is exact).
    owners: StdUsize,
    /// Page-ins that read the store (bookkeeping, like `owners`).
    pub store_page_ins: StdUsize,
    coverage: Coverage,
}

impl LoomMachine {
    pub fn new(coverage: Coverage) -> LoomMachine {
        let entries: &'static [FrameEntry] = Vec::leak((0..FRAMES).map(|_| FrameEntry::new()).collect());
        let db = FrameDb::new(x86_64::PhysAddr::new(BASE_PFN * crate::PAGE_SIZE), entries);
        for i in 0..FRAMES {
            db.transition(i, FrameKind::Reserved, FrameKind::Free, 0).unwrap();
        }
        LoomMachine {
            entry: AtomicU64::new(token::encode(Location::AnonZero, PERMS).unwrap()),
            db,
            frame_data: [AtomicU64::new(0xBAD), AtomicU64::new(0xBAD)],
            slot_data: AtomicU64::new(0xBAD),
            slot_used: AtomicU64::new(0),
            tlb: loom::sync::Mutex::new(()),
            owners: StdUsize::new(0),
            store_page_ins: StdUsize::new(0),
            coverage,
        }
    }

    pub fn saw(&self, what: Seen) {
        self.coverage.fetch_or(what as u32, SeqCst);
    }

    /// This actor now owns the page's busy state: nobody else may.
    pub fn own(&self, who: &str) {
        let before = self.owners.fetch_add(1, SeqCst);
        assert_eq!(before, 0, "{who} took the page's busy state while someone held it");
    }

    /// Called just before the step that gives the busy state up.
    pub fn disown(&self) {
        self.owners.fetch_sub(1, SeqCst);
    }

    pub fn owners(&self) -> usize {
        self.owners.load(SeqCst)
    }

    /// A frame from the allocator (the model never needs more than two).
    pub fn alloc(&self) -> usize {
        (0..FRAMES)
            .find(|&i| self.db.transition(i, FrameKind::Free, FrameKind::Allocated, 0).is_ok())
            .expect("two frames are enough for one page")
    }

    /// Gives frame `i` back; it must be allocated and have no paging state.
    pub fn free(&self, i: usize) {
        assert_eq!(self.db.paging_flags(i), 0, "frame {i} freed while it still backs the page");
        let freed = self.db.transition(i, FrameKind::Allocated, FrameKind::Free, 0);
        assert_eq!(freed, Ok(()), "frame {i} freed twice");
    }

    pub fn index_of(&self, e: u64) -> usize {
        self.db
            .index_of(crate::frame::PhysAddr::new_truncate(pte::addr(e)))
            .expect("the entry maps a frame of the database")
    }

    pub fn take_slot(&self) -> u64 {
        let got = self.slot_used.compare_exchange(0, 1, AcqRel, Relaxed);
        assert_eq!(got, Ok(0), "the store's one slot is taken: a slot leaked");
        0
    }

    pub fn free_slot(&self, s: u64) {
        assert_eq!(s, 0);
        assert_eq!(self.slot_used.swap(0, AcqRel), 1, "slot freed twice");
    }

    pub fn slot_used(&self) -> bool {
        self.slot_used.load(Acquire) != 0
    }

    /// Runs `f` as one instruction (see `tlb`).
    pub fn instruction<R>(&self, f: impl FnOnce() -> R) -> R {
        let _insn = self.tlb.lock().unwrap();
        f()
    }

    /// A TLB shootdown after the entry changed: returns once no CPU can
    /// still be using the old translation.
    pub fn shootdown(&self) {
        drop(self.tlb.lock().unwrap());
    }
}

/// The in-transit marker `unmap_one` leaves (`vm::unmap::transit(e,
/// PAGE_SIZE, true)`, which is not built under loom).
pub fn transit(e: u64) -> u64 {
    (pte::addr(e) & !(PAGE_SIZE - 1)) | (e & SW_OWNED) | SW_TRANSIT
}
