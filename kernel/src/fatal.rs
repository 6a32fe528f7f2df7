//! The end of a failed run: report on serial and exit QEMU with the
//! failure code. Never returns, never hangs.

use core::panic::PanicInfo;

use drivers::qemu_exit::{exit, ExitCode};
use drivers::serial;
use x86_64::structures::idt::InterruptStackFrame;

fn cpu() -> usize {
    smp::percpu::current_index()
}

const DOUBLE_FAULT: u8 = 8;
const PAGE_FAULT: u8 = 14;

pub fn exception(vector: u8, name: &str, error_code: Option<u64>, frame: &InterruptStackFrame, cr2: u64) -> ! {
    let code = error_code.map_or(-1, |c| c as i64);
    serial::write_fmt_emergency(format_args!(
        "FATAL: cpu {} exception {vector} ({name}) error_code={code:#x} rip={:#x} cr2={cr2:#x} rsp={:#x}\n",
        cpu(),
        frame.instruction_pointer.as_u64(),
        frame.stack_pointer.as_u64(),
    ));
    if vector == PAGE_FAULT {
        if let Some(e) = crate::paging::peek_last_error() {
            serial::write_fmt_emergency(format_args!(
                "FATAL: cpu {}: paging's last refusal on this cpu: {e:?}\n",
                cpu()
            ));
        }
    }
    if vector == DOUBLE_FAULT {
        // Page faults run on the faulting stack, so one that cannot push
        // its frame (the stack ran into its guard page) ends here, on the
        // double fault's own stack, with CR2 in that guard page.
        match crate::guard_page::guard_page_of(cr2) {
            Some(page) => serial::write_fmt_emergency(format_args!(
                "FATAL: cpu {}: kernel stack overflow: cr2 {cr2:#x} is in the unmapped page {page:#x} right below mapped memory, a stack's guard page\n",
                cpu()
            )),
            None => serial::write_fmt_emergency(format_args!("FATAL: cpu {}: cr2 {cr2:#x} is not in a stack guard page\n", cpu())),
        }
    }
    exit(ExitCode::Failure)
}

#[panic_handler]
fn panic(info: &PanicInfo) -> ! {
    serial::write_fmt_emergency(format_args!("FATAL: cpu {} panicked: {info}\n", cpu()));
    exit(ExitCode::Failure)
}
