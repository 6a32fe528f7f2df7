//! TEMPORARY test scaffolding for the ring-3 tests, until the
//! address-space API (being written on another branch) replaces it: maps
//! a few user pages into the *current* page tables, shared by every CPU,
//! in a lower-half PML4 slot nothing else uses, and removes them again
//! (pages, page tables, TLB entries on every CPU, frames) when dropped.
//!
//! The kernel reads and writes these pages only through the direct map,
//! never through their user addresses, which SMAP forbids.

use arrayvec::ArrayVec;
use mm::PAGE_SIZE;
use smp::{percpu, tlb};
use x86_64::registers::control::Cr3;
use x86_64::structures::paging::mapper::CleanUp;
use x86_64::structures::paging::{
    FrameAllocator, FrameDeallocator, Mapper, OffsetPageTable, Page, PageTable, PageTableFlags as Flags, PhysFrame,
    Size4KiB,
};
use x86_64::{PhysAddr, VirtAddr};

use super::{failure, Failure};
use crate::user_program::user_program;
use crate::{frames, memory};

/// PML4 slot 32: the bootloader's identity mappings are below 4 GiB (slot
/// 0) and the kernel lives in the upper half; `map` checks it is free.
const BASE: u64 = 0x0000_1000_0000_0000;
/// The program (`user_program`): user, read-only, executable.
pub const CODE: u64 = BASE;
/// User, writable, not executable.
pub const DATA: u64 = BASE + PAGE_SIZE;
/// User, writable, not executable.
pub const STACK: u64 = BASE + 2 * PAGE_SIZE;
/// Present and writable but not user: ring 3 may not touch it.
pub const SUPERVISOR: u64 = BASE + 3 * PAGE_SIZE;

const LAYOUT: [(u64, Flags); 4] = [
    (CODE, Flags::PRESENT.union(Flags::USER_ACCESSIBLE)),
    (DATA, Flags::PRESENT.union(Flags::USER_ACCESSIBLE).union(Flags::WRITABLE).union(Flags::NO_EXECUTE)),
    (STACK, Flags::PRESENT.union(Flags::USER_ACCESSIBLE).union(Flags::WRITABLE).union(Flags::NO_EXECUTE)),
    (SUPERVISOR, Flags::PRESENT.union(Flags::WRITABLE).union(Flags::NO_EXECUTE)),
];
const PAGES: usize = LAYOUT.len();
/// Page tables must allow user access for any page below them to; each
/// leaf then decides.
const TABLE_FLAGS: Flags = Flags::PRESENT.union(Flags::WRITABLE).union(Flags::USER_ACCESSIBLE);

/// The mapped pages; unmapped and freed on drop.
pub struct UserPages {
    /// The frame behind each `LAYOUT` page, in order.
    frames: ArrayVec<u64, PAGES>,
    /// Whether we found the PML4 slot empty, so the page tables under it
    /// are ours to free.
    owns_slot: bool,
}

struct Alloc;

// SAFETY: `alloc_page` hands out each free frame once and never a reserved
// one, which is all `FrameAllocator` asks.
unsafe impl FrameAllocator<Size4KiB> for Alloc {
    fn allocate_frame(&mut self) -> Option<PhysFrame> {
        frames::get().alloc_page().ok().map(|a| PhysFrame::containing_address(PhysAddr::new(a)))
    }
}

/// Keeps the page tables `clean_up` releases, to free after the shootdown.
struct Released(ArrayVec<u64, 8>);

impl FrameDeallocator<Size4KiB> for Released {
    unsafe fn deallocate_frame(&mut self, frame: PhysFrame) {
        if self.0.try_push(frame.start_address().as_u64()).is_err() {
            log::error!("user_pages: page table {frame:?} leaked");
        }
    }
}

