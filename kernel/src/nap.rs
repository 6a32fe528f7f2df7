//! Short sleeps for waits on devices and other CPUs. Under QEMU a halted
//! vCPU gives its host core back, so on a host with fewer cores than vCPUs
//! a waiter that naps lets the thread it waits for (another vCPU, QEMU's
//! I/O completion) run; a spinning one takes the core from it.

use x86_64::instructions::interrupts;

/// Halts this CPU until an interrupt: the one-shot timer after about `us`
/// microseconds, or sooner an IPI (a shootdown is served by its handler
/// meanwhile). Interrupts are back in their state on entry afterwards.
///
/// Lazy TLB: a CPU running a user space leaves it for the kernel root
/// while it naps (`Vm::idle`), so shootdowns of that space skip it.
pub fn nap(us: u32) {
    let enabled = interrupts::are_enabled();
    interrupts::disable();
    // Entered with interrupts off, the doze leaves them off: the space is
    // rejoined with them off.
    let halt = || smp::ipi::doze(us);
    match crate::vm::try_get() {
        Some(vm) => vm.idle(halt),
        None => halt(),
    }
    if enabled {
        interrupts::enable();
    }
}
