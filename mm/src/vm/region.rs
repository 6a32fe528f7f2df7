//! The virtual-region allocator of the kernel mapping area.
//!
//! The area is split into arenas, each with its own short lock: a CPU
//! allocates from its home arena (CPU index modulo the arena count) and
//! tries the others only when that one is full, so CPUs do not queue on one
//! lock. Each arena keeps free ranges by start (first fit, coalesced on
//! free) and the regions it handed out, so a free must name exactly one
//! region it made, with the right kind.

use alloc::collections::BTreeMap;

use spin::Mutex;

use super::PAGE_SIZE;

pub const ARENAS: usize = 16;

/// Who made a region, so one API cannot free another's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RegionKind {
    /// `k_mem_map`: one guard page on each side.
    KMem,
    /// `phys_map`: one guard page on each side.
    Phys,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RegionError {
    /// No arena has a free range that long.
    Exhausted,
    /// `start, len` is not a region this allocator handed out as `kind`.
    NotARegion,
}

#[derive(Default)]
struct Arena {
    /// start -> length of each free range; never adjacent (coalesced).
    free: BTreeMap<u64, u64>,
    /// start -> (length, kind, claimed) of each region handed out;
    /// `claimed` while one caller is tearing it down.
    used: BTreeMap<u64, (u64, RegionKind, bool)>,
}

impl Arena {
    fn alloc(&mut self, len: u64, kind: RegionKind) -> Option<u64> {
        let (&start, &have) = self.free.iter().find(|(_, &l)| l >= len)?;
        self.free.remove(&start);
        if have > len {
            self.free.insert(start + len, have - len);
        }
        self.used.insert(start, (len, kind, false));
        Some(start)
    }

    fn free(&mut self, start: u64, len: u64, kind: RegionKind) -> Result<(), RegionError> {
        match self.used.get(&start) {
            Some(&(l, k, _)) if (l, k) == (len, kind) => {}
            _ => return Err(RegionError::NotARegion),
        }
        self.used.remove(&start);
        let (mut start, mut len) = (start, len);
        if let Some((&prev, &plen)) = self.free.range(..start).next_back() {
            if prev + plen == start {
                self.free.remove(&prev);
                start = prev;
                len += plen;
            }
        }
        if let Some(&next_len) = self.free.get(&(start + len)) {
            self.free.remove(&(start + len));
            len += next_len;
        }
        self.free.insert(start, len);
        Ok(())
    }
}

pub struct Regions {
    start: u64,
    arena_len: u64,
    arenas: [Mutex<Arena>; ARENAS],
}

impl Regions {
    /// An allocator over `area` (page-aligned), split into `ARENAS` equal
    /// arenas. Allocates nothing until first used.
    pub fn new(area: core::ops::Range<u64>) -> Regions {
        let arena_len = ((area.end - area.start) / ARENAS as u64) & !(PAGE_SIZE - 1);
        Regions { start: area.start, arena_len, arenas: core::array::from_fn(|_| Mutex::new(Arena::default())) }
    }

