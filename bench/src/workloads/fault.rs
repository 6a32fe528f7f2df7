//! Page-fault workloads on on-demand `k_mem_map` regions, with per-page
//! busy states and with the global-lock baseline:
//! - `fault.anon` (will-it-scale's page_fault1): each CPU maps its own
//!   region, writes one word per page (a zero-fill fault each), checks
//!   them, unmaps; ops are faults, the time includes map and unmap.
//! - `fault.shared`: CPU 0 maps one region per round and every CPU faults
//!   its own interleaved pages of it (disjoint pages, shared tables).
//!
//! Checks: every page holds what was written, each first touch was one
//! resolved fault, and frames, commitments and audits balance after.

use alloc::string::String;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use super::paged::{self, my_faults};
use crate::driver::Rep;
use crate::failure::{check, Failure};
use crate::machine::Machine;
use crate::team::{Team, Timed};

/// Pages each CPU faults per region: 4 MiB, so that the one shootdown of
/// each unmap (to every CPU: these are kernel regions) is spread over many
/// faults, as will-it-scale's 128 MiB regions do.
const PAGES: u64 = 1024;

pub fn variants() -> Vec<String> {
    alloc::vec![String::from("busy"), String::from(record::BASELINE_VARIANT)]
}

/// Writes one word in each of `pages` pages from `first` (every `step`th
/// page), one timed fault each, then checks them and the fault count.
fn touch<M: Machine>(
    m: &M,
    t: &mut Timed<M>,
    base: u64,
    first: u64,
    step: u64,
    pages: u64,
    cpu: usize,
) -> Result<(), Failure> {
    let faults = my_faults(m);
    let va = |i: u64| base + (first + i * step) * mm::PAGE_SIZE + 8 * (cpu as u64 % 512);
    for i in 0..pages {
        t.op(1, || m.write_word(va(i), va(i) ^ 0x5A5A));
    }
    // Counted before the reads: a page evicted since (free frames below the
    // reserve) faults again there, legitimately.
    let faults = my_faults(m) - faults;
    check!(faults == pages, "cpu {cpu}: {faults} faults for {pages} first touches");
    for i in 0..pages {
        let got = m.read_word(va(i));
        check!(got == va(i) ^ 0x5A5A, "cpu {cpu}: page at {:#x} reads {got:#x}", va(i));
    }
    Ok(())
}

pub fn anon<M: Machine>(m: &'static M, variant: &str, rep: &Rep) -> Result<Arc<Team>, Failure> {
    let rep = *rep;
    paged::with_mode(m, variant, None, || {
        let team = Team::new(rep.cpus);
        team.run(m, move |team, cpu| {
            let mut t = team.start(m, &rep, cpu)?;
            while t.running(team) {
                let base = paged::map(m, PAGES)?;
                let r = touch(m, &mut t, base, 0, 1, PAGES, cpu);
                paged::unmap(m, base, PAGES)?;
                r?;
            }
            team.stop(m, t, cpu);
            Ok(())
        })?;
        Ok(team)
    })
}

pub fn shared<M: Machine>(m: &'static M, variant: &str, rep: &Rep) -> Result<Arc<Team>, Failure> {
    let rep = *rep;
    paged::with_mode(m, variant, None, || {
        let n = rep.cpus as u64;
        let team = Team::new(n as usize);
        let (region, stop) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicBool::new(false)));
        team.run(m, move |team, cpu| {
            let mut t = team.start(m, &rep, cpu)?;
            loop {
                if cpu == 0 {
                    region.store(paged::map(m, PAGES * n)?, Ordering::Release);
                }
                team.barrier(m)?;
                let base = region.load(Ordering::Acquire);
                let r = touch(m, &mut t, base, cpu as u64, n, PAGES, cpu);
                team.barrier(m)?;
                if cpu == 0 {
                    paged::unmap(m, base, PAGES * n)?;
                    stop.store(!t.running(team), Ordering::Release);
                }
                r?;
                team.barrier(m)?;
                if stop.load(Ordering::Acquire) {
                    break;
                }
            }
            team.stop(m, t, cpu);
            Ok(())
        })?;
        Ok(team)
    })
}
