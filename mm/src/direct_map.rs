//! Page tables through the direct map: the kernel's way for `vm` to reach
//! a table or a frame by its physical address.

use crate::vm::{Table, PAGE_SIZE};

/// The bootloader's direct map of all physical memory.
#[derive(Clone, Copy)]
pub struct DirectMap {
    offset: u64,
}

impl DirectMap {
    /// # Safety
    /// `offset` must be the offset of a direct map covering every frame the
    /// allocators hand out, mapped for the kernel's whole life.
    pub const unsafe fn new(offset: u64) -> DirectMap {
        DirectMap { offset }
    }

    pub fn offset(self) -> u64 {
        self.offset
    }

    /// The table in frame `phys`. Tables are arrays of atomics, so any
    /// number of shared references to one may exist.
    pub fn table(self, phys: u64) -> &'static Table {
        debug_assert_eq!(phys % PAGE_SIZE, 0);
        // Why this holds: the direct map covers the frame (constructor
        // contract), the address is page-aligned so aligned for `Table`,
        // and every bit pattern is a valid array of `AtomicU64`.
        // SAFETY: all access goes through atomics, so aliasing references
        // cannot race unsoundly.
        unsafe { &*((phys + self.offset) as *const Table) }
    }

    /// Fills frame `phys` with `byte`; the caller owns the frame.
    pub fn fill(self, phys: u64, byte: u8) {
        // SAFETY: the direct map covers the frame; the caller owns it, so
        // no Rust reference into it is alive while it is written.
        unsafe { core::ptr::write_bytes((phys + self.offset) as *mut u8, byte, PAGE_SIZE as usize) };
    }

    /// Copies frame `from` to frame `to`; the caller owns both.
    pub fn copy(self, from: u64, to: u64) {
        // SAFETY: as for `fill`; distinct frames never overlap.
        unsafe {
            core::ptr::copy_nonoverlapping(
                (from + self.offset) as *const u8,
                (to + self.offset) as *mut u8,
                PAGE_SIZE as usize,
            )
        };
    }
}
