//! The IDT shared by all CPUs: exception handlers that report and fail the
//! run (unless a test is catching that fault, or ring-3 code raised it),
//! the IPI vectors, and the gate ring-3 code exits through.

use core::sync::atomic::{AtomicU32, Ordering};

use cpus::PerCpu;
use spin::LazyLock;
use x86_64::registers::control::Cr2;
use x86_64::structures::idt::{InterruptDescriptorTable, InterruptStackFrame, PageFaultErrorCode};
use x86_64::{PrivilegeLevel, VirtAddr};

use crate::fatal;
#[cfg(feature = "test-hooks")]
use crate::fault_catch;
use crate::gdt::{DOUBLE_FAULT_IST, NMI_IST};
use crate::usermode;
use crate::workers;

/// Vector used by the IPI tests (test image only).
#[cfg(feature = "test-hooks")]
pub const TEST_VECTOR: u8 = 0xF2;

static IDT: LazyLock<InterruptDescriptorTable> = LazyLock::new(|| {
    let mut idt = InterruptDescriptorTable::new();
    idt.divide_error.set_handler_fn(divide_error);
    idt.debug.set_handler_fn(debug);
    idt.breakpoint.set_handler_fn(breakpoint);
    idt.overflow.set_handler_fn(overflow);
    idt.bound_range_exceeded.set_handler_fn(bound_range);
    idt.invalid_opcode.set_handler_fn(invalid_opcode);
    idt.device_not_available.set_handler_fn(device_not_available);
    idt.invalid_tss.set_handler_fn(invalid_tss);
    idt.segment_not_present.set_handler_fn(segment_not_present);
    idt.stack_segment_fault.set_handler_fn(stack_segment_fault);
    idt.general_protection_fault.set_handler_fn(general_protection);
    idt.x87_floating_point.set_handler_fn(x87_floating_point);
    idt.alignment_check.set_handler_fn(alignment_check);
    idt.simd_floating_point.set_handler_fn(simd_floating_point);
    // SAFETY: the IST indexes name stacks every CPU's TSS provides (gdt.rs).
    unsafe {
        idt.double_fault.set_handler_fn(double_fault).set_stack_index(DOUBLE_FAULT_IST);
        idt.non_maskable_interrupt.set_handler_fn(nmi).set_stack_index(NMI_IST);
    }
    // No IST: page faults nest (see gdt.rs); an overflow becomes #DF.
    idt.page_fault.set_handler_fn(page_fault);
    idt.machine_check.set_handler_fn(machine_check);
    idt[smp::ipi::CROSS_CALL_VECTOR].set_handler_fn(cross_call);
    idt[workers::WAKE_VECTOR].set_handler_fn(wake);
    #[cfg(feature = "test-hooks")]
    idt[TEST_VECTOR].set_handler_fn(test_ipi);
    idt[drivers::lapic::ERROR_VECTOR].set_handler_fn(apic_error);
    idt[drivers::lapic::SPURIOUS_VECTOR].set_handler_fn(spurious);
    idt[drivers::pic::SPURIOUS_MASTER].set_handler_fn(spurious);
    idt[drivers::pic::SPURIOUS_SLAVE].set_handler_fn(spurious);
    idt[drivers::lapic::TIMER_VECTOR].set_handler_fn(apic_timer);
    // SAFETY: the address is the `int 0x80` stub in `usermode`, which takes
    // the frame of an interrupt without error code and ends with `iretq`;
    // DPL 3 lets ring 3 raise it with `int`.
    unsafe {
        idt[usermode::EXIT_VECTOR]
            .set_handler_addr(VirtAddr::new(usermode::exit_gate_addr()))
            .set_privilege_level(PrivilegeLevel::Ring3);
    }
    idt
});

/// Loads the IDT on the running CPU.
pub fn load() {
    IDT.load();
}

/// Reports an exception and ends the run, unless ring-3 code under
/// `run_user` raised it (the run ends instead) or a test catches it. An
/// exception from ring 3 is never offered to `fault_catch`, which guards
/// kernel code.
fn exception(frame: &mut InterruptStackFrame, vector: u8, name: &str, error_code: Option<u64>) {
    let cr2 = Cr2::read_raw();
    let code = error_code.unwrap_or(0);
    let handled = if usermode::from_ring3(frame) {
        usermode::exit_on_fault(frame, vector, code, cr2)
    } else {
        caught_by_test(frame, vector, code, cr2)
    };
    if handled {
        return;
    }
    fatal::exception(vector, name, error_code, frame, cr2)
}

/// Whether a test expecting this exception catches it (`fault_catch`).
#[cfg(feature = "test-hooks")]
fn caught_by_test(frame: &mut InterruptStackFrame, vector: u8, code: u64, cr2: u64) -> bool {
    fault_catch::try_recover(frame, vector, code, cr2)
}

/// The production image has no tests, so nothing catches an exception.
#[cfg(not(feature = "test-hooks"))]
fn caught_by_test(_frame: &mut InterruptStackFrame, _vector: u8, _code: u64, _cr2: u64) -> bool {
    false
}

