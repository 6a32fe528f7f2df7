//! Sets of CPUs by index: a fixed array of 64-bit words sized from
//! `MAX_CPUS` (bit `cpu % 64` of word `cpu / 64`).
//!
//! `CpuSet` is a plain value (copied, compared, iterated). `AtomicCpuSet`
//! is the shared form: one `AtomicU64` per word, so adding or removing a
//! CPU is one atomic operation on the one word that holds it and CPUs
//! changing different words never contend. A whole-set `load` reads the
//! words one after another and is therefore *not* one snapshot: a CPU
//! that joins word 1 while the reader is between words 0 and 1 may be
//! seen although one that left word 0 at the same time still is too. Each
//! word on its own is exact, and every caller is fine with that:
//! - readers that need ordering against their own earlier writes (the
//!   shootdown's read of a space's active set, invariant 8 in
//!   docs/protocols.md) fence first, and the fence orders every per-word
//!   load after those writes, just as it ordered the one-word load;
//! - the cross-call mailboxes' `outstanding` set only loses bits while its
//!   owner waits, so words read empty one by one are all empty at the last
//!   read; the inbox is taken word by word (`take`), and a bit set after
//!   its word was taken is found by the next service (its sender signals
//!   after setting it);
//! - the online set only grows, and `batched`'s users set only grows.
//!
//! Under `cfg(loom)` the words are loom's atomics, so the models of the
//! protocols that keep sets (cross-calls, batched counts) see every access.

#[cfg(not(loom))]
use core::sync::atomic::AtomicU64;
use core::sync::atomic::Ordering;
#[cfg(loom)]
use loom::sync::atomic::AtomicU64;

use crate::MAX_CPUS;

/// Words in a set.
const WORDS: usize = MAX_CPUS / 64;
const _: () = assert!(MAX_CPUS.is_multiple_of(64) && WORDS > 0, "a CpuSet is whole 64-bit words");

/// `(word, bit)` of `cpu`, which must be below `MAX_CPUS`.
const fn place(cpu: usize) -> (usize, u64) {
    (cpu / 64, 1 << (cpu % 64))
}

#[derive(Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct CpuSet([u64; WORDS]);

impl CpuSet {
    pub const EMPTY: CpuSet = CpuSet([0; WORDS]);

    /// Every CPU index there can be.
    pub const ALL: CpuSet = CpuSet::first(MAX_CPUS);

    pub const fn single(cpu: usize) -> CpuSet {
        assert!(cpu < MAX_CPUS, "cpu index out of range");
        CpuSet::EMPTY.with(cpu)
    }

    /// CPUs `0..n` (all of them for `n >= MAX_CPUS`).
    pub const fn first(n: usize) -> CpuSet {
        let mut words = [0; WORDS];
        let mut w = 0;
        while w < WORDS {
            let below = n.saturating_sub(w * 64);
            words[w] = if below >= 64 { u64::MAX } else { (1u64 << below) - 1 };
            w += 1;
        }
        CpuSet(words)
    }

    pub const fn contains(self, cpu: usize) -> bool {
        if cpu >= MAX_CPUS {
            return false;
        }
        let (w, bit) = place(cpu);
        self.0[w] & bit != 0
    }

    /// The set with `cpu` added (`cpu < MAX_CPUS`).
    const fn with(mut self, cpu: usize) -> CpuSet {
        let (w, bit) = place(cpu);
        self.0[w] |= bit;
        self
    }

    pub fn insert(&mut self, cpu: usize) {
        assert!(cpu < MAX_CPUS, "cpu index {cpu} out of range");
        *self = self.with(cpu);
    }

    pub fn remove(&mut self, cpu: usize) {
        *self = self.without(cpu);
    }

    /// The set without `cpu` (unchanged for an index past `MAX_CPUS`).
    pub const fn without(mut self, cpu: usize) -> CpuSet {
        if cpu < MAX_CPUS {
            let (w, bit) = place(cpu);
            self.0[w] &= !bit;
        }
        self
    }

    pub const fn intersect(mut self, other: CpuSet) -> CpuSet {
        let mut w = 0;
        while w < WORDS {
            self.0[w] &= other.0[w];
            w += 1;
        }
        self
    }

    pub const fn union(mut self, other: CpuSet) -> CpuSet {
        let mut w = 0;
        while w < WORDS {
            self.0[w] |= other.0[w];
            w += 1;
        }
        self
    }

    /// The CPUs in `self` that are not in `other`.
    pub const fn difference(mut self, other: CpuSet) -> CpuSet {
        let mut w = 0;
        while w < WORDS {
            self.0[w] &= !other.0[w];
            w += 1;
        }
        self
    }

