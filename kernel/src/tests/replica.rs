//! Per-CPU page-table replicas on real CPUs: shootdowns of a user space go
//! only to CPUs whose replicas reach the range and that run the space now.
//! - the RadixVM "local" pattern (each CPU maps, touches and unmaps its own
//!   page in one shared space) asks no other CPU at all;
//! - the pipeline pattern (each CPU maps and writes pages its successor
//!   reads and unmaps) asks exactly one CPU per page: the writer;
//! - a CPU that touched a page and then napped (lazy: the kernel root
//!   loaded) reads no stale data once the page has moved;
//! - CPUs that activate the space in the middle of a storm of moves are
//!   reached by the moves after their first touch.
//!
//! Counts come from `smp::tlb::counters`: `targets` counts the other CPUs
//! each shootdown asked, one IPI each (the run's own wake-ups are `ipis`,
//! not `targets`).

use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use arrayvec::ArrayVec;
use mm::vm::{AddressSpace, Flags, PageSize, PAGE_SIZE};
use smp::tlb::{self, TlbSnapshot};
use smp::{percpu, MAX_CPUS};
use spin::{Mutex, RwLock};

use super::on_all::{fail, run};
use super::probe;
use super::{ensure, fails, failure, register, Test, TestResult};
use crate::{frames, memory, vm};

/// Each CPU's own 2 MiB window of the space (one page table each).
const BASE: u64 = 0x4000_0000;
const WINDOW: u64 = 0x20_0000;
const ROUNDS: u64 = 200;
const POISON: u64 = 0xEEEE_EEEE_EEEE_EEEE;
/// Longest wait for another CPU's step.
const WAIT_NS: u64 = 10_000_000_000;

static SPACE: RwLock<Option<AddressSpace>> = RwLock::new(None);

fn page(cpu: usize, i: u64) -> u64 {
    BASE + cpu as u64 * WINDOW + (i % (WINDOW / PAGE_SIZE)) * PAGE_SIZE
}

fn counters() -> [TlbSnapshot; MAX_CPUS] {
    core::array::from_fn(tlb::counters)
}

type Body = fn(usize, &AddressSpace) -> Result<(), super::Failure>;
static BODY: Mutex<Option<Body>> = Mutex::new(None);

/// Runs `body(cpu, space)` on every CPU with the test's space (made here
/// unless the test made it first), then destroys the space.
fn in_space(body: Body) -> TestResult {
    if SPACE.read().is_none() {
        *SPACE.write() = Some(vm::get().new_user_space().map_err(fails)?);
    }
    *BODY.lock() = Some(body);
    let ran = run(|cpu| {
        let body = BODY.lock().expect("body set");
        let space = SPACE.read();
        if let Err(e) = body(cpu, space.as_ref().expect("space set")) {
            fail(format_args!("cpu {cpu}: {}", e.0));
        }
    });
    // After a timeout a CPU may still run the space: keep it.
    ran?;
    let space = SPACE.write().take().expect("space set");
    vm::get().destroy_space(space).map_err(|(e, _)| failure(format_args!("destroy: {e:?}")))
}

/// Runs `f` with `space` active on this CPU.
fn active<R>(space: &AddressSpace, f: impl FnOnce() -> Result<R, super::Failure>) -> Result<R, super::Failure> {
    let _active = vm::get().activate(space).map_err(fails)?;
    f()
}

/// Maps a fresh frame holding `value` in every word at `virt`
/// (supervisor-only: the kernel reads it with no SMAP window).
fn map_word(space: &AddressSpace, virt: u64, value: u64) -> Result<u64, super::Failure> {
    let mut frame = frames::get().alloc_page().map_err(fails)?;
    memory::fill_frame_words(&mut frame, value);
    let phys = frame.phys().as_u64();
    vm::get().map_frame(space, virt, frame, Flags::WRITE).map_err(|(e, f)| {
        let _ = frames::get().free_page(f);
        fails(e)
    })?;
    Ok(phys)
}

/// Unmaps `virt`, poisons its frame and frees it.
fn unmap_poison(space: &AddressSpace, virt: u64) -> Result<(), super::Failure> {
    let mut frame = vm::get().umap_owned(space, virt, PageSize::Size4K).map_err(fails)?;
    memory::fill_frame_words(&mut frame, POISON);
    frames::get().free_page(frame).map_err(fails)
}

fn read(virt: u64) -> Result<u64, super::Failure> {
    probe::read(virt).map_err(|f| failure(format_args!("read of {virt:#x} faulted: {f:?}")))
}

