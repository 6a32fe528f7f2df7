//! Boot-time memory: the usable regions from the bootloader, the boot frame
//! allocator over them until the real frame allocator takes over, and CPU
//! stacks mapped with guard pages.

use core::sync::atomic::{AtomicU64, Ordering};

use bootloader_api::info::{MemoryRegionKind, MemoryRegions};
use mm::boot_frames::BootFrames;
use mm::frame::{Frame, PhysAddr};
use mm::vm::DirectWindow;
use spin::Mutex;

use crate::gdt::{InterruptStacks, IST_COUNT};
use crate::vm;

/// Below 1 MiB: real-mode IVT, BIOS data, EBDA, the AP trampoline
/// (`smp::bringup::TRAMPOLINE_RESERVED`). The bootloader calls some of it
/// usable; no allocator may hand it out.
const LOW_MEMORY: core::ops::Range<PhysAddr> = PhysAddr::new(0)..PhysAddr::new(0x10_0000);

pub const KERNEL_STACK_PAGES: u64 = 16;
pub const INTERRUPT_STACK_PAGES: u64 = 4;

/// `None` once `frames::init` has taken the rest of memory.
static BOOT_FRAMES: Mutex<Option<BootFrames>> = Mutex::new(None);
static WINDOW: spin::Once<DirectWindow> = spin::Once::new();

/// The bootloader maps physical memory up to the end of the highest
/// region in its memory map, and at least the first 4 GiB.
const DIRECT_MAP_MIN: u64 = 4 << 30;

/// The direct map, bounds-checked: `virtualize(phys)` and `phys(virt)`.
pub fn direct_map() -> &'static DirectWindow {
    WINDOW.get().expect("memory::init first")
}
/// Offset of the bootloader's direct map of physical memory.
static PHYS_OFFSET: AtomicU64 = AtomicU64::new(0);

/// Virtual address of physical `phys` in the direct map.
pub fn virt_of(phys: u64) -> u64 {
    phys + phys_offset()
}

pub fn phys_offset() -> u64 {
    PHYS_OFFSET.load(Ordering::Relaxed)
}

/// Fills frame `phys` with the word `value`.
///
/// # Safety
/// The caller owns the frame (it may hold it by address only, as one frame
/// of an `alloc_contiguous` run): nobody else reads or writes it meanwhile
/// and no Rust reference into it is alive.
pub unsafe fn fill_words(phys: PhysAddr, value: u64) {
    let p = virt_of(phys.as_u64()) as *mut u64;
    for i in 0..(mm::PAGE_SIZE / 8) as usize {
        // SAFETY: the caller owns the frame (contract) and the direct map
        // covers it; `i` stays inside the page.
        unsafe { p.add(i).write_volatile(value) };
    }
}

/// Fills `frame` with the word `value` (the test suites' stamps).
#[cfg(feature = "test-hooks")]
pub fn fill_frame_words(frame: &mut Frame, value: u64) {
    // SAFETY: holding the handle mutably, the caller owns the frame.
    unsafe { fill_words(frame.phys(), value) }
}

/// The bytes of `frame`, through the direct map.
pub fn frame_bytes(frame: &Frame) -> &[u8] {
    // SAFETY: the direct map covers every frame; the caller owns the frame
    // (it holds the handle), so only shared access reaches it while the
    // borrow of the handle lasts.
    unsafe { core::slice::from_raw_parts(virt_of(frame.phys().as_u64()) as *const u8, mm::PAGE_SIZE as usize) }
}

/// The bytes of `frame`, writable, through the direct map.
pub fn frame_bytes_mut(frame: &mut Frame) -> &mut [u8] {
    // SAFETY: as for `frame_bytes`; the handle is borrowed mutably, so
    // nothing else reaches the frame while the slice lives.
    unsafe { core::slice::from_raw_parts_mut(virt_of(frame.phys().as_u64()) as *mut u8, mm::PAGE_SIZE as usize) }
}

/// Total usable bytes the firmware reported.
pub fn usable_bytes(regions: &MemoryRegions) -> u64 {
    regions.iter().filter(|r| r.kind == MemoryRegionKind::Usable).map(|r| r.end - r.start).sum()
}

/// Whether `range` lies inside one usable region (so we may take it over).
pub fn is_usable(regions: &MemoryRegions, range: core::ops::Range<PhysAddr>) -> bool {
    let (start, end) = (range.start.as_u64(), range.end.as_u64());
    regions.iter().any(|r| r.kind == MemoryRegionKind::Usable && r.start <= start && end <= r.end)
}

/// Sets up the boot frame allocator and adopts the running page tables as
/// the kernel address space.
///
/// # Safety
/// Call once, on the BSP, with the bootloader's direct-map offset.
pub unsafe fn init(regions: &MemoryRegions, phys_offset: u64) {
    let usable = regions
        .iter()
        .filter(|r| r.kind == MemoryRegionKind::Usable)
        .map(|r| PhysAddr::new(r.start)..PhysAddr::new(r.end));
    let frames = BootFrames::new(usable, &[LOW_MEMORY]).expect("memory map has too many regions");
    PHYS_OFFSET.store(phys_offset, Ordering::Relaxed);
    let top = regions.iter().map(|r| r.end).max().unwrap_or(0).max(DIRECT_MAP_MIN);
    WINDOW.call_once(|| DirectWindow::new(phys_offset, top).expect("direct map wraps"));
    *BOOT_FRAMES.lock() = Some(frames);
    // SAFETY: once, on the BSP, with the direct-map offset (contract).
    unsafe { vm::init(phys_offset) };
}

/// A frame from the boot allocator, before the frame allocator takes over.
pub fn boot_frame() -> Option<Frame> {
    let phys = BOOT_FRAMES.lock().as_mut()?.alloc()?;
    // SAFETY: the boot allocator never hands out a frame twice, and it
    // hands this one to nobody but the caller.
    Some(unsafe { Frame::from_phys(phys) })
}

/// Hands what the boot allocator has left to `f` (the frame allocator's
/// set-up); afterwards new kernel mappings take frames from the allocator.
pub fn take_boot_frames<R>(f: impl FnOnce(BootFrames) -> R) -> R {
    let frames = BOOT_FRAMES.lock().take().expect("boot frames already taken");
    f(frames)
}

/// Maps a stack of `pages` pages (plus guard) and returns its top.
pub fn map_stack(pages: u64) -> Option<u64> {
    match vm::get().map_stack(pages) {
        Ok(top) => Some(top),
        Err(e) => {
            log::error!("mapping a {pages}-page stack failed: {e:?}");
            None
        }
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
