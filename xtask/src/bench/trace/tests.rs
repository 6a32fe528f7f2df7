use super::check::{calibrate, shootdown_icr_writes, CROSS_CALL_VECTOR, PRIVATE_BOUND, SHARED_SYMBOL};
use super::*;
use crate::bench::report_json::tests_support::sample;
use crate::bench::report_json::Report;
use crate::bench::stats;

/// A window line as the plugin writes it.
fn window_line(seq: u32, insns: u64, conflicting: u64, vaddr: u64) -> String {
    format!(
        r#"{{"seq":{seq},"begin_pc":4096,"end_pc":4196,"vcpus":[{{"insns":{insns},"locked":10,"ipis":2,"conflicting":{conflicting}}},{{"insns":{insns},"locked":10,"ipis":0,"conflicting":0}}],"ipi_vectors":{{"240":1,"241":1}},"conflicting_lines":1,"lines":[{{"phys":4160,"vaddr":{vaddr},"accesses":{conflicting},"writes":5,"vcpus":[0,1]}}]}}"#
    )
}

fn row(bench: &str, variant: &str, rep: u32, ops: u64) -> BenchRow {
    // Every CPU of the sample's 2 works.
    BenchRow {
        bench: bench.into(),
        variant: variant.into(),
        rep,
        ops,
        ns: 1_000_000,
        ops_per_sec: ops * 1000,
        workers: 2,
        ..sample().records[0].clone()
    }
}

fn windows(lines: &[String]) -> Vec<Window> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("w.jsonl");
    std::fs::write(&path, lines.join("\n") + "\n").unwrap();
    read_windows(&path).unwrap()
}

#[test]
fn windows_parse_and_bad_lines_are_named() {
    let w = windows(&[window_line(0, 100, 7, 0x10)]);
    assert_eq!((w[0].seq, w[0].vcpus[0].insns, w[0].lines[0].phys, w[0].ipi_vectors["241"]), (0, 100, 4160, 1));
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("w.jsonl");
    std::fs::write(&path, window_line(0, 1, 1, 1) + "\n{\"seq\":\n").unwrap();
    let err = format!("{:#}", read_windows(&path).unwrap_err());
    assert!(err.contains("line 2: not a tracer window"), "{err}");
}

#[test]
fn windows_match_records_by_sequence_number() {
    let traced = [row("a", "x", 0, 10), row("a", "x", 1, 20), row("b", "y", 0, 5)];
    let (traces, problems) = match_windows(
        &traced,
        windows(&[window_line(1, 200, 4, 0), window_line(0, 100, 2, 0), window_line(2, 50, 0, 0)]),
        None,
    );
    assert!(problems.is_empty(), "{problems:?}");
    let t = &traces[&("a".into(), "x".into(), 2, 1)];
    assert_eq!((t.ops, t.insns, t.locked, t.ipis, t.conflicting), (20, 400, 20, 2, 4));
    assert_eq!(traces[&("a".into(), "x".into(), 2, 0)].insns, 200);

    // A window lost (a failed repetition's has no end mark), one extra,
    // one twice.
    let (traces, problems) = match_windows(
        &traced,
        windows(&[window_line(0, 1, 0, 0), window_line(0, 1, 0, 0), window_line(7, 1, 0, 0)]),
        None,
    );
    assert_eq!(traces.len(), 1);
    assert_eq!(
        problems,
        [
            "the tracer wrote window 0 twice",
            "no trace window for Bench record 1 (a x rep 1)",
            "no trace window for Bench record 2 (b y rep 0)",
            "trace windows [7] match no Bench record",
        ]
    );
}

#[test]
fn traces_attach_to_the_plain_boots_repetitions() {
    let traced = [row("a", "x", 0, 10), row("a", "x", 1, 20)];
    let (traces, _) = match_windows(&traced, windows(&[window_line(0, 100, 2, 0), window_line(1, 100, 2, 0)]), None);
    let mut plain = vec![row("a", "x", 0, 1000), row("a", "x", 1, 1000), row("a", "x", 2, 1000)];
    assert_eq!(attach(&mut plain, traces), ["a x: the traced boot has no repetition to match a plain one"]);
    assert_eq!(plain[1].trace.as_ref().unwrap().ops, 20, "the traced repetition's own ops");
    assert!(plain[2].trace.is_none());
}

