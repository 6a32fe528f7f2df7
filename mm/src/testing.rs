//! Test platform: each host (or loom) thread plays one CPU, chosen with
//! `on_cpu`; there are no interrupts to mask.
// Host tests map and free frames by address: host memory is a vector of
// atomics, so a wrong address is test data, never undefined behaviour.
#![allow(unsafe_code)]

use cpus::CpuGuard;

use crate::platform::CpuPlatform;

#[cfg(not(loom))]
std::thread_local! {
    static CPU: core::cell::Cell<usize> = const { core::cell::Cell::new(0) };
}
#[cfg(loom)]
loom::thread_local! {
    static CPU: core::cell::Cell<usize> = core::cell::Cell::new(0);
}

pub struct Threads;

impl CpuPlatform for Threads {
    fn cpu_index(&self) -> usize {
        CPU.with(|c| c.get())
    }

    fn without_interrupts<R>(&self, f: impl FnOnce(&CpuGuard) -> R) -> R {
        f(&CpuGuard::host_thread(self.cpu_index()))
    }
}

/// Makes the calling thread CPU `cpu`.
pub fn on_cpu(cpu: usize) {
    CPU.with(|c| c.set(cpu));
}

/// The allocator by address, for tests that keep frames as numbers (to
/// compare, sort or stamp them, to pass them between threads, or to free
/// one twice on purpose): the frame database's raw path.
pub trait ByAddress {
    fn alloc_addr(&self) -> Result<u64, crate::frame::FrameError>;
    fn free_addr(&self, phys: u64) -> Result<(), crate::frame::FrameError>;
    // The loom models take single frames only.
    #[cfg(not(loom))]
    fn alloc_run(&self, count: u64) -> Result<u64, crate::frame::FrameError>;
    #[cfg(not(loom))]
    fn free_run(&self, phys: u64, count: u64) -> Result<(), crate::frame::FrameError>;
}

impl<P: CpuPlatform> ByAddress for crate::phys::PhysAllocator<'_, P> {
    fn alloc_addr(&self) -> Result<u64, crate::frame::FrameError> {
        self.alloc_page().map(|f| f.into_phys().as_u64())
    }

    fn free_addr(&self, phys: u64) -> Result<(), crate::frame::FrameError> {
        // SAFETY: the allocator's host tests use no frame memory at all
        // (the frame database and links are separate vectors), so a wrong
        // free is only ever the allocator error the test looks for.
        unsafe { self.free_raw(x86_64::PhysAddr::new(phys)) }
    }

    #[cfg(not(loom))]
    fn alloc_run(&self, count: u64) -> Result<u64, crate::frame::FrameError> {
        self.alloc_contiguous(count).map(|p| p.as_u64())
    }

    #[cfg(not(loom))]
    fn free_run(&self, phys: u64, count: u64) -> Result<(), crate::frame::FrameError> {
        // SAFETY: as for `free_addr`.
        unsafe { self.free_contiguous(x86_64::PhysAddr::new(phys), count) }
    }
}
