//! The kernel side of the benchmarks: `bench::Machine` over the kernel's
//! frame allocator, virtual memory, CPU runner, TSC and serial records.
//! The word accessors are the only `unsafe` here (the tracer's window
//! marks are in `trace_mark`).

use core::sync::atomic::{AtomicU64, Ordering};

use bench::{Clock, Machine, Mark};
use mm::vm::{Vm, KERNEL_REGION_AREA, KERNEL_SEED_AREA, USER_END, USER_START};

use crate::frames::{self, Frames, KernelPlatform};
use crate::vm::KernelVm;
use crate::{logger, vm, workers};

pub struct KernelMachine {
    /// Whether records go to the host (off for the in-kernel smoke test,
    /// whose run is judged by test records only).
    send_records: bool,
    /// Whether `Bench` records are kept in `CAPTURED` (for in-kernel tests
    /// that check a benchmark's counters; test image only).
    #[cfg(feature = "test-hooks")]
    capture: bool,
}

/// The machine `mode=bench` and `mode=stress` use.
pub static REPORTING: KernelMachine = KernelMachine {
    send_records: true,
    #[cfg(feature = "test-hooks")]
    capture: false,
};
/// The machine the in-kernel tests use: logs, but sends no bench records.
#[cfg(feature = "test-hooks")]
pub static QUIET: KernelMachine = KernelMachine { send_records: false, capture: false };
/// Like `QUIET`, but keeps each `Bench` record's figures in `CAPTURED`.
#[cfg(feature = "test-hooks")]
pub static CAPTURING: KernelMachine = KernelMachine { send_records: false, capture: true };

/// One `Bench` record as `CAPTURING` kept it.
#[cfg(feature = "test-hooks")]
pub struct Captured {
    pub bench: alloc::string::String,
    pub variant: alloc::string::String,
    pub ops: u64,
    pub counters: alloc::vec::Vec<(alloc::string::String, u64)>,
}

#[cfg(feature = "test-hooks")]
impl Captured {
    /// Counter `name`, 0 if the record had none.
    pub fn counter(&self, name: &str) -> u64 {
        self.counters.iter().find(|(n, _)| n == name).map_or(0, |(_, v)| *v)
    }
}

#[cfg(feature = "test-hooks")]
pub static CAPTURED: spin::Mutex<alloc::vec::Vec<Captured>> = spin::Mutex::new(alloc::vec::Vec::new());

/// Addresses benchmark memory can be at: the kernel's seed and `k_mem_map`
/// areas, and the lower half (user spaces, mapped supervisor-only).
fn benchmark_memory(virt: u64) -> bool {
    let in_kernel = (KERNEL_SEED_AREA.start..KERNEL_REGION_AREA.end).contains(&virt);
    let in_user = (USER_START..USER_END).contains(&virt);
    (in_kernel || in_user) && virt.is_multiple_of(8)
}

impl Clock for KernelMachine {
    fn now_ns(&self) -> u64 {
        drivers::tsc::now_ns()
    }
}

impl Machine for KernelMachine {
    type Phys = KernelPlatform;
    type VmP = KernelVm;

    fn frames(&self) -> &'static Frames {
        frames::get()
    }

    fn vm(&self) -> &'static Vm<KernelVm> {
        vm::get()
    }

    fn cpu(&self) -> usize {
        smp::percpu::current_index()
    }

    fn cpus(&self) -> usize {
        smp::percpu::online_count()
    }

    fn run_on_all(&self, f: fn(usize), timeout_ns: u64) -> Result<(), smp::CpuSet> {
        workers::run_on_all(f, timeout_ns).map_err(|e| e.cpus)
    }

    /// No `PAUSE` (under TCG it retakes QEMU's big lock, which the CPUs
    /// waited for need): the callers decide when to nap (`Team`'s
    /// barrier after a while; the tlb workload's readers, which must stay
    /// awake, never).
    fn wait_step(&self) {
        smp::ipi::service_pending();
    }

    fn nap(&self, us: u32) {
        crate::nap::nap(us);
    }

    fn doze(&self, us: u32) {
        smp::ipi::doze(us);
    }

    fn ipi_round_trip(&self, cpu: usize) -> Result<(), smp::CpuSet> {
        smp::ipi::cross_call(smp::CpuSet::single(cpu), &|| {}).map_err(|e| e.cpus())
    }

    fn emit(&self, record: &record::GuestRecord) {
        if self.send_records {
            logger::emit(record);
        }
        #[cfg(feature = "test-hooks")]
        if let (true, record::Record::Bench { bench, variant, ops, counters, .. }) = (self.capture, record) {
            let counters = counters.0.iter().map(|(n, v)| (alloc::string::String::from(*n), *v)).collect();
            CAPTURED.lock().push(Captured { bench: (*bench).into(), variant: (*variant).into(), ops: *ops, counters });
        }
    }

    fn tlb_counts(&self, cpu: usize) -> record::TlbSnapshot {
        smp::tlb::counters(cpu)
    }

    fn stores(&self) -> alloc::vec::Vec<&'static str> {
        crate::paging::stores()
    }

    fn use_store(&self, name: &str) -> Result<(), mm::paging::StoreError> {
        crate::paging::use_store(name)
    }

    fn heap_stats(&self) -> mm::heap::HeapStats {
        crate::heap::HEAP.stats()
    }

    fn read_word(&self, virt: u64) -> u64 {
        word(virt).load(Ordering::Relaxed)
    }

    fn write_word(&self, virt: u64, value: u64) {
        word(virt).store(value, Ordering::Relaxed)
    }

    fn trace_mark(&self, mark: Mark, seq: u32) {
        crate::trace_mark::mark(mark == Mark::Begin, seq);
    }
}

/// The word at `virt` as an atomic (CPUs may touch one word at once).
fn word(virt: u64) -> &'static AtomicU64 {
    assert!(benchmark_memory(virt), "bench access to {virt:#x} outside benchmark memory");
    // The check cannot tell a benchmark's mapping from another user of
    // those areas; the benchmarks only pass addresses of mappings they made.
    // SAFETY: aligned, and in the seed, `k_mem_map` or lower-half areas
    // (checked above), never the kernel image, stacks or heap; an unmapped
    // page there faults and the handler reports it.
    unsafe { AtomicU64::from_ptr(virt as *mut u64) }
}
