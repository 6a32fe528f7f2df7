//! Window marks for the sharing tracer (`cargo xtask bench --trace`, the
//! `tracer` crate). A mark is one multi-byte NOP with a displacement no
//! compiler emits (`nop dword ptr [rax + rax*1 + 0x5ace7ace]`) and the
//! payload in RAX; the tracer recognises the bytes when QEMU translates
//! them and reads RAX when they run. Without the tracer it is a NOP: no
//! memory access, no flags, no exit to QEMU, so marks cost nothing
//! measurable when not tracing.
//!
//! Payload (the tracer's `decode::Mark`): bits 48-63 the tag 0x7ace,
//! bit 32 begin (1) or end (0), bits 0-31 the window's sequence number.

const TAG: u64 = 0x7ace << 48;

pub fn mark(begin: bool, seq: u32) {
    let payload = TAG | u64::from(begin) << 32 | u64::from(seq);
    // SAFETY: a NOP: its memory operand is never accessed and it changes no
    // register or flag; RAX is only an input.
    unsafe {
        core::arch::asm!(
            "nop dword ptr [rax + rax*1 + 0x5ace7ace]",
            in("rax") payload,
            options(nomem, nostack, preserves_flags),
        );
    }
}
