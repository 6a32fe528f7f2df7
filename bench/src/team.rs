//! Running one workload on every online CPU at once: a job slot that turns
//! a closure into the plain `fn(usize)` the kernel's CPU runner takes, a
//! barrier whose waits are bounded and answer shootdowns, and per-CPU
//! result slots (ops, start, end, latency histogram).

use alloc::sync::Arc;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

use spin::Mutex;

use crate::counters::{self, Snapshot};
use crate::driver::Rep;
use crate::failure::{failure, Failure};
use crate::histogram::Histogram;
use crate::machine::{Clock, Machine, Mark};
use crate::rng::Rng;
use crate::sampling::{Pacer, Sampler};

/// Longest a CPU waits at a barrier for the others.
pub const BARRIER_WAIT_NS: u64 = 20_000_000_000;
/// A barrier waiter spins this long, then naps `NAP_US` at a time.
const SPIN_NS: u64 = 50_000;
const NAP_US: u32 = 20;
/// Longest one workload runs on the other CPUs after CPU 0 finished.
const RUN_TIMEOUT_NS: u64 = 120_000_000_000;

type Job = Arc<dyn Fn(usize) + Send + Sync>;

/// The job every CPU runs: set only by `Team::run`, which runs one team
/// at a time (it is called from CPU 0 only, and waits for the others).
/// On a cache line of its own: every CPU takes this lock as a run starts,
/// and a line it shares with data read on a measured path (it once sat next
/// to the TSC frequency) makes every such read a conflicting access.
static JOB: JobSlot = JobSlot(Mutex::new(None));

#[repr(align(64))]
struct JobSlot(Mutex<Option<Job>>);

/// Set when a run's CPUs did not finish in time. They may still be inside
/// that run, or pick up a later run's job late, so no further run starts.
static STUCK: AtomicBool = AtomicBool::new(false);

fn trampoline(cpu: usize) {
    let job = JOB.0.lock().clone();
    if let Some(job) = job {
        job(cpu);
    }
}

/// What one CPU did in one repetition.
#[derive(Default)]
pub struct CpuResult {
    pub ops: u64,
    pub start: u64,
    pub end: u64,
    pub hist: Histogram,
}

pub struct Team {
    pub n: usize,
    /// Members done: their timed loop stopped, or they started untimed.
    timed_done: AtomicUsize,
    /// The tracer's window `start` opened (its number + 1; 0: none).
    window: AtomicU64,
    /// Every CPU's counters as the timed loops start and as the last one
    /// stops.
    counted: Mutex<(Option<Snapshot>, Option<Snapshot>)>,
    arrived: AtomicUsize,
    generation: AtomicU64,
    abort: AtomicBool,
    errors: AtomicU64,
    first_error: Mutex<Option<Failure>>,
    results: Vec<Mutex<CpuResult>>,
}

impl Team {
    pub fn new(n: usize) -> Arc<Team> {
        Arc::new(Team {
            n,
            timed_done: AtomicUsize::new(0),
            window: AtomicU64::new(0),
            counted: Mutex::new((None, None)),
            arrived: AtomicUsize::new(0),
            generation: AtomicU64::new(0),
            abort: AtomicBool::new(false),
            errors: AtomicU64::new(0),
            first_error: Mutex::new(None),
            results: (0..n).map(|_| Mutex::new(CpuResult::default())).collect(),
        })
    }

    /// Runs `body(cpu)` on CPUs `0..n` (the others idle) and returns the first failure any CPU
    /// reported (with how many there were).
    pub fn run<M: Machine>(
        self: &Arc<Self>,
        m: &M,
        body: impl Fn(&Team, usize) -> Result<(), Failure> + Send + Sync + 'static,
    ) -> Result<(), Failure> {
        if STUCK.load(Ordering::Acquire) {
            return Err(failure(format_args!("not run: an earlier run's CPUs never finished")));
        }
        let team = self.clone();
        *JOB.0.lock() = Some(Arc::new(move |cpu| {
            // A team smaller than the machine (a solo run for the host
            // ceiling): the other CPUs go back to idle (halted) at once.
            if cpu >= team.n {
                return;
            }
            if let Err(e) = body(&team, cpu) {
                team.fail(e);
            }
        }));
        let ran = m.run_on_all(trampoline, RUN_TIMEOUT_NS);
        *JOB.0.lock() = None;
        if let Err(cpus) = ran {
            // Make the late CPUs leave their loops and barriers.
            self.abort.store(true, Ordering::Release);
            STUCK.store(true, Ordering::Release);
            return Err(failure(format_args!(
                "CPUs {cpus:?} did not finish within {} s",
                RUN_TIMEOUT_NS / 1_000_000_000
            )));
        }
        match self.first_error.lock().take() {
            Some(e) => Err(failure(format_args!("{} errors; first: {e}", self.errors.load(Ordering::Relaxed)))),
            None => Ok(()),
        }
    }

