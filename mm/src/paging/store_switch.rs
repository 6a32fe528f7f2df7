//! Several backing stores behind one: paging uses the selected one, and
//! the selection changes only while it holds no page (between benchmark
//! runs, say), so every slot in use always belongs to the selected store.

use alloc::vec::Vec;
use core::sync::atomic::{AtomicUsize, Ordering};

use super::slots::SlotFor;
use super::store::{BackingStore, StoreError};

pub struct StoreSwitch {
    stores: Vec<&'static dyn BackingStore>,
    active: AtomicUsize,
}

impl StoreSwitch {
    /// Paging starts on `stores[0]`.
    pub fn new(stores: Vec<&'static dyn BackingStore>) -> StoreSwitch {
        assert!(!stores.is_empty(), "a store switch needs a store");
        StoreSwitch { stores, active: AtomicUsize::new(0) }
    }

    pub fn names(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.stores.iter().map(|s| s.name())
    }

    fn active(&self) -> &'static dyn BackingStore {
        self.stores[self.active.load(Ordering::Acquire)]
    }

    /// Makes the store called `name` the one paging uses. Refused while
    /// the current one holds pages (they would be stranded there).
    pub fn select(&self, name: &str) -> Result<(), StoreError> {
        let i = self.stores.iter().position(|s| s.name() == name).ok_or(StoreError::NoSuchStore)?;
        let used = self.active().usage().0;
        if used != 0 {
            return Err(StoreError::InUse { slots: used });
        }
        self.active.store(i, Ordering::Release);
        Ok(())
    }
}

impl BackingStore for StoreSwitch {
    fn location_get(&self, slot_for: SlotFor) -> Result<u64, StoreError> {
        self.active().location_get(slot_for)
    }

    fn location_free(&self, slot: u64) -> Result<(), StoreError> {
        self.active().location_free(slot)
    }

    fn page_out(&self, slot: u64, frame: &crate::frame::Frame) -> Result<(), StoreError> {
        self.active().page_out(slot, frame)
    }

    fn page_in(&self, slot: u64, frame: &mut crate::frame::Frame) -> Result<(), StoreError> {
        self.active().page_in(slot, frame)
    }

    fn holds(&self, slot: u64) -> bool {
        self.active().holds(slot)
    }

    fn usage(&self) -> (u64, u64) {
        self.active().usage()
    }

    fn name(&self) -> &'static str {
        self.active().name()
    }
}

// Host tests map and free frames by address: host memory is a vector of
// atomics, so a wrong address is test data, never undefined behaviour.
#[cfg(test)]
#[allow(unsafe_code)]
mod tests {
    use super::*;
    use crate::paging::store::RamStore;
    use crate::vm::testing::SimMachine;

    #[test]
    fn switches_only_while_empty() {
        let m: &'static SimMachine = Box::leak(Box::new(SimMachine::new(64, 1)));
        let a: &'static RamStore<'static, SimMachine> =
            // SAFETY: the run was just allocated and goes to the store.
            Box::leak(Box::new(unsafe { RamStore::new(m, vec![m.frames.alloc_contiguous(4).unwrap()], 4) }));
        let b: &'static RamStore<'static, SimMachine> =
            // SAFETY: as for `a`.
            Box::leak(Box::new(unsafe { RamStore::new(m, vec![m.frames.alloc_contiguous(2).unwrap()], 2) }));
        let switch = StoreSwitch::new(vec![a, b]);
        assert_eq!(switch.usage(), (0, 4));
        let slot = switch.location_get(SlotFor::Other).unwrap();
        assert_eq!(switch.select("ram"), Err(StoreError::InUse { slots: 1 }), "a page would be stranded");
        assert_eq!(switch.select("disk"), Err(StoreError::NoSuchStore));
        switch.location_free(slot).unwrap();
        // Both are called "ram": the first match is chosen, so this keeps `a`.
        switch.select("ram").unwrap();
        assert_eq!(switch.usage(), (0, 4));
        assert_eq!(switch.names().count(), 2);
    }
}
