//! The kernel binary: boots the BSP, brings up every AP, then either
//! reports and exits (`mode=run`) or runs the in-kernel tests (`mode=test`).
#![no_std]
#![no_main]
#![feature(abi_x86_interrupt)]

extern crate alloc;

mod bench_machine;
mod cmdline;
mod cpu_features;
mod fatal;
/// Catching an expected exception: only the tests expect one.
#[cfg(feature = "test-hooks")]
mod fault_catch;
mod frames;
mod gdt;
mod guard_page;
mod heap;
mod hypervisor;
mod interrupts;
mod logger;
mod memory;
mod nap;
mod paging;
mod pat;
mod swap_disk;
/// The in-kernel test suites: only in the test image (`test-hooks`).
#[cfg(feature = "test-hooks")]
mod tests;
mod trace_mark;
/// The ring-3 program of the usermode tests: test image only.
#[cfg(feature = "test-hooks")]
mod user_program;
mod usermode;
mod virtio_hal;
mod vm;
mod wait;
mod workers;

use bootloader_api::config::{BootloaderConfig, Mapping};
use bootloader_api::{entry_point, BootInfo};
use cpus::PerCpu;
use drivers::hpet::Hpet;
use drivers::lapic::ApicMode;
use drivers::pm_timer::PmTimer;
use drivers::qemu_exit::{exit, ExitCode};
use drivers::{acpi_tables, serial, tsc};
use smp::bringup::{self, ApHooks, TRAMPOLINE_RESERVED};
use smp::percpu::CpuArea;
use spin::Once;

/// The bootloader puts everything it maps (kernel, boot stack, boot info,
/// direct map) in the upper half below 0xFFFF_FF00_0000_0000; the top
/// 1 TiB is the kernel's own mapping area (`mm::vm::KERNEL_AREA_START`: stacks, the seed area, `k_mem_map` regions).
const BOOTLOADER_CONFIG: BootloaderConfig = {
    let mut config = BootloaderConfig::new_default();
    config.mappings.physical_memory = Some(Mapping::Dynamic);
    config.mappings.dynamic_range_start = Some(0xFFFF_8000_0000_0000);
    config.mappings.dynamic_range_end = Some(0xFFFF_FEFF_FFFF_FFFF);
    // The BSP's stack. 1 MiB: `Vm::new` returns the kernel's `Vm` by value
    // (100 KiB at 256 CPUs in the test kernel: three `PerCpu`s of 128-byte
    // elements), and its copies on the way into the `Once` overflowed
    // 256 KiB.
    config.kernel_stack_size = 1024 * 1024;
    // Pinned where the bootloader's dynamic choice put it anyway (the first
    // free PML4 slot), so `cargo xtask run --gdb` knows the offset of the
    // ELF's symbols (see `record::KERNEL_BASE`).
    config.mappings.kernel_base = Mapping::FixedAddress(record::KERNEL_BASE);
    config
};

entry_point!(kernel_main, config = &BOOTLOADER_CONFIG);

/// What boot learned about the machine, for tests and reports.
pub struct BootFacts {
    pub cpus_total: usize,
    pub apic_mode: ApicMode,
    pub hpet: Option<Hpet>,
    pub pm_timer: Option<PmTimer>,
}

pub static FACTS: Once<BootFacts> = Once::new();

/// Interrupt stacks of each AP, mapped by the BSP before the AP starts
/// (so set from another CPU by design: `remote`).
static AP_STACKS: PerCpu<Once<gdt::InterruptStacks>> = cpus::per_cpu![Once::new()];

