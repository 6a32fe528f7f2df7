//! What the memory manager's per-CPU state (the frame allocator's
//! caches, the heap) needs from the CPU it runs on, implemented by the
//! kernel with `smp` (and by threads in host tests). The page-table code
//! has its own, wider `vm::VmPlatform`.

pub trait CpuPlatform: Sync {
    /// Index of the running CPU, `0..MAX_CPUS`. Must not change while the
    /// caller runs (the kernel never migrates).
    fn cpu_index(&self) -> usize;

    /// Runs `f` with interrupts masked on this CPU, so an interrupt handler
    /// cannot re-enter per-CPU state `f` holds.
    fn without_interrupts<R>(&self, f: impl FnOnce() -> R) -> R;
}
