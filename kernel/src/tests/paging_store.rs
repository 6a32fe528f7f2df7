//! Store failures, injected in front of whichever store paging uses (RAM
//! or the virtio-blk disk): a failed page-out leaves the page resident,
//! mapped and dirty; a failed page-in, through the call or through a page
//! fault, leaves it paged out; the data survives both.

use core::sync::atomic::{AtomicU64, Ordering};

use mm::paging::faulty_store::Transfer;
use mm::paging::{PagingError, StoreError};
use mm::vm::{KMemFlags, PAGE_SIZE};

use super::paging::{audit, get, my_counts, paging, pattern, put, state};
use super::{ensure, fails, register, Test, TestResult};
use crate::{paging, vm};

const PAGES: u64 = 4;
/// The region the fault test leaves for the test after it.
static REGION: AtomicU64 = AtomicU64::new(0);

fn is_io(r: &Result<(), PagingError>) -> bool {
    matches!(r, Err(PagingError::Store(StoreError::Io { .. })))
}

fn fill(a: u64, gen: u64) {
    for p in 0..PAGES {
        put(a + p * PAGE_SIZE + 64, pattern(a + p * PAGE_SIZE, gen));
    }
}

fn intact(a: u64, gen: u64) -> TestResult {
    for p in 0..PAGES {
        let got = get(a + p * PAGE_SIZE + 64);
        ensure!(got == pattern(a + p * PAGE_SIZE, gen), "page {p} reads {got:#x}");
    }
    Ok(())
}

register!(Test::new("paging_store::failed_page_out_keeps_the_page_resident", failed_page_out));
fn failed_page_out() -> TestResult {
    let (vm, faulty) = (vm::get(), paging::faulty_store());
    let a = vm.k_mem_map(PAGES * PAGE_SIZE, KMemFlags::RW).map_err(fails)?;
    fill(a, 1);
    let before = (state(), my_counts().faults);
    faulty.arm(Transfer::Out, 1);
    let r = paging().page_out(a + PAGE_SIZE, PAGE_SIZE);
    faulty.disarm();
    ensure!(is_io(&r), "page-out with a failing store: {r:?}");
    ensure!(vm.is_mapped(a + PAGE_SIZE), "the page is no longer mapped");
    ensure!(state() == before.0, "a failed page-out changed the state");
    intact(a, 1)?;
    ensure!(my_counts().faults == before.1, "reading the page back faulted");
    paging().page_out(a + PAGE_SIZE, PAGE_SIZE).map_err(fails)?;
    intact(a, 1)?;
    audit("after a failed page-out")?;
    vm.k_mem_unmap(a, PAGES * PAGE_SIZE).map_err(fails)
}

register!(Test::new("paging_store::failed_page_in_call_keeps_the_page_out", failed_page_in_call));
fn failed_page_in_call() -> TestResult {
    let (vm, faulty) = (vm::get(), paging::faulty_store());
    let a = vm.k_mem_map(PAGES * PAGE_SIZE, KMemFlags::RW).map_err(fails)?;
    fill(a, 2);
    paging().page_out(a, PAGES * PAGE_SIZE).map_err(fails)?;
    let before = state();
    faulty.arm(Transfer::In, 1);
    let r = paging().page_in(a, PAGE_SIZE);
    faulty.disarm();
    ensure!(is_io(&r), "page-in with a failing store: {r:?}");
    ensure!(!vm.is_mapped(a), "the page came in");
    ensure!(state() == before, "a failed page-in changed the state");
    intact(a, 2)?;
    audit("after a failed page-in")?;
    vm.k_mem_unmap(a, PAGES * PAGE_SIZE).map_err(fails)
}

register!(Test::expecting_fault("paging_store::failed_page_in_fails_the_fault", 14, failed_page_in_fault));
/// Runs under `fault_catch`: takes no lock where it faults.
fn failed_page_in_fault() -> TestResult {
    let vm = vm::get();
    let a = vm.k_mem_map(PAGES * PAGE_SIZE, KMemFlags::RW).map_err(fails)?;
    REGION.store(a, Ordering::Relaxed);
    fill(a, 3);
    paging().page_out(a, PAGES * PAGE_SIZE).map_err(fails)?;
    let _ = paging::take_last_error();
    paging::faulty_store().arm(Transfer::In, 1);
    // The fault cannot page the page in: the handler reports it, and the
    // test runner catches the exception.
    let _ = get(a + 64);
    Ok(())
}

register!(Test::new("paging_store::data_survives_the_failed_fault", after_failed_fault));
fn after_failed_fault() -> TestResult {
    let vm = vm::get();
    paging::faulty_store().disarm();
    let a = REGION.load(Ordering::Relaxed);
    ensure!(a != 0, "the fault test left no region");
    let e = paging::take_last_error();
    ensure!(matches!(e, Some(PagingError::Store(StoreError::Io { .. }))), "the fault's error: {e:?}");
    ensure!(!vm.is_mapped(a), "the page came in although the store failed");
    intact(a, 3)?;
    audit("after a failed fault")?;
    vm.k_mem_unmap(a, PAGES * PAGE_SIZE).map_err(fails)
}