/// Runs `f` on the active page tables, under the kernel map's lock.
fn with_active_table<R>(f: impl FnOnce(&mut OffsetPageTable<'_>) -> R) -> R {
    memory::with_kernel_map(|_, _| {
        let pml4 = memory::virt_of(Cr3::read().0.start_address().as_u64()) as *mut PageTable;
        // SAFETY: the direct map covers the tables; the kernel map holds the only other handle
        // to this PML4 and cannot run while we hold its lock (that aliasing is why this helper
        // must give way to the address-space API).
        let mut table = unsafe { OffsetPageTable::new(&mut *pml4, VirtAddr::new(memory::phys_offset())) };
        f(&mut table)
    })
}

fn page(virt: u64) -> Page<Size4KiB> {
    Page::containing_address(VirtAddr::new(virt))
}

impl UserPages {
    /// Maps `LAYOUT` with fresh zeroed frames and copies the program into
    /// the code page.
    pub fn map() -> Result<UserPages, Failure> {
        let mut pages = UserPages { frames: ArrayVec::new(), owns_slot: false };
        for _ in 0..PAGES {
            let frame = frames::get().alloc_page().map_err(|e| failure(format_args!("no frame: {e:?}")))?;
            pages.frames.push(frame);
            // SAFETY: the frame is ours (just allocated) and in the direct map.
            unsafe { core::ptr::write_bytes(memory::virt_of(frame) as *mut u8, 0, PAGE_SIZE as usize) };
        }
        let program = user_program();
        if program.len() > PAGE_SIZE as usize {
            return Err(failure(format_args!("the user program ({} bytes) does not fit a page", program.len())));
        }
        // SAFETY: the code frame is ours and a page long, and the program
        // fits in it (checked above).
        unsafe { core::ptr::copy_nonoverlapping(program.as_ptr(), pages.direct(CODE) as *mut u8, program.len()) };
        with_active_table(|table| {
            let slot = page(BASE).p4_index();
            if !table.level_4_table()[slot].is_unused() {
                return Err(failure(format_args!("PML4 slot {slot:?} for the user pages is already in use")));
            }
            pages.owns_slot = true;
            for (i, &(virt, flags)) in LAYOUT.iter().enumerate() {
                let frame = PhysFrame::containing_address(PhysAddr::new(pages.frames[i]));
                // SAFETY: the slot was empty, so nothing else is mapped here,
                // and the frame is ours: no memory becomes aliased.
                let mapped = unsafe { table.map_to_with_table_flags(page(virt), frame, flags, TABLE_FLAGS, &mut Alloc) };
                // A never-mapped address (a drop shoots down the last
                // use): nothing stale anywhere, a local flush suffices.
                mapped.map_err(|e| failure(format_args!("mapping {virt:#x}: {e:?}")))?.flush();
            }
            Ok(())
        })?;
        Ok(pages)
    }

    /// Where user address `virt` (inside one of our pages) is in the
    /// direct map.
    fn direct(&self, virt: u64) -> u64 {
        let i = LAYOUT.iter().position(|&(v, _)| v == virt & !(PAGE_SIZE - 1)).expect("not a user page");
        memory::virt_of(self.frames[i]) + (virt & (PAGE_SIZE - 1))
    }

    /// The u64 at user address `virt`, read through the direct map.
    pub fn read(&self, virt: u64) -> u64 {
        // SAFETY: the frame is ours and mapped for as long as `self` lives;
        // ring 3 writes it only while the caller waits in `run_user`.
        unsafe { (self.direct(virt) as *const u64).read_volatile() }
    }

    /// Writes the u64 at user address `virt` through the direct map.
    pub fn write(&self, virt: u64, value: u64) {
        // SAFETY: as in `read`.
        unsafe { (self.direct(virt) as *mut u64).write_volatile(value) }
    }

    /// The bytes of the code page, read through the direct map.
    pub fn code_bytes(&self) -> &[u8] {
        // SAFETY: the code frame is ours, a page long, and nothing writes
        // it after `map` (ring 3 may not: it is read-only).
        unsafe { core::slice::from_raw_parts(self.direct(CODE) as *const u8, PAGE_SIZE as usize) }
    }
}

impl Drop for UserPages {
    /// Unmaps, frees the page tables if they are ours, shoots the range
    /// down on every CPU (any of them may have run the program), and only
    /// then frees the frames. If the shootdown fails the frames leak
    /// rather than be reused while some CPU may still reach them.
    fn drop(&mut self) {
        let mut released = Released(ArrayVec::new());
        with_active_table(|table| {
            for &(virt, _) in LAYOUT.iter().take(self.frames.len()) {
                if let Ok((_, flush)) = table.unmap(page(virt)) {
                    flush.ignore(); // the shootdown below covers this CPU too
                }
            }
            if self.owns_slot {
                let range = Page::range_inclusive(page(BASE), page(BASE + (PAGES as u64 - 1) * PAGE_SIZE));
                // SAFETY: the slot was empty before `map`, so every table
                // under it was made for these pages and is used nowhere else.
                unsafe { table.clean_up_addr_range(range, &mut released) };
            }
        });
        if let Err(e) = tlb::shootdown(percpu::online_set(), BASE, PAGES as u64) {
            log::error!("user_pages: shootdown failed ({e:?}); {} frames leaked", self.frames.len() + released.0.len());
            return;
        }
        for &frame in self.frames.iter().chain(released.0.iter()) {
            if let Err(e) = frames::get().free_page(frame) {
                log::error!("user_pages: freeing {frame:#x}: {e:?}");
            }
        }
    }
}
