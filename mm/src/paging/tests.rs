//! Host tests of demand paging on the simulated machine: threads play
//! CPUs and `access` plays the MMU (walks the entry, sets accessed and
//! dirty bits, raises a page fault when the entry does not allow it).
// Host tests map and free frames by address: host memory is a vector of
// atomics, so a wrong address is test data, never undefined behaviour.
#![allow(unsafe_code)]

use std::sync::atomic::Ordering;
use std::vec;
use std::vec::Vec;

use super::faulty_store::{FaultyStore, Transfer};
use super::policy::{Lru, Nru};
use super::store::RamStore;
use super::*;
use crate::frame::PhysAddr;
use crate::testing::on_cpu;
use crate::vm::pte::{ACCESSED, DIRTY, PRESENT, WRITABLE};
use crate::vm::table::{lookup, Lookup};
use crate::vm::testing::{boot, SimMachine};
use crate::vm::{KMemFlags, PAGE_SIZE};

type TestVm = Vm<SimMachine>;

mod scaling;

/// A machine of 4096 frames with paging on: a RAM store of `slots` slots
/// (a power of two up to 1024) and at most `limit` resident pages.
fn rig(slots: u64, limit: u64, lru: bool) -> &'static TestVm {
    rig_faulty(slots, limit, lru).0
}

type Faulty = FaultyStore;

/// `rig`, with the store behind a (disarmed) fault injector.
fn rig_faulty(slots: u64, limit: u64, lru: bool) -> (&'static TestVm, &'static Faulty) {
    // Every CPU has the kernel root loaded: evictions are checked against
    // all four TLBs.
    let vm: &'static TestVm = Box::leak(Box::new(boot(4096, 4)));
    let run = vm.platform().frames.alloc_contiguous(slots).unwrap();
    // SAFETY: the run was just allocated and goes to the store for good.
    let ram: &'static RamStore<'static, SimMachine> =
        Box::leak(Box::new(unsafe { RamStore::new(vm.platform(), vec![run], slots) }));
    let store: &'static Faulty = Box::leak(Box::new(FaultyStore::new(ram)));
    let db = vm.platform().frames.db();
    let policy: &'static dyn EvictionPolicy =
        if lru { Box::leak(Box::new(Lru::new(db.len()))) } else { Box::leak(Box::new(Nru::new())) };
    Paging::enable(vm, PagerConfig { db, store, policy, resident_limit: limit, reserve: 0 }).unwrap();
    (vm, store)
}

/// The paging of a rig's VM.
fn paging(vm: &TestVm) -> Paging<'_, SimMachine> {
    Paging::of(vm).expect("the rig turned paging on")
}

fn entry(vm: &TestVm, va: u64) -> u64 {
    match lookup(vm.platform(), vm.kernel().root, va, 0) {
        Lookup::Entry { entry, level: 0 } => entry.load(Ordering::Acquire),
        _ => 0,
    }
}

/// One access to the word at `va`, as the CPU makes it: a write if
/// `value` is given. Returns the word read (or written).
fn access(vm: &TestVm, va: u64, value: Option<u64>) -> Result<u64, PagingError> {
    loop {
        if let Lookup::Entry { entry, level: 0 } = lookup(vm.platform(), vm.kernel().root, va, 0) {
            let e = entry.load(Ordering::Acquire);
            if e & PRESENT != 0 && (value.is_none() || e & WRITABLE != 0) {
                let bits = if value.is_some() { ACCESSED | DIRTY } else { ACCESSED };
                // The MMU sets the bits only on the entry it walked.
                if entry.compare_exchange(e, e | bits, Ordering::AcqRel, Ordering::Relaxed).is_err() {
                    continue;
                }
                let (frame, offset) = (crate::vm::pte::addr(e), va % PAGE_SIZE);
                return Ok(match value {
                    Some(v) => {
                        vm.platform().set_word(frame, offset, v);
                        v
                    }
                    None => vm.platform().word(frame, offset),
                });
            }
        }
        paging(vm).page_fault(va, if value.is_some() { Access::WRITE } else { Access::READ })?;
    }
}

