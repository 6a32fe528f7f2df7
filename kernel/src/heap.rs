//! The kernel heap: `mm::heap` over frames from the frame allocator,
//! reached through the direct map, installed as the global allocator so
//! `alloc::` collections work on every CPU.

use core::alloc::{GlobalAlloc, Layout};

use cpus::PerCpu;
use mm::heap::{Heap, HeapCpu, PageSource};

use crate::frames::{self, KernelPlatform};
use crate::memory;

pub struct FramePages;

impl PageSource for FramePages {
    fn alloc_pages(&self, pages: usize) -> Option<usize> {
        let phys = frames::get().alloc_contiguous(pages as u64).ok()?;
        Some(memory::virt_of(phys.as_u64()) as usize)
    }

    fn free_pages(&self, addr: usize, pages: usize) {
        let phys = mm::frame::PhysAddr::new(addr as u64 - memory::phys_offset());
        // SAFETY: the heap gives back exactly the pages `alloc_pages` handed
        // it, once, and uses them no more (`PageSource`'s contract).
        if let Err(e) = unsafe { frames::get().free_contiguous(phys, pages as u64) } {
            panic!("heap: freeing {pages} pages at {phys:#x}: {e:?}");
        }
    }
}

static CPUS: PerCpu<HeapCpu> = cpus::per_cpu![HeapCpu::new()];
pub static HEAP: Heap<'static, FramePages, KernelPlatform> = Heap::new(CPUS.as_ref(), FramePages, KernelPlatform);

struct KernelHeap;

// SAFETY: `Heap::alloc` returns memory of at least `size` bytes aligned to
// `align` that no one else uses, or `None` (null); `dealloc` hands back
// exactly what `alloc` returned with the same layout.
unsafe impl GlobalAlloc for KernelHeap {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // Until the frame allocator runs there is nothing to carve from.
        if !frames::ready() {
            return core::ptr::null_mut();
        }
        HEAP.alloc(layout.size(), layout.align()).map_or(core::ptr::null_mut(), |a| a as *mut u8)
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from `alloc` with this layout (GlobalAlloc's
        // contract).
        unsafe { HEAP.free(ptr as usize, layout.size(), layout.align()) }
    }
}

#[global_allocator]
static GLOBAL: KernelHeap = KernelHeap;
