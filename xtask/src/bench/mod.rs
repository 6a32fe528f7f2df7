//! `cargo xtask bench`: boots the guest in benchmark mode once per CPU
//! count, collects its records and writes a run folder
//! `target/bench/<UTC time>-<commit>/` with `report.json`, `report.md` and
//! `plots/<bench>.svg`. `--compare OLD NEW` compares two such runs.

mod compare;
mod judge;
mod plot;
mod progress;
pub mod report_json;
mod report_md;
mod stats;
pub mod targets;
pub mod trace;

#[cfg(test)]
mod fake_qemu_tests;

use crate::build::Flavor;
use crate::qemu::{parse_mem, Config, Firmware, GuestOptions};
use crate::run::{self, Capture, Echo};
use crate::{build, install, toolchain, Mode};
use anyhow::{Context, Result};
use report_json::{Failure, FailureKind, Host, Report, REPORT_SCHEMA};
use std::collections::BTreeSet;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

#[derive(clap::Args)]
pub struct BenchArgs {
    /// CPU counts to boot, comma-separated; one boot each.
    #[arg(long, value_delimiter = ',', default_values_t = [1, 2, 4, 8],
          value_parser = crate::qemu::parse_smp)]
    smp: Vec<u32>,
    /// Accelerator (see `run --accel`).
    #[arg(long, value_enum, default_value_t = crate::accel::AccelChoice::Auto)]
    accel: crate::accel::AccelChoice,
    /// Run only benchmarks whose names start with one of these
    /// (`--only frames,vm.local` or `--only frames vm.local`).
    #[arg(long, value_delimiter = ',', num_args = 1..)]
    only: Vec<String>,
    /// Fewer repetitions and shorter runs.
    #[arg(long)]
    quick: bool,
    /// Kill a boot after this many seconds.
    #[arg(long, default_value_t = 900)]
    timeout: u64,
    /// Also show the guest's free-text serial output.
    #[arg(long)]
    verbose: bool,
    /// Boot the image already in target/image instead of rebuilding it.
    #[arg(long)]
    no_build: bool,
    /// Size of the sparse swap disk (virtio-blk) attached to every boot, so
    /// paging.thrash runs on the disk as well as on the RAM store; `0`
    /// attaches none.
    #[arg(long, default_value = "256M", value_parser = parse_swap)]
    swap: SwapSize,
    /// Compare two runs instead of measuring: run folders, report.json
    /// files, or `latest`.
    #[arg(long, num_args = 2, value_names = ["OLD", "NEW"])]
    compare: Option<Vec<String>>,
    /// Also boot each CPU count under the sharing tracer (a QEMU plugin):
    /// instructions, locked instructions, conflicting accesses and IPIs
    /// per operation, and the most-accessed conflicting lines.
    #[arg(long)]
    trace: bool,
}

/// A swap disk size, or none (`0`).
#[derive(Clone, Debug)]
pub struct SwapSize(Option<crate::qemu::Mem>);

fn parse_swap(text: &str) -> Result<SwapSize> {
    match text {
        "0" => Ok(SwapSize(None)),
        _ => Ok(SwapSize(Some(crate::swap::parse_swap_size(text)?))),
    }
}

/// Refuses `--only` words that select no benchmark (a typo would
/// otherwise boot, run nothing and write an empty report), naming the
/// benchmarks there are. The names are `record::BENCHMARKS`, which a test
/// in `bench` keeps equal to the guest's table.
fn check_only(only: &[String]) -> Result<()> {
    let unmatched: Vec<&str> = only
        .iter()
        .map(String::as_str)
        .filter(|w| !record::BENCHMARKS.iter().any(|b| record::selected(w, b)))
        .collect();
    if !unmatched.is_empty() {
        anyhow::bail!(
            "--only {} selects no benchmark; the benchmarks are: {}",
            unmatched.join(","),
            record::BENCHMARKS.join(", ")
        );
    }
    Ok(())
}

/// Where run folders and `latest.json` go.
pub fn bench_root() -> PathBuf {
    toolchain::target_dir().join("bench")
}

