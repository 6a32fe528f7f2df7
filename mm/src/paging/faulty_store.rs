//! Fault injection at the store layer: a store that passes every call to
//! another one, except that it fails the n-th page-out or page-in from now
//! with `Io`, moving nothing. Tests use it to prove that a failed write
//! leaves its page resident and mapped and a failed read leaves it paged
//! out, with the data intact either way.

use core::sync::atomic::{AtomicU64, Ordering};

use super::slots::SlotFor;
use super::store::{BackingStore, StoreError};

/// Which transfer to fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transfer {
    Out,
    In,
}

pub struct FaultyStore {
    inner: &'static dyn BackingStore,
    /// Countdown to the failing page-out / page-in (0: disarmed).
    fail_out: AtomicU64,
    fail_in: AtomicU64,
    /// Transfers failed so far.
    failed: AtomicU64,
}

impl FaultyStore {
    pub fn new(inner: &'static dyn BackingStore) -> FaultyStore {
        FaultyStore { inner, fail_out: AtomicU64::new(0), fail_in: AtomicU64::new(0), failed: AtomicU64::new(0) }
    }

    /// Fails the `nth` (from 1) transfer of kind `t` from now on.
    pub fn arm(&self, t: Transfer, nth: u64) {
        self.counter(t).store(nth, Ordering::SeqCst);
    }

    pub fn disarm(&self) {
        self.fail_out.store(0, Ordering::SeqCst);
        self.fail_in.store(0, Ordering::SeqCst);
    }

    pub fn failed(&self) -> u64 {
        self.failed.load(Ordering::SeqCst)
    }

    fn counter(&self, t: Transfer) -> &AtomicU64 {
        match t {
            Transfer::Out => &self.fail_out,
            Transfer::In => &self.fail_in,
        }
    }

    /// Counts one transfer of kind `t`; true if this one must fail.
    fn fails_now(&self, t: Transfer) -> bool {
        let c = self.counter(t);
        let mut n = c.load(Ordering::SeqCst);
        while n > 0 {
            match c.compare_exchange(n, n - 1, Ordering::SeqCst, Ordering::SeqCst) {
                Ok(_) => break,
                Err(now) => n = now,
            }
        }
        let hit = n == 1;
        if hit {
            self.failed.fetch_add(1, Ordering::SeqCst);
        }
        hit
    }
}

impl BackingStore for FaultyStore {
    fn location_get(&self, slot_for: SlotFor) -> Result<u64, StoreError> {
        self.inner.location_get(slot_for)
    }

    fn location_free(&self, slot: u64) -> Result<(), StoreError> {
        self.inner.location_free(slot)
    }

    fn page_out(&self, slot: u64, frame: &crate::frame::Frame) -> Result<(), StoreError> {
        if self.fails_now(Transfer::Out) {
            return Err(StoreError::Io { slot });
        }
        self.inner.page_out(slot, frame)
    }

    fn page_in(&self, slot: u64, frame: &mut crate::frame::Frame) -> Result<(), StoreError> {
        if self.fails_now(Transfer::In) {
            return Err(StoreError::Io { slot });
        }
        self.inner.page_in(slot, frame)
    }

    fn holds(&self, slot: u64) -> bool {
        self.inner.holds(slot)
    }

    fn usage(&self) -> (u64, u64) {
        self.inner.usage()
    }

    fn name(&self) -> &'static str {
        self.inner.name()
    }
}
