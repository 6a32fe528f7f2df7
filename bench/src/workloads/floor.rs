//! The floor suite: what the basic steps cost on this host, the limits the
//! other rows are measured against.
//! - `floor.clock`: one clock read (`rdtsc` under TCG takes a lock all
//!   vCPUs share, which is why the harness samples).
//! - `floor.rmw` `private`: a locked increment of the CPU's own
//!   cache-line-sized counter; `shared`: a locked increment of one counter
//!   every CPU writes. These two are also the sharing tracer's calibration
//!   rows: `shared` has at least one conflicting access per operation, all
//!   on [`SHARED`]'s line; `private` has none.
//! - `floor.zero`: zeroing one 4 KiB frame (what a zero-fill fault pays).
//! - `floor.ipi` `running` / `halted`: CPU 0's cross-call round trip to
//!   CPU 1 (IPI, handler, acknowledgement), CPU 1 spinning with interrupts
//!   on, or halted in its idle loop. Needs two CPUs.
//!
//! Checks: each counter moved by exactly the operations counted; the IPI
//! round trips all completed.

use alloc::string::String;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use cpus::PerCpu;

use crate::driver::Rep;
use crate::failure::{check, fails, failure, Failure};
use crate::machine::Machine;
use crate::team::Team;

/// A counter alone on its cache line.
#[repr(align(64))]
pub struct Line(AtomicU64);

/// The one counter every CPU increments in `floor.rmw shared` (a static, so
/// the tracer's report names it by its symbol).
pub static SHARED: Line = Line(AtomicU64::new(0));
/// Each CPU's own counter for `floor.rmw private`, on lines of its own
/// (`PerCpu` pads each). A team member reaches its own by index without a
/// `CpuGuard`: every access is one atomic operation.
pub static PRIVATE: PerCpu<AtomicU64> = cpus::per_cpu![AtomicU64::new(0)];

pub fn clock<M: Machine>(m: &'static M, _variant: &str, rep: &Rep) -> Result<Arc<Team>, Failure> {
    let rep = *rep;
    let team = Team::new(rep.cpus);
    team.run(m, move |team, cpu| {
        let mut t = team.start(m, &rep, cpu)?;
        let mut last = 0;
        while t.running(team) {
            let now = t.op(1, || m.now_ns());
            check!(now >= last, "cpu {cpu}: the clock went back from {last} to {now}");
            last = now;
        }
        team.stop(m, t, cpu);
        Ok(())
    })?;
    Ok(team)
}

pub fn rmw_variants() -> Vec<String> {
    alloc::vec![String::from("private"), String::from("shared")]
}

pub fn rmw<M: Machine>(m: &'static M, variant: &str, rep: &Rep) -> Result<Arc<Team>, Failure> {
    let shared = match variant {
        "private" => false,
        "shared" => true,
        v => return Err(failure(format_args!("no floor.rmw variant {v:?}"))),
    };
    let rep = *rep;
    let team = Team::new(rep.cpus);
    let before = SHARED.0.load(Ordering::Relaxed);
    team.run(m, move |team, cpu| {
        let line = if shared { &SHARED.0 } else { PRIVATE.unguarded(cpu) };
        let mine = PRIVATE.unguarded(cpu).load(Ordering::Relaxed);
        let mut t = team.start(m, &rep, cpu)?;
        while t.running(team) {
            t.op(1, || line.fetch_add(1, Ordering::Relaxed));
        }
        let ops = t.result.ops;
        team.stop(m, t, cpu);
        if !shared {
            let got = PRIVATE.unguarded(cpu).load(Ordering::Relaxed) - mine;
            check!(got == ops, "cpu {cpu}: its counter moved by {got} in {ops} increments");
        }
        Ok(())
    })?;
    if shared {
        let (ops, _, _) = team.totals();
        let got = SHARED.0.load(Ordering::Relaxed) - before;
        check!(got == ops, "the shared counter moved by {got} in {ops} increments");
    }
    Ok(team)
}

pub fn zero<M: Machine>(m: &'static M, _variant: &str, rep: &Rep) -> Result<Arc<Team>, Failure> {
    let rep = *rep;
    let team = Team::new(rep.cpus);
    team.run(m, move |team, cpu| {
        let mut frame = m.frames().alloc_page().map_err(|e| fails("alloc", e))?;
        let vm = m.vm();
        let mut t = team.start(m, &rep, cpu)?;
        while t.running(team) {
            t.op(1, || vm.fill_frame(&mut frame, 0));
        }
        team.stop(m, t, cpu);
        m.frames().free_page(frame).map_err(|e| fails("free", e))
    })?;
    Ok(team)
}

/// No variant on one CPU: there is nobody to send to.
pub fn ipi_variants(cpus: usize) -> Vec<String> {
    if cpus < 2 {
        return Vec::new();
    }
    alloc::vec![String::from("running"), String::from("halted")]
}

pub fn ipi<M: Machine>(m: &'static M, variant: &str, rep: &Rep) -> Result<Arc<Team>, Failure> {
    let running = match variant {
        "running" => true,
        "halted" => false,
        v => return Err(failure(format_args!("no floor.ipi variant {v:?}"))),
    };
    check!(m.cpus() >= 2, "floor.ipi needs two CPUs");
    let rep = *rep;
    // Halted: CPU 1 is not in the team, so it waits in its idle loop.
    let team = Team::new(if running { 2 } else { 1 });
    let stop = Arc::new(AtomicBool::new(false));
    team.run(m, move |team, cpu| {
        if cpu == 1 {
            // Interrupts are on here: the cross-call's IPI interrupts the
            // loop. No `PAUSE`, which under TCG takes QEMU's big lock.
            team.start_untimed(m, &rep)?;
            while !stop.load(Ordering::Acquire) && !team.aborted() {}
            return Ok(());
        }
        let mut t = team.start(m, &rep, cpu)?;
        let mut r = Ok(());
        while r.is_ok() && t.running(team) {
            r = t.op(1, || m.ipi_round_trip(1));
        }
        team.stop(m, t, cpu);
        stop.store(true, Ordering::Release);
        r.map_err(|missing| failure(format_args!("a round trip to cpu 1 timed out (no answer from {missing:?})")))
    })?;
    Ok(team)
}
