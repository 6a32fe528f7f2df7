//! Mapping workloads (RadixVM's mapbench shapes) in user spaces:
//! - `vm.local`: each CPU maps a page, writes and reads it, unmaps it, in
//!   its own window. `shared`: one space active on every CPU, so each unmap
//!   must shoot down every other CPU; `private`: a space per CPU, active
//!   only there, so no unmap needs an IPI.
//! - `vm.pipeline`: each CPU maps pages and hands them to the next CPU,
//!   which reads them (a TLB miss there), unmaps and frees them.
//!
//! Checks: every page reads back what was written, unmap returns the frame
//! that was mapped, and the frame ledger balances after the spaces go.

use alloc::string::String;
use alloc::sync::Arc;
use alloc::vec::Vec;

use arrayvec::ArrayVec;
use mm::vm::{Flags, PageSize};
use spin::Mutex;

use super::space::{self, page};
use crate::driver::Rep;
use crate::failure::{check, fails, failure, Failure};
use crate::machine::Machine;
use crate::team::{Team, Timed};

pub fn local_variants() -> Vec<String> {
    alloc::vec![String::from("shared"), String::from("private")]
}

pub fn local<M: Machine>(m: &'static M, variant: &str, rep: &Rep) -> Result<Arc<Team>, Failure> {
    let n = rep.cpus;
    let private = match variant {
        "shared" => false,
        "private" => true,
        v => return Err(failure(format_args!("no vm.local variant {v:?}"))),
    };
    let (spaces, before) = space::make(m, if private { n } else { 1 })?;
    let team = Team::new(n);
    let rep = *rep;
    let s = spaces.clone();
    let ran = team.run(m, move |team, cpu| {
        let (vm, frames) = (m.vm(), m.frames());
        let space = &s[if private { cpu } else { 0 }];
        space::within(m, space, || {
            let cycle = |i: u64| -> Result<(), Failure> {
                let va = page(cpu, i);
                let stamp = (cpu as u64) << 40 | i;
                let frame = frames.alloc_page().map_err(|e| fails("alloc", e))?;
                let phys = frame.phys().as_u64();
                vm.map_frame(space, va, frame, Flags::WRITE).map_err(|(e, _)| fails("map", e))?;
                m.write_word(va, stamp);
                let got = m.read_word(va);
                let frame = vm.umap_owned(space, va, PageSize::Size4K).map_err(|e| fails("unmap", e))?;
                let back = frame.phys().as_u64();
                frames.free_page(frame).map_err(|e| fails("free", e))?;
                check!(
                    got == stamp && back == phys,
                    "cpu {cpu}: read {got:#x} for {stamp:#x}; unmap gave {back:#x} for {phys:#x}"
                );
                Ok(())
            };
            // One cycle before the timed loop makes the window's page table
            // and links it into this CPU's replica (written once per space,
            // as a real process's first touch would be, not per op).
            cycle(0)?;
            let mut t = team.start(m, &rep, cpu)?;
            let mut i = 0u64;
            while t.running(team) {
                t.op(1, || cycle(i))?;
                i += 1;
            }
            team.stop(m, t, cpu);
            // Everyone stops unmapping before anyone leaves the space.
            team.barrier(m)
        })
    });
    space::finish(m, ran, spaces, before)?;
    Ok(team)
}

/// Pages in flight to the next CPU (well under a window, so a page's
/// address is unmapped before it comes round again).
const PIPE: usize = 64;
/// A CPU's inbox: the (virtual address, frame) pairs the previous CPU mapped for it.
type Mailbox = Mutex<ArrayVec<(u64, u64), PIPE>>;

pub fn pipeline<M: Machine>(m: &'static M, _variant: &str, rep: &Rep) -> Result<Arc<Team>, Failure> {
    let n = rep.cpus;
    let (spaces, before) = space::make(m, 1)?;
    let boxes: Arc<Vec<Mailbox>> = Arc::new((0..n).map(|_| Mutex::new(ArrayVec::new())).collect());
    let team = Team::new(n);
    let rep = *rep;
    let s = spaces.clone();
    let ran = team.run(m, move |team, cpu| {
        let space = &s[0];
        let (next, mine) = (&boxes[(cpu + 1) % n], &boxes[cpu]);
        space::within(m, space, || {
            let mut batch = ArrayVec::<(u64, u64), PIPE>::new();
            let take = |t: &mut Timed<M>, batch: &mut ArrayVec<(u64, u64), PIPE>| -> Result<(), Failure> {
                core::mem::swap(batch, &mut *mine.lock());
                for (va, phys) in batch.drain(..) {
                    let got = m.read_word(va);
                    check!(got == va ^ phys, "cpu {cpu}: page {va:#x} reads {got:#x}");
                    t.op(1, || space::unmap_poison(m, space, va, phys))?;
                }
                Ok(())
            };
            let mut t = team.start(m, &rep, cpu)?;
            let mut k = 0u64;
            while t.running(team) {
                if next.lock().len() < PIPE {
                    let va = page(cpu, k);
                    let phys = t.op(0, || space::map_filled(m, space, va, 0))?;
                    m.write_word(va, va ^ phys);
                    next.lock()
                        .try_push((va, phys))
                        .map_err(|_| failure(format_args!("cpu {cpu}: pipe overfilled")))?;
                    k += 1;
                }
                take(&mut t, &mut batch)?;
            }
            team.barrier(m)?;
            // Nobody sends any more: unmap what is left.
            take(&mut t, &mut batch)?;
            team.stop(m, t, cpu);
            team.barrier(m)
        })
    });
    space::finish(m, ran, spaces, before)?;
    Ok(team)
}
