//! `virtio_drivers::Hal` for the kernel: DMA memory from the frame
//! allocator reached through the direct map, device registers mapped
//! uncached with `phys_map`, and buffers shared by their physical address,
//! computed from the direct map (the drivers here only pass frames and
//! heap objects, both in it; anything else is a panic).

use core::ptr::NonNull;

use mm::vm::CacheMode;
use virtio_drivers::{BufferDirection, Hal, PhysAddr, PAGE_SIZE};

use crate::{frames, memory, vm};

pub struct KernelHal;

/// Frames for a DMA allocation: the allocator's contiguous runs are powers
/// of two.
fn run_frames(pages: usize) -> u64 {
    (pages.max(1) as u64).next_power_of_two()
}

/// The physical address of the `len` bytes at `virt`, if they all lie in
/// the direct map. It maps physical memory linearly, so such bytes are
/// physically contiguous and their address is arithmetic: no table walk
/// and no lock. That matters: swap I/O runs inside paging with interrupts
/// off, and waiting there for the kernel's table lock, which an unmap
/// holds across a shootdown to this very CPU, stalls both until the
/// shootdown times out (and the unmap quarantines its frames).
pub fn direct_phys(virt: u64, len: u64) -> Option<u64> {
    let window = memory::direct_map();
    let start = window.phys(virt).ok()?;
    let last = virt.checked_add(len.max(1) - 1)?;
    window.phys(last).ok()?;
    Some(start.as_u64())
}

// SAFETY: `dma_alloc` hands out zeroed frames nobody else owns, through
// the direct map (valid, page-aligned, not aliased by other allocations);
// `mmio_phys_to_virt` maps the device's own registers afresh; `share`
// returns the real physical address of memory the caller keeps alive.
unsafe impl Hal for KernelHal {
    fn dma_alloc(pages: usize, _direction: BufferDirection) -> (PhysAddr, NonNull<u8>) {
        match frames::get().alloc_contiguous(run_frames(pages)) {
            Ok(run) => {
                for i in 0..run_frames(pages) {
                    // SAFETY: the run was just allocated: nobody else has it.
                    unsafe { memory::fill_words(run + i * PAGE_SIZE as u64, 0) };
                }
                let phys = run.as_u64();
                (phys, NonNull::new(memory::virt_of(phys) as *mut u8).expect("direct map at 0"))
            }
            // The driver reads a zero address as a failed allocation.
            Err(_) => (0, NonNull::dangling()),
        }
    }

    unsafe fn dma_dealloc(paddr: PhysAddr, _vaddr: NonNull<u8>, pages: usize) -> i32 {
        // SAFETY: `Hal::dma_dealloc`'s contract: `paddr` is a run
        // `dma_alloc` handed out, given back once, and used no more.
        match unsafe { frames::get().free_contiguous(mm::frame::PhysAddr::new(paddr), run_frames(pages)) } {
            Ok(()) => 0,
            Err(e) => {
                log::error!("virtio: freeing DMA memory at {paddr:#x}: {e:?}");
                -1
            }
        }
    }

    unsafe fn mmio_phys_to_virt(paddr: PhysAddr, size: usize) -> NonNull<u8> {
        // Device registers stay mapped for as long as the device is used:
        // for good.
        // SAFETY: `Hal::mmio_phys_to_virt`'s contract: `paddr` is the
        // device's own register block, which nothing else owns.
        let virt = unsafe { vm::get().phys_map(mm::frame::PhysAddr::new(paddr), size as u64, CacheMode::Uncached) }
            .unwrap_or_else(|e| panic!("virtio: mapping registers at {paddr:#x} (+{size:#x}): {e:?}"));
        NonNull::new(virt as *mut u8).expect("phys_map returned 0")
    }

    unsafe fn share(buffer: NonNull<[u8]>, _direction: BufferDirection) -> PhysAddr {
        // What the swap disk shares: the request header and status (in its
        // heap-allocated state) and the page's frame (through the direct
        // map). Without the crate's `alloc` feature there are no indirect
        // descriptor lists; the rings come from `dma_alloc`.
        let (virt, len) = (buffer.as_ptr() as *mut u8 as u64, buffer.len() as u64);
        direct_phys(virt, len).unwrap_or_else(|| panic!("virtio: buffer at {virt:#x} (+{len:#x}) is outside the direct map; only frames and heap objects may be shared"))
    }

    unsafe fn unshare(_paddr: PhysAddr, _buffer: NonNull<[u8]>, _direction: BufferDirection) {}
}
