//! TLB shootdown: stale translations are gone on every target when the
//! call returns; long ranges take a full flush; CPUs shooting each other
//! all finish; bad targets change nothing. Also logs the latency by the
//! number of target CPUs (measured, never asserted).

use core::sync::atomic::{AtomicU64, Ordering};
use mm::frame::Frame;

use mm::vm::{Flags, PageSize, KERNEL_SEED_AREA};
use smp::tlb::{self, ShootdownError, FULL_FLUSH_PAGES};
use smp::{percpu, CpuSet, MAX_CPUS};

use super::{ensure, fails, failure, register, Failure, Test, TestResult};
use crate::{frames, memory, vm, workers};

const VA: u64 = KERNEL_SEED_AREA.start;
const OLD: u64 = 0x0101_0101_0101_0101;
const NEW: u64 = 0x0202_0202_0202_0202;

static SEEN: [AtomicU64; MAX_CPUS] = [const { AtomicU64::new(0) }; MAX_CPUS];

fn read_worker(cpu: usize) {
    // SAFETY: VA is mapped (by the test) for as long as the workers run.
    SEEN[cpu].store(unsafe { (VA as *const u64).read_volatile() }, Ordering::Relaxed);
}

fn read_everywhere() -> Result<(), Failure> {
    workers::run_on_all(read_worker, 30_000_000_000)
        .map_err(|e| failure(format_args!("cpus {:?} did not read", e.cpus)))
}

/// The test page, mapped to a frame holding `OLD`; returns both frames.
fn set_up() -> Result<(Frame, Frame), Failure> {
    let f = frames::get();
    let (mut a, mut b) = (
        f.alloc_page().map_err(|_| failure(format_args!("no frame")))?,
        f.alloc_page().map_err(|_| failure(format_args!("no frame")))?,
    );
    memory::fill_frame_words(&mut a, OLD);
    memory::fill_frame_words(&mut b, NEW);
    let vm = vm::get();
    // SAFETY: `a` is this test's until `tear_down` unmaps it and frees it.
    unsafe { vm.map_single(vm.kernel(), VA, a.phys(), Flags::WRITE, PageSize::Size4K) }
        .map_err(|e| failure(format_args!("map: {e:?}")))?;
    Ok((a, b))
}

fn tear_down(a: Frame, b: Frame) -> TestResult {
    // Unmapping shoots the page down before it returns.
    let vm = vm::get();
    vm.umap_single(vm.kernel(), VA, PageSize::Size4K).map_err(|e| failure(format_args!("unmap: {e:?}")))?;
    let f = frames::get();
    f.free_page(a).map_err(fails)?;
    f.free_page(b).map_err(fails)?;
    Ok(())
}

register!(Test::new("tlb::shootdown_removes_stale_translations", stale_translations_removed));
/// Every CPU caches VA -> A; the PTE is pointed at B without a flush; after
/// the shootdown every CPU must read B's contents.
fn stale_translations_removed() -> TestResult {
    let (a, b) = set_up()?;
    read_everywhere()?;
    let online = percpu::online_set();
    for cpu in online.iter() {
        ensure!(SEEN[cpu].load(Ordering::Relaxed) == OLD, "cpu {cpu} did not see the first frame");
    }
    // SAFETY: `b` is this test's until `tear_down`, after the shootdown
    // that drops the stale translations to `a`.
    unsafe { vm::get().retarget_unflushed(VA, b.phys()) }.map_err(fails)?;
    read_everywhere()?;
    let stale = online.iter().filter(|&c| SEEN[c].load(Ordering::Relaxed) == OLD).count();
    log::info!("tlb: {stale} of {} CPUs still read the old frame before the shootdown", online.len());
    // Without a stale reader the rest of the test would prove nothing.
    ensure!(stale > 0, "no CPU kept the old translation; the test cannot tell a shootdown from none");
    tlb::shootdown(online, VA, 1).map_err(|e| failure(format_args!("shootdown: {e:?}")))?;
    read_everywhere()?;
    for cpu in online.iter() {
        let v = SEEN[cpu].load(Ordering::Relaxed);
        ensure!(v == NEW, "cpu {cpu} read {v:#x} after the shootdown: stale translation");
    }
    tear_down(a, b)
}

register!(Test::new("tlb::long_ranges_take_a_full_flush", long_ranges_full_flush));
fn long_ranges_full_flush() -> TestResult {
    let online = percpu::online_set();
    let me = percpu::current_index();
    let before: [tlb::TlbSnapshot; MAX_CPUS] = core::array::from_fn(tlb::counters);
    let r = tlb::shootdown(online, VA, FULL_FLUSH_PAGES + 7);
    ensure!(r.is_ok(), "{r:?}");
    let mid: [tlb::TlbSnapshot; MAX_CPUS] = core::array::from_fn(tlb::counters);
    for cpu in online.iter() {
        ensure!(mid[cpu].full_flushes == before[cpu].full_flushes + 1, "cpu {cpu}: no full flush for a long range");
        ensure!(mid[cpu].pages_invalidated == before[cpu].pages_invalidated, "cpu {cpu} flushed pages one by one");
    }
    ensure!(tlb::shootdown(online, VA, 3).is_ok(), "short shootdown failed");
    let after: [tlb::TlbSnapshot; MAX_CPUS] = core::array::from_fn(tlb::counters);
    for cpu in online.iter() {
        ensure!(after[cpu].pages_invalidated == mid[cpu].pages_invalidated + 3, "cpu {cpu}: 3 pages not invalidated");
        ensure!(after[cpu].full_flushes == mid[cpu].full_flushes, "cpu {cpu}: full flush for 3 pages");
    }
    ensure!(after[me].shootdowns == before[me].shootdowns + 2, "shootdowns not counted");
    let others = online.without(me);
    let asked = after[me].targets - before[me].targets;
    ensure!(asked == 2 * others.len() as u64, "expected {} targets, counted {asked}", 2 * others.len());
    // One ICR write per target, or one broadcast when all others are asked.
    let icr = 2 * smp::counts::icr_writes(others, others);
    let ipis = after[me].ipis - before[me].ipis;
    ensure!(ipis == icr, "expected {icr} IPIs, counted {ipis}");
    Ok(())
}

