//! `bench` end to end against fake QEMUs: shell scripts that print the
//! records a guest would send and exit as QEMU would.

use super::report_json::{FailureKind, Host, Report};
use super::targets::Status;
use super::{measure, Options};
use crate::qemu::Config;
use crate::run::{capture, Capture, Echo};
use anyhow::Result;
use std::cell::RefCell;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

fn host(smp: Vec<u32>) -> Host {
    Host {
        cores: 2,
        qemu_version: "10.0.2".into(),
        accel: "tcg,thread=multi".into(),
        kernel_commit: "0123456789abcdef".into(),
        dirty: false,
        date: "2026-11-21T04:05:24Z".into(),
        quick: true,
        smp,
        only: vec!["frames".into()],
        tsc_hz: None,
    }
}

fn rec(json: &str) -> String {
    format!("echo '@@smpmm {{\"schema\":{},\"record\":{json}}}'\n", record::SCHEMA)
}

fn boot(smp: u32) -> String {
    boot_at(smp, HOST_TSC_HZ)
}

/// The host's TSC rate as the fake measurement gives it.
const HOST_TSC_HZ: u64 = 2_000_000_000;

/// A Boot record whose calibration found `tsc_hz`.
fn boot_at(smp: u32, tsc_hz: u64) -> String {
    rec(&format!(
        r#"{{"kind":"boot","cpus_online":{smp},"cpus_total":{smp},"apic":"x2apic","tsc_hz":{tsc_hz},"tsc_source":"hpet","tsc_spread_ppm":40,"tsc_bound_ppm":12,"usable_bytes":4096,"store":"ram","accel":"tcg"}}"#
    ))
}

fn bench(variant: &str, smp: u32, rep: u32, ops_per_sec: u64, buddy_locks: u64) -> String {
    bench_on(variant, smp, smp, rep, ops_per_sec, buddy_locks)
}

/// A repetition on `workers` of the `smp` CPUs (1: a solo run).
fn bench_on(variant: &str, smp: u32, workers: u32, rep: u32, ops_per_sec: u64, buddy_locks: u64) -> String {
    rec(&format!(
        r#"{{"kind":"bench","bench":"frames.pair","variant":"{variant}","smp":{smp},"workers":{workers},"rep":{rep},"ops":1000,"ns":5000,"ops_per_sec":{ops_per_sec},"ns_p50":120,"ns_p99":900,"ns_max":4000,"sample_every":64,"samples":16,"counters":{{"allocs":1000,"frees":1000,"buddy_locks":{buddy_locks}}}}}"#
    ))
}

