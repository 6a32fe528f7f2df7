//! Scripted races between an unmapper and a sweep of one user space, on
//! the simulated TLB, with shootdowns parked where the race needs them.
//!
//! Defect A: an unmapper finishes (`finish_unmap`) by looking its pages up
//! again after its flush and clearing the in-transit markers it placed. If
//! its table were swept away between its flush and that look-up, and the
//! page mapped and unmapped again, the marker it found would be another
//! CPU's, whose shootdown has not gone out. Two things keep it from
//! happening: markers carry their placer's stamp, and an unmapper holds the
//! shared table lock from before its shootdown to its finish, so no sweep
//! runs in between. The script parks an unmapper there and checks that a
//! sweep then frees nothing and is left to the unmapper, which does it
//! once its own marker is settled, out of the replica of the CPU that
//! used the table too.

use core::sync::atomic::Ordering;
use std::thread::{self, ScopedJoinHandle};

use super::pte::SW_TRANSIT;
use super::shootdown_gate::Park;
use super::table::{lookup, Lookup};
use super::testing::{access, boot, SimMachine};
use super::*;
use crate::testing::on_cpu;

/// The CPUs of the script: V unmaps X, S sweeps, Z reads X first.
const V: usize = 1;
const S: usize = 2;
const Z: usize = 4;
/// X is alone in its page table.
const X: u64 = 0x40_0000;

/// The 4 KiB entry for `virt`, if a page table covers it.
fn entry(vm: &Vm<SimMachine>, space: &AddressSpace, virt: u64) -> Option<u64> {
    match lookup(vm.platform(), space.root, virt, 0) {
        Lookup::Entry { entry, level: 0 } => Some(entry.load(Ordering::Acquire)),
        _ => None,
    }
}

/// Releases every parked shootdown when dropped, so a failing step never
/// leaves a thread of the script parked.
struct Unpark<'m>(&'m SimMachine);

impl Drop for Unpark<'_> {
    fn drop(&mut self) {
        self.0.release_all_shootdowns();
    }
}

/// Joins a thread of the script, passing its panic on (the simulated TLB
/// reports a broken promise by panicking in the CPU that broke it).
fn join<T>(h: ScopedJoinHandle<'_, T>) -> T {
    h.join().unwrap_or_else(|p| std::panic::resume_unwind(p))
}

#[test]
fn no_sweep_runs_between_an_unmappers_flush_and_its_finish() {
    let machine = boot(4096, 5);
    let (vm, m) = (&machine, machine.platform());
    let flags = Flags::WRITE | Flags::USER;
    let before = m.free_bytes();
    let user = vm.new_user_space().unwrap();
    let space = &user;
    let mut active = Vec::new();
    for cpu in [V, S, Z] {
        on_cpu(cpu);
        active.push((cpu, vm.activate(space).unwrap()));
    }
    on_cpu(0);
    assert_eq!(vm.vmalloc(space, X, X + PAGE_SIZE, 1, flags), Ok(X));
    let f = vm.map_get(space, X).unwrap().phys.as_u64();
    assert_eq!(access(vm, Z, X), Some(f), "setup: Z reads X through its replica");
    thread::scope(|scope| {
        let _unpark = Unpark(m);
        // 1. V unmaps X; its thread stalls after its shootdown, which went
        //    to Z alone: the one CPU whose replica links X's table.
        m.park_shootdowns_of(V, Park::AfterAcks);
        let v = scope.spawn(|| {
            on_cpu(V);
            vm.vmfree(space, X, 1)
        });
        let shot = m.wait_parked(V);
        assert_eq!(
            (shot.targets, shot.start, shot.pages),
            (cpus::CpuSet::single(Z), X, 1),
            "V's shootdown goes to Z alone"
        );
        assert!(entry(vm, space, X).is_some_and(|e| e & SW_TRANSIT != 0), "setup: X holds V's marker");

        // 2. S sweeps: V holds the shared lock, so nothing is freed.
        on_cpu(S);
        assert_eq!(vm.sweep(space), Ok(0), "a sweep ran while V was between its flush and its finish");
        assert!(entry(vm, space, X).is_some_and(|e| e & SW_TRANSIT != 0), "V's marker went");

        // 3. V finishes its own marker, then does the sweep S left
        //    pending: X's table goes, out of Z's replica first (the sweep's
        //    flush goes to Z, which the simulated TLB checks at the free).
        m.release_shootdown(V);
        assert_eq!(join(v), Ok(()));
        assert_eq!(entry(vm, space, X), None, "the sweep S left to the next unmap was not done");
    });
    assert_eq!(access(vm, Z, X), None);
    on_cpu(S);
    assert_eq!(vm.sweep(space), Ok(0), "nothing left to sweep");
    for (cpu, guard) in active {
        on_cpu(cpu);
        drop(guard);
    }
    on_cpu(0);
    vm.destroy_space(user).map_err(|(e, _)| e).unwrap();
    // Every frame back exactly once: none leaked, none freed twice.
    assert_eq!(m.free_bytes(), before);
    assert!(m.frames.audit().is_ok());
}
