//! What keeps the fault path from writing lines other CPUs write: the
//! resident count kept per CPU (and the limit still honoured), candidate
//! maps per CPU (and the evictor still finding every candidate), the free
//! frames read once per grant, not per fault.

use super::*;

/// A `rig` with a reserve: free frames kept back from paging.
fn rig_reserve(slots: u64, limit: u64, reserve: u64) -> &'static TestVm {
    let vm: &'static TestVm = Box::leak(Box::new(boot(4096, 4)));
    let run = vm.platform().frames.alloc_contiguous(slots).unwrap();
    // SAFETY: the run was just allocated and goes to the store for good.
    let ram: &'static RamStore<'static, SimMachine> =
        Box::leak(Box::new(unsafe { RamStore::new(vm.platform(), vec![run], slots) }));
    let db = vm.platform().frames.db();
    let policy: &'static dyn EvictionPolicy = Box::leak(Box::new(Nru::new()));
    Paging::enable(vm, PagerConfig { db, store: ram, policy, resident_limit: limit, reserve }).unwrap();
    vm
}

/// Reads page `p` of `base` on CPU `cpu` (a thread of its own).
fn touch_on(vm: &'static TestVm, cpu: usize, base: u64, pages: std::ops::Range<u64>) {
    std::thread::spawn(move || {
        on_cpu(cpu);
        for p in pages {
            access(vm, base + p * PAGE_SIZE, None).unwrap();
        }
    })
    .join()
    .unwrap();
}

#[test]
fn the_resident_limit_holds_while_other_cpus_keep_unfolded_deltas() {
    let limit = 200;
    // Store slots for the commit limit (reads of fresh pages write none).
    let vm = rig(512, limit, false);
    let pg = paging(vm).pager();
    let base = vm.k_mem_map(600 * PAGE_SIZE, KMemFlags::RW).unwrap();
    // CPUs 1-3 each page in less than a batch: their deltas stay their own.
    for cpu in 1..4 {
        let first = (cpu as u64 - 1) * 30;
        touch_on(vm, cpu, base, first..first + 30);
        assert_eq!(pg.resident_parts(cpu), (0, 30), "cpu {cpu}: under a batch nothing is folded");
    }
    // CPU 0 faults far past the limit: near it the answer comes from every
    // CPU's delta, so the limit holds exactly (one CPU, nothing in flight).
    on_cpu(0);
    for p in 90..400 {
        access(vm, base + p * PAGE_SIZE, None).unwrap();
        assert!(pg.resident() <= limit, "page {p}: {} resident over a limit of {limit}", pg.resident());
    }
    assert_eq!(pg.resident(), limit, "eviction reuses frames at the limit");
    paging(vm).audit().unwrap();
    // All four at once: at most one page in flight per CPU past the limit.
    let hs: Vec<_> = (0..4u64)
        .map(|cpu| {
            std::thread::spawn(move || {
                on_cpu(cpu as usize);
                for p in 0..50 {
                    access(vm, base + (400 + cpu * 50 + p) * PAGE_SIZE, None).unwrap();
                }
            })
        })
        .collect();
    for h in hs {
        h.join().unwrap();
    }
    let after = pg.resident();
    assert!(after <= limit + 4, "{after} resident: more than one page per CPU over {limit}");
    paging(vm).audit().unwrap();
    // A lower limit: the next faults evict (a batch each, one frame
    // reused) until the count is back under it, and it stays there.
    pg.set_resident_limit(100);
    on_cpu(0);
    let mut faults = 0;
    for p in (0..600).cycle().take(400) {
        access(vm, base + p * PAGE_SIZE, None).unwrap();
        faults += 1;
        if pg.resident() <= 100 {
            break;
        }
    }
    assert!(pg.resident() <= 100, "still {} resident after {faults} faults", pg.resident());
    assert!(faults <= (after - 100) / 7 + 2, "{faults} faults to come down from {after}");
    for p in 0..600 {
        access(vm, base + p * PAGE_SIZE, None).unwrap();
        assert!(pg.resident() <= 100);
    }
    paging(vm).audit().unwrap();
    vm.k_mem_unmap(base, 600 * PAGE_SIZE).unwrap();
    assert_eq!(pg.resident(), 0, "the deltas sum to zero once everything is unmapped");
}

