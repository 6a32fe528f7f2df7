//! `CpuGuard`: proof, for as long as it lives, that interrupts are off on
//! the running CPU, and which CPU that is.
//!
//! Holding one is what entitles code to the running CPU's element of a
//! `PerCpu` (`PerCpu::local`): with interrupts off, no interrupt handler on
//! this CPU can run in the middle of what the code does with it, and since
//! the kernel never migrates, the index stays the running CPU's.

use core::marker::PhantomData;

/// See the module documentation. Not `Send` or `Sync`: it speaks for the
/// CPU that made it, so it must not reach another one.
#[derive(Debug)]
pub struct CpuGuard {
    cpu: usize,
    _not_send: PhantomData<*const ()>,
}

impl CpuGuard {
    /// A guard for CPU `cpu`.
    ///
    /// # Safety
    /// Interrupts must be off on the running CPU for the guard's whole
    /// life, and `cpu` must be the running CPU's index. The constructors
    /// that really disable interrupts (smp's `without_interrupts`) call
    /// this; code that `PerCpu` elements rely on for exclusive access may
    /// take a guard as proof of both.
    // `unsafe` for its contract only: the body does nothing unsafe, but
    // callers' soundness may rest on what a guard claims.
    #[allow(unsafe_code)]
    pub const unsafe fn new_unchecked(cpu: usize) -> CpuGuard {
        CpuGuard { cpu, _not_send: PhantomData }
    }

    /// A guard for a host thread standing in for CPU `cpu` (mm's and smp's
    /// host tests run threads as CPUs). Nothing interrupts a host thread
    /// the way an interrupt handler preempts kernel code, so only the index
    /// is the caller's word: the thread must be the one that plays `cpu`.
    #[cfg(not(target_os = "none"))]
    pub const fn host_thread(cpu: usize) -> CpuGuard {
        CpuGuard { cpu, _not_send: PhantomData }
    }

    /// Index of the CPU the guard was made on.
    pub const fn cpu(&self) -> usize {
        self.cpu
    }
}
