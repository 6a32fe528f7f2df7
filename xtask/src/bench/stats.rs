//! Turning repetitions into figures: medians, spread, run-to-run noise,
//! counters per operation, speedups and baselines. Pure functions over the
//! report's rows, so the markdown, plots, targets and compare agree.

use super::report_json::{BenchRow, Spread, Summary};
use record::BASELINE_VARIANT;
use std::collections::{BTreeMap, BTreeSet};

/// Median of `values` (mean of the two middle ones for an even count).
pub fn median(values: &[f64]) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let mid = v.len() / 2;
    Some(if v.len() % 2 == 1 { v[mid] } else { (v[mid - 1] + v[mid]) / 2.0 })
}

/// Coefficient of variation (sample standard deviation over mean): the
/// run-to-run noise of a figure. Zero with fewer than two values, where
/// the noise is unknown rather than absent; compare uses a floor for that.
pub fn cv(values: &[f64]) -> f64 {
    let n = values.len();
    if n < 2 {
        return 0.0;
    }
    let mean = values.iter().sum::<f64>() / n as f64;
    if mean == 0.0 {
        return 0.0;
    }
    let var = values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1) as f64;
    var.sqrt() / mean
}

/// The variant `variant` is measured against: [`BASELINE_VARIANT`] for a
/// plain name, `X-global` for `X-busy` (a family of variants, each with its
/// own global-lock counterpart, like `seq-busy`/`seq-global`).
pub fn baseline_of(variant: &str) -> String {
    match variant.rsplit_once('-') {
        Some((family, _)) => format!("{family}-{BASELINE_VARIANT}"),
        None => BASELINE_VARIANT.to_string(),
    }
}

/// One summary row per bench/variant/smp, from the repetitions (solo runs
/// go into the row they are the ceiling of). `failed` names the
/// bench/variant/smp whose correctness check failed.
pub fn summarize(rows: &[BenchRow], failed: &BTreeSet<(String, String, u32)>) -> Vec<Summary> {
    type Key = (String, String, u32);
    let mut groups: BTreeMap<Key, Vec<&BenchRow>> = BTreeMap::new();
    let mut solos: BTreeMap<Key, Vec<f64>> = BTreeMap::new();
    for row in rows {
        let key = (row.bench.clone(), row.variant.clone(), row.smp);
        if row.is_solo() {
            solos.entry(key).or_default().push(row.ops_per_sec as f64);
        } else {
            groups.entry(key).or_default().push(row);
        }
    }
    groups
        .into_iter()
        .map(|(key, reps)| {
            let rates: Vec<f64> = reps.iter().map(|r| r.ops_per_sec as f64).collect();
            let p50: Vec<f64> = reps.iter().map(|r| r.ns_p50 as f64).collect();
            let p99: Vec<f64> = reps.iter().map(|r| r.ns_p99 as f64).collect();
            let failed = failed.contains(&key);
            let solo = solos.get(&key).and_then(|v| spread(v));
            let (bench, variant, smp) = key;
            Summary {
                reps: reps.len() as u32,
                ops_per_sec: median(&rates).unwrap_or(0.0),
                ops_per_sec_min: rates.iter().copied().fold(f64::INFINITY, f64::min),
                ops_per_sec_max: rates.iter().copied().fold(0.0, f64::max),
                cv: cv(&rates),
                ns_p50: median(&p50).unwrap_or(0.0),
                ns_p99: median(&p99).unwrap_or(0.0),
                counters_per_op: counters_per_op(&reps),
                sample_every: reps.iter().map(|r| r.sample_every).max().unwrap_or(0),
                samples: reps.iter().map(|r| r.samples).sum(),
                solo,
                ceiling: None,
                efficiency: None,
                bench,
                variant,
                smp,
                failed,
                trace: None,
            }
        })
        .collect()
}

fn spread(values: &[f64]) -> Option<Spread> {
    Some(Spread {
        median: median(values)?,
        min: values.iter().copied().fold(f64::INFINITY, f64::min),
        max: values.iter().copied().fold(0.0, f64::max),
    })
}

