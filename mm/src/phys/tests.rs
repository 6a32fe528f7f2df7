use super::*;
use crate::frame_db::FrameEntry;
use crate::lock_count::LockSnapshot;
use crate::testing::{on_cpu, ByAddress, Threads};
use cpus::{CachePadded, CpuSet};
use std::sync::atomic::AtomicU64 as StdU64;

const BASE_PFN: u64 = 1 << 12; // 16 MiB, aligned to 2^MAX_ORDER frames

/// An allocator over `frames` frames of which `usable` index ranges are RAM.
fn allocator(
    frames: usize,
    usable: &[Range<usize>],
    cpus: usize,
    cap: usize,
    depot: usize,
) -> PhysAllocator<'static, Threads> {
    allocator_on(Threads::new(cpus), frames, usable, cpus, cap, depot)
}

/// `allocator` on a platform the test keeps (to hold a CPU's "interrupts"
/// off, or with a short quiesce bound).
fn allocator_on(
    platform: Threads,
    frames: usize,
    usable: &[Range<usize>],
    cpus: usize,
    cap: usize,
    depot: usize,
) -> PhysAllocator<'static, Threads> {
    let depot = Vec::leak(vec![Magazine::new(); depot]);
    let entries: &'static [FrameEntry] = Vec::leak((0..frames).map(|_| FrameEntry::new()).collect());
    let links = Vec::leak(vec![Link::EMPTY; frames]);
    let shares = Vec::leak((0..cpus).map(|_| CachePadded::new(CpuShare::new())).collect());
    let shares = PerCpuRef::new(shares);
    on_cpu(0);
    PhysAllocator::new(
        FrameDb::new(PhysAddr::new(BASE_PFN * PAGE_SIZE), entries),
        links,
        usable.iter().cloned(),
        shares,
        cap,
        depot,
        platform,
    )
}

fn phys(i: usize) -> u64 {
    (BASE_PFN + i as u64) * PAGE_SIZE
}

/// Runs `f` on CPU `cpu`'s magazines as a remote would (freeze, lock).
fn with_cache<R>(a: &PhysAllocator<'_, Threads>, cpu: usize, f: impl FnOnce(&mut CpuCache) -> R) -> R {
    a.platform.without_interrupts(|me| {
        let freeze = Freeze::begin([&a.cpus.remote(cpu).cache], me, &a.platform);
        freeze.with(0, f).expect("cache frozen")
    })
}

fn census(a: &PhysAllocator<'_, Threads>) -> Census {
    a.audit().unwrap_or_else(|v| panic!("audit failed: {v:?}"))
}

#[test]
fn accounting_is_exact_over_alloc_free_cycles() {
    let a = allocator(2048, &[1..1000, 1100..2048], 2, 8, 4);
    let usable = 999 + 948;
    assert_eq!(a.usable_frames(), usable);
    assert_eq!(a.free_bytes(), usable * PAGE_SIZE);
    for round in 0..5 {
        let held: Vec<Frame> = (0..300 + round * 50).map(|_| a.alloc_page().unwrap()).collect();
        let c = census(&a);
        assert_eq!(c.allocated, held.len() as u64);
        assert_eq!(a.free_bytes(), (usable - held.len() as u64) * PAGE_SIZE);
        for p in held {
            a.free_page(p).unwrap();
        }
        assert_eq!(census(&a).allocated, 0);
        assert_eq!(a.free_bytes(), usable * PAGE_SIZE);
    }
}

#[test]
fn contiguous_blocks_are_aligned_and_trimmed() {
    let a = allocator(4096, &[0..4096], 1, 8, 4);
    let p8 = a.alloc_run(8).unwrap();
    assert_eq!(p8 % (8 * PAGE_SIZE), 0, "8 frames naturally aligned");
    let p1024 = a.alloc_run(1024).unwrap();
    assert_eq!(p1024 % (1024 * PAGE_SIZE), 0);
    let p5 = a.alloc_run(5).unwrap();
    assert_eq!(census(&a).allocated, 8 + 1024 + 5, "the 3 frames past 5 went back");
    for i in 0..5 {
        assert_eq!(
            a.db().kind(a.db().index_of(crate::frame::PhysAddr::new_truncate(p5 + i * PAGE_SIZE)).unwrap()),
            FrameKind::Allocated
        );
    }
    a.free_run(p5, 5).unwrap();
    a.free_run(p1024, 1024).unwrap();
    a.free_run(p8, 8).unwrap();
    assert_eq!(census(&a).buddy, 4096);
}