#[test]
fn summary_figures_are_totals_per_traced_op() {
    let traced = [row("a", "x", 0, 10), row("a", "x", 1, 30)];
    let (traces, _) =
        match_windows(&traced, windows(&[window_line(0, 100, 20, 0x1000), window_line(1, 300, 60, 0x1000)]), None);
    let mut plain = vec![row("a", "x", 0, 400), row("a", "x", 1, 400)];
    attach(&mut plain, traces);
    let mut summary = stats::summarize(&plain, &Default::default());
    summarize(&plain, &mut summary);
    let t = summary[0].trace.as_ref().unwrap();
    assert_eq!(t.reps, 2);
    assert_eq!(t.insns_per_op, 800.0 / 40.0);
    assert_eq!(t.conflicting_per_op, 80.0 / 40.0);
    assert_eq!(t.ipis_per_op, 4.0 / 40.0);
    assert_eq!(t.locked_per_op, 40.0 / 40.0);
    // Plain 400k ops/s against a traced median of 20k ops/s (10 and 30
    // ops in 1 ms).
    assert_eq!(t.traced_ops_per_sec, 20_000.0);
    assert_eq!(t.slowdown, Some(20.0));
    assert_eq!(t.lines.len(), 1, "one line over both repetitions");
    assert_eq!((t.lines[0].phys, t.lines[0].accesses_per_op, t.lines[0].writes_per_op), (4160, 2.0, 10.0 / 40.0));
}

#[test]
fn reports_with_traces_round_trip_and_old_reports_still_load() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("report.json");
    // An older report: no trace fields at all.
    let old = sample();
    old.write(&path).unwrap();
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(!text.contains("trace"), "{text}");
    assert_eq!(Report::read(&path).unwrap(), old);

    let mut report = sample();
    let (traces, _) = match_windows(&report.records, windows(&[window_line(0, 100, 2, 0)]), None);
    attach(&mut report.records, traces);
    summarize(&report.records, &mut report.summary);
    report.traced_runs = report.runs.clone();
    report.write(&path).unwrap();
    assert_eq!(Report::read(&path).unwrap(), report);
}

#[test]
fn the_report_section_names_lines_and_the_slowdown() {
    let mut report = sample();
    let (mut traces, _) = match_windows(&report.records, windows(&[window_line(0, 100, 2, 0x40)]), None);
    for t in traces.values_mut() {
        t.lines[0].symbol = Some("kernel::heap::HEAP+0x8".into());
    }
    attach(&mut report.records, traces);
    summarize(&report.records, &mut report.summary);
    let mut md = String::new();
    md::section(&mut md, &report.summary);
    assert!(md.contains("## Sharing trace"), "{md}");
    assert!(md.contains("not speed figures"), "{md}");
    assert!(md.contains("| frames.pair | magazine | 2 | 20.0 | 2.000 | 0.200 | 0.2000 |"), "{md}");
    assert!(md.contains("`kernel::heap::HEAP+0x8` (phys 0x1040) 0.20/op, 0.500 writes/op, CPUs 0,1"), "{md}");
    let mut none = String::new();
    md::section(&mut none, &sample().summary);
    assert!(none.is_empty(), "no section without traces");
    // Only frames.pair traced: the calibration says it was not checked.
    let mut cal = String::new();
    md::calibration(&mut cal, &report.records);
    assert!(cal.contains("Not checked: the calibration needs the floor.rmw and tlb.shootdown rows"), "{cal}");
}

#[test]
fn the_report_gives_the_calibration_verdicts() {
    let rows = [
        traced(("floor.rmw", "shared", 0), 1000, 2100, Some(SHARED_SYMBOL), (0, None)),
        traced(("floor.rmw", "private", 0), 1000, 3, None, (0, None)),
        traced(("tlb.shootdown", "cached-2", 0), 10, 0, None, (10, Some(12))),
    ];
    let mut md = String::new();
    md::calibration(&mut md, &rows);
    assert!(md.contains("### Tracer calibration"), "{md}");
    assert!(md.contains("- floor.rmw shared **pass**: 2.10 conflicting accesses/op at least"), "{md}");
    assert!(md.contains("- floor.rmw private **pass**"), "{md}");
    assert!(
        md.contains("- tlb.shootdown IPIs **FAIL**: cached-2 rep 0: tracer saw 11 IPIs sent, kernel counted Some(12)"),
        "{md}"
    );
    let mut none = String::new();
    md::calibration(&mut none, &[]);
    assert!(none.is_empty());
}

