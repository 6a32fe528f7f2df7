//! Bonwick & Adams magazines: small stacks of free frames a CPU allocates
//! from and frees to without touching shared state, and the depot of full
//! magazines they are exchanged with.

use arrayvec::ArrayVec;

/// Largest magazine; the capacity in use is chosen at run time (`cap`).
pub const MAG_MAX: usize = 64;

/// Frame indexes (into the frame database).
pub type Magazine = ArrayVec<u32, MAG_MAX>;

/// Full magazines a CPU keeps for itself before it gives any to the depot.
/// 32 magazines of 32 frames (the default capacity) cover a 1024-page
/// region (`fault.anon`'s): the frames a CPU frees when it unmaps one come
/// back to that CPU when it faults in the next, still in its own cache,
/// instead of going through the depot to whichever CPU asks next (every
/// line of such a frame was last written by another CPU, so zeroing it is
/// 64 line transfers, and the sharing tracer counted ~290 conflicting
/// accesses per fault at 8 CPUs). At most `RESERVE * MAG_MAX` frames per
/// CPU (8 MiB); a reclaim under memory pressure drains them like the rest.
///
/// Under loom, none: a model's threads run on small coroutine stacks that a
/// 32-magazine cache (8 KiB) overflows, and the models are about what
/// crosses CPUs (depot puts, drains, remote frees); the reserve is the
/// owner's alone, behind the same `OwnerCell` (host tests cover it).
pub const RESERVE: usize = if cfg!(loom) { 0 } else { 32 };

/// One CPU's pair of magazines and its reserve of full ones. `previous`
/// lets a CPU that alternates between allocating and freeing around a
/// magazine boundary avoid a depot trip every time.
#[derive(Default)]
pub struct CpuCache {
    pub loaded: Magazine,
    pub previous: Magazine,
    reserve: ArrayVec<Magazine, RESERVE>,
    /// Frames in `reserve`, kept so that `len`, which the fast path calls
    /// on every operation, does not walk the reserve.
    reserved: usize,
}

impl CpuCache {
    pub const fn new() -> CpuCache {
        CpuCache {
            loaded: ArrayVec::new_const(),
            previous: ArrayVec::new_const(),
            reserve: ArrayVec::new_const(),
            reserved: 0,
        }
    }

    pub fn len(&self) -> usize {
        self.loaded.len() + self.previous.len() + self.reserved
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// A frame from the loaded magazine, or from the previous one.
    pub fn pop(&mut self) -> Option<u32> {
        if self.loaded.is_empty() && !self.previous.is_empty() {
            core::mem::swap(&mut self.loaded, &mut self.previous);
        }
        self.loaded.pop()
    }

    /// Stores a frame if either magazine has room within `cap`; gives it
    /// back when both are full (the caller then exchanges with the depot).
    pub fn push(&mut self, frame: u32, cap: usize) -> Result<(), u32> {
        if self.loaded.len() >= cap {
            if !self.previous.is_empty() {
                return Err(frame);
            }
            core::mem::swap(&mut self.loaded, &mut self.previous);
        }
        self.loaded.push(frame);
        Ok(())
    }

    /// Loads a full magazine from the reserve into an empty `loaded`;
    /// false if the reserve has none.
    pub fn load_reserved(&mut self) -> bool {
        match self.take_reserved() {
            Some(mag) => {
                self.loaded = mag;
                true
            }
            None => false,
        }
    }

    /// Keeps a full magazine in the reserve, or gives it back if full.
    pub fn keep(&mut self, full: Magazine) -> Result<(), Magazine> {
        let frames = full.len();
        self.reserve.try_push(full).map_err(|e| e.element())?;
        self.reserved += frames;
        Ok(())
    }

    fn take_reserved(&mut self) -> Option<Magazine> {
        let mag = self.reserve.pop()?;
        self.reserved -= mag.len();
        Some(mag)
    }

    /// Takes one magazine out (loaded, previous, then the reserve's), until
    /// all are empty: one at a time, so nothing large lands on the stack.
    pub fn take_one(&mut self) -> Option<Magazine> {
        if !self.loaded.is_empty() {
            return Some(core::mem::take(&mut self.loaded));
        }
        if !self.previous.is_empty() {
            return Some(core::mem::take(&mut self.previous));
        }
        self.take_reserved()
    }

    /// Every frame the cache holds.
    pub fn frames(&self) -> impl Iterator<Item = u32> + '_ {
        self.loaded.iter().chain(self.previous.iter()).chain(self.reserve.iter().flatten()).copied()
    }
}

