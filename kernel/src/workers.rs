//! Running kernel code on every CPU at once, in thread context.
//!
//! APs sit in an idle loop (`ap_main`). `run_on_all` posts a function to
//! each AP, wakes them with an IPI, runs it on the BSP too and waits,
//! bounded, until every AP reports done. Tests and benchmarks use this;
//! cross-calls (interrupt context, must not nest) are for short work.

use core::sync::atomic::{AtomicUsize, Ordering};

use cpus::{AtomicCpuSet, CpuSet, PerCpu};
use drivers::tsc;
use smp::percpu;
use x86_64::instructions::interrupts;

pub const WAKE_VECTOR: u8 = 0xF1;
/// Plain loads of the busy set before the waiting CPU starts napping. Few:
/// the CPUs still busy may be measuring, and every load after one of them
/// left the set (a write) is a conflicting access inside their window
/// (4096 loads were 0.2-0.4 of the sharing tracer's conflicting accesses
/// per `frames.pair` op at 8 CPUs). A nap ends at the next IPI or timer.
const SPIN_STEPS: u32 = 64;
/// One nap of the waiting CPU (its timer or any IPI ends it sooner).
const NAP_US: u32 = 20;

/// Per CPU: the job posted to it (a `fn(usize)`, 0 for none). The BSP posts
/// (`remote`), the CPU takes its own with interrupts off (`local`).
static JOB: PerCpu<AtomicUsize> = cpus::per_cpu![AtomicUsize::new(0)];
/// CPUs given a job that they have not finished. A CPU that overran an
/// earlier run's bound stays here, and no new run starts on it.
static BUSY: AtomicCpuSet = AtomicCpuSet::new(CpuSet::EMPTY);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NotFinished {
    pub cpus: CpuSet,
}

/// Idle loop of every AP once it is online.
pub fn ap_main() -> ! {
    let me = percpu::current_index();
    loop {
        // Check for work with interrupts off, then `sti; hlt` atomically:
        // a wake IPI that arrives after the check still ends the `hlt`.
        interrupts::disable();
        let job = percpu::with_guard(|g| JOB.local(g).swap(0, Ordering::Acquire));
        if job == 0 {
            interrupts::enable_and_hlt();
            continue;
        }
        interrupts::enable();
        // SAFETY: only `run_on_all` stores into JOB, always a `fn(usize)`.
        let f = unsafe { core::mem::transmute::<usize, fn(usize)>(job) };
        f(me);
        BUSY.remove(me, Ordering::Release);
    }
}

/// Runs `f(cpu_index)` on every online CPU at once (the caller, CPU 0,
/// included) and waits up to `timeout_ns` for the others. Refuses to start
/// while a CPU is still running an earlier job.
pub fn run_on_all(f: fn(usize), timeout_ns: u64) -> Result<(), NotFinished> {
    let me = percpu::current_index();
    let others = percpu::online_set().without(me);
    let still_busy = BUSY.load(Ordering::Acquire).intersect(others);
    if !still_busy.is_empty() {
        return Err(NotFinished { cpus: still_busy });
    }
    BUSY.insert_all(others, Ordering::AcqRel);
    for cpu in others.iter() {
        JOB.remote(cpu).store(f as *const () as usize, Ordering::Release);
    }
    smp::ipi::send_set(others, WAKE_VECTOR);
    f(me);
    let start = tsc::now_ns();
    let mut steps = 0u32;
    loop {
        let busy = BUSY.load(Ordering::Acquire).intersect(others);
        if busy.is_empty() {
            return Ok(());
        }
        // The others may still be measuring: under TCG a clock read and a
        // `PAUSE` both take locks their vCPUs need, so spin with neither
        // for a while, then nap (an IPI or the timer ends the nap).
        steps += 1;
        if steps < SPIN_STEPS {
            continue;
        }
        let now = tsc::now_ns();
        if now - start > timeout_ns {
            return Err(NotFinished { cpus: busy });
        }
        crate::nap::nap(NAP_US);
    }
}
