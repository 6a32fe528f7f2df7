//! The backing store's slot allocator: a bitmap of atomic words and a free
//! count. Allocation first reserves from the count, then claims a bit, so
//! a reservation always finds one. The last free slot is kept for page
//! faults (Zephyr's rule), so a fault can always make progress by paging
//! one page out while eviction for any other purpose fails first.

use core::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use alloc::vec::Vec;

/// Who asks for a slot: the last free one is kept for page faults.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SlotFor {
    /// A page fault: may take the last free slot.
    Fault,
    /// Anything else (an explicit page-out, a pin, a caller filling slots
    /// for `k_mem_map_unpaged`): leaves the last free slot.
    Other,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SlotError {
    /// No slot left (for a non-fault caller: only the reserved one left).
    Full,
    /// The slot index is beyond the store.
    OutOfRange { slot: u64 },
    /// Freeing a slot that is not allocated.
    NotAllocated { slot: u64 },
}

pub struct SlotMap {
    words: Vec<AtomicU64>,
    total: u64,
    free: AtomicU64,
    /// Word where the next search starts, so CPUs spread out.
    hint: AtomicUsize,
}

impl SlotMap {
    pub fn new(total: u64) -> SlotMap {
        let words = (0..total.div_ceil(64)).map(|_| AtomicU64::new(0)).collect::<Vec<_>>();
        // Bits past `total` in the last word are set: never handed out.
        if !total.is_multiple_of(64) {
            words[words.len() - 1].store(!0 << (total % 64), Ordering::Relaxed);
        }
        SlotMap { words, total, free: AtomicU64::new(total), hint: AtomicUsize::new(0) }
    }

    pub fn total(&self) -> u64 {
        self.total
    }

    pub fn used(&self) -> u64 {
        self.total - self.free.load(Ordering::Relaxed)
    }

    /// A free slot. The last free slot goes only to a fault.
    pub fn alloc(&self, slot_for: SlotFor) -> Result<u64, SlotError> {
        let keep = match slot_for {
            SlotFor::Fault => 0,
            SlotFor::Other => 1,
        };
        let mut f = self.free.load(Ordering::Relaxed);
        loop {
            if f <= keep {
                return Err(SlotError::Full);
            }
            match self.free.compare_exchange_weak(f, f - 1, Ordering::AcqRel, Ordering::Relaxed) {
                Ok(_) => break,
                Err(now) => f = now,
            }
        }
        // A bit is ours to find: the count above reserved it.
        let n = self.words.len();
        let start = self.hint.load(Ordering::Relaxed) % n;
        loop {
            for k in 0..n {
                let w = (start + k) % n;
                let mut bits = self.words[w].load(Ordering::Relaxed);
                while bits != u64::MAX {
                    let bit = (!bits).trailing_zeros() as u64;
                    let prev = self.words[w].fetch_or(1 << bit, Ordering::AcqRel);
                    if prev & (1 << bit) == 0 {
                        self.hint.store(w, Ordering::Relaxed);
                        return Ok(w as u64 * 64 + bit);
                    }
                    bits = prev | (1 << bit);
                }
            }
            // Every word looked full while a freer's bit and count were
            // not both visible yet: look again.
            core::hint::spin_loop();
        }
    }

    /// Gives slot `slot` back.
    pub fn free(&self, slot: u64) -> Result<(), SlotError> {
        if slot >= self.total {
            return Err(SlotError::OutOfRange { slot });
        }
        let bit = 1u64 << (slot % 64);
        let prev = self.words[(slot / 64) as usize].fetch_and(!bit, Ordering::AcqRel);
        if prev & bit == 0 {
            return Err(SlotError::NotAllocated { slot });
        }
        self.free.fetch_add(1, Ordering::AcqRel);
        Ok(())
    }

    /// Whether `slot` is allocated.
    pub fn is_used(&self, slot: u64) -> bool {
        slot < self.total && self.words[(slot / 64) as usize].load(Ordering::Relaxed) & (1 << (slot % 64)) != 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_last_slot_is_kept_for_faults() {
        let m = SlotMap::new(3);
        let a = m.alloc(SlotFor::Other).unwrap();
        let b = m.alloc(SlotFor::Other).unwrap();
        assert_eq!(m.alloc(SlotFor::Other), Err(SlotError::Full), "the last one is reserved");
        let c = m.alloc(SlotFor::Fault).unwrap();
        assert_eq!(m.alloc(SlotFor::Fault), Err(SlotError::Full));
        let mut all = [a, b, c];
        all.sort();
        assert_eq!(all, [0, 1, 2]);
        assert_eq!(m.used(), 3);
    }

    #[test]
    fn bad_frees_change_nothing() {
        let m = SlotMap::new(70);
        let s = m.alloc(SlotFor::Other).unwrap();
        assert_eq!(m.free(70), Err(SlotError::OutOfRange { slot: 70 }));
        assert_eq!(m.free(s + 1), Err(SlotError::NotAllocated { slot: s + 1 }));
        assert_eq!(m.used(), 1);
        m.free(s).unwrap();
        assert_eq!(m.free(s), Err(SlotError::NotAllocated { slot: s }), "double free");
        assert_eq!(m.used(), 0);
    }

    #[test]
    fn every_slot_up_to_an_odd_total_is_handed_out_once() {
        let m = SlotMap::new(130);
        let mut got: Vec<u64> = (0..130).map(|_| m.alloc(SlotFor::Fault).unwrap()).collect();
        got.sort();
        assert_eq!(got, (0..130).collect::<Vec<_>>());
        assert_eq!(m.alloc(SlotFor::Fault), Err(SlotError::Full));
    }

    #[test]
    fn concurrent_alloc_and_free_never_share_a_slot() {
        let m = std::sync::Arc::new(SlotMap::new(256));
        let owner: std::sync::Arc<Vec<AtomicU64>> = std::sync::Arc::new((0..256).map(|_| AtomicU64::new(0)).collect());
        let handles: Vec<_> = (1..=4u64)
            .map(|t| {
                let (m, owner) = (m.clone(), owner.clone());
                std::thread::spawn(move || {
                    for _ in 0..2000 {
                        let held: Vec<u64> = (0..20).filter_map(|_| m.alloc(SlotFor::Other).ok()).collect();
                        for &s in &held {
                            assert_eq!(owner[s as usize].swap(t, Ordering::AcqRel), 0, "slot {s} handed out twice");
                        }
                        for &s in &held {
                            owner[s as usize].store(0, Ordering::Release);
                            m.free(s).unwrap();
                        }
                    }
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
        assert_eq!(m.used(), 0);
    }
}
