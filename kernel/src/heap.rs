//! The kernel heap: `mm::heap` over frames from the frame allocator,
//! reached through the direct map, installed as the global allocator so
//! `alloc::` collections work on every CPU.

use core::alloc::{GlobalAlloc, Layout};
use core::sync::atomic::{AtomicU64, Ordering};

use mm::heap::{Heap, HeapCpu, PageSource};
use smp::MAX_CPUS;

use crate::frames::{self, KernelPlatform};

/// Direct-map offset, set once by `init` before the first allocation.
static PHYS_OFFSET: AtomicU64 = AtomicU64::new(0);

pub struct FramePages;

impl PageSource for FramePages {
    fn alloc_pages(&self, pages: usize) -> Option<usize> {
        let phys = frames::get().alloc_contiguous(pages as u64).ok()?;
        Some((phys + PHYS_OFFSET.load(Ordering::Relaxed)) as usize)
    }

    fn free_pages(&self, addr: usize, pages: usize) {
        let phys = addr as u64 - PHYS_OFFSET.load(Ordering::Relaxed);
        if let Err(e) = frames::get().free_contiguous(phys, pages as u64) {
            panic!("heap: freeing {pages} pages at {phys:#x}: {e:?}");
        }
    }
}

static CPUS: [HeapCpu; MAX_CPUS] = [const { HeapCpu::new() }; MAX_CPUS];
pub static HEAP: Heap<'static, FramePages, KernelPlatform> = Heap::new(&CPUS, FramePages, KernelPlatform);

/// Enables the heap; the frame allocator must be running.
pub fn init(phys_offset: u64) {
    PHYS_OFFSET.store(phys_offset, Ordering::Relaxed);
}

struct KernelHeap;

// SAFETY: `Heap::alloc` returns memory of at least `size` bytes aligned to
// `align` that no one else uses, or `None` (null); `dealloc` hands back
// exactly what `alloc` returned with the same layout.
unsafe impl GlobalAlloc for KernelHeap {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if PHYS_OFFSET.load(Ordering::Relaxed) == 0 {
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