    fn arena(&self, i: usize) -> spin::MutexGuard<'_, Arena> {
        let mut a = self.arenas[i].lock();
        if a.free.is_empty() && a.used.is_empty() {
            a.free.insert(self.start + i as u64 * self.arena_len, self.arena_len);
        }
        a
    }

    /// A region of `len` bytes (page multiple, non-zero), preferring CPU
    /// `cpu`'s home arena.
    pub fn alloc(&self, len: u64, kind: RegionKind, cpu: usize) -> Result<u64, RegionError> {
        debug_assert!(len > 0 && len.is_multiple_of(PAGE_SIZE));
        if len > self.arena_len {
            return Err(RegionError::Exhausted);
        }
        (0..ARENAS)
            .map(|k| (cpu + k) % ARENAS)
            .find_map(|i| self.arena(i).alloc(len, kind))
            .ok_or(RegionError::Exhausted)
    }

    fn arena_of(&self, start: u64) -> Option<usize> {
        let i = start.checked_sub(self.start)? / self.arena_len;
        (i < ARENAS as u64).then_some(i as usize)
    }

    /// Claims `start, len` for tearing down if it is exactly a region
    /// handed out as `kind` and nobody else claimed it; of two callers
    /// unmapping one region at once, only one gets it.
    pub fn claim(&self, start: u64, len: u64, kind: RegionKind) -> bool {
        let Some(i) = self.arena_of(start) else { return false };
        match self.arenas[i].lock().used.get_mut(&start) {
            Some((l, k, claimed)) if (*l, *k, *claimed) == (len, kind, false) => {
                *claimed = true;
                true
            }
            _ => false,
        }
    }

    /// Gives up a claim (the teardown found the region not removable).
    pub fn unclaim(&self, start: u64) {
        if let Some(i) = self.arena_of(start) {
            if let Some((_, _, claimed)) = self.arenas[i].lock().used.get_mut(&start) {
                *claimed = false;
            }
        }
    }

    /// Gives back a region; it must be exactly one `alloc` returned.
    pub fn free(&self, start: u64, len: u64, kind: RegionKind) -> Result<(), RegionError> {
        let i = self.arena_of(start).ok_or(RegionError::NotARegion)?;
        self.arenas[i].lock().free(start, len, kind)
    }

    /// Bytes handed out and not freed, over all arenas.
    pub fn used_bytes(&self) -> u64 {
        self.arenas.iter().map(|a| a.lock().used.values().map(|(l, _, _)| l).sum::<u64>()).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const AREA: core::ops::Range<u64> = 0x1000_0000..0x1000_0000 + ARENAS as u64 * 0x10_0000;

    #[test]
    fn cpus_start_in_their_own_arenas() {
        let r = Regions::new(AREA);
        let a = r.alloc(PAGE_SIZE, RegionKind::KMem, 0).unwrap();
        let b = r.alloc(PAGE_SIZE, RegionKind::KMem, 1).unwrap();
        assert_eq!(a, AREA.start);
        assert_eq!(b, AREA.start + 0x10_0000);
    }

    #[test]
    fn freed_regions_coalesce_and_are_reused() {
        let r = Regions::new(AREA);
        let regions: Vec<u64> = (0..8).map(|_| r.alloc(3 * PAGE_SIZE, RegionKind::KMem, 2).unwrap()).collect();
        for w in regions.windows(2) {
            assert_eq!(w[1], w[0] + 3 * PAGE_SIZE, "first fit packs regions");
        }
        for &s in regions.iter().rev() {
            r.free(s, 3 * PAGE_SIZE, RegionKind::KMem).unwrap();
        }
        assert_eq!(r.used_bytes(), 0);
        // Everything coalesced back: the whole arena fits again.
        let whole = r.alloc(0x10_0000, RegionKind::Phys, 2).unwrap();
        assert_eq!(whole, regions[0]);
    }

    #[test]
    fn frees_must_name_a_region_exactly() {
        let r = Regions::new(AREA);
        let s = r.alloc(4 * PAGE_SIZE, RegionKind::KMem, 0).unwrap();
        assert_eq!(r.free(s + PAGE_SIZE, 3 * PAGE_SIZE, RegionKind::KMem), Err(RegionError::NotARegion));
        assert_eq!(r.free(s, 3 * PAGE_SIZE, RegionKind::KMem), Err(RegionError::NotARegion));
        assert_eq!(r.free(s, 4 * PAGE_SIZE, RegionKind::Phys), Err(RegionError::NotARegion));
        assert_eq!(r.free(0, PAGE_SIZE, RegionKind::KMem), Err(RegionError::NotARegion));
        assert!(!r.claim(s, 4 * PAGE_SIZE, RegionKind::Phys));
        assert!(r.claim(s, 4 * PAGE_SIZE, RegionKind::KMem));
        assert!(!r.claim(s, 4 * PAGE_SIZE, RegionKind::KMem), "claimed twice");
        r.unclaim(s);
        assert!(r.claim(s, 4 * PAGE_SIZE, RegionKind::KMem));
        r.free(s, 4 * PAGE_SIZE, RegionKind::KMem).unwrap();
        assert_eq!(r.free(s, 4 * PAGE_SIZE, RegionKind::KMem), Err(RegionError::NotARegion), "double free");
    }

    #[test]
    fn a_full_arena_spills_into_the_next_and_exhaustion_is_an_error() {
        let r = Regions::new(AREA);
        let mut got = Vec::new();
        while let Ok(s) = r.alloc(0x8_0000, RegionKind::KMem, 5) {
            got.push(s);
        }
        assert_eq!(got.len(), 2 * ARENAS, "every arena used");
        assert_eq!(r.alloc(PAGE_SIZE, RegionKind::KMem, 0), Err(RegionError::Exhausted));
        assert_eq!(r.alloc(0x20_0000, RegionKind::KMem, 0), Err(RegionError::Exhausted), "larger than an arena");
    }

    #[test]
    fn concurrent_allocs_never_overlap() {
        let r = std::sync::Arc::new(Regions::new(AREA));
        let handles: Vec<_> = (0..4)
            .map(|cpu| {
                let r = r.clone();
                std::thread::spawn(move || {
                    let mut mine = Vec::new();
                    for round in 0..200u64 {
                        let len = (1 + round % 5) * PAGE_SIZE;
                        mine.push((r.alloc(len, RegionKind::KMem, cpu).unwrap(), len));
                        if round % 3 == 0 {
                            let (s, l) = mine.swap_remove(0);
                            r.free(s, l, RegionKind::KMem).unwrap();
                        }
                    }
                    mine
                })
            })
            .collect();
        let mut all: Vec<(u64, u64)> = handles.into_iter().flat_map(|h| h.join().unwrap()).collect();
        all.sort();
        for w in all.windows(2) {
            assert!(w[0].0 + w[0].1 <= w[1].0, "regions {:x?} and {:x?} overlap", w[0], w[1]);
        }
    }
}
