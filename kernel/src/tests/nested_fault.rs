//! A page fault taken while this CPU handles another one. CPU 1 pages a
//! few pages out and reads them back: each read faults and the fault naps
//! (interrupts on) while the swap disk reads the page. CPU 0 keeps
//! cross-calling CPU 1; a call that lands inside a page fault (it naps, or
//! answers calls in a wait) writes a fresh on-demand page, so the call's
//! handler faults in turn. Both faults must complete: the nested one pages
//! its page in, the outer one returns the right data. With the page-fault
//! handler on an IST stack the nested fault would restart at that stack's
//! top, over the outer fault's frame.

use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use mm::vm::{KMemFlags, PAGE_SIZE};
use smp::{percpu, CpuSet};

use super::on_all::{fail, run};
use super::paging::{audit, get, my_counts, paging, pattern, put};
use super::{ensure, fails, note, register, Test, TestResult};
use crate::{interrupts, paging, vm};

/// Pages CPU 1 pages out and faults back in.
const OUTER_PAGES: u64 = 8;
/// Fresh pages, one per nested fault.
const INNER_PAGES: u64 = 128;
const WANT_NESTED: u64 = 32;
const RUN_NS: u64 = 30_000_000_000;

static OUTER: AtomicU64 = AtomicU64::new(0);
static INNER: AtomicU64 = AtomicU64::new(0);
/// Inner pages taken (by calls that landed inside a fault).
static TAKEN: AtomicU64 = AtomicU64::new(0);
/// Nested faults that paged their page in.
static NESTED: AtomicU64 = AtomicU64::new(0);
static STOP: AtomicBool = AtomicBool::new(false);

fn swap_disk_and_cpus() -> Option<&'static str> {
    if paging::store_name() != "virtio-blk" {
        Some("needs the virtio-blk store (a page-in that naps)")
    } else if percpu::online_count() < 2 {
        Some("needs 2 CPUs")
    } else {
        None
    }
}

register!(Test::new("nested_fault::fault_inside_a_napping_page_fault", nested_faults).only_if(swap_disk_and_cpus));
fn nested_faults() -> TestResult {
    let vm = vm::get();
    let outer = vm.k_mem_map(OUTER_PAGES * PAGE_SIZE, KMemFlags::RW).map_err(fails)?;
    let inner = match vm.k_mem_map(INNER_PAGES * PAGE_SIZE, KMemFlags::RW) {
        Ok(a) => a,
        Err(e) => {
            vm.k_mem_unmap(outer, OUTER_PAGES * PAGE_SIZE).map_err(fails)?;
            return Err(fails(e));
        }
    };
    for p in 0..OUTER_PAGES {
        put(outer + p * PAGE_SIZE, pattern(outer + p * PAGE_SIZE, 1));
    }
    OUTER.store(outer, Ordering::Relaxed);
    INNER.store(inner, Ordering::Relaxed);
    TAKEN.store(0, Ordering::Relaxed);
    NESTED.store(0, Ordering::Relaxed);
    STOP.store(false, Ordering::Relaxed);
    let ran = run(|cpu| match cpu {
        0 => prod(),
        1 => fault_loop(),
        _ => {}
    });
    let taken = TAKEN.load(Ordering::Relaxed).min(INNER_PAGES);
    let inner_ok = (0..taken).all(|p| get(inner + p * PAGE_SIZE) == pattern(inner + p * PAGE_SIZE, 2));
    let audited = audit("nested faults");
    vm.k_mem_unmap(outer, OUTER_PAGES * PAGE_SIZE).map_err(fails)?;
    vm.k_mem_unmap(inner, INNER_PAGES * PAGE_SIZE).map_err(fails)?;
    ran?;
    audited?;
    ensure!(inner_ok, "a page written by a nested fault lost its value");
    let nested = NESTED.load(Ordering::Relaxed);
    ensure!(nested >= WANT_NESTED, "only {nested} of {WANT_NESTED} cross-calls faulted inside a page fault");
    note(format_args!("{nested} faults nested in a page fault"));
    Ok(())
}

/// CPU 0: cross-calls CPU 1 until enough calls faulted inside a fault.
fn prod() {
    let deadline = drivers::tsc::now_ns() + RUN_NS;
    while NESTED.load(Ordering::Relaxed) < WANT_NESTED && TAKEN.load(Ordering::Relaxed) < INNER_PAGES {
        if drivers::tsc::now_ns() > deadline {
            fail(format_args!("{} nested faults in {} s", NESTED.load(Ordering::Relaxed), RUN_NS / 1_000_000_000));
            break;
        }
        if let Err(e) = smp::ipi::cross_call(CpuSet::single(1), &poke) {
            fail(format_args!("cross-call to cpu 1: {e:?}"));
            break;
        }
    }
    STOP.store(true, Ordering::Relaxed);
}

/// On CPU 1, in the cross-call handler: if it interrupted a page fault,
/// fault on the next fresh page.
fn poke() {
    if interrupts::page_fault_depth() == 0 {
        return;
    }
    let k = TAKEN.fetch_add(1, Ordering::Relaxed);
    if k >= INNER_PAGES {
        return;
    }
    let at = INNER.load(Ordering::Relaxed) + k * PAGE_SIZE;
    let before = my_counts().faults;
    put(at, pattern(at, 2));
    if my_counts().faults != before + 1 {
        return fail(format_args!("the write to fresh page {at:#x} inside a page fault did not fault"));
    }
    NESTED.fetch_add(1, Ordering::Relaxed);
}

/// CPU 1: page the outer pages out, read each back (a napping fault).
fn fault_loop() {
    let paging = paging();
    let outer = OUTER.load(Ordering::Relaxed);
    let deadline = drivers::tsc::now_ns() + RUN_NS;
    while !STOP.load(Ordering::Relaxed) && drivers::tsc::now_ns() < deadline {
        if let Err(e) = paging.page_out(outer, OUTER_PAGES * PAGE_SIZE) {
            return fail(format_args!("page-out: {e:?}"));
        }
        for p in 0..OUTER_PAGES {
            let at = outer + p * PAGE_SIZE;
            let got = get(at);
            if got != pattern(at, 1) {
                return fail(format_args!("outer page {p} read {got:#x} after its fault"));
            }
        }
    }
}
