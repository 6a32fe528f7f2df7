//! Sets of CPUs by index, as one 64-bit word so a whole set can be updated
//! with one atomic operation.

/// Most CPUs the kernel runs. Indexes are dense: 0 is the BSP. The one
/// definition is in `record`, so xtask refuses a larger `--smp` with it.
pub const MAX_CPUS: usize = record::MAX_CPUS as usize;

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

impl core::fmt::Debug for CpuSet {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_set().entries(self.iter()).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
    #[should_panic]
    fn insert_out_of_range_panics() {
        let mut s = CpuSet::EMPTY;
        s.insert(MAX_CPUS);
    }
}
