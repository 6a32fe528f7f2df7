//! Running code in ring 3 and getting control back when it is done.
//!
//! `run_user` works like `fault_catch::catch`: `usermode_enter` saves the
//! callee-saved registers on the kernel stack, records the stack pointer
//! in this CPU's landing slot and `iretq`s to ring 3. The program ends with
//! `int 0x80` (a DPL-3 gate) or by raising an exception; either way the
//! handler finds the slot set, records how the run ended, and rewrites its
//! interrupt frame so that its own `iretq` resumes ring 0 at
//! `usermode_landing` on the recorded stack, which restores the registers
//! and returns from `usermode_enter`. Ring-3 code runs with interrupts
//! masked, so nothing but its own exit or fault enters the kernel (and an
//! NMI or machine check, which stay fatal).
//!
//! There is no `swapgs`: the GS base (per-CPU data) stays the kernel's
//! while ring 3 runs, which is sound only because the programs run here do
//! not load segment registers.

use core::sync::atomic::{AtomicU64, Ordering};

use smp::MAX_CPUS;
#[cfg(feature = "test-hooks")]
use x86_64::instructions::segmentation::{Segment, GS};
use x86_64::registers::control::Cr2;
use x86_64::registers::rflags::RFlags;
use x86_64::structures::idt::InterruptStackFrame;
use x86_64::{PrivilegeLevel, VirtAddr};

use crate::{fatal, gdt};

/// The gate ring-3 code leaves through (DPL 3, see `interrupts`).
pub const EXIT_VECTOR: u8 = 0x80;
/// Addresses ring-3 code may start at or use as a stack: the lower half.
#[cfg(feature = "test-hooks")]
const USER_END: u64 = 0x0000_8000_0000_0000;
const PAGE_FAULT: u8 = 14;
const NMI: u8 = 2;

/// How a ring-3 run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UserExit {
    /// The program executed `int 0x80`; `rax` is its result.
    Returned { rax: u64 },
    /// The program raised exception `vector` at `rip`. `cr2` is the
    /// faulting address for page faults and 0 for every other vector.
    Fault { vector: u8, error_code: u64, rip: u64, cr2: u64 },
}

/// Per CPU: the kernel stack pointer `usermode_landing` resumes on, or 0
/// when that CPU is not running ring-3 code.
static LANDING_RSP: [AtomicU64; MAX_CPUS] = [const { AtomicU64::new(0) }; MAX_CPUS];
/// Per CPU: how its current run ended (only that CPU touches its slot,
/// with interrupts masked, so the lock is never contended).
static EXIT: [spin::Mutex<Option<UserExit>>; MAX_CPUS] = [const { spin::Mutex::new(None) }; MAX_CPUS];

/// What `usermode_enter` loads; the first five fields are the `iretq`
/// frame in the order the instruction pops them.
#[cfg(feature = "test-hooks")]
#[repr(C)]
struct Entry {
    rip: u64,
    cs: u64,
    rflags: u64,
    rsp: u64,
    ss: u64,
    arg0: u64,
    arg1: u64,
}

/// What the `int 0x80` stub hands to `exit_gate`: ring-3 rax, then the
/// frame the CPU pushed.
#[repr(C)]
struct GateFrame {
    rax: u64,
    frame: InterruptStackFrame,
}

core::arch::global_asm!(
    // usermode_enter(entry: *const Entry, landing: *mut u64)
    // Returns only through usermode_landing.
    ".global usermode_enter",
    "usermode_enter:",
    "push rbp",
    "push rbx",
    "push r12",
    "push r13",
    "push r14",
    "push r15",
    // iretq to ring 3 nulls DS and ES (they hold a DPL-0 selector); keep
    // the kernel's to restore on the way back.
    "mov eax, ds",
    "push rax",
    "mov eax, es",
    "push rax",
    "mov [rsi], rsp",
    "push qword ptr [rdi + 32]", // ss
    "push qword ptr [rdi + 24]", // rsp
    "push qword ptr [rdi + 16]", // rflags
    "push qword ptr [rdi + 8]",  // cs
    "push qword ptr [rdi]",      // rip
    "mov rsi, [rdi + 48]",
    "mov rdi, [rdi + 40]",
    // Ring 3 gets its two arguments and zeros, never kernel values.
    "xor eax, eax",
    "xor ebx, ebx",
    "xor ecx, ecx",
    "xor edx, edx",
    "xor ebp, ebp",
    "xor r8d, r8d",
    "xor r9d, r9d",
    "xor r10d, r10d",
    "xor r11d, r11d",
    "xor r12d, r12d",
    "xor r13d, r13d",
    "xor r14d, r14d",
    "xor r15d, r15d",
    "iretq",
    ".global usermode_landing",
    "usermode_landing:", // entered by iretq in ring 0 with rsp = the recorded value
    "pop rax",
    "mov es, eax",
    "pop rax",
    "mov ds, eax",
    "pop r15",
    "pop r14",
    "pop r13",
    "pop r12",
    "pop rbx",
    "pop rbp",
    "ret",
    // The int 0x80 gate. The run is abandoned here, so the ring-3
    // registers need not survive; only rax (the result) is passed on.
    // The CPU aligned rsp to 16 and pushed 5 words; one more push makes
    // the call aligned.
    ".global usermode_exit_gate",
    "usermode_exit_gate:",
    "push rax",
    "mov rdi, rsp",
    "cld",
    "call {gate}",
    "add rsp, 8",
    "iretq",
    gate = sym exit_gate,
);

