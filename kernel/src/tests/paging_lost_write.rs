//! No write is lost when a page is evicted under a writer. CPU 1 counts
//! in one word of an on-demand page, in phases: reading only (the page
//! comes back from the store clean with a valid copy there, so evicting it
//! drops the frame without writing it) and writing (the page is dirty and
//! must be written). CPU 0 meanwhile evicts the page over and over, by its
//! frame (`evict_frame`) and by its address (`page_out`). A write that
//! lands while an eviction believes the page clean is lost: the count
//! comes up short. Runs on whichever store the boot pages to.

use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use mm::paging::PagingError;
use mm::vm::{KMemFlags, PAGE_SIZE};
use smp::percpu;

use super::on_all::{fail, run};
use super::paging::{audit, get, pager, paging, put};
use super::{ensure, fails, note, register, Test, TestResult};
use crate::vm;

const PHASES: u64 = 40;
/// Fewest increments in a writing phase, reads in a reading one.
const STEPS: u64 = 400;
/// Fewest evictions of the page in each phase.
const EVICTIONS_PER_PHASE: u64 = 3;
/// Longest the writer runs (the evictor waits a second longer).
const EVICT_NS: u64 = 50_000_000_000;

static PAGE_AT: AtomicU64 = AtomicU64::new(0);
static DONE: AtomicBool = AtomicBool::new(false);
/// Increments the writer made.
static INCREMENTS: AtomicU64 = AtomicU64::new(0);

fn two_cpus() -> Option<&'static str> {
    (percpu::online_count() < 2).then_some("needs 2 CPUs")
}

register!(Test::new("paging_lost_write::evictions_under_a_counting_writer", counting_writer).only_if(two_cpus));
fn counting_writer() -> TestResult {
    let vm = vm::get();
    let a = vm.k_mem_map(PAGE_SIZE, KMemFlags::RW).map_err(fails)?;
    PAGE_AT.store(a, Ordering::Relaxed);
    DONE.store(false, Ordering::Relaxed);
    INCREMENTS.store(0, Ordering::Relaxed);
    let before = pager().stats().total();
    let ran = run(|cpu| match cpu {
        0 => evictor(),
        1 => writer(),
        _ => {}
    });
    let after = pager().stats().total();
    let count = get(a);
    let audited = audit("evictions under a writer");
    vm.k_mem_unmap(a, PAGE_SIZE).map_err(fails)?;
    ran?;
    audited?;
    let total = INCREMENTS.load(Ordering::Relaxed);
    ensure!(count == total, "the word counts {count}, {total} increments were made");
    let (clean, dirty) =
        (after.evictions_clean - before.evictions_clean, after.evictions_dirty - before.evictions_dirty);
    // Without both kinds the race the test is about was never run.
    ensure!(clean > 0 && dirty > 0, "{clean} clean and {dirty} dirty evictions: the page was not evicted both ways");
    note(format_args!(
        "count exact over {clean} clean and {dirty} written evictions, {} page-ins",
        after.page_ins - before.page_ins
    ));
    Ok(())
}

/// CPU 1: even phases increment the word, odd ones only read it and check
/// it holds every increment so far. A phase lasts `STEPS` steps and until
/// the page was evicted `EVICTIONS_PER_PHASE` times in it.
fn writer() {
    let a = PAGE_AT.load(Ordering::Relaxed);
    let deadline = drivers::tsc::now_ns() + EVICT_NS;
    let mut count = 0;
    'phases: for phase in 0..PHASES {
        let start = evictions();
        for step in 0.. {
            // Every 64 steps: done with the phase, or with the test?
            if step % 64 == 0 {
                if step >= STEPS && evictions() >= start + EVICTIONS_PER_PHASE {
                    break;
                }
                if DONE.load(Ordering::Relaxed) {
                    break 'phases; // the evictor failed
                }
                if drivers::tsc::now_ns() > deadline {
                    fail(format_args!(
                        "phase {phase}: {} evictions in {} s",
                        evictions() - start,
                        EVICT_NS / 1_000_000_000
                    ));
                    break 'phases;
                }
            }
            if phase % 2 == 0 {
                // This CPU is the only writer: read, then write one more.
                put(a, get(a) + 1);
                count += 1;
            } else if get(a) != count {
                fail(format_args!("phase {phase} step {step}: read {}, {count} increments made", get(a)));
                break 'phases;
            }
        }
    }
    INCREMENTS.store(count, Ordering::Relaxed);
    DONE.store(true, Ordering::Relaxed);
}

fn evictions() -> u64 {
    pager().stats().total().evictions()
}

/// CPU 0: evicts the page by its frame and by its address, alternately,
/// until the writer is done.
fn evictor() {
    let vm = vm::get();
    let a = PAGE_AT.load(Ordering::Relaxed);
    let deadline = drivers::tsc::now_ns() + EVICT_NS;
    let mut by_frame = false;
    while !DONE.load(Ordering::Relaxed) {
        if drivers::tsc::now_ns() > deadline + 1_000_000_000 {
            DONE.store(true, Ordering::Relaxed);
            return fail(format_args!("the writer did not finish"));
        }
        by_frame = !by_frame;
        let r = if by_frame {
            match vm.map_get(vm.kernel(), a) {
                Ok(t) => paging().evict_frame(t.phys),
                Err(_) => continue, // not resident now
            }
        } else {
            paging().page_out(a, PAGE_SIZE)
        };
        match r {
            Ok(()) => {}
            // The page went (evicted, or being paged in) since the look.
            Err(PagingError::NotAPageFrame { .. }) => {}
            Err(e) => {
                DONE.store(true, Ordering::Relaxed);
                return fail(format_args!("evicting: {e:?}"));
            }
        }
    }
}
