//! The frame allocator under concurrent, seeded, self-checking load, for
//! both policies: per-CPU magazines and the global-lock baseline.

use core::sync::atomic::{AtomicU64, Ordering};

use arrayvec::ArrayVec;
use mm::frame::{FrameError, PhysAddr};
use mm::phys::{Census, Policy};
use mm::PAGE_SIZE;
use smp::{percpu, MAX_CPUS};
use spin::Mutex;

use super::rng::Rng;
use super::{ensure, failure, register, Test, TestResult};
use crate::{frames, memory, workers};

const TIMEOUT_NS: u64 = 120_000_000_000;

/// The first and last words of a frame, through the direct map.
fn frame_words(phys: u64) -> (&'static AtomicU64, &'static AtomicU64) {
    let base = memory::virt_of(phys) as *const AtomicU64;
    // Other CPUs touch the frame only if the allocator hands it out twice,
    // which is exactly what the stamps detect.
    // SAFETY: the caller holds `phys`, mapped by the direct map; AtomicU64
    // is valid for any bit pattern.
    unsafe { (&*base, &*base.add(PAGE_SIZE as usize / 8 - 1)) }
}

fn stamp(phys: u64, value: u64) {
    let (a, b) = frame_words(phys);
    a.store(value, Ordering::Relaxed);
    b.store(!value, Ordering::Relaxed);
}

fn stamp_ok(phys: u64, value: u64) -> bool {
    let (a, b) = frame_words(phys);
    a.load(Ordering::Relaxed) == value && b.load(Ordering::Relaxed) == !value
}

/// A frame from the allocator, kept by address: these tests hold frames in
/// mailboxes and in lists linked through the frames themselves.
fn alloc_held() -> Result<u64, FrameError> {
    frames::get().alloc_page().map(|f| f.into_phys().as_u64())
}

/// Gives back a frame `alloc_held` handed out: the allocator's raw path.
fn free_held(phys: u64) -> Result<(), FrameError> {
    // SAFETY: callers pass a frame they took with `alloc_held` and hold
    // alone (if the allocator handed one out twice, the stamps tell).
    unsafe { frames::get().free_raw(PhysAddr::new(phys)) }
}

fn audit() -> Result<Census, super::Failure> {
    frames::get().audit().map_err(|v| failure(format_args!("audit violation: {v:?}")))
}

register!(Test::new("frames::bad_frees_change_nothing", bad_frees_change_nothing));
/// Every kind of bad free is refused with its own error, and neither the
/// free count nor where any frame is changes.
fn bad_frees_change_nothing() -> TestResult {
    let f = frames::get();
    let frame = f.alloc_page().map_err(|_| failure(format_args!("no frame")))?;
    let p = frame.phys().as_u64();
    f.free_page(frame).map_err(|_| failure(format_args!("first free failed")))?;
    let (census, free) = (audit()?, f.free_bytes());
    let db = f.db();
    // A frame of the frame database itself: inside the range, reserved.
    let own_table = db.entry(0) as *const _ as u64 - memory::phys_offset();
    let beyond = db.phys_of(db.len()).as_u64() + 16 * PAGE_SIZE;
    let cases: [(u64, FrameError); 4] = [
        (p, FrameError::AlreadyFree { phys: PhysAddr::new(p) }),
        (own_table & !(PAGE_SIZE - 1), FrameError::Reserved { phys: PhysAddr::new(own_table & !(PAGE_SIZE - 1)) }),
        (beyond, FrameError::NotRam { phys: PhysAddr::new(beyond) }),
        (p + 8, FrameError::NotAligned { phys: PhysAddr::new(p + 8) }),
    ];
    for (addr, want) in cases {
        // SAFETY: no address here names a frame anyone holds: `p` is free
        // again, and the others are refused before anything changes.
        let got = unsafe { f.free_raw(PhysAddr::new(addr)) };
        ensure!(got == Err(want), "free_page({addr:#x}) = {got:?}, want {want:?}");
        ensure!(f.free_bytes() == free, "{want:?} changed the free count");
        ensure!(audit()? == census, "{want:?} moved frames");
    }
    ensure!(f.alloc_contiguous(0) == Err(FrameError::ZeroCount), "alloc_contiguous(0) accepted");
    let huge = f.usable_frames() + 1;
    ensure!(matches!(f.alloc_contiguous(huge), Err(FrameError::TooLarge { .. })), "{huge} frames accepted");
    // SAFETY: a run of zero frames frees nothing.
    let zero = unsafe { f.free_contiguous(PhysAddr::new(p), 0) };
    ensure!(zero == Err(FrameError::ZeroCount), "free_contiguous(_, 0) accepted");
    ensure!(audit()? == census && f.free_bytes() == free, "error paths changed state");
    Ok(())
}

