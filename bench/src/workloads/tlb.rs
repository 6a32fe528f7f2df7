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
use crate::team::Team;

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
fn rounds<M: Machine>(m: &'static M, readers: usize, pages: u64, rep: &Rep) -> Result<Arc<Team>, Failure> {
    let (spaces, before) = space::make(m, 1)?;
    let mut frames = Vec::new();
    for i in 0..pages {
        frames.push(AtomicU64::new(space::map_filled(m, &spaces[0], page(0, i), round_byte(0, i))?));
    }
    let frames = Arc::new(frames);
    // Poisoned frames not yet given back (see the move step).
    let retired: Arc<spin::Mutex<Vec<Frame>>> = Arc::new(spin::Mutex::new(Vec::new()));
    let gen = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let team = Team::new(readers);
    let rep = *rep;
    let (s, f, r) = (spaces.clone(), frames.clone(), retired.clone());
    let ran = team.run(m, move |team, cpu| {
        if cpu >= readers {
            return Ok(());
        }
        let space = &s[0];
        let retired = &r;
        space::within(m, space, || {
            let mut t = team.start(m, &rep, cpu)?;
            loop {
                let g = gen.load(Ordering::Acquire);
                for i in 0..pages {
                    let want = filled(round_byte(g, i));
                    let got = m.read_word(page(0, i));
                    check!(got == want, "cpu {cpu}: page {i} reads {got:#x}, want {want:#x} (a stale translation?)");
                }
                team.barrier(m)?;
                if cpu == 0 {
                    let g = gen.load(Ordering::Relaxed) + 1;
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
                        f[i as usize].store(space::map_filled(m, space, va, round_byte(g, i))?, Ordering::Relaxed);
                    }
                    gen.store(g, Ordering::Release);
                    stop.store(!t.running(team), Ordering::Release);
                }
                team.barrier(m)?;
                if stop.load(Ordering::Acquire) {
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
