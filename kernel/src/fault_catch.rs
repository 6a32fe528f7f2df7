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

use smp::MAX_CPUS;
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

/// Per CPU: the recovery stack pointer (0 = not catching) and the vector
/// that may be caught.
static RECOVERY_RSP: [AtomicU64; MAX_CPUS] = [const { AtomicU64::new(0) }; MAX_CPUS];
static EXPECTED: [AtomicU8; MAX_CPUS] = [const { AtomicU8::new(0) }; MAX_CPUS];
static CAUGHT: [spin::Mutex<Option<CaughtFault>>; MAX_CPUS] = [const { spin::Mutex::new(None) }; MAX_CPUS];

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
    let cpu = smp::percpu::current_index();
    let mut f = Some(f);
    *CAUGHT[cpu].lock() = None;
    EXPECTED[cpu].store(vector, Ordering::Relaxed);
    let faulted = x86_64::instructions::interrupts::without_interrupts(|| {
        // SAFETY: `guarded_call` follows the C ABI and restores every
        // callee-saved register on both paths; the slot is this CPU's own;
        // what the fault abandons is covered by this function's contract.
        unsafe { guarded_call(run::<F>, &mut f as *mut Option<F> as usize, RECOVERY_RSP[cpu].as_ptr()) }
    });
    EXPECTED[cpu].store(0, Ordering::Relaxed);
    if faulted == 0 {
        return Ok(());
    }
    Err(CAUGHT[cpu].lock().take().expect("recovered without a recorded fault"))
}

/// Called by exception handlers: if this CPU is catching `vector`, records
/// the fault, redirects the return to the recovery path and returns true.
pub fn try_recover(frame: &mut InterruptStackFrame, vector: u8, error_code: u64, cr2: u64) -> bool {
    let cpu = smp::percpu::current_index();
    let rsp = RECOVERY_RSP[cpu].load(Ordering::Relaxed);
    if rsp == 0 || EXPECTED[cpu].load(Ordering::Relaxed) != vector {
        return false;
    }
    RECOVERY_RSP[cpu].store(0, Ordering::Relaxed);
    if let Some(mut caught) = CAUGHT[cpu].try_lock() {
        *caught = Some(CaughtFault { vector, error_code, rip: frame.instruction_pointer.as_u64(), cr2 });
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
