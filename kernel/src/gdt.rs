//! Per-CPU GDT and TSS. Each CPU's TSS carries its own interrupt stacks:
//! IST stacks for the exceptions that must not run on a possibly broken
//! stack, and the ring-0 stack (rsp0) the CPU switches to when an
//! interrupt or exception arrives from ring 3.

use spin::Once;
use x86_64::instructions::segmentation::{Segment, CS, DS, ES, FS, GS, SS};
use x86_64::instructions::tables::load_tss;
use x86_64::registers::model_specific::GsBase;
use x86_64::structures::gdt::{Descriptor, GlobalDescriptorTable, SegmentSelector};
use x86_64::structures::tss::TaskStateSegment;
use x86_64::VirtAddr;

use cpus::PerCpu;

/// IST slots (1-based in hardware, 0-based in the TSS array). Only
/// exceptions that never nest get one: a second exception of the same
/// vector would start at the same stack top, over the first one's frame.
/// Page faults do nest (a fault handler may nap with interrupts on, and an
/// interrupt handler may fault), so they run on the current stack, as in
/// Linux; a kernel stack overflow is then a page fault that cannot push
/// its frame, which the CPU turns into a double fault, and that is
/// reported from its own stack.
pub const DOUBLE_FAULT_IST: u16 = 0;
pub const NMI_IST: u16 = 1;
pub const IST_COUNT: usize = 2;

/// Tops of a CPU's interrupt stacks, allocated on the BSP before the CPU
/// starts.
#[derive(Clone, Copy)]
pub struct InterruptStacks {
    pub ist: [u64; IST_COUNT],
    /// Where interrupts from ring 3 start (TSS rsp0).
    pub rsp0: u64,
}

/// The segment selectors, the same on every CPU (each GDT is built in the
/// same order). User selectors carry RPL 3.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Selectors {
    pub kernel_code: SegmentSelector,
    pub kernel_data: SegmentSelector,
    pub user_data: SegmentSelector,
    pub user_code: SegmentSelector,
    pub tss: SegmentSelector,
}

struct CpuTables {
    gdt: GlobalDescriptorTable,
    selectors: Selectors,
}

/// Each CPU's TSS and GDT, built once by that CPU. Reached by index without
/// a `CpuGuard`: a `Once` is set and read with atomic operations, which an
/// interrupt on the same CPU cannot tear.
static TSS: PerCpu<Once<TaskStateSegment>> = cpus::per_cpu![Once::new()];
static TABLES: PerCpu<Once<CpuTables>> = cpus::per_cpu![Once::new()];

/// Builds and loads CPU `cpu`'s GDT and TSS, and leaves null selectors in
/// FS and GS (see below). Runs once on that CPU, with interrupts masked.
pub fn load(cpu: usize, stacks: InterruptStacks) {
    let tss = TSS.unguarded(cpu).call_once(|| {
        let mut tss = TaskStateSegment::new();
        for (slot, top) in stacks.ist.iter().enumerate() {
            tss.interrupt_stack_table[slot] = VirtAddr::new(*top);
        }
        tss.privilege_stack_table[0] = VirtAddr::new(stacks.rsp0);
        tss
    });
    let tables = TABLES.unguarded(cpu).call_once(|| {
        let mut gdt = GlobalDescriptorTable::new();
        // User data right after kernel data, then user code: the order
        // `sysret` would need, should the kernel ever use it.
        let kernel_code = gdt.append(Descriptor::kernel_code_segment());
        let kernel_data = gdt.append(Descriptor::kernel_data_segment());
        let user_data = gdt.append(Descriptor::user_data_segment());
        let user_code = gdt.append(Descriptor::user_code_segment());
        let tss = gdt.append(Descriptor::tss_segment(tss));
        CpuTables { gdt, selectors: Selectors { kernel_code, kernel_data, user_data, user_code, tss } }
    });
    tables.gdt.load();
    let sel = tables.selectors;
    // SAFETY: the selectors index the GDT just loaded, which is 'static, and
    // name a 64-bit code segment, a data segment and an unused TSS.
    unsafe {
        CS::set_reg(sel.kernel_code);
        DS::set_reg(sel.kernel_data);
        ES::set_reg(sel.kernel_data);
        SS::set_reg(sel.kernel_data);
        load_tss(sel.tss);
    }
    // The firmware may leave a selector in FS or GS (UEFI does). `iretq` to
    // ring 3 replaces a DPL-0 one with null and clears its base, and the GS
    // base holds this CPU's data, so both are made null here, once; loading
    // null clears the base too, hence the GS base is put back.
    let gs_base = GsBase::read();
    // SAFETY: null selectors are valid in FS and GS in 64-bit mode; nothing
    // uses per-CPU data until the GS base is restored (interrupts are
    // masked, and the kernel does not use FS).
    unsafe {
        FS::set_reg(SegmentSelector(0));
        GS::set_reg(SegmentSelector(0));
    }
    GsBase::write(gs_base);
}

/// The running CPU's selectors. Panics before `load` ran on it.
pub fn selectors() -> Selectors {
    TABLES.unguarded(smp::percpu::current_index()).get().expect("GDT not loaded on this CPU").selectors
}
