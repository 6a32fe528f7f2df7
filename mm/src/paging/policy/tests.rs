use super::*;
use std::sync::atomic::AtomicBool;
use std::sync::Barrier;
use std::vec;
use std::vec::Vec;

/// Frames as arrays of flags. Every flag is atomic so one view can be
/// shared by threads; `info` reports busy and pinned frames (and unmapped
/// ones) as not evictable, like the frame database does.
struct View {
    mapped: Vec<AtomicBool>,
    pinned: Vec<AtomicBool>,
    busy: Vec<AtomicBool>,
    accessed: Vec<AtomicBool>,
    dirty: Vec<AtomicBool>,
    /// Used again at once after every clear: `clear_accessed` has no effect.
    sticky: Vec<AtomicBool>,
    /// How often each frame's accessed bit was cleared.
    clears: Vec<AtomicUsize>,
    infos: AtomicUsize,
    /// Yield in `info` to widen the windows between concurrent searches.
    yield_in_info: bool,
}

fn flags(n: usize, f: impl Fn(usize) -> bool) -> Vec<AtomicBool> {
    (0..n).map(|i| AtomicBool::new(f(i))).collect()
}

impl View {
    /// `n` mapped frames, none pinned, busy, accessed or dirty.
    fn new(n: usize) -> View {
        View {
            mapped: flags(n, |_| true),
            pinned: flags(n, |_| false),
            busy: flags(n, |_| false),
            accessed: flags(n, |_| false),
            dirty: flags(n, |_| false),
            sticky: flags(n, |_| false),
            clears: (0..n).map(|_| AtomicUsize::new(0)).collect(),
            infos: AtomicUsize::new(0),
            yield_in_info: false,
        }
    }

    fn set(flags: &[AtomicBool], i: usize, v: bool) {
        flags[i].store(v, Ordering::SeqCst);
    }

    fn clears(&self) -> Vec<usize> {
        self.clears.iter().map(|c| c.load(Ordering::SeqCst)).collect()
    }

    /// What the caller does with a victim: marks it busy, or fails the
    /// compare-and-swap because another caller has it.
    fn claim(&self, i: usize) -> bool {
        self.busy[i].compare_exchange(false, true, Ordering::SeqCst, Ordering::SeqCst).is_ok()
    }
}

impl FrameView for View {
    fn len(&self) -> usize {
        self.mapped.len()
    }

    fn info(&self, i: usize) -> FrameInfo {
        self.infos.fetch_add(1, Ordering::SeqCst);
        if self.yield_in_info {
            std::thread::yield_now();
        }
        let get = |f: &[AtomicBool]| f[i].load(Ordering::SeqCst);
        FrameInfo {
            evictable: get(&self.mapped) && !get(&self.pinned) && !get(&self.busy),
            accessed: get(&self.accessed),
            dirty: get(&self.dirty),
        }
    }

    fn clear_accessed(&self, i: usize) -> bool {
        self.clears[i].fetch_add(1, Ordering::SeqCst);
        if self.sticky[i].load(Ordering::SeqCst) {
            return self.accessed[i].load(Ordering::SeqCst);
        }
        self.accessed[i].swap(false, Ordering::SeqCst)
    }
}

/// An LRU over `view` with frames mapped in the order given.
fn lru(view: &View, order: &[usize]) -> Lru {
    let lru = Lru::new(view.len());
    for &i in order {
        lru.on_mapped(i);
    }
    lru
}

fn all(n: usize) -> Vec<usize> {
    (0..n).collect()
}

/// Evicts `v` and pages it straight back in, as the paging code would.
fn evict_and_remap(policy: &dyn EvictionPolicy, view: &View, v: usize, accessed: bool) {
    policy.on_unmapped(v);
    policy.on_mapped(v);
    View::set(&view.accessed, v, accessed);
}

#[test]
fn nru_victims_flags_are_its_own() {
    // Only frame 5 is clean: it is the one class-0 frame.
    let view = View::new(8);
    for i in (0..8).filter(|&i| i != 5) {
        View::set(&view.dirty, i, true);
    }
    assert_eq!(Nru::new().select(&view), Ok(5));

    // Only frame 5 is dirty: any clean frame beats it.
    let view = View::new(8);
    View::set(&view.dirty, 5, true);
    let nru = Nru::new();
    for _ in 0..16 {
        assert_ne!(nru.select(&view), Ok(5));
    }

    // Frames 0..5 accessed, frame 5 not: the hand clears exactly the
    // frames it passed over, and the victim is the frame it stopped at.
    let view = View::new(8);
    for i in 0..5 {
        View::set(&view.accessed, i, true);
    }
    assert_eq!(Nru::new().select(&view), Ok(5));
    assert_eq!(view.clears(), [1, 1, 1, 1, 1, 0, 0, 0]);
}

