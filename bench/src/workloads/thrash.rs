//! `paging.thrash`: a working set four times the RAM paging may use. One
//! on-demand region of 1024 pages with the resident limit at 256 frames;
//! each CPU owns every n-th page and walks its pages in order (`seq-*`) or
//! at random (`random-*`), on each backing store paging has (RAM, and the
//! virtio-blk disk when one is attached), checking that each page holds the generation it
//! last wrote there and writing the next one, with per-page busy states
//! (`*-busy`) or the global-lock baseline (`*-global`).
//!
//! Ops are accesses; the latency samples are the accesses that faulted
//! (so the percentiles are page-in latency as the faulting CPU sees it).
//! Checks: every read matches the CPU's shadow, all pages again at the
//! end, audits and the ledger after unmap.

use alloc::string::String;
use alloc::sync::Arc;
use alloc::vec;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicU64, Ordering};

use super::paged::{self, my_faults};
use crate::driver::Rep;
use crate::failure::{check, fails, failure, Failure};
use crate::machine::Machine;
use crate::rng::Rng;
use crate::team::Team;

const PAGES: u64 = 1024;
const RESIDENT: u64 = 256;

/// `<store>-<order>-<mode>` for every store paging has: `ram-seq-busy`,
/// `virtio-blk-random-global`, ...
pub fn variants<M: Machine>(m: &M) -> Vec<String> {
    let shapes = ["seq-busy", "seq-global", "random-busy", "random-global"];
    m.stores().iter().flat_map(|store| shapes.iter().map(move |s| alloc::format!("{store}-{s}"))).collect()
}

/// (store, order, mode) of a variant; the store name may hold dashes.
fn parse(variant: &str) -> Option<(&str, &str, &str)> {
    let (rest, mode) = variant.rsplit_once('-')?;
    let (store, order) = rest.rsplit_once('-')?;
    Some((store, order, mode))
}

/// What page `va` holds in generation `gen` (0: never written, zero).
fn pattern(va: u64, gen: u64) -> u64 {
    if gen == 0 {
        0
    } else {
        va ^ gen << 40
    }
}

pub fn thrash<M: Machine>(m: &'static M, variant: &str, rep: &Rep) -> Result<Arc<Team>, Failure> {
    let bad = || failure(format_args!("no paging.thrash variant {variant:?}"));
    let (store, order, mode) = parse(variant).ok_or_else(bad)?;
    let random = match order {
        "seq" => false,
        "random" => true,
        _ => return Err(bad()),
    };
    let default = m.stores()[0];
    m.use_store(store).map_err(|e| fails("switching store", e))?;
    let r = run(m, random, mode, rep);
    m.use_store(default).map_err(|e| fails("switching back", e))?;
    r
}

fn run<M: Machine>(m: &'static M, random: bool, mode: &str, rep: &Rep) -> Result<Arc<Team>, Failure> {
    let (rep, seed) = (*rep, rep.seed);
    paged::with_mode(m, mode, Some(RESIDENT), || {
        let n = rep.cpus as u64;
        let team = Team::new(n as usize);
        let base = paged::map(m, PAGES)?;
        let region = Arc::new(AtomicU64::new(base));
        let ran = team.run(m, move |team, cpu| {
            let base = region.load(Ordering::Relaxed);
            let mine: Vec<u64> = (cpu as u64..PAGES).step_by(n as usize).collect();
            let mut shadow = vec![0u64; mine.len()];
            let mut rng = Rng::for_cpu(seed, cpu);
            let mut t = team.start(m, &rep, cpu)?;
            let mut k = 0usize;
            while t.running(team) {
                let i = if random {
                    (rng.next() % mine.len() as u64) as usize
                } else {
                    k = (k + 1) % mine.len();
                    k
                };
                let va = base + mine[i] * mm::PAGE_SIZE;
                let faults = my_faults(m);
                let (got, ns) = t.measure(1, || {
                    let got = m.read_word(va);
                    m.write_word(va, pattern(va, shadow[i] + 1));
                    got
                });
                check!(
                    got == pattern(va, shadow[i]),
                    "cpu {cpu}: page {va:#x} reads {got:#x}, wrote generation {} last",
                    shadow[i]
                );
                shadow[i] += 1;
                // Latency samples are the sampled accesses that faulted.
                if let (Some(ns), true) = (ns, my_faults(m) != faults) {
                    t.result.hist.record(ns);
                }
            }
            team.stop(m, t, cpu);
            for (i, &p) in mine.iter().enumerate() {
                let va = base + p * mm::PAGE_SIZE;
                let got = m.read_word(va);
                check!(got == pattern(va, shadow[i]), "cpu {cpu}: at the end page {va:#x} reads {got:#x}");
            }
            Ok(())
        });
        paged::unmap(m, base, PAGES)?;
        ran?;
        Ok(team)
    })
}
