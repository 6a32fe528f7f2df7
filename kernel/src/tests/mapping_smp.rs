//! The mapping API on every CPU at once: unmap racing readers (no stale
//! translation survives the unmap, no freed frame is seen through one),
//! permission downgrades, full flushes that keep other mappings, map/unmap
//! storms in one space and in separate spaces, and shootdowns that reach
//! only the CPUs where a space is active.

use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use mm::vm::{AddressSpace, Flags, KMemFlags, VmError, PAGE_SIZE, USER_END, USER_START};
use smp::tlb::{self, FULL_FLUSH_PAGES};
use smp::{percpu, CpuSet, MAX_CPUS};
use spin::Mutex;
use x86_64::structures::idt::PageFaultErrorCode as Code;

use super::on_all::{fail, run};
use super::probe;
use super::{ensure, fails, failure, register, rng::Rng, Test, TestResult};
use crate::{frames, vm};

const POISON: u64 = 0xDEAD_BEEF_DEAD_BEEF;
const ROUNDS: u64 = 20;

static ADDR: AtomicU64 = AtomicU64::new(0);
static ROUND: AtomicU64 = AtomicU64::new(0);
static UNMAPPED: AtomicBool = AtomicBool::new(false);

/// Bytes free or taken by the heap (which keeps the pages it grew by: the
/// first storm on a CPU grows that CPU's pools).
fn accounted() -> u64 {
    frames::get().free_bytes() + crate::heap::HEAP.stats().pages * PAGE_SIZE
}

fn spin_until(cond: impl Fn() -> bool) -> bool {
    let deadline = drivers::tsc::now_ns() + 5_000_000_000;
    while !cond() {
        if drivers::tsc::now_ns() > deadline {
            return false;
        }
        core::hint::spin_loop();
    }
    true
}

register!(Test::new("vm_smp::unmap_races_readers", unmap_races_readers));
/// CPU 0 maps a page, bumps a counter in it while the others read it,
/// unmaps it, takes the freed frame back and fills it with poison. A
/// reader that started after the unmap returned must fault; no reader may
/// ever see the counter go back or see the poison.
fn unmap_races_readers() -> TestResult {
    ROUND.store(0, Ordering::Relaxed);
    TOTAL_READS.store(0, Ordering::Relaxed);
    LATE_FAULTS.store(0, Ordering::Relaxed);
    run(|cpu| {
        for round in 1..=ROUNDS {
            if cpu == 0 {
                unmapper(round);
            } else {
                reader(cpu, round);
            }
        }
    })?;
    let (reads, faults) = (TOTAL_READS.load(Ordering::Relaxed), LATE_FAULTS.load(Ordering::Relaxed));
    log::info!("vm_smp: {ROUNDS} unmaps raced {reads} reads; readers faulted {faults} times after the unmap returned");
    let readers = percpu::online_count() as u64 - 1;
    ensure!(
        readers == 0 || (reads > 0 && faults == readers * ROUNDS),
        "{reads} reads, {faults} late faults: the race was not exercised"
    );
    Ok(())
}

/// Successful reads, and faults seen once the unmap had returned.
static TOTAL_READS: AtomicU64 = AtomicU64::new(0);
static LATE_FAULTS: AtomicU64 = AtomicU64::new(0);
/// Frames taken back after an unmap: its data frame and the page tables it
/// freed come back among the first few.
const TAKE_BACK: usize = 8;

static READS: AtomicU64 = AtomicU64::new(0);

