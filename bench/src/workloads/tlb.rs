//! Shootdown workloads, in rounds: some CPUs read pages (so their TLBs
//! cache them), then CPU 0 unmaps and remaps them onto new frames.
//! - `vm.global`: every CPU reads a 16-page region; CPU 0 moves all 16.
//! - `tlb.shootdown` (`cached-K`): only the first K CPUs run the space and
//!   read one page; CPU 0's unmap latency is the sample, so it shows the
//!   cost of a shootdown to K-1 other CPUs.
//!
//! Old frames are poisoned after the unmap and given back only a round
//! later (so the allocator cannot hand the same frame straight back), and
//! new ones hold the round's byte for that page, so a CPU that kept a
//! stale translation reads the poison and fails the run.

use alloc::string::String;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use super::space::{self, filled, page};
use mm::frame::Frame;

use crate::driver::Rep;
use crate::failure::{check, failure, Failure};
use crate::machine::Machine;
use crate::team::{Team, BARRIER_WAIT_NS};

const GLOBAL_PAGES: u64 = 16;

pub fn shootdown_variants(cpus: usize) -> Vec<String> {
    let mut k = 1;
    let mut v = Vec::new();
    while k < cpus {
        v.push(alloc::format!("cached-{k}"));
        k *= 2;
    }
    v.push(alloc::format!("cached-{cpus}"));
    v
}

pub fn global<M: Machine>(m: &'static M, _variant: &str, rep: &Rep) -> Result<Arc<Team>, Failure> {
    rounds(m, m.cpus(), GLOBAL_PAGES, rep)
}

pub fn shootdown<M: Machine>(m: &'static M, variant: &str, rep: &Rep) -> Result<Arc<Team>, Failure> {
    let k = variant
        .strip_prefix("cached-")
        .and_then(|k| k.parse::<usize>().ok())
        .filter(|&k| (1..=m.cpus()).contains(&k))
        .ok_or_else(|| failure(format_args!("no tlb.shootdown variant {variant:?}")))?;
    rounds(m, k, 1, rep)
}

/// The byte page `i` holds in round `gen`: never 0 or the poison, and
/// different for neighbouring pages, so a translation to the wrong frame
/// shows too.
fn round_byte(gen: u64, i: u64) -> u8 {
    ((gen * 17 + i) % 200) as u8 + 1
}

/// Rounds until the time is up: the first `readers` CPUs read `pages`
/// pages, then CPU 0 moves each page to a new frame (one timed op each).
/// The other CPUs leave at once and idle (halted), so on a host with fewer
/// cores than vCPUs they do not take time from the CPUs being measured.
///
/// A round, in the order its steps happen:
/// 1. every reader reads its pages (checking the round's bytes) and says
///    so (`Round::ready`), then keeps reading them, awake: a CPU that
///    napped instead could go lazy (switch to the kernel root, leave the
///    space's active set) and drop out of the shootdown the round
///    measures;
/// 2. once all have read, CPU 0 announces the move (`Round::moving`);
///    each reader stops touching the pages (they are about to be
///    unmapped: a read then would fault) and acknowledges (`Round::left`);
/// 3. CPU 0 waits for every acknowledgement, then unmaps (timed) and
///    remaps each page, and opens the next round (`Round::gen`);
///    meanwhile the readers wait for the new round without napping: they
///    check a while, then doze (`Machine::doze`: halt on the space, its
///    translations kept, answering the shootdown from the IPI handler).
///    A spinning reader would keep its host core from CPU 0 and from the
///    other readers that must answer (at 8 vCPUs on 2 cores, spinning
///    readers made each unmap wait tens of milliseconds for the host to
///    schedule every target).
/// 4. Each reader checks the new round's pages, the last round's too.
///
/// So every unmap finds the K readers running the space with the page
/// cached, and sends its shootdown to exactly the K - 1 others. Every wait
/// is bounded (`team::BARRIER_WAIT_NS`) and leaves when the team aborts.
fn rounds<M: Machine>(m: &'static M, readers: usize, pages: u64, rep: &Rep) -> Result<Arc<Team>, Failure> {
    let (spaces, before) = space::make(m, 1)?;
    let mut frames = Vec::new();
    for i in 0..pages {
        frames.push(AtomicU64::new(space::map_filled(m, &spaces[0], page(0, i), round_byte(0, i))?));
    }
    let frames = Arc::new(frames);
    // Poisoned frames not yet given back (see the move step).
    let retired: Arc<spin::Mutex<Vec<Frame>>> = Arc::new(spin::Mutex::new(Vec::new()));
    let round = Arc::new(Round::default());
    let team = Team::new(readers);
    let rep = *rep;
    let others = readers as u64 - 1;
    let (s, f, r) = (spaces.clone(), frames.clone(), retired.clone());
    let ran = team.run(m, move |team, cpu| {
        if cpu >= readers {
            return Ok(());
        }
        let space = &s[0];
        let retired = &r;
        let round = &round;
        let check_pages = |g: u64| -> Result<(), Failure> {
            for i in 0..pages {
                let want = filled(round_byte(g, i));
                let got = m.read_word(page(0, i));
                check!(got == want, "cpu {cpu}: page {i} reads {got:#x}, want {want:#x} (a stale translation?)");
            }
            Ok(())
        };
        space::within(m, space, || {
            let mut t = team.start(m, &rep, cpu)?;
            loop {
                let g = round.gen.load(Ordering::Acquire);
                check_pages(g)?;
                if cpu != 0 {
                    round.ready.fetch_add(1, Ordering::Release);
                    // Keep reading (cached, awake) until the move is
                    // announced; then leave the pages alone.
                    spin_until(m, team, "the move", || {
                        if round.moving.load(Ordering::Acquire) > g {
                            return Ok(true);
                        }
                        check_pages(g)?;
                        Ok(false)
                    })?;
                    round.left.fetch_add(1, Ordering::Release);
                    doze_until(m, team, "the next round", || round.gen.load(Ordering::Acquire) > g)?;
                    if round.stop.load(Ordering::Relaxed) {
                        // The last move is checked too (a run may be one
                        // round).
                        check_pages(g + 1)?;
                        break;
                    }
                    continue;
                }
                // CPU 0: round `g` is the `g + 1`th, so `(g + 1) * others`
                // readers have read (and later left) in all.
                let all = (g + 1) * others;
                spin_until(m, team, "the readers", || Ok(round.ready.load(Ordering::Acquire) >= all))?;
                round.moving.store(g + 1, Ordering::Release);
                spin_until(m, team, "the readers to leave", || Ok(round.left.load(Ordering::Acquire) >= all))?;
                // Frames moved away from a round ago: every reader has
                // checked its pages since, so they may be reused now.
                let mut old = retired.lock();
                for frame in old.drain(..) {
                    m.frames().free_page(frame).map_err(|e| crate::failure::fails("free", e))?;
                }
                for i in 0..pages {
                    let va = page(0, i);
                    let phys = f[i as usize].load(Ordering::Relaxed);
                    old.push(t.op(1, || space::unmap_poison_keep(m, space, va, phys))?);
                    f[i as usize].store(space::map_filled(m, space, va, round_byte(g + 1, i))?, Ordering::Relaxed);
                }
                drop(old);
                let stop = !t.running(team);
                round.stop.store(stop, Ordering::Relaxed);
                // Release: the new frames, their bytes and `stop` before
                // the readers' Acquire load of the new round.
                round.gen.store(g + 1, Ordering::Release);
                if stop {
                    break;
                }
            }
            team.stop(m, t, cpu);
            Ok(())
        })
    });
    // After a failure the pages' state is unknown (and late CPUs may still
    // read them): leave them mapped rather than free what may be in use.
    ran?;
    for i in 0..pages {
        space::unmap_poison(m, &spaces[0], page(0, i), frames[i as usize].load(Ordering::Relaxed))?;
    }
    for frame in retired.lock().drain(..) {
        m.frames().free_page(frame).map_err(|e| crate::failure::fails("free", e))?;
    }
    space::destroy(m, spaces, before)?;
    Ok(team)
}