    /// Records a failure and makes every CPU's waits and loops stop. The
    /// message is stored before the others are told to stop, so the first
    /// error is the cause, not a CPU that left a barrier because of it.
    pub fn fail(&self, e: Failure) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        {
            let mut first = self.first_error.lock();
            if first.is_none() {
                *first = Some(e);
            }
        }
        self.abort.store(true, Ordering::Release);
    }

    /// Whether `run` left its CPUs still running (teardown must not free
    /// what they may use).
    pub fn stuck() -> bool {
        STUCK.load(Ordering::Acquire)
    }

    pub fn aborted(&self) -> bool {
        self.abort.load(Ordering::Acquire)
    }

    /// Waits until all `n` CPUs have arrived (bounded; answers shootdowns
    /// while it spins). Fails at once if the run was aborted.
    pub fn barrier<M: Machine>(&self, m: &M) -> Result<(), Failure> {
        self.barrier_then(m, || {})
    }

    /// `barrier`, where the last CPU to arrive runs `last` before it lets
    /// the others go.
    fn barrier_then<M: Machine>(&self, m: &M, last: impl FnOnce()) -> Result<(), Failure> {
        let gen = self.generation.load(Ordering::Acquire);
        if self.arrived.fetch_add(1, Ordering::AcqRel) + 1 == self.n {
            last();
            self.arrived.store(0, Ordering::Relaxed);
            self.generation.fetch_add(1, Ordering::Release);
            return Ok(());
        }
        let start = m.now_ns();
        let mut waited = 0;
        let mut steps = 0u32;
        while self.generation.load(Ordering::Acquire) == gen {
            if self.aborted() {
                return Err(failure(format_args!("cpu {} left a barrier: another CPU failed", m.cpu())));
            }
            // While spinning, look at the clock every 16th step only: the
            // CPUs still working may be inside a measured window, and under
            // TCG every clock read takes a lock they need too.
            steps += 1;
            if waited >= SPIN_NS || steps.is_multiple_of(16) {
                waited = m.now_ns() - start;
            }
            if waited > BARRIER_WAIT_NS {
                return Err(failure(format_args!(
                    "cpu {} waited {} s at a barrier",
                    m.cpu(),
                    BARRIER_WAIT_NS / 1_000_000_000
                )));
            }
            // Spin briefly (a barrier usually opens within microseconds),
            // then nap: with more vCPUs than host cores a spinning waiter
            // takes the core from the CPUs it waits for, and from those
            // that must answer a shootdown.
            if waited < SPIN_NS {
                m.wait_step();
            } else {
                m.nap(NAP_US);
            }
        }
        Ok(())
    }

    /// Waits for the whole team (a barrier), then starts this CPU's timed
    /// loop. The last CPU to arrive takes the counters' `before` snapshot
    /// and opens the sharing tracer's window (a measured repetition's)
    /// before it lets the others go, so both cover every CPU's timed loop
    /// and nothing of the set-up and checks around them (the frame
    /// workloads' policy switch and audit once dominated frames.pair's
    /// locked instructions per op).
    pub fn start<'a, M: Machine>(&self, m: &'a M, rep: &Rep, cpu: usize) -> Result<Timed<'a, M>, Failure> {
        self.open_window(m, rep)?;
        Ok(Timed::begin(m, rep, cpu))
    }

    /// `start` for a member that runs no timed loop in this repetition (it
    /// only serves the others), so the window closes without it.
    pub fn start_untimed<M: Machine>(&self, m: &M, rep: &Rep) -> Result<(), Failure> {
        self.open_window(m, rep)?;
        self.done(m);
        Ok(())
    }

    fn open_window<M: Machine>(&self, m: &M, rep: &Rep) -> Result<(), Failure> {
        self.barrier_then(m, || {
            self.counted.lock().0 = Some(counters::snapshot(m));
            if let Some(w) = rep.window {
                self.window.store(u64::from(w) + 1, Ordering::Release);
                m.trace_mark(Mark::Begin, w);
            }
        })
    }

    /// Ends this CPU's timed loop (`start`): stores its result, and the
    /// last member to be done closes the tracer's window and takes the
    /// counters' `after` snapshot.
    pub fn stop<M: Machine>(&self, m: &M, t: Timed<'_, M>, cpu: usize) {
        t.finish(self, cpu);
        self.done(m);
    }

    fn done<M: Machine>(&self, m: &M) {
        if self.timed_done.fetch_add(1, Ordering::AcqRel) + 1 != self.n {
            return;
        }
        if let Some(w) = self.window.load(Ordering::Acquire).checked_sub(1) {
            m.trace_mark(Mark::End, w as u32);
        }
        self.counted.lock().1 = Some(counters::snapshot(m));
    }

    /// The counters before the first timed loop and after the last, if
    /// every member got to the end.
    pub fn counted(&self) -> Option<(Snapshot, Snapshot)> {
        match *self.counted.lock() {
            (Some(before), Some(after)) => Some((before, after)),
            _ => None,
        }
    }

    /// This CPU's result slot.
    pub fn result(&self, cpu: usize) -> spin::MutexGuard<'_, CpuResult> {
        self.results[cpu].lock()
    }

    /// Ops of all CPUs, first start to last finish, and merged latencies.
    pub fn totals(&self) -> (u64, u64, Histogram) {
        let mut hist = Histogram::new();
        let (mut ops, mut start, mut end) = (0, u64::MAX, 0);
        for r in &self.results {
            let r = r.lock();
            if r.ops == 0 && r.hist.count() == 0 {
                continue;
            }
            ops += r.ops;
            start = start.min(r.start);
            end = end.max(r.end);
            hist.merge(&r.hist);
        }
        (ops, end.saturating_sub(start), hist)
    }
}

