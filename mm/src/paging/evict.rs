//! Eviction: choose victims, claim each (frame busy, entry swapped for a
//! busy marker that keeps the frame address), shoot the batch down once,
//! then write back what needs writing and leave a token with the
//! location. Only after the shootdown is a page copied or its frame
//! reused: until then another CPU may still write through its TLB.

use core::sync::atomic::{AtomicU64, Ordering};

use arrayvec::ArrayVec;

use super::slots::SlotFor;
use super::stats::{Event, Timing};
use super::token::{self, Location, KEPT};
use super::transition;
use super::view::View;
use super::{Pager, Paging, PagingError, StoreError};
use crate::frame_db::paging::{BUSY, MAPPED};
use crate::vm::{VmPlatform, PAGE_SIZE};

/// Victims per eviction: one shootdown covers them all.
pub(crate) const BATCH: usize = 8;
/// Policy choices that may turn out taken (another CPU claimed the frame
/// first) per victim wanted, before the batch goes with what it has.
const SELECT_ATTEMPTS: usize = 4;
/// Valid copies given back per try when the store is full.
const COPIES_DROPPED: usize = 32;

/// A claimed victim: frame busy, entry a busy marker.
pub(crate) struct Victim<'t> {
    pub index: usize,
    pub frame: u64,
    pub va: u64,
    pub entry: &'t AtomicU64,
    /// The entry as it was when claimed (accessed and dirty bits included).
    pub old: u64,
}

pub(crate) type Victims<'t> = ArrayVec<Victim<'t>, BATCH>;

