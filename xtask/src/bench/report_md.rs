//! `report.md`: the run for people. Host facts and the TCG caveat first,
//! then a summary table, one section per benchmark, and the targets.

use super::report_json::{FailureKind, Report, Summary};
use super::stats::{baseline_of, buddy_locks_per_100_allocs, costs, is_latency, latency, si, Index};
use std::collections::BTreeSet;
use std::fmt::Write;

/// Renders the report; `plotted` names the benchmarks that have an SVG in
/// `plots/`.
pub fn render(report: &Report, plotted: &BTreeSet<String>) -> String {
    let mut md = String::new();
    header(&mut md, report);
    failures(&mut md, report);
    let idx = Index::new(&report.summary);
    let smps = cpu_counts(report);
    floor_table(&mut md, &idx, &smps);
    summary_table(&mut md, &idx, &smps);
    for (bench, variants) in idx.benches() {
        bench_section(&mut md, &idx, bench, &variants, plotted.contains(bench));
    }
    super::trace::md::section(&mut md, &report.summary);
    super::trace::md::calibration(&mut md, &report.records);
    targets(&mut md, report);
    md
}

fn header(md: &mut String, r: &Report) {
    let h = &r.host;
    let dirty = if h.dirty { " (with uncommitted changes)" } else { "" };
    let _ = writeln!(md, "# Benchmark report\n");
    let _ = writeln!(md, "- Kernel commit: `{}`{dirty}", h.kernel_commit);
    let _ = writeln!(md, "- Date (UTC): {}", h.date);
    let _ = writeln!(md, "- Host: {} cores; QEMU {}, `-accel {}`", h.cores, h.qemu_version, h.accel);
    let smp: Vec<String> = h.smp.iter().map(u32::to_string).collect();
    let only = if h.only.is_empty() { "all".to_string() } else { h.only.join(", ") };
    let quick = if h.quick { " (quick: fewer, shorter repetitions)" } else { "" };
    let _ = writeln!(md, "- CPU counts: {}; benchmarks: {only}{quick}", smp.join(", "));
    if let Some(hz) = h.tsc_hz {
        let _ = writeln!(
            md,
            "- Host TSC: {:.3} GHz, measured by xtask against its monotonic clock; a boot whose calibration is more than 1% \
             from it is flagged ({})",
            hz as f64 / 1e9,
            crate::host_tsc::TCG_ONLY
        );
    }
    for run in &r.runs {
        // Older reports do not record the guest's accelerator.
        let accel = run.accel.as_ref().map(|a| format!(", accel {a}")).unwrap_or_default();
        let boot = match (run.cpus_online, &run.apic, run.tsc_hz) {
            (Some(cpus), Some(apic), Some(hz)) => {
                format!(", {cpus} CPUs online{accel}, {apic}, TSC {:.3} GHz{}", hz as f64 / 1e9, tsc_note(run))
            }
            _ => ", no Boot record".to_string(),
        };
        let mark = if run.ok { "" } else { " **(broken run)**" };
        let cpus = if run.smp == 1 { "CPU" } else { "CPUs" };
        let _ = writeln!(md, "- Run at {} {cpus}: {} in {:.1} s{boot}{mark}", run.smp, run.exit, run.duration_s);
    }
    let _ = writeln!(
        md,
        "\n> **How to read this.** The host has {cores} cores and QEMU {how}. \
         With more vCPUs than {cores}, the vCPUs take turns on the host cores, so scaling past \
         {cores} CPUs shows contention costs (locks, cache-line and IPI traffic), not parallel speed. \
         The efficiency columns show it: each row where every CPU works is set against its host \
         ceiling, min(CPUs, {cores}) × the rate of CPU 0 running the same workload alone (the others \
         halted) in the same boot.\n",
        cores = h.cores,
        how = if h.accel.starts_with("kvm") { "runs the CPUs under KVM" } else { "emulates the CPUs with TCG" }
    );
}

/// How a boot calibrated its TSC and how that compares with the host.
fn tsc_note(run: &crate::bench::report_json::RunInfo) -> String {
    let mut facts = Vec::new();
    if let Some(source) = &run.tsc_source {
        facts.push(match run.tsc_spread_ppm {
            Some(ppm) => format!("{source}, spread {ppm} ppm"),
            None => source.clone(),
        });
    }
    if let Some(ppm) = run.tsc_host_ppm {
        facts.push(format!("{:.2}% from the host's", ppm as f64 / 1e4));
    }
    let mut note = if facts.is_empty() { String::new() } else { format!(" ({})", facts.join("; ")) };
    if run.tsc_flagged {
        note += " **TSC off by more than 1% from the host's: this boot's ns and ops/s figures are off by as much**";
    }
    note
}

