//! A space running on one CPU: `Vm::activate` returns this guard, and
//! dropping it goes back to the kernel space on that CPU, so an
//! activation cannot be left behind on an early return and a space
//! cannot be destroyed while a guard still borrows it.

use core::marker::PhantomData;
use core::sync::atomic::Ordering;

use super::mapping::Vm;
use super::space::{AddressSpace, SpaceKind};
use super::VmPlatform;

/// `space` is loaded (CR3) on the CPU that activated it, and in its active
/// set, until this is dropped. Not `Send`: it is left on the same CPU.
#[must_use = "dropping the guard deactivates the space at once"]
pub struct Active<'a, P: VmPlatform> {
    vm: &'a Vm<P>,
    space: &'a AddressSpace,
    cpu: usize,
    _on_this_cpu: PhantomData<*const ()>,
}

impl<'a, P: VmPlatform> Active<'a, P> {
    /// Runs `space` on this CPU, coming from the kernel space. Its bit in
    /// the active set is set before the load, so an unmapper that reads
    /// the set after changing an entry either targets this CPU or this
    /// CPU loads the changed tables.
    pub(super) fn new(vm: &'a Vm<P>, space: &'a AddressSpace) -> Active<'a, P> {
        let cpu = vm.p.cpu_index();
        if space.kind() == SpaceKind::User {
            space.active.insert(cpu, Ordering::SeqCst);
        }
        // Every user root is a PML4 `new_user_space` made with the kernel
        // space's upper half; the kernel root is the running one.
        vm.p.load_root(&super::Root::new(space.root));
        Active { vm, space, cpu, _on_this_cpu: PhantomData }
    }

    pub fn space(&self) -> &'a AddressSpace {
        self.space
    }
}

impl<P: VmPlatform> Drop for Active<'_, P> {
    /// Leaves the space for the kernel space on this CPU. Loading the root
    /// drops the space's translations here, so the bit is cleared after.
    fn drop(&mut self) {
        debug_assert_eq!(self.vm.p.cpu_index(), self.cpu, "a space is left on the CPU that activated it");
        self.vm.p.load_root(&super::Root::new(self.vm.kernel().root));
        if self.space.kind() == SpaceKind::User {
            self.space.active.remove(self.cpu, Ordering::SeqCst);
        }
    }
}
