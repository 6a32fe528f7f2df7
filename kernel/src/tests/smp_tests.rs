//! CPU bring-up, per-CPU data and cross-calls.

use core::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};

use smp::ipi::{cross_call, CallError};
use smp::percpu::{self, CpuState};
use smp::{CpuSet, MAX_CPUS};

use super::{ensure, register, Test, TestResult};
use crate::workers;

register!(Test::new("smp::all_cpus_online_with_distinct_apic_ids", all_cpus_online));
fn all_cpus_online() -> TestResult {
    let facts = crate::FACTS.get().expect("boot facts");
    let online = percpu::online_set();
    let expected = facts.cpus_total.min(MAX_CPUS);
    ensure!(online.len() == expected, "{} CPUs online, MADT lists {} (max {MAX_CPUS})", online.len(), facts.cpus_total);
    ensure!(online == CpuSet::first(online.len()), "online set {online:?} is not dense");
    for a in online.iter() {
        ensure!(percpu::cpu(a).state() == CpuState::Online, "cpu {a} in the online set but not Online");
        for b in online.iter().filter(|&b| b > a) {
            let (ia, ib) = (percpu::cpu(a).apic_id(), percpu::cpu(b).apic_id());
            ensure!(ia != ib, "cpus {a} and {b} share APIC id {ia}");
        }
    }
    Ok(())
}

const UNSET: u32 = u32::MAX;
static SEEN_INDEX: [AtomicU32; MAX_CPUS] = [const { AtomicU32::new(UNSET) }; MAX_CPUS];
static SEEN_APIC: [AtomicU32; MAX_CPUS] = [const { AtomicU32::new(UNSET) }; MAX_CPUS];
static SEEN_SELF: [AtomicUsize; MAX_CPUS] = [const { AtomicUsize::new(0) }; MAX_CPUS];

register!(Test::new("smp::per_cpu_data_through_gs", per_cpu_data));
/// Every CPU reports, from its own GS base, who it is; the answers must
/// match the per-CPU table and the APIC's own id register.
fn per_cpu_data() -> TestResult {
    let online = percpu::online_set();
    for seen in &SEEN_INDEX {
        seen.store(UNSET, Ordering::Relaxed);
    }
    let report = || {
        let me = percpu::current();
        let i = me.index();
        SEEN_INDEX[i].store(i as u32, Ordering::Relaxed);
        SEEN_APIC[i].store(percpu::with_local_apic(|l| l.id()), Ordering::Relaxed);
        SEEN_SELF[i].store(me as *const _ as usize, Ordering::Relaxed);
    };
    if let Err(e) = cross_call(online, &report) {
        ensure!(false, "cross-call failed: {e:?}");
    }
    for cpu in online.iter() {
        let data = percpu::cpu(cpu);
        ensure!(SEEN_INDEX[cpu].load(Ordering::Relaxed) == cpu as u32, "cpu {cpu} did not report its index");
        let apic = SEEN_APIC[cpu].load(Ordering::Relaxed);
        ensure!(apic == data.apic_id(), "cpu {cpu}: APIC register says {apic}, per-CPU data {}", data.apic_id());
        ensure!(SEEN_SELF[cpu].load(Ordering::Relaxed) == data as *const _ as usize, "cpu {cpu}: GS points elsewhere");
    }
    Ok(())
}

static HITS: [AtomicU64; MAX_CPUS] = [const { AtomicU64::new(0) }; MAX_CPUS];

fn reset_hits() {
    for h in &HITS {
        h.store(0, Ordering::Relaxed);
    }
}

fn hit() {
    HITS[percpu::current_index()].fetch_add(1, Ordering::Relaxed);
}

register!(Test::new("smp::cross_call_every_cpu_many_rounds", cross_call_rounds));
/// Cross-calls every online CPU (the caller included) many times.
fn cross_call_rounds() -> TestResult {
    const ROUNDS: u64 = 500;
    reset_hits();
    let online = percpu::online_set();
    for round in 0..ROUNDS {
        if let Err(e) = cross_call(online, &hit) {
            ensure!(false, "round {round}: {e:?}");
        }
    }
    for cpu in online.iter() {
        let n = HITS[cpu].load(Ordering::Relaxed);
        ensure!(n == ROUNDS, "cpu {cpu} ran {n} of {ROUNDS} calls");
    }
    Ok(())
}

static MUTUAL_ROUNDS: AtomicU64 = AtomicU64::new(0);
static MUTUAL_ERRORS: AtomicU64 = AtomicU64::new(0);

