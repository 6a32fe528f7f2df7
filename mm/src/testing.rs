//! Test platform: each host (or loom) thread plays one CPU, chosen with
//! `on_cpu`; there are no interrupts to mask.

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

    fn without_interrupts<R>(&self, f: impl FnOnce() -> R) -> R {
        f()
    }
}

/// Makes the calling thread CPU `cpu`.
pub fn on_cpu(cpu: usize) {
    CPU.with(|c| c.set(cpu));
}
