//! Demand paging on every CPU at once: faults on one page, faults racing
//! page-outs, pins racing page-outs, unmaps racing page-ins, and every CPU
//! thrashing one region (a counter in each page plus a shadow of what each
//! CPU wrote, as uffd-stress does) while one CPU loops page-out/page-in,
//! with busy states and with the global-lock baseline. The audits run
//! after every round. Also measures fault throughput at 1, 2, 4, 8 CPUs.

use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use mm::paging::{Mode, PagingError, Timing};
use mm::vm::{KMemFlags, PAGE_SIZE};
use smp::{percpu, MAX_CPUS};

use super::on_all::{fail, run};
use super::paging::{audit, get, pager, paging, pattern, put};
use super::{ensure, fails, register, Test, TestResult};
use crate::vm;

static ADDR: AtomicU64 = AtomicU64::new(0);
static STOP: AtomicBool = AtomicBool::new(false);
/// Pages of the shared regions.
const PAGES: u64 = 128;

register!(Test::new("paging_smp::all_cpus_fault_one_page", one_page));
fn one_page() -> TestResult {
    let vm = vm::get();
    let a = vm.k_mem_map(PAGE_SIZE, KMemFlags::RW).map_err(fails)?;
    ADDR.store(a, Ordering::Relaxed);
    let r = (|| {
        for round in 0..40u64 {
            put(a + 8 * 100, pattern(a, round));
            paging().page_out(a, PAGE_SIZE).map_err(fails)?;
            let before = pager().stats().total();
            run(|cpu| {
                let a = ADDR.load(Ordering::Relaxed);
                let v = get(a + 8 * 100);
                if v != put_value(a) {
                    fail(format_args!("cpu {cpu} read {v:#x}"));
                }
            })?;
            let after = pager().stats().total();
            ensure!(
                after.faults == before.faults + 1 && after.page_ins == before.page_ins + 1,
                "round {round}: {} faults, {} page-ins for one page",
                after.faults - before.faults,
                after.page_ins - before.page_ins
            );
            audit("one page")?;
            ROUND.fetch_add(1, Ordering::Relaxed);
        }
        Ok(())
    })();
    ROUND.store(0, Ordering::Relaxed);
    vm.k_mem_unmap(a, PAGE_SIZE).map_err(fails)?;
    r
}

static ROUND: AtomicU64 = AtomicU64::new(0);

fn put_value(a: u64) -> u64 {
    pattern(a, ROUND.load(Ordering::Relaxed))
}

/// How often CPU 0 pinned and found its pages resident.
static PINS: AtomicU64 = AtomicU64::new(0);

register!(Test::new("paging_smp::pin_races_page_out", pin_vs_page_out));
fn pin_vs_page_out() -> TestResult {
    let vm = vm::get();
    let a = vm.k_mem_map(16 * PAGE_SIZE, KMemFlags::RW).map_err(fails)?;
    for p in 0..16 {
        put(a + p * PAGE_SIZE, p);
    }
    ADDR.store(a, Ordering::Relaxed);
    STOP.store(false, Ordering::Relaxed);
    PINS.store(0, Ordering::Relaxed);
    let r = run(|cpu| {
        let paging = paging();
        let a = ADDR.load(Ordering::Relaxed);
        if cpu != 0 {
            while !STOP.load(Ordering::Relaxed) {
                match paging.page_out(a, 16 * PAGE_SIZE) {
                    Ok(()) | Err(PagingError::Pinned { .. }) => {}
                    Err(e) => return fail(format_args!("cpu {cpu}: page-out: {e:?}")),
                }
            }
            return;
        }
        let me = percpu::current_index();
        for round in 0..200 {
            if let Err(e) = paging.pin(a, 16 * PAGE_SIZE) {
                return fail(format_args!("round {round}: pin: {e:?}"));
            }
            let before = pager().stats().cpu(me).faults;
            let ok = (0..16).all(|p| get(a + p * PAGE_SIZE) == p);
            let faults = pager().stats().cpu(me).faults - before;
            if let Err(e) = paging.unpin(a, 16 * PAGE_SIZE) {
                return fail(format_args!("round {round}: unpin: {e:?}"));
            }
            if !ok || faults != 0 {
                return fail(format_args!("round {round}: pinned pages read ok {ok}, faulted {faults} times"));
            }
            PINS.fetch_add(1, Ordering::Relaxed);
        }
        STOP.store(true, Ordering::Relaxed);
    });
    STOP.store(true, Ordering::Relaxed);
    let audited = audit("pin vs page-out");
    vm.k_mem_unmap(a, 16 * PAGE_SIZE).map_err(fails)?;
    r?;
    audited?;
    ensure!(PINS.load(Ordering::Relaxed) == 200, "only {} pin rounds", PINS.load(Ordering::Relaxed));
    Ok(())
}