    pub const fn is_empty(self) -> bool {
        let mut w = 0;
        while w < WORDS {
            if self.0[w] != 0 {
                return false;
            }
            w += 1;
        }
        true
    }

    pub const fn len(self) -> usize {
        let (mut n, mut w) = (0, 0);
        while w < WORDS {
            n += self.0[w].count_ones() as usize;
            w += 1;
        }
        n
    }

    /// The CPUs in ascending order.
    pub fn iter(self) -> impl Iterator<Item = usize> {
        let (mut w, mut bits) = (0, self.0[0]);
        core::iter::from_fn(move || {
            while bits == 0 {
                w += 1;
                if w == WORDS {
                    return None;
                }
                bits = self.0[w];
            }
            let cpu = w * 64 + bits.trailing_zeros() as usize;
            bits &= bits - 1;
            Some(cpu)
        })
    }
}

/// A `CpuSet` that CPUs update concurrently: one atomic word per 64 CPUs,
/// each single-CPU change one atomic instruction on its word. A load is
/// word by word, not one snapshot (see the module documentation).
pub struct AtomicCpuSet([AtomicU64; WORDS]);

impl Default for AtomicCpuSet {
    fn default() -> AtomicCpuSet {
        AtomicCpuSet::new(CpuSet::EMPTY)
    }
}

impl AtomicCpuSet {
    #[cfg(not(loom))]
    pub const fn new(set: CpuSet) -> AtomicCpuSet {
        let mut words = [const { AtomicU64::new(0) }; WORDS];
        let mut w = 0;
        while w < WORDS {
            words[w] = AtomicU64::new(set.0[w]);
            w += 1;
        }
        AtomicCpuSet(words)
    }

    /// loom's atomics are not made in constants.
    #[cfg(loom)]
    pub fn new(set: CpuSet) -> AtomicCpuSet {
        AtomicCpuSet(core::array::from_fn(|w| AtomicU64::new(set.0[w])))
    }

    /// Every word with `order`, one after another.
    pub fn load(&self, order: Ordering) -> CpuSet {
        CpuSet(core::array::from_fn(|w| self.0[w].load(order)))
    }

    /// Whether `cpu` is in the set: one load of its word.
    pub fn contains(&self, cpu: usize, order: Ordering) -> bool {
        if cpu >= MAX_CPUS {
            return false;
        }
        let (w, bit) = place(cpu);
        self.0[w].load(order) & bit != 0
    }

    /// Replaces the set word by word (for the set's owner, before it
    /// publishes the set with a Release elsewhere).
    pub fn store(&self, set: CpuSet, order: Ordering) {
        for (word, bits) in self.0.iter().zip(set.0) {
            word.store(bits, order);
        }
    }

    /// Empties the set word by word and returns what each word held: every
    /// CPU inserted before its word was taken is returned exactly once.
    pub fn take(&self, order: Ordering) -> CpuSet {
        CpuSet(core::array::from_fn(|w| self.0[w].swap(0, order)))
    }

    /// Adds `cpu` (one atomic operation); returns whether it was there.
    pub fn insert(&self, cpu: usize, order: Ordering) -> bool {
        assert!(cpu < MAX_CPUS, "cpu index {cpu} out of range");
        let (w, bit) = place(cpu);
        self.0[w].fetch_or(bit, order) & bit != 0
    }

    /// Adds every CPU in `set`, one atomic operation per word that has any.
    pub fn insert_all(&self, set: CpuSet, order: Ordering) {
        for (word, bits) in self.0.iter().zip(set.0).filter(|&(_, b)| b != 0) {
            word.fetch_or(bits, order);
        }
    }

