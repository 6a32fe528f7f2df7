//! Sending inter-processor interrupts by CPU index, and the cross-call
//! service built on them.

use drivers::tsc;

use crate::counts::use_shorthand;
pub use crate::crosscall::CallError;
use crate::crosscall::{self, CallPlatform, CrossCalls};
use crate::percpu::{self, cpu, with_local_apic, with_local_apic_guarded};
use crate::tlb::COUNTS;
use cpus::{CpuSet, MAX_CPUS};

/// Vector of the cross-call IPI; the kernel's IDT routes it to
/// [`handle_cross_call_interrupt`].
pub const CROSS_CALL_VECTOR: u8 = 0xF0;

/// How long a cross-call waits for acknowledgements before it reports the
/// CPUs that did not answer. Generous: under TCG with more vCPUs than host
/// cores a vCPU may not be scheduled for tens of milliseconds.
pub const CROSS_CALL_TIMEOUT_NS: u64 = 5_000_000_000;

/// Sends `vector` to one CPU.
pub fn send(target: usize, vector: u8) {
    let apic_id = cpu(target).apic_id();
    with_local_apic_guarded(|lapic, me| {
        lapic.send_ipi(vector, apic_id);
        COUNTS.ipis(me, 1);
    });
}

/// Sends `vector` to every CPU in `targets` (one ICR write each).
pub fn send_set(targets: CpuSet, vector: u8) {
    with_local_apic_guarded(|lapic, me| {
        for t in targets.iter() {
            lapic.send_ipi(vector, cpu(t).apic_id());
        }
        COUNTS.ipis(me, targets.len() as u64);
    });
}

/// Sends `vector` to every CPU but this one, with the APIC's shorthand
/// (one ICR write).
pub fn send_all_but_self(vector: u8) {
    with_local_apic_guarded(|lapic, me| {
        lapic.send_ipi_all_but_self(vector);
        COUNTS.ipis(me, 1);
    });
}

static CALLS: CrossCalls<MAX_CPUS> = CrossCalls::new();

/// Iterations a cross-call waiter only checks for its acknowledgements
/// (no `PAUSE`) before it naps: a running target answers within a few
/// (each iteration reads the clock, about 0.3-2 µs under TCG). Not fewer:
/// a napping waiter wakes at its timer, which a loaded host may deliver
/// milliseconds late (16 made floor.ipi running at 8 CPUs 8 ms at p50).
pub const ACK_SPIN_STEPS: u32 = 64;
/// One nap of a cross-call waiter: its timer, or any IPI, ends it. Short,
/// since nothing wakes the waiter when the last target acknowledges (a
/// wake-up IPI would cost one IPI per call): the nap's length is the
/// latency it may add to a call, and a napping waiter still answers calls
/// aimed at it from its interrupt handler.
pub const ACK_NAP_US: u32 = 5;

struct IpiPlatform;

impl CallPlatform for IpiPlatform {
    fn signal(&self, targets: CpuSet) {
        let others = percpu::online_set().without(percpu::current_index());
        if use_shorthand(targets, others) {
            send_all_but_self(CROSS_CALL_VECTOR);
        } else {
            send_set(targets, CROSS_CALL_VECTOR);
        }
    }

    fn now_ns(&self) -> u64 {
        tsc::now_ns()
    }

    /// Checks `ACK_SPIN_STEPS` times without `PAUSE` (under TCG every
    /// `PAUSE` retakes QEMU's big lock, which the targets need to run),
    /// then naps: the host core goes to the vCPUs being waited for.
    fn relax(&self, spins: u32) {
        if spins >= ACK_SPIN_STEPS {
            doze(ACK_NAP_US);
        }
    }
}

/// Halts this CPU until an interrupt: its one-shot timer after about `us`
/// microseconds, or sooner an IPI, answered by its handler (a cross-call
/// aimed at this CPU is run there). It stays on the space it runs (CR3 is
/// not touched), so it stays a shootdown target: a doze is not lazy.
///
/// For the cross-call wait, which runs with interrupts off
/// (`cross_call`): they are on only inside `sti; hlt` and back to their
/// state afterwards. The wait loop calls this between two `service` calls,
/// never inside one, so the handler's `service` does not nest in it; the
/// other handlers only acknowledge (timer, wake-up, spurious) or log (APIC
/// error). (The kernel's `nap` does the same for kernel code; smp cannot
/// call it.)
pub fn doze(us: u32) {
    let enabled = x86_64::instructions::interrupts::are_enabled();
    x86_64::instructions::interrupts::disable();
    with_local_apic(|l| l.one_shot(us.saturating_mul(1000)));
    // `sti; hlt` is atomic: an interrupt due before the `hlt` still ends it.
    x86_64::instructions::interrupts::enable_and_hlt();
    if !enabled {
        x86_64::instructions::interrupts::disable();
    }
}

/// Runs `f` on every CPU in `targets` (the caller too, if included) and
/// returns once all have finished it.
///
/// Interrupts are off on the caller for the duration; while waiting it
/// runs calls aimed at itself, so CPUs calling each other cannot deadlock.
/// `f` runs in interrupt context on the targets and must not cross-call.
pub fn cross_call<F: Fn() + Sync>(targets: CpuSet, f: &F) -> Result<(), CallError> {
    let offline = targets.difference(percpu::online_set());
    if !offline.is_empty() {
        return Err(CallError::NotOnline { cpus: offline });
    }
    x86_64::instructions::interrupts::without_interrupts(|| {
        crosscall::call_closure(&CALLS, percpu::current_index(), targets, f, CROSS_CALL_TIMEOUT_NS, &IpiPlatform)
    })
}

/// Runs the cross-calls (TLB shootdowns) waiting for this CPU now: for
/// code that waits on another CPU with interrupts off. Interrupts are off
/// while they run even for a caller that has them on, as in the handler:
/// a flush's count (`counts`, a plain load and store) must not be
/// interleaved with the cross-call interrupt's count on the same CPU.
pub fn service_pending() {
    x86_64::instructions::interrupts::without_interrupts(|| {
        CALLS.service(percpu::current_index());
    });
}

/// Body of the cross-call interrupt handler.
pub fn handle_cross_call_interrupt() {
    CALLS.service(percpu::current_index());
    with_local_apic(|lapic| lapic.end_of_interrupt());
}
