//! Boot-time memory: the usable regions from the bootloader, the boot frame
//! allocator over them until the real frame allocator takes over, and CPU
//! stacks mapped with guard pages.

use core::sync::atomic::{AtomicU64, Ordering};

use bootloader_api::info::{MemoryRegionKind, MemoryRegions};
use mm::boot_frames::BootFrames;
use mm::kernel_map::KernelMap;
use spin::Mutex;
use x86_64::registers::control::Cr3;

use crate::frames;
use crate::gdt::{InterruptStacks, IST_COUNT};

/// Below 1 MiB: real-mode IVT, BIOS data, EBDA, the AP trampoline
/// (`smp::bringup::TRAMPOLINE_RESERVED`). The bootloader calls some of it
/// usable; no allocator may hand it out.
const LOW_MEMORY: core::ops::Range<u64> = 0..0x10_0000;

pub const KERNEL_STACK_PAGES: u64 = 16;
pub const INTERRUPT_STACK_PAGES: u64 = 4;

struct BootMemory {
    /// `None` once `frames::init` has taken the rest of memory.
    frames: Option<BootFrames>,
    map: KernelMap,
}

static BOOT_MEMORY: Mutex<Option<BootMemory>> = Mutex::new(None);
/// Offset of the bootloader's direct map of physical memory.
static PHYS_OFFSET: AtomicU64 = AtomicU64::new(0);

/// Virtual address of physical `phys` in the direct map.
pub fn virt_of(phys: u64) -> u64 {
    phys + phys_offset()
}

pub fn phys_offset() -> u64 {
    PHYS_OFFSET.load(Ordering::Relaxed)
}

/// Total usable bytes the firmware reported.
pub fn usable_bytes(regions: &MemoryRegions) -> u64 {
    regions.iter().filter(|r| r.kind == MemoryRegionKind::Usable).map(|r| r.end - r.start).sum()
}

/// Whether `range` lies inside one usable region (so we may take it over).
pub fn is_usable(regions: &MemoryRegions, range: core::ops::Range<u64>) -> bool {
    regions.iter().any(|r| r.kind == MemoryRegionKind::Usable && r.start <= range.start && range.end <= r.end)
}

/// Sets up the boot frame allocator and the kernel page-table editor.
///
/// # Safety
/// Call once, on the BSP, with the bootloader's direct-map offset.
pub unsafe fn init(regions: &MemoryRegions, phys_offset: u64) {
    let usable = regions.iter().filter(|r| r.kind == MemoryRegionKind::Usable).map(|r| r.start..r.end);
    let frames = BootFrames::new(usable, &[LOW_MEMORY]).expect("memory map has too many regions");
    PHYS_OFFSET.store(phys_offset, Ordering::Relaxed);
    let (pml4, _) = Cr3::read();
    // SAFETY: per this function's contract; nothing else edits page tables
    // during boot.
    let map = unsafe { KernelMap::new(phys_offset, pml4.start_address().as_u64()) };
    *BOOT_MEMORY.lock() = Some(BootMemory { frames: Some(frames), map });
}

/// Hands what the boot allocator has left to `f` (the frame allocator's
/// set-up); afterwards new kernel mappings take frames from the allocator.
pub fn take_boot_frames<R>(f: impl FnOnce(BootFrames) -> R) -> R {
    let frames = BOOT_MEMORY.lock().as_mut().and_then(|m| m.frames.take()).expect("boot frames already taken");
    f(frames)
}

/// Maps a stack of `pages` pages (plus guard) and returns its top.
pub fn map_stack(pages: u64) -> Option<u64> {
    match with_kernel_map(|map, frames| map.map_stack(pages, frames)) {
        Ok(top) => Some(top),
        Err(e) => {
            log::error!("mapping a {pages}-page stack failed: {e:?}");
            None
        }
    }
}

/// Runs `f` with the kernel page-table editor and a frame source for new
/// page tables (the boot allocator before the hand-over, then the frame
/// allocator).
pub fn with_kernel_map<R>(f: impl FnOnce(&mut KernelMap, mm::kernel_map::FrameSource<'_>) -> R) -> R {
    let mut guard = BOOT_MEMORY.lock();
    let mem = guard.as_mut().expect("memory::init first");
    match mem.frames.as_mut() {
        Some(boot) => f(&mut mem.map, &mut || boot.alloc()),
        None => f(&mut mem.map, &mut || frames::get().alloc_page().ok()),
    }
}

/// The interrupt stacks for one CPU: its IST stacks and its ring-0 stack
/// for interrupts from ring 3, each below its own guard page.
pub fn map_interrupt_stacks() -> Option<InterruptStacks> {
    let mut ist = [0; IST_COUNT];
    for t in ist.iter_mut() {
        *t = map_stack(INTERRUPT_STACK_PAGES)?;
    }
    Some(InterruptStacks { ist, rsp0: map_stack(INTERRUPT_STACK_PAGES)? })
}
