//! How the virtio HAL finds a shared buffer's physical address: by
//! direct-map arithmetic (swap I/O may take no table lock), agreeing with
//! the page tables, and refusing what the direct map does not cover.

use alloc::boxed::Box;

use mm::vm::{KMemFlags, PAGE_SIZE};

use super::{ensure, fails, register, Test, TestResult};
use crate::virtio_hal::direct_phys;
use crate::{frames, memory, vm};

register!(Test::new("virtio_hal::shares_by_direct_map_arithmetic", shares_by_arithmetic));
fn shares_by_arithmetic() -> TestResult {
    let vm = vm::get();
    // A heap object, as the request header and status are.
    let object = Box::new([0u64; 4]);
    let at = object.as_ptr() as u64;
    let walked = vm.map_get(vm.kernel(), at).map_err(fails)?.phys.as_u64();
    ensure!(
        direct_phys(at, 32) == Some(walked),
        "heap object at {at:#x}: {:?}, tables say {walked:#x}",
        direct_phys(at, 32)
    );
    // A frame, as the page being paged is.
    let handle = frames::get().alloc_page().map_err(fails)?;
    let frame = handle.phys().as_u64();
    let got = direct_phys(memory::virt_of(frame), PAGE_SIZE);
    frames::get().free_page(handle).map_err(fails)?;
    ensure!(got == Some(frame), "frame {frame:#x} through the direct map: {got:?}");
    // Mapped memory outside the direct map is refused, not walked.
    let mapped = vm.k_mem_map(PAGE_SIZE, KMemFlags::RW | KMemFlags::LOCK).map_err(fails)?;
    let outside = direct_phys(mapped, 8);
    vm.k_mem_unmap(mapped, PAGE_SIZE).map_err(fails)?;
    ensure!(outside.is_none(), "k_mem_map page {mapped:#x} shared as {outside:?}");
    // So is a buffer that runs off the end of the window.
    let end = memory::phys_offset() + memory::direct_map().len();
    ensure!(direct_phys(end - 8, 16).is_none(), "a buffer across the direct map's end was shared");
    ensure!(direct_phys(end - 8, 8).is_some(), "the direct map's last bytes were refused");
    Ok(())
}
