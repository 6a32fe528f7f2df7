//! A count kept as one global word plus a signed delta per CPU, folded
//! into the global word a batch at a time (Linux's vmstat and
//! `percpu_counter`): the CPU that counts writes only its own delta, with
//! a plain load and store, and touches the shared word once per `batch`
//! changes of its delta.
//!
//! Protocol (loom model: `batched/loom_tests.rs`):
//! - `add(cpu, n)`, by CPU `cpu` only, with nothing else on that CPU
//!   counting in between (interrupts off, or no handler counts):
//!   `v = delta + n`; if `|v| >= batch`, `global.fetch_add(v)` and then
//!   `delta.store(0, Release)`; else `delta.store(v)`. Afterwards
//!   `|delta| < batch`. The first `add` of a CPU sets its bit in `users`
//!   (before it stores a delta), so readers visit only CPUs that counted.
//! - `approx_for(cpu)` is `global + delta[cpu]`: it lags the true count
//!   by less than `batch` per other CPU (`slack`).
//! - `sum()` reads `users`, then every user's delta (Acquire), then the
//!   global word. A delta seen as 0 after a fold comes with that fold's
//!   `fetch_add` (Release store, Acquire load); a delta seen before a
//!   fold may be counted again in the global word. So `sum` never misses
//!   a change finished before it began; it may count a fold's amount
//!   twice (at most a batch per CPU folding during the call). At a
//!   quiescent point it is exact.
//! - `at_least(cpu, limit)` answers from `approx_for` when that is more
//!   than `slack` away from the limit, and from `sum` otherwise: far from
//!   the limit no other CPU's line is read; near it the answer is as
//!   exact as a single shared word would give (a check-then-act window
//!   per CPU, as before), erring only towards "at the limit".

use crate::sync::{AtomicI64, Ordering};
use cpus::{AtomicCpuSet, CachePadded, CpuSet, PerCpu, MAX_CPUS};

pub struct BatchedCount<const N: usize = MAX_CPUS> {
    /// On a line of its own: a fold writes it, and whatever sits next to
    /// the count (the pager's read-mostly fields) must not be invalidated
    /// by that (`fault.anon` at 8 CPUs: 7 conflicting accesses per fault
    /// on the line this shared with them).
    global: CachePadded<AtomicI64>,
    /// The CPUs that ever counted: `sum` and `slack` look at these. It
    /// only grows, so a word-by-word load misses only CPUs whose first
    /// `add` is in flight during the read.
    users: AtomicCpuSet,
    deltas: PerCpu<AtomicI64, N>,
    batch: i64,
}

impl<const N: usize> BatchedCount<N> {
    /// A zero count whose CPUs fold every `batch` (at least 1) changes.
    pub fn new(batch: u32) -> Self {
        assert!(N <= MAX_CPUS, "users holds MAX_CPUS");
        BatchedCount {
            global: CachePadded::new(AtomicI64::new(0)),
            users: AtomicCpuSet::new(CpuSet::EMPTY),
            deltas: PerCpu::from_fn(|_| AtomicI64::new(0)),
            batch: i64::from(batch.max(1)),
        }
    }

    /// Adds `n` on CPU `cpu`. Only CPU `cpu` calls it, and nothing else on
    /// that CPU adds to this count until it returns (see the module
    /// documentation).
    pub fn add(&self, cpu: usize, n: i64) {
        if !self.users.contains(cpu, Ordering::Relaxed) {
            // Once per CPU ever. Release: a reader that sees the bit sees
            // what this CPU stored before, and its deltas from now on are
            // read by `sum` (one that misses the bit misses only changes
            // in flight during its call).
            self.users.insert(cpu, Ordering::Release);
        }
        let delta = self.deltas.unguarded(cpu);
        let v = delta.load(Ordering::Relaxed) + n;
        if v >= self.batch || v <= -self.batch {
            // Fold first, then clear: a reader that sees the cleared delta
            // sees the fold (never neither, maybe both).
            self.global.fetch_add(v, Ordering::Release);
            delta.store(0, Ordering::Release);
        } else {
            delta.store(v, Ordering::Release);
        }
    }

    /// CPUs that have counted.
    fn user_count(&self) -> i64 {
        self.users().len() as i64
    }

    /// `users` (loom's atomics in the models, so they see its accesses).
    fn users(&self) -> CpuSet {
        self.users.load(Ordering::Acquire)
    }

    /// Most the global word plus one CPU's delta can differ from the true
    /// count by: less than a batch per other CPU that counts.
    pub fn slack(&self) -> i64 {
        self.user_count() * (self.batch - 1)
    }

    /// The global word plus CPU `cpu`'s own delta: no other CPU's line is
    /// read. Within `slack` of the true count.
    pub fn approx_for(&self, cpu: usize) -> i64 {
        self.global.load(Ordering::Relaxed) + self.deltas.remote(cpu).load(Ordering::Relaxed)
    }

    /// The count summed over every CPU that counted: exact at a quiescent
    /// point; while CPUs count, never below what was counted before the
    /// call began and at most a batch per folding CPU above.
    pub fn sum(&self) -> i64 {
        let deltas: i64 = self.users().iter().map(|cpu| self.deltas.remote(cpu).load(Ordering::Acquire)).sum();
        deltas + self.global.load(Ordering::Acquire)
    }

    /// Whether the count is at least `limit`, asked by CPU `cpu`: from
    /// `approx_for` when that is further than `slack` from `limit`, else
    /// from `sum`.
    pub fn at_least(&self, cpu: usize, limit: u64) -> bool {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let (est, slack) = (self.approx_for(cpu), self.slack());
        if est.saturating_add(slack) < limit {
            return false;
        }
        if est.saturating_sub(slack) >= limit {
            return true;
        }
        self.sum() >= limit
    }

    /// Address of the folded word (tests: it has a line of its own).
    #[cfg(test)]
    pub(crate) fn global_addr(&self) -> usize {
        &*self.global as *const AtomicI64 as usize
    }

    /// CPU `cpu`'s delta (tests and reports).
    pub fn delta(&self, cpu: usize) -> i64 {
        self.deltas.remote(cpu).load(Ordering::Relaxed)
    }

    /// The global word alone (tests and reports).
    pub fn folded(&self) -> i64 {
        self.global.load(Ordering::Relaxed)
    }
}

#[cfg(all(test, loom))]
mod loom_tests;
#[cfg(all(test, not(loom)))]
mod tests;
