//! Recovering from an expected CPU exception, for tests that must show a
//! fault is caught and reported rather than fatal.
//!
//! `catch(vector, f)` runs `f` through a small assembly frame that records
//! its stack pointer in a per-CPU slot. If exception `vector` happens on
//! that CPU while the slot is set, the handler records what happened and
//! returns from the exception into the frame's recovery path, which
//! restores the callee-saved registers and reports the fault. Any other
//! exception stays fatal.

use core::sync::atomic::{AtomicU64, AtomicU8, Ordering};

use cpus::PerCpu;
use x86_64::structures::idt::InterruptStackFrame;
use x86_64::VirtAddr;

/// What the handler saw.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CaughtFault {
    pub vector: u8,
    pub error_code: u64,
    pub rip: u64,
    pub cr2: u64,
}

/// One CPU's catching state, only ever touched by that CPU with interrupts
/// masked (`catch` masks them, exception handlers run with them masked), so
/// it is reached with `local`.
struct Catching {
    /// The recovery stack pointer (0 = not catching).
    recovery_rsp: AtomicU64,
    /// The vector that may be caught.
    expected: AtomicU8,
    caught: spin::Mutex<Option<CaughtFault>>,
}

static CATCHING: PerCpu<Catching> = cpus::per_cpu![Catching {
    recovery_rsp: AtomicU64::new(0),
    expected: AtomicU8::new(0),
    caught: spin::Mutex::new(None)
}];

core::arch::global_asm!(
    // guarded_call(f: extern "C" fn(usize), arg: usize, slot: *mut u64) -> u64
    // Returns 0 if f returned, 1 if the exception handler unwound to here.
    ".global guarded_call",
    "guarded_call:",
    "push rbp",
    "push rbx",
    "push r12",
    "push r13",
    "push r14",
    "push r15",
    "sub rsp, 8", // keep the call below 16-byte aligned
    "mov [rdx], rsp",
    "mov r12, rdx",
    "mov rax, rdi",
    "mov rdi, rsi",
    "call rax",
    "mov qword ptr [r12], 0",
    "xor eax, eax",
    "jmp 2f",
    ".global guarded_recover",
    "guarded_recover:", // entered by iretq with rsp = recorded value
    "mov eax, 1",
    "2:",
    "add rsp, 8",
    "pop r15",
    "pop r14",
    "pop r13",
    "pop r12",
    "pop rbx",
    "pop rbp",
    "ret",
);

extern "C" {
    fn guarded_call(f: extern "C" fn(usize), arg: usize, slot: *mut u64) -> u64;
    fn guarded_recover();
}

/// Runs `f`; if it raises exception `vector` on this CPU, returns what the
/// handler saw instead of failing the run. Interrupts are masked while `f`
/// runs, so a fault can only come from `f` itself, not from an interrupt
/// handler nested inside it.
///
/// # Safety
/// A fault abandons `f` mid-way: nothing between the fault and this call
/// is dropped or unwound. `f` must not hold a lock, a guard or anything
/// else whose drop matters at the point that may fault, and must not wait
/// on other CPUs (no cross-calls) while interrupts are masked.
pub unsafe fn catch<F: FnOnce()>(vector: u8, f: F) -> Result<(), CaughtFault> {
    extern "C" fn run<F: FnOnce()>(arg: usize) {
        // SAFETY: `arg` points at the `Option<F>` on `catch`'s stack, which
        // outlives this call; `take` runs the closure at most once.
        let f = unsafe { &mut *(arg as *mut Option<F>) };
        if let Some(f) = f.take() {
            f()
        }
    }
    let mut f = Some(f);
    smp::percpu::without_interrupts(|me| {
        let c = CATCHING.local(me);
        *c.caught.lock() = None;
        c.expected.store(vector, Ordering::Relaxed);
        // SAFETY: `guarded_call` follows the C ABI and restores every
        // callee-saved register on both paths; the slot is this CPU's own;
        // what the fault abandons is covered by this function's contract.
        let faulted = unsafe { guarded_call(run::<F>, &mut f as *mut Option<F> as usize, c.recovery_rsp.as_ptr()) };
        c.expected.store(0, Ordering::Relaxed);
        if faulted == 0 {
            return Ok(());
        }
        Err(c.caught.lock().take().expect("recovered without a recorded fault"))
    })
}

/// Called by exception handlers: if this CPU is catching `vector`, records
/// the fault, redirects the return to the recovery path and returns true.
pub fn try_recover(frame: &mut InterruptStackFrame, vector: u8, error_code: u64, cr2: u64) -> bool {
    // Exception handlers run with interrupts masked already; masking them
    // again costs little on this path and holds whatever the caller.
    let rsp = smp::percpu::without_interrupts(|me| {
        let c = CATCHING.local(me);
        let rsp = c.recovery_rsp.load(Ordering::Relaxed);
        if rsp == 0 || c.expected.load(Ordering::Relaxed) != vector {
            return 0;
        }
        c.recovery_rsp.store(0, Ordering::Relaxed);
        if let Some(mut caught) = c.caught.try_lock() {
            *caught = Some(CaughtFault { vector, error_code, rip: frame.instruction_pointer.as_u64(), cr2 });
        }
        rsp
    });
    if rsp == 0 {
        return false;
    }
    // SAFETY: `rsp` was recorded by `guarded_call` on this CPU, whose frame
    // is still live (the slot is cleared when it returns), and
    // `guarded_recover` expects exactly that stack pointer.
    unsafe {
        frame.as_mut().update(|f| {
            f.instruction_pointer = VirtAddr::new(guarded_recover as *const () as u64);
            f.stack_pointer = VirtAddr::new(rsp);
        });
    }
    true
}