#[test]
fn lru_victims_flags_are_its_own() {
    let view = View::new(8);
    for i in 0..5 {
        View::set(&view.accessed, i, true);
    }
    let lru = lru(&view, &all(8));
    assert_eq!(lru.select(&view), Ok(5));
    assert_eq!(view.clears(), [1, 1, 1, 1, 1, 0, 0, 0]);
    for i in 0..8 {
        assert!(!view.info(i).accessed, "frame {i} keeps no accessed bit");
    }
    // The second-chance frames went to the tail behind 6 and 7.
    lru.on_unmapped(5);
    assert_eq!(lru.select(&view), Ok(6));
}

#[test]
fn nru_victims_rotate() {
    let view = View::new(8);
    let nru = Nru::new();
    let victims: Vec<usize> = (0..24)
        .map(|_| {
            let v = nru.select(&view).unwrap();
            evict_and_remap(&nru, &view, v, false);
            v
        })
        .collect();
    for window in victims.chunks(8) {
        let mut w = window.to_vec();
        w.sort();
        assert_eq!(w, all(8), "every equally good frame in turn: {victims:?}");
    }
}

#[test]
fn lru_victims_rotate() {
    let view = View::new(8);
    let lru = lru(&view, &all(8));
    for round in 0..3 {
        for i in 0..8 {
            let v = lru.select(&view).unwrap();
            assert_eq!(v, i, "round {round}");
            evict_and_remap(&lru, &view, v, false);
        }
    }
}

/// Only frames 17 and 42 of 64 can go; every other is mapped and pinned.
/// Victims come back accessed, the worst case for a second-chance search.
fn progress_with_two(policy: &dyn EvictionPolicy, view: &View) {
    let mut seen = [0usize; 2];
    for _ in 0..100 {
        let v = policy.select(view).expect("two frames are evictable");
        assert!(v == 17 || v == 42, "victim {v} is pinned");
        seen[usize::from(v == 42)] += 1;
        evict_and_remap(policy, view, v, true);
    }
    assert!(seen[0] > 0 && seen[1] > 0, "both evictable frames taken in turn: {seen:?}");
}

fn two_evictable() -> View {
    let view = View::new(64);
    for i in (0..64).filter(|&i| i != 17 && i != 42) {
        View::set(&view.pinned, i, true);
    }
    view
}

#[test]
fn nru_progress_with_only_two_evictable_frames() {
    progress_with_two(&Nru::new(), &two_evictable());
}

#[test]
fn lru_progress_with_only_two_evictable_frames() {
    let view = two_evictable();
    progress_with_two(&lru(&view, &all(64)), &view);
}

fn only_frame_0() -> View {
    let view = View::new(16);
    for i in 1..16 {
        View::set(&view.pinned, i, true);
    }
    View::set(&view.dirty, 0, true);
    View::set(&view.accessed, 0, true);
    view
}

#[test]
fn frame_0_is_evictable() {
    let view = only_frame_0();
    let nru = Nru::new();
    // From every hand position, including the one right after frame 0.
    for _ in 0..20 {
        assert_eq!(nru.select(&view), Ok(0));
    }
    let view = only_frame_0();
    let mut order: Vec<usize> = (1..16).collect();
    order.push(0);
    let lru = lru(&view, &order);
    assert_eq!(lru.select(&view), Ok(0), "accessed, most recent, still the only one");
    assert_eq!(lru.select(&view), Ok(0));
}

#[test]
fn all_pinned_is_an_error_after_a_bounded_search() {
    let view = View::new(32);
    for i in 0..32 {
        View::set(&view.pinned, i, true);
        View::set(&view.accessed, i, i % 2 == 0);
    }
    let nru = Nru::new();
    assert_eq!(nru.select(&view), Err(PolicyError::NoEvictableFrame));
    // One sweep (nothing to clear, so no second) and the recheck.
    assert_eq!(view.infos.load(Ordering::SeqCst), 2 * 32, "bounded");
    assert_eq!(view.clears(), vec![0; 32], "pinned frames keep their bits");

    view.infos.store(0, Ordering::SeqCst);
    let lru = lru(&view, &all(32));
    assert_eq!(lru.select(&view), Err(PolicyError::NoEvictableFrame));
    assert!(view.infos.load(Ordering::SeqCst) <= 2 * 32, "bounded");

    // Nothing mapped at all.
    assert_eq!(Nru::new().select(&View::new(0)), Err(PolicyError::NoEvictableFrame));
    assert_eq!(Lru::new(4).select(&View::new(4)), Err(PolicyError::NoEvictableFrame));
}

