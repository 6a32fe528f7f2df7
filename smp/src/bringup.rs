//! Starting the CPUs: the BSP becomes CPU 0, then each AP from the MADT is
//! woken with INIT-SIPI-SIPI, one at a time, each with a bounded wait.
//!
//! An AP that never answers is reported by APIC id, put back to sleep with
//! an INIT, and boot goes on with the others.

use core::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use drivers::lapic::Lapic;
use drivers::tsc;
use x86_64::registers::control::{Cr0, Cr3, Cr4, Cr4Flags};
use x86_64::registers::model_specific::Efer;

use crate::percpu::{self, CpuArea, CpuState};
use crate::trampoline::{Trampoline, SIPI_PAGE};
use cpus::MAX_CPUS;

pub use crate::trampoline::TRAMPOLINE_RESERVED;

/// Kernel code run on every AP during bring-up.
#[derive(Clone, Copy)]
pub struct ApHooks {
    /// Loads this CPU's GDT, TSS and IDT. Runs before the AP is online.
    pub arch_init: fn(&'static CpuArea),
    /// The AP's life after it is online (idle loop).
    pub main: fn() -> !,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApFailure {
    /// No answer to INIT-SIPI-SIPI within the bound.
    NoResponse,
    /// Entered the kernel but did not come online within the bound.
    Stalled,
    /// The kernel could not provide a stack.
    NoStack,
    /// More CPUs than `MAX_CPUS`.
    TooMany,
}

/// Outcome of `start_aps`.
pub struct Report {
    pub online: usize,
    /// Enabled CPUs in the MADT.
    pub total: usize,
    pub failures: arrayvec::ArrayVec<(u32, ApFailure), 16>,
}

// Copied from the BSP so every AP runs with identical paging and features.
static KERNEL_CR3: AtomicU64 = AtomicU64::new(0);
static BSP_CR0: AtomicU64 = AtomicU64::new(0);
static BSP_CR4: AtomicU64 = AtomicU64::new(0);
static BSP_EFER: AtomicU64 = AtomicU64::new(0);
static HOOKS: spin::Once<ApHooks> = spin::Once::new();
static LAPIC_VIRT: AtomicU64 = AtomicU64::new(0);
/// Next CPU index to hand out. An index is never reused after a failed
/// start: the CPU behind it may still wake up late (and then parks).
static NEXT_INDEX: AtomicUsize = AtomicUsize::new(0);

/// Waits between the INIT and the first SIPI (Intel's 10 ms).
const INIT_DELAY_NS: u64 = 10_000_000;
/// Waits after each SIPI for the AP to reach the kernel.
const SIPI_WAIT_NS: u64 = 200_000_000;
/// Waits for an AP that reached the kernel to finish its set-up.
const ONLINE_WAIT_NS: u64 = 2_000_000_000;

/// Makes the running CPU (the BSP) CPU 0: enables its local APIC and puts
/// it online. `install_bsp_percpu` must have run first.
///
/// # Safety
/// Call once, on the BSP; `lapic_virt` must map the local APIC's MMIO page.
pub unsafe fn init_bsp(lapic_virt: x86_64::VirtAddr) -> &'static CpuArea {
    let me = percpu::current();
    assert_eq!(me.index(), 0, "init_bsp on a CPU other than the BSP");
    LAPIC_VIRT.store(lapic_virt.as_u64(), Ordering::Relaxed);
    // SAFETY: `lapic_virt` maps the APIC page; this is the BSP's only handle.
    let lapic = unsafe { Lapic::enable_current(lapic_virt) };
    me.set_expected_apic_id(lapic.id());
    let started = me.transition(CpuState::Absent, CpuState::Starting);
    assert!(started && me.go_online(lapic), "BSP initialised twice");
    NEXT_INDEX.store(1, Ordering::Relaxed);
    me
}

/// Points the BSP's GS base at CPU 0's data, first thing at boot, so even
/// the earliest log lines know their CPU.
///
/// # Safety
/// Call once, on the BSP, before anything calls `percpu::current()`;
/// `init_bsp` must follow before any IPI use.
pub unsafe fn install_bsp_percpu() {
    // SAFETY: per this function's contract.
    unsafe { percpu::install(0) };
}

/// Starts every AP in `apic_ids` (the MADT's enabled CPUs; ids already
/// online are skipped). New CPUs get the next unused indexes.
/// `stack_top(index)` provides each AP's kernel stack.
///
/// # Safety
/// `phys_offset` is the direct-map offset, the trampoline's low pages are
/// reserved RAM, and `init_bsp` has run.
pub unsafe fn start_aps(
    phys_offset: u64,
    apic_ids: &[u32],
    cpus_total: usize,
    mut stack_top: impl FnMut(usize) -> Option<u64>,
    hooks: ApHooks,
) -> Report {
    let (frame, _) = Cr3::read();
    KERNEL_CR3.store(frame.start_address().as_u64(), Ordering::Relaxed);
    BSP_CR0.store(Cr0::read_raw(), Ordering::Relaxed);
    BSP_CR4.store(Cr4::read_raw(), Ordering::Relaxed);
    BSP_EFER.store(Efer::read_raw(), Ordering::Relaxed);
    HOOKS.call_once(|| hooks);

    // SAFETY: per this function's contract.
    let trampoline = unsafe { Trampoline::install(phys_offset, frame.start_address()) };
    let online = percpu::online_set();
    let running = |id: u32| online.iter().any(|c| percpu::cpu(c).apic_id() == id);
    let mut report = Report { online: online.len(), total: cpus_total, failures: arrayvec::ArrayVec::new() };
    for &apic_id in apic_ids.iter().filter(|&&id| !running(id)) {
        let mut fail = |f| {
            log::error!("smp: CPU with APIC id {apic_id} failed to start: {f:?}");
            let _ = report.failures.try_push((apic_id, f));
        };
        let index = NEXT_INDEX.load(Ordering::Relaxed);
        if index >= MAX_CPUS {
            fail(ApFailure::TooMany);
            continue;
        }
        let Some(stack) = stack_top(index) else {
            fail(ApFailure::NoStack);
            continue;
        };
        NEXT_INDEX.store(index + 1, Ordering::Relaxed);
        let cpu = percpu::cpu(index);
        cpu.set_expected_apic_id(apic_id);
        trampoline.arm(stack, ap_entry as *const () as u64, cpu as *const CpuArea as u64);
        match wake(&trampoline, cpu, apic_id) {
            Ok(()) => report.online += 1,
            Err(f) => fail(f),
        }
    }
    report
}

fn wait_until(ns: u64, mut done: impl FnMut() -> bool) -> bool {
    let deadline = tsc::now_ns() + ns;
    while tsc::now_ns() < deadline {
        if done() {
            return true;
        }
        core::hint::spin_loop();
    }
    done()
}

/// INIT-SIPI-SIPI for one AP, then bounded waits for it to enter the
/// kernel and to come online.
fn wake(trampoline: &Trampoline, cpu: &CpuArea, apic_id: u32) -> Result<(), ApFailure> {
    percpu::with_local_apic(|l| l.send_init(apic_id));
    tsc::delay_ns(INIT_DELAY_NS);
    let entered = || cpu.state() != CpuState::Absent;
    let mut started = false;
    for _ in 0..2 {
        percpu::with_local_apic(|l| l.send_sipi(SIPI_PAGE, apic_id));
        if wait_until(SIPI_WAIT_NS, entered) {
            started = true;
            break;
        }
        // The second SIPI is only allowed if nobody claimed the trampoline:
        // a claimed-but-slow AP would be restarted mid-way.
        if trampoline.claim().load(Ordering::Acquire) != 0 {
            started = wait_until(SIPI_WAIT_NS, entered);
            break;
        }
    }
    // Giving up races with the AP's own progress; a CAS decides. An AP that
    // loses parks itself, so its index is simply never used again.
    if !started && cpu.transition(CpuState::Absent, CpuState::Abandoned) {
        // It never entered the kernel, so it holds nothing: reset it so it
        // cannot wake up later on a trampoline armed for another AP.
        percpu::with_local_apic(|l| l.send_init(apic_id));
        return Err(ApFailure::NoResponse);
    }
    if wait_until(ONLINE_WAIT_NS, || cpu.state() == CpuState::Online)
        || !cpu.transition(CpuState::Starting, CpuState::Abandoned)
    {
        return Ok(());
    }
    // It is running kernel code (and may hold a lock), so no INIT: it will
    // see `Abandoned` when it tries to come online, and park.
    Err(ApFailure::Stalled)
}

/// Where an abandoned AP ends up: halted with interrupts off for good.
fn park() -> ! {
    loop {
        x86_64::instructions::interrupts::disable();
        x86_64::instructions::hlt();
    }
}

/// Rust entry of an AP, called by the trampoline on its own stack.
extern "C" fn ap_entry(cpu: &'static CpuArea) -> ! {
    // LA57 cannot change while paging is on, and the BSP does not use it.
    // SAFETY: the BSP's kernel runs with these values, and the trampoline's
    // tables map the kernel identically, so code and stack stay put.
    unsafe {
        let cr4 = BSP_CR4.load(Ordering::Relaxed) & !Cr4Flags::L5_PAGING.bits();
        core::arch::asm!(
            "mov cr3, {cr3}",
            "mov cr4, {cr4}",
            "mov cr0, {cr0}",
            cr3 = in(reg) KERNEL_CR3.load(Ordering::Relaxed),
            cr4 = in(reg) cr4,
            cr0 = in(reg) BSP_CR0.load(Ordering::Relaxed),
            options(nostack, preserves_flags)
        );
        Efer::write_raw(BSP_EFER.load(Ordering::Relaxed));
    }
    // SAFETY: this AP owns `cpu` (the BSP armed the trampoline with it and
    // waits for us before arming another), and nothing has run here yet.
    unsafe { percpu::install(cpu.index()) };
    if !cpu.transition(CpuState::Absent, CpuState::Starting) {
        park(); // the BSP gave up on us before we got here
    }

    let hooks = *HOOKS.get().expect("start_aps sets the hooks before waking APs");
    (hooks.arch_init)(cpu);
    // SAFETY: same APIC page for every CPU; this is this AP's only handle.
    let lapic = unsafe { Lapic::enable_current(x86_64::VirtAddr::new(LAPIC_VIRT.load(Ordering::Relaxed))) };
    let expected = cpu.apic_id();
    if lapic.id() != expected {
        log::warn!("smp: cpu {} has APIC id {} (MADT order said {expected})", cpu.index(), lapic.id());
        cpu.set_expected_apic_id(lapic.id());
    }
    if !cpu.go_online(lapic) {
        park(); // abandoned while we were setting up
    }
    (hooks.main)()
}
