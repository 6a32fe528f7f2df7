//! Leaves QEMU with a status the host can decode, via the `isa-debug-exit`
//! device xtask attaches at port 0xf4. QEMU exits with `(value << 1) | 1`,
//! so 0x10 becomes 33 and 0x11 becomes 35: codes QEMU itself never uses.

use x86_64::instructions::port::Port;

const DEBUG_EXIT_PORT: u16 = 0xf4;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum ExitCode {
    Success = 0x10,
    Failure = 0x11,
}

/// Exits QEMU. Without the device (real hardware) the CPU halts forever
/// with interrupts off.
pub fn exit(code: ExitCode) -> ! {
    // SAFETY: port 0xf4 is only ever the debug-exit device in our QEMU
    // configuration; on other machines an unclaimed port write is ignored.
    unsafe { Port::<u32>::new(DEBUG_EXIT_PORT).write(code as u32) };
    loop {
        x86_64::instructions::interrupts::disable();
        x86_64::instructions::hlt();
    }
}