#[test]
fn one_evictor_finds_the_pages_every_cpu_faulted() {
    let vm = rig(64, 10_000, false);
    let pg = paging(vm).pager();
    let base = vm.k_mem_map(200 * PAGE_SIZE, KMemFlags::RW).unwrap();
    for cpu in 0..4 {
        touch_on(vm, cpu, base, cpu as u64 * 50..cpu as u64 * 50 + 50);
    }
    paging(vm).audit().unwrap();
    let frame = |p: u64| pg.db.index_of(PhysAddr::new_truncate(crate::vm::pte::addr(entry(vm, base + p * PAGE_SIZE))));
    let mut found = std::collections::BTreeSet::new();
    let mut i = pg.next_candidate(0);
    while i < pg.db.len() {
        found.insert(i);
        i = pg.next_candidate(i + 1);
    }
    for p in 0..200 {
        assert!(found.contains(&frame(p).unwrap()), "page {p}'s frame is no candidate");
    }
    assert_eq!(found.len(), 200);
    // CPU 0 evicts through the policy (which walks the candidates) until
    // nothing is left: every CPU's pages go.
    on_cpu(0);
    let p = paging(vm);
    let mut batches = 0;
    while p
        .paging_op(|pg| p.evict_batch(pg, 8, SlotFor::Fault).map(|f| f.into_iter().for_each(|f| vm.free_kept(f))))
        .is_ok()
    {
        batches += 1;
        assert!(batches <= 200, "eviction does not end");
    }
    assert_eq!(pg.resident(), 0, "pages the evictor could not find stayed resident");
    assert_eq!(pg.next_candidate(0), pg.db.len(), "evicted by CPU 0, untracked in every CPU's map");
    paging(vm).audit().unwrap();
}

#[test]
fn the_audit_reports_a_frame_missing_from_the_candidates() {
    let vm = rig(16, 1000, false);
    let pg = paging(vm).pager();
    let base = vm.k_mem_map(PAGE_SIZE, KMemFlags::RW).unwrap();
    access(vm, base, Some(1)).unwrap();
    let i = pg.db.index_of(PhysAddr::new_truncate(crate::vm::pte::addr(entry(vm, base)))).unwrap();
    pg.candidates.untrack(0, i);
    assert_eq!(paging(vm).audit(), Err(PagingViolation::NotACandidate { phys: pg.db.phys_of(i) }));
    pg.candidates.track(0, i);
    paging(vm).audit().unwrap();
}

#[test]
fn free_frames_are_read_once_per_grant_not_per_fault() {
    let vm = rig(64, 10_000, false);
    let base = vm.k_mem_map(512 * PAGE_SIZE, KMemFlags::RW).unwrap();
    let reads = || vm.platform().free_frame_reads.load(Ordering::Relaxed);
    let before = reads();
    on_cpu(0);
    for p in 0..512 {
        access(vm, base + p * PAGE_SIZE, None).unwrap();
    }
    // About 3900 frames free, no reserve, 4 CPUs online: a grant of
    // 3900 / 8, capped at FREE_GRANT_MAX.
    let n = reads() - before;
    assert!(n <= 512 / 16, "{n} reads of the free frames for 512 faults");
    assert!(n >= 512 / 64, "{n} reads: a grant is at most FREE_GRANT_MAX");
}

#[test]
fn near_the_reserve_every_fault_reads_the_free_frames_and_evicts() {
    // Everything but 60 free frames reserved: grants are 0.
    let probe = boot(4096, 4);
    let free = probe.platform().free_bytes() / PAGE_SIZE - 256;
    let vm = rig_reserve(256, 10_000, free - 60);
    let reserve = free - 60;
    let base = vm.k_mem_map(300 * PAGE_SIZE, KMemFlags::RW).unwrap();
    let free_now = || vm.platform().free_bytes() / PAGE_SIZE;
    on_cpu(0);
    for p in 0..300 {
        access(vm, base + p * PAGE_SIZE, None).unwrap();
        assert!(free_now() + 1 >= reserve, "page {p}: {} free, reserve {reserve}", free_now());
    }
    assert!(stats(vm).evictions() > 0, "the reserve made faults evict");
    paging(vm).audit().unwrap();
}