fn stats(vm: &TestVm) -> Counts {
    paging(vm).pager().stats().total()
}

fn used_slots(vm: &TestVm) -> u64 {
    paging(vm).pager().store().usage().0
}

/// Word `k` of page `va` for generation `gen`: its own address mixed
/// with the generation, so a wrong page or a stale copy shows.
fn pattern(va: u64, k: u64, gen: u64) -> u64 {
    (va + k * 8) ^ (gen << 48)
}

/// Writes and checks words 0 and 511 of every page in `order`.
fn write_pass(vm: &TestVm, base: u64, order: &[u64], gen: u64) {
    for &p in order {
        for k in [0, 511] {
            access(vm, base + p * PAGE_SIZE + k * 8, Some(pattern(base + p * PAGE_SIZE, k, gen))).unwrap();
        }
    }
}

fn check_pass(vm: &TestVm, base: u64, order: &[u64], gen: u64) {
    for &p in order {
        for k in [0, 511] {
            let got = access(vm, base + p * PAGE_SIZE + k * 8, None).unwrap();
            assert_eq!(got, pattern(base + p * PAGE_SIZE, k, gen), "page {p} word {k} generation {gen}");
        }
    }
}

fn orders(n: u64) -> [Vec<u64>; 3] {
    let forward: Vec<u64> = (0..n).collect();
    let reverse: Vec<u64> = (0..n).rev().collect();
    let zigzag: Vec<u64> = (0..n).map(|i| if i % 2 == 0 { i / 2 } else { n - 1 - i / 2 }).collect();
    [forward, reverse, zigzag]
}

fn overcommit(lru: bool) {
    let (slots, limit) = (256, 64);
    let vm = rig(slots, limit, lru);
    let free_before = vm.platform().free_bytes();
    let pages = limit + slots / 2;
    let base = vm.k_mem_map(pages * PAGE_SIZE, KMemFlags::RW).unwrap();
    assert_eq!(paging(vm).pager().resident(), 0, "nothing is mapped up front");
    for p in 0..pages {
        assert_eq!(access(vm, base + p * PAGE_SIZE + 8 * 7, None), Ok(0), "fresh memory reads zero");
    }
    for (gen, order) in orders(pages).iter().enumerate() {
        write_pass(vm, base, order, gen as u64 + 1);
        check_pass(vm, base, order, gen as u64 + 1);
        paging(vm).audit().unwrap();
    }
    let s = stats(vm);
    assert!(s.faults > pages, "{s:?}");
    assert!(s.evictions_clean > 0 && s.evictions_dirty > 0, "{s:?}");
    assert!(paging(vm).pager().resident() <= limit);
    vm.k_mem_unmap(base, pages * PAGE_SIZE).unwrap();
    assert_eq!(used_slots(vm), 0, "unmapping frees every slot");
    assert_eq!(paging(vm).pager().resident(), 0);
    assert_eq!(paging(vm).pager().committed(), 0);
    vm.sweep(vm.kernel()).unwrap();
    assert_eq!(vm.platform().free_bytes(), free_before, "every frame came back");
    paging(vm).audit().unwrap();
}

#[test]
fn overcommit_keeps_every_word_with_the_clock() {
    overcommit(false);
}

#[test]
fn overcommit_keeps_every_word_with_lru() {
    overcommit(true);
}