pub fn bench(args: BenchArgs) -> Result<ExitCode> {
    if let Some(pair) = &args.compare {
        let root = bench_root();
        let (old, new) = (report_json::resolve(&pair[0], &root), report_json::resolve(&pair[1], &root));
        let (a, b) = (Report::read(&old)?, Report::read(&new)?);
        // `latest` is a copy: name the run folder it stands for.
        let name = |r: &Report, path: &Path| r.run_dir.clone().unwrap_or_else(|| path.display().to_string());
        print!("{}", compare::render(&a, &b, &name(&a, &old), &name(&b, &new)));
        return Ok(ExitCode::SUCCESS);
    }
    // Bad input is refused before anything is installed, built or booted.
    check_only(&args.only)?;
    let accel = crate::accel::resolve(args.accel)?;
    let qemu = install::ensure_qemu()?;
    trace::plugin::check_accel(args.trace, accel)?;
    // Refused before anything boots when this QEMU cannot load the plugin.
    let tracing = match args.trace {
        true => {
            let plugin = trace::plugin::build()?;
            trace::plugin::check(&qemu, &plugin)?;
            Some(trace::Tracing { plugin, kernel_elf: build::Images::existing(Flavor::Production).elf })
        }
        false => None,
    };
    let images = build::images(args.no_build, Flavor::Production)?;
    let mut smp = args.smp.clone();
    smp.sort_unstable();
    smp.dedup();
    let host = Host::gather(qemu.version.to_string(), accel.qemu_accel(), args.quick, smp, args.only.clone());
    let timeout = Duration::from_secs(args.timeout);
    let options = Options {
        live: std::io::stderr().is_terminal(),
        verbose: args.verbose,
        swap: args.swap.0.clone(),
        accel,
        host_tsc: || crate::host_tsc::measure().map(|r| r.hz),
        trace: tracing,
    };
    let mut launch = |config: &Config, echo: Echo| run::run_qemu(&qemu, &images, config, timeout, echo);
    let (dir, ok) = measure(host, &options, &mut launch, &bench_root())?;
    println!("report: {}", dir.join("report.md").display());
    Ok(if ok { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

pub struct Options {
    /// Draw progress bars (stderr is a terminal).
    pub live: bool,
    pub verbose: bool,
    /// Size of a swap disk to attach to every boot.
    pub swap: Option<crate::qemu::Mem>,
    pub accel: crate::accel::Accel,
    /// Measures the host's TSC rate (Hz) before each boot, to check the
    /// guest's calibration against (`host_tsc`).
    pub host_tsc: fn() -> Option<u64>,
    /// `--trace`: boot every CPU count a second time under the tracer.
    pub trace: Option<trace::Tracing>,
}

/// Boots once per CPU count in `host.smp` through `launch`, then writes the
/// run folder under `root` (also when boots failed: what arrived is still
/// worth keeping). Returns the folder and whether everything went right.
pub fn measure(
    mut host: Host,
    options: &Options,
    launch: &mut dyn FnMut(&Config, Echo) -> Result<Capture>,
    root: &Path,
) -> Result<(PathBuf, bool)> {
    let (mut runs, mut rows, mut failures) = (Vec::new(), Vec::new(), Vec::new());
    let mut traced_runs = Vec::new();
    let trace_tmp = root.join("trace-tmp");
    let symbols = options.trace.as_ref().map(|t| trace::symbols::Symbols::read(&t.kernel_elf)).transpose()?;
    for smp in host.smp.clone() {
        let host_tsc_hz = (options.host_tsc)();
        host.tsc_hz = host.tsc_hz.or(host_tsc_hz);
        let Some(mut judged) = boot(&host, options, launch, smp, None, &mut failures)? else { continue };
        note_host_tsc(&mut judged.run, host_tsc_hz);
        if let Some(tracing) = &options.trace {
            std::fs::create_dir_all(&trace_tmp).with_context(|| format!("creating {}", trace_tmp.display()))?;
            let out = trace_tmp.join(format!("smp{smp}.jsonl"));
            let _ = std::fs::remove_file(&out);
            let extra = trace::plugin::args(&tracing.plugin, &out);
            if let Some(mut traced) = boot(&host, options, launch, smp, Some(extra), &mut failures)? {
                note_host_tsc(&mut traced.run, host_tsc_hz);
                let problems = match trace::read_windows(&out) {
                    Ok(windows) => {
                        let (traces, mut problems) = trace::match_windows(&traced.rows, windows, symbols.as_ref());
                        problems.extend(trace::attach(&mut judged.rows, traces));
                        problems
                    }
                    Err(e) => vec![format!("{e:#}")],
                };
                for p in problems {
                    eprintln!("[smp {smp}] trace: {p}");
                    failures.push(Failure {
                        kind: FailureKind::Run,
                        smp,
                        bench: None,
                        variant: None,
                        detail: format!("trace: {p}"),
                    });
                }
                traced_runs.push(traced.run);
            }
        }
        runs.push(judged.run);
        rows.extend(judged.rows);
    }

    let voided: BTreeSet<(String, String, u32)> = failures
        .iter()
        .filter(|f| f.kind == FailureKind::Bench)
        .filter_map(|f| Some((f.bench.clone()?, f.variant.clone()?, f.smp)))
        .collect();
    let mut summary = stats::summarize(&rows, &voided);
    trace::summarize(&rows, &mut summary);
    stats::set_ceilings(&mut summary, host.cores);
    let report = Report {
        schema: REPORT_SCHEMA,
        record_schema: record::SCHEMA,
        host,
        runs,
        records: rows,
        failures,
        targets: targets::evaluate(&summary),
        summary,
        traced_runs,
        run_dir: None,
    };
    let traced_all = options.trace.is_none() || report.traced_runs.len() == report.host.smp.len();
    let ok = report.failures.is_empty() && report.runs.len() == report.host.smp.len() && traced_all;
    let dir = write_run(&report, root)?;
    if options.trace.is_some() {
        // Keep the tracer's raw windows with the run.
        for &smp in &report.host.smp {
            let _ =
                std::fs::rename(trace_tmp.join(format!("smp{smp}.jsonl")), dir.join(format!("trace-smp{smp}.jsonl")));
        }
    }
    Ok((dir, ok))
}

/// Adds the host's TSC rate to a boot's facts and warns when the guest's
/// calibration disagrees with it by more than 1%.
fn note_host_tsc(run: &mut report_json::RunInfo, host_hz: Option<u64>) {
    run.host_tsc_hz = host_hz;
    run.tsc_host_ppm = run.tsc_hz.zip(host_hz).and_then(|(g, h)| crate::host_tsc::disagreement_ppm(g, h));
    if let Some(warning) = crate::host_tsc::flag(run.tsc_hz, host_hz) {
        run.tsc_flagged = true;
        eprintln!("[smp {}] warning: {warning}", run.smp);
    }
}

/// One boot at `smp` CPUs (`extra`: the tracer's QEMU arguments, for the
/// traced boot), judged; `None` when it could not start (recorded in
/// `failures`). The judged failures are added to `failures`.
fn boot(
    host: &Host,
    options: &Options,
    launch: &mut dyn FnMut(&Config, Echo) -> Result<Capture>,
    smp: u32,
    extra: Option<Vec<String>>,
    failures: &mut Vec<Failure>,
) -> Result<Option<judge::Judged>> {
    let traced = extra.is_some();
    let (tag, disk) =
        if traced { (" traced", format!("bench-smp{smp}-traced")) } else { ("", format!("bench-smp{smp}")) };
    let config = Config {
        smp,
        accel: options.accel,
        gdb: None,
        mem: parse_mem("1G").expect("a valid size"),
        firmware: Firmware::Bios,
        xapic: false,
        guest: GuestOptions { mode: Mode::Bench, only: host.only.clone(), quick: host.quick, ..Default::default() },
        swap: options.swap.clone().map(|size| crate::swap::Swap::create(&disk, size)).transpose()?,
        extra: extra.unwrap_or_default(),
    };
    let display = progress::Progress::new(smp, options.live, options.verbose);
    let cap = launch(&config, display.echo());
    display.finish();
    let cap = match cap {
        Ok(cap) => cap,
        Err(e) => {
            eprintln!("[smp {smp}{tag}] not run: {e:#}");
            let prefix = if traced { "traced boot: " } else { "" };
            failures.push(Failure {
                kind: FailureKind::Run,
                smp,
                bench: None,
                variant: None,
                detail: format!("{prefix}not run: {e:#}"),
            });
            return Ok(None);
        }
    };
    let mut judged = judge::judge(&cap, smp, options.accel);
    for f in &mut judged.failures {
        let what = match (&f.bench, &f.variant) {
            (Some(b), Some(v)) => format!("{b} {v} failed its check"),
            _ => "broken run".into(),
        };
        eprintln!("[smp {smp}{tag}] {what}: {}", f.detail);
        if traced {
            f.detail = format!("traced boot: {}", f.detail);
        }
    }
    if !judged.failures.is_empty() {
        cap.print_failure_context();
    }
    eprintln!("[smp {smp}{tag}] {} Bench records in {:.1} s", judged.run.received_records, cap.elapsed.as_secs_f64());
    failures.append(&mut judged.failures);
    Ok(Some(judged))
}

/// Writes the run folder and `latest.json` next to it.
fn write_run(report: &Report, root: &Path) -> Result<PathBuf> {
    let name = report.host.run_folder_name();
    // Two runs in the same second get `-2`, `-3`, ... rather than mixing.
    let dir = (1..)
        .map(|i| if i == 1 { root.join(&name) } else { root.join(format!("{name}-{i}")) })
        .find(|d| !d.exists())
        .expect("some suffix is free");
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    report.write(&dir.join("report.json"))?;
    let plotted: BTreeSet<String> =
        plot::write_all(&stats::Index::new(&report.summary), &dir.join("plots")).into_iter().collect();
    let md = report_md::render(report, &plotted);
    let md_path = dir.join("report.md");
    std::fs::write(&md_path, md).with_context(|| format!("writing {}", md_path.display()))?;
    let latest = Report { run_dir: Some(dir.display().to_string()), ..report.clone() };
    latest.write(&root.join("latest.json"))?;
    Ok(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn swap_zero_means_no_disk() {
        assert!(parse_swap("0").unwrap().0.is_none());
        assert_eq!(parse_swap("64M").unwrap().0.unwrap().bytes, 64 << 20);
        assert!(parse_swap("lots").is_err());
        assert!(format!("{:#}", parse_swap("1K").unwrap_err()).contains("too small"));
    }

    #[test]
    fn only_must_select_some_benchmark() {
        assert!(check_only(&[]).is_ok());
        assert!(check_only(&["frames".into(), "vm.local".into()]).is_ok());
        let e = check_only(&["frames".into(), "frame.pair".into(), "nope".into()]).unwrap_err().to_string();
        assert!(e.starts_with("--only frame.pair,nope selects no benchmark; the benchmarks are: floor.clock, floor.rmw, floor.zero, floor.ipi, frames.pair,"), "{e}");
        assert!(e.ends_with("heap.small"), "{e}");
    }

    /// The whole command: a bad `--only` fails before QEMU is looked for,
    /// the image built or a report folder written.
    #[test]
    fn a_bad_only_is_refused_before_anything_runs() {
        use clap::Parser;
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            args: BenchArgs,
        }
        let cli = Cli::try_parse_from(["bench", "--only", "bogus", "--no-build"]).unwrap();
        let before = std::fs::read_dir(bench_root()).map(|d| d.count()).unwrap_or(0);
        let e = bench(cli.args).unwrap_err().to_string();
        assert!(e.contains("--only bogus selects no benchmark"), "{e}");
        assert_eq!(std::fs::read_dir(bench_root()).map(|d| d.count()).unwrap_or(0), before, "nothing written");
        // And the CPU limit, at parse time.
        let e = Cli::try_parse_from(["bench", "--smp", "1,257"]).err().unwrap().to_string();
        assert!(e.contains("the kernel runs at most 256 CPUs"), "{e}");
    }
}