/// Sets each row's host ceiling, min(smp, `cores`) × its solo rate, and its
/// efficiency against it, for benchmarks where every CPU works (those with
/// solo runs). Their 1-CPU row is its own solo run.
pub fn set_ceilings(summary: &mut [Summary], cores: u32) {
    let every_cpu: BTreeSet<(String, String)> =
        summary.iter().filter(|s| s.solo.is_some()).map(|s| (s.bench.clone(), s.variant.clone())).collect();
    for s in summary.iter_mut() {
        if s.failed || !every_cpu.contains(&(s.bench.clone(), s.variant.clone())) {
            continue;
        }
        let solo = match (s.smp, s.solo) {
            (1, _) => s.ops_per_sec,
            (_, Some(solo)) => solo.median,
            (_, None) => continue,
        };
        let ceiling = f64::from(s.smp.min(cores.max(1))) * solo;
        s.ceiling = Some(ceiling);
        s.efficiency = (ceiling > 0.0).then(|| s.ops_per_sec / ceiling);
    }
}

/// Each counter's total over the repetitions divided by their total
/// operations (totals, not a median of ratios: a counter that fires once
/// in a while should not round to zero in most repetitions). Counters
/// named `*_ns` are latencies, not counts: their median over the
/// repetitions is kept as it is.
pub fn counters_per_op(reps: &[&BenchRow]) -> BTreeMap<String, f64> {
    let ops: u64 = reps.iter().map(|r| r.ops).sum();
    let mut totals: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for rep in reps {
        for (name, value) in &rep.counters {
            totals.entry(name.clone()).or_default().push(*value);
        }
    }
    totals
        .into_iter()
        .map(|(name, mut values)| {
            let v = if is_latency(&name) {
                values.sort_unstable();
                values[values.len() / 2] as f64
            } else if ops == 0 {
                0.0
            } else {
                values.iter().sum::<u64>() as f64 / ops as f64
            };
            (name, v)
        })
        .collect()
}

/// The counted costs `report.md` shows, each the sum of the per-op
/// counters it names. A cost appears only when the row has one of its
/// counters, so each benchmark shows what its groups count: frames rows
/// the buddy/depot locks, vm and tlb rows IPIs, targets, invalidations,
/// tables and the table lock, fault and paging rows those and the paging
/// lock and store transfers.
pub const COSTS: &[(&str, &[&str])] = &[
    ("locks", &["buddy_locks", "depot_locks", "table_locks", "paging_locks"]),
    ("contended", &["buddy_contended", "depot_contended", "table_contended", "paging_contended"]),
    ("spins", &["buddy_spins", "depot_spins", "table_spins", "paging_spins"]),
    ("IPIs", &["ipis"]),
    ("targets", &["targets"]),
    ("invlpg", &["invlpg"]),
    ("full flushes", &["full_flushes"]),
    ("tables", &["tables_allocated"]),
    ("faults", &["faults"]),
    ("store r+w", &["store_reads", "store_writes"]),
];

/// The row's counted costs per operation, in `COSTS` order.
pub fn costs(s: &Summary) -> Vec<(&'static str, f64)> {
    COSTS
        .iter()
        .filter_map(|(name, parts)| {
            let found: Vec<f64> = parts.iter().filter_map(|p| s.counters_per_op.get(*p).copied()).collect();
            (!found.is_empty()).then(|| (*name, found.iter().sum()))
        })
        .collect()
}

/// A counter that holds nanoseconds of one event, not a count.
pub fn is_latency(name: &str) -> bool {
    name.ends_with("_ns")
}

/// Buddy-lock acquisitions per 100 frame allocations, when the row counts
/// both (the measure of how often the per-CPU caches miss).
pub fn buddy_locks_per_100_allocs(s: &Summary) -> Option<f64> {
    let locks = s.counters_per_op.get("buddy_locks")?;
    let allocs = s.counters_per_op.get("allocs").filter(|a| **a > 0.0)?;
    Some(100.0 * locks / allocs)
}

