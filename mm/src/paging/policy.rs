//! Eviction policy: which mapped frame to page out when free frames run
//! low. The policy only chooses. The paging code owns the frames: it marks
//! the victim busy with a compare-and-swap in the frame database and asks
//! again if that fails, so a stale or shared choice is never a correctness
//! problem. The policies still try not to hand two concurrent callers the
//! same frame, because every lost compare-and-swap is a wasted search.
//!
//! Two policies, replaceable behind `EvictionPolicy`:
//! - `Nru`, a clock over not-recently-used classes (Zephyr's NRU, with the
//!   hand shared between CPUs): no per-frame state, O(frames) worst case.
//! - `Lru`, true least-recently-used order in a linked list, with a second
//!   chance for frames accessed since they were last looked at.

use core::sync::atomic::{AtomicUsize, Ordering};

use alloc::vec::Vec;

/// What the policy may know about frame `i` (an index into the paging
/// frame set `0..len`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameInfo {
    /// Mapped, not pinned and not busy: the frame could be paged out now.
    pub evictable: bool,
    pub accessed: bool,
    pub dirty: bool,
}

/// The frames as the paging code sees them. The kernel implements it over
/// the frame database and page-table entries, tests over arrays. `Lru`
/// calls it under its lock, so an implementation must not call back into
/// the policy.
pub trait FrameView {
    fn len(&self) -> usize;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    fn info(&self, i: usize) -> FrameInfo;
    /// Clears the accessed bit of frame `i` (its second chance). Returns
    /// the previous value.
    fn clear_accessed(&self, i: usize) -> bool;
    /// The first frame at or after `i` that may be evictable (`len()` if
    /// none is), so a scan can jump over frames paging does not use.
    fn next_candidate(&self, i: usize) -> usize {
        i
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PolicyError {
    /// Nothing could be evicted, e.g. every mapped frame is pinned or busy.
    NoEvictableFrame,
}

pub trait EvictionPolicy: Sync {
    /// A victim among the evictable frames; `NoEvictableFrame` if none is.
    /// Bounded: never waits for a frame to become evictable.
    fn select(&self, frames: &dyn FrameView) -> Result<usize, PolicyError>;
    /// Frame `i` was just mapped (paged in or populated).
    fn on_mapped(&self, i: usize);
    /// Frame `i` is no longer mapped (evicted or unmapped).
    fn on_unmapped(&self, i: usize);
}

/// Zephyr's NRU class: 0 = clean and not accessed, the cheapest to evict
/// (no write-back, not in use) up to 3 = accessed and dirty.
fn class(info: FrameInfo) -> u8 {
    (u8::from(info.accessed) << 1) | u8::from(info.dirty)
}

/// Evictable frames the clock looks at before it settles for the best
/// class it has seen.
pub const NRU_WINDOW: usize = 32;

/// Clock over NRU classes. The hand is one counter for all CPUs and each
/// step of a search claims the next frame with `fetch_add`, so concurrent
/// searches look at different frames until the hand has gone all the way
/// round. The first class-0 frame wins; accessed frames passed over lose
/// their accessed bit, so unless they are used again they are class 0 (or
/// 1) when the hand comes back.
pub struct Nru {
    /// Counts steps, reduced modulo the frame count on use. When it wraps
    /// at `usize::MAX` a frame count that is not a power of two skips a
    /// few frames once, which costs nothing but one slightly shorter sweep.
    hand: AtomicUsize,
}

impl Nru {
    pub const fn new() -> Nru {
        Nru { hand: AtomicUsize::new(0) }
    }

    /// One private sweep from `start`, touching no accessed bits: the
    /// lowest-class evictable frame. Used when the clock saw nothing
    /// evictable, since concurrent searches took part of the hand's
    /// positions and may have hidden the only evictable frames.
    fn lowest_class(frames: &dyn FrameView, start: usize) -> Result<usize, PolicyError> {
        let n = frames.len();
        let mut best: Option<(u8, usize)> = None;
        // From `start` to the end, then from 0 back to `start`.
        let mut i = frames.next_candidate(start);
        let mut wrapped = false;
        loop {
            if i >= n && !wrapped {
                wrapped = true;
                i = frames.next_candidate(0);
                continue;
            }
            if i >= n || (wrapped && i >= start) {
                break;
            }
            let info = frames.info(i);
            if info.evictable && best.is_none_or(|(c, _)| class(info) < c) {
                best = Some((class(info), i));
            }
            i = frames.next_candidate(i + 1);
        }
        best.map(|(_, i)| i).ok_or(PolicyError::NoEvictableFrame)
    }
}

impl Default for Nru {
    fn default() -> Self {
        Self::new()
    }
}

impl EvictionPolicy for Nru {
    fn select(&self, frames: &dyn FrameView) -> Result<usize, PolicyError> {
        let n = frames.len();
        if n == 0 {
            return Err(PolicyError::NoEvictableFrame);
        }
        let mut best: Option<(u8, usize)> = None;
        let mut start = None;
        let mut cleared = false;
        let mut seen = 0;
        // Two sweeps: the first gives accessed frames their second chance,
        // the second finds those not used since. `travelled` counts the
        // frames the hand passed, jumps over non-candidates included.
        let mut travelled = 0;
        while travelled < 2 * n {
            // Nothing was cleared, so a second sweep could find only what
            // the first already ranked.
            if travelled >= n && !cleared {
                break;
            }
            // Relaxed: the hand only spreads searches out; the frame
            // database's compare-and-swap is what orders ownership.
            let raw = self.hand.fetch_add(1, Ordering::Relaxed) % n;
            let i = frames.next_candidate(raw);
            if i >= n {
                // Nothing up to the end: the hand goes round to 0.
                self.hand.fetch_add(n - raw - 1, Ordering::Relaxed);
                travelled += n - raw;
                continue;
            }
            self.hand.fetch_add(i - raw, Ordering::Relaxed);
            travelled += i - raw + 1;
            start.get_or_insert(i);
            let info = frames.info(i);
            if !info.evictable {
                continue;
            }
            let c = class(info);
            if c == 0 {
                return Ok(i);
            }
            seen += 1;
            if info.accessed {
                frames.clear_accessed(i);
                cleared = true;
            }
            if best.is_none_or(|(b, _)| c < b) {
                best = Some((c, i));
            }
            // Bounded: the best of a window of candidates, so a search
            // costs O(WINDOW) evictable frames, not O(frames), when none is
            // clean and idle (e.g. every page was just written).
            if seen >= NRU_WINDOW {
                break;
            }
        }
        match best {
            Some((_, i)) => Ok(i),
            None => Self::lowest_class(frames, start.unwrap_or(0)),
        }
    }

    // The clock keeps no per-frame state: the accessed bits the hardware
    // sets are its whole record of use.
    fn on_mapped(&self, _i: usize) {}

    fn on_unmapped(&self, _i: usize) {}
}

/// "No neighbour" in a link. Links are `u32` to halve the side table
/// (a frame index fits: 2^32 frames of 4 KiB is 16 TiB).
const NIL: u32 = u32::MAX;

#[derive(Clone, Copy)]
struct Link {
    prev: u32,
    next: u32,
}

const UNLINKED: Link = Link { prev: NIL, next: NIL };

/// The mapped frames from least (head) to most (tail) recently mapped or
/// found accessed, as an intrusive list over a table indexed by frame.
struct Order {
    links: Vec<Link>,
    head: u32,
    tail: u32,
    linked: usize,
}

impl Order {
    fn contains(&self, i: u32) -> bool {
        self.head == i || self.links[i as usize].prev != NIL
    }

    fn unlink(&mut self, i: u32) {
        let Link { prev, next } = self.links[i as usize];
        match prev {
            NIL => self.head = next,
            p => self.links[p as usize].next = next,
        }
        match next {
            NIL => self.tail = prev,
            n => self.links[n as usize].prev = prev,
        }
        self.links[i as usize] = UNLINKED;
        self.linked -= 1;
    }

    /// Makes `i` the most recent, linking it if it was not.
    fn move_to_tail(&mut self, i: u32) {
        if self.contains(i) {
            self.unlink(i);
        }
        self.links[i as usize] = Link { prev: self.tail, next: NIL };
        match self.tail {
            NIL => self.head = i,
            t => self.links[t as usize].next = i,
        }
        self.tail = i;
        self.linked += 1;
    }
}

/// Least recently used, with a second chance: `select` walks from the
/// least recent end; a frame accessed since it was last looked at has its
/// bit cleared and goes to the most recent end instead of being evicted.
/// One lock guards the order; eviction is rare next to the write-back it
/// leads to, so the lock is not contended in a way that matters.
pub struct Lru {
    order: spin::Mutex<Order>,
}

impl Lru {
    /// A policy for frames `0..len`, none of them mapped yet.
    ///
    /// # Panics
    /// If `len` does not fit the `u32` links.
    pub fn new(len: usize) -> Lru {
        assert!(len < NIL as usize, "Lru: {len} frames do not fit u32 links");
        let links = alloc::vec![UNLINKED; len];
        Lru { order: spin::Mutex::new(Order { links, head: NIL, tail: NIL, linked: 0 }) }
    }

    fn index(i: usize) -> u32 {
        // Out-of-range indices fail here or on the table, both as a panic:
        // a frame index the policy was not built for is a paging-code bug.
        u32::try_from(i).expect("Lru: frame index beyond u32")
    }
}

impl EvictionPolicy for Lru {
    fn select(&self, frames: &dyn FrameView) -> Result<usize, PolicyError> {
        let mut order = self.order.lock();
        let mut cur = order.head;
        // The least recent evictable frame, in case every evictable frame
        // turns out to be in constant use.
        let mut fallback = None;
        // Each frame is visited at most twice: once in place, once more
        // after a second chance sent it to the tail.
        for _ in 0..2 * order.linked {
            if cur == NIL {
                break;
            }
            let next = order.links[cur as usize].next;
            let info = frames.info(cur as usize);
            if info.evictable {
                if !info.accessed {
                    // The victim goes to the tail too, so a concurrent
                    // caller is not handed it before it is marked busy.
                    // It stays linked until `on_unmapped`.
                    order.move_to_tail(cur);
                    return Ok(cur as usize);
                }
                frames.clear_accessed(cur as usize);
                fallback.get_or_insert(cur);
                // Behind everything still to visit, so visited once more.
                // (Unless it was the tail: then no frame was sent back
                // before it, so it is the fallback anyway.)
                order.move_to_tail(cur);
            }
            cur = next;
        }
        let victim = fallback.ok_or(PolicyError::NoEvictableFrame)?;
        order.move_to_tail(victim);
        Ok(victim as usize)
    }

    fn on_mapped(&self, i: usize) {
        self.order.lock().move_to_tail(Self::index(i));
    }

    fn on_unmapped(&self, i: usize) {
        let i = Self::index(i);
        let mut order = self.order.lock();
        if order.contains(i) {
            order.unlink(i);
        }
    }
}

#[cfg(test)]
mod tests;
