//! A space running on one CPU: `Vm::activate` returns this guard, and
//! dropping it goes back to the kernel space on that CPU, so an
//! activation cannot be left behind on an early return and a space
//! cannot be destroyed while a guard still borrows it.
//!
//! Lazy TLB (`Vm::idle`): a CPU that naps or halts inside an activation
//! loads the kernel root first and leaves the space's active set, so
//! shootdowns skip it meanwhile; it joins again and loads its replica when
//! it wakes. Without PCIDs, loading a root drops every translation of the
//! old one, so a CPU outside the active set holds none of the space's.

use core::marker::PhantomData;
use core::sync::atomic::Ordering;

use super::mapping::Vm;
use super::space::{AddressSpace, Space};
use super::{Root, VmError, VmPlatform};

/// `space` is loaded (CR3: in a user space, this CPU's replica) on the CPU
/// that activated it, and in its active set, until this is dropped (but
/// while the CPU naps in `Vm::idle`). Not `Send`: it is left on the same
/// CPU.
#[must_use = "dropping the guard deactivates the space at once"]
pub struct Active<'a, P: VmPlatform> {
    vm: &'a Vm<P>,
    space: &'a AddressSpace,
    cpu: usize,
    _on_this_cpu: PhantomData<*const ()>,
}

impl<'a, P: VmPlatform> Active<'a, P> {
    /// Runs user space `space` on this CPU, coming from the kernel space.
    /// Its replica is made at the first activation on a CPU (hence
    /// `OutOfFrames`).
    pub(super) fn new(vm: &'a Vm<P>, space: &'a AddressSpace) -> Result<Active<'a, P>, VmError> {
        let cpu = vm.p.cpu_index();
        let root = vm.replica_root(space, cpu)?;
        join(space, cpu);
        vm.p.load_root(&Root::new(root));
        // Last: a nap before this (a page fault on pageable memory may nap)
        // finds no space to leave and halts with the replica loaded and
        // the CPU in the active set, which is safe.
        vm.current.set(cpu, space);
        Ok(Active { vm, space, cpu, _on_this_cpu: PhantomData })
    }

    pub fn space(&self) -> &'a AddressSpace {
        self.space
    }
}

/// Puts `cpu` in the active set before its root is loaded: an unmapper
/// that reads the set after changing an entry (and fencing) either targets
/// this CPU or this CPU's walks, after this locked RMW, see the change.
fn join(space: &Space, cpu: usize) {
    space.active.insert(cpu, Ordering::SeqCst);
}

/// Takes `cpu` out of the set after the kernel root is loaded (which
/// dropped the space's translations here).
fn leave(space: &Space, cpu: usize) {
    space.active.remove(cpu, Ordering::SeqCst);
}

impl<P: VmPlatform> Drop for Active<'_, P> {
    fn drop(&mut self) {
        debug_assert_eq!(self.vm.p.cpu_index(), self.cpu, "a space is left on the CPU that activated it");
        // First: a nap after this leaves nothing (and cannot load the
        // replica again behind this drop); the guard's borrow keeps the
        // space alive until the end.
        self.vm.current.clear(self.cpu);
        self.vm.p.load_root(&Root::new(self.vm.kernel().root));
        leave(self.space, self.cpu);
    }
}

impl<P: VmPlatform> Vm<P> {
    /// Runs `f` (a nap, a halt) with the running CPU lazy: if it runs a
    /// user space, it loads the kernel root and leaves the space's active
    /// set first, so no shootdown of the space waits for it, and comes back
    /// (joins, then loads its replica) after. Call with interrupts off, so
    /// that nothing runs on this CPU between the switches but `f`; `f` may
    /// enable them (`sti; hlt`): cross-calls that come then find the
    /// kernel root loaded, which is fine for every one of them.
    pub fn idle<R>(&self, f: impl FnOnce() -> R) -> R {
        let cpu = self.p.cpu_index();
        let Some(space) = self.current.get(cpu) else { return f() };
        self.p.load_root(&Root::new(self.kernel().root));
        leave(space, cpu);
        let r = f();
        join(space, cpu);
        self.p.load_root(&Root::new(space.replicas.root(cpu)));
        r
    }
}