#[test]
fn page_out_then_exactly_that_many_faults() {
    let vm = rig(128, 1000, false);
    let base = vm.k_mem_map(32 * PAGE_SIZE, KMemFlags::RW).unwrap();
    write_pass(vm, base, &(0..32).collect::<Vec<_>>(), 1);
    paging(vm).page_out(base, 16 * PAGE_SIZE).unwrap();
    assert_eq!(used_slots(vm), 16);
    let before = stats(vm);
    check_pass(vm, base, &(0..32).collect::<Vec<_>>(), 1);
    assert_eq!(stats(vm).faults - before.faults, 16, "one fault per paged-out page");
    paging(vm).page_out(base, 32 * PAGE_SIZE).unwrap();
    paging(vm).page_in(base, 32 * PAGE_SIZE).unwrap();
    let before = stats(vm);
    check_pass(vm, base, &(0..32).collect::<Vec<_>>(), 1);
    assert_eq!(stats(vm).faults, before.faults, "page_in leaves nothing to fault");
    paging(vm).audit().unwrap();
}

#[test]
fn a_clean_page_with_a_copy_is_dropped_without_a_write() {
    let vm = rig(64, 1000, false);
    let base = vm.k_mem_map(PAGE_SIZE, KMemFlags::RW).unwrap();
    access(vm, base, Some(42)).unwrap();
    paging(vm).page_out(base, PAGE_SIZE).unwrap();
    assert_eq!(access(vm, base, None), Ok(42));
    let before = stats(vm);
    paging(vm).page_out(base, PAGE_SIZE).unwrap();
    let after = stats(vm);
    assert_eq!((after.page_outs, after.evictions_clean), (before.page_outs, before.evictions_clean + 1));
    assert_eq!(access(vm, base, None), Ok(42));
    // Written again: the copy is stale, so the next eviction writes.
    access(vm, base, Some(43)).unwrap();
    paging(vm).page_out(base, PAGE_SIZE).unwrap();
    assert_eq!(stats(vm).page_outs, after.page_outs + 1);
    assert_eq!(access(vm, base, None), Ok(43));
    paging(vm).audit().unwrap();
}

#[test]
fn pinned_pages_never_leave_and_unpin_lets_them() {
    let vm = rig(128, 16, false);
    let base = vm.k_mem_map(48 * PAGE_SIZE, KMemFlags::RW).unwrap();
    paging(vm).pin(base, 8 * PAGE_SIZE).unwrap();
    let pinned: Vec<u64> = (0..8).map(|p| entry(vm, base + p * PAGE_SIZE)).collect();
    assert!(pinned.iter().all(|e| token::is_resident(*e)));
    for gen in 1..4 {
        write_pass(vm, base, &(8..48).collect::<Vec<_>>(), gen);
        check_pass(vm, base, &(8..48).collect::<Vec<_>>(), gen);
    }
    for p in 0..8 {
        assert_eq!(
            crate::vm::pte::addr(entry(vm, base + p * PAGE_SIZE)),
            crate::vm::pte::addr(pinned[p as usize]),
            "pinned page {p} kept its frame"
        );
    }
    let (used, resident) = (used_slots(vm), paging(vm).pager().resident());
    assert_eq!(paging(vm).page_out(base, 9 * PAGE_SIZE), Err(PagingError::Pinned { virt: base }));
    assert_eq!((used_slots(vm), paging(vm).pager().resident()), (used, resident), "a refused page-out changes nothing");
    paging(vm).unpin(base, 8 * PAGE_SIZE).unwrap();
    paging(vm).page_out(base, 8 * PAGE_SIZE).unwrap();
    assert!(!token::is_resident(entry(vm, base)));
    paging(vm).audit().unwrap();
}

