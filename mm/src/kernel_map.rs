//! Mapping kernel memory into the live page tables during boot: CPU stacks
//! with an unmapped guard page below each, so an overflow faults instead of
//! corrupting a neighbour.

use x86_64::structures::paging::{
    FrameAllocator, Mapper, OffsetPageTable, Page, PageTable, PageTableFlags, PhysFrame, Size4KiB,
};
use x86_64::{PhysAddr, VirtAddr};

use crate::PAGE_SIZE;

/// Start of the kernel's own mapping area (top 1 TiB of the address space,
/// PML4 slots 510-511). The bootloader keeps its mappings below this.
pub const KERNEL_AREA_START: u64 = 0xFFFF_FF00_0000_0000;
/// Stacks for every CPU: up to 1 GiB.
pub const STACK_AREA: core::ops::Range<u64> = KERNEL_AREA_START..KERNEL_AREA_START + (1 << 30);
/// Scratch pages for in-kernel tests of translation and shootdown, until
/// the kernel mapping area and its region allocator exist.
pub const TEST_AREA: core::ops::Range<u64> = STACK_AREA.end..STACK_AREA.end + (1 << 21);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MapError {
    OutOfFrames,
    OutOfVirtualSpace,
    AlreadyMapped,
    NotMapped,
}

/// Where new frames come from: the boot allocator early, the frame
/// allocator once it runs. Must return unused, page-aligned RAM.
pub type FrameSource<'a> = &'a mut dyn FnMut() -> Option<u64>;

struct Frames<'a, 'b>(&'b mut FrameSource<'a>);

// SAFETY: every `FrameSource` returns each frame at most once and never a
// reserved one (its contract above), which is what `FrameAllocator` needs.
unsafe impl FrameAllocator<Size4KiB> for Frames<'_, '_> {
    fn allocate_frame(&mut self) -> Option<PhysFrame> {
        (self.0)().map(|a| PhysFrame::containing_address(PhysAddr::new(a)))
    }
}

/// Boot-time editor of the kernel page tables.
pub struct KernelMap {
    table: OffsetPageTable<'static>,
    phys_offset: u64,
    next_stack: u64,
}

impl KernelMap {
    /// # Safety
    /// `phys_offset` must be the direct-map offset and `pml4_phys` the
    /// active PML4; only one `KernelMap` may exist, and no other code may
    /// edit the page tables meanwhile.
    pub unsafe fn new(phys_offset: u64, pml4_phys: u64) -> KernelMap {
        let pml4 = (pml4_phys + phys_offset) as *mut PageTable;
        // SAFETY: per the contract, the PML4 is mapped at this address and
        // not aliased by another `&mut`.
        let table = unsafe { OffsetPageTable::new(&mut *pml4, VirtAddr::new(phys_offset)) };
        KernelMap { table, phys_offset, next_stack: STACK_AREA.start }
    }

    pub fn phys_offset(&self) -> u64 {
        self.phys_offset
    }

    /// Maps `virt` to the frame at `phys`, writable and not executable,
    /// inside `TEST_AREA`. Page tables come from `frames`.
    pub fn map_test_page(&mut self, virt: u64, phys: u64, frames: FrameSource<'_>) -> Result<(), MapError> {
        self.map_test_page_unflushed(virt, phys, frames)?;
        x86_64::instructions::tlb::flush(VirtAddr::new(virt));
        Ok(())
    }

    /// Points the test page `virt` at `phys` *without* any TLB flush:
    /// CPUs that cached the old translation keep it until shot down.
    pub fn retarget_test_page(&mut self, virt: u64, phys: u64) -> Result<(), MapError> {
        self.unmap_test_page(virt)?;
        // The page table is still there, so no frame is needed.
        self.map_test_page_unflushed(virt, phys, &mut || None)
    }

    /// Removes the test page `virt` without a TLB flush; returns its frame.
    pub fn unmap_test_page(&mut self, virt: u64) -> Result<u64, MapError> {
        let (frame, flush) = self.table.unmap(test_page(virt)?).map_err(|_| MapError::NotMapped)?;
        flush.ignore();
        Ok(frame.start_address().as_u64())
    }

    fn map_test_page_unflushed(&mut self, virt: u64, phys: u64, mut frames: FrameSource<'_>) -> Result<(), MapError> {
        let page = test_page(virt)?;
        let frame = PhysFrame::containing_address(PhysAddr::new(phys));
        let flags = PageTableFlags::PRESENT | PageTableFlags::WRITABLE | PageTableFlags::NO_EXECUTE;
        // SAFETY: the test area holds no other mapping, and the caller owns
        // the frame, so no memory the kernel uses becomes aliased.
        let flush = unsafe { self.table.map_to(page, frame, flags, &mut Frames(&mut frames)) };
        flush.map_err(|_| MapError::AlreadyMapped)?.ignore();
        Ok(())
    }

    /// Maps a zeroed stack of `pages` pages below an unmapped guard page and
    /// returns its top (16-byte aligned).
    pub fn map_stack(&mut self, pages: u64, mut frames: FrameSource<'_>) -> Result<u64, MapError> {
        let bottom = self.next_stack + PAGE_SIZE; // guard page stays unmapped
        let top = bottom + pages * PAGE_SIZE;
        if top > STACK_AREA.end {
            return Err(MapError::OutOfVirtualSpace);
        }
        // Claim the range first: if mapping fails part-way, the next stack
        // goes above it instead of colliding with what was mapped. (Frames
        // already mapped into a failed stack stay there.)
        self.next_stack = top;
        let flags = PageTableFlags::PRESENT | PageTableFlags::WRITABLE | PageTableFlags::NO_EXECUTE;
        for i in 0..pages {
            let page = Page::<Size4KiB>::containing_address(VirtAddr::new(bottom + i * PAGE_SIZE));
            let frame = frames().ok_or(MapError::OutOfFrames)?;
            // SAFETY: the frame is fresh from the boot allocator and in the
            // direct map; zeroing it touches nothing else.
            unsafe { core::ptr::write_bytes((frame + self.phys_offset) as *mut u8, 0, PAGE_SIZE as usize) };
            let frame = PhysFrame::containing_address(PhysAddr::new(frame));
            // SAFETY: the stack area is ours alone (no other mapping lives
            // there) and the frame is unused, so no existing memory aliases.
            let flush = unsafe { self.table.map_to(page, frame, flags, &mut Frames(&mut frames)) };
            // Fresh mapping of a never-mapped page: nothing stale to flush on
            // other CPUs; flush locally for form.
            flush.map_err(|_| MapError::AlreadyMapped)?.flush();
        }
        Ok(top)
    }
}

/// The page of `virt`, which must lie in `TEST_AREA`.
fn test_page(virt: u64) -> Result<Page<Size4KiB>, MapError> {
    if !TEST_AREA.contains(&virt) {
        return Err(MapError::OutOfVirtualSpace);
    }
    Ok(Page::containing_address(VirtAddr::new(virt)))
}