/// The depot: full magazines waiting for a CPU that runs dry, in storage
/// the owner provides (one slot per magazine it may hold).
pub struct Depot<'a> {
    slots: &'a mut [Magazine],
    full: usize,
    frames: usize,
}

impl<'a> Depot<'a> {
    pub fn new(slots: &'a mut [Magazine]) -> Depot<'a> {
        Depot { slots, full: 0, frames: 0 }
    }

    pub fn take(&mut self) -> Option<Magazine> {
        if self.full == 0 {
            return None;
        }
        self.full -= 1;
        let mag = core::mem::take(&mut self.slots[self.full]);
        self.frames -= mag.len();
        Some(mag)
    }

    /// Keeps a full magazine, or hands it back when every slot is taken.
    pub fn put(&mut self, mag: Magazine) -> Result<(), Magazine> {
        if self.full == self.slots.len() {
            return Err(mag);
        }
        self.frames += mag.len();
        self.slots[self.full] = mag;
        self.full += 1;
        Ok(())
    }

    pub fn frames(&self) -> usize {
        self.frames
    }

    pub fn magazines(&self) -> impl Iterator<Item = &Magazine> {
        self.slots[..self.full].iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alternating_at_a_boundary_stays_local() {
        let mut c = CpuCache::new();
        for f in 0..2 {
            c.push(f, 2).unwrap();
        }
        // Loaded is full; the next push swaps in the empty previous.
        c.push(2, 2).unwrap();
        assert_eq!((c.loaded.len(), c.previous.len()), (1, 2));
        assert_eq!(c.pop(), Some(2));
        assert_eq!(c.pop(), Some(1), "falls back to the previous magazine");
        c.push(9, 2).unwrap();
        assert_eq!(c.len(), 2);
    }

    #[test]
    fn both_full_refuses() {
        let mut c = CpuCache::new();
        for f in 0..4 {
            c.push(f, 2).unwrap();
        }
        assert_eq!(c.push(4, 2), Err(4));
        assert_eq!(c.len(), 4);
        let (a, b) = (c.take_one().unwrap(), c.take_one().unwrap());
        assert_eq!(a.len() + b.len(), 4);
        assert!(c.take_one().is_none());
        assert!(c.is_empty() && c.pop().is_none());
    }

    #[test]
    #[cfg(not(loom))]
    fn the_reserve_keeps_full_magazines_until_it_is_full() {
        let mut c = CpuCache::new();
        let full: Magazine = (0..2).collect();
        for _ in 0..RESERVE {
            c.keep(full.clone()).unwrap();
        }
        assert_eq!(c.keep(full.clone()), Err(full), "a full reserve gives the magazine back");
        assert_eq!(c.len(), 2 * RESERVE);
        assert_eq!(c.frames().count(), 2 * RESERVE);
        assert!(c.load_reserved());
        assert_eq!((c.loaded.len(), c.reserve.len()), (2, RESERVE - 1));
        let mut n = 0;
        while let Some(m) = c.take_one() {
            n += m.len();
        }
        assert_eq!((n, c.len()), (2 * RESERVE, 0));
        assert!(!c.load_reserved());
    }

    #[test]
    fn depot_respects_its_limit() {
        let mut slots = [Magazine::new()];
        let mut d = Depot::new(&mut slots);
        let mut m = Magazine::new();
        m.push(7);
        d.put(m.clone()).unwrap();
        assert_eq!(d.put(m.clone()), Err(m));
        assert_eq!(d.frames(), 1);
        assert_eq!(d.take().map(|m| m.len()), Some(1));
        assert!(d.take().is_none());
    }
}