register!(Test::new("frames::contiguous_runs_are_aligned", contiguous_runs_are_aligned));
fn contiguous_runs_are_aligned() -> TestResult {
    let f = frames::get();
    let before = f.free_bytes();
    for order in 0..=9u32 {
        let count = 1u64 << order;
        let run = f.alloc_contiguous(count).map_err(|_| failure(format_args!("contiguous allocation failed")))?;
        let p = run.as_u64();
        ensure!(p % (count * PAGE_SIZE) == 0, "{count} frames at {p:#x} not naturally aligned");
        for i in 0..count {
            stamp(p + i * PAGE_SIZE, i ^ 0x5A5A);
        }
        for i in 0..count {
            ensure!(stamp_ok(p + i * PAGE_SIZE, i ^ 0x5A5A), "frame {i} of run {p:#x} overwritten");
        }
        // SAFETY: the run was allocated above and is used no more.
        unsafe { f.free_contiguous(run, count) }.map_err(|_| failure(format_args!("contiguous free failed")))?;
    }
    let odd = f.alloc_contiguous(5).map_err(|_| failure(format_args!("5 frames")))?;
    // SAFETY: the run was allocated just above and never used.
    unsafe { f.free_contiguous(odd, 5) }.map_err(|_| failure(format_args!("free 5")))?;
    ensure!(f.free_bytes() == before, "free count drifted: {before} -> {}", f.free_bytes());
    audit()?;
    Ok(())
}

// --- stress ---------------------------------------------------------------

const ROUNDS: u64 = 3;
const OPS: u64 = 12_000;
const HELD_MAX: usize = 128;

