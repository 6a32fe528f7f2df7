//! Which frames back pageable pages, for the eviction clock to jump over
//! the rest: one bitmap per CPU that was online when paging was enabled
//! (plus one shared map for any other CPU), each bit set by the CPU that
//! paged the frame in, in its own map.
//!
//! One bitmap for all CPUs put 64 frames in a word, and frames from
//! different CPUs' magazines interleave, so every fault wrote (with a
//! locked `fetch_or`) a word other CPUs were writing too. Now:
//! - `track(cpu, i)`: CPU `cpu` sets bit `i` in its own map, with a plain
//!   load and store (no other CPU sets bits there);
//! - `untrack(cpu, i)`: clears bit `i` in the running CPU's own map with a
//!   plain load and store if it is there (the CPU that faulted a page
//!   unmaps it: no other CPU's line is read); otherwise in every map that
//!   has it, with `fetch_and` (an eviction of a page another CPU faulted);
//! - `next(i)`: the first frame at or after `i` whose bit is set in any
//!   map: the evictor ORs the maps word by word, so it finds every
//!   candidate whichever CPU tracked it.
//!
//! Set and clear of one frame never race: both run while their CPU holds
//! the frame `BUSY` (a page-in sets the bit before it releases the frame;
//! eviction and unmap clear it while they hold it), and `BUSY` is taken by
//! an AcqRel compare-and-swap, so the clearer sees the bit. What can race
//! is the owner's plain store with a remote `fetch_and` of another bit in
//! the same word: the store may put that bit back. A bit set for a frame
//! that backs no page is only a wasted look (the policy checks `MAPPED`);
//! it may go the next time that frame is untracked. A bit is never lost:
//! only a frame's owner sets it, and nobody clears it while the frame
//! backs a page, which is what `Paging::audit` checks.
//!
//! Each map's words are a multiple of 128 bytes, so no two maps share a
//! line (the heap's size classes are aligned to their size, and larger
//! runs are whole pages).

use core::sync::atomic::{AtomicU64, Ordering};

use alloc::boxed::Box;
use alloc::vec::Vec;
use cpus::{CpuSet, MAX_CPUS};

/// Words per map are rounded up to this (16 words = 128 bytes).
const WORDS_ALIGN: usize = 16;
/// `slot` value of a CPU without a map of its own.
const SHARED: u8 = u8::MAX;

pub(crate) struct Candidates {
    frames: usize,
    /// `maps[k]`: the map of the `k`-th CPU online at enable; the last one
    /// is shared by every other CPU.
    maps: Vec<Box<[AtomicU64]>>,
    /// CPU → index into `maps`, `SHARED` for the shared map.
    slot: [u8; MAX_CPUS],
}

impl Candidates {
    /// Maps for `frames` frames: one per CPU in `online`, one shared.
    pub(crate) fn new(frames: usize, online: CpuSet) -> Candidates {
        let words = frames.div_ceil(64).div_ceil(WORDS_ALIGN).max(1) * WORDS_ALIGN;
        let mut slot = [SHARED; MAX_CPUS];
        let mut maps = Vec::new();
        for (cpu, slot) in slot.iter_mut().enumerate() {
            if online.contains(cpu) && maps.len() < usize::from(SHARED) {
                *slot = maps.len() as u8;
                maps.push((0..words).map(|_| AtomicU64::new(0)).collect());
            }
        }
        maps.push((0..words).map(|_| AtomicU64::new(0)).collect());
        Candidates { frames, maps, slot }
    }

    /// The map CPU `cpu` sets bits in, and whether it is its own.
    fn map_of(&self, cpu: usize) -> (usize, bool) {
        match self.slot.get(cpu).copied().unwrap_or(SHARED) {
            SHARED => (self.maps.len() - 1, false),
            k => (usize::from(k), true),
        }
    }

    /// CPU `cpu` (running, interrupts off, holding frame `i` busy) marks
    /// frame `i` as backing a pageable page.
    pub(crate) fn track(&self, cpu: usize, i: usize) {
        let (w, bit) = (i / 64, 1u64 << (i % 64));
        let (k, own) = self.map_of(cpu);
        let word = &self.maps[k][w];
        if own {
            // Only this CPU sets bits here; a racing remote clear of
            // another bit may come back (see the module documentation).
            word.store(word.load(Ordering::Relaxed) | bit, Ordering::Release);
        } else {
            word.fetch_or(bit, Ordering::Release);
        }
    }

