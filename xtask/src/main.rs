//! `cargo xtask`: the host side of the kernel project (matklad's cargo-xtask
//! convention). This file is only the command line; each subcommand lives in
//! its own module.
//!
//! xtask builds with the machine's default *stable* toolchain because it is
//! what installs the pinned nightly (see `toolchain.rs`) on a fresh machine.

// The one `unsafe` is reading the host's TSC (`host_tsc::rdtsc`), allowed
// there, so xtask denies `unsafe_code` rather than forbid it. The safe TSC
// readers on crates.io do not fit: quanta's `Clock::raw` silently becomes
// the OS clock in nanoseconds when it judges the TSC unreliable (a CPU
// other than a recent Intel one without CPUID's invariant-TSC bit, which
// VMs often hide), which would measure a bogus 1 GHz host rate, and its API
// does not say which source it picked.
#![deny(unsafe_code)]

mod accel;
mod bench;
mod build;
mod cmd;
mod exit;
mod gdb;
mod host_tsc;
mod install;
mod lint;
mod qemu;
mod records;
mod run;
mod stress;
mod suite;
mod swap;
mod test;
mod toolchain;

#[cfg(test)]
mod fake_qemu_tests;

use anyhow::Result;
use clap::{Args, Parser, Subcommand, ValueEnum};
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "xtask",
    bin_name = "cargo xtask",
    about = "Build, run, test, lint, benchmark and stress the kernel under QEMU"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Build the kernel and its BIOS and UEFI disk images (target/image/;
    /// the test kernel's in target/image-test/ with --tests).
    Build {
        /// Also make sure the OVMF firmware for UEFI runs is installed.
        #[arg(long)]
        uefi: bool,
        /// Build the test kernel (the in-kernel suites and their hooks).
        #[arg(long)]
        tests: bool,
    },
    /// Build, then boot the kernel in QEMU and report what it sent back.
    Run(RunArgs),
    /// Host unit tests plus the in-kernel suites at several CPU counts.
    Test(test::TestArgs),
    /// Formatting, clippy and rustdoc with warnings denied, for the host
    /// crates and the kernel target (installs rustfmt and clippy if missing).
    Lint,
    /// Benchmarks at several CPU counts, written to `target/bench/<run>/`
    /// (report.json, report.md, plots/); or compare two runs.
    Bench(bench::BenchArgs),
    /// Mixed concurrent stress with the auditors for a fixed time; prints
    /// the seed that replays it.
    Stress(stress::StressArgs),
}

/// What the guest kernel is asked to do (passed on its command line).
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default, ValueEnum)]
pub enum Mode {
    /// Boot, send the Boot record, exit.
    #[default]
    Run,
    /// Run the in-kernel test suites.
    Test,
    /// Run the benchmarks (`cargo xtask bench`; not a `run --mode`).
    #[value(skip)]
    Bench,
    /// Run the mixed stress workload (`cargo xtask stress`).
    #[value(skip)]
    Stress,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Run => "run",
            Mode::Test => "test",
            Mode::Bench => "bench",
            Mode::Stress => "stress",
        }
    }
}

#[derive(Args)]
struct RunArgs {
    /// Number of virtual CPUs (1 to the kernel's limit, 64).
    #[arg(long, default_value_t = 8, value_parser = qemu::parse_smp)]
    smp: u32,
    /// Accelerator: `auto` takes KVM when /dev/kvm opens and the CPU has
    /// vmx or svm, TCG otherwise.
    #[arg(long, value_enum, default_value_t = accel::AccelChoice::Auto)]
    accel: accel::AccelChoice,
    /// Start QEMU's gdbstub halted at reset and print the gdb command that
    /// attaches; no timeout unless --timeout is given.
    #[arg(long)]
    gdb: bool,
    /// TCP port of the gdbstub (with --gdb).
    #[arg(long, default_value_t = gdb::DEFAULT_PORT, requires = "gdb")]
    gdb_port: u16,
    /// Guest RAM in QEMU syntax: a number with an optional K, M or G suffix
    /// (no suffix means MiB, as for `qemu -m`).
    #[arg(long, default_value = "1G", value_parser = qemu::parse_mem)]
    mem: qemu::Mem,
    /// Boot through OVMF (UEFI) instead of the legacy BIOS.
    #[arg(long)]
    uefi: bool,
    /// Hide x2APIC from the guest CPU (`-cpu max,-x2apic`).
    #[arg(long)]
    xapic: bool,
    /// Kill QEMU after this many seconds (default 120; none with --gdb).
    #[arg(long)]
    timeout: Option<u64>,
    #[arg(long, value_enum, default_value_t = Mode::Run)]
    mode: Mode,
    /// Seed for the guest's randomised tests (decimal or 0x-hex); the
    /// guest prints the one it used, so a failing run can be replayed.
    #[arg(long, value_parser = parse_seed)]
    seed: Option<u64>,
    /// Frames per magazine in the guest's frame allocator (1..=64).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=64))]
    mag: Option<u32>,
    /// Eviction policy of the guest's demand paging.
    #[arg(long, value_enum)]
    evict: Option<qemu::Eviction>,
    /// In test mode, also show the guest's free-text serial output.
    #[arg(long)]
    verbose: bool,
    /// In test mode, run only the tests whose names start with one of
    /// these prefixes (`--only paging::,tlb::`).
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    /// Boot the image already built instead of rebuilding it
    /// (target/image, or target/image-test with --mode test).
    #[arg(long)]
    no_build: bool,
    /// Attach a fresh sparse swap disk of this size (target/swap/run.img,
    /// virtio-blk); the guest pages to it instead of its RAM store.
    #[arg(long, value_parser = swap::parse_swap_size)]
    swap: Option<qemu::Mem>,
    /// Extra arguments appended to the QEMU command line.
    #[arg(last = true)]
    qemu_args: Vec<String>,
}

