//! Demand paging on one CPU through real page faults: overcommit with
//! data checks in three orders, explicit page-out/page-in with exact fault
//! counts, pinning, on-demand mappings over store slots, and refused
//! calls that change nothing.

use mm::frame::PhysAddr;
use mm::paging::{Counts, Pager, Paging, PagingError, SlotFor};
use mm::vm::{KMemFlags, VmError, PAGE_SIZE};
use x86_64::structures::idt::PageFaultErrorCode as Code;

use super::{ensure, fails, failure, probe, register, Test, TestResult};
use crate::{frames, paging, vm};

/// Resident limit for the tests: 4 MiB of RAM for paging, so a mapping
/// of RAM + half the store is 12 MiB.
pub const TEST_RESIDENT: u64 = 1024;

/// The kernel's paging (the paging tests run only with it on).
pub fn paging() -> Paging<'static, crate::vm::KernelVm> {
    crate::paging::get().expect("paging is on")
}

pub fn pager() -> &'static Pager {
    paging().pager()
}

/// Reads word `addr` of an on-demand mapping (faults are resolved by the
/// page-fault handler).
pub fn get(addr: u64) -> u64 {
    // SAFETY: callers pass addresses inside mappings they made and keep.
    unsafe { (addr as *const u64).read_volatile() }
}

pub fn put(addr: u64, value: u64) {
    // SAFETY: callers pass addresses inside writable mappings they made.
    unsafe { (addr as *mut u64).write_volatile(value) }
}

/// What a refused call must leave as it was.
#[derive(Debug, PartialEq, Eq, Clone, Copy)]
pub(crate) struct State {
    free: u64,
    regions: u64,
    slots: u64,
    resident: u64,
    committed: u64,
}

pub(crate) fn state() -> State {
    // Emptied page tables stay until a sweep (earlier tests' too): take
    // every state after one, so two states compare like with like.
    let _ = vm::get().sweep(vm::get().kernel());
    let pg = pager();
    State {
        free: frames::get().free_bytes(),
        regions: vm::get().region_bytes(),
        slots: pg.store().usage().0,
        resident: pg.resident(),
        committed: pg.committed(),
    }
}

pub(crate) fn my_counts() -> Counts {
    pager().stats().cpu(smp::percpu::current_index())
}

/// The paging audit and the frame audit.
pub fn audit(when: &str) -> TestResult {
    paging().audit().map_err(|v| failure(format_args!("{when}: paging audit: {v:?}")))?;
    frames::get().audit().map_err(|v| failure(format_args!("{when}: frame audit: {v:?}")))?;
    Ok(())
}

/// The value the word at `addr` holds in generation `gen`: its own
/// address and the generation, so a wrong page or a stale copy shows.
pub fn pattern(addr: u64, gen: u64) -> u64 {
    addr ^ (gen << 52)
}

fn zigzag(n: u64, i: u64) -> u64 {
    if i.is_multiple_of(2) {
        i / 2
    } else {
        n - 1 - i / 2
    }
}

register!(Test::new("paging::overcommit_ram_plus_half_the_store", overcommit));
fn overcommit() -> TestResult {
    let pg = pager();
    let before = state();
    pg.set_resident_limit(TEST_RESIDENT);
    let r = overcommit_rounds();
    pg.set_resident_limit(u64::MAX);
    r?;
    ensure!(state() == before, "after unmap: {:?}, before: {before:?}", state());
    audit("after unmap")
}

