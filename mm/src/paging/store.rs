//! The backing store: where evicted pages go. A trait (Zephyr's
//! `k_mem_paging_backing_store_*` calls) and a RAM-backed store in memory
//! set aside at boot; a block-device store implements the same trait.

use alloc::vec::Vec;

use super::slots::{SlotError, SlotFor, SlotMap};
use crate::frame::{Frame, PhysAddr};
use crate::vm::{Vm, VmPlatform, PAGE_SIZE};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreError {
    /// No slot left (outside a page fault, the reserved one is not given).
    Full,
    /// A slot the store does not have or has not handed out.
    BadSlot { slot: u64 },
    /// The device failed the transfer; nothing was changed.
    Io { slot: u64 },
    /// Switching away from a store that still holds `slots` pages.
    InUse { slots: u64 },
    /// No store by that name.
    NoSuchStore,
}

impl From<SlotError> for StoreError {
    fn from(e: SlotError) -> StoreError {
        match e {
            SlotError::Full => StoreError::Full,
            SlotError::OutOfRange { slot } | SlotError::NotAllocated { slot } => StoreError::BadSlot { slot },
        }
    }
}

pub trait BackingStore: Sync {
    /// A slot for a page about to be paged out. `SlotFor::Fault`: the
    /// caller evicts to satisfy a fault and may take the reserved last slot.
    fn location_get(&self, slot_for: SlotFor) -> Result<u64, StoreError>;
    /// Gives a slot back (its page was paged in for good or unmapped).
    fn location_free(&self, slot: u64) -> Result<(), StoreError>;
    /// Copies `frame` into slot `slot`.
    fn page_out(&self, slot: u64, frame: &Frame) -> Result<(), StoreError>;
    /// Copies slot `slot` into `frame`.
    fn page_in(&self, slot: u64, frame: &mut Frame) -> Result<(), StoreError>;
    /// Whether `slot` is handed out (holds a page or is about to).
    fn holds(&self, slot: u64) -> bool;
    /// (slots in use, slots in all).
    fn usage(&self) -> (u64, u64);
    /// What the store is, for reports.
    fn name(&self) -> &'static str;
}

/// Slots are frames set aside for good, taken in physically contiguous
/// runs of equal length (the allocator's largest blocks). The store holds
/// each as a `Frame`, behind a lock of its own so that the copy into it
/// borrows it mutably; only the slot's holder moves pages through it, so
/// the lock is never contended.
pub struct RamStore<'m, M: VmPlatform> {
    mem: &'m M,
    frames: Vec<spin::Mutex<Frame>>,
    slots: SlotMap,
}

