//! What the memory manager's per-CPU state (the frame allocator's
//! caches, the heap) needs from the CPU it runs on, implemented by the
//! kernel with `smp` (and by threads in host tests). The page-table code
//! has its own, wider `vm::VmPlatform`.

use cpus::{CpuGuard, CpuSet};

/// CPUs that did not reach a quiescent point within the platform's bound
/// (`CpuPlatform::quiesce`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NotQuiesced {
    pub cpus: CpuSet,
}

pub trait CpuPlatform: Sync {
    /// Index of the running CPU, `0..MAX_CPUS`. Must not change while the
    /// caller runs (the kernel never migrates).
    fn cpu_index(&self) -> usize;

    /// Runs `f` with interrupts masked on this CPU, so an interrupt handler
    /// cannot re-enter per-CPU state `f` holds; the guard proves it and
    /// names this CPU (`PerCpu::local`).
    fn without_interrupts<R>(&self, f: impl FnOnce(&CpuGuard) -> R) -> R;

    /// Returns once every CPU in `targets` (the caller excluded) has been,
    /// after this call began, at a point outside every `without_interrupts`
    /// section of its own, or waiting in a `quiesce` of its own (which
    /// answers other CPUs' quiesces as the kernel's cross-call wait answers
    /// cross-calls). Everything a target wrote before that point is visible
    /// to the caller afterwards, and everything the caller wrote before the
    /// call is visible to the target's code after that point.
    ///
    /// Bounded: the targets that did not get there in time are the error.
    /// The caller must not itself be inside an owner access of a
    /// `owner_cell::OwnerCell` (it would let a remote in while it runs).
    /// Kernel: an empty cross-call (`smp::ipi::cross_call`, 5 s).
    fn quiesce(&self, targets: CpuSet) -> Result<(), NotQuiesced>;
}
