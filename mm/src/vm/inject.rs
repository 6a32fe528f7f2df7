//! Fault injection: make the k-th frame or page-table allocation the
//! mapping code does on one CPU fail, so tests can sweep k over a whole
//! operation and prove that every failure point rolls back completely.

use core::sync::atomic::{AtomicU64, Ordering};

use crate::MAX_CPUS;

pub struct Inject {
    /// Per CPU: allocations left before the one that fails (0: off).
    countdown: [AtomicU64; MAX_CPUS],
    /// Per CPU: allocations made while armed (to know when a sweep ends).
    fired: [AtomicU64; MAX_CPUS],
}

impl Inject {
    pub const fn new() -> Inject {
        Inject { countdown: [const { AtomicU64::new(0) }; MAX_CPUS], fired: [const { AtomicU64::new(0) }; MAX_CPUS] }
    }

    /// The `k`-th allocation (1-based) on `cpu` from now on fails; 0 turns
    /// injection off.
    pub fn arm(&self, cpu: usize, k: u64) {
        self.fired[cpu].store(0, Ordering::Relaxed);
        self.countdown[cpu].store(k, Ordering::Relaxed);
    }

    /// Whether the armed failure has happened since `arm`.
    pub fn fired(&self, cpu: usize) -> bool {
        self.fired[cpu].load(Ordering::Relaxed) != 0
    }

    /// Called before each allocation on `cpu`: true if it must fail.
    pub fn should_fail(&self, cpu: usize) -> bool {
        let c = &self.countdown[cpu];
        match c.load(Ordering::Relaxed) {
            0 => false,
            1 => {
                c.store(0, Ordering::Relaxed);
                self.fired[cpu].store(1, Ordering::Relaxed);
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
