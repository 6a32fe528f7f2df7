//! Exceptions a test expects are caught and reported, not fatal.

use core::ptr;

use mm::vm::{KMemFlags, PAGE_SIZE, STACK_AREA};
use x86_64::structures::idt::PageFaultErrorCode;

use super::{ensure, fails, register, Test, TestResult};
use crate::fault_catch;
use crate::guard_page::guard_page_of;
use crate::interrupts::ist_of;
use crate::vm;

const PAGE_FAULT: u8 = 14;
const INVALID_OPCODE: u8 = 6;
const NMI: u8 = 2;
const DOUBLE_FAULT: u8 = 8;

/// The first page of the stack area is a guard page: never mapped.
const GUARD: u64 = STACK_AREA.start;

register!(Test::expecting_fault("fault::unmapped_read_is_a_caught_page_fault", PAGE_FAULT, read_guard_page));
fn read_guard_page() -> TestResult {
    // SAFETY: none needed for soundness: the address is never mapped, so
    // the read faults and the harness unwinds before a value exists.
    let v = unsafe { ptr::read_volatile(GUARD as *const u64) };
    ensure!(false, "read of an unmapped page returned {v:#x}");
    Ok(())
}

register!(Test::new("fault::catch_reports_address_and_access", catch_reports_details));
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
    ensure!(
        !code.contains(PageFaultErrorCode::PROTECTION_VIOLATION),
        "not-present fault reported as protection: {code:?}"
    );
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

register!(Test::new("fault::invalid_opcode_is_caught", invalid_opcode));
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

register!(Test::new("fault::page_faults_run_on_the_current_stack", page_fault_gate));
/// A page fault can be taken while another is handled (an interrupt
/// during the first one's nap faults): on an IST stack the second would
/// start at the same top and overwrite the first's frame. So #PF stays on
/// the current stack, and a stack overflow (a #PF that cannot push its
/// frame) becomes a double fault, which has its own IST stack.
fn page_fault_gate() -> TestResult {
    let pf = ist_of(PAGE_FAULT);
    ensure!(
        pf == 0,
        "the page-fault gate switches to IST stack {pf}: a nested page fault would overwrite the first one's frame"
    );
    ensure!(
        ist_of(DOUBLE_FAULT) != 0,
        "the double-fault gate has no IST stack: a stack overflow could not be reported"
    );
    ensure!(ist_of(NMI) != 0, "the NMI gate has no IST stack");
    Ok(())
}

register!(Test::new("fault::stack_guard_pages_are_recognised", guard_pages));
/// What the double-fault report calls a stack overflow: CR2 in an
/// unmapped page right below mapped memory (the lock-free walk agrees with
/// the mappings made here).
fn guard_pages() -> TestResult {
    // The first stack mapped (the BSP's interrupt stacks) sits on GUARD.
    ensure!(
        guard_page_of(GUARD + 0x18) == Some(GUARD),
        "the stack area's first guard page {GUARD:#x}: {:?}",
        guard_page_of(GUARD + 0x18)
    );
    let local = 0u64;
    let here = &local as *const u64 as u64;
    ensure!(guard_page_of(here).is_none(), "this stack's own page {here:#x} taken for a guard page");
    let vm = vm::get();
    let a = vm.k_mem_map(PAGE_SIZE, KMemFlags::RW | KMemFlags::LOCK).map_err(fails)?;
    let (below, on) = (guard_page_of(a - 8), guard_page_of(a));
    vm.k_mem_unmap(a, PAGE_SIZE).map_err(fails)?;
    ensure!(below == Some(a - PAGE_SIZE) && on.is_none(), "region at {a:#x}: guard below {below:?}, its page {on:?}");
    // Once unmapped, nothing mapped is above that page any more.
    ensure!(guard_page_of(a - 8).is_none(), "an unmapped page with nothing above it taken for a guard page");
    ensure!(guard_page_of(0x0000_8000_0000_0000).is_none(), "a non-canonical address taken for a guard page");
    Ok(())
}