fn parse_seed(s: &str) -> Result<u64, String> {
    match s.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16),
        None => s.parse(),
    }
    .map_err(|e| format!("{s:?} is not a decimal or 0x-hex number: {e}"))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Build { uefi, tests } => build_cmd(uefi, tests),
        Command::Run(args) => run_cmd(args),
        Command::Test(args) => test::test(args),
        Command::Bench(args) => bench::bench(args),
        Command::Stress(args) => stress::stress(args),
        Command::Lint => lint::lint(),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn build_cmd(uefi: bool, tests: bool) -> Result<ExitCode> {
    toolchain::ensure_toolchain()?;
    if uefi {
        install::ensure_ovmf()?;
    }
    let images = build::build(if tests { build::Flavor::Test } else { build::Flavor::Production })?;
    let image = if uefi { &images.uefi } else { &images.bios };
    eprintln!("==> image: {}", image.display());
    Ok(ExitCode::SUCCESS)
}

/// The kernel `run` boots: the test kernel only for `--mode test`, so a
/// plain run is the production kernel, without tests or test hooks.
fn image_flavor(mode: Mode) -> build::Flavor {
    match mode {
        Mode::Test => build::Flavor::Test,
        Mode::Run | Mode::Bench | Mode::Stress => build::Flavor::Production,
    }
}

fn run_cmd(args: RunArgs) -> Result<ExitCode> {
    // Refused before anything is installed, built or booted.
    qemu::check_xapic(args.smp, args.xapic)?;
    let accel = accel::resolve(args.accel)?;
    let qemu = install::ensure_qemu()?;
    qemu.check_apic(args.smp, args.xapic, accel)?;
    let firmware =
        if args.uefi { qemu::Firmware::Uefi { ovmf: install::ensure_ovmf()? } } else { qemu::Firmware::Bios };
    let images = build::images(args.no_build, image_flavor(args.mode))?;
    let config = qemu::Config {
        smp: args.smp,
        accel,
        gdb: args.gdb.then_some(args.gdb_port),
        mem: args.mem,
        firmware,
        xapic: args.xapic,
        guest: qemu::GuestOptions {
            mode: args.mode,
            seed: args.seed,
            magazine: args.mag,
            eviction: args.evict,
            only: args.only,
            ..Default::default()
        },
        swap: args.swap.map(|size| swap::Swap::create("run", size)).transpose()?,
        extra: args.qemu_args,
    };
    // A session being debugged sits at breakpoints for as long as it
    // likes: with --gdb only an explicit --timeout ends it.
    let timeout = match (args.timeout, args.gdb) {
        (Some(secs), _) => std::time::Duration::from_secs(secs),
        (None, false) => std::time::Duration::from_secs(120),
        (None, true) => run::NO_TIMEOUT,
    };
    if let Some(port) = config.gdb {
        gdb::announce(&install::ensure_gdb()?, &images.elf, port)?;
    }
    match args.mode {
        Mode::Run => {
            run::boot(&qemu, &images, &config, timeout)?;
            Ok(ExitCode::SUCCESS)
        }
        Mode::Test => {
            let tally = suite::kernel_run(&qemu, &images, &config, timeout, args.verbose);
            println!("{tally}");
            Ok(tally.exit_code())
        }
        // `#[value(skip)]` keeps these out of `--mode`; they have commands.
        Mode::Bench | Mode::Stress => {
            anyhow::bail!("use `cargo xtask {}`", args.mode.as_str())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_test_mode_run_boots_the_test_kernel() {
        assert_eq!(image_flavor(Mode::Test), build::Flavor::Test);
        for mode in [Mode::Run, Mode::Bench, Mode::Stress] {
            assert_eq!(image_flavor(mode), build::Flavor::Production, "{mode:?}");
        }
    }
}
