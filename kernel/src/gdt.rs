//! Per-CPU GDT and TSS. Each CPU's TSS carries its own interrupt stacks
//! (IST) for the exceptions that must not run on a possibly broken stack.

use spin::Once;
use x86_64::instructions::segmentation::{Segment, CS, DS, ES, SS};
use x86_64::instructions::tables::load_tss;
use x86_64::structures::gdt::{Descriptor, GlobalDescriptorTable, SegmentSelector};
use x86_64::structures::tss::TaskStateSegment;
use x86_64::VirtAddr;

use smp::MAX_CPUS;

/// IST slots (1-based in hardware, 0-based in the TSS array).
pub const DOUBLE_FAULT_IST: u16 = 0;
pub const NMI_IST: u16 = 1;
/// Page faults get their own stack so a kernel stack overflow (a fault on
/// the guard page) can still be reported.
pub const PAGE_FAULT_IST: u16 = 2;
pub const IST_COUNT: usize = 3;

/// Tops of a CPU's IST stacks, allocated on the BSP before the CPU starts.
#[derive(Clone, Copy)]
pub struct IstStacks(pub [u64; IST_COUNT]);

struct CpuTables {
    gdt: GlobalDescriptorTable,
    code: SegmentSelector,
    data: SegmentSelector,
    tss: SegmentSelector,
}

static TSS: [Once<TaskStateSegment>; MAX_CPUS] = [const { Once::new() }; MAX_CPUS];
static TABLES: [Once<CpuTables>; MAX_CPUS] = [const { Once::new() }; MAX_CPUS];

/// Builds and loads CPU `cpu`'s GDT and TSS. Runs once on that CPU.
pub fn load(cpu: usize, stacks: IstStacks) {
    let tss = TSS[cpu].call_once(|| {
        let mut tss = TaskStateSegment::new();
        for (slot, top) in stacks.0.iter().enumerate() {
            tss.interrupt_stack_table[slot] = VirtAddr::new(*top);
        }
        tss
    });
    let tables = TABLES[cpu].call_once(|| {
        let mut gdt = GlobalDescriptorTable::new();
        let code = gdt.append(Descriptor::kernel_code_segment());
        let data = gdt.append(Descriptor::kernel_data_segment());
        let tss = gdt.append(Descriptor::tss_segment(tss));
        CpuTables { gdt, code, data, tss }
    });
    tables.gdt.load();
    // SAFETY: the selectors index the GDT just loaded, which is 'static, and
    // name a 64-bit code segment, a data segment and an unused TSS.
    unsafe {
        CS::set_reg(tables.code);
        DS::set_reg(tables.data);
        ES::set_reg(tables.data);
        SS::set_reg(tables.data);
        load_tss(tables.tss);
    }
}