fn unmapper(round: u64) {
    let vm = vm::get();
    let Ok(a) = vm.k_mem_map(PAGE_SIZE, KMemFlags::RW | KMemFlags::LOCK) else {
        return fail(format_args!("round {round}: map failed"));
    };
    let frame = vm.map_get(vm.kernel(), a).map(|t| t.phys.as_u64()).unwrap_or(0);
    READS.store(0, Ordering::Relaxed);
    UNMAPPED.store(false, Ordering::Relaxed);
    ADDR.store(a, Ordering::Relaxed);
    ROUND.store(round, Ordering::Release);
    let others = percpu::online_count() as u64 - 1;
    let mut seq = 1;
    // Let the readers cache the translation and read a while (bounded:
    // vCPUs time-share the host's cores).
    let deadline = drivers::tsc::now_ns() + 2_000_000_000;
    while READS.load(Ordering::Relaxed) < 50 * others && drivers::tsc::now_ns() < deadline {
        let _ = probe::write(a, seq);
        seq += 1;
    }
    if let Err(e) = vm.k_mem_unmap(a, PAGE_SIZE) {
        return fail(format_args!("round {round}: unmap: {e:?}"));
    }
    // The freed frames go back to this CPU's magazine: take them again and
    // poison them, so a stale translation would show the poison.
    let mut taken = arrayvec::ArrayVec::<mm::frame::Frame, TAKE_BACK>::new();
    while let (false, Ok(mut f)) = (taken.is_full(), frames::get().alloc_page()) {
        crate::memory::fill_frame_words(&mut f, POISON);
        taken.push(f);
    }
    UNMAPPED.store(true, Ordering::Release);
    if !taken.iter().any(|f| f.phys().as_u64() == frame) {
        fail(format_args!(
            "round {round}: the unmapped frame {frame:#x} was not among the next {TAKE_BACK} allocations"
        ));
    }
    if !spin_until(|| ROUND_DONE.load(Ordering::Acquire) == others) {
        fail(format_args!("round {round}: readers did not finish"));
    }
    for f in taken {
        let _ = frames::get().free_page(f);
    }
    ROUND_DONE.store(0, Ordering::Release);
}

static ROUND_DONE: AtomicU64 = AtomicU64::new(0);

fn reader(cpu: usize, round: u64) {
    if !spin_until(|| ROUND.load(Ordering::Acquire) >= round) {
        return fail(format_args!("cpu {cpu}: round {round} never started"));
    }
    let a = ADDR.load(Ordering::Relaxed);
    let (mut last, mut mine) = (0, 0);
    let deadline = drivers::tsc::now_ns() + 10_000_000_000;
    loop {
        let after_unmap = UNMAPPED.load(Ordering::Acquire);
        match probe::read(a) {
            Ok(v) if v == POISON => {
                break fail(format_args!("cpu {cpu} round {round}: read poison through a stale translation"))
            }
            Ok(_) if after_unmap => break fail(format_args!("cpu {cpu} round {round}: read after unmap returned")),
            Ok(v) if v < last => break fail(format_args!("cpu {cpu} round {round}: counter went back {last} -> {v}")),
            Ok(v) => {
                last = v;
                READS.fetch_add(1, Ordering::Relaxed);
                mine += 1;
            }
            Err(f) if f.cr2 != a => break fail(format_args!("cpu {cpu}: fault at {:#x}, not {a:#x}", f.cr2)),
            Err(_) if after_unmap => {
                LATE_FAULTS.fetch_add(1, Ordering::Relaxed);
                break;
            }
            Err(_) => {} // unmapped, flag not yet raised: keep reading
        }
        if drivers::tsc::now_ns() > deadline {
            break fail(format_args!("cpu {cpu} round {round}: the page never went away"));
        }
    }
    TOTAL_READS.fetch_add(mine, Ordering::Relaxed);
    ROUND_DONE.fetch_add(1, Ordering::AcqRel);
}

register!(Test::new("vm_smp::downgrade_seen_by_every_cpu", downgrade_everywhere));
fn downgrade_everywhere() -> TestResult {
    let vm = vm::get();
    let a = vm.k_mem_map(PAGE_SIZE, KMemFlags::RW | KMemFlags::LOCK).map_err(fails)?;
    ADDR.store(a, Ordering::Relaxed);
    let writable = run(|cpu| {
        let a = ADDR.load(Ordering::Relaxed);
        if let Err(f) = probe::write(a + 8 * cpu as u64, cpu as u64 + 1) {
            fail(format_args!("cpu {cpu}: write before the downgrade faulted: {f:?}"));
        }
    });
    let protect = vm.protect(vm.kernel(), a, 1, Flags::READ);
    let readonly = run(|cpu| {
        let a = ADDR.load(Ordering::Relaxed);
        let slot = a + 8 * cpu as u64;
        match probe::write(slot, 0) {
            Err(f) if f.cr2 == slot && probe::code(&f).contains(Code::CAUSED_BY_WRITE | Code::PROTECTION_VIOLATION) => {
            }
            other => fail(format_args!("cpu {cpu}: write after the downgrade: {other:?}")),
        }
        if probe::read(slot) != Ok(cpu as u64 + 1) {
            fail(format_args!("cpu {cpu}: read after the downgrade: {:?}", probe::read(slot)));
        }
    });
    vm.k_mem_unmap(a, PAGE_SIZE).map_err(fails)?;
    writable?;
    protect.map_err(|e| failure(format_args!("protect: {e:?}")))?;
    readonly
}