/// Where a round is (see `rounds`); each word is written by one side only
/// (`ready`, `left`: the readers; the rest: CPU 0). `ready` and `left`
/// count over all rounds, so nothing is reset between rounds.
#[derive(Default)]
struct Round {
    /// The round being read (CPU 0 opens the next after its move).
    gen: AtomicU64,
    /// `g + 1` once CPU 0 has announced the move of round `g`.
    moving: AtomicU64,
    /// Readers (CPU 0 aside) that read their pages, over all rounds.
    ready: AtomicU64,
    /// Readers that stopped touching their pages for the move.
    left: AtomicU64,
    /// Set with the last round's `gen`: the time is up.
    stop: AtomicBool,
}

/// Checks between two looks at the clock in `spin_until`: under TCG a
/// clock read takes a lock every vCPU needs, CPU 0's unmap among them.
const CLOCK_EVERY: u32 = 1024;

/// Spins until `done` says so, answering cross-calls (`wait_step`) and
/// never napping (a napping CPU may go lazy and leave the space's active
/// set), for at most `BARRIER_WAIT_NS`; fails once the team aborted or
/// the bound passed, saying what it waited for.
fn spin_until<M: Machine>(
    m: &M,
    team: &Team,
    what: &str,
    mut done: impl FnMut() -> Result<bool, Failure>,
) -> Result<(), Failure> {
    let mut start = None;
    let mut checks = 0u32;
    while !done()? {
        m.wait_step();
        checks = checks.wrapping_add(1);
        if !checks.is_multiple_of(CLOCK_EVERY) {
            continue;
        }
        if team.aborted() {
            return Err(failure(format_args!("cpu {} stopped waiting for {what}: another CPU failed", m.cpu())));
        }
        let now = m.now_ns();
        if now - *start.get_or_insert(now) > BARRIER_WAIT_NS {
            return Err(failure(format_args!(
                "cpu {} waited {} s for {what}",
                m.cpu(),
                BARRIER_WAIT_NS / 1_000_000_000
            )));
        }
    }
    Ok(())
}

/// Checks `doze_until` makes before it dozes, and after each doze (an IPI
/// that woke it is the unmap's shootdown, and the new round follows within
/// microseconds), and one doze. Few checks: while CPU 0 unmaps, readers
/// that spin take the host's cores from it (at 8 vCPUs on 2 cores 4096
/// checks made cached-8's unmap 10x slower than the parent's barrier
/// naps); a dozing reader keeps its root, so it is still a target.
const DOZE_AFTER: u32 = 64;
const DOZE_US: u32 = 100;

/// `spin_until`, but after `DOZE_AFTER` checks a wait step is a doze
/// (halted on the space, not lazy; an IPI or the timer ends it), and then
/// `DOZE_AFTER` checks again.
fn doze_until<M: Machine>(m: &M, team: &Team, what: &str, mut done: impl FnMut() -> bool) -> Result<(), Failure> {
    let mut checks = 0u32;
    spin_until(m, team, what, || {
        checks += 1;
        if checks > DOZE_AFTER {
            m.doze(DOZE_US);
            checks = 0;
        }
        Ok(done())
    })
}
