//! `cargo xtask test`: host unit tests, then the in-kernel suites at several
//! CPU counts and firmware/APIC combinations. The last stdout line is always
//! `N passed, M failed`.

use crate::accel::{self, AccelChoice};
use crate::qemu::{parse_mem, Config, Eviction, Firmware, GuestOptions};
use crate::swap::Swap;
use crate::{build, gdb, install, suite, toolchain, Mode};
use anyhow::{anyhow, Result};
use std::io::{BufRead, BufReader};
use std::process::{ExitCode, Stdio};
use std::time::Duration;

/// Longest one kernel suite may run (the -smp 8 suites on the swap disk
/// take about 200 s on a 2-core host).
const SUITE_TIMEOUT: Duration = Duration::from_secs(600);

#[derive(Default, Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tally {
    pub passed: u64,
    pub failed: u64,
}

impl std::ops::AddAssign for Tally {
    fn add_assign(&mut self, other: Tally) {
        self.passed += other.passed;
        self.failed += other.failed;
    }
}

impl std::fmt::Display for Tally {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} passed, {} failed", self.passed, self.failed)
    }
}

impl Tally {
    pub fn exit_code(self) -> ExitCode {
        if self.failed == 0 {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        }
    }
}

/// One QEMU run of the kernel suites.
struct Suite {
    smp: u32,
    uefi: bool,
    xapic: bool,
    /// Frames per magazine; tiny ones keep the depot and buddy paths busy.
    magazine: Option<u32>,
    /// The paging suites run with the clock unless this says otherwise.
    eviction: Option<Eviction>,
    /// Page to a virtio-blk disk instead of the RAM store.
    swap: bool,
    /// Test name prefixes to run (`only=`); every suite when empty.
    only: &'static [&'static str],
    /// Bound of the QEMU run.
    timeout: Duration,
}

/// The boot runs' tests: every CPU the MADT lists is online with its own
/// APIC id, and each answers a cross-call from its own GS area.
const BOOT_CHECKS: &[&str] = &["smp::all_cpus_online_with_distinct_apic_ids", "smp::per_cpu_data_through_gs"];

/// Bound of the 256-CPU boot: about 40 s alone on a 2-core host (35 s of
/// it the boot: 255 APs started one at a time under TCG), several times
/// that while other QEMUs share the cores.
const BOOT_256_TIMEOUT: Duration = Duration::from_secs(300);

/// Swap disk of the virtio-backed suites.
const SWAP_SIZE: &str = "64M";

fn plan(quick: bool) -> Vec<Suite> {
    let run = |smp, uefi, xapic, magazine| Suite {
        smp,
        uefi,
        xapic,
        magazine,
        eviction: None,
        swap: false,
        only: &[],
        timeout: SUITE_TIMEOUT,
    };
    let swapped = |smp| Suite { swap: true, ..run(smp, false, false, None) };
    // Boots at CPU counts the suites do not cover: an odd one, the old
    // CPU-set width, and the limit (just the boot checks: its cross-call
    // suite alone takes minutes under TCG).
    let boot = |smp, only, timeout| Suite { only, timeout, ..run(smp, false, false, None) };
    let mut suites = vec![run(1, false, false, None), run(2, false, false, None), run(8, false, false, None)];
    suites.extend([swapped(1), swapped(2), swapped(8)]);
    suites.extend([
        boot(3, &["smp::"], SUITE_TIMEOUT),
        boot(64, &["smp::"], SUITE_TIMEOUT),
        boot(record::MAX_CPUS, BOOT_CHECKS, BOOT_256_TIMEOUT),
    ]);
    if !quick {
        suites.push(Suite { eviction: Some(Eviction::Lru), ..run(8, false, true, Some(2)) });
        suites.push(run(4, true, false, None));
    }
    suites
}

#[derive(clap::Args)]
pub struct TestArgs {
    /// Skip the UEFI and forced-xAPIC kernel runs.
    #[arg(long)]
    quick: bool,
    /// Also show the guest's free-text serial output.
    #[arg(long)]
    verbose: bool,
    /// Accelerator of the kernel boots (see `run --accel`).
    #[arg(long, value_enum, default_value_t = AccelChoice::Auto)]
    accel: AccelChoice,
    /// Run only these stages (default: all), comma-separated.
    #[arg(long, value_enum, value_delimiter = ',')]
    stage: Vec<Stage>,
}

/// The parts of `cargo xtask test`, in the order they run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Stage {
    /// `cargo test` of the host-testable crates.
    Host,
    /// The loom models.
    Loom,
    /// The in-kernel suites at several CPU counts.
    Kernel,
    /// A real gdb to a hardware breakpoint at the kernel's entry and back.
    Gdb,
    /// The sharing tracer's calibration (traced boots, always TCG).
    Trace,
}

