//! Per-CPU counts of TLB and IPI work: shootdowns started, the CPUs they
//! asked (targets), IPIs sent (ICR writes: a broadcast shorthand is one),
//! pages invalidated one by one and full flushes.
//!
//! Each CPU writes only its own block, which fills cache lines of its own
//! (a `PerCpu` element), with a plain load and store: counting adds no
//! locked instruction and no line two CPUs write. Flushes and IPIs are
//! counted with interrupts off (inside a cross-call, the cross-call
//! handler, or the local-APIC section), which their `CpuGuard` proves, so
//! an interrupt handler never interleaves with a count on the same CPU;
//! shootdowns are counted without one, as only the CPU's own thread of
//! control ever counts them (no interrupt handler starts a shootdown).
//! The decisions the counts follow (`flush_kind`, `use_shorthand`) live
//! here too, so the host tests check them together.

use core::sync::atomic::{AtomicU64, Ordering};

use cpus::{CpuGuard, CpuSet, PerCpu};

/// Ranges longer than this are flushed whole (Linux's threshold is 33).
pub const FULL_FLUSH_PAGES: u64 = 33;

/// How a range is flushed from one CPU's TLB.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flush {
    /// `invlpg` for each of this many pages.
    Pages(u64),
    /// Everything, global entries included.
    All,
}

pub fn flush_kind(pages: u64) -> Flush {
    if pages > FULL_FLUSH_PAGES {
        Flush::All
    } else {
        Flush::Pages(pages)
    }
}

/// Whether IPIs to `targets` go as one all-but-self broadcast: when they
/// are every other online CPU (`others`) and more than one.
pub fn use_shorthand(targets: CpuSet, others: CpuSet) -> bool {
    targets == others && others.len() > 1
}

/// ICR writes it takes to reach `targets`.
pub fn icr_writes(targets: CpuSet, others: CpuSet) -> u64 {
    if use_shorthand(targets, others) {
        1
    } else {
        targets.len() as u64
    }
}

/// One CPU's counts. `PerCpu` pads it to its own lines; the alignment says
/// that the block itself fits one line.
#[repr(align(64))]
pub struct CpuCounts {
    shootdowns: AtomicU64,
    targets: AtomicU64,
    ipis: AtomicU64,
    pages_invalidated: AtomicU64,
    full_flushes: AtomicU64,
}

impl CpuCounts {
    pub const fn new() -> CpuCounts {
        CpuCounts {
            shootdowns: AtomicU64::new(0),
            targets: AtomicU64::new(0),
            ipis: AtomicU64::new(0),
            pages_invalidated: AtomicU64::new(0),
            full_flushes: AtomicU64::new(0),
        }
    }
}

impl Default for CpuCounts {
    fn default() -> Self {
        Self::new()
    }
}

/// The snapshot type is `record`'s, so `bench` reports it as it is.
pub use record::TlbSnapshot;

fn add(c: &AtomicU64, n: u64) {
    c.store(c.load(Ordering::Relaxed).wrapping_add(n), Ordering::Relaxed);
}

/// The counts of `N` CPUs.
pub struct Counts<const N: usize> {
    cpus: PerCpu<CpuCounts, N>,
}

impl<const N: usize> Counts<N> {
    pub const fn new() -> Self {
        Counts { cpus: cpus::per_cpu![CpuCounts::new(); N] }
    }

    /// CPU `me` started a shootdown to `targets` (itself perhaps among them).
    /// Unguarded (interrupts may be on): no interrupt handler on `me`
    /// starts a shootdown, so nothing interleaves with this count.
    pub fn shootdown(&self, me: usize, targets: CpuSet) {
        let c = self.cpus.unguarded(me);
        add(&c.shootdowns, 1);
        add(&c.targets, targets.without(me).len() as u64);
    }

    /// The guard's CPU wrote the ICR `n` times.
    pub fn ipis(&self, me: &CpuGuard, n: u64) {
        add(&self.cpus.local(me).ipis, n);
    }

    /// The guard's CPU flushed `pages` pages; returns how it must do it.
    pub fn flush(&self, me: &CpuGuard, pages: u64) -> Flush {
        let kind = flush_kind(pages);
        let c = self.cpus.local(me);
        match kind {
            Flush::All => add(&c.full_flushes, 1),
            Flush::Pages(n) => add(&c.pages_invalidated, n),
        }
        kind
    }

    /// Any CPU's counts (a report reads every CPU's by design).
    pub fn snapshot(&self, cpu: usize) -> TlbSnapshot {
        let c = self.cpus.remote(cpu);
        let r = |a: &AtomicU64| a.load(Ordering::Relaxed);
        TlbSnapshot {
            shootdowns: r(&c.shootdowns),
            targets: r(&c.targets),
            ipis: r(&c.ipis),
            pages_invalidated: r(&c.pages_invalidated),
            full_flushes: r(&c.full_flushes),
        }
    }
}

impl<const N: usize> Default for Counts<N> {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    /// CPU `cpu`'s guard: host threads stand in for CPUs.
    fn on(cpu: usize) -> CpuGuard {
        CpuGuard::host_thread(cpu)
    }

    #[test]
    fn each_cpus_counts_fill_lines_of_their_own() {
        assert_eq!(core::mem::align_of::<CpuCounts>(), 64);
        assert_eq!(core::mem::size_of::<CpuCounts>(), 64);
    }

    #[test]
    fn a_shootdown_counts_the_other_cpus_it_asks() {
        let c = Counts::<4>::new();
        c.shootdown(1, CpuSet::first(4));
        c.shootdown(1, CpuSet::single(1)); // itself only
        assert_eq!(c.snapshot(1), TlbSnapshot { shootdowns: 2, targets: 3, ..Default::default() });
        assert_eq!(c.snapshot(0), TlbSnapshot::default(), "a target counts nothing until it flushes");
    }

    #[test]
    fn flushes_count_pages_up_to_the_threshold_then_one_full_flush() {
        let c = Counts::<2>::new();
        assert_eq!(c.flush(&on(0), 1), Flush::Pages(1));
        assert_eq!(c.flush(&on(0), FULL_FLUSH_PAGES), Flush::Pages(FULL_FLUSH_PAGES));
        assert_eq!(c.flush(&on(0), FULL_FLUSH_PAGES + 1), Flush::All);
        let s = c.snapshot(0);
        assert_eq!((s.pages_invalidated, s.full_flushes), (1 + FULL_FLUSH_PAGES, 1));
        assert_eq!((s.shootdowns, s.targets, s.ipis), (0, 0, 0));
        assert_eq!(c.snapshot(1), TlbSnapshot::default());
    }

    #[test]
    fn ipis_are_icr_writes() {
        let others = CpuSet::first(4).without(0); // CPU 0 of 4 sends
        assert_eq!(icr_writes(others, others), 1, "all others: one broadcast");
        assert_eq!(icr_writes([1, 2].into_iter().collect(), others), 2, "a subset: one each");
        let one = CpuSet::single(1);
        assert_eq!(icr_writes(one, one), 1, "the only other CPU: no shorthand, one write");
        assert!(!use_shorthand(one, one));
        assert_eq!(icr_writes(CpuSet::EMPTY, others), 0);
        let c = Counts::<4>::new();
        c.ipis(&on(0), icr_writes(others, others));
        assert_eq!(c.snapshot(0), TlbSnapshot { ipis: 1, ..Default::default() });
    }
}