register!(Test::new("replica::local_pattern_asks_no_other_cpu", local_pattern));
/// Every CPU maps, writes, reads and unmaps its own page, in its own 2 MiB
/// window of one space active on all of them: no shootdown asks another
/// CPU, and every unmap still flushes its own CPU.
fn local_pattern() -> TestResult {
    let before = counters();
    in_space(|cpu, space| {
        active(space, || {
            for i in 0..ROUNDS {
                let va = page(cpu, i);
                let stamp = (cpu as u64) << 40 | i;
                map_word(space, va, stamp)?;
                probe::write(va, !stamp).map_err(|f| failure(format_args!("write faulted: {f:?}")))?;
                let got = read(va)?;
                unmap_poison(space, va)?;
                ensure!(got == !stamp, "page {va:#x} reads {got:#x}, wrote {:#x}", !stamp);
            }
            Ok(())
        })
    })?;
    let after = counters();
    for cpu in percpu::online_set().iter() {
        let (b, a) = (&before[cpu], &after[cpu]);
        ensure!(a.targets == b.targets, "cpu {cpu} asked {} other CPUs", a.targets - b.targets);
        ensure!(a.shootdowns - b.shootdowns >= ROUNDS, "cpu {cpu}: {} local flushes", a.shootdowns - b.shootdowns);
    }
    Ok(())
}

/// Pages a CPU has mapped for its successor: (address, value).
static MAILBOX: [Mutex<ArrayVec<(u64, u64), 8>>; MAX_CPUS] = [const { Mutex::new(ArrayVec::new_const()) }; MAX_CPUS];

/// Pages each CPU sends down the pipeline.
const PIPE_PAGES: u64 = 64;
/// CPUs done with their pipeline pages.
static FINISHED: AtomicU64 = AtomicU64::new(0);

register!(Test::new("replica::pipeline_asks_only_the_writer", pipeline));
/// Every CPU maps and writes pages in its own window and hands them to the
/// next CPU, which reads and unmaps them: each unmap asks exactly one other
/// CPU, the writer (which, asked for every page it wrote and flushing each
/// page it unmaps itself, invalidates two pages per page).
fn pipeline() -> TestResult {
    FINISHED.store(0, Ordering::Relaxed);
    let before = counters();
    in_space(|cpu, space| {
        active(space, || {
            let n = percpu::online_count();
            let (next, mine) = (&MAILBOX[(cpu + 1) % n], &MAILBOX[cpu]);
            let (mut sent, mut taken) = (0, 0);
            let deadline = drivers::tsc::now_ns() + 6 * WAIT_NS;
            while sent < PIPE_PAGES || taken < PIPE_PAGES {
                if sent < PIPE_PAGES && !next.lock().is_full() {
                    let va = page(cpu, sent);
                    let value = va ^ 0x5A5A;
                    map_word(space, va, 0)?;
                    probe::write(va, value).map_err(|f| failure(format_args!("write faulted: {f:?}")))?;
                    next.lock().push((va, value));
                    sent += 1;
                }
                let batch = core::mem::take(&mut *mine.lock());
                for (va, value) in batch {
                    let got = read(va)?;
                    ensure!(got == value, "page {va:#x} reads {got:#x}, want {value:#x}");
                    unmap_poison(space, va)?;
                    taken += 1;
                }
                ensure!(drivers::tsc::now_ns() < deadline, "stalled: sent {sent}, taken {taken}");
            }
            // Stay in the space, spinning (a nap would leave it: lazy),
            // until every CPU has unmapped what this one wrote.
            FINISHED.fetch_add(1, Ordering::AcqRel);
            while FINISHED.load(Ordering::Acquire) < n as u64 {
                ensure!(drivers::tsc::now_ns() < deadline, "cpu {cpu}: the others did not finish");
                core::hint::spin_loop();
            }
            Ok(())
        })
    })?;
    let after = counters();
    let remote = u64::from(percpu::online_count() > 1);
    for cpu in percpu::online_set().iter() {
        let (b, a) = (&before[cpu], &after[cpu]);
        ensure!(
            a.targets - b.targets == remote * PIPE_PAGES,
            "cpu {cpu} asked {} CPUs for {PIPE_PAGES} unmaps",
            a.targets - b.targets
        );
        let invalidated = a.pages_invalidated - b.pages_invalidated;
        ensure!(invalidated == (1 + remote) * PIPE_PAGES, "cpu {cpu} invalidated {invalidated} pages");
    }
    Ok(())
}

/// The page the nap test moves, its round, and whether CPU 0 is done.
const SHARED: u64 = BASE;
static GENERATION: AtomicU64 = AtomicU64::new(0);
static READY: AtomicU64 = AtomicU64::new(0);
static DONE: AtomicBool = AtomicBool::new(false);
static STALE: AtomicU64 = AtomicU64::new(0);