fn overcommit_rounds() -> TestResult {
    let vm = vm::get();
    let pages = TEST_RESIDENT + pager().store().usage().1 / 2;
    let a = vm.k_mem_map(pages * PAGE_SIZE, KMemFlags::RW).map_err(fails)?;
    let start = pager().stats().total();
    let r = (|| {
        for p in 0..pages {
            for w in (0..PAGE_SIZE).step_by(8) {
                let v = get(a + p * PAGE_SIZE + w);
                ensure!(v == 0, "fresh page {p} word {w:#x} is {v:#x}");
            }
        }
        type Order = (&'static str, fn(u64, u64) -> u64);
        let orders: [Order; 3] = [("forward", |_, i| i), ("reverse", |n, i| n - 1 - i), ("zigzag", zigzag)];
        for (gen, (name, order)) in orders.iter().enumerate() {
            let gen = gen as u64 + 1;
            for i in 0..pages {
                let base = a + order(pages, i) * PAGE_SIZE;
                for w in (0..PAGE_SIZE).step_by(8) {
                    put(base + w, pattern(base + w, gen));
                }
            }
            for i in 0..pages {
                let base = a + order(pages, i) * PAGE_SIZE;
                for w in (0..PAGE_SIZE).step_by(8) {
                    let v = get(base + w);
                    ensure!(
                        v == pattern(base + w, gen),
                        "{name}: {:#x} reads {v:#x}, wrote {:#x}",
                        base + w,
                        pattern(base + w, gen)
                    );
                }
            }
            audit(name)?;
        }
        Ok(())
    })();
    let s = pager().stats().total();
    vm.k_mem_unmap(a, pages * PAGE_SIZE).map_err(fails)?;
    r?;
    let (faults, clean, dirty) =
        (s.faults - start.faults, s.evictions_clean - start.evictions_clean, s.evictions_dirty - start.evictions_dirty);
    log::info!("paging: overcommit of {pages} pages over {TEST_RESIDENT} frames: {faults} faults, {clean} clean and {dirty} dirty evictions");
    ensure!(faults > pages && clean > 0 && dirty > 0, "faults {faults}, clean {clean}, dirty {dirty}");
    Ok(())
}

register!(Test::new("paging::page_out_half_then_exact_faults", page_out_half));
fn page_out_half() -> TestResult {
    let vm = vm::get();
    let pages = 64;
    let a = vm.k_mem_map(pages * PAGE_SIZE, KMemFlags::RW).map_err(fails)?;
    let r = (|| {
        for p in 0..pages {
            put(a + p * PAGE_SIZE, pattern(a + p * PAGE_SIZE, 7));
        }
        paging().page_out(a, pages / 2 * PAGE_SIZE).map_err(fails)?;
        let before = my_counts().faults;
        for p in 0..pages {
            ensure!(get(a + p * PAGE_SIZE) == pattern(a + p * PAGE_SIZE, 7), "page {p} after page-out");
        }
        let faults = my_counts().faults - before;
        ensure!(faults == pages / 2, "{faults} faults touching {} paged-out pages", pages / 2);
        paging().page_out(a, pages * PAGE_SIZE).map_err(fails)?;
        paging().page_in(a, pages * PAGE_SIZE).map_err(fails)?;
        let before = my_counts().faults;
        for p in 0..pages {
            ensure!(get(a + p * PAGE_SIZE) == pattern(a + p * PAGE_SIZE, 7), "page {p} after page-in");
        }
        ensure!(my_counts().faults == before, "{} faults after page_in", my_counts().faults - before);
        audit("page-out/page-in")
    })();
    vm.k_mem_unmap(a, pages * PAGE_SIZE).map_err(fails)?;
    r
}

register!(Test::new("paging::pinned_pages_never_fault", pinned_pages));
fn pinned_pages() -> TestResult {
    let vm = vm::get();
    let pg = pager();
    let (pages, pinned) = (256u64, 16u64);
    let a = vm.k_mem_map(pages * PAGE_SIZE, KMemFlags::RW).map_err(fails)?;
    pg.set_resident_limit(64);
    let r = (|| {
        paging().pin(a, pinned * PAGE_SIZE).map_err(fails)?;
        for p in 0..pinned {
            put(a + p * PAGE_SIZE, p);
        }
        for gen in 1..4 {
            for p in pinned..pages {
                put(a + p * PAGE_SIZE, pattern(a + p * PAGE_SIZE, gen));
            }
        }
        let before = my_counts().faults;
        for p in 0..pinned {
            ensure!(get(a + p * PAGE_SIZE) == p, "pinned page {p}");
        }
        ensure!(my_counts().faults == before, "pinned pages faulted {} times", my_counts().faults - before);
        let s = state();
        let refused = paging().page_out(a, PAGE_SIZE);
        ensure!(refused == Err(PagingError::Pinned { virt: a }), "page-out of a pinned page: {refused:?}");
        ensure!(state() == s, "the refused page-out changed {s:?} to {:?}", state());
        paging().unpin(a, pinned * PAGE_SIZE).map_err(fails)?;
        paging().page_out(a, pinned * PAGE_SIZE).map_err(fails)?;
        let before = my_counts().faults;
        ensure!(get(a) == 0, "unpinned page 0 after page-out");
        ensure!(my_counts().faults == before + 1, "an unpinned, paged-out page faults once");
        audit("pinning")
    })();
    pg.set_resident_limit(u64::MAX);
    vm.k_mem_unmap(a, pages * PAGE_SIZE).map_err(fails)?;
    r
}

register!(Test::new("paging::unpaged_mapping_over_store_slots", unpaged_mapping));
fn unpaged_mapping() -> TestResult {
    let vm = vm::get();
    let store = pager().store();
    let before = state();
    let mut frame = frames::get().alloc_page().map_err(fails)?;
    let slots =
        [store.location_get(SlotFor::Other).map_err(fails)?, store.location_get(SlotFor::Other).map_err(fails)?];
    let run = slots[1] == slots[0] + 1;
    for (i, &s) in slots.iter().enumerate() {
        crate::memory::fill_frame_words(&mut frame, 0x5107_0000 + i as u64);
        store.page_out(s, &frame).map_err(fails)?;
    }
    frames::get().free_page(frame).map_err(fails)?;
    ensure!(run, "two fresh slots are not adjacent: {slots:?}");
    let a = paging().k_mem_map_unpaged(slots[0], 2 * PAGE_SIZE, KMemFlags::RW).map_err(fails)?;
    let seen = [get(a + 64), get(a + PAGE_SIZE + 64)];
    vm.k_mem_unmap(a, 2 * PAGE_SIZE).map_err(fails)?;
    ensure!(seen == [0x5107_0000, 0x5107_0001], "the mapping reads {seen:x?}");
    ensure!(state() == before, "unmap gave back the slots and frames: {:?} vs {before:?}", state());
    Ok(())
}

register!(Test::new("paging::refused_calls_change_nothing", refused_calls));
fn refused_calls() -> TestResult {
    let vm = vm::get();
    let a = vm.k_mem_map(4 * PAGE_SIZE, KMemFlags::RW).map_err(fails)?;
    let ro = vm.k_mem_map(PAGE_SIZE, KMemFlags::NONE).map_err(fails)?;
    let r = refusals(a, ro);
    vm.k_mem_unmap(ro, PAGE_SIZE).map_err(fails)?;
    vm.k_mem_unmap(a, 4 * PAGE_SIZE).map_err(fails)?;
    r
}

fn refusals(a: u64, ro: u64) -> TestResult {
    let vm = vm::get();
    let pg = pager();
    let before = state();
    // A fault on a guard page is reported, not paged in.
    let guard = probe::read(a - 8);
    ensure!(matches!(guard, Err(f) if f.cr2 == a - 8), "guard page read: {guard:?}");
    ensure!(paging::take_last_error() == Some(PagingError::NotPageable { virt: a - PAGE_SIZE }), "guard fault reason");
    // A write to a read-only on-demand page is reported and marks nothing.
    let write = probe::write(ro, 1);
    ensure!(
        matches!(write, Err(f) if probe::code(&f).contains(Code::CAUSED_BY_WRITE)),
        "write to read-only: {write:?}"
    );
    ensure!(paging::take_last_error() == Some(PagingError::Protection { virt: ro }), "read-only fault reason");
    let cases: [(Result<(), PagingError>, PagingError); 7] = [
        (paging().page_in(a - PAGE_SIZE, PAGE_SIZE), PagingError::NotPageable { virt: a - PAGE_SIZE }),
        (paging().pin(a, 5 * PAGE_SIZE), PagingError::NotPageable { virt: a + 4 * PAGE_SIZE }),
        (paging().page_out(a + 8, PAGE_SIZE), PagingError::Range(VmError::NotAligned { value: a + 8 })),
        (paging().unpin(a, 0), PagingError::Range(VmError::ZeroSize)),
        (paging().page_in(0x1000, PAGE_SIZE), PagingError::Range(VmError::BadRange { start: 0x1000, len: PAGE_SIZE })),
        (
            paging().evict_frame(frames::get().db().phys_of(0)),
            PagingError::NotAPageFrame { phys: frames::get().db().phys_of(0) },
        ),
        (paging().evict_frame(PhysAddr::new(0x1234)), PagingError::NotAPageFrame { phys: PhysAddr::new(0x1234) }),
    ];
    for (i, (got, want)) in cases.iter().enumerate() {
        ensure!(*got == Err(*want), "case {i}: {got:?}, expected {want:?}");
    }
    let huge = vm.k_mem_map(1 << 33, KMemFlags::RW);
    ensure!(matches!(huge, Err(VmError::CommitLimit { .. })), "a mapping beyond RAM + store: {huge:?}");
    ensure!(state() == before, "refused calls changed {before:?} to {:?}", state());
    // The refused write left the page clean: read in, it is evicted clean.
    ensure!(get(ro) == 0, "read-only page reads zero");
    let s = pg.stats().total();
    paging().page_out(ro, PAGE_SIZE).map_err(fails)?;
    let t = pg.stats().total();
    ensure!(
        t.evictions_clean == s.evictions_clean + 1 && t.page_outs == s.page_outs,
        "the read-only page was not clean"
    );
    // A full store: page-out is refused up front.
    for p in 0..4 {
        put(a + p * PAGE_SIZE, p + 1);
    }
    let store = pg.store();
    let (used, total) = store.usage();
    let mut hog = alloc::vec::Vec::new();
    for _ in used..total - 2 {
        hog.push(store.location_get(SlotFor::Other).map_err(fails)?);
    }
    let full = state();
    let refused = paging().page_out(a, 4 * PAGE_SIZE);
    let after = state();
    for s in hog {
        store.location_free(s).map_err(fails)?;
    }
    ensure!(refused == Err(PagingError::StoreFull), "page-out into a full store: {refused:?}");
    ensure!(after == full, "the refused page-out changed {full:?} to {after:?}");
    // Every resident page pinned: a fault that needs a frame is refused.
    pg.set_resident_limit(4);
    paging().pin(a, 4 * PAGE_SIZE).map_err(fails)?;
    let stuck = probe::read(ro);
    let reason = paging::take_last_error();
    paging().unpin(a, 4 * PAGE_SIZE).map_err(fails)?;
    pg.set_resident_limit(u64::MAX);
    ensure!(
        stuck.is_err() && reason == Some(PagingError::NoEvictableFrame),
        "fault with every frame pinned: {stuck:?}, {reason:?}"
    );
    ensure!(get(ro) == 0 && get(a + 3 * PAGE_SIZE) == 4, "data after unpinning");
    audit("refusals")
}