fn failures(md: &mut String, r: &Report) {
    if r.failures.is_empty() {
        return;
    }
    let _ = writeln!(md, "## Failures\n");
    for f in &r.failures {
        match f.kind {
            FailureKind::Bench => {
                let (b, v) = (f.bench.as_deref().unwrap_or("?"), f.variant.as_deref().unwrap_or("?"));
                let _ = writeln!(md, "- {b} {v} at {} CPUs: check failed, figures void: {}", f.smp, f.detail);
            }
            FailureKind::Run => {
                let _ = writeln!(md, "- run at {} CPUs: {}", f.smp, f.detail);
            }
        }
    }
    md.push('\n');
}

/// The CPU counts asked for plus any that arrived.
fn cpu_counts(r: &Report) -> Vec<u32> {
    let set: BTreeSet<u32> = r.host.smp.iter().copied().chain(r.summary.iter().map(|s| s.smp)).collect();
    set.into_iter().collect()
}

fn summary_table(md: &mut String, idx: &Index, smps: &[u32]) {
    let _ = writeln!(md, "## Summary\n");
    let _ = writeln!(
        md,
        "Median ops/s (all CPUs together) at each CPU count; efficiency against the host ceiling at each CPU count \
         above one (rows where only some CPUs work have none); speedup and ratio to the baseline variant at the \
         largest CPU count measured.\n"
    );
    let many: Vec<u32> = smps.iter().copied().filter(|&n| n > 1).collect();
    let mut head = String::from("| benchmark | variant |");
    let mut rule = String::from("|---|---|");
    for n in smps {
        let _ = write!(head, " {n} CPU{} |", if *n == 1 { "" } else { "s" });
        rule += "---:|";
    }
    let eff_head = format!("efficiency ({})", many.iter().map(u32::to_string).collect::<Vec<_>>().join(" / "));
    let _ = writeln!(md, "{head} {eff_head} | speedup | vs baseline |\n{rule}---:|---:|---:|");
    for (bench, variants) in idx.benches() {
        for variant in variants {
            let mut line = format!("| {bench} | {variant} |");
            for &n in smps {
                let cell = match idx.get(bench, variant, n) {
                    Some(s) if s.failed => "failed".to_string(),
                    Some(s) => si(s.ops_per_sec),
                    None => "–".to_string(),
                };
                let _ = write!(line, " {cell} |");
            }
            let effs: Vec<String> = many
                .iter()
                .map(|&n| idx.good(bench, variant, n).and_then(|s| s.efficiency).map_or("–".into(), percent))
                .collect();
            let effs = if effs.iter().all(|e| e == "–") { "–".to_string() } else { effs.join(" / ") };
            let max = idx.smps(bench, variant).into_iter().max().unwrap_or(1);
            let speedup = idx.speedup(bench, variant, max).map_or("–".into(), |x| format!("{x:.2}× ({max}/1)"));
            let _ = writeln!(md, "{line} {effs} | {speedup} | {} |", vs_baseline(idx, bench, variant, max));
        }
    }
    md.push('\n');
}

fn percent(x: f64) -> String {
    format!("{:.0}%", 100.0 * x)
}

/// The floor suite as the limits the other rows run against: the time one
/// CPU spends per operation (CPUs working at once share the rate).
fn floor_table(md: &mut String, idx: &Index, smps: &[u32]) {
    let rows: Vec<(&str, Vec<&str>)> = idx.benches().into_iter().filter(|(b, _)| b.starts_with("floor.")).collect();
    if rows.is_empty() {
        return;
    }
    let _ = writeln!(md, "## Physical limits of this host (floor suite)\n");
    let _ = writeln!(
        md,
        "What one CPU spends per basic step, from the floor.* rows: a clock read, a locked increment of a private \
         line and of one line every CPU writes, zeroing 4 KiB, and CPU 0's IPI round trip to a CPU that spins or \
         halts. With N CPUs working at once each spends N / (ops/s) per operation.\n"
    );
    let mut head = String::from("| step | variant |");
    let mut rule = String::from("|---|---|");
    for n in smps {
        let _ = write!(head, " {n} CPU{} |", if *n == 1 { "" } else { "s" });
        rule += "---:|";
    }
    let _ = writeln!(md, "{head}\n{rule}");
    for (bench, variants) in rows {
        for variant in variants {
            let mut line = format!("| {bench} | {variant} |");
            for &n in smps {
                let cell = match idx.good(bench, variant, n) {
                    Some(s) if s.ops_per_sec > 0.0 => {
                        // Rows without a solo run are CPU 0's work alone.
                        let working = if n == 1 || s.solo.is_some() { f64::from(n) } else { 1.0 };
                        latency(working * 1e9 / s.ops_per_sec)
                    }
                    _ => "–".to_string(),
                };
                let _ = write!(line, " {cell} |");
            }
            let _ = writeln!(md, "{line}");
        }
    }
    md.push('\n');
}