/// A guest that measures frames.pair (magazine and global, 2 repetitions)
/// and scales the magazine perfectly; `fail` makes the global check fail.
/// Above one CPU the magazine variant also has its solo run (CPU 0 alone,
/// at the 1-CPU rate), as the guest sends for every-CPU benchmarks.
fn guest(smp: u32, fail: bool) -> String {
    let mut s = format!("echo 'kernel booting'\n{}", boot(smp));
    let runs = if smp > 1 { 3 } else { 2 };
    s += &rec(&format!(r#"{{"kind":"bench_plan","runs":{runs},"reps":2,"quick":true}}"#));
    for rep in 0..2 {
        s += &bench("magazine", smp, rep, 10_000_000 * u64::from(smp) + u64::from(rep) * 100_000, 10);
    }
    if smp > 1 {
        for rep in 0..2 {
            s += &bench_on("magazine", smp, 1, rep, 10_000_000, 10);
        }
    }
    for rep in 0..2 {
        s += &bench("global", smp, rep, 4_000_000 / u64::from(smp), 1000);
    }
    if fail {
        s += &rec(&format!(
            r#"{{"kind":"bench_fail","bench":"frames.pair","variant":"global","smp":{smp},"detail":"3 frames lost"}}"#
        ));
    }
    s += &rec(&format!(r#"{{"kind":"bench_done","runs":{runs},"failed":{}}}"#, u32::from(fail)));
    s + if fail { "exit 35" } else { "exit 33" }
}

/// Runs `measure` with `script(smp)` as the guest of each boot; also
/// returns the guest command lines the boots were given.
fn run(smp: Vec<u32>, root: &Path, script: impl Fn(u32) -> String) -> (std::path::PathBuf, bool, Vec<String>) {
    let cmdlines = RefCell::new(Vec::new());
    let mut launch = |config: &Config, echo: Echo| -> Result<Capture> {
        cmdlines.borrow_mut().push(config.guest.cmdline());
        let mut sh = Command::new("/bin/sh");
        sh.arg("-c").arg(script(config.smp));
        capture(sh, Duration::from_secs(1), echo)
    };
    let options = Options {
        live: false,
        verbose: false,
        swap: None,
        accel: crate::accel::Accel::Tcg,
        host_tsc: || Some(HOST_TSC_HZ),
        trace: None,
    };
    let (dir, ok) = measure(host(smp), &options, &mut launch, root).unwrap();
    (dir, ok, cmdlines.into_inner())
}

#[test]
fn a_clean_run_writes_the_whole_folder() {
    let root = tempfile::tempdir().unwrap();
    let (dir, ok, cmdlines) = run(vec![1, 2, 4], root.path(), |smp| guest(smp, false));
    assert!(ok);
    assert_eq!(cmdlines, ["mode=bench only=frames quick=1"; 3]);
    assert_eq!(dir, root.path().join("20261121T040524Z-0123456"));
    let report = Report::read(&dir.join("report.json")).unwrap();
    assert_eq!(
        report.runs.iter().map(|r| (r.smp, r.ok, r.cpus_online)).collect::<Vec<_>>(),
        [(1, true, Some(1)), (2, true, Some(2)), (4, true, Some(4))]
    );
    assert_eq!(report.records.len(), 16, "12 measured and 4 solo repetitions");
    assert!(report.failures.is_empty(), "{:?}", report.failures);
    assert!(report.runs.iter().all(|r| r.accel.as_deref() == Some("tcg")), "the Boot record's accelerator is kept");
    let s = report.summary.iter().find(|s| s.variant == "magazine" && s.smp == 4).unwrap();
    assert_eq!((s.reps, s.ops_per_sec), (2, 40_050_000.0));
    assert_eq!(s.counters_per_op["buddy_locks"], 0.01);
    // 2 host cores: the ceiling at 4 CPUs is 2 × 10M, which 40M exceeds
    // (a fake guest can); the row is set against it all the same.
    assert_eq!((s.ceiling, s.efficiency), (Some(20_000_000.0), Some(40_050_000.0 / 20_000_000.0)));
    let g = report.summary.iter().find(|s| s.variant == "global" && s.smp == 4).unwrap();
    assert_eq!(g.ceiling, None, "no solo run, no ceiling");
    // 40.05M against 1M: met; 1 buddy lock per 100 allocs: met.
    assert_eq!(report.targets[0].status, Status::Met, "{:?}", report.targets[0]);
    assert_eq!(report.targets[1].status, Status::Met, "{:?}", report.targets[1]);
    assert_eq!(report.targets[4].status, Status::NotMeasured);

    let md = std::fs::read_to_string(dir.join("report.md")).unwrap();
    assert!(
        md.contains("| frames.pair | magazine | 10.1M | 20.1M | 40.0M | 100% / 200% | 3.99× (4/1) | 40.05× |"),
        "{md}"
    );
    assert!(md.contains("![frames.pair: ops/s against CPU count](plots/frames.pair.svg)"));
    assert!(
        md.contains("- Run at 4 CPUs: guest exited with success in ")
            && md.contains(", 4 CPUs online, accel tcg, x2apic, TSC 2.000 GHz"),
        "{md}"
    );
    let svg = std::fs::read_to_string(dir.join("plots/frames.pair.svg")).unwrap();
    assert!(svg.contains("\nmagazine\n") && svg.contains("\nglobal (baseline)\n"), "legend in {svg}");

    let latest = Report::read(&root.path().join("latest.json")).unwrap();
    assert_eq!(latest.run_dir.as_deref(), Some(dir.to_str().unwrap()));
    assert_eq!(Report { run_dir: None, ..latest }, report);

    // A second run in the same second gets its own folder.
    let (again, _, _) = run(vec![1], root.path(), |smp| guest(smp, false));
    assert_eq!(again, root.path().join("20261121T040524Z-0123456-2"));
}

#[test]
fn a_boot_whose_tsc_disagrees_with_the_host_is_flagged() {
    let root = tempfile::tempdir().unwrap();
    // 0.5% off at 1 CPU: fine; 4% off at 2 CPUs (as the old PIT
    // calibration was under load): flagged, but the run still counts.
    let (dir, ok, _) = run(vec![1, 2], root.path(), |smp| {
        let hz = if smp == 2 { 2_080_000_000 } else { 2_010_000_000 };
        guest(smp, false).replacen(&boot(smp), &boot_at(smp, hz), 1)
    });
    assert!(ok);
    let report = Report::read(&dir.join("report.json")).unwrap();
    assert_eq!(report.host.tsc_hz, Some(HOST_TSC_HZ));
    let facts: Vec<_> = report
        .runs
        .iter()
        .map(|r| (r.smp, r.host_tsc_hz, r.tsc_host_ppm, r.tsc_flagged, r.tsc_source.as_deref(), r.tsc_spread_ppm))
        .collect();
    assert_eq!(
        facts,
        [
            (1, Some(HOST_TSC_HZ), Some(5_000), false, Some("hpet"), Some(40)),
            (2, Some(HOST_TSC_HZ), Some(40_000), true, Some("hpet"), Some(40))
        ]
    );
    let md = std::fs::read_to_string(dir.join("report.md")).unwrap();
    assert!(md.contains("- Host TSC: 2.000 GHz"), "{md}");
    assert!(
        md.contains("Run at 1 CPU") && md.contains("TSC 2.010 GHz (hpet, spread 40 ppm; 0.50% from the host's)"),
        "{md}"
    );
    assert!(
        md.contains("TSC 2.080 GHz (hpet, spread 40 ppm; 4.00% from the host's) **TSC off by more than 1%"),
        "{md}"
    );
}

#[test]
fn a_failed_check_fails_the_command_but_the_report_is_written() {
    let root = tempfile::tempdir().unwrap();
    let (dir, ok, _) = run(vec![1, 2], root.path(), |smp| guest(smp, smp == 2));
    assert!(!ok);
    let report = Report::read(&dir.join("report.json")).unwrap();
    assert!(report.runs.iter().all(|r| r.ok), "the boot itself was fine: {:?}", report.runs);
    assert_eq!(report.failures.len(), 1);
    let f = &report.failures[0];
    assert_eq!(
        (f.kind.clone(), f.smp, f.variant.as_deref(), f.detail.as_str()),
        (FailureKind::Bench, 2, Some("global"), "3 frames lost")
    );
    let voided: Vec<_> = report.summary.iter().filter(|s| s.failed).map(|s| (s.variant.as_str(), s.smp)).collect();
    assert_eq!(voided, [("global", 2)]);
    let md = std::fs::read_to_string(dir.join("report.md")).unwrap();
    assert!(md.contains("- frames.pair global at 2 CPUs: check failed, figures void: 3 frames lost"), "{md}");
    assert!(md.contains("| 2 | global | failed (void) |"), "{md}");
}

#[test]
fn a_timeout_keeps_what_arrived() {
    let root = tempfile::tempdir().unwrap();
    let (dir, ok, _) = run(vec![1, 2], root.path(), |smp| {
        if smp == 2 {
            // Boots, measures one repetition, then hangs.
            format!(
                "{}{}{}exec sleep 1000",
                boot(2),
                rec(r#"{"kind":"bench_plan","runs":2,"reps":2,"quick":true}"#),
                bench("magazine", 2, 0, 5, 0)
            )
        } else {
            guest(smp, false)
        }
    });
    assert!(!ok);
    let report = Report::read(&dir.join("report.json")).unwrap();
    let run2 = &report.runs[1];
    assert_eq!((run2.smp, run2.ok, run2.exit.as_str()), (2, false, "timeout after 1 s"));
    assert_eq!((run2.expected_records, run2.received_records), (Some(4), 1));
    assert_eq!(report.records.len(), 5, "4 from the first boot, 1 before the hang");
    let details: Vec<&str> = report.failures.iter().map(|f| f.detail.as_str()).collect();
    assert_eq!(details, ["timeout after 1 s", "no BenchDone record (the run stopped after 1 Bench records)"]);
}

/// `--accel kvm` reaches every boot's QEMU command line, and a guest that
/// finds itself on TCG anyway makes the boot broken (report written).
#[test]
fn a_boot_on_the_wrong_accelerator_is_broken() {
    let root = tempfile::tempdir().unwrap();
    let images =
        crate::build::Images { bios: "/img/bios.img".into(), uefi: "/img/uefi.img".into(), elf: "/img/kernel".into() };
    let lines = RefCell::new(Vec::new());
    let mut launch = |config: &Config, echo: Echo| -> Result<Capture> {
        lines.borrow_mut().push(config.args(&images).join(" "));
        let mut sh = Command::new("/bin/sh");
        sh.arg("-c").arg(guest(config.smp, false));
        capture(sh, Duration::from_secs(1), echo)
    };
    let options = Options {
        live: false,
        verbose: false,
        swap: None,
        accel: crate::accel::Accel::Kvm,
        host_tsc: || Some(HOST_TSC_HZ),
        trace: None,
    };
    let (dir, ok) = measure(host(vec![1]), &options, &mut launch, root.path()).unwrap();
    assert!(!ok);
    assert!(lines.borrow()[0].starts_with("-machine q35 -accel kvm -cpu host -smp 1 "), "{:?}", lines.borrow());
    let report = Report::read(&dir.join("report.json")).unwrap();
    assert_eq!(report.runs[0].accel.as_deref(), Some("tcg"));
    let details: Vec<&str> = report.failures.iter().map(|f| f.detail.as_str()).collect();
    assert_eq!(details, ["Boot record: the guest runs on tcg, but QEMU was asked for kvm"]);
}

/// `--trace`: the second boot of each CPU count gets `-plugin`, and its
/// fake QEMU writes the windows a tracer would (window i for the boot's
/// i-th Bench record); `drop` leaves one window out.
fn traced_run(root: &Path, drop: Option<u32>) -> (std::path::PathBuf, bool, Vec<bool>) {
    let traced_boots = RefCell::new(Vec::new());
    let mut launch = |config: &Config, echo: Echo| -> Result<Capture> {
        let plugin = config.extra.iter().position(|a| a == "-plugin").map(|i| config.extra[i + 1].clone());
        traced_boots.borrow_mut().push(plugin.is_some());
        let mut script = String::new();
        if let Some(arg) = plugin {
            let out = arg.split_once(",out=").unwrap().1.to_string();
            // The fake guest's 6 records: magazine, magazine on CPU 0 alone,
            // global, 2 repetitions each.
            for seq in (0..6).filter(|&s| Some(s) != drop) {
                let line = format!(
                    r#"{{"seq":{seq},"begin_pc":0,"end_pc":0,"vcpus":[{{"insns":{},"locked":5,"ipis":1,"conflicting":40}}],"ipi_vectors":{{"241":1}},"conflicting_lines":1,"lines":[{{"phys":4096,"vaddr":8192,"accesses":40,"writes":20,"vcpus":[0,1]}}]}}"#,
                    50_000 * (seq + 1)
                );
                script += &format!("echo '{line}' >> {out}\n");
            }
        }
        script += &guest(config.smp, false);
        let mut sh = Command::new("/bin/sh");
        sh.arg("-c").arg(script);
        capture(sh, Duration::from_secs(1), echo)
    };
    let tracing =
        super::trace::Tracing { plugin: "/fake/libtracer.so".into(), kernel_elf: std::env::current_exe().unwrap() };
    let options = Options {
        live: false,
        verbose: false,
        swap: None,
        accel: crate::accel::Accel::Tcg,
        host_tsc: || Some(HOST_TSC_HZ),
        trace: Some(tracing),
    };
    let (dir, ok) = measure(host(vec![2]), &options, &mut launch, root).unwrap();
    (dir, ok, traced_boots.into_inner())
}

#[test]
fn trace_boots_each_count_twice_and_attaches_the_windows() {
    let root = tempfile::tempdir().unwrap();
    let (dir, ok, traced) = traced_run(root.path(), None);
    assert_eq!(traced, [false, true], "a plain boot, then a traced one");
    assert!(ok);
    let report = Report::read(&dir.join("report.json")).unwrap();
    assert!(report.failures.is_empty(), "{:?}", report.failures);
    assert_eq!((report.runs.len(), report.traced_runs.len()), (1, 1));
    // Window 4 is global rep 0's; window 2 the solo run's rep 0.
    let global0 = report.records.iter().find(|r| r.variant == "global" && r.rep == 0).unwrap();
    assert_eq!(global0.trace.as_ref().unwrap().insns, 250_000);
    let solo0 = report.records.iter().find(|r| r.is_solo() && r.rep == 0).unwrap();
    assert_eq!(solo0.trace.as_ref().unwrap().insns, 150_000);
    let s = report.summary.iter().find(|s| s.variant == "magazine").unwrap();
    let t = s.trace.as_ref().unwrap();
    // (50k + 100k) instructions over 2 × 1000 ops; every boot of the fake
    // guest runs at the same speed, so the slowdown is 1.
    assert_eq!((t.insns_per_op, t.conflicting_per_op, t.slowdown), (75.0, 0.04, Some(1.0)));
    let md = std::fs::read_to_string(dir.join("report.md")).unwrap();
    assert!(md.contains("| frames.pair | magazine | 2 | 75.0 | 0.005 | 0.040 | 0.0010 | 1.0× | `0x2000` (phys 0x1000) 0.04/op, 0.020 writes/op, CPUs 0,1 |"), "{md}");
    assert!(dir.join("trace-smp2.jsonl").is_file(), "the raw windows are kept with the run");
}

#[test]
fn a_lost_trace_window_fails_the_run() {
    let root = tempfile::tempdir().unwrap();
    let (dir, ok, _) = traced_run(root.path(), Some(1));
    assert!(!ok);
    let report = Report::read(&dir.join("report.json")).unwrap();
    let details: Vec<&str> = report.failures.iter().map(|f| f.detail.as_str()).collect();
    assert_eq!(
        details,
        [
            "trace: no trace window for Bench record 1 (frames.pair magazine rep 1)",
            "trace: frames.pair magazine: the traced boot has no repetition to match a plain one"
        ]
    );
}
