//! Unmaps that free page tables while the swap disk is busy. Such an
//! unmap holds the kernel space's table write lock across its shootdown,
//! so a CPU that waits for that lock with interrupts off never answers the
//! shootdown: the unmap times out (5 s) and quarantines its frames. Swap
//! I/O runs with interrupts off (paging calls it) and once translated its
//! buffers through the tables (`Hal::share` -> `map_get`), which made every
//! such unmap a gamble.
//!
//! CPUs 1..n page a small on-demand region out and in (writing it, so both
//! directions reach the disk) while CPU 0 maps, touches and unmaps 4 MiB
//! `LOCK` regions, each spanning two whole page tables.

use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use mm::paging::PagingError;
use mm::vm::{KMemFlags, PAGE_SIZE};
use smp::{percpu, MAX_CPUS};

use super::on_all::{fail, run};
use super::paging::{audit, get, pager, paging, put};
use super::{ensure, fails, note, register, Test, TestResult};
use crate::{paging, vm};

/// Pages the other CPUs keep paging out and in.
const CHURN_PAGES: u64 = 64;
const ROUNDS: u64 = 100;
/// Two whole page tables' worth: the unmap detaches tables.
const MAP_BYTES: u64 = 4 << 20;
/// Slowest unmap allowed (a healthy one takes milliseconds).
const SLOW_NS: u64 = 1_000_000_000;
/// Churners stop by themselves after this, should CPU 0 never say so
/// (less than `on_all`'s bound, so an overrun is reported as a failure).
const CHURN_NS: u64 = 50_000_000_000;

static REGION: AtomicU64 = AtomicU64::new(0);
static STOP: AtomicBool = AtomicBool::new(false);
static SLOWEST_NS: AtomicU64 = AtomicU64::new(0);
static UNMAPS: AtomicU64 = AtomicU64::new(0);
/// Per CPU: page-out/page-in cycles done (and the value its word holds).
static CYCLES: [AtomicU64; MAX_CPUS] = [const { AtomicU64::new(0) }; MAX_CPUS];

fn swap_disk_and_cpus() -> Option<&'static str> {
    if paging::store_name() != "virtio-blk" {
        Some("needs the virtio-blk store")
    } else if percpu::online_count() < 2 {
        Some("needs 2 CPUs")
    } else {
        None
    }
}

register!(
    Test::new("paging_stall::unmaps_while_the_swap_disk_is_busy", unmaps_during_swap_io).only_if(swap_disk_and_cpus)
);
fn unmaps_during_swap_io() -> TestResult {
    let vm = vm::get();
    let quarantined = vm.quarantined_frames();
    ensure!(quarantined == 0, "{quarantined} frames quarantined before the test");
    let a = vm.k_mem_map(CHURN_PAGES * PAGE_SIZE, KMemFlags::RW).map_err(fails)?;
    REGION.store(a, Ordering::Relaxed);
    STOP.store(false, Ordering::Relaxed);
    SLOWEST_NS.store(0, Ordering::Relaxed);
    UNMAPS.store(0, Ordering::Relaxed);
    CYCLES.iter().for_each(|c| c.store(0, Ordering::Relaxed));
    let before = pager().stats().total();
    let ran = run(|cpu| if cpu == 0 { unmapper() } else { churn(cpu) });
    let after = pager().stats().total();
    let words = check_words(a);
    let audited = audit("unmaps during swap i/o");
    vm.k_mem_unmap(a, CHURN_PAGES * PAGE_SIZE).map_err(fails)?;
    ran?;
    words?;
    audited?;
    let slowest = SLOWEST_NS.load(Ordering::Relaxed);
    let (reads, writes) = (after.page_ins - before.page_ins, after.page_outs - before.page_outs);
    ensure!(UNMAPS.load(Ordering::Relaxed) == ROUNDS, "{} of {ROUNDS} unmaps done", UNMAPS.load(Ordering::Relaxed));
    ensure!(vm.quarantined_frames() == 0, "{} frames quarantined", vm.quarantined_frames());
    ensure!(reads > 0 && writes > 0, "the disk was idle: {reads} page reads, {writes} page writes");
    ensure!(slowest < SLOW_NS, "slowest unmap took {} ms", slowest / 1_000_000);
    note(format_args!(
        "slowest unmap {} us over {ROUNDS}; disk {reads} reads, {writes} writes meanwhile",
        slowest / 1000
    ));
    Ok(())
}

/// CPU 0: map, touch, unmap, timing each unmap; stops at the first
/// failure (a stalled unmap takes the shootdown timeout).
fn unmapper() {
    let vm = vm::get();
    for round in 0..ROUNDS {
        let a = match vm.k_mem_map(MAP_BYTES, KMemFlags::RW | KMemFlags::LOCK) {
            Ok(a) => a,
            Err(e) => {
                fail(format_args!("round {round}: map: {e:?}"));
                break;
            }
        };
        for p in 0..MAP_BYTES / PAGE_SIZE {
            put(a + p * PAGE_SIZE, p);
        }
        let start = drivers::tsc::now_ns();
        let r = vm.k_mem_unmap(a, MAP_BYTES);
        let ns = drivers::tsc::now_ns() - start;
        SLOWEST_NS.fetch_max(ns, Ordering::Relaxed);
        if let Err(e) = r {
            fail(format_args!(
                "round {round}: unmap: {e:?} after {} ms, {} frames quarantined",
                ns / 1_000_000,
                vm.quarantined_frames()
            ));
            break;
        }
        if vm.quarantined_frames() != 0 {
            fail(format_args!("round {round}: {} frames quarantined", vm.quarantined_frames()));
            break;
        }
        UNMAPS.fetch_add(1, Ordering::Relaxed);
    }
    STOP.store(true, Ordering::Relaxed);
}

/// CPUs 1..n: page the region out (its pages dirty, so they are written)
/// and in again, then write this CPU's word of every page.
fn churn(cpu: usize) {
    let paging = paging();
    let a = REGION.load(Ordering::Relaxed);
    let deadline = drivers::tsc::now_ns() + CHURN_NS;
    while !STOP.load(Ordering::Relaxed) && drivers::tsc::now_ns() < deadline {
        // StoreFull cannot happen (64 MiB disk); any error is a failure.
        let r: Result<(), PagingError> =
            paging.page_out(a, CHURN_PAGES * PAGE_SIZE).and_then(|()| paging.page_in(a, CHURN_PAGES * PAGE_SIZE));
        if let Err(e) = r {
            return fail(format_args!(
                "cpu {cpu}: page-out/in after {} cycles: {e:?}",
                CYCLES[cpu].load(Ordering::Relaxed)
            ));
        }
        let n = CYCLES[cpu].fetch_add(1, Ordering::Relaxed) + 1;
        for p in 0..CHURN_PAGES {
            put(word(a, p, cpu), n);
        }
    }
}

fn word(a: u64, page: u64, cpu: usize) -> u64 {
    a + page * PAGE_SIZE + 8 * cpu as u64
}

/// Each churner's word in every page holds its last cycle count, and each
/// churner got going.
fn check_words(a: u64) -> TestResult {
    for (cpu, cycles) in CYCLES.iter().enumerate().take(percpu::online_count()).skip(1) {
        let n = cycles.load(Ordering::Relaxed);
        ensure!(n > 0, "cpu {cpu} did no page-out/in cycle");
        for p in 0..CHURN_PAGES {
            let got = get(word(a, p, cpu));
            ensure!(got == n, "cpu {cpu} page {p}: word {got}, expected {n}");
        }
    }
    Ok(())
}