register!(Test::new("paging_smp::unmap_races_page_in", unmap_vs_page_in));
fn unmap_vs_page_in() -> TestResult {
    let vm = vm::get();
    let before = (crate::frames::get().free_bytes(), pager().store().usage().0, vm.region_bytes());
    for round in 0..30 {
        let a = vm.k_mem_map(PAGES * PAGE_SIZE, KMemFlags::RW).map_err(fails)?;
        for p in 0..PAGES {
            put(a + p * PAGE_SIZE, pattern(a + p * PAGE_SIZE, 1));
        }
        paging().page_out(a, PAGES * PAGE_SIZE).map_err(fails)?;
        ADDR.store(a, Ordering::Relaxed);
        run(|cpu| {
            let vm = vm::get();
            let a = ADDR.load(Ordering::Relaxed);
            if cpu == 0 {
                if let Err(e) = vm.k_mem_unmap(a, PAGES * PAGE_SIZE) {
                    fail(format_args!("unmap: {e:?}"));
                }
                return;
            }
            // Ok while the region is there; NotPageable once it is gone.
            match paging().page_in(a, PAGES * PAGE_SIZE) {
                Ok(()) | Err(PagingError::NotPageable { .. }) => {}
                Err(e) => fail(format_args!("cpu {cpu}: page-in: {e:?}")),
            }
        })
        .map_err(|e| super::failure(format_args!("round {round}: {}", e.0)))?;
        audit("unmap vs page-in")?;
    }
    let after = (crate::frames::get().free_bytes(), pager().store().usage().0, vm.region_bytes());
    ensure!(after == before, "free bytes, used slots, region bytes {before:?} before, {after:?} after");
    Ok(())
}

/// What each CPU last wrote to its word of each page.
static SHADOW: [AtomicU64; MAX_CPUS * PAGES as usize] = [const { AtomicU64::new(0) }; MAX_CPUS * PAGES as usize];
/// Increments of the counters in the pages (word 511), by all CPUs.
static INCREMENTS: AtomicU64 = AtomicU64::new(0);