    /// Removes `cpu` (one atomic operation); returns whether it was there.
    /// An index past `MAX_CPUS` is never there and changes nothing.
    pub fn remove(&self, cpu: usize, order: Ordering) -> bool {
        if cpu >= MAX_CPUS {
            return false;
        }
        let (w, bit) = place(cpu);
        self.0[w].fetch_and(!bit, order) & bit != 0
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

impl FromIterator<usize> for CpuSet {
    /// Panics on an index past `MAX_CPUS`, like `insert`.
    fn from_iter<I: IntoIterator<Item = usize>>(cpus: I) -> CpuSet {
        let mut set = CpuSet::EMPTY;
        for cpu in cpus {
            set.insert(cpu);
        }
        set
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use std::vec;
    use std::vec::Vec;

    /// Indexes at every word's edges.
    const EDGES: [usize; 8] = [0, 1, 63, 64, 65, 127, 128, MAX_CPUS - 1];

    #[test]
    fn iterates_in_order_across_words() {
        let mut s = CpuSet::EMPTY;
        for c in [MAX_CPUS - 1, 64, 0, 5, 17, 63, 128] {
            s.insert(c);
        }
        assert_eq!(s.iter().collect::<Vec<_>>(), vec![0, 5, 17, 63, 64, 128, MAX_CPUS - 1]);
        assert_eq!(s.len(), 7);
        assert_eq!(s.without(64).iter().collect::<Vec<_>>(), vec![0, 5, 17, 63, 128, MAX_CPUS - 1]);
        assert_eq!(CpuSet::single(200).iter().collect::<Vec<_>>(), vec![200], "words before it empty");
        assert_eq!(CpuSet::EMPTY.iter().next(), None);
        assert_eq!(CpuSet::ALL.iter().collect::<Vec<_>>(), (0..MAX_CPUS).collect::<Vec<_>>());
    }

    #[test]
    fn every_index_is_its_own_bit() {
        for c in 0..MAX_CPUS {
            let s = CpuSet::single(c);
            assert_eq!((s.len(), s.iter().next()), (1, Some(c)));
            assert!(s.contains(c) && !s.contains(c ^ 1) && !s.contains(c ^ 64));
            assert!(s.without(c).is_empty());
        }
        assert!(!CpuSet::ALL.contains(MAX_CPUS));
    }

    #[test]
    fn first_covers_edges() {
        assert_eq!(CpuSet::first(0), CpuSet::EMPTY);
        assert_eq!(CpuSet::first(1).iter().collect::<Vec<_>>(), vec![0]);
        for n in [63, 64, 65, 128, 200, MAX_CPUS] {
            let s = CpuSet::first(n);
            assert_eq!(s.len(), n);
            assert!(s.contains(n - 1) && !s.contains(n), "first({n})");
        }
        assert_eq!(CpuSet::first(MAX_CPUS + 7), CpuSet::ALL);
        assert_eq!(CpuSet::ALL.len(), MAX_CPUS);
    }

    #[test]
    fn set_operations_work_per_word() {
        let a: CpuSet = [0, 64, 130, 255].into_iter().collect();
        let b: CpuSet = [64, 130, 1, 200].into_iter().collect();
        assert_eq!(a.intersect(b).iter().collect::<Vec<_>>(), vec![64, 130]);
        assert_eq!(a.union(b).iter().collect::<Vec<_>>(), vec![0, 1, 64, 130, 200, 255]);
        assert_eq!(a.difference(b).iter().collect::<Vec<_>>(), vec![0, 255]);
        assert!(!a.is_empty() && CpuSet::single(255).without(255).is_empty());
        let mut c = a;
        c.remove(130);
        c.remove(MAX_CPUS + 3); // out of range: no change
        assert_eq!(c.iter().collect::<Vec<_>>(), vec![0, 64, 255]);
    }

    #[test]
    fn atomic_set_changes_one_cpu_at_a_time() {
        let s = AtomicCpuSet::default();
        for c in EDGES {
            assert!(!s.insert(c, Ordering::SeqCst), "{c} was not there");
            assert!(s.insert(c, Ordering::SeqCst), "{c} is there now");
        }
        assert_eq!(s.load(Ordering::SeqCst), EDGES.into_iter().collect());
        assert!(s.remove(64, Ordering::SeqCst) && !s.remove(64, Ordering::SeqCst));
        assert!(!s.remove(MAX_CPUS, Ordering::SeqCst), "out of range: never there");
        assert_eq!(s.load(Ordering::SeqCst).len(), EDGES.len() - 1);
        assert!(s.load(Ordering::SeqCst).contains(65), "its neighbour in the word stays");
        assert!(s.contains(65, Ordering::SeqCst) && !s.contains(64, Ordering::SeqCst));
        assert!(!s.contains(MAX_CPUS, Ordering::SeqCst));
    }

    #[test]
    fn atomic_set_stores_takes_and_inserts_all() {
        let s = AtomicCpuSet::new(CpuSet::single(3));
        s.insert_all([1, 70, 250].into_iter().collect(), Ordering::SeqCst);
        assert_eq!(s.load(Ordering::SeqCst).iter().collect::<Vec<_>>(), vec![1, 3, 70, 250]);
        assert_eq!(s.take(Ordering::SeqCst).iter().collect::<Vec<_>>(), vec![1, 3, 70, 250]);
        assert_eq!(s.load(Ordering::SeqCst), CpuSet::EMPTY, "take empties every word");
        s.store(CpuSet::first(130), Ordering::SeqCst);
        assert_eq!(s.load(Ordering::SeqCst), CpuSet::first(130));
        s.store(CpuSet::single(255), Ordering::SeqCst);
        assert_eq!(s.load(Ordering::SeqCst), CpuSet::single(255), "store replaces every word");
    }

    #[test]
    #[should_panic]
    fn insert_out_of_range_panics() {
        let mut s = CpuSet::EMPTY;
        s.insert(MAX_CPUS);
    }
}