/// Wall-clock nanoseconds one CPU spends per operation: all CPUs work at
/// once, so each op costs `smp / ops_per_sec` seconds of one CPU.
pub fn ns_per_op_per_cpu(s: &Summary) -> Option<f64> {
    (s.ops_per_sec > 0.0).then(|| s.smp as f64 * 1e9 / s.ops_per_sec)
}

/// Lookup of summary rows by bench, variant and CPU count.
pub struct Index<'a> {
    rows: BTreeMap<(&'a str, &'a str, u32), &'a Summary>,
}

impl<'a> Index<'a> {
    pub fn new(summary: &'a [Summary]) -> Index<'a> {
        Index { rows: summary.iter().map(|s| ((s.bench.as_str(), s.variant.as_str(), s.smp), s)).collect() }
    }

    pub fn get(&self, bench: &str, variant: &str, smp: u32) -> Option<&'a Summary> {
        self.rows.get(&(bench, variant, smp)).copied()
    }

    /// Usable figures: present and not voided by a failed check.
    pub fn good(&self, bench: &str, variant: &str, smp: u32) -> Option<&'a Summary> {
        self.get(bench, variant, smp).filter(|s| !s.failed)
    }

    /// Benchmarks in name order, each with its variants in name order.
    pub fn benches(&self) -> Vec<(&'a str, Vec<&'a str>)> {
        let mut out: Vec<(&str, Vec<&str>)> = Vec::new();
        for &(bench, variant, _) in self.rows.keys() {
            match out.last_mut() {
                Some((b, vs)) if *b == bench => {
                    if vs.last() != Some(&variant) {
                        vs.push(variant)
                    }
                }
                _ => out.push((bench, vec![variant])),
            }
        }
        out
    }

    /// CPU counts with figures for this bench/variant, ascending.
    pub fn smps(&self, bench: &str, variant: &str) -> Vec<u32> {
        self.rows.keys().filter(|(b, v, _)| *b == bench && *v == variant).map(|k| k.2).collect()
    }

    /// Median ops/s at `smp` over the same at 1 CPU.
    pub fn speedup(&self, bench: &str, variant: &str, smp: u32) -> Option<f64> {
        let one = self.good(bench, variant, 1)?;
        let at = self.good(bench, variant, smp)?;
        (one.ops_per_sec > 0.0).then(|| at.ops_per_sec / one.ops_per_sec)
    }

    /// Median ops/s over the baseline variant's at the same CPU count;
    /// `None` for the baseline itself or when it was not measured.
    pub fn vs_baseline(&self, bench: &str, variant: &str, smp: u32) -> Option<f64> {
        let base = baseline_of(variant);
        if base == variant {
            return None;
        }
        let b = self.good(bench, &base, smp)?;
        let v = self.good(bench, variant, smp)?;
        (b.ops_per_sec > 0.0).then(|| v.ops_per_sec / b.ops_per_sec)
    }
}

/// `12.3M`, `850k`, `42`: three significant digits, SI suffix.
pub fn si(v: f64) -> String {
    let (scaled, suffix) = match v.abs() {
        a if a >= 1e9 => (v / 1e9, "G"),
        a if a >= 1e6 => (v / 1e6, "M"),
        a if a >= 1e3 => (v / 1e3, "k"),
        _ => (v, ""),
    };
    let digits = match scaled.abs() {
        a if a >= 100.0 => 0,
        a if a >= 10.0 => 1,
        _ => 2,
    };
    let digits = if suffix.is_empty() && scaled.fract() == 0.0 { 0 } else { digits };
    format!("{scaled:.digits$}{suffix}")
}

