//! Model checks of the allocator's concurrent paths:
//! `RUSTFLAGS="--cfg loom" cargo test -p mm --release --lib loom`.

use super::*;
use crate::frame_db::FrameEntry;
use cpus::CachePadded;
use loom::sync::Arc;
use std::sync::atomic::{AtomicBool as StdBool, AtomicU64 as StdU64, Ordering::SeqCst};

use crate::testing::{on_cpu, ByAddress, Threads as LoomCpus};

const FRAMES: usize = 4;

/// A tiny allocator: 4 frames, magazines of 1, a depot of 1, `cpus` CPUs.
fn tiny(cpus: usize) -> Arc<PhysAllocator<'static, LoomCpus>> {
    let entries: &'static [FrameEntry] = Vec::leak((0..FRAMES).map(|_| FrameEntry::new()).collect());
    let links = Vec::leak(vec![Link::EMPTY; FRAMES]);
    let shares = Vec::leak((0..cpus).map(|_| CachePadded::new(CpuShare::new())).collect());
    let shares = PerCpuRef::new(shares);
    let depot = Vec::leak(vec![Magazine::new(); 1]);
    on_cpu(0);
    Arc::new(PhysAllocator::new(
        FrameDb::new(x86_64::PhysAddr::new(1024 * crate::PAGE_SIZE), entries),
        links,
        [0..FRAMES],
        shares,
        1,
        depot,
        LoomCpus::new(cpus),
    ))
}

fn model(f: impl Fn() + Sync + Send + 'static) {
    let mut b = loom::model::Builder::new();
    b.preemption_bound = Some(2);
    // Counted so `--nocapture` shows how much each model explores.
    let runs = std::sync::Arc::new(StdU64::new(0));
    let counter = runs.clone();
    b.check(move || {
        counter.fetch_add(1, SeqCst);
        f()
    });
    eprintln!("{} interleavings", runs.load(SeqCst));
}

fn assert_conserved(a: &PhysAllocator<'static, LoomCpus>, allocated: u64) {
    let c = a.audit().unwrap_or_else(|v| panic!("audit: {v:?}"));
    assert_eq!(c.allocated, allocated);
    assert_eq!(c.buddy + c.magazines + c.depot + c.allocated, FRAMES as u64);
}

/// Two CPUs cycle two frames each through their two magazines of one.
/// Two frees fill both magazines, so neither CPU reaches the depot (a
/// third free would: `loom_depot_put_meets_reclaim_all`); the CPUs meet
/// only at the buddy lock.
#[test]
fn loom_depot_exchange_two_cpus() {
    model(|| {
        let a = tiny(2);
        let t = {
            let a = a.clone();
            loom::thread::spawn(move || {
                on_cpu(1);
                let x = a.alloc_addr().unwrap();
                let y = a.alloc_addr().unwrap();
                a.free_addr(x).unwrap();
                a.free_addr(y).unwrap();
            })
        };
        on_cpu(0);
        let p = a.alloc_addr().unwrap();
        let q = a.alloc_addr().unwrap();
        a.free_addr(p).unwrap();
        a.free_addr(q).unwrap();
        t.join().unwrap();
        assert_conserved(&a, 0);
    });
}

/// Two CPUs free the same frame at once: exactly one succeeds.
#[test]
fn loom_concurrent_double_free_has_one_winner() {
    model(|| {
        let a = tiny(2);
        let p = a.alloc_addr().unwrap();
        let t = {
            let a = a.clone();
            loom::thread::spawn(move || {
                on_cpu(1);
                a.free_addr(p)
            })
        };
        on_cpu(0);
        let mine = a.free_addr(p);
        let theirs = t.join().unwrap();
        let wins = [mine, theirs].iter().filter(|r| r.is_ok()).count();
        assert_eq!(wins, 1, "{mine:?} / {theirs:?}");
        let loser = if mine.is_ok() { theirs } else { mine };
        assert_eq!(loser, Err(FrameError::AlreadyFree { phys: x86_64::PhysAddr::new(p) }));
        assert_conserved(&a, 0);
    });
}

/// CPU 1 frees a frame CPU 0 allocated while CPU 0 refills from the buddy.
/// The two touch no common lock or word (the free goes to CPU 1's own
/// magazine), so loom needs a single interleaving: this checks the remote
/// free's accounting, not a race.
#[test]
fn loom_remote_free_while_owner_refills() {
    model(|| {
        let a = tiny(2);
        on_cpu(0);
        let p = a.alloc_addr().unwrap(); // CPU 0's magazine is now empty
        let t = {
            let a = a.clone();
            loom::thread::spawn(move || {
                on_cpu(1);
                a.free_addr(p).unwrap();
            })
        };
        let q = a.alloc_addr().unwrap(); // refill
        assert_ne!(p, q);
        t.join().unwrap();
        assert_eq!(a.counters(1).remote_frees, 1);
        assert_conserved(&a, 1);
        a.free_addr(q).unwrap();
        assert_conserved(&a, 0);
    });
}

/// Which interleavings `loom_depot_put_meets_reclaim_all` reached, over
/// all its iterations; it fails if one never happened (a vacuous model).
static DEPOT_PUT_SEEN: StdBool = StdBool::new(false);
static RECLAIM_MID_FREE_SEEN: StdBool = StdBool::new(false);
static RECLAIM_AFTER_PUT_SEEN: StdBool = StdBool::new(false);

