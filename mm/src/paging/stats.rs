//! Paging statistics (Zephyr's `k_mem_paging_stats` and its timing
//! histograms): counters per CPU, so counting never shares a cache line
//! between CPUs, and log2 histograms of nanoseconds.
//!
//! The histograms hold a random sample: one timed event in
//! [`TIMING_SAMPLE`] on average per CPU (gaps uniform on
//! `1..=2*TIMING_SAMPLE-1`, so periodic workloads do not alias), because
//! under QEMU's TCG every clock read takes a lock all vCPUs share and a
//! fault that read it four times measured QEMU rather than the fault.

use core::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use alloc::boxed::Box;
use cpus::{CachePadded, PerCpu, PerCpuRef, MAX_CPUS};

use crate::lock_count::{LockCounts, LockSnapshot};

/// Bucket `k` counts durations in `[2^k, 2^(k+1))` ns (bucket 0 also 0);
/// 40 buckets reach past 15 minutes.
pub const BUCKETS: usize = 40;

/// One CPU's log2 histogram: only that CPU records into it, with plain
/// loads and stores (no locked instruction, no line another CPU writes);
/// readers merge every CPU's (`Stats::histogram`).
pub struct Histogram {
    buckets: [AtomicU64; BUCKETS],
    max: AtomicU64,
}

impl Histogram {
    pub const fn new() -> Histogram {
        Histogram { buckets: [const { AtomicU64::new(0) }; BUCKETS], max: AtomicU64::new(0) }
    }

    /// Records `ns`. Only the owning CPU calls it (a nested fault on the
    /// same CPU may lose one sample, like `sampled`'s state); the maximum
    /// is written only when a load shows a new one.
    pub fn record(&self, ns: u64) {
        let k = (63 - ns.max(1).leading_zeros() as usize).min(BUCKETS - 1);
        let b = &self.buckets[k];
        b.store(b.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
        if ns > self.max.load(Ordering::Relaxed) {
            self.max.store(ns, Ordering::Relaxed);
        }
    }

    pub fn snapshot(&self) -> HistogramSnapshot {
        HistogramSnapshot {
            buckets: core::array::from_fn(|k| self.buckets[k].load(Ordering::Relaxed)),
            max: self.max.load(Ordering::Relaxed),
        }
    }
}

impl Default for Histogram {
    fn default() -> Self {
        Self::new()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HistogramSnapshot {
    pub buckets: [u64; BUCKETS],
    pub max: u64,
}

impl HistogramSnapshot {
    pub const EMPTY: HistogramSnapshot = HistogramSnapshot { buckets: [0; BUCKETS], max: 0 };

    /// Adds another CPU's histogram: bucket by bucket, the larger maximum.
    pub fn merge(&mut self, other: &HistogramSnapshot) {
        for (b, o) in self.buckets.iter_mut().zip(&other.buckets) {
            *b += o;
        }
        self.max = self.max.max(other.max);
    }

    /// What was recorded after `before` was taken.
    pub fn since(&self, before: &HistogramSnapshot) -> HistogramSnapshot {
        let mut d = *self;
        for (b, old) in d.buckets.iter_mut().zip(&before.buckets) {
            *b = b.saturating_sub(*old);
        }
        d
    }

    pub fn count(&self) -> u64 {
        self.buckets.iter().sum()
    }

    /// Upper bound (ns) of the bucket holding the `pct`-th percentile
    /// sample, capped at the largest sample; 0 with no samples.
    pub fn percentile(&self, pct: u64) -> u64 {
        let n = self.count();
        if n == 0 {
            return 0;
        }
        let rank = (n * pct).div_ceil(100).max(1);
        let mut seen = 0;
        for (k, &c) in self.buckets.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return ((2u64 << k) - 1).min(self.max);
            }
        }
        self.max
    }
}

/// One fault, store transfer or victim selection in this many (on
/// average, per CPU) is timed into the histograms.
pub const TIMING_SAMPLE: u32 = 16;

/// Counters of one CPU, on cache lines of their own (a `PerCpu` element),
/// written only by that CPU (paging runs with interrupts off) with a plain
/// load and store. Reached by index without a `CpuGuard` (`unguarded`):
/// `VmPlatform::without_interrupts` proves nothing to the type system yet,
/// and the callers name their CPU with `cpu_index`.
#[derive(Default)]
#[repr(align(64))]
struct CpuCounters {
    /// Events until this CPU's next timed one, and its xorshift state.
    /// Only the CPU itself writes them (a nested fault on the same CPU can
    /// lose an update: that only moves one sample).
    sample_left: AtomicU32,
    sample_rng: AtomicU64,
    faults: AtomicU64,
    evictions_clean: AtomicU64,
    evictions_dirty: AtomicU64,
    page_ins: AtomicU64,
    page_outs: AtomicU64,
    busy_waits: AtomicU64,
    store_reads: AtomicU64,
    store_writes: AtomicU64,
    /// The baseline's global lock (`Mode::GlobalLock`).
    global_lock: LockCounts,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Counts {
    /// Page faults that paged a page in (spurious ones, where another CPU
    /// had already done it, are not counted).
    pub faults: u64,
    /// Evictions that needed no write: a fresh page or a valid copy.
    pub evictions_clean: u64,
    /// Evictions that wrote the page to the backing store.
    pub evictions_dirty: u64,
    /// Pages read from the backing store.
    pub page_ins: u64,
    /// Pages written to the backing store.
    pub page_outs: u64,
    /// Times a CPU found a page busy and waited for it.
    pub busy_waits: u64,
    /// Calls of the backing store's `page_in` (failed ones included).
    pub store_reads: u64,
    /// Calls of the backing store's `page_out` (failed ones included).
    pub store_writes: u64,
    /// The baseline's global lock: acquisitions, waits, wait steps.
    pub global_lock: LockSnapshot,
}

impl Counts {
    pub fn evictions(&self) -> u64 {
        self.evictions_clean + self.evictions_dirty
    }
}

record::snapshot_arithmetic!(Counts {
    faults,
    evictions_clean,
    evictions_dirty,
    page_ins,
    page_outs,
    busy_waits,
    store_reads,
    store_writes,
} nested { global_lock });

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Event {
    Fault,
    EvictClean,
    EvictDirty,
    PageIn,
    PageOut,
    BusyWait,
    StoreRead,
    StoreWrite,
}

/// What a histogram times.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Timing {
    /// Choosing a victim (the policy's `select`).
    Select,
    /// One backing-store page-in.
    StoreIn,
    /// One backing-store page-out.
    StoreOut,
    /// A whole page fault that paged in.
    Fault,
}

/// One CPU's histograms, one per `Timing`.
struct CpuHistograms([Histogram; 4]);

pub struct Stats {
    cpus: PerCpu<CpuCounters>,
    /// Per CPU, on lines of their own (a `PerCpuRef` over a boxed slice:
    /// `MAX_CPUS` sets of four histograms are too big to build on a stack).
    histograms: Box<[CachePadded<CpuHistograms>]>,
}

impl Stats {
    pub fn new() -> Stats {
        let histograms =
            (0..MAX_CPUS).map(|_| CachePadded::new(CpuHistograms([const { Histogram::new() }; 4]))).collect();
        Stats { cpus: PerCpu::default(), histograms }
    }