fn kernel_main(boot_info: &'static mut BootInfo) -> ! {
    // SAFETY: first thing on the BSP: nothing has used per-CPU data yet.
    unsafe { bringup::install_bsp_percpu() };
    serial::init();
    logger::init();
    let phys_offset = boot_info.physical_memory_offset.into_option().expect("bootloader gave no direct map");
    // SAFETY: once, on the BSP, with the bootloader's direct-map offset.
    unsafe { memory::init(&boot_info.memory_regions, phys_offset) };
    gdt::load(0, memory::map_interrupt_stacks().expect("no memory for the BSP's interrupt stacks"));
    interrupts::load();
    pat::init();
    cpu_features::enable();
    drivers::pic::disable();

    let rsdp = boot_info.rsdp_addr.into_option().expect("bootloader found no ACPI RSDP");
    // SAFETY: the RSDP comes from the firmware via the bootloader, and the
    // direct map covers all RAM and the first 4 GiB.
    let platform = unsafe { acpi_tables::read_platform(x86_64::PhysAddr::new(rsdp), phys_offset) }
        .unwrap_or_else(|e| panic!("reading ACPI tables: {e:?}"));
    // SAFETY: the HPET block is below 4 GiB, inside the direct map.
    let hpet = platform.hpet_phys.and_then(|p| unsafe { Hpet::new(x86_64::VirtAddr::new(phys_offset + p.as_u64())) });
    // Before the APs start: nothing else touches the reference clocks.
    let tsc_cal = tsc::calibrate(hpet.as_ref(), platform.pm_timer.as_ref())
        .unwrap_or_else(|e| panic!("TSC calibration failed: {e:?}"));
    log::info!(
        "tsc: {} kHz ({}), spread {} ppm, bound {} ppm",
        tsc_cal.hz / 1_000,
        tsc_cal.source.name(),
        tsc_cal.spread_ppm,
        tsc_cal.bound_ppm
    );
    // SAFETY: once, on the BSP; the direct map covers the APIC page (< 4 GiB).
    let bsp = unsafe { bringup::init_bsp(x86_64::VirtAddr::new(phys_offset + platform.lapic_phys.as_u64())) };
    let apic_mode = smp::percpu::with_local_apic(|l| l.mode());
    log::info!("apic: {apic_mode:?}, BSP APIC id {}, MADT lists {} CPUs", bsp.apic_id(), platform.cpus_total);

    let report = if memory::is_usable(&boot_info.memory_regions, TRAMPOLINE_RESERVED) {
        // SAFETY: the trampoline pages are usable RAM (checked above) that
        // the boot allocator never hands out (it skips the first MiB).
        unsafe { start_aps(phys_offset, &platform.apic_ids, platform.cpus_total as usize) }
    } else {
        log::error!("smp: low memory {TRAMPOLINE_RESERVED:#x?} is not usable RAM; APs not started");
        bringup::Report { online: 1, total: platform.cpus_total as usize, failures: Default::default() }
    };
    x86_64::instructions::interrupts::enable();
    serial::write_fmt(format_args!("smp: {} of {} CPUs online\n", report.online, report.total));

    let cmdline = cmdline::read();
    let frames = frames::init(phys_offset, cmdline.magazine_capacity);
    log::info!(
        "frames: {} MiB free of {} MiB usable, magazines of {}",
        frames.free_bytes() >> 20,
        (frames.usable_frames() * mm::PAGE_SIZE) >> 20,
        frames.magazine_capacity()
    );

    let disk = swap_disk::probe(platform.ecam.as_ref());
    paging::init(cmdline.eviction, disk);

    FACTS.call_once(|| BootFacts { cpus_total: report.total, apic_mode, hpet, pm_timer: platform.pm_timer });
    logger::emit(&record::Record::Boot {
        cpus_online: report.online as u32,
        cpus_total: report.total as u32,
        apic: match apic_mode {
            ApicMode::XApic => record::ApicMode::XApic,
            ApicMode::X2Apic => record::ApicMode::X2Apic,
        },
        tsc_hz: tsc_cal.hz,
        tsc_source: tsc_cal.source.name(),
        tsc_spread_ppm: tsc_cal.spread_ppm,
        tsc_bound_ppm: tsc_cal.bound_ppm,
        usable_bytes: memory::usable_bytes(&boot_info.memory_regions),
        store: paging::store_name(),
        accel: hypervisor::detect(),
    });

    match cmdline.mode {
        cmdline::Mode::Run => exit(ExitCode::Success),
        #[cfg(feature = "test-hooks")]
        cmdline::Mode::Test => exit(tests::run_all(cmdline.seed.unwrap_or_else(tsc::rdtsc), &cmdline.only)),
        // A clear failure, not an empty pass: this image has no tests.
        #[cfg(not(feature = "test-hooks"))]
        cmdline::Mode::Test => {
            log::error!("mode=test: this image has no tests (built without the test-hooks feature)");
            exit(ExitCode::Failure)
        }
        cmdline::Mode::Bench => {
            let plan = if cmdline.quick { bench::Plan::QUICK } else { bench::Plan::FULL };
            let seed = cmdline.seed.unwrap_or_else(tsc::rdtsc);
            let ok = bench::run_benchmarks(&bench_machine::REPORTING, &cmdline.only, plan, cmdline.quick, seed);
            exit(if ok { ExitCode::Success } else { ExitCode::Failure })
        }
        cmdline::Mode::Stress => {
            let seed = cmdline.seed.unwrap_or_else(tsc::rdtsc);
            let ok = bench::stress::run(&bench_machine::REPORTING, cmdline.seconds, seed);
            exit(if ok { ExitCode::Success } else { ExitCode::Failure })
        }
    }
}

/// Starts the APs in `apic_ids` that are not running yet.
///
/// # Safety
/// As `smp::bringup::start_aps`.
pub unsafe fn start_aps(phys_offset: u64, apic_ids: &[u32], cpus_total: usize) -> bringup::Report {
    let hooks = ApHooks { arch_init: ap_arch_init, main: workers::ap_main };
    // SAFETY: per this function's contract.
    unsafe { bringup::start_aps(phys_offset, apic_ids, cpus_total, map_ap_stacks, hooks) }
}

/// Maps AP `index`'s kernel stack and interrupt stacks; returns the stack top.
fn map_ap_stacks(index: usize) -> Option<u64> {
    let top = memory::map_stack(memory::KERNEL_STACK_PAGES)?;
    let stacks = memory::map_interrupt_stacks()?;
    AP_STACKS.remote(index).call_once(|| stacks);
    Some(top)
}

fn ap_arch_init(cpu: &'static CpuArea) {
    let stacks = *AP_STACKS.remote(cpu.index()).get().expect("AP started without interrupt stacks");
    gdt::load(cpu.index(), stacks);
    interrupts::load();
    pat::init();
    cpu_features::enable();
}