#[test]
fn bad_input_is_refused_and_changes_nothing() {
    let vm = rig(8, 4, false);
    let base = vm.k_mem_map(4 * PAGE_SIZE, KMemFlags::RW).unwrap();
    let ro = vm.k_mem_map(PAGE_SIZE, KMemFlags::NONE).unwrap();
    let locked = vm.k_mem_map(PAGE_SIZE, KMemFlags::RW | KMemFlags::LOCK).unwrap();
    let snapshot = |vm: &TestVm| {
        (vm.platform().free_bytes(), used_slots(vm), paging(vm).pager().resident(), entry(vm, ro), entry(vm, base))
    };
    let before = snapshot(vm);
    let guard = base - PAGE_SIZE;
    assert_eq!(paging(vm).page_fault(guard, Access::READ), Err(PagingError::NotPageable { virt: guard }));
    assert_eq!(paging(vm).page_fault(locked, Access::WRITE), Err(PagingError::NotPageable { virt: locked }));
    assert_eq!(paging(vm).page_fault(ro, Access::WRITE), Err(PagingError::Protection { virt: ro }));
    assert_eq!(
        paging(vm).page_fault(ro, Access { exec: true, ..Access::READ }),
        Err(PagingError::Protection { virt: ro })
    );
    assert_eq!(paging(vm).page_in(guard, PAGE_SIZE), Err(PagingError::NotPageable { virt: guard }));
    assert_eq!(paging(vm).pin(base, 5 * PAGE_SIZE), Err(PagingError::NotPageable { virt: base + 4 * PAGE_SIZE }));
    assert_eq!(
        paging(vm).page_out(base + 1, PAGE_SIZE),
        Err(PagingError::Range(VmError::NotAligned { value: base + 1 }))
    );
    assert_eq!(paging(vm).page_out(base, 0), Err(PagingError::Range(VmError::ZeroSize)));
    assert_eq!(
        paging(vm).page_out(0x1000, PAGE_SIZE),
        Err(PagingError::Range(VmError::BadRange { start: 0x1000, len: PAGE_SIZE }))
    );
    assert_eq!(
        paging(vm).evict_frame(PhysAddr::new(0x7000)),
        Err(PagingError::NotAPageFrame { phys: PhysAddr::new(0x7000) })
    );
    assert_eq!(
        paging(vm).evict_frame(PhysAddr::new(0x7001)),
        Err(PagingError::NotAPageFrame { phys: PhysAddr::new(0x7001) })
    );
    assert!(matches!(vm.k_mem_map(1 << 30, KMemFlags::RW), Err(VmError::CommitLimit { .. })));
    assert_eq!(snapshot(vm), before, "the read-only page is still untouched, nothing was paged");
    // A full store: page-out refuses up front.
    for p in 0..4 {
        access(vm, base + p * PAGE_SIZE, Some(p)).unwrap();
    }
    let smap = Access { denied: true, ..Access::READ };
    assert_eq!(
        paging(vm).page_fault(base, smap),
        Err(PagingError::Protection { virt: base }),
        "a present page the CPU refused"
    );
    let hog: Vec<u64> = (0..5).map(|_| paging(vm).pager().store().location_get(SlotFor::Other).unwrap()).collect();
    let before = snapshot(vm);
    assert_eq!(paging(vm).page_out(base, 4 * PAGE_SIZE), Err(PagingError::StoreFull));
    assert_eq!(snapshot(vm), before);
    for s in hog {
        paging(vm).pager().store().location_free(s).unwrap();
    }
    // Every resident page pinned: a fault that needs a frame fails and
    // leaves its token.
    paging(vm).pin(base, 4 * PAGE_SIZE).unwrap();
    let token = entry(vm, ro);
    assert_eq!(paging(vm).page_fault(ro, Access::READ), Err(PagingError::NoEvictableFrame));
    assert_eq!(entry(vm, ro), token);
    paging(vm).unpin(base, 4 * PAGE_SIZE).unwrap();
    assert_eq!(access(vm, ro, None), Ok(0));
    paging(vm).audit().unwrap();
}

#[test]
fn unmapped_pages_give_their_slots_back() {
    let vm = rig(64, 1000, false);
    let base = vm.k_mem_map(10 * PAGE_SIZE, KMemFlags::RW).unwrap();
    write_pass(vm, base, &(0..10).collect::<Vec<_>>(), 3);
    paging(vm).page_out(base, 6 * PAGE_SIZE).unwrap();
    paging(vm).page_in(base, 2 * PAGE_SIZE).unwrap(); // keeps copies: slots still used
    assert_eq!(used_slots(vm), 6);
    assert_eq!(paging(vm).audit().unwrap().copies, 2);
    vm.k_mem_unmap(base, 10 * PAGE_SIZE).unwrap();
    assert_eq!(used_slots(vm), 0);
    assert_eq!(paging(vm).audit().unwrap(), PagingAudit::default());
}