    fn histograms(&self) -> PerCpuRef<'_, CpuHistograms> {
        PerCpuRef::new(&self.histograms)
    }

    pub fn count(&self, cpu: usize, e: Event) {
        let c = self.cpus.unguarded(cpu);
        let counter = match e {
            Event::Fault => &c.faults,
            Event::EvictClean => &c.evictions_clean,
            Event::EvictDirty => &c.evictions_dirty,
            Event::PageIn => &c.page_ins,
            Event::PageOut => &c.page_outs,
            Event::BusyWait => &c.busy_waits,
            Event::StoreRead => &c.store_reads,
            Event::StoreWrite => &c.store_writes,
        };
        counter.store(counter.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
    }

    /// CPU `cpu`'s counts of the baseline's global lock.
    pub(crate) fn global_lock(&self, cpu: usize) -> &LockCounts {
        &self.cpus.unguarded(cpu).global_lock
    }

    /// Whether CPU `cpu` times its next event (see [`TIMING_SAMPLE`]).
    pub fn sampled(&self, cpu: usize) -> bool {
        let c = self.cpus.unguarded(cpu);
        let left = c.sample_left.load(Ordering::Relaxed);
        if left > 1 {
            c.sample_left.store(left - 1, Ordering::Relaxed);
            return false;
        }
        let mut x = c.sample_rng.load(Ordering::Relaxed);
        if x == 0 {
            x = (cpu as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        c.sample_rng.store(x, Ordering::Relaxed);
        c.sample_left.store(1 + (x % (2 * TIMING_SAMPLE as u64 - 1)) as u32, Ordering::Relaxed);
        true
    }

    /// Starts timing an event of CPU `cpu` if it is sampled: the start
    /// time from `now`, which is called only then.
    pub fn start(&self, cpu: usize, now: impl FnOnce() -> u64) -> Option<u64> {
        self.sampled(cpu).then(now)
    }

    /// Records a sampled event of CPU `cpu` that started at `start` (from
    /// [`Self::start`]).
    pub fn finish(&self, cpu: usize, t: Timing, start: Option<u64>, now: impl FnOnce() -> u64) {
        if let Some(start) = start {
            self.time(cpu, t, now().saturating_sub(start));
        }
    }

    /// Records `ns` in CPU `cpu`'s histogram (the running CPU's own:
    /// unguarded, as for the counters).
    pub fn time(&self, cpu: usize, t: Timing, ns: u64) {
        self.histograms().unguarded(cpu).0[t as usize].record(ns);
    }

    /// CPU `cpu`'s counts (any CPU's: reports read them all).
    pub fn cpu(&self, cpu: usize) -> Counts {
        let c = self.cpus.remote(cpu);
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        Counts {
            faults: l(&c.faults),
            evictions_clean: l(&c.evictions_clean),
            evictions_dirty: l(&c.evictions_dirty),
            page_ins: l(&c.page_ins),
            page_outs: l(&c.page_outs),
            busy_waits: l(&c.busy_waits),
            store_reads: l(&c.store_reads),
            store_writes: l(&c.store_writes),
            global_lock: c.global_lock.snapshot(),
        }
    }

    pub fn total(&self) -> Counts {
        let mut t = Counts::default();
        for cpu in 0..self.cpus.len() {
            t += self.cpu(cpu);
        }
        t
    }

    /// Every CPU's histogram of `t`, merged.
    pub fn histogram(&self, t: Timing) -> HistogramSnapshot {
        let mut h = HistogramSnapshot::EMPTY;
        for c in self.histograms().iter() {
            h.merge(&c.0[t as usize].snapshot());
        }
        h
    }

    /// CPU `cpu`'s histogram of `t` alone.
    pub fn cpu_histogram(&self, cpu: usize, t: Timing) -> HistogramSnapshot {
        self.histograms().remote(cpu).0[t as usize].snapshot()
    }
}

impl Default for Stats {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_come_from_log2_buckets() {
        let h = Histogram::new();
        assert_eq!(h.snapshot().percentile(50), 0);
        for ns in [100, 100, 100, 5000] {
            h.record(ns);
        }
        let s = h.snapshot();
        assert_eq!(s.count(), 4);
        assert_eq!(s.percentile(50), 127, "100 ns lies in [64, 128)");
        assert_eq!(s.percentile(99), 5000, "capped at the largest sample");
        assert_eq!(s.max, 5000);
    }

    #[test]
    fn one_event_in_timing_sample_is_timed_per_cpu() {
        let s = Stats::new();
        let n = 100_000;
        let timed = (0..n).filter(|_| s.sampled(3)).count() as f64;
        let rate = n as f64 / timed;
        assert!((TIMING_SAMPLE as f64 * 0.9..TIMING_SAMPLE as f64 * 1.1).contains(&rate), "one in {rate}");
        // Another CPU's sampler is its own: its first event is timed.
        assert!(s.sampled(4));
        let mut clock_reads = 0;
        for _ in 0..n {
            let start = s.start(5, || {
                clock_reads += 1;
                0
            });
            s.finish(5, Timing::Fault, start, || 10);
        }
        assert_eq!(s.histogram(Timing::Fault).count(), clock_reads);
        assert!(clock_reads < n as u64 / 8, "{clock_reads} clock reads for {n} events");
    }

    #[test]
    fn counters_are_per_cpu_and_add_up() {
        let s = Stats::new();
        s.count(0, Event::Fault);
        s.count(3, Event::Fault);
        s.count(3, Event::EvictDirty);
        assert_eq!(s.cpu(3).faults, 1);
        assert_eq!(s.total().faults, 2);
        assert_eq!(s.total().evictions(), 1);
        assert_eq!((s.total().store_reads, s.total().store_writes), (0, 0));
        s.count(1, Event::StoreRead);
        s.count(1, Event::StoreWrite);
        s.count(1, Event::StoreWrite);
        assert_eq!((s.cpu(1).store_reads, s.cpu(1).store_writes), (1, 2));
        assert_eq!(s.cpu(3).store_reads, 0);
    }

    #[test]
    fn histograms_are_per_cpu_and_merge_to_the_sum() {
        let s = Stats::new();
        let mut want = [0u64; BUCKETS];
        for (cpu, ns) in [(0, 100), (0, 3000), (2, 100), (2, 70_000), (7, 5)] {
            s.time(cpu, Timing::Fault, ns);
            want[63 - ns.leading_zeros() as usize] += 1;
        }
        s.time(1, Timing::Select, 1 << 20);
        assert_eq!(s.cpu_histogram(0, Timing::Fault).count(), 2);
        assert_eq!(s.cpu_histogram(2, Timing::Fault).max, 70_000);
        assert_eq!(s.cpu_histogram(1, Timing::Fault).count(), 0, "CPU 1 timed only a selection");
        let merged = s.histogram(Timing::Fault);
        assert_eq!(merged.buckets, want);
        assert_eq!(merged.max, 70_000);
        assert_eq!(s.histogram(Timing::Select).count(), 1);
        let a = s.histograms().remote(0) as *const CpuHistograms as usize;
        let b = s.histograms().remote(1) as *const CpuHistograms as usize;
        assert!(b - a >= 128 && a.is_multiple_of(128), "neighbouring CPUs' histograms share no line");
    }

    #[test]
    fn a_maximum_is_stored_only_when_it_grows() {
        let h = Histogram::new();
        h.record(500);
        h.record(20);
        assert_eq!(h.snapshot().max, 500);
        h.record(900);
        assert_eq!(h.snapshot().max, 900);
    }

    #[test]
    fn each_cpus_counters_fill_lines_of_their_own() {
        assert_eq!(core::mem::align_of::<CpuCounters>(), 64);
        assert_eq!(core::mem::size_of::<CpuCounters>() % 64, 0);
    }
}