/// A view whose frames are, from frame 0 on, in the NRU classes given;
/// accessed frames stay accessed however often they are cleared.
fn classes(cs: &[u8]) -> View {
    let view = View::new(cs.len());
    for (i, &c) in cs.iter().enumerate() {
        View::set(&view.accessed, i, c & 2 != 0);
        View::set(&view.sticky, i, c & 2 != 0);
        View::set(&view.dirty, i, c & 1 != 0);
    }
    view
}

#[test]
fn nru_takes_the_lowest_class() {
    // The hand starts at frame 0, so the better class always comes later.
    assert_eq!(Nru::new().select(&classes(&[3, 2, 1, 0])), Ok(3));
    assert_eq!(Nru::new().select(&classes(&[1, 0])), Ok(1), "0 over 1");
    assert_eq!(Nru::new().select(&classes(&[3, 2, 1, 3])), Ok(2), "1 over 2");
    assert_eq!(Nru::new().select(&classes(&[3, 3, 2, 3])), Ok(2), "2 over 3");
    // An accessed frame not used again after its second chance is class 0
    // on the second sweep, ahead of a dirty one.
    let view = classes(&[1, 2]);
    View::set(&view.sticky, 1, false);
    assert_eq!(Nru::new().select(&view), Ok(1));
}

#[test]
fn nru_sweeps_once_when_nothing_was_accessed() {
    let view = classes(&[1; 8]);
    assert_eq!(Nru::new().select(&view), Ok(0));
    assert_eq!(view.infos.load(Ordering::SeqCst), 8, "a second sweep could find nothing new");
}

#[test]
fn lru_evicts_in_mapping_order() {
    let view = View::new(4);
    let lru = lru(&view, &[3, 1, 2]);
    assert_eq!(lru.select(&view), Ok(3));
    lru.on_unmapped(3);
    assert_eq!(lru.select(&view), Ok(1));
    lru.on_unmapped(1);
    assert_eq!(lru.select(&view), Ok(2));
    lru.on_unmapped(2);
    assert_eq!(lru.select(&view), Err(PolicyError::NoEvictableFrame), "frame 0 never mapped");
}

#[test]
fn lru_gives_an_accessed_head_a_second_chance() {
    let view = View::new(4);
    let lru = lru(&view, &[3, 1, 2]);
    View::set(&view.accessed, 3, true);
    assert_eq!(lru.select(&view), Ok(1));
    assert_eq!(view.clears(), [0, 0, 0, 1]);
    lru.on_unmapped(1);
    assert_eq!(lru.select(&view), Ok(2));
    lru.on_unmapped(2);
    assert_eq!(lru.select(&view), Ok(3), "not used again since its second chance");
}

#[test]
fn lru_takes_the_least_recent_when_all_are_in_use() {
    let view = classes(&[2, 2, 2]);
    View::set(&view.pinned, 2, true);
    let lru = lru(&view, &[2, 0, 1]);
    assert_eq!(lru.select(&view), Ok(0));
    assert!(view.infos.load(Ordering::SeqCst) <= 2 * 3, "bounded");
}

#[test]
fn lru_prefers_a_frame_unused_since_its_second_chance() {
    // Frame 0 is in constant use; frame 1 was used once, before the walk.
    let view = classes(&[2, 2]);
    View::set(&view.sticky, 1, false);
    let lru = lru(&view, &[0, 1]);
    assert_eq!(lru.select(&view), Ok(1), "found on its second visit");
}

#[test]
fn lru_remapping_makes_a_frame_most_recent() {
    let view = View::new(3);
    let lru = lru(&view, &[0, 1, 2, 0]);
    assert_eq!(lru.select(&view), Ok(1));
}

const THREADS: usize = 4;

