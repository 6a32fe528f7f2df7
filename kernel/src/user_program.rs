//! A small ring-3 program for `usermode::run_user`, kept in the kernel
//! image as bytes (never executed there) to be copied into a user page.
//!
//! It is position-independent (registers only) and has several entry
//! points at fixed offsets, which `.org` enforces: the assembler refuses
//! the file if an entry outgrows its slot. Every entry first increments
//! the u64 at `[rdi]` (so a caller can see the program ran), keeps the new
//! value in rax, and then:
//!
//! - `READ_PROBE`: reads the u64 at `[rsi]` unless rsi is 0, then exits;
//! - `WRITE_PROBE`: writes rax to `[rsi]` unless rsi is 0, then exits;
//! - `EXEC_PROBE`: jumps to rsi;
//! - `PRIVILEGED`: executes `cli`, which ring 3 may not (#GP).
//!
//! "Exits" means `int 0x80` with rax as the result. A `ud2` follows each
//! exit, so a kernel that wrongly resumed the program would see a fault.
//! `KERNEL_RET` is a lone `ret`, not for ring 3: the kernel calls it to
//! show that SMEP stops it from executing a user page (if SMEP did not,
//! the call would simply return).

/// Entry offsets from the start of the program.
pub const READ_PROBE: u64 = 0;
pub const WRITE_PROBE: u64 = 64;
pub const EXEC_PROBE: u64 = 128;
pub const PRIVILEGED: u64 = 192;
pub const KERNEL_RET: u64 = 256;

core::arch::global_asm!(
    ".pushsection .rodata.user_program, \"a\"",
    ".balign 64",
    ".global user_program_start",
    ".global user_program_end",
    "user_program_start:",
    // READ_PROBE
    "mov rax, qword ptr [rdi]",
    "add rax, 1",
    "mov qword ptr [rdi], rax",
    "test rsi, rsi",
    "jz 2f",
    "mov rdx, qword ptr [rsi]",
    "2:",
    "int 0x80",
    "ud2",
    // WRITE_PROBE
    ".org user_program_start + 64, 0xcc",
    "mov rax, qword ptr [rdi]",
    "add rax, 1",
    "mov qword ptr [rdi], rax",
    "test rsi, rsi",
    "jz 2f",
    "mov qword ptr [rsi], rax",
    "2:",
    "int 0x80",
    "ud2",
    // EXEC_PROBE
    ".org user_program_start + 128, 0xcc",
    "mov rax, qword ptr [rdi]",
    "add rax, 1",
    "mov qword ptr [rdi], rax",
    "jmp rsi",
    // PRIVILEGED
    ".org user_program_start + 192, 0xcc",
    "mov rax, qword ptr [rdi]",
    "add rax, 1",
    "mov qword ptr [rdi], rax",
    "cli",
    "int 0x80",
    "ud2",
    // KERNEL_RET
    ".org user_program_start + 256, 0xcc",
    "ret",
    "user_program_end:",
    ".popsection",
);

extern "C" {
    static user_program_start: u8;
    static user_program_end: u8;
}

/// The program's bytes.
pub fn user_program() -> &'static [u8] {
    let (start, end) = (core::ptr::addr_of!(user_program_start), core::ptr::addr_of!(user_program_end));
    // SAFETY: both labels are in the same read-only section of the kernel
    // image, `end` after `start`, and the bytes between them never change.
    unsafe { core::slice::from_raw_parts(start, end as usize - start as usize) }
}
