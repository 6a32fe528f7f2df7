//! `heap.small`: kmalloc/kfree of mixed small sizes. Each CPU keeps a ring
//! of 32 live objects and replaces the oldest each step, so frees come in a
//! different order than allocations. Every object is stamped with its CPU
//! and sequence number and checked before it is freed. Latency samples are
//! single alloc or free calls.

use alloc::boxed::Box;
use alloc::sync::Arc;
use alloc::vec;
use alloc::vec::Vec;

use crate::driver::Rep;
use crate::failure::{check, Failure};
use crate::machine::Machine;
use crate::rng::Rng;
use crate::team::Team;

const SIZES: [usize; 8] = [16, 24, 32, 48, 64, 128, 256, 512];
const LIVE: usize = 32;

pub fn small<M: Machine>(m: &'static M, _variant: &str, rep: &Rep) -> Result<Arc<Team>, Failure> {
    let (rep, seed) = (*rep, rep.seed);
    let team = Team::new(rep.cpus);
    let in_use = m.heap_stats().in_use;
    team.run(m, move |team, cpu| {
        let mut ring: Vec<Option<Box<[u64]>>> = (0..LIVE).map(|_| None).collect();
        let mut rng = Rng::for_cpu(seed, cpu);
        let mut t = team.start(m, &rep, cpu)?;
        let mut seq = 0u64;
        while t.running(team) {
            let words = SIZES[(rng.next() % SIZES.len() as u64) as usize] / 8;
            let stamp = (cpu as u64) << 48 | seq;
            let slot = &mut ring[(seq % LIVE as u64) as usize];
            if let Some(old) = slot.take() {
                let want = (cpu as u64) << 48 | (seq - LIVE as u64);
                check!(
                    old[0] == want && old[old.len() - 1] == want,
                    "cpu {cpu}: object {:#x} holds {:#x}",
                    want,
                    old[0]
                );
                t.op(0, || drop(old));
            }
            *slot = Some(t.op(1, || vec![stamp; words].into_boxed_slice()));
            seq += 1;
        }
        team.stop(m, t, cpu);
        Ok(())
    })?;
    // Every object was freed: the ring is dropped by now on every CPU.
    let after = m.heap_stats().in_use;
    check!(after == in_use, "heap: {in_use} bytes in use before, {after} after");
    Ok(team)
}