macro_rules! handlers {
    ($($name:ident => $vector:literal, $text:literal;)*) => {$(
        extern "x86-interrupt" fn $name(mut frame: InterruptStackFrame) {
            exception(&mut frame, $vector, $text, None);
        }
    )*};
}

macro_rules! handlers_with_code {
    ($($name:ident => $vector:literal, $text:literal;)*) => {$(
        extern "x86-interrupt" fn $name(mut frame: InterruptStackFrame, code: u64) {
            exception(&mut frame, $vector, $text, Some(code));
        }
    )*};
}

handlers! {
    divide_error => 0, "divide error";
    debug => 1, "debug";
    breakpoint => 3, "breakpoint";
    overflow => 4, "overflow";
    bound_range => 5, "bound range exceeded";
    invalid_opcode => 6, "invalid opcode";
    device_not_available => 7, "device not available";
    x87_floating_point => 16, "x87 floating point";
    simd_floating_point => 19, "SIMD floating point";
}

handlers_with_code! {
    invalid_tss => 10, "invalid TSS";
    segment_not_present => 11, "segment not present";
    stack_segment_fault => 12, "stack-segment fault";
    general_protection => 13, "general protection fault";
    alignment_check => 17, "alignment check";
}

/// Per CPU: page faults being handled now (more than one when a fault is
/// taken while handling another, e.g. by an interrupt during a nap).
/// Reached by index without a `CpuGuard`: nesting on the same CPU is what
/// it counts, and each update is one atomic operation.
static PAGE_FAULT_DEPTH: PerCpu<AtomicU32> = cpus::per_cpu![AtomicU32::new(0)];

/// How many page faults this CPU is handling at the moment (for the tests).
#[cfg(feature = "test-hooks")]
pub fn page_fault_depth() -> u32 {
    PAGE_FAULT_DEPTH.unguarded(smp::percpu::current_index()).load(Ordering::Relaxed)
}

extern "x86-interrupt" fn page_fault(mut frame: InterruptStackFrame, code: PageFaultErrorCode) {
    let depth = PAGE_FAULT_DEPTH.unguarded(smp::percpu::current_index());
    depth.fetch_add(1, Ordering::Relaxed);
    let addr = Cr2::read_raw();
    // A user address the running space maps but this CPU's replica does
    // not link yet (either ring); else kernel code touching an on-demand
    // page: page it in. Either way, retry the access.
    let resolved = crate::vm::try_get().is_some_and(|vm| vm.soft_fault(addr))
        || (!usermode::from_ring3(&frame) && crate::paging::resolve_fault(addr, code.bits()));
    if !resolved {
        exception(&mut frame, 14, "page fault", Some(code.bits()));
    }
    depth.fetch_sub(1, Ordering::Relaxed);
}

/// The IST slot (1-based, 0 for none: the current stack) the loaded IDT
/// gives `vector`, as the CPU reads it (for the tests).
#[cfg(feature = "test-hooks")]
pub fn ist_of(vector: u8) -> u16 {
    let idt = x86_64::instructions::tables::sidt();
    // Gate descriptors are 16 bytes; bits 0..3 of the word at byte 4 are
    // the IST index.
    let options = idt.base.as_u64() + u64::from(vector) * 16 + 4;
    // SAFETY: `sidt` names the IDT this CPU uses, a 'static table of 256
    // gates (`IDT`), so the word read lies inside it and is initialised.
    (unsafe { (options as *const u16).read_volatile() }) & 0b111
}

extern "x86-interrupt" fn nmi(mut frame: InterruptStackFrame) {
    exception(&mut frame, 2, "non-maskable interrupt", None);
}

extern "x86-interrupt" fn double_fault(frame: InterruptStackFrame, code: u64) -> ! {
    fatal::exception(8, "double fault", Some(code), &frame, Cr2::read_raw())
}

extern "x86-interrupt" fn machine_check(frame: InterruptStackFrame) -> ! {
    fatal::exception(18, "machine check", None, &frame, Cr2::read_raw())
}

extern "x86-interrupt" fn cross_call(_frame: InterruptStackFrame) {
    smp::ipi::handle_cross_call_interrupt();
}

extern "x86-interrupt" fn wake(_frame: InterruptStackFrame) {
    // Only wakes the CPU from `hlt`; the idle loop looks for work.
    smp::percpu::with_local_apic(|l| l.end_of_interrupt());
}

#[cfg(feature = "test-hooks")]
extern "x86-interrupt" fn test_ipi(_frame: InterruptStackFrame) {
    crate::tests::ipi::received();
    smp::percpu::with_local_apic(|l| l.end_of_interrupt());
}

extern "x86-interrupt" fn apic_error(_frame: InterruptStackFrame) {
    log::error!("local APIC error interrupt");
    smp::percpu::with_local_apic(|l| l.end_of_interrupt());
}

extern "x86-interrupt" fn apic_timer(_frame: InterruptStackFrame) {
    smp::percpu::with_local_apic(|l| l.end_of_interrupt());
}

extern "x86-interrupt" fn spurious(_frame: InterruptStackFrame) {
    // Spurious interrupts must not be acknowledged.
}
