//! Exceptions a test expects are caught and reported, not fatal.

use core::ptr;

use mm::vm::STACK_AREA;
use x86_64::structures::idt::PageFaultErrorCode;

use super::{ensure, Test, TestResult};
use crate::fault_catch;

const PAGE_FAULT: u8 = 14;
const INVALID_OPCODE: u8 = 6;

/// The first page of the stack area is a guard page: never mapped.
const GUARD: u64 = STACK_AREA.start;

pub const TESTS: &[Test] = &[
    Test::expecting_fault("fault::unmapped_read_is_a_caught_page_fault", PAGE_FAULT, read_guard_page),
    Test::new("fault::catch_reports_address_and_access", catch_reports_details),
    Test::new("fault::invalid_opcode_is_caught", invalid_opcode),
];

fn read_guard_page() -> TestResult {
    // SAFETY: none needed for soundness: the address is never mapped, so
    // the read faults and the harness unwinds before a value exists.
    let v = unsafe { ptr::read_volatile(GUARD as *const u64) };
    ensure!(false, "read of an unmapped page returned {v:#x}");
    Ok(())
}

fn catch_reports_details() -> TestResult {
    let addr = GUARD + 0x18;
    // SAFETY: the closure holds nothing and only performs the faulting
    // read (the page is unmapped), which `catch` turns into an error.
    let read = unsafe {
        fault_catch::catch(PAGE_FAULT, || {
            ptr::read_volatile(addr as *const u64);
        })
    };
    let Err(f) = read else {
        ensure!(false, "read of {addr:#x} did not fault");
        return Ok(());
    };
    let code = PageFaultErrorCode::from_bits_truncate(f.error_code);
    ensure!(f.vector == PAGE_FAULT && f.cr2 == addr, "fault {f:?} does not name {addr:#x}");
    ensure!(!code.contains(PageFaultErrorCode::PROTECTION_VIOLATION), "not-present fault reported as protection: {code:?}");
    ensure!(!code.contains(PageFaultErrorCode::CAUSED_BY_WRITE), "read reported as write: {code:?}");

    // SAFETY: as above, with a write.
    let write = unsafe {
        fault_catch::catch(PAGE_FAULT, || {
            ptr::write_volatile(addr as *mut u64, 1);
        })
    };
    let Err(f) = write else {
        ensure!(false, "write to {addr:#x} did not fault");
        return Ok(());
    };
    let code = PageFaultErrorCode::from_bits_truncate(f.error_code);
    ensure!(code.contains(PageFaultErrorCode::CAUSED_BY_WRITE), "write reported as read: {code:?}");
    // Nothing is caught outside `catch`: a normal closure returns Ok.
    // SAFETY: an empty closure holds nothing and cannot fault.
    let nothing = unsafe { fault_catch::catch(PAGE_FAULT, || {}) };
    ensure!(nothing.is_ok(), "catch reported a fault that did not happen");
    Ok(())
}

fn invalid_opcode() -> TestResult {
    // SAFETY: `ud2` raises #UD, which `catch` turns into an error; the
    // closure holds nothing.
    let r = unsafe {
        fault_catch::catch(INVALID_OPCODE, || {
            core::arch::asm!("ud2");
        })
    };
    ensure!(matches!(r, Err(f) if f.vector == INVALID_OPCODE), "ud2 gave {r:?}");
    Ok(())
}