static OTHER: AtomicU64 = AtomicU64::new(0);

register!(Test::new("vm_smp::full_flush_keeps_other_mappings", full_flush_keeps_others));
/// A downgrade of more than `FULL_FLUSH_PAGES` pages flushes whole TLBs;
/// every CPU must still read another region correctly afterwards.
fn full_flush_keeps_others() -> TestResult {
    let vm = vm::get();
    let pages = FULL_FLUSH_PAGES + 3;
    let big = vm.k_mem_map(pages * PAGE_SIZE, KMemFlags::RW | KMemFlags::LOCK).map_err(fails)?;
    let other = vm.k_mem_map(PAGE_SIZE, KMemFlags::RW).map_err(fails)?;
    for i in 0..512 {
        let _ = probe::write(other + 8 * i, 0x1000 + i);
    }
    OTHER.store(other, Ordering::Relaxed);
    let read_other = |cpu: usize| {
        let o = OTHER.load(Ordering::Relaxed);
        for i in 0..512 {
            if probe::read(o + 8 * i) != Ok(0x1000 + i) {
                return fail(format_args!("cpu {cpu}: word {i} of the other region wrong"));
            }
        }
    };
    let warm = run(read_other);
    let before: [tlb::TlbSnapshot; MAX_CPUS] = core::array::from_fn(tlb::counters);
    let protect = vm.protect(vm.kernel(), big, pages, Flags::READ);
    let after: [tlb::TlbSnapshot; MAX_CPUS] = core::array::from_fn(tlb::counters);
    let reread = run(read_other);
    vm.k_mem_unmap(big, pages * PAGE_SIZE).map_err(fails)?;
    vm.k_mem_unmap(other, PAGE_SIZE).map_err(fails)?;
    warm?;
    protect.map_err(|e| failure(format_args!("protect: {e:?}")))?;
    for cpu in percpu::online_set().iter() {
        ensure!(after[cpu].full_flushes == before[cpu].full_flushes + 1, "cpu {cpu} did not flush fully");
    }
    reread
}

const STORM_ROUNDS: u64 = 150;
static UNMAPS: AtomicU64 = AtomicU64::new(0);

