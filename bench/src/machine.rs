//! What the benchmarks need from the kernel. The kernel implements this
//! with `smp` and its hardware modules; everything in this crate is safe
//! code on top of it.

use cpus::CpuSet;
use mm::phys::PhysAllocator;
use mm::platform::CpuPlatform;
use mm::vm::{Vm, VmPlatform};
use record::{GuestRecord, TlbSnapshot};

/// The time source: nanoseconds since boot. Separate from [`Machine`] so
/// the timing harness can be tested on the host with a counting clock.
pub trait Clock {
    fn now_ns(&self) -> u64;
}

pub trait Machine: Clock + Sync + 'static {
    type Phys: CpuPlatform + 'static;
    type VmP: VmPlatform + 'static;

    fn frames(&self) -> &'static PhysAllocator<'static, Self::Phys>;
    fn vm(&self) -> &'static Vm<Self::VmP>;
    /// Index of the running CPU.
    fn cpu(&self) -> usize;
    /// CPUs online, indices `0..cpus()`.
    fn cpus(&self) -> usize;
    /// Runs `f(cpu)` on every online CPU at once, the caller (CPU 0)
    /// included, and waits up to `timeout_ns`; `Err` holds the CPUs that
    /// did not finish.
    fn run_on_all(&self, f: fn(usize), timeout_ns: u64) -> Result<(), CpuSet>;
    /// One step of a spin wait on another CPU: answers pending shootdowns
    /// and cross-calls so the CPU waited for can finish.
    fn wait_step(&self);
    /// Sleeps this CPU for about `us` microseconds or until an interrupt
    /// (an IPI is answered meanwhile), giving its host core back under
    /// QEMU.
    fn nap(&self, us: u32);
    /// `nap` that stays on the running space: the CPU keeps its
    /// translations and stays a shootdown target (a nap may go lazy:
    /// switch to the kernel root and leave the space's active set).
    fn doze(&self, us: u32);
    /// A cross-call to `cpu` that runs nothing and returns once `cpu`
    /// answered (bounded); `Err` holds the CPUs that did not.
    fn ipi_round_trip(&self, cpu: usize) -> Result<(), CpuSet>;
    /// Sends a record to the host.
    fn emit(&self, record: &GuestRecord);
    fn tlb_counts(&self, cpu: usize) -> TlbSnapshot;
    /// The backing stores demand paging can use, the default first.
    fn stores(&self) -> alloc::vec::Vec<&'static str>;
    /// Moves paging to store `name`; refused while the current one holds
    /// pages.
    fn use_store(&self, name: &str) -> Result<(), mm::paging::StoreError>;
    /// The kernel heap's bytes in use and pages held (the heap takes and
    /// gives back frames behind a benchmark's back).
    fn heap_stats(&self) -> mm::heap::HeapStats;
    /// Reads/writes a word of memory the benchmark itself mapped (and keeps
    /// mapped, or on demand) in the kernel's mapping area or in a user space
    /// active on this CPU. The kernel refuses addresses outside those areas.
    fn read_word(&self, virt: u64) -> u64;
    fn write_word(&self, virt: u64, value: u64);
    /// Marks the begin or end of measured repetition `seq` (the index its
    /// Bench record will have in this boot) for the sharing tracer
    /// (`bench --trace`); costs nothing measurable when nobody traces.
    fn trace_mark(&self, mark: Mark, seq: u32);
}

/// Which end of a measured repetition a trace mark is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mark {
    Begin,
    End,
}

/// Free frames plus the frames the heap holds: what a benchmark that gives
/// back everything it took must leave unchanged.
pub fn frames_accounted<M: Machine>(m: &M) -> u64 {
    m.frames().free_bytes() / mm::PAGE_SIZE + m.heap_stats().pages
}

/// `frames_accounted` plus the page tables of the kernel's region area,
/// for workloads that map kernel regions (concurrent unmaps may leave an
/// emptied table in place for reuse).
pub fn frame_ledger<M: Machine>(m: &M) -> u64 {
    // Called at quiescent points, where nobody holds the table lock.
    let tables = m.vm().region_table_frames().unwrap_or_else(|e| panic!("counting region tables: {e:?}"));
    frames_accounted(m) + tables
}