#[test]
fn an_unpaged_mapping_reads_what_the_store_holds() {
    let vm = rig(64, 1000, false);
    let pg = paging(vm).pager();
    let handle = vm.platform().frames.alloc_page().unwrap();
    let frame = handle.phys().as_u64();
    let first = pg.store().location_get(SlotFor::Other).unwrap();
    let second = pg.store().location_get(SlotFor::Other).unwrap();
    assert_eq!(second, first + 1);
    for (slot, word) in [(first, 0xAAAA), (second, 0xBBBB)] {
        vm.platform().set_word(frame, 16, word);
        pg.store().page_out(slot, &handle).unwrap();
    }
    assert_eq!(
        paging(vm).k_mem_map_unpaged(first, 3 * PAGE_SIZE, KMemFlags::RW),
        Err(PagingError::Store(StoreError::BadSlot { slot: first + 2 }))
    );
    let va = paging(vm).k_mem_map_unpaged(first, 2 * PAGE_SIZE, KMemFlags::RW).unwrap();
    assert_eq!(access(vm, va + 16, None), Ok(0xAAAA));
    assert_eq!(access(vm, va + PAGE_SIZE + 16, None), Ok(0xBBBB));
    vm.k_mem_unmap(va, 2 * PAGE_SIZE).unwrap();
    assert_eq!(used_slots(vm), 0, "the mapping owned the slots");
}

/// Four threads (CPUs) write and check their own word of every page of
/// one shared region, far bigger than the resident limit; each keeps a
/// shadow of what it wrote (uffd-stress style).
fn shared_thrash(mode: Mode) {
    let vm = rig(256, 24, false);
    paging(vm).pager().set_mode(mode);
    let pages = 96;
    let base = vm.k_mem_map(pages * PAGE_SIZE, KMemFlags::RW).unwrap();
    std::thread::scope(|s| {
        for cpu in 0..4u64 {
            s.spawn(move || {
                on_cpu(cpu as usize);
                let mut shadow = vec![0u64; pages as usize];
                let mut x = cpu * 7 + 1;
                for round in 1..=400u64 {
                    x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                    let p = (x >> 33) % pages;
                    let va = base + p * PAGE_SIZE + cpu * 8;
                    assert_eq!(access(vm, va, None).unwrap(), shadow[p as usize], "cpu {cpu} page {p}");
                    let v = (round << 8) | cpu;
                    access(vm, va, Some(v)).unwrap();
                    shadow[p as usize] = v;
                }
            });
        }
    });
    paging(vm).audit().unwrap();
    let s = stats(vm);
    assert!(s.evictions() > 0 && s.page_ins > 0, "{s:?}");
    vm.k_mem_unmap(base, pages * PAGE_SIZE).unwrap();
    assert_eq!(used_slots(vm), 0);
}

#[test]
fn cpus_thrash_one_region_with_busy_states() {
    shared_thrash(Mode::BusyState);
}

#[test]
fn cpus_thrash_one_region_under_the_global_lock() {
    shared_thrash(Mode::GlobalLock);
}

#[test]
fn the_clock_jumps_to_the_frames_paging_uses() {
    let vm = rig(16, 1000, false);
    let pg = paging(vm).pager();
    let n = pg.db.len();
    assert_eq!(pg.next_candidate(0), n);
    let base = vm.k_mem_map(PAGE_SIZE, KMemFlags::RW).unwrap();
    access(vm, base, Some(1)).unwrap();
    let i = pg.db.index_of(crate::frame::PhysAddr::new_truncate(crate::vm::pte::addr(entry(vm, base)))).unwrap();
    assert_eq!((pg.next_candidate(0), pg.next_candidate(i), pg.next_candidate(i + 1)), (i, i, n));
    paging(vm).page_out(base, PAGE_SIZE).unwrap();
    assert_eq!(pg.next_candidate(0), n, "an evicted frame is no candidate");
}

