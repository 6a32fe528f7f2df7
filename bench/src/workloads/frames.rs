//! Frame allocator workloads, each with the magazine allocator and the
//! global-lock baseline: `pair` (alloc+free one frame), `batch` (alloc 64,
//! free 64), `remote` (frames freed by the next CPU, not the allocating
//! one). Latency samples are single alloc or free calls. Checks: no
//! allocation fails, a batch holds 64 distinct frames, the free count is
//! back where it was, and the frame audit (conservation) passes.

use alloc::string::String;
use alloc::sync::Arc;
use alloc::vec::Vec;

use arrayvec::ArrayVec;
use mm::frame::Frame;
use mm::phys::Policy;
use spin::Mutex;

use crate::driver::Rep;
use crate::failure::{check, fails, failure, Failure};
use crate::machine::{frames_accounted, Machine};
use crate::team::Team;

const BATCH: usize = 64;
/// Frames in flight to a neighbour before the sender frees locally.
const MAILBOX: usize = 256;

pub fn variants() -> Vec<String> {
    alloc::vec![String::from("magazine"), String::from(record::BASELINE_VARIANT)]
}

fn policy(variant: &str) -> Result<Policy, Failure> {
    match variant {
        "magazine" => Ok(Policy::Magazine),
        v if v == record::BASELINE_VARIANT => Ok(Policy::GlobalLock),
        v => Err(failure(format_args!("no frames variant {v:?}"))),
    }
}

/// Runs `body` under the variant's policy and checks the allocator after.
fn with_policy<M: Machine>(
    m: &'static M,
    variant: &str,
    body: impl FnOnce() -> Result<Arc<Team>, Failure>,
) -> Result<Arc<Team>, Failure> {
    let frames = m.frames();
    frames.set_policy(policy(variant)?);
    let before = frames_accounted(m);
    let result = body();
    frames.set_policy(Policy::Magazine);
    let team = result?;
    let after = frames_accounted(m);
    check!(after == before, "{before} frames free or in the heap before, {after} after");
    frames.audit().map_err(|e| fails("frame audit", e))?;
    Ok(team)
}

pub fn pair<M: Machine>(m: &'static M, variant: &str, rep: &Rep) -> Result<Arc<Team>, Failure> {
    let rep = *rep;
    with_policy(m, variant, || {
        let team = Team::new(rep.cpus);
        team.run(m, move |team, cpu| {
            let f = m.frames();
            // The policy switch emptied every magazine: fill this CPU's
            // before the timed loop, which measures the steady state.
            let warm = f.alloc_page().map_err(|e| fails("alloc", e))?;
            f.free_page(warm).map_err(|e| fails("free", e))?;
            let mut t = team.start(m, &rep, cpu)?;
            while t.running(team) {
                let phys = t.op(1, || f.alloc_page()).map_err(|e| fails("alloc", e))?;
                t.op(0, || f.free_page(phys)).map_err(|e| fails("free", e))?;
            }
            team.stop(m, t, cpu);
            Ok(())
        })?;
        Ok(team)
    })
}

pub fn batch<M: Machine>(m: &'static M, variant: &str, rep: &Rep) -> Result<Arc<Team>, Failure> {
    let rep = *rep;
    with_policy(m, variant, || {
        let team = Team::new(rep.cpus);
        team.run(m, move |team, cpu| {
            let f = m.frames();
            let mut held = ArrayVec::<Frame, BATCH>::new();
            // As in `pair`: a batch's worth in this CPU's magazines first.
            for _ in 0..BATCH {
                held.push(f.alloc_page().map_err(|e| fails("alloc", e))?);
            }
            for frame in held.drain(..) {
                f.free_page(frame).map_err(|e| fails("free", e))?;
            }
            let mut t = team.start(m, &rep, cpu)?;
            let mut round = 0u64;
            while t.running(team) {
                for _ in 0..BATCH {
                    held.push(t.op(0, || f.alloc_page()).map_err(|e| fails("alloc", e))?);
                }
                if round.is_multiple_of(64) {
                    let mut sorted: ArrayVec<u64, BATCH> = held.iter().map(|f| f.phys().as_u64()).collect();
                    sorted.sort_unstable();
                    check!(sorted.windows(2).all(|w| w[0] != w[1]), "cpu {cpu}: a batch holds one frame twice");
                }
                for phys in held.drain(..) {
                    t.op(1, || f.free_page(phys)).map_err(|e| fails("free", e))?;
                }
                round += 1;
            }
            team.stop(m, t, cpu);
            Ok(())
        })?;
        Ok(team)
    })
}

/// Frames a CPU collects before handing them to its neighbour in one go
/// (so the mailbox lock is not what the benchmark measures).
const HANDOFF: usize = 16;

pub fn remote<M: Machine>(m: &'static M, variant: &str, rep: &Rep) -> Result<Arc<Team>, Failure> {
    let rep = *rep;
    with_policy(m, variant, || {
        let n = rep.cpus;
        let team = Team::new(n);
        let boxes: Arc<Vec<Mutex<ArrayVec<Frame, MAILBOX>>>> =
            Arc::new((0..n).map(|_| Mutex::new(ArrayVec::new())).collect());
        team.run(m, move |team, cpu| {
            let f = m.frames();
            let next = &boxes[(cpu + 1) % n];
            let mine = &boxes[cpu];
            let mut outbox = ArrayVec::<Frame, HANDOFF>::new();
            let mut inbox = ArrayVec::<Frame, HANDOFF>::new();
            let mut t = team.start(m, &rep, cpu)?;
            while t.running(team) {
                outbox.push(t.op(0, || f.alloc_page()).map_err(|e| fails("alloc", e))?);
                if outbox.is_full() {
                    let mut to = next.lock();
                    if to.remaining_capacity() >= HANDOFF {
                        to.extend(outbox.drain(..));
                    }
                }
                if outbox.is_full() {
                    // The neighbour is behind: keep the frames moving.
                    for phys in outbox.drain(..) {
                        t.op(1, || f.free_page(phys)).map_err(|e| fails("free", e))?;
                    }
                }
                if inbox.is_empty() {
                    // A handful at a time from the back: no copy of the box.
                    let mut from = mine.lock();
                    while !inbox.is_full() {
                        let Some(phys) = from.pop() else { break };
                        inbox.push(phys);
                    }
                }
                if let Some(phys) = inbox.pop() {
                    t.op(1, || f.free_page(phys)).map_err(|e| fails("remote free", e))?;
                }
            }
            team.stop(m, t, cpu);
            for phys in outbox.drain(..).chain(inbox.drain(..)) {
                f.free_page(phys).map_err(|e| fails("final free", e))?;
            }
            // Nobody sends after this barrier: take what is left.
            team.barrier(m)?;
            for phys in mine.lock().drain(..) {
                f.free_page(phys).map_err(|e| fails("final free", e))?;
            }
            Ok(())
        })?;
        Ok(team)
    })
}
