//! Touching memory that may fault: each probe runs one access under
//! `fault_catch::catch` and reports the page fault instead of dying. Only
//! the access itself runs with interrupts masked, so a CPU probing in a
//! loop still answers shootdown IPIs between probes.

use core::ptr;

use x86_64::structures::idt::PageFaultErrorCode;

use crate::fault_catch::{self, CaughtFault};

pub const PAGE_FAULT: u8 = 14;

/// Reads the word at `addr`.
pub fn read(addr: u64) -> Result<u64, CaughtFault> {
    let mut v = 0;
    // SAFETY: the closure holds no lock or guard and waits on nobody; it
    // performs one read, which either succeeds or faults into `catch`.
    unsafe { fault_catch::catch(PAGE_FAULT, || v = ptr::read_volatile(addr as *const u64)) }.map(|_| v)
}

/// Writes `value` to the word at `addr`.
pub fn write(addr: u64, value: u64) -> Result<(), CaughtFault> {
    // SAFETY: as for `read`, with one write. Callers only aim it at memory
    // they own or that must fault.
    unsafe { fault_catch::catch(PAGE_FAULT, || ptr::write_volatile(addr as *mut u64, value)) }
}

/// Calls the code at `addr` as `extern "C" fn() -> u64`.
pub fn call(addr: u64) -> Result<u64, CaughtFault> {
    let mut v = 0;
    // SAFETY: callers place a complete function there (or expect the
    // fetch to fault); the closure holds nothing.
    unsafe {
        fault_catch::catch(PAGE_FAULT, || {
            let f: extern "C" fn() -> u64 = core::mem::transmute(addr as usize);
            v = f();
        })
    }
    .map(|_| v)
}

/// The page-fault error code bits of a caught fault.
pub fn code(f: &CaughtFault) -> PageFaultErrorCode {
    PageFaultErrorCode::from_bits_truncate(f.error_code)
}