fn vs_baseline(idx: &Index, bench: &str, variant: &str, smp: u32) -> String {
    if baseline_of(variant) == variant {
        return "baseline".into();
    }
    idx.vs_baseline(bench, variant, smp).map_or("–".into(), |x| format!("{x:.2}×"))
}

fn bench_section(md: &mut String, idx: &Index, bench: &str, variants: &[&str], plotted: bool) {
    let _ = writeln!(md, "## {bench}\n");
    if let Some(every) = variants
        .iter()
        .flat_map(|v| idx.smps(bench, v).into_iter().filter_map(move |n| idx.get(bench, v, n)))
        .map(|s| s.sample_every)
        .max()
        .filter(|&e| e > 0)
    {
        let _ = writeln!(md, "Latencies from operations sampled at random, one in {every} on average (the clock is not read for the others).\n");
    }
    let _ = writeln!(
        md,
        "Counted costs per operation (kernel work, whatever the host's speed): lock acquisitions, \
         those that found the lock held (contended) and their wait iterations (spins), IPIs sent, \
         CPUs shootdowns asked (targets), pages invalidated, full flushes, page tables allocated, \
         faults, backing-store reads + writes. Every counter is in `report.json`.\n"
    );
    let _ = writeln!(md, "| CPUs | variant | ops/s | host ceiling | efficiency | speedup | vs baseline | p50 | p99 | samples | counted costs per op |");
    let _ = writeln!(md, "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---|");
    let smps: BTreeSet<u32> = variants.iter().flat_map(|v| idx.smps(bench, v)).collect();
    for n in smps {
        for &variant in variants {
            let Some(s) = idx.get(bench, variant, n) else { continue };
            if s.failed {
                let _ = writeln!(md, "| {n} | {variant} | failed (void) | | | | | | | | |");
                continue;
            }
            let speedup = idx.speedup(bench, variant, n).map_or("–".into(), |x| format!("{x:.2}×"));
            let _ = writeln!(
                md,
                "| {n} | {variant} | {} | {} | {} | {speedup} | {} | {} | {} | {} | {} |",
                rate(s),
                s.ceiling.map_or("–".into(), si),
                s.efficiency.map_or("–".into(), percent),
                vs_baseline(idx, bench, variant, n),
                latency(s.ns_p50),
                latency(s.ns_p99),
                if s.samples > 0 { si(s.samples as f64) } else { "–".into() },
                counters(s)
            );
        }
    }
    if plotted {
        let _ = writeln!(md, "\n![{bench}: ops/s against CPU count](plots/{bench}.svg)");
    }
    md.push('\n');
}

/// `12.3M ± 4%`: the median and half the min–max range around it, or the
/// median alone for a single repetition.
fn rate(s: &Summary) -> String {
    if s.reps < 2 || s.ops_per_sec <= 0.0 {
        return si(s.ops_per_sec);
    }
    let spread = 100.0 * (s.ops_per_sec_max - s.ops_per_sec_min) / 2.0 / s.ops_per_sec;
    format!("{} ± {spread:.0}%", si(s.ops_per_sec))
}

/// The row's counted costs, then its latency counters (store transfer
/// medians), then the buddy-lock rate of frames rows.
fn counters(s: &Summary) -> String {
    let mut parts: Vec<String> = costs(s).into_iter().map(|(k, v)| format!("{k} {}", per_op(v))).collect();
    parts.extend(s.counters_per_op.iter().filter(|(k, _)| is_latency(k)).map(|(k, v)| format!("{k} {}", latency(*v))));
    if let Some(per100) = buddy_locks_per_100_allocs(s) {
        parts.push(format!("**{per100:.2} buddy_locks/100 allocs**"));
    }
    parts.join(", ")
}