register!(Test::new("paging_smp::thrash_with_page_out_loop_busy_states", || thrash(Mode::BusyState)));
register!(Test::new("paging_smp::thrash_with_page_out_loop_global_lock", || thrash(Mode::GlobalLock)));
fn thrash(mode: Mode) -> TestResult {
    let vm = vm::get();
    let pg = pager();
    let before = pg.stats().total();
    let a = vm.k_mem_map(PAGES * PAGE_SIZE, KMemFlags::RW).map_err(fails)?;
    SHADOW.iter().for_each(|s| s.store(0, Ordering::Relaxed));
    INCREMENTS.store(0, Ordering::Relaxed);
    ADDR.store(a, Ordering::Relaxed);
    pg.set_mode(mode);
    pg.set_resident_limit(PAGES / 4);
    let r = (|| {
        for round in 0..3 {
            STOP.store(false, Ordering::Relaxed);
            run(thrash_body).map_err(|e| super::failure(format_args!("round {round}: {}", e.0)))?;
            audit("thrash")?;
        }
        let counted: u64 = (0..PAGES).map(|p| get(a + p * PAGE_SIZE + 511 * 8)).sum();
        ensure!(
            counted == INCREMENTS.load(Ordering::Relaxed),
            "page counters sum to {counted}, {} increments made",
            INCREMENTS.load(Ordering::Relaxed)
        );
        Ok(())
    })();
    pg.set_resident_limit(u64::MAX);
    pg.set_mode(Mode::BusyState);
    vm.k_mem_unmap(a, PAGES * PAGE_SIZE).map_err(fails)?;
    r?;
    let s = pg.stats().total();
    log::info!(
        "paging: thrash ({mode:?}) on {} CPUs: {} faults, {} evictions, {} page-ins, {} busy waits",
        percpu::online_count(),
        s.faults - before.faults,
        s.evictions() - before.evictions(),
        s.page_ins - before.page_ins,
        s.busy_waits - before.busy_waits
    );
    ensure!(s.evictions() > before.evictions(), "nothing was evicted");
    Ok(())
}

/// CPU 0 loops page-out/page-in over the region (with one CPU it also
/// thrashes); every CPU writes its own word of random pages, checks the
/// word against its shadow, and bumps the page's shared counter.
fn thrash_body(cpu: usize) {
    let paging = paging();
    let a = ADDR.load(Ordering::Relaxed);
    let alone = percpu::online_count() == 1;
    if cpu == 0 && !alone {
        for i in 0..8 {
            let r =
                if i % 2 == 0 { paging.page_out(a, PAGES * PAGE_SIZE) } else { paging.page_in(a, PAGES * PAGE_SIZE) };
            match r {
                Ok(()) | Err(PagingError::StoreFull) => {}
                Err(e) => {
                    fail(format_args!("cpu 0: page-out/in {i}: {e:?}"));
                    break;
                }
            }
        }
        STOP.store(true, Ordering::Relaxed);
        return;
    }
    let mut x = super::seed() ^ ((cpu as u64 + 1) * 0x9E37_79B9_7F4A_7C15);
    let mut ops = 0u64;
    // Bounded even if CPU 0 never says stop.
    while (!STOP.load(Ordering::Relaxed) || ops < 300) && ops < 200_000 {
        if alone && ops == 3000 {
            break;
        }
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let p = x % PAGES;
        let word = a + p * PAGE_SIZE + 8 * cpu as u64;
        let shadow = &SHADOW[cpu * PAGES as usize + p as usize];
        let seen = get(word);
        if seen != shadow.load(Ordering::Relaxed) {
            return fail(format_args!(
                "cpu {cpu} page {p}: read {seen:#x}, wrote {:#x}",
                shadow.load(Ordering::Relaxed)
            ));
        }
        let v = (ops << 8) | cpu as u64 | 1 << 63;
        put(word, v);
        shadow.store(v, Ordering::Relaxed);
        // SAFETY: word 511 of a page of the mapping, 8-aligned; atomics
        // and plain accesses to it never mix (only this counter uses it).
        let counter = unsafe { &*((a + p * PAGE_SIZE + 511 * 8) as *const AtomicU64) };
        counter.fetch_add(1, Ordering::Relaxed);
        INCREMENTS.fetch_add(1, Ordering::Relaxed);
        ops += 1;
    }
}

static CPUS_USED: AtomicU64 = AtomicU64::new(0);
/// Per CPU: its region, and when its touching started and ended.
static REGION: [AtomicU64; MAX_CPUS] = [const { AtomicU64::new(0) }; MAX_CPUS];
static STARTED: [AtomicU64; MAX_CPUS] = [const { AtomicU64::new(0) }; MAX_CPUS];
static ENDED: [AtomicU64; MAX_CPUS] = [const { AtomicU64::new(0) }; MAX_CPUS];
const FAULT_PAGES: u64 = 2048;