/// A latency in nanoseconds in the unit that reads best: `90 ns`,
/// `1.2 µs`, `3.4 ms`, `2.0 s`.
pub fn latency(ns: f64) -> String {
    match ns {
        n if n >= 1e9 => format!("{:.1} s", n / 1e9),
        n if n >= 1e6 => format!("{:.1} ms", n / 1e6),
        n if n >= 1e3 => format!("{:.1} µs", n / 1e3),
        n => format!("{n:.0} ns"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub fn row(bench: &str, variant: &str, smp: u32, rep: u32, ops_per_sec: u64) -> BenchRow {
        BenchRow {
            bench: bench.into(),
            variant: variant.into(),
            smp,
            rep,
            ops: 1000,
            ns: 1_000_000,
            ops_per_sec,
            ns_p50: 100 + u64::from(rep),
            ns_p99: 900,
            ns_max: 5000,
            counters: BTreeMap::from([("allocs".into(), 1000), ("buddy_locks".into(), 15 + u64::from(rep))]),
            ..Default::default()
        }
    }

    #[test]
    fn solo_runs_give_the_ceiling_and_efficiency() {
        let solo = |rep, ops| BenchRow { workers: 1, ..row("frames.pair", "magazine", 8, rep, ops) };
        let rows = vec![
            row("frames.pair", "magazine", 1, 0, 1_000_000),
            row("frames.pair", "magazine", 2, 0, 1_800_000),
            BenchRow { workers: 1, ..row("frames.pair", "magazine", 2, 0, 1_000_000) },
            row("frames.pair", "magazine", 8, 0, 1_500_000),
            solo(0, 900_000),
            solo(1, 1_000_000),
            solo(2, 1_100_000),
            // Only CPU 0 works: no solo runs, no ceiling.
            row("tlb.shootdown", "cached-2", 2, 0, 5_000),
        ];
        let mut summary = summarize(&rows, &BTreeSet::new());
        assert_eq!(summary.len(), 4, "solo runs are not rows of their own");
        set_ceilings(&mut summary, 2);
        let idx = Index::new(&summary);
        let at = |b, v, n| idx.get(b, v, n).unwrap();
        assert_eq!(
            at("frames.pair", "magazine", 8).solo,
            Some(Spread { median: 1_000_000.0, min: 900_000.0, max: 1_100_000.0 })
        );
        assert_eq!(at("frames.pair", "magazine", 8).reps, 1);
        // 2 host cores: the ceiling at 8 CPUs is 2 × the solo rate.
        assert_eq!(at("frames.pair", "magazine", 8).ceiling, Some(2_000_000.0));
        assert_eq!(at("frames.pair", "magazine", 8).efficiency, Some(0.75));
        assert_eq!(at("frames.pair", "magazine", 2).efficiency, Some(0.9));
        assert_eq!(at("frames.pair", "magazine", 1).efficiency, Some(1.0));
        assert_eq!(at("tlb.shootdown", "cached-2", 2).ceiling, None);
    }

    #[test]
    fn median_and_cv() {
        assert_eq!(median(&[]), None);
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), Some(2.5));
        assert_eq!(cv(&[5.0]), 0.0);
        assert_eq!(cv(&[7.0, 7.0, 7.0]), 0.0);
        // mean 10, sample sd sqrt(((-2)^2 + 0 + 2^2) / 2) = 2.
        assert!((cv(&[8.0, 10.0, 12.0]) - 0.2).abs() < 1e-12);
    }

    #[test]
    fn baselines() {
        assert_eq!(baseline_of("magazine"), "global");
        assert_eq!(baseline_of("global"), "global");
        assert_eq!(baseline_of("seq-busy"), "seq-global");
        assert_eq!(baseline_of("random-global"), "random-global");
        assert_eq!(baseline_of("a-b-busy"), "a-b-global");
    }

    #[test]
    fn costs_sum_their_counters_and_skip_the_absent() {
        let mut r = row("fault.anon", "busy", 2, 0, 1);
        r.counters = BTreeMap::from([
            ("table_locks".to_string(), 3000),
            ("paging_locks".to_string(), 0),
            ("table_contended".to_string(), 10),
            ("ipis".to_string(), 500),
            ("store_reads".to_string(), 100),
            ("store_writes".to_string(), 300),
        ]);
        let s = &summarize(&[r.clone()], &BTreeSet::new())[0];
        let per = |x: u64| x as f64 / r.ops as f64;
        assert_eq!(
            costs(s),
            vec![("locks", per(3000)), ("contended", per(10)), ("IPIs", per(500)), ("store r+w", per(400))],
            "no spins, targets, invlpg, tables or faults counters: none shown"
        );
        let mut frames = row("frames.pair", "magazine", 1, 0, 1);
        frames.counters = BTreeMap::from([("allocs".to_string(), 10)]);
        assert!(costs(&summarize(&[frames], &BTreeSet::new())[0]).is_empty());
    }

    #[test]
    fn latency_counters_are_medians_not_per_op() {
        let mut a = row("paging.thrash", "ram-seq-busy", 1, 0, 100);
        let mut b = row("paging.thrash", "ram-seq-busy", 1, 1, 100);
        let mut c = row("paging.thrash", "ram-seq-busy", 1, 2, 100);
        for (r, ns) in [(&mut a, 4096u64), (&mut b, 8192), (&mut c, 2048)] {
            r.counters = BTreeMap::from([("store_in_p50_ns".to_string(), ns), ("page_ins".to_string(), 50)]);
        }
        let per_op = counters_per_op(&[&a, &b, &c]);
        assert_eq!(per_op["store_in_p50_ns"], 4096.0);
        assert_eq!(per_op["page_ins"], 150.0 / (3 * a.ops) as f64);
    }

    #[test]
    fn summary_rows_and_ratios() {
        let rows = vec![
            row("frames.pair", "magazine", 1, 0, 100),
            row("frames.pair", "magazine", 1, 1, 300),
            row("frames.pair", "magazine", 1, 2, 200),
            row("frames.pair", "magazine", 4, 0, 800),
            row("frames.pair", "global", 4, 0, 100),
            row("paging.thrash", "seq-busy", 4, 0, 90),
            row("paging.thrash", "seq-global", 4, 0, 30),
        ];
        let failed = BTreeSet::from([("paging.thrash".to_string(), "seq-global".to_string(), 4)]);
        let summary = summarize(&rows, &failed);
        assert_eq!(summary.len(), 5);
        let idx = Index::new(&summary);
        let one = idx.get("frames.pair", "magazine", 1).unwrap();
        assert_eq!((one.reps, one.ops_per_sec, one.ops_per_sec_min, one.ops_per_sec_max), (3, 200.0, 100.0, 300.0));
        assert!((one.cv - 0.5).abs() < 1e-12, "{}", one.cv);
        assert_eq!(one.ns_p50, 101.0);
        // (15 + 16 + 17) buddy locks over 3000 ops.
        assert!((one.counters_per_op["buddy_locks"] - 48.0 / 3000.0).abs() < 1e-12);
        assert!((buddy_locks_per_100_allocs(one).unwrap() - 1.6).abs() < 1e-9);
        assert_eq!(idx.speedup("frames.pair", "magazine", 4), Some(4.0));
        assert_eq!(idx.vs_baseline("frames.pair", "magazine", 4), Some(8.0));
        assert_eq!(idx.vs_baseline("frames.pair", "global", 4), None, "a baseline has no ratio to itself");
        assert_eq!(idx.vs_baseline("frames.pair", "magazine", 1), None, "no baseline at 1 CPU");
        assert!(idx.get("paging.thrash", "seq-global", 4).unwrap().failed);
        assert_eq!(idx.vs_baseline("paging.thrash", "seq-busy", 4), None, "failed figures are void");
        assert_eq!(ns_per_op_per_cpu(idx.get("frames.pair", "magazine", 4).unwrap()), Some(4e9 / 800.0));
        assert_eq!(
            idx.benches(),
            vec![("frames.pair", vec!["global", "magazine"]), ("paging.thrash", vec!["seq-busy", "seq-global"])]
        );
        assert_eq!(idx.smps("frames.pair", "magazine"), vec![1, 4]);
    }

    #[test]
    fn units() {
        assert_eq!(si(12_345_678.0), "12.3M");
        assert_eq!(si(850_000.0), "850k");
        assert_eq!(si(1_500.0), "1.50k");
        assert_eq!(si(42.0), "42");
        assert_eq!(si(0.25), "0.25");
        assert_eq!(latency(90.0), "90 ns");
        assert_eq!(latency(1_234.0), "1.2 µs");
        assert_eq!(latency(3_400_000.0), "3.4 ms");
        assert_eq!(latency(2e9), "2.0 s");
    }
}