static ROUND: AtomicU64 = AtomicU64::new(0);
static ERRORS: AtomicU64 = AtomicU64::new(0);
static FIRST_ERROR: Mutex<Option<(usize, &'static str, u64)>> = Mutex::new(None);
/// Frames passed to a CPU by its neighbour, with their stamps.
static MAILBOX: [Mutex<ArrayVec<(u64, u64), 256>>; MAX_CPUS] = [const { Mutex::new(ArrayVec::new_const()) }; MAX_CPUS];

fn error(cpu: usize, what: &'static str, phys: u64) {
    ERRORS.fetch_add(1, Ordering::Relaxed);
    FIRST_ERROR.lock().get_or_insert((cpu, what, phys));
}

fn take_mail(cpu: usize) -> ArrayVec<(u64, u64), 256> {
    core::mem::take(&mut *MAILBOX[cpu].lock())
}

fn free_checked(cpu: usize, phys: u64, stamp_value: u64) {
    if !stamp_ok(phys, stamp_value) {
        error(cpu, "stamp overwritten: frame held twice", phys);
    }
    if free_held(phys).is_err() {
        error(cpu, "free of a held frame failed", phys);
    }
}

fn stress_worker(cpu: usize) {
    let seed = super::seed() ^ ROUND.load(Ordering::Relaxed) << 32;
    let mut rng = Rng::new(seed ^ (cpu as u64).wrapping_mul(0xD1B5_4A32_D192_ED03));
    let neighbour = (cpu + 1) % percpu::online_count();
    let mut held: ArrayVec<(u64, u64), HELD_MAX> = ArrayVec::new();
    for seq in 0..OPS {
        match rng.below(8) {
            0..=3 if !held.is_full() => match alloc_held() {
                Ok(p) => {
                    let s = (cpu as u64) << 48 | seq;
                    stamp(p, s);
                    held.push((p, s));
                }
                Err(_) => error(cpu, "allocation failed with memory to spare", 0),
            },
            4 | 5 if !held.is_empty() => {
                let (p, s) = held.swap_remove(rng.below(held.len() as u64) as usize);
                free_checked(cpu, p, s);
            }
            6 if !held.is_empty() => {
                let (p, s) = held.swap_remove(rng.below(held.len() as u64) as usize);
                if let Err((p, s)) = MAILBOX[neighbour].lock().try_push((p, s)).map_err(|e| e.element()) {
                    free_checked(cpu, p, s);
                }
            }
            _ => {
                for (p, s) in take_mail(cpu) {
                    free_checked(cpu, p, s);
                }
            }
        }
    }
    for (p, s) in held {
        free_checked(cpu, p, s);
    }
}

register!(Test::new("frames::stress/magazine", || stress(Policy::Magazine)));
register!(Test::new("frames::stress/global_lock", || stress(Policy::GlobalLock)));
fn stress(policy: Policy) -> TestResult {
    let f = frames::get();
    f.set_policy(policy);
    let start = audit()?;
    let free_start = f.free_bytes();
    let counters_before: [mm::counters::CounterSnapshot; MAX_CPUS] = core::array::from_fn(|c| f.counters(c));
    ERRORS.store(0, Ordering::Relaxed);
    *FIRST_ERROR.lock() = None;
    log::info!(
        "frames::stress/{policy:?}: seed {:#x}, {} CPUs, {ROUNDS} rounds of {OPS} ops",
        super::seed(),
        percpu::online_count()
    );
    for round in 0..ROUNDS {
        ROUND.store(round, Ordering::Relaxed);
        if let Err(e) = workers::run_on_all(stress_worker, TIMEOUT_NS) {
            ensure!(false, "round {round}: cpus {:?} did not finish", e.cpus);
        }
        // Frames still in mailboxes are freed here (remote frees again).
        for cpu in percpu::online_set().iter() {
            for (p, s) in take_mail(cpu) {
                free_checked(0, p, s);
            }
        }
        let errors = ERRORS.load(Ordering::Relaxed);
        ensure!(errors == 0, "round {round}: {errors} errors, first {:?}", *FIRST_ERROR.lock());
        let census = audit()?;
        ensure!(
            census.allocated == start.allocated,
            "round {round}: {} frames leaked",
            census.allocated - start.allocated
        );
        ensure!(f.free_bytes() == free_start, "round {round}: free bytes {} -> {}", free_start, f.free_bytes());
    }
    report_counters(policy, &counters_before);
    f.set_policy(Policy::Magazine);
    Ok(())
}

/// Logs each CPU's counters for this run and the share of allocations that
/// had to take the buddy lock.
fn report_counters(policy: Policy, before: &[mm::counters::CounterSnapshot; MAX_CPUS]) {
    let f = frames::get();
    let mut total = mm::counters::CounterSnapshot::default();
    for cpu in percpu::online_set().iter() {
        let d = f.counters(cpu) - before[cpu];
        log::info!(
            "frames[{policy:?}] cpu{cpu}: allocs {} (fast {}), frees {} (fast {}, remote {}), depot {}, buddy locks {}",
            d.allocs,
            d.fast_allocs,
            d.frees,
            d.fast_frees,
            d.remote_frees,
            d.depot_exchanges,
            d.buddy_locks
        );
        total += d;
    }
    let ops = (total.allocs + total.frees).max(1);
    log::info!(
        "frames[{policy:?}] all: {} allocs + {} frees, buddy lock taken {} times ({}.{:02}% of operations), {} depot exchanges, {} remote frees",
        total.allocs,
        total.frees,
        total.buddy_locks,
        total.buddy_locks * 100 / ops,
        total.buddy_locks * 10_000 / ops % 100,
        total.depot_exchanges,
        total.remote_frees
    );
}

// --- exhaustion -------------------------------------------------------------

/// Head of each CPU's list of held frames, linked through the frames.
static HELD: [AtomicU64; MAX_CPUS] = [const { AtomicU64::new(0) }; MAX_CPUS];
static HELD_COUNT: [AtomicU64; MAX_CPUS] = [const { AtomicU64::new(0) }; MAX_CPUS];

fn exhaust_worker(cpu: usize) {
    let (mut head, mut n) = (0u64, 0u64);
    loop {
        match alloc_held() {
            Ok(p) => {
                let (next, _) = frame_words(p);
                next.store(head, Ordering::Relaxed);
                head = p;
                n += 1;
            }
            Err(FrameError::OutOfMemory) => break,
            Err(_) => {
                error(cpu, "allocation failed with something other than OutOfMemory", 0);
                break;
            }
        }
    }
    HELD[cpu].store(head, Ordering::Relaxed);
    HELD_COUNT[cpu].store(n, Ordering::Relaxed);
}

/// Frees the frames the previous CPU held (remote frees).
fn release_worker(cpu: usize) {
    let online = percpu::online_count();
    let victim = (cpu + online - 1) % online;
    let mut p = HELD[victim].swap(0, Ordering::Relaxed);
    while p != 0 {
        let next = frame_words(p).0.load(Ordering::Relaxed);
        if free_held(p).is_err() {
            error(cpu, "free of an exhausted frame failed", p);
        }
        p = next;
    }
}

register!(Test::new("frames::exhaust_and_recover/magazine", || exhaust_and_recover(Policy::Magazine)));
register!(Test::new("frames::exhaust_and_recover/global_lock", || exhaust_and_recover(Policy::GlobalLock)));
/// All CPUs allocate until the allocator says out of memory: they must
/// have received every free frame, and after they free them (each CPU its
/// neighbour's) the free count must be exactly what it was.
fn exhaust_and_recover(policy: Policy) -> TestResult {
    let f = frames::get();
    f.set_policy(policy);
    ERRORS.store(0, Ordering::Relaxed);
    *FIRST_ERROR.lock() = None;
    let start = audit()?;
    let free_start = f.free_bytes();
    if let Err(e) = workers::run_on_all(exhaust_worker, TIMEOUT_NS) {
        ensure!(false, "cpus {:?} did not finish allocating", e.cpus);
    }
    let got: u64 = percpu::online_set().iter().map(|c| HELD_COUNT[c].load(Ordering::Relaxed)).sum();
    let peak = audit()?;
    let peak_free = f.free_bytes();
    if let Err(e) = workers::run_on_all(release_worker, TIMEOUT_NS) {
        ensure!(false, "cpus {:?} did not finish freeing", e.cpus);
    }
    ensure!(ERRORS.load(Ordering::Relaxed) == 0, "errors: first {:?}", *FIRST_ERROR.lock());
    ensure!(got * PAGE_SIZE == free_start, "CPUs got {got} frames before OOM, {} were free", free_start / PAGE_SIZE);
    ensure!(peak_free == 0 && peak.buddy + peak.magazines + peak.depot == 0, "frames left at OOM: {peak:?}");
    let end = audit()?;
    ensure!(end.allocated == start.allocated, "{} frames not recovered", end.allocated.abs_diff(start.allocated));
    ensure!(f.free_bytes() == free_start, "free bytes {free_start} before, {} after", f.free_bytes());
    log::info!(
        "frames::exhaust/{policy:?}: {got} frames handed out across {} CPUs, all recovered",
        percpu::online_count()
    );
    f.set_policy(Policy::Magazine);
    Ok(())
}
