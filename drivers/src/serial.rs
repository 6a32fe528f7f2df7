//! The COM1 UART (16550), shared by all CPUs behind one short lock.
//!
//! Writers hold the lock for one whole line so lines from different CPUs
//! never interleave. The lock is taken with interrupts off: an interrupt
//! handler that logs on the same CPU would otherwise deadlock.

use core::fmt::{self, Write};
use spin::Mutex;
use uart_16550::SerialPort;

const COM1: u16 = 0x3F8;

static PORT: Mutex<Option<SerialPort>> = Mutex::new(None);

/// Programs the UART (115200 8N1, FIFOs on). Call once on the BSP.
pub fn init() {
    // SAFETY: 0x3F8 is the standard COM1 port on the PC platform and no
    // other code in the kernel touches these ports.
    let mut port = unsafe { SerialPort::new(COM1) };
    port.init();
    *PORT.lock() = Some(port);
}

/// Writes `args` as one unit. Output before `init` is dropped.
pub fn write_fmt(args: fmt::Arguments) {
    x86_64::instructions::interrupts::without_interrupts(|| {
        if let Some(port) = PORT.lock().as_mut() {
            let _ = port.write_fmt(args);
        }
    });
}

/// For the panic and fatal-exception paths: takes the lock if it can within
/// a bounded spin, and otherwise breaks it. A CPU that died holding the lock
/// must not stop another from reporting why the run failed.
pub fn write_fmt_emergency(args: fmt::Arguments) {
    for _ in 0..10_000_000 {
        if let Some(mut guard) = PORT.try_lock() {
            if let Some(port) = guard.as_mut() {
                let _ = port.write_fmt(args);
            }
            return;
        }
        core::hint::spin_loop();
    }
    // SAFETY: the holder has not released the lock in ~10^7 spins; it is
    // stuck or dead. Interleaved bytes are acceptable on this path, a hang
    // is not.
    unsafe { PORT.force_unlock() };
    if let Some(port) = PORT.lock().as_mut() {
        let _ = port.write_fmt(args);
    }
}
