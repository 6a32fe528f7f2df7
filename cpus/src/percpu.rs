//! `PerCpu<T>`: one `T` per CPU, each on cache lines of its own.
//!
//! Every element is `CachePadded`, so no two CPUs' elements share a cache
//! line and a CPU writing its own element never invalidates a line another
//! CPU is using (false sharing). The running CPU reaches its element with
//! `local`, which takes a `CpuGuard` (interrupts off, this CPU). Elements
//! other CPUs read by design (counters summed on read, magazine drains,
//! audits, statistics) are reached by index with `remote` and `iter`;
//! `unguarded` is the running CPU's element by index without a guard, for
//! elements whose every access is one atomic operation, which an
//! interrupt on the same CPU cannot tear.
//!
//! `PerCpuRef` is the same over a borrowed run of padded elements, for
//! structures whose CPU count is chosen at run time (the allocator's host
//! tests and loom models run two or three CPUs, not `MAX_CPUS`).

use crossbeam_utils::CachePadded;

use crate::{CpuGuard, MAX_CPUS};

/// See the module documentation. `N` is `MAX_CPUS` but in models (loom,
/// host tests) that run a handful of CPUs.
pub struct PerCpu<T, const N: usize = MAX_CPUS> {
    cells: [CachePadded<T>; N],
}

/// Builds a `PerCpu` in a constant (a `static`): `per_cpu![expr]` for
/// `MAX_CPUS` elements, `per_cpu![expr; N]` for `N`; `expr` must be a
/// constant expression and is evaluated once per element.
#[macro_export]
macro_rules! per_cpu {
    ($init:expr) => {
        $crate::per_cpu![$init; $crate::MAX_CPUS]
    };
    ($init:expr; $n:expr) => {
        $crate::PerCpu::from_padded([const { $crate::CachePadded::new($init) }; $n])
    };
}

impl<T, const N: usize> PerCpu<T, N> {
    /// From already padded elements; `per_cpu!` calls this in constants.
    pub const fn from_padded(cells: [CachePadded<T>; N]) -> Self {
        PerCpu { cells }
    }

    /// Element `cpu` is `f(cpu)`.
    pub fn from_fn(mut f: impl FnMut(usize) -> T) -> Self {
        PerCpu { cells: core::array::from_fn(|cpu| CachePadded::new(f(cpu))) }
    }

    /// The running CPU's element, which `guard` names.
    pub fn local(&self, guard: &CpuGuard) -> &T {
        &self.cells[guard.cpu()]
    }

    /// CPU `cpu`'s element, for reading (or atomically updating) another
    /// CPU's state by design.
    pub fn remote(&self, cpu: usize) -> &T {
        &self.cells[cpu]
    }

    /// The running CPU's element, `cpu` being its index, without proof that
    /// interrupts are off: only for elements whose every use is a single
    /// atomic operation (or a lock that interrupt handlers never take), so
    /// an interrupt handler on the same CPU cannot observe a half-done
    /// update. Callers say in a comment why theirs qualifies.
    pub fn unguarded(&self, cpu: usize) -> &T {
        &self.cells[cpu]
    }

    /// Every CPU's element, in index order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = &T> + DoubleEndedIterator {
        self.cells.iter().map(|c| &**c)
    }

    /// `(index, element)` for every CPU.
    pub fn enumerate(&self) -> impl ExactSizeIterator<Item = (usize, &T)> + DoubleEndedIterator {
        self.iter().enumerate()
    }

    /// How many elements: `N`.
    pub const fn len(&self) -> usize {
        N
    }

    /// The elements as a `PerCpuRef` (for a structure that borrows them).
    pub const fn as_ref(&self) -> PerCpuRef<'_, T> {
        PerCpuRef { cells: &self.cells }
    }

    /// Whether there are no elements (`N` is 0).
    pub const fn is_empty(&self) -> bool {
        N == 0
    }
}

/// A borrowed `PerCpu` of a length chosen at run time: the same accessors,
/// with the same rules.
pub struct PerCpuRef<'a, T> {
    cells: &'a [CachePadded<T>],
}

impl<T> Clone for PerCpuRef<'_, T> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<T> Copy for PerCpuRef<'_, T> {}

impl<'a, T> PerCpuRef<'a, T> {
    /// Element `cpu` is `cells[cpu]`.
    pub const fn new(cells: &'a [CachePadded<T>]) -> Self {
        PerCpuRef { cells }
    }