#[test]
fn contiguous_bad_sizes_are_errors() {
    let a = allocator(2048, &[0..2048], 1, 8, 4);
    assert_eq!(a.alloc_run(0), Err(FrameError::ZeroCount));
    assert_eq!(a.alloc_run(1025), Err(FrameError::TooLarge { count: 1025, max: 1024 }));
    let small = allocator(1024, &[0..100], 1, 8, 4);
    assert_eq!(small.alloc_run(101), Err(FrameError::TooLarge { count: 101, max: 100 }));
    assert_eq!(census(&a).allocated, 0);
}

#[test]
fn exhaustion_then_full_recovery_at_tiny_capacities() {
    let a = allocator(1024, &[3..700], 3, 2, 1);
    let mut held = Vec::new();
    for i in 0.. {
        on_cpu(i % 3);
        match a.alloc_addr() {
            Ok(p) => held.push(p),
            Err(e) => {
                assert_eq!(e, FrameError::OutOfMemory);
                break;
            }
        }
    }
    assert_eq!(held.len() as u64, a.usable_frames(), "every frame handed out before OOM");
    assert_eq!(a.free_bytes(), 0);
    assert_eq!(a.alloc_run(1), Err(FrameError::OutOfMemory));
    for (i, p) in held.iter().enumerate() {
        on_cpu((i + 1) % 3); // remote frees
        a.free_addr(*p).unwrap();
    }
    let c = census(&a);
    assert_eq!(c.allocated, 0);
    assert_eq!(c.buddy + c.magazines + c.depot, a.usable_frames());
    assert_eq!(a.free_bytes(), a.usable_frames() * PAGE_SIZE);
    let remote: u64 = (0..3).map(|c| a.counters(c).remote_frees).sum();
    assert_eq!(remote, held.len() as u64);
}

#[test]
fn bad_frees_are_typed_errors_and_change_nothing() {
    let a = allocator(1024, &[0..10, 20..1024], 1, 4, 2);
    let p = a.alloc_addr().unwrap();
    let q = a.alloc_addr().unwrap();
    a.free_addr(p).unwrap();
    let (before, free_before) = (census(&a), a.free_bytes());
    let unused = (0..1024).find(|&i| a.db().kind(i) == FrameKind::Free).unwrap();
    let cases = [
        (p, FrameError::AlreadyFree { phys: PhysAddr::new(p) }),
        (phys(unused), FrameError::AlreadyFree { phys: PhysAddr::new(phys(unused)) }),
        (phys(12), FrameError::Reserved { phys: PhysAddr::new(phys(12)) }),
        (phys(3) + 8, FrameError::NotAligned { phys: PhysAddr::new(phys(3) + 8) }),
        (0x1000, FrameError::NotRam { phys: PhysAddr::new(0x1000) }),
        (phys(5000), FrameError::NotRam { phys: PhysAddr::new(phys(5000)) }),
    ];
    for (addr, err) in cases {
        assert_eq!(a.free_addr(addr), Err(err));
        assert_eq!(census(&a), before, "{err:?} changed where frames are");
        assert_eq!(a.free_bytes(), free_before, "{err:?} changed the free count");
    }
    a.free_addr(q).unwrap();
    assert_eq!(census(&a).allocated, 0);
}

