//! Sets of CPUs by index, as one 64-bit word so a whole set can be updated
//! with one atomic operation (`AtomicCpuSet`).
//!
//! The word is the representation of today's `MAX_CPUS`; callers go through
//! the methods, so widening the set past 64 CPUs changes this file only
//! (but for `from_bits`/`bits`, which the cross-call mailboxes use to keep
//! a set in one atomic word of their own).

use core::sync::atomic::{AtomicU64, Ordering};

use crate::MAX_CPUS;

const _: () = assert!(MAX_CPUS <= u64::BITS as usize, "a CpuSet is one u64 word");

#[derive(Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct CpuSet(u64);

impl CpuSet {
    pub const EMPTY: CpuSet = CpuSet(0);

    pub const fn from_bits(bits: u64) -> CpuSet {
        CpuSet(bits)
    }

    pub const fn bits(self) -> u64 {
        self.0
    }

    /// Every CPU index there can be.
    pub const ALL: CpuSet = CpuSet::first(MAX_CPUS);

    pub const fn single(cpu: usize) -> CpuSet {
        CpuSet(1 << cpu)
    }

    /// CPUs `0..n`.
    pub const fn first(n: usize) -> CpuSet {
        if n >= MAX_CPUS {
            CpuSet(u64::MAX)
        } else {
            CpuSet((1u64 << n) - 1)
        }
    }

    pub const fn contains(self, cpu: usize) -> bool {
        cpu < MAX_CPUS && self.0 & (1 << cpu) != 0
    }

    pub fn insert(&mut self, cpu: usize) {
        assert!(cpu < MAX_CPUS, "cpu index {cpu} out of range");
        self.0 |= 1 << cpu;
    }

    pub fn remove(&mut self, cpu: usize) {
        if cpu < MAX_CPUS {
            self.0 &= !(1 << cpu);
        }
    }

    /// `{cpu}`, or the empty set for an index past `MAX_CPUS`.
    const fn single_or_empty(cpu: usize) -> CpuSet {
        if cpu < MAX_CPUS {
            CpuSet(1 << cpu)
        } else {
            CpuSet::EMPTY
        }
    }

    pub const fn without(self, cpu: usize) -> CpuSet {
        if cpu < MAX_CPUS {
            CpuSet(self.0 & !(1 << cpu))
        } else {
            self
        }
    }

    pub const fn intersect(self, other: CpuSet) -> CpuSet {
        CpuSet(self.0 & other.0)
    }

    pub const fn union(self, other: CpuSet) -> CpuSet {
        CpuSet(self.0 | other.0)
    }

    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }

    pub const fn len(self) -> usize {
        self.0.count_ones() as usize
    }

    pub fn iter(self) -> impl Iterator<Item = usize> {
        let mut bits = self.0;
        core::iter::from_fn(move || {
            if bits == 0 {
                return None;
            }
            let cpu = bits.trailing_zeros() as usize;
            bits &= bits - 1;
            Some(cpu)
        })
    }
}

/// A `CpuSet` that CPUs update concurrently, each operation one atomic
/// instruction on the whole set.
#[derive(Default)]
pub struct AtomicCpuSet(AtomicU64);

impl AtomicCpuSet {
    pub const fn new(set: CpuSet) -> AtomicCpuSet {
        AtomicCpuSet(AtomicU64::new(set.0))
    }

    pub fn load(&self, order: Ordering) -> CpuSet {
        CpuSet(self.0.load(order))
    }

    /// Adds `cpu`; returns the set as it was before.
    pub fn insert(&self, cpu: usize, order: Ordering) -> CpuSet {
        assert!(cpu < MAX_CPUS, "cpu index {cpu} out of range");
        CpuSet(self.0.fetch_or(1 << cpu, order))
    }

    /// Makes the set `set` (for a set nobody else changes at the moment,
    /// such as a page table's before it is published).
    pub fn store(&self, set: CpuSet, order: Ordering) {
        self.0.store(set.0, order)
    }

    /// Adds every CPU in `set`; returns the set as it was before.
    pub fn insert_all(&self, set: CpuSet, order: Ordering) -> CpuSet {
        CpuSet(self.0.fetch_or(set.0, order))
    }

    /// Removes `cpu`; returns the set as it was before.
    pub fn remove(&self, cpu: usize, order: Ordering) -> CpuSet {
        CpuSet(self.0.fetch_and(!CpuSet::single_or_empty(cpu).0, order))
    }
}

impl core::fmt::Debug for AtomicCpuSet {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        self.load(Ordering::Relaxed).fmt(f)
    }
}

impl core::fmt::Debug for CpuSet {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_set().entries(self.iter()).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::vec;
    use std::vec::Vec;

    #[test]
    fn iterates_in_order() {
        let mut s = CpuSet::EMPTY;
        for c in [63, 0, 5, 17] {
            s.insert(c);
        }
        assert_eq!(s.iter().collect::<Vec<_>>(), vec![0, 5, 17, 63]);
        assert_eq!(s.len(), 4);
        assert_eq!(s.without(5).iter().collect::<Vec<_>>(), vec![0, 17, 63]);
    }

    #[test]
    fn first_covers_edges() {
        assert_eq!(CpuSet::first(0), CpuSet::EMPTY);
        assert_eq!(CpuSet::first(1).iter().collect::<Vec<_>>(), vec![0]);
        assert_eq!(CpuSet::first(64).len(), 64);
        assert!(!CpuSet::first(64).contains(64));
    }

    #[test]
    fn atomic_set_inserts_and_removes() {
        let s = AtomicCpuSet::new(CpuSet::EMPTY);
        assert_eq!(s.insert(3, Ordering::SeqCst), CpuSet::EMPTY);
        assert_eq!(s.insert(63, Ordering::SeqCst), CpuSet::single(3));
        assert_eq!(s.remove(3, Ordering::SeqCst).len(), 2);
        assert_eq!(s.remove(MAX_CPUS, Ordering::SeqCst), CpuSet::single(63), "out of range: no change");
        assert_eq!(s.load(Ordering::SeqCst), CpuSet::single(63));
        assert_eq!(CpuSet::ALL.len(), MAX_CPUS);
        assert_eq!(s.insert_all(CpuSet::from_bits(0b110), Ordering::SeqCst), CpuSet::single(63));
        assert_eq!(s.load(Ordering::SeqCst).iter().collect::<Vec<_>>(), vec![1, 2, 63]);
    }

    #[test]
    #[should_panic]
    fn insert_out_of_range_panics() {
        let mut s = CpuSet::EMPTY;
        s.insert(MAX_CPUS);
    }
}