impl<'m, M: VmPlatform> RamStore<'m, M> {
    /// A store over runs of `run_frames` frames starting at each address
    /// in `runs` (page-aligned), reached through `mem`. Outside mm,
    /// `RamStore::over` makes one (the platform is not reachable there).
    ///
    /// # Safety
    /// The runs are the caller's (`alloc_contiguous` runs) and are handed
    /// to the store for good: nobody else uses or frees them.
    // Takes runs by address and makes a handle per frame of them.
    #[allow(unsafe_code)]
    pub unsafe fn new(mem: &'m M, runs: Vec<PhysAddr>, run_frames: u64) -> RamStore<'m, M> {
        debug_assert!(runs.iter().all(|r| r.as_u64().is_multiple_of(PAGE_SIZE)));
        let frames: Vec<_> = runs
            .iter()
            .flat_map(|&run| (0..run_frames).map(move |i| run + i * PAGE_SIZE))
            // SAFETY: the runs are the caller's and now the store's for good
            // (this function's contract): each frame gets one handle.
            .map(|phys| spin::Mutex::new(unsafe { Frame::from_phys(phys) }))
            .collect();
        let slots = SlotMap::new(frames.len() as u64);
        RamStore { mem, frames, slots }
    }

    /// A store as [`RamStore::new`] makes, reached through `vm`'s platform.
    ///
    /// # Safety
    /// As for [`RamStore::new`]: the runs are the caller's and go to the
    /// store for good.
    // Forwards `RamStore::new`'s contract.
    #[allow(unsafe_code)]
    pub unsafe fn over(vm: &'m Vm<M>, runs: Vec<PhysAddr>, run_frames: u64) -> RamStore<'m, M> {
        // SAFETY: this function's contract.
        unsafe { RamStore::new(&vm.p, runs, run_frames) }
    }

    fn frame_of(&self, slot: u64) -> Result<&spin::Mutex<Frame>, StoreError> {
        if !self.slots.is_used(slot) {
            return Err(StoreError::BadSlot { slot });
        }
        Ok(&self.frames[slot as usize])
    }
}

impl<M: VmPlatform> BackingStore for RamStore<'_, M> {
    fn location_get(&self, slot_for: SlotFor) -> Result<u64, StoreError> {
        Ok(self.slots.alloc(slot_for)?)
    }

    fn location_free(&self, slot: u64) -> Result<(), StoreError> {
        Ok(self.slots.free(slot)?)
    }

    fn page_out(&self, slot: u64, frame: &Frame) -> Result<(), StoreError> {
        self.mem.copy_frame(frame, &mut self.frame_of(slot)?.lock());
        Ok(())
    }

    fn page_in(&self, slot: u64, frame: &mut Frame) -> Result<(), StoreError> {
        self.mem.copy_frame(&self.frame_of(slot)?.lock(), frame);
        Ok(())
    }

    fn holds(&self, slot: u64) -> bool {
        self.slots.is_used(slot)
    }

    fn usage(&self) -> (u64, u64) {
        (self.slots.used(), self.slots.total())
    }

    fn name(&self) -> &'static str {
        "ram"
    }
}

// Host tests map and free frames by address: host memory is a vector of
// atomics, so a wrong address is test data, never undefined behaviour.
#[cfg(test)]
#[allow(unsafe_code)]
mod tests {
    use super::*;
    use crate::vm::testing::SimMachine;

    #[test]
    fn pages_go_out_and_come_back() {
        let m = SimMachine::new(256, 1);
        let runs = vec![m.frames.alloc_contiguous(4).unwrap(), m.frames.alloc_contiguous(4).unwrap()];
        // SAFETY: the runs were just allocated and go to the store.
        let store = unsafe { RamStore::new(&m, runs, 4) };
        let mut handle = m.frames.alloc_page().unwrap();
        let frame = handle.phys().as_u64();
        for i in 0..512 {
            m.set_word(frame, i * 8, 0xABC0 + i);
        }
        let slots: Vec<u64> = (0..6).map(|_| store.location_get(SlotFor::Other).unwrap()).collect();
        let slot = slots[5];
        assert!(slot >= 4, "the sixth slot lies in the second run");
        store.page_out(slot, &handle).unwrap();
        m.fill_frame(&mut handle, 0);
        store.page_in(slot, &mut handle).unwrap();
        assert!((0..512).all(|i| m.word(frame, i * 8) == 0xABC0 + i));
        assert_eq!(store.usage(), (6, 8));
        for &s in &slots[..5] {
            store.location_free(s).unwrap();
        }
        store.location_free(slot).unwrap();
        assert_eq!(store.page_in(slot, &mut handle), Err(StoreError::BadSlot { slot }), "a freed slot holds nothing");
        assert_eq!(store.page_out(99, &handle), Err(StoreError::BadSlot { slot: 99 }));
        m.frames.free_page(handle).unwrap();
        assert_eq!(store.location_free(slot), Err(StoreError::BadSlot { slot }));
        assert_eq!(store.usage(), (0, 8));
    }

    #[test]
    fn a_fault_gets_the_reserved_slot() {
        let m = SimMachine::new(64, 1);
        let base = m.frames.alloc_contiguous(2).unwrap();
        // SAFETY: the run was just allocated and goes to the store.
        let store = unsafe { RamStore::new(&m, vec![base], 2) };
        store.location_get(SlotFor::Other).unwrap();
        assert_eq!(store.location_get(SlotFor::Other), Err(StoreError::Full));
        assert!(store.location_get(SlotFor::Fault).is_ok());
    }
}