register!(Test::new("replica::a_cpu_that_napped_reads_no_stale_page", napped_reader));
/// The other CPUs read a page and then nap between reads (lazy: the kernel
/// root loaded, out of the active set), while CPU 0 moves the page to a new
/// frame again and again and poisons the old one. Whenever a CPU reads, it
/// must see the current round's value or the next one, never the poison.
fn napped_reader() -> TestResult {
    GENERATION.store(0, Ordering::Relaxed);
    READY.store(0, Ordering::Relaxed);
    DONE.store(false, Ordering::Relaxed);
    STALE.store(0, Ordering::Relaxed);
    *SPACE.write() = Some(vm::get().new_user_space().map_err(fails)?);
    map_word(SPACE.read().as_ref().expect("space set"), SHARED, 1)?;
    in_space(|cpu, space| {
        active(space, || {
            let others = percpu::online_count() as u64 - 1;
            if cpu == 0 {
                let deadline = drivers::tsc::now_ns() + WAIT_NS;
                while READY.load(Ordering::Acquire) < others {
                    ensure!(drivers::tsc::now_ns() < deadline, "readers never read");
                    core::hint::spin_loop();
                }
                for g in 1..=ROUNDS {
                    unmap_poison(space, SHARED)?;
                    map_word(space, SHARED, g + 1)?;
                    GENERATION.store(g, Ordering::Release);
                }
                DONE.store(true, Ordering::Release);
                unmap_poison(space, SHARED)?;
                return Ok(());
            }
            let mut first = true;
            while !DONE.load(Ordering::Acquire) {
                let g = GENERATION.load(Ordering::Acquire);
                // Between an unmap and the map after it the page faults.
                if let Ok(v) = probe::read(SHARED) {
                    if v == POISON || v < g + 1 {
                        STALE.fetch_add(1, Ordering::Relaxed);
                    }
                }
                if first {
                    READY.fetch_add(1, Ordering::AcqRel);
                    first = false;
                }
                crate::nap::nap(50);
            }
            Ok(())
        })
    })?;
    let stale = STALE.load(Ordering::Relaxed);
    ensure!(stale == 0, "{stale} stale reads after naps");
    Ok(())
}

/// Pages CPU 0 moves in the storm, and how many moves it makes.
const STORM_PAGES: u64 = 8;
const STORM_ROUNDS: u64 = 20;

register!(Test::new("replica::cpus_joining_a_storm_are_reached", joining_a_storm));
/// CPU 0 runs the space and moves 8 pages to new frames round after
/// round (poisoning the old ones); CPU `c` activates the space only after
/// round `c * rounds / cpus`, then reads the pages until the end. A joiner
/// has no replica and no place in any table's set at first: it must still
/// never read the poison once its soft faults have linked the table.
fn joining_a_storm() -> TestResult {
    GENERATION.store(0, Ordering::Relaxed);
    DONE.store(false, Ordering::Relaxed);
    STALE.store(0, Ordering::Relaxed);
    READY.store(0, Ordering::Relaxed);
    let space = vm::get().new_user_space().map_err(fails)?;
    for i in 0..STORM_PAGES {
        map_word(&space, page(0, i), 1)?;
    }
    *SPACE.write() = Some(space);
    in_space(|cpu, space| {
        let n = percpu::online_count() as u64;
        if cpu == 0 {
            return active(space, || {
                for g in 1..=STORM_ROUNDS {
                    for i in 0..STORM_PAGES {
                        unmap_poison(space, page(0, i))?;
                        map_word(space, page(0, i), g + 1)?;
                    }
                    GENERATION.store(g, Ordering::Release);
                    if g == STORM_ROUNDS / 2 && n > 1 {
                        // Half-way, wait (bounded) for the joiners' reads.
                        let deadline = drivers::tsc::now_ns() + WAIT_NS;
                        while READY.load(Ordering::Acquire) < n / 2 {
                            ensure!(drivers::tsc::now_ns() < deadline, "joiners never read");
                            core::hint::spin_loop();
                        }
                    }
                }
                DONE.store(true, Ordering::Release);
                for i in 0..STORM_PAGES {
                    unmap_poison(space, page(0, i))?;
                }
                Ok(())
            });
        }
        let join_at = cpu as u64 * STORM_ROUNDS / (2 * n);
        while GENERATION.load(Ordering::Acquire) < join_at && !DONE.load(Ordering::Acquire) {
            core::hint::spin_loop();
        }
        active(space, || {
            let (mut reads, mut counted) = (0u64, false);
            while !DONE.load(Ordering::Acquire) {
                let g = GENERATION.load(Ordering::Acquire);
                for i in 0..STORM_PAGES {
                    if let Ok(v) = probe::read(page(0, i)) {
                        reads += 1;
                        if v == POISON || v < g + 1 {
                            STALE.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
                if reads > 0 && !counted {
                    READY.fetch_add(1, Ordering::AcqRel);
                    counted = true;
                }
            }
            Ok(())
        })
    })?;
    let stale = STALE.load(Ordering::Relaxed);
    ensure!(stale == 0, "{stale} stale reads by CPUs that joined mid-storm");
    Ok(())
}
