//! Synchronisation facade: loom's types under `cfg(loom)` so the model
//! checker sees every access, spin locks and core atomics otherwise.

#[cfg(not(loom))]
pub(crate) use core::sync::atomic::{fence, AtomicBool, AtomicI64, AtomicU32, AtomicU64, AtomicUsize, Ordering};
#[cfg(loom)]
pub(crate) use loom::sync::atomic::{fence, AtomicBool, AtomicI64, AtomicU32, AtomicU64, AtomicUsize, Ordering};

/// A mutual-exclusion lock with the same surface in both worlds.
pub struct Mutex<T> {
    #[cfg(not(loom))]
    inner: spin::Mutex<T>,
    #[cfg(loom)]
    inner: loom::sync::Mutex<T>,
}

#[cfg(not(loom))]
pub type MutexGuard<'a, T> = spin::MutexGuard<'a, T>;
#[cfg(loom)]
pub type MutexGuard<'a, T> = loom::sync::MutexGuard<'a, T>;

impl<T> Mutex<T> {
    #[cfg(not(loom))]
    pub const fn new(value: T) -> Mutex<T> {
        Mutex { inner: spin::Mutex::new(value) }
    }

    #[cfg(loom)]
    pub fn new(value: T) -> Mutex<T> {
        Mutex { inner: loom::sync::Mutex::new(value) }
    }

    pub fn lock(&self) -> MutexGuard<'_, T> {
        #[cfg(not(loom))]
        return self.inner.lock();
        #[cfg(loom)]
        return self.inner.lock().unwrap();
    }

    /// `lock`, counted in `counts` (the running CPU's): a wait spins on a
    /// plain read of the lock word (test and test-and-set, as `spin`'s own
    /// `lock` does) and counts its iterations; the first try that fails
    /// makes the acquisition contended.
    pub fn lock_counted(&self, counts: &crate::lock_count::LockCounts) -> MutexGuard<'_, T> {
        if let Some(g) = self.try_lock() {
            counts.taken(0);
            return g;
        }
        self.lock_contended(counts)
    }

    /// The wait of `lock_counted`, for a caller whose own first try just
    /// failed: counted as contended (at least one spin) however soon the
    /// lock comes free.
    pub fn lock_contended(&self, counts: &crate::lock_count::LockCounts) -> MutexGuard<'_, T> {
        #[cfg(not(loom))]
        {
            let mut spins = 0u64;
            loop {
                while self.inner.is_locked() {
                    spins += 1;
                    core::hint::spin_loop();
                }
                if let Some(g) = self.inner.try_lock() {
                    counts.taken(spins.max(1));
                    return g;
                }
                spins += 1;
            }
        }
        #[cfg(loom)]
        {
            // loom's lock blocks the modelled thread instead of spinning.
            let g = self.lock();
            counts.taken(1);
            g
        }
    }

    pub fn try_lock(&self) -> Option<MutexGuard<'_, T>> {
        #[cfg(not(loom))]
        return self.inner.try_lock();
        #[cfg(loom)]
        return self.inner.try_lock().ok();
    }
}