#[test]
fn partial_contiguous_free_is_refused_whole() {
    let a = allocator(1024, &[0..1024], 1, 4, 2);
    let run = a.alloc_run(8).unwrap();
    a.free_addr(run + 5 * PAGE_SIZE).unwrap();
    let before = census(&a);
    assert_eq!(a.free_run(run, 8), Err(FrameError::AlreadyFree { phys: PhysAddr::new(run + 5 * PAGE_SIZE) }));
    assert_eq!(census(&a), before, "the frames before the bad one were put back");
    for i in [0, 1, 2, 3, 4, 6, 7] {
        let idx = a.db().index_of(crate::frame::PhysAddr::new_truncate(run + i * PAGE_SIZE)).unwrap();
        assert_eq!(a.db().kind(idx), FrameKind::Allocated);
    }
    assert_eq!(a.free_run(run, 0), Err(FrameError::ZeroCount));
    // A count so large that start + count wraps must not free anything.
    assert_eq!(a.free_run(run + PAGE_SIZE, u64::MAX), Err(FrameError::NotRam { phys: PhysAddr::new(phys(1024)) }));
    assert_eq!(census(&a), before);
    assert_eq!(a.free_run(phys(1020), 8), Err(FrameError::NotRam { phys: PhysAddr::new(phys(1024)) }));
}

#[test]
fn magazines_refill_and_drain_through_depot_and_buddy() {
    let a = allocator(1024, &[0..1024], 1, 2, 1);
    let p: Vec<u64> = (0..2).map(|_| a.alloc_addr().unwrap()).collect();
    let c = a.counters(0);
    assert_eq!((c.buddy_locks, c.fast_allocs), (1, 1), "one buddy trip fills a 2-frame magazine");
    let reserve = crate::magazine::RESERVE;
    let more: Vec<u64> = (0..6 + 2 * reserve).map(|_| a.alloc_addr().unwrap()).collect();
    assert_eq!(a.counters(0).buddy_locks, 4 + reserve as u64, "one buddy trip per magazine");
    // Frees: 4 fit in loaded+previous, the next `reserve` full ones go to
    // this CPU's reserve, the one after to the depot, and the last finds
    // the depot (limit 1) full and drains to the buddy.
    for (n, q) in p.iter().chain(more.iter()).enumerate() {
        a.free_addr(*q).unwrap();
        let c = census(&a);
        assert_eq!(c.magazines + c.depot + c.buddy + c.allocated, 1024, "after free {n}");
    }
    let c = census(&a);
    let kept = 4 + 2 * reserve as u64;
    assert_eq!((c.magazines, c.depot, c.buddy), (kept, 2, 1024 - kept - 2), "{c:?}");
    assert!(a.counters(0).depot_exchanges >= 2);
    // The depot's full magazine comes back before the buddy is asked.
    let locks = a.counters(0).buddy_locks;
    let x: Vec<u64> = (0..c.magazines as usize + c.depot as usize).map(|_| a.alloc_addr().unwrap()).collect();
    assert_eq!(a.counters(0).buddy_locks, locks, "served from magazines and depot only");
    for q in x {
        a.free_addr(q).unwrap();
    }
}

#[test]
fn pressure_reclaims_frames_parked_on_other_cpus() {
    let a = allocator(1024, &[0..64], 2, 16, 4);
    on_cpu(0);
    let held: Vec<u64> = (0..64).map(|_| a.alloc_addr().unwrap()).collect();
    for p in &held[..40] {
        a.free_addr(*p).unwrap(); // parked in cpu 0's magazines and the depot
    }
    on_cpu(1);
    let got: Vec<u64> = (0..40).map(|_| a.alloc_addr().unwrap()).collect();
    assert_eq!(got.len(), 40);
    assert!(a.counters(1).reclaims >= 1);
    assert_eq!(a.alloc_addr(), Err(FrameError::OutOfMemory));
    assert_eq!(census(&a).allocated, 64);
}

#[test]
fn global_lock_policy_bypasses_magazines() {
    let a = allocator(1024, &[0..1024], 1, 8, 4);
    let p = a.alloc_addr().unwrap();
    a.free_addr(p).unwrap(); // now cached
    a.set_policy(Policy::GlobalLock);
    assert_eq!(census(&a).magazines, 0, "switching drains the caches");
    let before = a.counters(0);
    let q: Vec<u64> = (0..10).map(|_| a.alloc_addr().unwrap()).collect();
    for p in q {
        a.free_addr(p).unwrap();
    }
    let after = a.counters(0);
    assert_eq!(after.fast_allocs, before.fast_allocs);
    assert_eq!(after.buddy_locks - before.buddy_locks, 20, "every alloc and free takes the lock");
    assert_eq!(census(&a).buddy, 1024);
}