const MUTUAL_ROUNDS: u64 = 100;
static MUTUAL_ERRORS: AtomicU64 = AtomicU64::new(0);

register!(Test::new("tlb::concurrent_mutual_shootdowns", mutual_shootdowns));
fn mutual_shootdowns() -> TestResult {
    MUTUAL_ERRORS.store(0, Ordering::Relaxed);
    let before: u64 = (0..MAX_CPUS).map(|c| tlb::counters(c).shootdowns).sum();
    fn worker(me: usize) {
        let others = percpu::online_set().without(me);
        for round in 0..MUTUAL_ROUNDS {
            if tlb::shootdown(others, VA, 1 + round % 40).is_err() {
                MUTUAL_ERRORS.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
    workers::run_on_all(worker, 60_000_000_000)
        .map_err(|e| failure(format_args!("cpus {:?} did not finish", e.cpus)))?;
    ensure!(MUTUAL_ERRORS.load(Ordering::Relaxed) == 0, "{} shootdowns failed", MUTUAL_ERRORS.load(Ordering::Relaxed));
    let after: u64 = (0..MAX_CPUS).map(|c| tlb::counters(c).shootdowns).sum();
    let n = percpu::online_count() as u64;
    ensure!(after - before == n * MUTUAL_ROUNDS, "{} shootdowns counted, {} made", after - before, n * MUTUAL_ROUNDS);
    Ok(())
}

register!(Test::new("tlb::offline_target_rejected_and_uncounted", offline_target));
fn offline_target() -> TestResult {
    let online = percpu::online_set();
    if online.len() == MAX_CPUS {
        return Ok(()); // no offline index to name
    }
    let me = percpu::current_index();
    let before = tlb::counters(me);
    let r = tlb::shootdown(online.union(CpuSet::single(MAX_CPUS - 1)), VA, 1);
    ensure!(matches!(r, Err(ShootdownError::Call(smp::ipi::CallError::NotOnline { .. }))), "got {r:?}");
    ensure!(tlb::counters(me) == before, "a refused shootdown was counted");
    Ok(())
}

register!(Test::new("tlb::bad_ranges_rejected_and_uncounted", bad_ranges));
/// Ranges that are empty, wrap, or leave canonical addresses are refused
/// before any CPU is disturbed.
fn bad_ranges() -> TestResult {
    let me = percpu::current_index();
    let before: [tlb::TlbSnapshot; MAX_CPUS] = core::array::from_fn(tlb::counters);
    let online = percpu::online_set();
    for (start, pages) in
        [(VA, 0), (0x0000_7FFF_FFFF_F000, 2), (0xFFFF_FFFF_FFFF_F000, 2), (0x0000_8000_0000_0000, 1), (VA, u64::MAX)]
    {
        let r = tlb::shootdown(online, start, pages);
        ensure!(r == Err(ShootdownError::BadRange { start, pages }), "shootdown({start:#x}, {pages}) = {r:?}");
    }
    let after: [tlb::TlbSnapshot; MAX_CPUS] = core::array::from_fn(tlb::counters);
    ensure!(after == before, "refused shootdowns changed counters (cpu {me})");
    Ok(())
}

register!(Test::new("tlb::latency_by_target_count", latency_by_targets));
/// Median time of a one-page shootdown to 1, 2, 4, 8, ... CPUs: the
/// others first, the caller (which flushes while the IPIs are in flight)
/// last, so the largest set is every online CPU.
fn latency_by_targets() -> TestResult {
    let me = percpu::current_index();
    let mut order: arrayvec::ArrayVec<usize, MAX_CPUS> = percpu::online_set().without(me).iter().collect();
    order.push(me);
    let mut k = 1;
    while k <= order.len() {
        let targets = order[..k].iter().fold(CpuSet::EMPTY, |mut s, &c| {
            s.insert(c);
            s
        });
        let mut samples = [0u64; 31];
        for s in samples.iter_mut() {
            let t0 = drivers::tsc::now_ns();
            tlb::shootdown(targets, VA, 1).map_err(fails)?;
            *s = drivers::tsc::now_ns() - t0;
        }
        samples.sort_unstable();
        let remote = targets.without(me).len();
        log::info!("tlb: shootdown to {k} CPUs ({remote} remote): p50 {} ns, max {} ns", samples[15], samples[30]);
        k = if k == order.len() { k + 1 } else { (k * 2).min(order.len()) };
    }
    Ok(())
}
