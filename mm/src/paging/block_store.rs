//! A backing store on a block device: slot `s` is the 4 KiB at sectors
//! `8s..8s+8`. The device moves whole frames by physical address (DMA), so
//! the store never touches page contents itself. A failed transfer is an
//! `Io` error and changes no slot.

use super::slots::{SlotFor, SlotMap};
use super::store::{BackingStore, StoreError};
use crate::frame::Frame;
use crate::vm::PAGE_SIZE;

/// 512-byte sectors per slot.
pub const SECTORS_PER_SLOT: u64 = PAGE_SIZE / 512;

/// What the store needs from a disk driver. A failed transfer carries no
/// detail: the driver logs what went wrong where it knows it, and the store
/// reports every failure as `StoreError::Io` for the slot, so
/// `Result<(), ()>` is the whole story (clippy's `result_unit_err` is
/// overruled for this trait).
#[allow(clippy::result_unit_err)]
pub trait BlockDevice: Sync {
    /// Size in 512-byte sectors.
    fn sectors(&self) -> u64;
    /// Reads 8 sectors from `sector` into `frame`.
    fn read_page(&self, sector: u64, frame: &mut Frame) -> Result<(), ()>;
    /// Writes `frame` to 8 sectors from `sector`.
    fn write_page(&self, sector: u64, frame: &Frame) -> Result<(), ()>;
    fn name(&self) -> &'static str;
}

pub struct BlockStore<D: BlockDevice> {
    dev: D,
    slots: SlotMap,
}

impl<D: BlockDevice> BlockStore<D> {
    /// A store over the first `max_slots` slots of `dev` (fewer if the
    /// disk is smaller).
    pub fn new(dev: D, max_slots: u64) -> BlockStore<D> {
        let slots = SlotMap::new((dev.sectors() / SECTORS_PER_SLOT).min(max_slots));
        BlockStore { dev, slots }
    }

    fn sector_of(&self, slot: u64) -> Result<u64, StoreError> {
        if !self.slots.is_used(slot) {
            return Err(StoreError::BadSlot { slot });
        }
        Ok(slot * SECTORS_PER_SLOT)
    }
}

impl<D: BlockDevice> BackingStore for BlockStore<D> {
    fn location_get(&self, slot_for: SlotFor) -> Result<u64, StoreError> {
        Ok(self.slots.alloc(slot_for)?)
    }

    fn location_free(&self, slot: u64) -> Result<(), StoreError> {
        Ok(self.slots.free(slot)?)
    }

    fn page_out(&self, slot: u64, frame: &Frame) -> Result<(), StoreError> {
        self.dev.write_page(self.sector_of(slot)?, frame).map_err(|()| StoreError::Io { slot })
    }

    fn page_in(&self, slot: u64, frame: &mut Frame) -> Result<(), StoreError> {
        self.dev.read_page(self.sector_of(slot)?, frame).map_err(|()| StoreError::Io { slot })
    }

    fn holds(&self, slot: u64) -> bool {
        self.slots.is_used(slot)
    }

    fn usage(&self) -> (u64, u64) {
        (self.slots.used(), self.slots.total())
    }

    fn name(&self) -> &'static str {
        self.dev.name()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vm::testing::SimMachine;
    use crate::vm::VmPlatform;
    use std::sync::Mutex;

    /// A disk in host memory, moving frames of a simulated machine.
    pub struct RamDisk<'m> {
        pub m: &'m SimMachine,
        pub data: Mutex<Vec<u64>>,
    }

    impl BlockDevice for RamDisk<'_> {
        fn sectors(&self) -> u64 {
            self.data.lock().unwrap().len() as u64 * 8 / 512
        }
        fn read_page(&self, sector: u64, frame: &mut Frame) -> Result<(), ()> {
            let frame = frame.phys().as_u64();
            let d = self.data.lock().unwrap();
            let base = (sector * 512 / 8) as usize;
            (0..512).for_each(|w| self.m.set_word(frame, w * 8, d[base + w as usize]));
            Ok(())
        }
        fn write_page(&self, sector: u64, frame: &Frame) -> Result<(), ()> {
            let frame = frame.phys().as_u64();
            let mut d = self.data.lock().unwrap();
            let base = (sector * 512 / 8) as usize;
            (0..512).for_each(|w| d[base + w as usize] = self.m.word(frame, w * 8));
            Ok(())
        }
        fn name(&self) -> &'static str {
            "ramdisk"
        }
    }

    #[test]
    fn slots_map_to_sectors_and_data_round_trips() {
        let m = SimMachine::new(64, 1);
        let disk = RamDisk { m: &m, data: Mutex::new(vec![0; 4 * 512]) };
        let store = BlockStore::new(disk, 100);
        assert_eq!(store.usage(), (0, 4), "a 16 KiB disk has 4 slots");
        let mut handle = m.frames.alloc_page().unwrap();
        let frame = handle.phys().as_u64();
        (0..512).for_each(|i| m.set_word(frame, i * 8, 0x5100 + i));
        let a = store.location_get(SlotFor::Other).unwrap();
        let b = store.location_get(SlotFor::Other).unwrap();
        store.page_out(b, &handle).unwrap();
        m.fill_frame(&mut handle, 0);
        assert_eq!(store.page_in(a, &mut handle), Ok(()), "an allocated slot reads (zeros)");
        assert_eq!(m.word(frame, 8), 0);
        store.page_in(b, &mut handle).unwrap();
        assert!((0..512).all(|i| m.word(frame, i * 8) == 0x5100 + i));
        store.location_free(b).unwrap();
        assert_eq!(store.page_in(b, &mut handle), Err(StoreError::BadSlot { slot: b }));
        m.frames.free_page(handle).unwrap();
        assert_eq!(store.name(), "ramdisk");
    }
}