register!(Test::new("vm_smp::map_unmap_storm_one_space", storm_one_space));
/// Every CPU maps, fills, checks and unmaps regions of random size in the
/// kernel space; afterwards every frame and range is back.
fn storm_one_space() -> TestResult {
    let vm = vm::get();
    // Tables earlier tests emptied stay until a sweep: sweep them first.
    vm.sweep(vm.kernel()).map_err(fails)?;
    let before = (accounted(), vm.region_bytes());
    let targets_before: u64 = (0..MAX_CPUS).map(|c| tlb::counters(c).targets).sum();
    UNMAPS.store(0, Ordering::Relaxed);
    let r = run(|cpu| {
        let vm = vm::get();
        let mut rng = Rng::new(super::seed() ^ cpu as u64);
        for round in 0..STORM_ROUNDS {
            let pages = 1 + rng.below(8);
            let a = match vm.k_mem_map(pages * PAGE_SIZE, KMemFlags::RW) {
                Ok(a) => a,
                Err(e) => return fail(format_args!("cpu {cpu} round {round}: map: {e:?}")),
            };
            let tag = (cpu as u64) << 32 | round;
            for p in 0..pages {
                let _ = probe::write(a + p * PAGE_SIZE + 8 * (round % 512), tag);
            }
            for p in 0..pages {
                let v = probe::read(a + p * PAGE_SIZE + 8 * (round % 512));
                if v != Ok(tag) {
                    return fail(format_args!("cpu {cpu} round {round}: page {p} reads {v:?}, wrote {tag:#x}"));
                }
            }
            if let Err(e) = vm.k_mem_unmap(a, pages * PAGE_SIZE) {
                return fail(format_args!("cpu {cpu} round {round}: unmap: {e:?}"));
            }
            UNMAPS.fetch_add(1, Ordering::Relaxed);
        }
    });
    r?;
    let targets: u64 = (0..MAX_CPUS).map(|c| tlb::counters(c).targets).sum::<u64>() - targets_before;
    let unmaps = UNMAPS.load(Ordering::Relaxed);
    log::info!(
        "vm: {unmaps} kernel unmaps from {} CPUs asked {targets} CPUs: {:.2} per unmap",
        percpu::online_count(),
        targets as f64 / unmaps as f64
    );
    // The emptied tables stay until a sweep, which frees them all.
    vm.sweep(vm.kernel()).map_err(fails)?;
    let after = (accounted(), vm.region_bytes());
    ensure!(after == before, "free bytes/regions {before:?} before, {after:?} after");
    frames::get().audit().map_err(|v| failure(format_args!("frame audit: {v:?}")))?;
    vm.audit_tables(&[]).map_err(|v| failure(format_args!("page-table audit: {v:?}")))?;
    Ok(())
}

register!(Test::new("vm_smp::vmalloc_storm_shared_tables", storm_shared_tables));
/// Every CPU vmallocs and vmfrees small runs in the kernel's seed area,
/// first fit from one start, so CPUs share page tables: installs, prunes
/// and in-transit entries of neighbours interleave.
fn storm_shared_tables() -> TestResult {
    let vm = vm::get();
    vm.sweep(vm.kernel()).map_err(fails)?;
    let before = accounted();
    run(|cpu| {
        let vm = vm::get();
        let area = mm::vm::KERNEL_SEED_AREA;
        let mut rng = Rng::new(super::seed() ^ (cpu as u64) << 8);
        for round in 0..STORM_ROUNDS {
            let pages = 1 + rng.below(4);
            let a = match vm.vmalloc(vm.kernel(), area.start, area.end, pages, Flags::WRITE) {
                Ok(a) => a,
                Err(e) => return fail(format_args!("cpu {cpu} round {round}: vmalloc: {e:?}")),
            };
            let tag = (cpu as u64) << 32 | round;
            for p in 0..pages {
                if probe::read(a + p * PAGE_SIZE) != Ok(0) || probe::write(a + p * PAGE_SIZE, tag).is_err() {
                    return fail(format_args!(
                        "cpu {cpu} round {round}: fresh page {p} at {a:#x} not zero or not writable"
                    ));
                }
            }
            for p in 0..pages {
                if probe::read(a + p * PAGE_SIZE) != Ok(tag) {
                    return fail(format_args!("cpu {cpu} round {round}: page {p} at {a:#x} lost its data"));
                }
            }
            if let Err(e) = vm.vmfree(vm.kernel(), a, pages) {
                return fail(format_args!("cpu {cpu} round {round}: vmfree: {e:?}"));
            }
        }
    })?;
    // The emptied tables stay until a sweep, which frees them all.
    vm.sweep(vm.kernel()).map_err(fails)?;
    let now = accounted();
    ensure!(now == before, "free or heap bytes {before} before, {now} after");
    Ok(())
}