pub fn test(args: TestArgs) -> Result<ExitCode> {
    let runs = |stage: Stage| args.stage.is_empty() || args.stage.contains(&stage);
    // Refused before anything runs.
    let accel = accel::resolve(args.accel)?;
    let mut total = Tally::default();
    // Every stage failure is counted, not returned, so the summary line is
    // always printed last.
    let toolchain = toolchain::ensure_toolchain().map_err(|e| format!("{e:#}"));
    match &toolchain {
        Ok(()) => {
            if runs(Stage::Host) {
                total += host_tests();
            }
            if runs(Stage::Loom) {
                total += loom_models();
            }
        }
        Err(e) => broken("host tests", &format!("not run: {e}"), &mut total),
    }
    if !runs(Stage::Kernel) && !runs(Stage::Gdb) && !runs(Stage::Trace) {
        println!("{total}");
        return Ok(total.exit_code());
    }

    let suites = if runs(Stage::Kernel) { plan(args.quick) } else { Vec::new() };
    let prepared = toolchain
        .map_err(|e| anyhow!(e))
        .and_then(|()| Ok((install::ensure_qemu()?, build::build(build::Flavor::Test)?)));
    match prepared {
        Ok((qemu, images)) => {
            let mut ovmf = None;
            for suite in &suites {
                let firmware = if suite.uefi {
                    match ovmf.get_or_insert_with(|| install::ensure_ovmf().map_err(|e| format!("{e:#}"))) {
                        Ok(path) => Firmware::Uefi { ovmf: path.clone() },
                        Err(e) => {
                            let label = format!("smp {} uefi", suite.smp);
                            broken(&label, &format!("not run: {e}"), &mut total);
                            continue;
                        }
                    }
                } else {
                    Firmware::Bios
                };
                let config = Config {
                    smp: suite.smp,
                    accel,
                    gdb: None,
                    mem: parse_mem("1G").expect("a valid size"),
                    firmware,
                    xapic: suite.xapic,
                    guest: GuestOptions {
                        mode: Mode::Test,
                        magazine: suite.magazine,
                        eviction: suite.eviction,
                        only: suite.only.iter().map(|s| s.to_string()).collect(),
                        ..Default::default()
                    },
                    swap: match suite.swap {
                        true => match Swap::create(
                            &format!("test-smp{}", suite.smp),
                            parse_mem(SWAP_SIZE).expect("a valid size"),
                        ) {
                            Ok(swap) => Some(swap),
                            Err(e) => {
                                broken(&format!("smp {} swap", suite.smp), &format!("not run: {e:#}"), &mut total);
                                continue;
                            }
                        },
                        false => None,
                    },
                    extra: Vec::new(),
                };
                total += suite::kernel_run(&qemu, &images, &config, suite.timeout, args.verbose);
            }
            if runs(Stage::Gdb) {
                total += gdb::stage(&qemu, &images, accel);
            }
            if runs(Stage::Trace) {
                total += trace_proof(&qemu, &images);
            }
        }
        Err(e) => {
            broken("kernel suites", &format!("not run: {e:#}"), &mut total);
            // One failure per run that could not happen (the gdb and trace
            // stages count as one each).
            total.failed += (suites.len() + usize::from(runs(Stage::Gdb)) + usize::from(runs(Stage::Trace)))
                .saturating_sub(1) as u64;
        }
    }
    println!("{total}");
    Ok(total.exit_code())
}

/// The sharing tracer's calibration (`bench::trace::proof`): one count
/// per check.
fn trace_proof(qemu: &crate::qemu::Qemu, images: &build::Images) -> Tally {
    eprintln!(
        "==> sharing tracer calibration (traced boots: {:?} as (CPUs, xAPIC))",
        crate::bench::trace::proof::BOOTS
    );
    let mut tally = Tally::default();
    match crate::bench::trace::proof::run(qemu, images) {
        Ok(verdicts) => {
            for v in verdicts {
                let word = if v.ok { "pass" } else { "FAIL" };
                eprintln!("[trace] {word} {}: {}", v.name, v.detail);
                if v.ok {
                    tally.passed += 1;
                } else {
                    tally.failed += 1;
                }
            }
        }
        Err(e) => broken("trace", &format!("{e:#}"), &mut tally),
    }
    tally
}

/// Counts a stage or run that produced no trustworthy counts as one failure.
pub fn broken(what: &str, why: &str, total: &mut Tally) {
    eprintln!("[{what}] {why}");
    total.failed += 1;
}