extern "C" {
    #[cfg(feature = "test-hooks")]
    fn usermode_enter(entry: *const Entry, landing: *mut u64);
    fn usermode_landing();
    fn usermode_exit_gate();
}

/// Address of the `int 0x80` entry, for the IDT.
pub fn exit_gate_addr() -> u64 {
    usermode_exit_gate as *const () as u64
}

/// Runs ring-3 code at `entry` with stack pointer `stack_top`, rdi = `arg0`
/// and rsi = `arg1`, in the address space CR3 holds now, until it executes
/// `int 0x80` (`Returned` with its rax) or raises an exception (`Fault`,
/// reported, not fatal). Interrupts are masked while it runs.
///
/// Panics if `entry` or `stack_top` is not a lower-half address, or if
/// called while this CPU is already running ring-3 code.
///
/// # Safety
/// The program may read and write every page mapped USER (and writable)
/// in the current address space: the caller must hold no reference into
/// memory behind such a page that a write would invalidate. The program
/// must end (it runs with interrupts masked, so a loop never does) and
/// must not load segment registers (see the module comment).
#[cfg(feature = "test-hooks")] // only the tests run ring-3 code
pub unsafe fn run_user(entry: u64, stack_top: u64, arg0: u64, arg1: u64) -> UserExit {
    assert!(entry < USER_END && stack_top < USER_END, "run_user({entry:#x}, {stack_top:#x}): not a lower-half address");
    // `gdt::load` leaves GS null; a DPL-0 selector there would be nulled by
    // iretq to ring 3, clearing the GS base that holds this CPU's data.
    assert!(GS::get_reg().index() == 0, "GS holds a selector; ring 3 would lose the per-CPU base");
    let sel = gdt::selectors();
    let frame = Entry {
        rip: entry,
        cs: u64::from(sel.user_code.0),
        rflags: RFlags::empty().bits(),
        rsp: stack_top,
        ss: u64::from(sel.user_data.0),
        arg0,
        arg1,
    };
    x86_64::instructions::interrupts::without_interrupts(|| {
        let cpu = smp::percpu::current_index();
        assert!(LANDING_RSP[cpu].load(Ordering::Relaxed) == 0, "run_user nested on cpu {cpu}");
        *EXIT[cpu].lock() = None;
        // Only this run's exit or fault can use the slot: it is this CPU's
        // own and interrupts are masked.
        // SAFETY: `usermode_enter` comes back through `usermode_landing` with the callee-saved
        // registers, DS, ES and rsp restored, as the C ABI wants; the slot is ours alone
        // (above); what ring 3 may touch is the caller's contract.
        unsafe { usermode_enter(&frame, LANDING_RSP[cpu].as_ptr()) };
        EXIT[cpu].lock().take().expect("landed from ring 3 without a recorded exit")
    })
}

/// Whether the interrupted code ran in ring 3.
pub fn from_ring3(frame: &InterruptStackFrame) -> bool {
    frame.code_segment.rpl() == PrivilegeLevel::Ring3
}

/// Called by exception handlers for an exception raised in ring 3: if
/// this CPU is in `run_user`, ends the run with `Fault` and returns true.
/// An NMI is not the program's doing, so it never ends a run this way.
pub fn exit_on_fault(frame: &mut InterruptStackFrame, vector: u8, error_code: u64, cr2: u64) -> bool {
    if vector == NMI {
        return false;
    }
    // CR2 keeps the last page fault's address; only a page fault sets it.
    let cr2 = if vector == PAGE_FAULT { cr2 } else { 0 };
    let rip = frame.instruction_pointer.as_u64();
    land(frame, UserExit::Fault { vector, error_code, rip, cr2 })
}

/// Rust side of the `int 0x80` gate.
extern "C" fn exit_gate(gate: &mut GateFrame) {
    let rax = gate.rax;
    if from_ring3(&gate.frame) && land(&mut gate.frame, UserExit::Returned { rax }) {
        return;
    }
    fatal::exception(EXIT_VECTOR, "int 0x80 outside run_user", None, &gate.frame, Cr2::read_raw())
}

/// Records `exit` and points `frame` at `usermode_landing` in ring 0, if
/// this CPU is in `run_user`.
fn land(frame: &mut InterruptStackFrame, exit: UserExit) -> bool {
    let cpu = smp::percpu::current_index();
    let rsp = LANDING_RSP[cpu].swap(0, Ordering::Relaxed);
    if rsp == 0 {
        return false;
    }
    *EXIT[cpu].lock() = Some(exit);
    let sel = gdt::selectors();
    // SAFETY: `rsp` was recorded by `usermode_enter` on this CPU, whose frame stays live
    // until the landing returns from it (only this swap clears the slot); the landing
    // expects that rsp in ring 0 with kernel segments; RFLAGS 0 keeps interrupts masked.
    unsafe {
        frame.as_mut().update(|f| {
            f.instruction_pointer = VirtAddr::new(usermode_landing as *const () as u64);
            f.code_segment = sel.kernel_code;
            f.cpu_flags = RFlags::empty();
            f.stack_pointer = VirtAddr::new(rsp);
            f.stack_segment = sel.kernel_data;
        });
    }
    true
}
