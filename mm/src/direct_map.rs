//! Page tables through the direct map: the kernel's way for `vm` to reach
//! a table or a frame by its physical address.

use crate::frame::{Frame, PhysAddr};
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
    ///
    /// # Safety
    /// Frame `phys` holds a page table (or is otherwise only ever accessed
    /// through atomics) for as long as the reference is used: no `&mut`
    /// or plain write reaches it meanwhile, and it is not freed.
    pub unsafe fn table(self, phys: PhysAddr) -> &'static Table {
        let phys = phys.as_u64();
        debug_assert_eq!(phys % PAGE_SIZE, 0);
        // SAFETY: the direct map covers the frame (constructor contract),
        // the address is page-aligned so aligned for `Table`, every bit
        // pattern is a valid array of `AtomicU64`, and all access to it goes
        // through atomics (this function's contract), so aliasing
        // references cannot race unsoundly.
        unsafe { &*((phys + self.offset) as *const Table) }
    }

    /// Fills `frame` with `byte`; holding it proves the caller owns it.
    pub fn fill_frame(self, frame: &mut Frame, byte: u8) {
        // SAFETY: the caller owns the frame (it holds the handle mutably).
        unsafe { self.fill(frame.phys(), byte) }
    }

    /// Fills frame `phys` with `byte`.
    ///
    /// # Safety
    /// The caller owns the frame (it may hold it by address only): nobody
    /// else reads or writes it meanwhile, and no Rust reference into it is
    /// alive.
    pub unsafe fn fill(self, phys: PhysAddr, byte: u8) {
        // SAFETY: the direct map covers the frame (constructor contract);
        // the caller owns it (this function's contract).
        unsafe { core::ptr::write_bytes((phys.as_u64() + self.offset) as *mut u8, byte, PAGE_SIZE as usize) };
    }

    /// Copies `from` into `to`; holding them proves the caller owns both
    /// (and `to`'s mutable borrow that they are distinct).
    pub fn copy_frame(self, from: &Frame, to: &mut Frame) {
        // SAFETY: the caller owns both frames (it holds the handles).
        unsafe { self.copy(from.phys(), to.phys()) }
    }

    /// Copies frame `from` to frame `to`.
    ///
    /// # Safety
    /// As for `fill`, for both frames; they are distinct.
    pub unsafe fn copy(self, from: PhysAddr, to: PhysAddr) {
        // SAFETY: as for `fill` (this function's contract); distinct frames
        // never overlap.
        unsafe {
            core::ptr::copy_nonoverlapping(
                (from.as_u64() + self.offset) as *const u8,
                (to.as_u64() + self.offset) as *mut u8,
                PAGE_SIZE as usize,
            )
        };
    }
}
