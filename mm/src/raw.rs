//! Raw frame access: turning boot-allocated physical memory into Rust
//! slices through the direct map. The frame allocator's own tables (frame
//! database, buddy links, depot) live in memory carved this way, since
//! nothing else can allocate before the allocator exists.

use crate::boot_frames::BootFrames;
use crate::PAGE_SIZE;

/// Carves room for `count` values of `T` from `frames`, writes `init()`
/// into each and returns them as a slice that lives forever.
///
/// # Safety
/// `phys_offset` must be the offset of a direct map that covers the frames
/// `frames` hands out, and those frames must not be used for anything else
/// (which `BootFrames` guarantees: it never hands out a frame twice).
pub unsafe fn carve<T>(
    frames: &mut BootFrames,
    phys_offset: u64,
    count: usize,
    mut init: impl FnMut() -> T,
) -> Option<&'static mut [T]> {
    assert!(core::mem::align_of::<T>() as u64 <= PAGE_SIZE);
    let bytes = (count * core::mem::size_of::<T>()) as u64;
    let pages = bytes.div_ceil(PAGE_SIZE).max(1);
    let phys = frames.alloc_contiguous(pages)?;
    let ptr = (phys.as_u64() + phys_offset) as *mut T;
    for i in 0..count {
        // SAFETY: the run is `pages` fresh frames mapped at `ptr` (contract),
        // page-aligned so aligned for `T`, and `i < count` stays inside it.
        unsafe { ptr.add(i).write(init()) };
    }
    // SAFETY: every element was initialised above; the memory is ours alone
    // for the rest of the kernel's life.
    Some(unsafe { core::slice::from_raw_parts_mut(ptr, count) })
}
