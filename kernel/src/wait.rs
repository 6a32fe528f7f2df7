//! The step of a wait on another CPU (`VmPlatform::wait_step`, the
//! benchmarks' barriers): answer the cross-calls aimed at this CPU, check
//! a few times without `PAUSE`, then nap.
//!
//! Under QEMU's TCG every `PAUSE` retakes QEMU's big lock and a spinning
//! vCPU keeps its host core from the vCPU it waits for (a lock holder, a
//! CPU that must answer a shootdown), so a wait that goes on gives the
//! core away: `nap` halts until the one-shot timer or an IPI, whose
//! handler answers it meanwhile. Nothing wakes a napping waiter when what
//! it waits for happens (a wake-up IPI would be an IPI per operation), so
//! the nap is short: its length is the latency a wait may add.
//!
//! Callers run with interrupts off or on; the nap enables them only
//! inside `sti; hlt`, where the handlers that may run answer cross-calls
//! (as `service_pending` does), acknowledge a timer or wake-up, or log.

use mm::vm::Waited;

/// Steps that only check (and answer cross-calls) before a wait naps.
pub const SPIN_STEPS: u32 = 64;
/// One nap of a wait (the timer, or any IPI, ends it sooner).
pub const NAP_US: u32 = 5;

/// One step of a wait, `waited` steps into it.
pub fn step(waited: Waited) {
    smp::ipi::service_pending();
    if waited.steps() >= SPIN_STEPS {
        crate::nap::nap(NAP_US);
    }
}