/// Four threads each take `per_thread` victims and keep them busy. The
/// hand never comes round in that many steps, so a frame handed to two
/// threads can only be the policy's doing, and the second claim fails.
fn concurrent_victims_are_distinct(policy: &dyn EvictionPolicy, view: &View, per_thread: usize) {
    let barrier = Barrier::new(THREADS);
    let taken: Vec<Vec<usize>> = std::thread::scope(|s| {
        let workers: Vec<_> = (0..THREADS)
            .map(|_| {
                s.spawn(|| {
                    barrier.wait();
                    (0..per_thread)
                        .map(|_| {
                            let v = policy.select(view).unwrap();
                            // Widens the window in which the victim is
                            // chosen but not yet marked busy.
                            std::thread::yield_now();
                            assert!(view.claim(v), "frame {v} handed out twice");
                            v
                        })
                        .collect()
                })
            })
            .collect();
        workers.into_iter().map(|w| w.join().unwrap()).collect()
    });
    let mut all: Vec<usize> = taken.concat();
    all.sort();
    all.dedup();
    assert_eq!(all.len(), THREADS * per_thread);
}

/// Many frames, every seventh pinned, every third accessed. `yield_in_info`
/// only for policies that search without a lock: under `Lru`'s spin lock a
/// yielding holder leaves the waiters spinning.
fn mixed(n: usize, yield_in_info: bool) -> View {
    let mut view = View::new(n);
    for i in 0..n {
        View::set(&view.pinned, i, i % 7 == 0);
        View::set(&view.accessed, i, i % 3 == 0);
    }
    view.yield_in_info = yield_in_info;
    view
}

#[test]
fn nru_concurrent_callers_get_different_frames() {
    concurrent_victims_are_distinct(&Nru::new(), &mixed(4096, true), 100);
}

#[test]
fn lru_concurrent_callers_get_different_frames() {
    let view = mixed(4096, false);
    concurrent_victims_are_distinct(&lru(&view, &all(4096)), &view, 100);
}

/// Four threads evict and remap over few frames, so the hand laps and
/// claims can collide; the caller then asks again. With at most four of
/// sixteen frames busy, a search must never report nothing evictable.
fn concurrent_eviction_progresses(policy: &dyn EvictionPolicy, view: &View) {
    std::thread::scope(|s| {
        for t in 0..THREADS {
            s.spawn(move || {
                for k in 0..500 {
                    let v = loop {
                        let v = policy.select(view).expect("twelve frames are evictable");
                        if view.claim(v) {
                            break v;
                        }
                    };
                    policy.on_unmapped(v);
                    policy.on_mapped(v);
                    View::set(&view.accessed, v, (t + k) % 2 == 0);
                    View::set(&view.busy, v, false);
                }
            });
        }
    });
}

#[test]
fn nru_concurrent_eviction_progresses() {
    concurrent_eviction_progresses(&Nru::new(), &View::new(16));
}

#[test]
fn lru_concurrent_eviction_progresses() {
    let view = View::new(16);
    concurrent_eviction_progresses(&lru(&view, &all(16)), &view);
}

/// A view whose first `info` call runs another search on the same clock,
/// as a concurrent CPU would, taking hand positions from under this one.
struct Interleaved<'a> {
    view: &'a View,
    nru: &'a Nru,
    other: &'a View,
    done: AtomicBool,
}

impl FrameView for Interleaved<'_> {
    fn len(&self) -> usize {
        self.view.len()
    }

    fn info(&self, i: usize) -> FrameInfo {
        if !self.done.swap(true, Ordering::SeqCst) {
            assert_eq!(self.nru.select(self.other), Ok(2));
        }
        self.view.info(i)
    }

    fn clear_accessed(&self, i: usize) -> bool {
        self.view.clear_accessed(i)
    }
}

#[test]
fn nru_finds_a_frame_a_concurrent_search_stepped_over() {
    // Only frame 2 here is evictable (dirty, so the other search, which
    // also looks at it, need not take it).
    let view = View::new(4);
    for i in [0, 1, 3] {
        View::set(&view.pinned, i, true);
    }
    View::set(&view.dirty, 2, true);
    // The other search claims positions 1 and 2 and takes its frame 2.
    let other = View::new(4);
    View::set(&other.pinned, 1, true);
    let nru = Nru::new();
    let interleaved = Interleaved { view: &view, nru: &nru, other: &other, done: AtomicBool::new(false) };
    // This search's own steps are 0, 3, 0, 1: frame 2 only by the recheck.
    assert_eq!(nru.select(&interleaved), Ok(2));
}