    /// CPU `cpu` (running, interrupts off, holding frame `i` busy) marks
    /// frame `i` as backing no page any more. The running CPU's own map
    /// first: when it tracked the frame (its own region, unmapped), no
    /// other CPU's line is read. Otherwise (an eviction of a page another
    /// CPU faulted) every map is looked at and cleared with `fetch_and`.
    pub(crate) fn untrack(&self, cpu: usize, i: usize) {
        let (w, bit) = (i / 64, 1u64 << (i % 64));
        let (mine, own) = self.map_of(cpu);
        if own {
            let word = &self.maps[mine][w];
            let v = word.load(Ordering::Relaxed);
            if v & bit != 0 {
                word.store(v & !bit, Ordering::Release);
                return;
            }
        }
        for (k, map) in self.maps.iter().enumerate() {
            if k == mine && own {
                continue;
            }
            let word = &map[w];
            if word.load(Ordering::Relaxed) & bit != 0 {
                word.fetch_and(!bit, Ordering::Release);
            }
        }
    }

    /// Whether frame `i` is marked in some map.
    pub(crate) fn contains(&self, i: usize) -> bool {
        let (w, bit) = (i / 64, 1u64 << (i % 64));
        i < self.frames && self.maps.iter().any(|m| m[w].load(Ordering::Acquire) & bit != 0)
    }

    fn word(&self, w: usize) -> u64 {
        self.maps.iter().fold(0, |acc, m| acc | m[w].load(Ordering::Acquire))
    }

    /// The first frame at or after `i` marked in any map, or the frame
    /// count.
    pub(crate) fn next(&self, i: usize) -> usize {
        let n = self.frames;
        if i >= n {
            return n;
        }
        let words = n.div_ceil(64);
        let mut w = i / 64;
        let mut bits = self.word(w) & (!0u64 << (i % 64));
        loop {
            if bits != 0 {
                return (w * 64 + bits.trailing_zeros() as usize).min(n);
            }
            w += 1;
            if w == words {
                return n;
            }
            bits = self.word(w);
        }
    }

    /// How many maps there are (the CPUs with their own, plus the shared).
    #[cfg(test)]
    pub(crate) fn maps(&self) -> usize {
        self.maps.len()
    }

    /// Address of the word CPU `cpu` writes for frame `i` (tests: no two
    /// CPUs' words share a line).
    #[cfg(test)]
    pub(crate) fn word_addr(&self, cpu: usize, i: usize) -> usize {
        &self.maps[self.map_of(cpu).0][i / 64] as *const AtomicU64 as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn online(n: usize) -> CpuSet {
        CpuSet::first(n)
    }

    #[test]
    fn frames_of_different_cpus_are_written_in_lines_of_their_own() {
        let c = Candidates::new(1000, online(4));
        assert_eq!(c.maps(), 5);
        let lines: Vec<usize> = (0..4).map(|cpu| c.word_addr(cpu, 5) / 64).collect();
        for a in 0..4 {
            for b in a + 1..4 {
                assert_ne!(lines[a], lines[b], "CPUs {a} and {b} write one line for neighbouring frames");
                assert!(lines[a].abs_diff(lines[b]) >= 2, "no prefetch pair shared either");
            }
        }
    }

    #[test]
    fn the_evictor_finds_every_candidate_whichever_cpu_tracked_it() {
        let c = Candidates::new(300, online(3));
        // Frames of one word tracked by different CPUs, one by a CPU that
        // was not online at enable (shared map).
        for (cpu, i) in [(0, 3), (1, 4), (2, 5), (7, 6), (1, 250)] {
            c.track(cpu, i);
        }
        let mut found = Vec::new();
        let mut i = c.next(0);
        while i < 300 {
            found.push(i);
            i = c.next(i + 1);
        }
        assert_eq!(found, [3, 4, 5, 6, 250]);
        // Untracked by another CPU than the one that tracked it (eviction).
        c.untrack(2, 4);
        c.untrack(0, 6);
        assert!(!c.contains(4) && !c.contains(6));
        assert_eq!((c.next(0), c.next(4), c.next(6)), (3, 5, 250));
        assert_eq!(c.next(251), 300);
    }
}
