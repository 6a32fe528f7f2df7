//! Scripted races between unmappers of one user space, on the simulated
//! TLB, with shootdowns parked where the race needs them.
//!
//! Defect A: an unmapper finishes (step 4 of `finish_unmap`) by looking
//! its pages up again after its flush and clearing whatever in-transit
//! marker it finds. If its table was swept away meanwhile and the page
//! mapped again, the marker it finds is another CPU's, whose shootdown has
//! not gone out: that CPU's frame is freed (`vmfree`) or the page is open
//! for mapping (`umap_single`) while a third CPU still holds the
//! translation.

use core::sync::atomic::Ordering;
use std::thread::{self, ScopedJoinHandle};

use super::pte::{self, SW_TRANSIT};
use super::shootdown_gate::Park;
use super::table::{lookup, Lookup};
use super::testing::{boot, SimMachine};
use super::*;
use crate::testing::on_cpu;

/// The CPUs of the script: V unmaps X first, S sweeps, W maps X again and
/// unmaps it, Z reads X in between.
const V: usize = 1;
const S: usize = 2;
const W: usize = 3;
const Z: usize = 4;
/// X is alone in its page table (until W maps it and its neighbour); Y,
/// the page S unmaps, is under another page table.
const X: u64 = 0x40_0000;
const Y: u64 = 0x1000_0000;

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

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Unmap {
    /// W's marker owns the frame: finishing it frees the frame.
    Vmfree,
    /// W's caller takes the frame back: finishing the marker opens X.
    UmapSingle,
}

fn defect_a(how: Unmap) {
    let machine = boot(4096, 5);
    let (vm, m) = (&machine, machine.platform());
    let flags = Flags::WRITE | Flags::USER;
    let before = m.free_bytes();
    let user = vm.new_user_space().unwrap();
    let space = &user;
    let mut active = Vec::new();
    for cpu in [V, S, W, Z] {
        on_cpu(cpu);
        active.push((cpu, vm.activate(space)));
    }
    on_cpu(0);
    assert_eq!(vm.vmalloc(space, X, X + PAGE_SIZE, 1, flags), Ok(X));
    assert_eq!(vm.vmalloc(space, Y, Y + PAGE_SIZE, 1, flags), Ok(Y));
    let returned = thread::scope(|scope| {
        let _unpark = Unpark(m);
        // 1. V unmaps X: a reader keeps it from the exclusive lock, so it
        //    leaves the prune to a later unmap; then its thread stalls
        //    after its shootdown.
        m.park_shootdowns_of(V, Park::AfterAcks);
        let reader = vm.shared(space).unwrap();
        let v = scope.spawn(|| {
            on_cpu(V);
            vm.vmfree(space, X, 1)
        });
        let shot = m.wait_parked(V);
        assert_eq!((shot.start, shot.pages), (X, 1), "setup: V's shootdown covers X alone");
        assert!(space.prune_pending.load(Ordering::Relaxed), "setup: V gave up the exclusive lock");
        assert!(entry(vm, space, X).is_some_and(|e| e & SW_TRANSIT != 0), "setup: X holds V's marker");
        drop(reader);

        // 2. S unmaps Y, gets the lock and sweeps: X's table, holding only
        //    V's marker, goes after S's full flush, and V's frame with it.
        on_cpu(S);
        vm.vmfree(space, Y, 1).unwrap();
        assert_eq!(entry(vm, space, X), None, "setup: S's sweep detached X's table");

        // 3. W maps X (and its neighbour, so the new table stays when X
        //    goes); Z reads X.
        on_cpu(W);
        assert_eq!(vm.vmalloc(space, X, X + 2 * PAGE_SIZE, 2, flags), Ok(X), "setup: X is free after the sweep");
        let f_w = vm.map_get(space, X).unwrap().phys.as_u64();
        assert_eq!(m.touch(Z, X), Some(f_w));

        // 4. W unmaps X; its thread stalls before its shootdown goes out.
        m.park_shootdowns_of(W, Park::BeforeSend);
        let w = scope.spawn(move || {
            on_cpu(W);
            match how {
                Unmap::Vmfree => vm.vmfree(space, X, 1).map(|()| None),
                Unmap::UmapSingle => vm.umap_single(space, X, PageSize::Size4K).map(|p| Some(p.as_u64())),
            }
        });
        let shot = m.wait_parked(W);
        assert_eq!((shot.start, shot.pages), (X, 1), "setup: W's unmap detached no table");
        let marker = entry(vm, space, X).unwrap();
        assert!(marker & SW_TRANSIT != 0 && pte::addr(marker) == f_w, "setup: X holds W's marker {marker:#x}");
        assert_eq!(m.may_hold(Z, X), vec![f_w], "setup: Z holds X -> {f_w:#x}");

        // 5. V goes on to finish its unmap. It must leave W's marker (and
        //    W's frame) alone: only W's shootdown makes them safe.
        m.release_shootdown(V);
        assert_eq!(join(v), Ok(()));
        if how == Unmap::UmapSingle {
            // Nothing may be mapped at X until W's shootdown.
            on_cpu(S);
            let again = vm.vmalloc(space, X, X + PAGE_SIZE, 1, flags);
            m.touch(Z, X);
            assert_eq!(again, Err(VmError::OutOfVirtualSpace), "X was mapped again before W's shootdown");
        }
        assert_eq!(entry(vm, space, X), Some(marker), "V finished W's marker");
        m.release_shootdown(W);
        let returned = join(w).unwrap();
        assert_eq!(entry(vm, space, X), Some(0), "W finished its marker");
        assert!(m.may_hold(Z, X).is_empty());
        returned
    });
    assert_eq!(returned.is_some(), how == Unmap::UmapSingle);
    on_cpu(0);
    vm.vmfree(space, X + PAGE_SIZE, 1).unwrap();
    if let Some(f) = returned {
        m.free_phys(f).unwrap();
    }
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

#[test]
fn an_unmapper_late_to_finish_leaves_a_newer_vmfree_alone() {
    defect_a(Unmap::Vmfree);
}

#[test]
fn an_unmapper_late_to_finish_leaves_a_newer_umap_single_alone() {
    defect_a(Unmap::UmapSingle);
}