    /// See [`PerCpu::local`].
    pub fn local(self, guard: &CpuGuard) -> &'a T {
        &self.cells[guard.cpu()]
    }

    /// See [`PerCpu::remote`].
    pub fn remote(self, cpu: usize) -> &'a T {
        &self.cells[cpu]
    }

    /// See [`PerCpu::unguarded`].
    pub fn unguarded(self, cpu: usize) -> &'a T {
        &self.cells[cpu]
    }

    /// Every CPU's element, in index order.
    pub fn iter(self) -> impl ExactSizeIterator<Item = &'a T> + DoubleEndedIterator {
        self.cells.iter().map(|c| &**c)
    }

    pub const fn len(self) -> usize {
        self.cells.len()
    }

    pub const fn is_empty(self) -> bool {
        self.cells.is_empty()
    }
}

impl<T: Default, const N: usize> Default for PerCpu<T, N> {
    fn default() -> Self {
        Self::from_fn(|_| T::default())
    }
}

impl<T: core::fmt::Debug, const N: usize> core::fmt::Debug for PerCpu<T, N> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::sync::atomic::{AtomicU64, Ordering};
    use std::vec::Vec;

    static COUNTS: PerCpu<AtomicU64> = per_cpu![AtomicU64::new(0)];

    #[test]
    fn elements_sit_on_lines_of_their_own() {
        let p: PerCpu<u8, 4> = PerCpu::from_fn(|i| i as u8);
        let addr = |i: usize| p.remote(i) as *const u8 as usize;
        let line = core::mem::align_of::<CachePadded<u8>>();
        assert!(line >= 64, "at least one cache line");
        for i in 1..4 {
            assert!(addr(i) - addr(i - 1) >= line, "elements {} and {i} are closer than a line", i - 1);
            assert_eq!(addr(i) % line, 0);
        }
        assert_eq!(COUNTS.len(), MAX_CPUS);
    }

    #[test]
    fn each_thread_counts_in_its_own_element_and_a_reader_sums_them() {
        let p: &'static PerCpu<AtomicU64, 4> = std::boxed::Box::leak(std::boxed::Box::default());
        let threads: Vec<_> = (0..4)
            .map(|cpu| {
                std::thread::spawn(move || {
                    let guard = CpuGuard::host_thread(cpu);
                    for _ in 0..=cpu {
                        p.local(&guard).fetch_add(1, Ordering::Relaxed);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let each: Vec<u64> = p.iter().map(|c| c.load(Ordering::Relaxed)).collect();
        assert_eq!(each, [1, 2, 3, 4]);
        assert_eq!(p.enumerate().map(|(i, c)| i as u64 * c.load(Ordering::Relaxed)).sum::<u64>(), 2 + 6 + 12);
    }

    #[test]
    fn statics_build_in_constants() {
        const N: usize = 3;
        static SMALL: PerCpu<AtomicU64, N> = per_cpu![AtomicU64::new(7); N];
        SMALL.unguarded(2).fetch_add(1, Ordering::Relaxed);
        COUNTS.remote(MAX_CPUS - 1).fetch_add(1, Ordering::Relaxed);
        assert_eq!(SMALL.iter().map(|c| c.load(Ordering::Relaxed)).collect::<Vec<_>>(), [7, 7, 8]);
        assert_eq!(COUNTS.remote(MAX_CPUS - 1).load(Ordering::Relaxed), 1);
    }

    #[test]
    fn a_ref_sees_the_same_elements() {
        let p: PerCpu<AtomicU64, 3> = PerCpu::from_fn(|i| AtomicU64::new(i as u64));
        let r = p.as_ref();
        r.local(&CpuGuard::host_thread(1)).fetch_add(10, Ordering::Relaxed);
        assert_eq!(p.remote(1).load(Ordering::Relaxed), 11);
        assert_eq!(r.len(), 3);
        let cells: Vec<CachePadded<u8>> = (0..2).map(CachePadded::new).collect();
        let r = PerCpuRef::new(&cells);
        assert_eq!(r.iter().copied().collect::<Vec<_>>(), [0, 1]);
        assert_eq!(*r.remote(1), 1);
    }

    #[test]
    #[should_panic]
    fn a_guard_past_the_elements_panics() {
        let p: PerCpu<u8, 2> = PerCpu::default();
        p.local(&CpuGuard::host_thread(2));
    }
}