/// A calibration row: (bench, variant, rep), ops, conflicting accesses,
/// the top line's symbol, cross-call IPIs seen (one wake-up IPI is added)
/// and the kernel's count of all IPIs sent.
fn traced(
    (bench, variant, rep): (&str, &str, u32),
    ops: u64,
    conflicting: u64,
    top: Option<&str>,
    (cross, kernel_ipis): (u64, Option<u64>),
) -> BenchRow {
    let mut r = row(bench, variant, rep, ops);
    if let Some(n) = kernel_ipis {
        r.counters.insert("ipis".into(), n);
    }
    r.trace = Some(RepTrace {
        ops,
        ns: 1,
        ops_per_sec: 1,
        insns: 1,
        locked: 1,
        ipis: cross + 1,
        conflicting,
        conflicting_lines: 1,
        ipi_vectors: [(CROSS_CALL_VECTOR.to_string(), cross), ("241".into(), 1)].into(),
        vcpus: vec![],
        lines: vec![TraceLine {
            phys: 0,
            vaddr: 0,
            accesses: conflicting,
            writes: 1,
            vcpus: vec![0, 1],
            symbol: top.map(String::from),
        }],
    });
    r
}

#[test]
fn calibration_passes_on_the_expected_figures() {
    let rows = [
        traced(("floor.rmw", "shared", 0), 1000, 2100, Some(SHARED_SYMBOL), (0, None)),
        traced(("floor.rmw", "private", 0), 1000, 3, Some("bench::team::JOB"), (0, None)),
        traced(("tlb.shootdown", "cached-2", 0), 10, 0, None, (10, Some(11))),
        traced(("tlb.shootdown", "cached-1", 0), 10, 0, None, (0, Some(1))),
    ];
    let v = calibrate(&rows);
    assert_eq!((shootdown_icr_writes(1, 8), shootdown_icr_writes(4, 8), shootdown_icr_writes(8, 8)), (0, 3, 1));
    assert_eq!(shootdown_icr_writes(2, 2), 1, "one other CPU: no broadcast");
    assert!(v.iter().all(|v| v.ok), "{v:?}");
    assert_eq!(v.len(), 3);
}

#[test]
fn calibration_fails_on_each_wrong_figure() {
    let rows = [
        traced(("floor.rmw", "shared", 0), 1000, 900, Some(SHARED_SYMBOL), (0, None)),
        traced(("floor.rmw", "shared", 1), 1000, 2000, Some("kernel::heap::HEAP"), (0, None)),
        traced(("floor.rmw", "private", 0), 1000, (PRIVATE_BOUND * 1000.0) as u64 + 1, None, (0, None)),
        traced(("floor.rmw", "private", 1), 1000, 0, Some("bench::workloads::floor::PRIVATE+0x40"), (0, None)),
        traced(("tlb.shootdown", "cached-2", 0), 10, 0, None, (9, Some(11))),
        traced(("tlb.shootdown", "cached-2", 1), 10, 0, None, (0, Some(1))),
        // A reader that went lazy would be asked less; one asked twice more.
        {
            let mut r = traced(("tlb.shootdown", "cached-2", 2), 10, 0, None, (10, Some(11)));
            r.counters.insert("targets".into(), 20);
            r
        },
    ];
    let v = calibrate(&rows);
    assert!(v.iter().all(|v| !v.ok), "{v:?}");
    assert!(v[0].detail.contains("rep 0: 0.900 conflicting accesses/op, expected >= 1"), "{}", v[0].detail);
    assert!(v[0].detail.contains("rep 1: top conflicting line is"), "{}", v[0].detail);
    assert!(v[1].detail.contains("bound 0.05"), "{}", v[1].detail);
    assert!(v[1].detail.contains("private counter line"), "{}", v[1].detail);
    assert!(v[2].detail.contains("rep 0: tracer saw 10 IPIs sent, kernel counted Some(11)"), "{}", v[2].detail);
    assert!(v[2].detail.contains("rep 0: 9 shootdown IPIs for 10 unmaps at 2 CPUs, want 10"), "{}", v[2].detail);
    assert!(v[2].detail.contains("rep 1: 0 shootdown IPIs for 10 unmaps at 2 CPUs, want 10"), "{}", v[2].detail);
    assert!(v[2].detail.contains("rep 2: 20 CPUs asked for 10 unmaps, want 1 each"), "{}", v[2].detail);
    // Not running is not passing.
    assert!(calibrate(&[]).iter().all(|v| !v.ok));
}