/// Threads as CPUs, each allocating and freeing at random, passing frames
/// to a neighbour to free. Every frame held is stamped with its holder, so
/// handing one frame to two holders is caught at once.
#[test]
fn concurrent_random_alloc_free_with_remote_frees() {
    const CPUS: usize = 4;
    const FRAMES: usize = 2048;
    let a: &'static PhysAllocator<'static, Threads> = Box::leak(Box::new(allocator(FRAMES, &[0..FRAMES], CPUS, 4, 2)));
    let stamps: &'static [StdU64] = Vec::leak((0..FRAMES).map(|_| StdU64::new(0)).collect());
    let mailbox: &'static [std::sync::Mutex<Vec<u64>>] = Vec::leak((0..CPUS).map(|_| Default::default()).collect());
    let threads: Vec<_> = (0..CPUS)
        .map(|cpu| {
            std::thread::spawn(move || {
                on_cpu(cpu);
                let mut rng = 0x9E37_79B9_7F4A_7C15u64 ^ cpu as u64;
                let mut held: Vec<(u64, u64)> = Vec::new();
                for seq in 1..20_000u64 {
                    rng ^= rng << 13;
                    rng ^= rng >> 7;
                    rng ^= rng << 17;
                    let stamp = ((cpu as u64) << 32) | seq;
                    match rng % 4 {
                        0 | 1 if held.len() < 200 => {
                            if let Ok(p) = a.alloc_addr() {
                                let i = a.db().index_of(crate::frame::PhysAddr::new_truncate(p)).unwrap();
                                let prev = stamps[i].swap(stamp, std::sync::atomic::Ordering::SeqCst);
                                assert_eq!(prev, 0, "frame {p:#x} handed out while held");
                                held.push((p, stamp));
                            }
                        }
                        2 if !held.is_empty() => {
                            let (p, s) = held.swap_remove(rng as usize % held.len());
                            let i = a.db().index_of(crate::frame::PhysAddr::new_truncate(p)).unwrap();
                            assert_eq!(stamps[i].swap(0, std::sync::atomic::Ordering::SeqCst), s);
                            mailbox[(cpu + 1) % CPUS].lock().unwrap().push(p);
                        }
                        _ => {
                            let incoming = std::mem::take(&mut *mailbox[cpu].lock().unwrap());
                            for p in incoming {
                                a.free_addr(p).unwrap();
                            }
                        }
                    }
                }
                for (p, _) in held {
                    let i = a.db().index_of(crate::frame::PhysAddr::new_truncate(p)).unwrap();
                    stamps[i].store(0, std::sync::atomic::Ordering::SeqCst);
                    a.free_addr(p).unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    for (cpu, m) in mailbox.iter().enumerate() {
        on_cpu(cpu);
        for p in m.lock().unwrap().drain(..) {
            a.free_addr(p).unwrap();
        }
    }
    let c = census(a);
    assert_eq!(c.allocated, 0);
    assert_eq!(a.free_bytes(), FRAMES as u64 * PAGE_SIZE);
    let remote: u64 = (0..CPUS).map(|c| a.counters(c).remote_frees).sum();
    assert!(remote > 0, "the test passes frames between CPUs");
}

/// The auditor finds a frame listed twice even when a leaked frame keeps
/// the counts equal.
#[test]
fn audit_catches_a_frame_in_two_places() {
    let a = allocator(1024, &[0..1024], 1, 8, 2);
    let p = a.alloc_addr().unwrap();
    let q = a.alloc_addr().unwrap();
    a.free_addr(p).unwrap();
    a.free_addr(q).unwrap();
    census(&a);
    let qi = a.db().index_of(crate::frame::PhysAddr::new_truncate(q)).unwrap() as u32;
    let pi = a.db().index_of(crate::frame::PhysAddr::new_truncate(p)).unwrap() as u32;
    with_cache(&a, 0, |cache| {
        // Lose q (still Cached, in no structure) and list p twice.
        cache.loaded.retain(|i| *i != qi);
        cache.loaded.push(pi);
    });
    match a.audit() {
        Err(AuditViolation::InTwoPlaces { phys, .. }) => assert_eq!(phys, PhysAddr::new(p)),
        other => panic!("audit missed the duplicate: {other:?}"),
    }
    // The marks were cleared: after repairing, the audit passes again.
    with_cache(&a, 0, |cache| {
        cache.loaded.pop();
        cache.loaded.push(qi);
    });
    census(&a);
}

/// One CPU alone never finds a lock taken: every acquisition is counted,
/// none is contended.
#[test]
fn uncontended_locks_count_acquisitions_only() {
    let a = allocator(1024, &[0..1024], 2, 8, 4);
    for policy in [Policy::Magazine, Policy::GlobalLock] {
        a.set_policy(policy);
        let held: Vec<u64> = (0..40).map(|_| a.alloc_addr().unwrap()).collect();
        for p in held {
            a.free_addr(p).unwrap();
        }
    }
    let c = a.counters(0);
    assert!(c.buddy.acquired >= 80, "the global-lock round alone takes the buddy lock 80 times: {c:?}");
    assert!(c.depot.acquired > 0, "magazines went through the depot: {c:?}");
    assert_eq!((c.buddy.contended, c.buddy.spins, c.depot.contended, c.depot.spins), (0, 0, 0, 0), "{c:?}");
    assert_eq!(c.buddy_locks, c.buddy.acquired);
    assert_eq!(a.counters(1), CounterSnapshot::default(), "CPU 1 did nothing");
}

/// Runs `op` on CPU 0 while CPU 1 holds `lock` for a while: the
/// acquisition inside `op` must wait.
fn while_held<T: Send>(lock: &Mutex<T>, op: impl FnOnce()) {
    let held = std::sync::Barrier::new(2);
    std::thread::scope(|s| {
        s.spawn(|| {
            on_cpu(1);
            let g = lock.lock();
            held.wait();
            std::thread::sleep(std::time::Duration::from_millis(50));
            drop(g);
        });
        held.wait();
        on_cpu(0);
        op();
    });
}

#[test]
fn a_held_buddy_lock_is_counted_contended_with_its_spins() {
    let a = allocator(1024, &[0..1024], 2, 8, 4);
    a.set_policy(Policy::GlobalLock);
    let before = a.counters(0);
    while_held(&a.buddy, || {
        let p = a.alloc_addr().unwrap();
        a.free_addr(p).unwrap();
    });
    let d = a.counters(0) - before;
    assert_eq!((d.buddy.acquired, d.buddy.contended), (2, 1), "the alloc waited, the free did not: {d:?}");
    assert!(d.buddy.spins > 0, "{d:?}");
    assert_eq!(a.counters(1).buddy, LockSnapshot::default(), "the holder took the lock outside the allocator");
}

#[test]
fn a_held_depot_lock_is_counted_contended() {
    let a = allocator(1024, &[0..1024], 2, 8, 4);
    let before = a.counters(0);
    // Empty magazines: the first allocation asks the depot.
    while_held(&a.depot, || {
        a.alloc_addr().unwrap();
    });
    let d = a.counters(0) - before;
    assert_eq!((d.depot.acquired, d.depot.contended), (1, 1), "{d:?}");
    assert!(d.depot.spins > 0, "{d:?}");
    assert_eq!(d.buddy.contended, 0, "the buddy lock was free: {d:?}");
}

/// Owners allocate and free in a loop on three threads while a fourth
/// reclaims their caches again and again. Each owner cycles 4 frames
/// through magazines of 8, so left alone it would take the buddy lock once
/// (its first refill); every time a reclaim empties its cache it must
/// refill. Frames are stamped with their holder, so a frame handed to two
/// holders (a torn cache) is caught, and the census adds up at the end.
#[test]
fn a_remote_reclaim_drains_caches_owners_are_using() {
    const OWNERS: usize = 3;
    const FRAMES: usize = 1024;
    let a: &'static PhysAllocator<'static, Threads> =
        Box::leak(Box::new(allocator(FRAMES, &[0..FRAMES], OWNERS + 1, 8, 4)));
    let stamps: &'static [StdU64] = Vec::leak((0..FRAMES).map(|_| StdU64::new(0)).collect());
    let running = &*Box::leak(Box::new(std::sync::atomic::AtomicUsize::new(OWNERS)));
    const RECLAIMS: u64 = 100;
    let reclaimed = &*Box::leak(Box::new(StdU64::new(0)));
    let owners: Vec<_> = (1..=OWNERS)
        .map(|cpu| {
            std::thread::spawn(move || {
                on_cpu(cpu);
                // On until the reclaimer has run RECLAIMS times and this
                // owner has had to refill 5 times (drained under its feet),
                // or for 20 s at most (then the checks below fail).
                let start = std::time::Instant::now();
                for round in 0.. {
                    let refills = a.counters(cpu).buddy.acquired;
                    let enough = refills >= 5 && reclaimed.load(std::sync::atomic::Ordering::SeqCst) >= RECLAIMS;
                    if enough || start.elapsed() > std::time::Duration::from_secs(20) {
                        break;
                    }
                    let stamp = ((cpu as u64) << 32) | (round + 1);
                    let held: Vec<u64> = (0..4).map(|_| a.alloc_addr().unwrap()).collect();
                    for &p in &held {
                        let i = a.db().index_of(PhysAddr::new(p)).unwrap();
                        assert_eq!(stamps[i].swap(stamp, std::sync::atomic::Ordering::SeqCst), 0, "{p:#x} held twice");
                    }
                    for p in held {
                        let i = a.db().index_of(PhysAddr::new(p)).unwrap();
                        assert_eq!(stamps[i].swap(0, std::sync::atomic::Ordering::SeqCst), stamp);
                        a.free_addr(p).unwrap();
                    }
                }
                running.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
            })
        })
        .collect();
    on_cpu(0);
    let mut reclaims = 0u64;
    while running.load(std::sync::atomic::Ordering::SeqCst) > 0 {
        a.set_policy(Policy::Magazine); // reclaim_all, policy unchanged
        reclaims += 1;
        reclaimed.store(reclaims, std::sync::atomic::Ordering::SeqCst);
    }
    for t in owners {
        t.join().unwrap();
    }
    let c = census(a);
    assert_eq!((c.allocated, c.buddy + c.magazines + c.depot), (0, FRAMES as u64));
    assert_eq!(a.counters(0).reclaim_skips, 0, "every owner answered");
    assert!(reclaims >= RECLAIMS, "the reclaimer ran {reclaims} times");
    for cpu in 1..=OWNERS {
        let refills = a.counters(cpu).buddy.acquired;
        assert!(refills >= 5, "CPU {cpu}'s cache was drained while it ran {} times, not 4", refills.saturating_sub(1));
    }
    // After a last reclaim with the owners gone every frame is back.
    a.set_policy(Policy::Magazine);
    assert_eq!(census(a).buddy, FRAMES as u64);
}

/// CPU 1 keeps "interrupts" off longer than the quiesce bound: a reclaim
/// skips its cache (and counts it), the audit refuses with `NotFrozen`, and
/// neither changes anything; once CPU 1 is back both work again.
#[test]
fn a_cpu_that_stays_interrupts_off_is_skipped_by_reclaim_and_refused_by_audit() {
    let t = Threads::with_bound(2, std::time::Duration::from_millis(50));
    let a = allocator_on(t, 1024, &[0..1024], 2, 8, 4);
    let inside = std::sync::Barrier::new(2);
    let done = std::sync::atomic::AtomicBool::new(false);
    let cached = std::thread::scope(|s| {
        s.spawn(|| {
            on_cpu(1);
            let held: Vec<u64> = (0..5).map(|_| a.alloc_addr().unwrap()).collect();
            for p in held {
                a.free_addr(p).unwrap(); // parked in CPU 1's magazines
            }
            t.without_interrupts(|_| {
                inside.wait();
                while !done.load(std::sync::atomic::Ordering::SeqCst) {
                    std::thread::sleep(std::time::Duration::from_millis(5));
                }
            });
        });
        inside.wait();
        on_cpu(0);
        // Lets CPU 1 go however this thread leaves (a failed assertion too).
        struct Release<'a>(&'a std::sync::atomic::AtomicBool);
        impl Drop for Release<'_> {
            fn drop(&mut self) {
                self.0.store(true, std::sync::atomic::Ordering::SeqCst);
            }
        }
        let _release = Release(&done);
        let cached = a.cpus.remote(1).cached.load(Ordering::Relaxed);
        assert!(cached > 0);
        assert_eq!(a.audit(), Err(AuditViolation::NotFrozen { cpus: CpuSet::single(1) }));
        let skips = a.counters(0).reclaim_skips;
        a.set_policy(Policy::Magazine);
        assert_eq!(a.counters(0).reclaim_skips, skips + 1, "the skip is counted");
        assert_eq!(a.cpus.remote(1).cached.load(Ordering::Relaxed), cached, "CPU 1's cache was left alone");
        let mut held = 0u64;
        for _ in 0..1024 - cached {
            a.alloc_addr().unwrap();
            held += 1;
        }
        assert_eq!(a.alloc_addr(), Err(FrameError::OutOfMemory), "CPU 1's frames stay out of reach");
        assert_eq!(held + cached, 1024);
        cached
    });
    let c = census(&a);
    assert_eq!((c.magazines, c.allocated), (cached, 1024 - cached), "CPU 1 still holds its cache: {c:?}");
}

/// Two CPUs free the same frame at once, many times: exactly one free
/// succeeds each time (the CAS `Allocated → Cached`), the other is a
/// typed error, and no frame ends up in two magazines.
#[test]
fn racing_double_frees_have_exactly_one_winner() {
    let a = allocator(1024, &[0..1024], 3, 8, 4);
    let go = std::sync::Barrier::new(3);
    let addr = StdU64::new(0);
    let wins = StdU64::new(0);
    const ROUNDS: u64 = 2000;
    std::thread::scope(|s| {
        for cpu in 1..=2 {
            let (a, go, addr, wins) = (&a, &go, &addr, &wins);
            s.spawn(move || {
                on_cpu(cpu);
                for _ in 0..ROUNDS {
                    go.wait();
                    let p = addr.load(std::sync::atomic::Ordering::SeqCst);
                    // 0: the main thread failed; only the waits are owed.
                    if p != 0 {
                        match a.free_addr(p) {
                            Ok(()) => _ = wins.fetch_add(1, std::sync::atomic::Ordering::SeqCst),
                            Err(e) => assert_eq!(e, FrameError::AlreadyFree { phys: PhysAddr::new(p) }),
                        }
                    }
                    go.wait();
                }
            });
        }
        on_cpu(0);
        // A panic here must not leave the freeing threads waiting at the
        // barrier for ever: the waits still owed are made before it goes on.
        let waits = std::cell::Cell::new(0u64);
        let rounds = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            for round in 0..ROUNDS {
                addr.store(a.alloc_addr().unwrap(), std::sync::atomic::Ordering::SeqCst);
                for _ in 0..2 {
                    go.wait();
                    waits.set(waits.get() + 1);
                }
                assert_eq!(wins.load(std::sync::atomic::Ordering::SeqCst), round + 1, "round {round}");
            }
        }));
        if let Err(panic) = rounds {
            addr.store(0, std::sync::atomic::Ordering::SeqCst);
            for _ in waits.get()..2 * ROUNDS {
                go.wait();
            }
            std::panic::resume_unwind(panic);
        }
    });
    let c = census(&a);
    assert_eq!((c.allocated, c.buddy + c.magazines + c.depot), (0, 1024));
}