/// A CPU's timed loop: runs until the repetition's time has passed since
/// `begin` or the team aborted. It reads the clock only when its
/// [`Pacer`] says so (about every 20 µs) and times only the operations its
/// [`Sampler`] picks (one in `Rep::sample_every` on average, at random),
/// so the clock is never read per operation.
pub struct Timed<'a, M: Clock + ?Sized> {
    m: &'a M,
    pub result: CpuResult,
    pacer: Pacer,
    sampler: Sampler,
}

/// Seeds the sampler's stream apart from the workload's own (same seed).
const SAMPLER_SALT: u64 = 0x5A3F_1E0D_C0FF_EE11;

impl<'a, M: Clock + ?Sized> Timed<'a, M> {
    pub fn begin(m: &'a M, rep: &Rep, cpu: usize) -> Timed<'a, M> {
        let start = m.now_ns();
        Timed {
            m,
            result: CpuResult { start, ..CpuResult::default() },
            pacer: Pacer::new(start, rep.duration_ns),
            sampler: Sampler::new(rep.sample_every, Rng::for_cpu(rep.seed ^ SAMPLER_SALT, cpu)),
        }
    }

    /// Whether to go on: the team did not abort and the time is not up.
    /// Call once per loop iteration. The team's abort flag is looked at
    /// only when the clock is: it shares a line with the barrier's
    /// counters and is written when the team is made, inside the
    /// repetition, so a read per operation was one access to a conflicting
    /// line per operation (the sharing tracer's `floor.rmw private` showed
    /// it) in a workload that shares nothing.
    pub fn running(&mut self, team: &Team) -> bool {
        if !self.pacer.due() {
            return true;
        }
        !team.aborted() && self.pacer.observe(self.m.now_ns())
    }

    /// Runs one operation, counts `ops` operations, and records its latency
    /// if it is sampled.
    pub fn op<R>(&mut self, ops: u64, f: impl FnOnce() -> R) -> R {
        let (r, ns) = self.measure(ops, f);
        if let Some(ns) = ns {
            self.result.hist.record(ns);
        }
        r
    }

    /// Runs one operation and counts `ops` operations; returns its latency
    /// if it is sampled, for the caller to record or not.
    pub fn measure<R>(&mut self, ops: u64, f: impl FnOnce() -> R) -> (R, Option<u64>) {
        self.result.ops += ops;
        if !self.sampler.next() {
            return (f(), None);
        }
        let t0 = self.m.now_ns();
        let r = f();
        (r, Some(self.m.now_ns() - t0))
    }

    /// Counts operations whose latency is not recorded one by one.
    pub fn count(&mut self, ops: u64) {
        self.result.ops += ops;
    }

    /// Stores the result in the team's slot for this CPU.
    pub fn finish(mut self, team: &Team, cpu: usize) {
        self.result.end = self.m.now_ns();
        *team.result(cpu) = self.result;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::cell::Cell;

    /// A clock that counts its reads; time moves only when told.
    struct CountingClock {
        now: Cell<u64>,
        reads: Cell<u64>,
    }

    impl Clock for CountingClock {
        fn now_ns(&self) -> u64 {
            self.reads.set(self.reads.get() + 1);
            self.now.get()
        }
    }

    /// A frames.pair-like loop of two 150 ns operations per iteration for
    /// a 100 ms repetition.
    #[test]
    fn a_timed_loop_reads_the_clock_rarely_and_still_stops_on_time() {
        let clock = CountingClock { now: Cell::new(1_000), reads: Cell::new(0) };
        let team = Team::new(1);
        let rep = Rep { duration_ns: 100_000_000, seed: 9, cpus: 1, sample_every: 64, window: None };
        let mut t = Timed::begin(&clock, &rep, 0);
        let step = |c: &CountingClock| c.now.set(c.now.get() + 150);
        while t.running(&team) {
            t.op(1, || step(&clock));
            t.op(0, || step(&clock));
        }
        let (ops, samples, reads) = (t.result.ops, t.result.hist.count(), clock.reads.get());
        let late = clock.now.get() - 1_000 - rep.duration_ns;
        t.finish(&team, 0);
        assert!(ops > 300_000, "{ops} ops");
        assert!(late <= 2 * crate::sampling::CHECK_NS, "stopped {late} ns after the deadline");
        // Reads: two per sampled operation (2/64 per operation, two
        // operations per iteration), a deadline look about every 20 µs
        // (one per ~67 iterations here), the start and the end: about one
        // per 13 iterations, where timing every operation took five.
        assert!((reads as f64) < 0.1 * ops as f64, "{reads} clock reads for {ops} iterations");
        let per = (2 * ops) as f64 / samples as f64;
        assert!((56.0..72.0).contains(&per), "one operation in {per} timed");
    }
}
