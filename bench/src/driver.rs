//! The benchmark driver: for each selected benchmark and variant, warm-up
//! repetitions, then measured ones, each sending one `Bench` record with
//! ops, time, latency percentiles and counters. A workload that fails its
//! own correctness check sends `BenchFail` and fails the run.

use alloc::string::String;
use alloc::vec::Vec;

use record::{Counters, Record};

use crate::counters::{self, Group};
use crate::failure::Failure;
use crate::machine::Machine;
use crate::options::Plan;
use crate::team::Team;
use crate::workloads;

/// One repetition's parameters.
#[derive(Debug, Clone, Copy)]
pub struct Rep {
    pub duration_ns: u64,
    /// Different for every repetition of every run, from the run's seed.
    pub seed: u64,
    /// CPUs that run the workload (`0..cpus`; the others idle): all
    /// online CPUs, or 1 for the solo runs that give the host ceiling.
    pub cpus: usize,
    /// One operation in this many (on average, chosen at random) is timed.
    pub sample_every: u32,
    /// The sharing tracer's window number for a measured repetition (the
    /// Bench records sent so far); `None` for a warm-up.
    pub window: Option<u32>,
}

/// Who runs a benchmark's workload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// Every CPU does the same work: at more than one CPU the driver also
    /// runs it on CPU 0 alone (the others halted) in the same boot, and the
    /// host sets the result against min(CPUs, host cores) × that solo rate.
    EveryCpu,
    /// Some CPUs drive and others serve (shootdown targets): no solo run.
    Directed,
}

/// A benchmark: name, counter groups, variants at a CPU count, and one
/// repetition of a variant (which fills a team's results).
pub struct Bench<M: Machine> {
    pub name: &'static str,
    pub groups: &'static [Group],
    pub scope: Scope,
    /// Mean gap between timed operations (see [`Rep::sample_every`]): wide
    /// for operations of a few hundred ns, narrower for slow ones, where a
    /// clock read costs little and operations are few.
    pub sample_every: u32,
    pub variants: fn(&M) -> Vec<String>,
    pub run: fn(&'static M, &str, &Rep) -> Result<alloc::sync::Arc<Team>, Failure>,
}

/// Runs the selected benchmarks; true if none failed.
pub fn run_benchmarks<M: Machine>(m: &'static M, only: &str, plan: Plan, quick: bool, seed: u64) -> bool {
    let benches: Vec<Bench<M>> = workloads::all::<M>().into_iter().filter(|b| record::selected(only, b.name)).collect();
    let cpus = m.cpus();
    let solo = |b: &Bench<M>| b.scope == Scope::EveryCpu && cpus > 1;
    let runs: u32 = benches.iter().map(|b| (b.variants)(m).len() as u32 * if solo(b) { 2 } else { 1 }).sum();
    m.emit(&Record::BenchPlan { runs, reps: plan.reps, quick });
    log::info!("bench: {} benchmarks, {runs} runs of {} repetitions on {cpus} CPUs", benches.len(), plan.reps);
    let mut failed = 0;
    let mut seq = seed;
    // Bench records sent so far: the tracer's window number for the next.
    let mut sent = 0u32;
    for b in &benches {
        for variant in (b.variants)(m) {
            let mut result = run_variant(m, b, &variant, plan, cpus, &mut seq, &mut sent);
            if result.is_ok() && solo(b) {
                // Straight after the same workload on every CPU: warm
                // already, so no warm-up repetition.
                result = run_variant(m, b, &variant, Plan { warmups: 0, ..plan }, 1, &mut seq, &mut sent);
            }
            if let Err(e) = result {
                failed += 1;
                log::error!("bench {} [{variant}] FAILED: {e}", b.name);
                m.emit(&Record::BenchFail { bench: b.name, variant: &variant, smp: cpus as u32, detail: &e });
            }
        }
    }
    m.emit(&Record::BenchDone { runs, failed });
    failed == 0
}

/// Warm-up and measured repetitions of one variant on CPUs `0..workers`.
/// `sent` counts the Bench records sent in this boot.
fn run_variant<M: Machine>(
    m: &'static M,
    b: &Bench<M>,
    variant: &str,
    plan: Plan,
    workers: usize,
    seq: &mut u64,
    sent: &mut u32,
) -> Result<(), Failure> {
    let mut next_rep = |window| {
        *seq = seq.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        Rep { duration_ns: plan.rep_ns, seed: *seq, cpus: workers, sample_every: b.sample_every, window }
    };
    for _ in 0..plan.warmups {
        (b.run)(m, variant, &next_rep(None))?;
    }
    for rep in 0..plan.reps {
        // The counters and the tracer's window cover the CPUs' timed loops
        // only (`Team::start` to the last `Team::stop`), not the workload's
        // set-up and checks around them; a failed repetition gets no end
        // mark, so its window is dropped with its record.
        let team = (b.run)(m, variant, &next_rep(Some(*sent)))?;
        let (ops, ns, hist) = team.totals();
        let Some((before, after)) = team.counted() else {
            return Err(crate::failure::failure(format_args!(
                "{} [{variant}]: the repetition ran no timed loop to its end",
                b.name
            )));
        };
        let list = counters::delta(&before, &after, b.groups);
        let ops_per_sec = if ns == 0 { 0 } else { (ops as u128 * 1_000_000_000 / ns as u128) as u64 };
        log::info!(
            "bench {} [{variant}] on {workers} CPUs rep {rep}: {ops} ops in {} us, {ops_per_sec} ops/s, p50 {} ns, p99 {} ns",
            b.name,
            ns / 1000,
            hist.percentile(50),
            hist.percentile(99)
        );
        m.emit(&Record::Bench {
            bench: b.name,
            variant,
            smp: m.cpus() as u32,
            workers: workers as u32,
            rep,
            ops,
            ns,
            ops_per_sec,
            ns_p50: hist.percentile(50),
            ns_p99: hist.percentile(99),
            ns_max: hist.max(),
            sample_every: b.sample_every,
            samples: hist.count(),
            counters: Counters(&list),
        });
        *sent += 1;
    }
    Ok(())
}

/// The one variant of a benchmark without alternatives.
pub fn single<M>(_: &M) -> Vec<String> {
    alloc::vec![String::from("default")]
}