/// CPU 0 frees three frames into magazines of one, so the third free puts
/// a full magazine in the depot, while CPU 1 takes the buddy's last frame
/// and allocates again, so it drains every cache with `reclaim_all`,
/// between or during CPU 0's frees. Checked: no frame is handed out while
/// CPU 0 still holds it or twice to CPU 1; an allocation that starts with
/// a frame free somewhere gets one (the drain misses nothing); the census
/// adds up at the end.
#[test]
fn loom_depot_put_meets_reclaim_all() {
    model(|| {
        let a = tiny(2);
        on_cpu(0);
        let mine = [a.alloc_addr().unwrap(), a.alloc_addr().unwrap(), a.alloc_addr().unwrap()];
        // Plain (not loom) atomics: bookkeeping of the test itself, which
        // must add no interleavings. Loom runs one thread at a time, so
        // they are exact. Bit i: CPU 0 still holds `mine[i]`.
        let held = Arc::new(StdU64::new(0b111));
        let freed = Arc::new(StdU64::new(0));
        let t = {
            let (a, held, freed, mine) = (a.clone(), held.clone(), freed.clone(), mine);
            loom::thread::spawn(move || {
                on_cpu(1);
                let mut got = Vec::new();
                for _ in 0..2 {
                    let free_at_start = FRAMES as u64 - (mine.len() as u64 - freed.load(SeqCst)) - got.len() as u64;
                    let (reclaims, before) = (a.counters(1).reclaims, freed.load(SeqCst));
                    let r = a.alloc_addr();
                    if a.counters(1).reclaims > reclaims {
                        // CPU 0 had finished one free but not all three all along.
                        if before >= 1 && freed.load(SeqCst) < 3 {
                            RECLAIM_MID_FREE_SEEN.store(true, SeqCst);
                        }
                        if a.counters(0).depot_exchanges > 0 {
                            RECLAIM_AFTER_PUT_SEEN.store(true, SeqCst);
                        }
                    }
                    match r {
                        Ok(p) => {
                            let held = held.load(SeqCst);
                            let clash = mine.iter().enumerate().any(|(i, &m)| m == p && held & (1 << i) != 0);
                            assert!(!clash, "{p:#x} handed out while CPU 0 still holds it");
                            assert!(!got.contains(&p), "{p:#x} handed out twice");
                            got.push(p);
                        }
                        Err(e) => {
                            assert_eq!(e, FrameError::OutOfMemory);
                            assert_eq!(free_at_start, 0, "out of memory with {free_at_start} frames free");
                        }
                    }
                }
                got.len() as u64
            })
        };
        for (i, &p) in mine.iter().enumerate() {
            // Given up before the call: the frame may be reused before it returns.
            held.fetch_and(!(1 << i), SeqCst);
            a.free_addr(p).unwrap();
            freed.fetch_add(1, SeqCst);
        }
        if a.counters(0).depot_exchanges > 0 {
            DEPOT_PUT_SEEN.store(true, SeqCst);
        }
        let allocated = t.join().unwrap();
        assert_conserved(&a, allocated);
    });
    assert!(DEPOT_PUT_SEEN.load(SeqCst), "CPU 0 never put a magazine in the depot");
    assert!(RECLAIM_MID_FREE_SEEN.load(SeqCst), "reclaim_all never ran between CPU 0's frees");
    assert!(RECLAIM_AFTER_PUT_SEEN.load(SeqCst), "reclaim_all never ran after a depot put");
}

/// Some interleaving drained CPU 0's cache between its free and its next
/// allocation (the model is not vacuous).
static DRAIN_BETWEEN_SEEN: StdBool = StdBool::new(false);

/// CPU 0 allocates, frees and allocates again on its own magazine's
/// lock-free fast path while CPU 1 drains every cache (`set_policy` runs
/// `reclaim_all`: raise `remote`, quiesce, lock). Loom checks every access
/// to the magazines (`OwnerCell`'s cell): the owner and the remote never
/// use them at once, so the owner never sees a torn cache. Checked too: the
/// two frames CPU 0 holds at the end differ, and the census adds up.
#[test]
fn loom_owner_fast_path_races_a_remote_drain() {
    model(|| {
        let a = tiny(2);
        let t = {
            let a = a.clone();
            loom::thread::spawn(move || {
                on_cpu(1);
                a.set_policy(Policy::Magazine);
            })
        };
        on_cpu(0);
        let p = a.alloc_addr().unwrap();
        a.free_addr(p).unwrap(); // into CPU 0's magazine
        let refills = a.counters(0).buddy.acquired;
        let q = a.alloc_addr().unwrap(); // from it, unless drained meanwhile
        let r = a.alloc_addr().unwrap();
        if a.counters(0).buddy.acquired > refills + 1 {
            DRAIN_BETWEEN_SEEN.store(true, SeqCst);
        }
        assert_ne!(q, r, "one frame handed out twice");
        t.join().unwrap();
        assert_conserved(&a, 2);
        a.free_addr(q).unwrap();
        a.free_addr(r).unwrap();
        assert_conserved(&a, 0);
    });
    assert!(DRAIN_BETWEEN_SEEN.load(SeqCst), "the drain never emptied CPU 0's magazine between its free and alloc");
}