/// Enough digits to tell 0.002 from 0.02 without a wall of decimals.
fn per_op(v: f64) -> String {
    match v {
        0.0 => "0".into(),
        v if v >= 100.0 => format!("{v:.0}"),
        v if v >= 1.0 => format!("{v:.2}"),
        v if v >= 0.001 => format!("{v:.4}"),
        v => format!("{v:.1e}"),
    }
}

fn targets(md: &mut String, r: &Report) {
    let _ = writeln!(md, "## Targets\n");
    let _ = writeln!(md, "| target | status | measured |\n|---|---|---|");
    for t in &r.targets {
        let _ = writeln!(md, "| {} | {} | {} |", t.name, t.status.word(), t.detail);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::report_json::{BenchRow, Failure, Host, RunInfo, REPORT_SCHEMA};
    use crate::bench::{stats::summarize, targets::evaluate};
    use std::collections::BTreeMap;

    fn row(bench: &str, variant: &str, smp: u32, rep: u32, ops_per_sec: u64) -> BenchRow {
        BenchRow {
            bench: bench.into(),
            variant: variant.into(),
            smp,
            rep,
            ops: 1000,
            ns: 1,
            ops_per_sec,
            ns_p50: 95,
            ns_p99: 2400,
            ns_max: 9000,
            counters: BTreeMap::from([
                ("allocs".into(), 1000),
                ("buddy_locks".into(), 10),
                ("depot_locks".into(), 15),
                ("depot_contended".into(), 5),
                ("depot_spins".into(), 20),
            ]),
            trace: None,
            workers: smp,
            sample_every: 64,
            samples: 10,
        }
    }

    fn report() -> Report {
        let records = vec![
            row("floor.rmw", "shared", 1, 0, 1_000_000),
            row("floor.rmw", "shared", 8, 0, 4_000_000),
            BenchRow { workers: 1, ..row("floor.rmw", "shared", 8, 0, 1_000_000) },
            row("floor.ipi", "halted", 8, 0, 50_000),
            BenchRow { workers: 1, ..row("frames.pair", "magazine", 8, 0, 2_500_000) },
            row("frames.pair", "magazine", 1, 0, 1_000_000),
            row("frames.pair", "magazine", 1, 1, 1_200_000),
            row("frames.pair", "global", 1, 0, 900_000),
            row("frames.pair", "magazine", 8, 0, 4_000_000),
            row("frames.pair", "global", 8, 0, 500_000),
            row("frames.batch", "global", 8, 0, 10),
        ];
        let failed = [("frames.batch".to_string(), "global".to_string(), 8)].into();
        let mut summary = summarize(&records, &failed);
        crate::bench::stats::set_ceilings(&mut summary, 2);
        Report {
            schema: REPORT_SCHEMA,
            record_schema: record::SCHEMA,
            host: Host {
                cores: 2,
                qemu_version: "10.0.2".into(),
                accel: "tcg,thread=multi".into(),
                kernel_commit: "abc".into(),
                dirty: false,
                date: "2026-11-21T04:05:24Z".into(),
                quick: false,
                smp: vec![1, 8],
                only: vec![],
                tsc_hz: None,
            },
            runs: vec![RunInfo {
                smp: 8,
                exit: "guest reported failure (QEMU exit 35)".into(),
                ok: true,
                duration_s: 12.34,
                cpus_online: Some(8),
                apic: Some("x2apic".into()),
                tsc_hz: Some(2_500_000_000),
                accel: Some("tcg".into()),
                tsc_source: None,
                tsc_spread_ppm: None,
                host_tsc_hz: None,
                tsc_host_ppm: None,
                tsc_flagged: false,
                expected_records: Some(3),
                received_records: 3,
            }],
            targets: evaluate(&summary),
            summary,
            records,
            failures: vec![Failure {
                kind: FailureKind::Bench,
                smp: 8,
                bench: Some("frames.batch".into()),
                variant: Some("global".into()),
                detail: "2 frames lost".into(),
            }],
            traced_runs: Vec::new(),
            run_dir: None,
        }
    }

    #[test]
    fn key_lines() {
        let md = render(&report(), &["frames.pair".to_string()].into());
        let has = |line: &str| assert!(md.lines().any(|l| l == line), "missing {line:?} in\n{md}");
        has("- Host: 2 cores; QEMU 10.0.2, `-accel tcg,thread=multi`");
        has("- Run at 8 CPUs: guest reported failure (QEMU exit 35) in 12.3 s, 8 CPUs online, accel tcg, x2apic, TSC 2.500 GHz");
        assert!(
            md.contains("The host has 2 cores") && md.contains("scaling past 2 CPUs shows contention costs"),
            "{md}"
        );
        has("- frames.batch global at 8 CPUs: check failed, figures void: 2 frames lost");
        has("| benchmark | variant | 1 CPU | 8 CPUs | efficiency (8) | speedup | vs baseline |");
        has("| frames.pair | magazine | 1.10M | 4.00M | 80% | 3.64× (8/1) | 8.00× |");
        has("| frames.pair | global | 900k | 500k | – | 0.56× (8/1) | baseline |");
        has("| frames.batch | global | – | failed | – | – | baseline |");
        has("| 1 | magazine | 1.10M ± 9% | 1.10M | 100% | 1.00× | 1.22× | 95 ns | 2.4 µs | 20 | locks 0.0250, contended 0.0050, spins 0.0200, **1.00 buddy_locks/100 allocs** |");
        has("| 8 | magazine | 4.00M | 5.00M | 80% | 3.64× | 8.00× | 95 ns | 2.4 µs | 10 | locks 0.0250, contended 0.0050, spins 0.0200, **1.00 buddy_locks/100 allocs** |");
        has("| 8 | global | failed (void) | | | | | | | | |");
        has(
            "Latencies from operations sampled at random, one in 64 on average (the clock is not read for the others).",
        );
        assert!(md.contains("min(CPUs, 2) × the rate of CPU 0 running the same workload alone"), "{md}");
        // The floor suite comes first, as per-CPU costs.
        has("| floor.rmw | shared | 1.0 µs | 2.0 µs |");
        has("| floor.ipi | halted | – | 20.0 µs |");
        assert!(md.find("## Physical limits").unwrap() < md.find("## Summary").unwrap());
        has("![frames.pair: ops/s against CPU count](plots/frames.pair.svg)");
        assert!(md.contains("Counted costs per operation"), "{md}");
        assert!(!md.contains("plots/frames.batch.svg"), "no plot, no image link");
        has("| frames.pair magazine ≥ 5× global at the largest CPU count | met | 8.00× at 8 CPUs |");
        has("| frames.pair magazine ≤ 2 buddy_locks per 100 allocs | met | worst 1.00 at 8 CPUs |");
        has("| fault.anon busy ≥ 3× global at the largest CPU count | not measured | no usable fault.anon busy and global at the same CPU count |");
        // Sections in order: summary, benchmarks by name, targets last.
        let at = |s: &str| md.find(s).unwrap();
        assert!(at("## Summary") < at("## frames.batch") && at("## frames.batch") < at("## frames.pair"));
        assert!(at("## frames.pair") < at("## Targets"));
    }

    /// A vm/tlb row shows IPIs, targets, invalidations, tables and the
    /// table lock; a paging row the store transfers and its latencies.
    #[test]
    fn each_benchmark_shows_its_own_costs() {
        let mut r = report();
        let mut tlb = row("tlb.shootdown", "cached-2", 2, 0, 500_000);
        tlb.counters = BTreeMap::from([
            ("shootdowns".into(), 1000),
            ("targets".into(), 1000),
            ("ipis".into(), 1003),
            ("invlpg".into(), 2000),
            ("full_flushes".into(), 0),
            ("tables_allocated".into(), 0),
            ("table_locks".into(), 4000),
            ("table_contended".into(), 0),
            ("table_spins".into(), 0),
        ]);
        let mut thrash = row("paging.thrash", "ram-seq-busy", 2, 0, 100_000);
        thrash.counters = BTreeMap::from([
            ("faults".into(), 1000),
            ("store_reads".into(), 900),
            ("store_writes".into(), 950),
            ("paging_locks".into(), 0),
            ("store_in_p50_ns".into(), 2047),
        ]);
        r.records = vec![tlb, thrash];
        r.summary = summarize(&r.records, &Default::default());
        let md = render(&r, &BTreeSet::new());
        let has = |line: &str| assert!(md.lines().any(|l| l == line), "missing {line:?} in\n{md}");
        has("| 2 | cached-2 | 500k | – | – | – | – | 95 ns | 2.4 µs | 10 | locks 4.00, contended 0, spins 0, IPIs 1.00, targets 1.00, invlpg 2.00, full flushes 0, tables 0 |");
        has("| 2 | ram-seq-busy | 100k | – | – | – | – | 95 ns | 2.4 µs | 10 | locks 0, faults 1.00, store r+w 1.85, store_in_p50_ns 2.0 µs |");
    }
}