#[test]
fn a_failed_page_out_leaves_the_page_resident_and_mapped() {
    let (vm, faulty) = rig_faulty(8, 64, false);
    let base = vm.k_mem_map(4 * PAGE_SIZE, KMemFlags::RW).unwrap();
    write_pass(vm, base, &[0, 1, 2, 3], 1);
    let before = (stats(vm), used_slots(vm), paging(vm).pager().resident());
    faulty.arm(Transfer::Out, 1);
    let r = paging(vm).page_out(base + PAGE_SIZE, PAGE_SIZE);
    assert!(matches!(r, Err(PagingError::Store(StoreError::Io { .. }))), "{r:?}");
    assert_eq!(faulty.failed(), 1);
    let e = entry(vm, base + PAGE_SIZE);
    assert!(e & PRESENT != 0 && e & DIRTY != 0, "still mapped and still dirty: {e:#x}");
    assert_eq!(
        (stats(vm).page_outs, used_slots(vm), paging(vm).pager().resident()),
        (before.0.page_outs, before.1, before.2)
    );
    check_pass(vm, base, &[0, 1, 2, 3], 1);
    assert_eq!(stats(vm).faults, before.0.faults, "nothing had to fault back");
    // The next try writes it.
    paging(vm).page_out(base + PAGE_SIZE, PAGE_SIZE).unwrap();
    check_pass(vm, base, &[0, 1, 2, 3], 1);
    paging(vm).audit().unwrap();
    vm.k_mem_unmap(base, 4 * PAGE_SIZE).unwrap();
}

#[test]
fn a_failed_write_while_evicting_for_a_fault_loses_nothing() {
    let (vm, faulty) = rig_faulty(8, 2, false);
    let base = vm.k_mem_map(3 * PAGE_SIZE, KMemFlags::RW).unwrap();
    write_pass(vm, base, &[0, 1], 1);
    faulty.arm(Transfer::Out, 1);
    // The third page needs a frame: a dirty victim is written, and fails.
    let r = access(vm, base + 2 * PAGE_SIZE, Some(7));
    faulty.disarm();
    match r {
        Err(PagingError::Store(StoreError::Io { .. })) => {}
        Ok(_) => assert_eq!(faulty.failed(), 1, "eviction went on with another victim after the failure"),
        Err(e) => panic!("{e:?}"),
    }
    check_pass(vm, base, &[0, 1], 1);
    assert_eq!(access(vm, base + 2 * PAGE_SIZE, Some(7)).unwrap(), 7);
    check_pass(vm, base, &[0, 1], 1);
    paging(vm).audit().unwrap();
    vm.k_mem_unmap(base, 3 * PAGE_SIZE).unwrap();
}

#[test]
fn a_failed_page_in_leaves_the_page_out_and_its_data_intact() {
    let (vm, faulty) = rig_faulty(8, 64, false);
    let base = vm.k_mem_map(2 * PAGE_SIZE, KMemFlags::RW).unwrap();
    write_pass(vm, base, &[0, 1], 3);
    paging(vm).page_out(base, 2 * PAGE_SIZE).unwrap();
    let before = (used_slots(vm), paging(vm).pager().resident(), entry(vm, base));
    faulty.arm(Transfer::In, 1);
    let r = paging(vm).page_in(base, PAGE_SIZE);
    assert!(matches!(r, Err(PagingError::Store(StoreError::Io { .. }))), "{r:?}");
    assert_eq!(
        (used_slots(vm), paging(vm).pager().resident(), entry(vm, base)),
        before,
        "the page is still out, in its slot"
    );
    // The same through a fault: the fault fails, the page stays out.
    faulty.arm(Transfer::In, 1);
    let r = access(vm, base + 8, None);
    assert!(matches!(r, Err(PagingError::Store(StoreError::Io { .. }))), "{r:?}");
    assert_eq!((used_slots(vm), paging(vm).pager().resident(), entry(vm, base)), before);
    assert_eq!(faulty.failed(), 2);
    check_pass(vm, base, &[0, 1], 3);
    paging(vm).audit().unwrap();
    vm.k_mem_unmap(base, 2 * PAGE_SIZE).unwrap();
    assert_eq!(used_slots(vm), 0);
}