register!(Test::new("smp::concurrent_mutual_cross_calls", mutual_cross_calls));
/// Every CPU cross-calls all the others at the same time, repeatedly.
/// Each caller waits with interrupts off, so this only finishes if the
/// wait loop services incoming calls.
fn mutual_cross_calls() -> TestResult {
    reset_hits();
    MUTUAL_ERRORS.store(0, Ordering::Relaxed);
    // The work grows with the square of the CPU count; keep it near 8 CPUs'
    // 200 rounds (at least 5) so 64 CPUs on two host cores still finish.
    let n = percpu::online_count().max(2) as u64;
    let rounds = (200 * 8 * 7 / (n * (n - 1))).clamp(5, 200);
    MUTUAL_ROUNDS.store(rounds, Ordering::Relaxed);
    fn worker(me: usize) {
        let others = percpu::online_set().without(me);
        for _ in 0..MUTUAL_ROUNDS.load(Ordering::Relaxed) {
            if let Err(e) = cross_call(others, &hit) {
                log::error!("mutual cross-call from cpu {me}: {e:?}");
                MUTUAL_ERRORS.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
    if let Err(e) = workers::run_on_all(worker, 60_000_000_000) {
        ensure!(false, "cpus {:?} did not finish", e.cpus);
    }
    ensure!(MUTUAL_ERRORS.load(Ordering::Relaxed) == 0, "{} cross-calls failed", MUTUAL_ERRORS.load(Ordering::Relaxed));
    let online = percpu::online_set();
    let expected = rounds * (online.len() as u64 - 1);
    for cpu in online.iter() {
        let n = HITS[cpu].load(Ordering::Relaxed);
        ensure!(n == expected, "cpu {cpu} ran {n} calls, expected {expected}");
    }
    Ok(())
}

register!(Test::new("smp::cross_call_to_offline_cpu_is_rejected", offline_target_rejected));
/// A target set with an offline CPU is refused before anything runs.
fn offline_target_rejected() -> TestResult {
    reset_hits();
    let online = percpu::online_set();
    if online.len() == MAX_CPUS {
        log::info!("all {MAX_CPUS} CPU indexes online: no offline CPU to target");
        return Ok(());
    }
    let offline = CpuSet::single(MAX_CPUS - 1);
    let r = cross_call(online.union(offline), &hit);
    ensure!(r == Err(CallError::NotOnline { cpus: offline }), "got {r:?}");
    let ran: u64 = HITS.iter().map(|h| h.load(Ordering::Relaxed)).sum();
    ensure!(ran == 0, "the rejected call still ran {ran} times");
    Ok(())
}

register!(Test::new("smp::missing_ap_is_reported_and_boot_goes_on", missing_ap_reported));
/// Asking bring-up to start an APIC id nobody has must end, within its
/// bounds, with that id reported and every running CPU untouched. With
/// every CPU index in use the report must say so instead.
fn missing_ap_reported() -> TestResult {
    let facts = crate::FACTS.get().expect("boot facts");
    let before = percpu::online_set();
    let taken = |id: u32| before.iter().any(|c| percpu::cpu(c).apic_id() == id);
    // The highest id below the mode's broadcast id that no CPU has: 0xFE
    // in xAPIC mode up to 254 CPUs, 0xFFFE in x2APIC mode (QEMU's ids are
    // 0..smp). An xAPIC id is 8 bits, so a larger one would reach CPU
    // (id & 0xFF).
    let broadcast = match facts.apic_mode {
        drivers::lapic::ApicMode::XApic => 0xFF,
        drivers::lapic::ApicMode::X2Apic => 0xFFFF,
    };
    let Some(nobody) = (1..broadcast).rev().find(|&id| !taken(id)) else {
        log::info!("every xAPIC id is a CPU here: no missing AP to start");
        return Ok(());
    };
    let start = drivers::tsc::now_ns();
    // SAFETY: same direct map and reserved trampoline as at boot; no AP is
    // in the trampoline now (all are online or parked by INIT).
    let report = unsafe { crate::start_aps(crate::memory::phys_offset(), &[nobody], facts.cpus_total) };
    let ms = (drivers::tsc::now_ns() - start) / 1_000_000;
    ensure!(ms < 3_000, "bring-up of a missing CPU took {ms} ms");
    let why =
        if before.len() == MAX_CPUS { smp::bringup::ApFailure::TooMany } else { smp::bringup::ApFailure::NoResponse };
    ensure!(report.failures.as_slice() == [(nobody, why)], "failures reported: {:?}", report.failures.as_slice());
    ensure!(report.online == before.len(), "report says {} online, {} were", report.online, before.len());
    ensure!(percpu::online_set() == before, "online set changed: {:?} -> {:?}", before, percpu::online_set());
    // Every CPU still answers.
    reset_hits();
    if let Err(e) = cross_call(before, &hit) {
        ensure!(false, "cross-call after the failed start: {e:?}");
    }
    Ok(())
}