register!(Test::new("vm_smp::map_unmap_storm_separate_spaces", storm_separate_spaces));
/// Each CPU runs in its own user space and vmallocs/vmfrees there: its
/// shootdowns target only itself, so no IPI is sent at all.
fn storm_separate_spaces() -> TestResult {
    let before = accounted();
    let counters: [tlb::TlbSnapshot; MAX_CPUS] = core::array::from_fn(tlb::counters);
    let r = run(|cpu| {
        let vm = vm::get();
        let space = match vm.new_user_space() {
            Ok(s) => s,
            Err(e) => return fail(format_args!("cpu {cpu}: new space: {e:?}")),
        };
        let active = match vm.activate(&space) {
            Ok(a) => a,
            Err(e) => return fail(format_args!("cpu {cpu}: activate: {e:?}")),
        };
        let mut rng = Rng::new(super::seed() ^ !(cpu as u64));
        for round in 0..STORM_ROUNDS {
            let pages = 1 + rng.below(40);
            // Supervisor pages, which the CPU reads (no SMAP window): its
            // replica links their table, so their unmap shoots it down.
            let r = vm.vmalloc(&space, USER_START, USER_END, pages, Flags::WRITE).and_then(|a| {
                let last = a + (pages - 1) * PAGE_SIZE;
                let t = vm.map_get(&space, last)?;
                // SAFETY: `last` is mapped, writable and zeroed in the
                // space active here; nothing else uses it.
                let word = unsafe { (last as *const u64).read_volatile() };
                if !t.flags.contains(Flags::WRITE) || word != 0 {
                    return Err(VmError::NotMapped { virt: a });
                }
                vm.vmfree(&space, a, pages)
            });
            if let Err(e) = r {
                fail(format_args!("cpu {cpu} round {round}: {e:?}"));
                break;
            }
        }
        drop(active);
        if let Err((e, _)) = vm.destroy_space(space) {
            fail(format_args!("cpu {cpu}: destroy: {e:?}"));
        }
    });
    r?;
    let after: [tlb::TlbSnapshot; MAX_CPUS] = core::array::from_fn(tlb::counters);
    for cpu in percpu::online_set().iter() {
        // `ipis` also counts the wake-ups `run` sends; `targets` only the
        // CPUs shootdowns asked.
        ensure!(
            after[cpu].targets == counters[cpu].targets,
            "cpu {cpu} asked {} CPUs for private spaces",
            after[cpu].targets - counters[cpu].targets
        );
        ensure!(
            after[cpu].shootdowns >= counters[cpu].shootdowns + STORM_ROUNDS,
            "cpu {cpu}: unmaps not shot down locally"
        );
    }
    let now = accounted();
    ensure!(now == before, "free or heap bytes {before} before, {now} after the spaces were destroyed");
    Ok(())
}

/// The space `targeted_shootdowns` runs on CPU 0 and one other CPU, read
/// by both while it is active there.
static TARGETED: spin::RwLock<Option<AddressSpace>> = spin::RwLock::new(None);
/// The other CPU runs the space; CPU 0 has measured (the other may leave).
static OTHER_ACTIVE: AtomicBool = AtomicBool::new(false);
static MEASURED: AtomicBool = AtomicBool::new(false);
/// What CPU 0 saw with the space active on both CPUs.
static MEASUREMENT: Mutex<Option<Targeted>> = Mutex::new(None);
/// How long CPU 0 waits for the other CPU to run the space.
const ACTIVATE_WAIT_NS: u64 = 10_000_000_000;

struct Targeted {
    active: CpuSet,
    before: [tlb::TlbSnapshot; MAX_CPUS],
    after: [tlb::TlbSnapshot; MAX_CPUS],
    result: Result<(), VmError>,
}