#[test]
fn store_reads_and_writes_are_counted_per_transfer() {
    let (vm, faulty) = rig_faulty(64, 1000, false);
    let base = vm.k_mem_map(4 * PAGE_SIZE, KMemFlags::RW).unwrap();
    let before = stats(vm);
    write_pass(vm, base, &[0, 1, 2, 3], 1);
    let d = stats(vm);
    assert_eq!(
        (d.store_reads, d.store_writes),
        (before.store_reads, before.store_writes),
        "fresh pages touch no store"
    );
    paging(vm).page_out(base, 4 * PAGE_SIZE).unwrap();
    let out = stats(vm);
    assert_eq!((out.store_writes - d.store_writes, out.store_reads - d.store_reads), (4, 0));
    check_pass(vm, base, &[0, 1, 2, 3], 1);
    let back = stats(vm);
    assert_eq!((back.store_reads - out.store_reads, back.store_writes - out.store_writes), (4, 0));
    // Clean pages with a valid copy are dropped: no write.
    paging(vm).page_out(base, 4 * PAGE_SIZE).unwrap();
    assert_eq!(stats(vm).store_writes, back.store_writes);
    // A failed read is a read the store was asked for.
    faulty.arm(Transfer::In, 1);
    assert!(paging(vm).page_in(base, PAGE_SIZE).is_err());
    assert_eq!(stats(vm).store_reads, back.store_reads + 1);
    assert_eq!(
        stats(vm).global_lock,
        crate::lock_count::LockSnapshot::default(),
        "busy-state mode takes no global lock"
    );
    vm.k_mem_unmap(base, 4 * PAGE_SIZE).unwrap();
}

#[test]
fn the_global_lock_is_counted_and_contended_only_when_held() {
    let vm = rig(64, 1000, false);
    let pg = paging(vm).pager();
    pg.set_mode(Mode::GlobalLock);
    let base = vm.k_mem_map(2 * PAGE_SIZE, KMemFlags::RW).unwrap();
    let before = pg.stats().cpu(0).global_lock;
    access(vm, base, Some(1)).unwrap();
    let alone = pg.stats().cpu(0).global_lock - before;
    assert!(alone.acquired >= 1, "{alone:?}");
    assert_eq!((alone.contended, alone.spins), (0, 0), "{alone:?}");
    let held = std::sync::Barrier::new(2);
    let before = pg.stats().cpu(0).global_lock;
    std::thread::scope(|s| {
        s.spawn(|| {
            on_cpu(1);
            let g = pg.global.lock();
            held.wait();
            std::thread::sleep(std::time::Duration::from_millis(30));
            drop(g);
        });
        held.wait();
        on_cpu(0);
        access(vm, base + PAGE_SIZE, Some(2)).unwrap();
    });
    let d = pg.stats().cpu(0).global_lock - before;
    assert_eq!(d.contended, 1, "{d:?}");
    assert!(d.acquired >= 1 && d.spins > 0, "{d:?}");
    assert_eq!(pg.stats().cpu(1).global_lock.acquired, 0, "the holder took it outside the pager");
    pg.set_mode(Mode::BusyState);
    vm.k_mem_unmap(base, 2 * PAGE_SIZE).unwrap();
}
