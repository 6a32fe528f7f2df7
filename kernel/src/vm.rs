//! The kernel's virtual memory: `mm::vm::Vm` over the bootloader's page
//! tables (adopted as the kernel space), reaching tables through the direct
//! map, taking frames from the boot allocator until the frame allocator
//! runs, and shooting down with `smp::tlb`.

use mm::direct_map::DirectMap;
use mm::frame::{Frame, FrameError};
use mm::vm::{Root, ShootdownFailed, Table, Vm, VmPlatform};
use smp::tlb;
use smp::{percpu, CpuSet};
use spin::Once;
use x86_64::registers::control::{Cr3, Cr3Flags};
use x86_64::structures::paging::PhysFrame;

use crate::{frames, memory};

pub struct KernelVm {
    direct: DirectMap,
}

static VM: Once<Vm<KernelVm>> = Once::new();

/// The virtual-memory manager. Panics before `init`.
pub fn get() -> &'static Vm<KernelVm> {
    VM.get().expect("vm used before vm::init")
}

/// The virtual-memory manager, once `init` has run (for handlers that may
/// run before: page faults, naps).
pub fn try_get() -> Option<&'static Vm<KernelVm>> {
    VM.get()
}

/// Adopts the running page tables as the kernel space.
///
/// # Safety
/// Once, on the BSP, with the direct-map offset, after `memory::init`.
pub unsafe fn init(phys_offset: u64) {
    // SAFETY: per this function's contract, the offset is the direct map's.
    let direct = unsafe { DirectMap::new(phys_offset) };
    let (root, _) = Cr3::read();
    let vm = Vm::new(KernelVm { direct }, root.start_address()).expect("no frame for the kernel area's table");
    VM.call_once(|| vm);
}

impl VmPlatform for KernelVm {
    fn table(&self, phys: x86_64::PhysAddr) -> &Table {
        // SAFETY: only `Vm`'s walks call this (`Vm::platform` is
        // crate-private), with frames it installed as page tables, which it
        // frees only after detaching them and a shootdown.
        unsafe { self.direct.table(phys) }
    }

    fn fill_frame(&self, frame: &mut Frame, byte: u8) {
        self.direct.fill_frame(frame, byte)
    }

    fn copy_frame(&self, from: &Frame, to: &mut Frame) {
        self.direct.copy_frame(from, to)
    }

    fn alloc_frame(&self) -> Result<Frame, FrameError> {
        if frames::ready() {
            frames::get().alloc_page()
        } else {
            memory::boot_frame().ok_or(FrameError::OutOfMemory)
        }
    }

    fn free_frame(&self, frame: Frame) -> Result<(), FrameError> {
        if !frames::ready() {
            // Boot-allocator frames are never given back.
            return Err(FrameError::Reserved { phys: frame.into_phys() });
        }
        frames::get().free_page(frame)
    }

    fn table_cpus(&self, table: x86_64::PhysAddr) -> Option<&cpus::AtomicCpuSet> {
        let db = frames::ready().then(|| frames::get().db())?;
        db.index_of(table).ok().map(|i| &db.entry(i).table_cpus)
    }

    fn cpu_index(&self) -> usize {
        percpu::current_index()
    }

    fn online_cpus(&self) -> CpuSet {
        percpu::online_set()
    }

    fn shootdown(&self, targets: CpuSet, start: mm::vm::VirtAddr, pages: u64) -> Result<(), ShootdownFailed> {
        let start = start.as_u64();
        #[cfg(feature = "test-hooks")]
        let targets = skip_hook::apply(targets, start);
        tlb::shootdown(targets, start, pages).map_err(|e| {
            log::error!("shootdown of {pages} pages at {start:#x} to {targets:?} failed: {e:?}");
            ShootdownFailed { cpus: e.unconfirmed(targets) }
        })
    }

    fn free_frames(&self) -> u64 {
        if frames::ready() {
            frames::get().free_bytes() / mm::PAGE_SIZE
        } else {
            0
        }
    }

    fn now_ns(&self) -> u64 {
        drivers::tsc::now_ns()
    }

    fn wait_step(&self, waited: mm::vm::Waited) {
        crate::wait::step(waited);
    }

    fn without_interrupts<R>(&self, f: impl FnOnce() -> R) -> R {
        x86_64::instructions::interrupts::without_interrupts(f)
    }

    fn load_root(&self, root: &Root) {
        let frame = PhysFrame::containing_address(root.phys());
        // SAFETY: only `Vm` makes a `Root`, for a PML4 whose upper half is
        // the kernel's (copied from the kernel space, or the kernel space's
        // own), so the code, stack and data running now stay mapped across
        // the switch.
        unsafe { Cr3::write(frame, Cr3Flags::empty()) };
    }
}

/// Test hook: user-space shootdowns leave out one CPU, so a test can show
/// that a workload's stale-translation check catches a shootdown that
/// skips a CPU (`bench::vm_global_catches_a_skipped_cpu`). Only user
/// addresses: a kernel translation left behind could write freed memory.
#[cfg(feature = "test-hooks")]
pub mod skip_hook {
    use core::sync::atomic::{AtomicUsize, Ordering};
    use smp::CpuSet;

    const NONE: usize = usize::MAX;
    static SKIP: AtomicUsize = AtomicUsize::new(NONE);

    /// From now on user-space shootdowns skip `cpu` (`None`: none).
    pub fn set(cpu: Option<usize>) {
        SKIP.store(cpu.unwrap_or(NONE), Ordering::SeqCst);
    }

    pub(super) fn apply(targets: CpuSet, start: u64) -> CpuSet {
        match SKIP.load(Ordering::Relaxed) {
            cpu if cpu != NONE && start < mm::vm::USER_END => targets.without(cpu),
            _ => targets,
        }
    }
}