register!(Test::new("vm_smp::shootdowns_reach_only_active_cpus", targeted_shootdowns));
/// A user space active on CPU 0 and one other CPU, which has read a page in
/// the table CPU 0 maps and unmaps in: its unmaps send one IPI
/// each, to that CPU only; CPUs not running it invalidate nothing. Both
/// CPUs hold their activation in one `run` (the guard is left on the CPU
/// that took it): the other CPU waits on the space, answering its
/// shootdowns, while CPU 0 unmaps.
fn targeted_shootdowns() -> TestResult {
    let vm = vm::get();
    let online = percpu::online_set();
    let Some(other) = online.without(0).iter().next() else {
        log::info!("vm_smp: one CPU: no remote CPU to target");
        return Ok(());
    };
    let space = vm.new_user_space().map_err(fails)?;
    let bait = vm.vmalloc(&space, USER_START, USER_END, 1, Flags::WRITE).map_err(fails)?;
    ensure!(bait == USER_START, "bait page at {bait:#x}");
    *TARGETED.write() = Some(space);
    OTHER.store(other as u64, Ordering::Relaxed);
    OTHER_ACTIVE.store(false, Ordering::Relaxed);
    MEASURED.store(false, Ordering::Relaxed);
    let ran = run(|cpu| {
        let other = OTHER.load(Ordering::Relaxed) as usize;
        if cpu != 0 && cpu != other {
            return;
        }
        let vm = vm::get();
        let space = TARGETED.read();
        let space = space.as_ref().expect("space set");
        let _active = match vm.activate(space) {
            Ok(a) => a,
            Err(e) => {
                MEASURED.store(true, Ordering::Release);
                return fail(format_args!("cpu {cpu}: activate: {e:?}"));
            }
        };
        if cpu == other {
            // Read the bait page: the soft fault links its table into this
            // CPU's replica, so unmaps in that table now target it.
            // SAFETY: CPU 0 mapped the bait page (writable, zeroed) before
            // the run and unmaps it only after it.
            let bait = unsafe { (USER_START as *const u64).read_volatile() };
            if bait != 0 {
                MEASURED.store(true, Ordering::Release);
                return fail(format_args!("cpu {cpu}: bait page reads {bait:#x}"));
            }
            OTHER_ACTIVE.store(true, Ordering::Release);
            while !MEASURED.load(Ordering::Acquire) {
                core::hint::spin_loop();
            }
            return;
        }
        let start = drivers::tsc::now_ns();
        while !OTHER_ACTIVE.load(Ordering::Acquire) {
            if drivers::tsc::now_ns() - start > ACTIVATE_WAIT_NS {
                MEASURED.store(true, Ordering::Release);
                return fail(format_args!("cpu {other} did not activate the space"));
            }
            core::hint::spin_loop();
        }
        *MEASUREMENT.lock() = Some(measure_targeted(space));
        MEASURED.store(true, Ordering::Release);
    });
    // After a timeout the other CPU may still run the space: keep it.
    ran?;
    let measured = MEASUREMENT.lock().take();
    let space = TARGETED.write().take().expect("space set");
    vm.vmfree(&space, USER_START, 1).map_err(fails)?;
    vm.destroy_space(space).map_err(|(e, _)| failure(format_args!("destroy: {e:?}")))?;
    let Targeted { active, before, after, result } = measured.expect("CPU 0 measured");
    result.map_err(fails)?;
    ensure!(
        active == CpuSet::single(0).union(CpuSet::single(other)),
        "active set {active:?}, expected CPUs 0 and {other}"
    );
    ensure!(after[0].ipis - before[0].ipis == 10, "10 unmaps sent {} IPIs", after[0].ipis - before[0].ipis);
    ensure!(
        after[0].targets - before[0].targets == 10,
        "10 unmaps asked {} CPUs",
        after[0].targets - before[0].targets
    );
    ensure!(
        after[other].pages_invalidated - before[other].pages_invalidated == 30,
        "cpu {other} invalidated {}",
        after[other].pages_invalidated - before[other].pages_invalidated
    );
    for cpu in online.without(0).without(other).iter() {
        ensure!(
            after[cpu] == before[cpu],
            "cpu {cpu} (space not active) was disturbed: {:?} -> {:?}",
            before[cpu],
            after[cpu]
        );
    }
    Ok(())
}

/// CPU 0's part of `targeted_shootdowns`: ten unmaps in `space`, active
/// here and on the other CPU, between two readings of every CPU's counters.
fn measure_targeted(space: &AddressSpace) -> Targeted {
    let vm = vm::get();
    let active = space.active_cpus();
    let before: [tlb::TlbSnapshot; MAX_CPUS] = core::array::from_fn(tlb::counters);
    let mut result = Ok(());
    for _ in 0..10 {
        result = result.and(
            vm.vmalloc(space, USER_START, USER_END, 3, Flags::USER | Flags::WRITE).and_then(|a| vm.vmfree(space, a, 3)),
        );
    }
    let after: [tlb::TlbSnapshot; MAX_CPUS] = core::array::from_fn(tlb::counters);
    Targeted { active, before, after, result }
}