/// `cargo +PIN test` over the host-testable crates.
fn host_tests() -> Tally {
    eprintln!("==> host unit tests");
    let packages = [
        "-p", "cpus", "-p", "smp", "-p", "mm", "-p", "drivers", "-p", "record", "-p", "bench", "-p", "xtask", "-p",
        "tracer",
    ];
    // --no-fail-fast: a failing crate must not hide the others' counts.
    let mut cargo = toolchain::cargo(&["test", "--no-fail-fast", "--features", "record/parse"]);
    cargo.args(packages);
    cargo_tests("host tests", cargo)
}

/// The loom models of the lock-free protocols: every `--lib` test whose
/// name has `loom` in it (the cross-calls; the frame allocator's
/// magazines, depot and reclaim; one page under the fault, eviction,
/// unmap and pin steps). About 80 s on a 2-core host, most of it the
/// paging models. `--cfg loom` changes every crate's build, so they get
/// their own target directory.
fn loom_models() -> Tally {
    eprintln!("==> loom models");
    let mut cargo = toolchain::cargo(&["test", "--release", "--lib", "-p", "smp", "-p", "mm"]);
    cargo.args(["--target-dir", "target/loom", "--", "loom"]).env("RUSTFLAGS", "--cfg loom");
    cargo_tests("loom models", cargo)
}

/// Runs a `cargo test` command, prints its output and adds up its
/// `test result:` lines.
fn cargo_tests(label: &str, mut cargo: std::process::Command) -> Tally {
    cargo.stdout(Stdio::piped()).stderr(Stdio::inherit());
    eprintln!("    $ {}", crate::cmd::show(&cargo));
    let mut tally = Tally::default();
    let mut child = match cargo.spawn() {
        Ok(child) => child,
        Err(e) => {
            broken(label, &format!("could not start cargo: {e}"), &mut tally);
            return tally;
        }
    };
    let stdout = child.stdout.take().expect("stdout is piped");
    for line in BufReader::new(stdout).lines().map_while(Result::ok) {
        println!("{line}");
        if let Some(counts) = parse_test_result(&line) {
            tally += counts;
        }
    }
    match child.wait() {
        Ok(status) if status.success() => {}
        // The failed tests already explain a nonzero exit; otherwise it is
        // a build failure or crash and counts as one failure.
        Ok(_) if tally.failed > 0 => {}
        Ok(status) => broken(label, &format!("cargo test failed ({status})"), &mut tally),
        Err(e) => broken(label, &format!("waiting for cargo: {e}"), &mut tally),
    }
    tally
}

/// Reads `test result: ok. 12 passed; 0 failed; 0 ignored; ...`.
fn parse_test_result(line: &str) -> Option<Tally> {
    let rest = line.trim_start().strip_prefix("test result:")?;
    let mut tally = Tally::default();
    let mut found = (false, false);
    for part in rest.split(';') {
        let mut words = part.split_whitespace().rev();
        let (Some(label), Some(number)) = (words.next(), words.next()) else {
            continue;
        };
        match (label, number.parse::<u64>()) {
            ("passed", Ok(n)) => (tally.passed, found.0) = (n, true),
            ("failed", Ok(n)) => (tally.failed, found.1) = (n, true),
            _ => {}
        }
    }
    (found == (true, true)).then_some(tally)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_plan_boots_every_cpu_count_of_the_issue() {
        for quick in [false, true] {
            let smps: Vec<u32> = plan(quick).iter().map(|s| s.smp).collect();
            for n in [1, 2, 3, 8, 64, 256] {
                assert!(smps.contains(&n), "no run at -smp {n} (quick: {quick})");
            }
        }
        let big = plan(true).into_iter().find(|s| s.smp == record::MAX_CPUS).unwrap();
        assert!(!big.xapic && !big.only.is_empty(), "x2APIC, boot checks only");
        assert!(big.only.iter().all(|t| t.starts_with("smp::")));
    }

    #[test]
    fn reads_cargo_test_result_lines() {
        let ok = "test result: ok. 12 passed; 0 failed; 1 ignored; 0 measured; 0 filtered out; finished in 0.01s";
        assert_eq!(parse_test_result(ok), Some(Tally { passed: 12, failed: 0 }));
        let bad = "test result: FAILED. 3 passed; 2 failed; 0 ignored; 0 measured; 0 filtered out; finished in 1.20s";
        assert_eq!(parse_test_result(bad), Some(Tally { passed: 3, failed: 2 }));
        assert_eq!(parse_test_result("running 3 tests"), None);
        assert_eq!(parse_test_result("test result: garbled"), None);
    }
}
