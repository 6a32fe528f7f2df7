//! Fault injection: make the k-th frame or page-table allocation the
//! mapping code does on one CPU fail, so tests can sweep k over a whole
//! operation and prove that every failure point rolls back completely.

use core::sync::atomic::{AtomicU64, Ordering};

use cpus::PerCpu;

/// One CPU's switch.
struct CpuInject {
    /// Allocations left before the one that fails (0: off).
    countdown: AtomicU64,
    /// Allocations made while armed (to know when a sweep ends).
    fired: AtomicU64,
}

/// Every CPU's switch, reached by index without a `CpuGuard`: a test arms
/// and reads CPUs by index (its own or another thread's), and an interrupt
/// handler never allocates through the mapping code, so nothing on the
/// same CPU interleaves with `should_fail`'s load and store.
pub struct Inject {
    cpus: PerCpu<CpuInject>,
}

impl Inject {
    pub const fn new() -> Inject {
        Inject { cpus: cpus::per_cpu![CpuInject { countdown: AtomicU64::new(0), fired: AtomicU64::new(0) }] }
    }

    /// The `k`-th allocation (1-based) on `cpu` from now on fails; 0 turns
    /// injection off.
    pub fn arm(&self, cpu: usize, k: u64) {
        let c = self.cpus.remote(cpu);
        c.fired.store(0, Ordering::Relaxed);
        c.countdown.store(k, Ordering::Relaxed);
    }

    /// Whether the armed failure has happened since `arm`.
    pub fn fired(&self, cpu: usize) -> bool {
        self.cpus.remote(cpu).fired.load(Ordering::Relaxed) != 0
    }

    /// Called before each allocation on `cpu`: true if it must fail.
    pub fn should_fail(&self, cpu: usize) -> bool {
        let me = self.cpus.unguarded(cpu);
        let c = &me.countdown;
        match c.load(Ordering::Relaxed) {
            0 => false,
            1 => {
                c.store(0, Ordering::Relaxed);
                me.fired.store(1, Ordering::Relaxed);
                true
            }
            n => {
                c.store(n - 1, Ordering::Relaxed);
                false
            }
        }
    }
}

impl Default for Inject {
    fn default() -> Self {
        Self::new()
    }
}
