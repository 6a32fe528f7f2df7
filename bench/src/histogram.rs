//! Per-operation latency histogram: log-linear buckets (16 per power of
//! two), so a percentile is within 1/16 of the true value at any scale,
//! from nanoseconds to seconds, in a fixed 7.8 KiB. One per CPU, merged
//! after a run.

use alloc::vec;
use alloc::vec::Vec;

/// Sub-buckets per power of two, as a shift.
const SUB_BITS: u32 = 4;
const SUB: u64 = 1 << SUB_BITS;
const BUCKETS: usize = (SUB + (64 - SUB_BITS as u64) * SUB) as usize;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Histogram {
    counts: Vec<u64>,
    total: u64,
    max: u64,
}

fn bucket(v: u64) -> usize {
    if v < SUB {
        return v as usize;
    }
    let exp = 63 - v.leading_zeros(); // >= SUB_BITS
    let sub = (v >> (exp - SUB_BITS)) & (SUB - 1);
    (SUB + (exp - SUB_BITS) as u64 * SUB + sub) as usize
}

/// Largest value that lands in bucket `i`.
fn upper_bound(i: usize) -> u64 {
    let i = i as u64;
    if i < SUB {
        return i;
    }
    let exp = (i - SUB) / SUB + SUB_BITS as u64;
    let sub = (i - SUB) % SUB;
    let low = (SUB + sub) << (exp - SUB_BITS as u64);
    low + ((1u64 << (exp - SUB_BITS as u64)) - 1)
}

impl Default for Histogram {
    fn default() -> Self {
        Self::new()
    }
}

impl Histogram {
    pub fn new() -> Histogram {
        Histogram { counts: vec![0; BUCKETS], total: 0, max: 0 }
    }

    pub fn record(&mut self, ns: u64) {
        self.counts[bucket(ns)] += 1;
        self.total += 1;
        self.max = self.max.max(ns);
    }

    pub fn merge(&mut self, other: &Histogram) {
        for (a, b) in self.counts.iter_mut().zip(&other.counts) {
            *a += b;
        }
        self.total += other.total;
        self.max = self.max.max(other.max);
    }

    pub fn count(&self) -> u64 {
        self.total
    }

    pub fn max(&self) -> u64 {
        self.max
    }

    /// The value at or below which `pct` percent of the samples lie (the
    /// bucket's upper bound, never above the largest sample); 0 if empty.
    pub fn percentile(&self, pct: u64) -> u64 {
        if self.total == 0 {
            return 0;
        }
        let rank = (self.total * pct).div_ceil(100).max(1);
        let mut seen = 0;
        for (i, &c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return upper_bound(i).min(self.max);
            }
        }
        self.max
    }

    pub fn clear(&mut self) {
        self.counts.iter_mut().for_each(|c| *c = 0);
        self.total = 0;
        self.max = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_cover_every_value_in_order() {
        let mut last = 0;
        for v in (0..5000u64).chain([1 << 20, (1 << 40) + 12345, u64::MAX / 3, u64::MAX]) {
            let b = bucket(v);
            assert!(b < BUCKETS);
            assert!(upper_bound(b) >= v, "{v} above its bucket's bound {}", upper_bound(b));
            assert!(b == 0 || upper_bound(b - 1) < v, "{v} belongs in an earlier bucket");
            assert!(b >= last || v > 5000);
            last = b;
        }
    }

    #[test]
    fn percentiles_are_within_a_sixteenth() {
        let mut h = Histogram::new();
        for v in 1..=10_000u64 {
            h.record(v * 10);
        }
        for (pct, exact) in [(50, 50_000u64), (99, 99_000), (100, 100_000)] {
            let got = h.percentile(pct);
            assert!(got >= exact && got <= exact + exact / 16, "p{pct}: {got} vs {exact}");
        }
        assert_eq!(h.max(), 100_000);
        assert_eq!(h.count(), 10_000);
    }

    #[test]
    fn merge_adds_counts_and_keeps_the_max() {
        let (mut a, mut b) = (Histogram::new(), Histogram::new());
        (0..100).for_each(|_| a.record(100));
        (0..100).for_each(|_| b.record(1_000_000));
        a.merge(&b);
        assert_eq!(a.count(), 200);
        assert_eq!(a.max(), 1_000_000);
        assert!(a.percentile(50) <= 100 + 100 / 16);
        assert!(a.percentile(99) >= 1_000_000);
        a.clear();
        assert_eq!((a.count(), a.percentile(50)), (0, 0));
    }
}