register!(Test::new("paging_smp::fault_throughput", fault_throughput));
/// Anonymous first-touch faults (will-it-scale's page_fault1 without the
/// map and unmap in the timed part): each of k CPUs writes one word per
/// page of its own on-demand region; faults/s for k = 1, 2, 4, 8 with
/// busy states and under the global lock. A measurement for the log, not
/// an assertion; the data and the fault count are checked.
fn fault_throughput() -> TestResult {
    let pg = pager();
    let online = percpu::online_count() as u64;
    for k in [1u64, 2, 4, 8].into_iter().filter(|&k| k <= online) {
        let mut rate = [0u64; 2];
        for (i, mode) in [Mode::BusyState, Mode::GlobalLock].into_iter().enumerate() {
            CPUS_USED.store(k, Ordering::Relaxed);
            run(|cpu| {
                if (cpu as u64) < CPUS_USED.load(Ordering::Relaxed) {
                    match vm::get().k_mem_map(FAULT_PAGES * PAGE_SIZE, KMemFlags::RW) {
                        Ok(a) => REGION[cpu].store(a, Ordering::Relaxed),
                        Err(e) => fail(format_args!("cpu {cpu}: map: {e:?}")),
                    }
                }
            })?;
            pg.set_mode(mode);
            let before = pg.stats().total().faults;
            let touched = run(|cpu| {
                if cpu as u64 >= CPUS_USED.load(Ordering::Relaxed) {
                    return;
                }
                let a = REGION[cpu].load(Ordering::Relaxed);
                STARTED[cpu].store(drivers::tsc::now_ns(), Ordering::Relaxed);
                for p in 0..FAULT_PAGES {
                    put(a + p * PAGE_SIZE + 8 * (p % 512), p);
                }
                ENDED[cpu].store(drivers::tsc::now_ns(), Ordering::Relaxed);
                if !(0..FAULT_PAGES).all(|p| get(a + p * PAGE_SIZE + 8 * (p % 512)) == p) {
                    fail(format_args!("cpu {cpu}: data mismatch"));
                }
            });
            pg.set_mode(Mode::BusyState);
            let faults = pg.stats().total().faults - before;
            run(|cpu| {
                if (cpu as u64) < CPUS_USED.load(Ordering::Relaxed) {
                    if let Err(e) = vm::get().k_mem_unmap(REGION[cpu].load(Ordering::Relaxed), FAULT_PAGES * PAGE_SIZE)
                    {
                        fail(format_args!("cpu {cpu}: unmap: {e:?}"));
                    }
                }
            })?;
            touched?;
            ensure!(faults == k * FAULT_PAGES, "{faults} faults for {} first touches", k * FAULT_PAGES);
            let start = (0..k as usize).map(|c| STARTED[c].load(Ordering::Relaxed)).min().unwrap_or(0);
            let end = (0..k as usize).map(|c| ENDED[c].load(Ordering::Relaxed)).max().unwrap_or(0);
            rate[i] = faults * 1_000_000_000 / end.saturating_sub(start).max(1);
        }
        log::info!(
            "paging: fault.anon at {k} CPUs: busy states {} faults/s, global lock {} faults/s ({:.2}x)",
            rate[0],
            rate[1],
            rate[0] as f64 / rate[1].max(1) as f64
        );
    }
    for (name, t) in [
        ("fault", Timing::Fault),
        ("victim selection", Timing::Select),
        ("store page-in", Timing::StoreIn),
        ("store page-out", Timing::StoreOut),
    ] {
        let h = pg.stats().histogram(t);
        log::info!(
            "paging: {name} since boot: {} samples, p50 {} ns, p99 {} ns, max {} ns",
            h.count(),
            h.percentile(50),
            h.percentile(99),
            h.max
        );
    }
    audit("fault throughput")
}