impl<P: VmPlatform> Paging<'_, P> {
    /// Evicts up to `want` (at most `BATCH`) pages chosen by the policy and
    /// returns their frames, still allocated, for the caller to reuse or
    /// free. `NoEvictableFrame` if the policy found nothing.
    pub(crate) fn evict_batch(
        &self,
        pg: &Pager,
        want: usize,
        slot_for: SlotFor,
    ) -> Result<ArrayVec<u64, BATCH>, PagingError> {
        let want = want.min(BATCH);
        let view = View { paging: *self, db: pg.db };
        let mut victims = Victims::new();
        let mut misses = 0;
        while victims.len() < want && misses < want * SELECT_ATTEMPTS {
            let start = pg.stats.start(self.vm.p.cpu_index(), || self.vm.p.now_ns());
            let picked = pg.policy.select(&view);
            pg.stats.finish(self.vm.p.cpu_index(), Timing::Select, start, || self.vm.p.now_ns());
            let Ok(i) = picked else { break };
            match self.claim_victim(pg, i) {
                Some(v) => victims.push(v),
                None => misses += 1,
            }
        }
        if victims.is_empty() {
            return Err(PagingError::NoEvictableFrame);
        }
        let (frames, error) = self.evict_claimed(pg, victims, slot_for);
        match error {
            Some(e) if frames.is_empty() => Err(e),
            _ => Ok(frames),
        }
    }

    /// Claims frame `i` for eviction if it backs a resident, unpinned page
    /// nobody else is working on.
    pub(crate) fn claim_victim(&self, pg: &Pager, i: usize) -> Option<Victim<'_>> {
        let c = transition::claim_victim_entry(pg.db, i, |va| self.paged_entry(va).ok())?;
        Some(Victim { index: i, frame: pg.db.phys_of(i).as_u64(), va: c.va, entry: c.entry, old: c.old })
    }

    /// Shoots the victims down in one go, then writes each back and leaves
    /// its token. Returns the frames of the pages evicted and the first
    /// error; a victim that failed is resident again, as it was.
    pub(crate) fn evict_claimed(
        &self,
        pg: &Pager,
        victims: Victims<'_>,
        slot_for: SlotFor,
    ) -> (ArrayVec<u64, BATCH>, Option<PagingError>) {
        let mut freed = ArrayVec::new();
        let lo = victims.iter().map(|v| v.va).min().unwrap_or(0);
        let hi = victims.iter().map(|v| v.va).max().unwrap_or(0);
        if let Err(e) = self.vm.shoot_down(self.vm.kernel(), lo, (hi - lo) / PAGE_SIZE + 1) {
            for v in &victims {
                self.unclaim(pg, v);
            }
            return (freed, Some(PagingError::Shootdown { cpus: e.cpus }));
        }
        let mut error = None;
        for v in &victims {
            match self.write_back(pg, v, slot_for) {
                Ok(token) => {
                    // The copy slot, if any, went into the token.
                    transition::finish_eviction(pg.db, v.index, v.entry, token);
                    pg.untrack(self.vm.p.cpu_index(), v.index);
                    freed.push(v.frame);
                }
                Err(e) => {
                    self.unclaim(pg, v);
                    error.get_or_insert(e);
                }
            }
        }
        (freed, error)
    }

    /// Puts a claimed victim back as it was.
    pub(crate) fn unclaim(&self, pg: &Pager, v: &Victim<'_>) {
        transition::unclaim(pg.db, v.index, v.entry, v.old);
    }

    /// Saves victim `v`'s contents if they cannot be had again, and returns
    /// the token that says where they are.
    fn write_back(&self, pg: &Pager, v: &Victim<'_>, slot_for: SlotFor) -> Result<u64, PagingError> {
        let flags = pg.db.paging_flags(v.index);
        let copy = pg.db.entry(v.index).copy.load(Ordering::Relaxed);
        let perms = v.old & KEPT;
        let token = |loc| token::encode(loc, perms).expect("store slots fit in a token");
        if let Some(loc) = transition::clean_location(v.old, flags, copy) {
            pg.stats.count(self.vm.p.cpu_index(), Event::EvictClean);
            return Ok(token(loc));
        }
        let slot = match copy {
            0 => self.take_slot(pg, slot_for)?,
            c => c - 1,
        };
        pg.stats.count(self.vm.p.cpu_index(), Event::StoreWrite);
        let start = pg.stats.start(self.vm.p.cpu_index(), || self.vm.p.now_ns());
        let written = self.vm.with_kept(v.frame, |f| pg.store.page_out(slot, f));
        pg.stats.finish(self.vm.p.cpu_index(), Timing::StoreOut, start, || self.vm.p.now_ns());
        if let Err(e) = written {
            if copy == 0 {
                let _ = pg.store.location_free(slot);
            }
            return Err(PagingError::Store(e));
        }
        let cpu = self.vm.p.cpu_index();
        pg.stats.count(cpu, Event::PageOut);
        pg.stats.count(cpu, Event::EvictDirty);
        Ok(token(Location::Slot(slot)))
    }

    /// A store slot; when the store is full, valid copies of resident pages
    /// are given back first (they only save writes).
    fn take_slot(&self, pg: &Pager, slot_for: SlotFor) -> Result<u64, PagingError> {
        match pg.store.location_get(slot_for) {
            Err(StoreError::Full) => {
                self.drop_copies(pg);
                pg.store.location_get(slot_for).map_err(|e| match e {
                    StoreError::Full => PagingError::StoreFull,
                    e => PagingError::Store(e),
                })
            }
            r => r.map_err(PagingError::Store),
        }
    }

    /// Frees up to `COPIES_DROPPED` slots that hold copies of resident
    /// pages. Each frame is claimed busy while its copy goes, so no
    /// eviction is writing to that slot meanwhile.
    fn drop_copies(&self, pg: &Pager) {
        let mut dropped = 0;
        for i in 0..pg.db.len() {
            if dropped == COPIES_DROPPED {
                break;
            }
            if pg.db.entry(i).copy.load(Ordering::Relaxed) == 0
                || pg.db.update_paging(i, MAPPED, BUSY, BUSY, 0).is_err()
            {
                continue;
            }
            let c = pg.db.entry(i).copy.swap(0, Ordering::AcqRel);
            if c != 0 {
                let _ = pg.store.location_free(c - 1);
                dropped += 1;
            }
            pg.release(i);
        }
    }
}
