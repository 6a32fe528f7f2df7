//! `report.json`: everything a benchmark run measured, in a form later
//! runs can be compared with (`bench --compare`). These are the host's own
//! types; the guest's records are only their input.

use super::targets::TargetResult;
use super::trace::{RepTrace, TraceSummary};
use crate::cmd;
use anyhow::{Context, Result};
use record::{HostRecord, Record};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Bumped whenever the report changes shape.
/// 2: `ipis` counts IPIs sent (ICR writes; a broadcast is one); what it
///    counted before, the CPUs shootdowns asked, is now `targets`. Rows
///    carry lock, contention, invalidation, table and store counters, how
///    many CPUs worked (solo runs) and how latencies were sampled; the
///    summary has solo runs, host ceilings and efficiencies. Schema 1
///    reports are read with `ipis` renamed (`upgrade_from_1`) and the new
///    fields at their defaults.
pub const REPORT_SCHEMA: u32 = 2;

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct Report {
    pub schema: u32,
    pub record_schema: u32,
    pub host: Host,
    pub runs: Vec<RunInfo>,
    /// Every Bench record, as sent.
    pub records: Vec<BenchRow>,
    /// BenchFail records and broken boots.
    pub failures: Vec<Failure>,
    pub summary: Vec<Summary>,
    pub targets: Vec<TargetResult>,
    /// `--trace`: the traced boots (one per CPU count, after the plain one).
    /// Optional fields like this one and `trace` below did not change the
    /// schema: reports without them still load.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub traced_runs: Vec<RunInfo>,
    /// The run folder; only in `target/bench/latest.json`, which is a copy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_dir: Option<String>,
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct Host {
    /// Host cores: vCPUs beyond this time-share them.
    pub cores: u32,
    pub qemu_version: String,
    pub accel: String,
    pub kernel_commit: String,
    /// The tree had uncommitted changes: the commit is not the whole story.
    pub dirty: bool,
    /// UTC, ISO-8601.
    pub date: String,
    pub quick: bool,
    pub smp: Vec<u32>,
    /// `--only` prefixes; empty for all benchmarks.
    pub only: Vec<String>,
    /// The host's TSC rate (Hz) measured before the first boot; under TCG
    /// each boot's calibrated `tsc_hz` should match it within 1%.
    #[serde(default)]
    pub tsc_hz: Option<u64>,
}

/// One boot of the guest at one CPU count.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct RunInfo {
    pub smp: u32,
    /// How QEMU ended, in words.
    pub exit: String,
    /// No problem with this boot (BenchFails are counted separately).
    pub ok: bool,
    pub duration_s: f64,
    pub cpus_online: Option<u32>,
    pub apic: Option<String>,
    pub tsc_hz: Option<u64>,
    /// The accelerator the guest found (Boot record); absent in reports
    /// written before it was recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub accel: Option<String>,
    /// The Boot record's calibration source and spread (ppm).
    #[serde(default)]
    pub tsc_source: Option<String>,
    #[serde(default)]
    pub tsc_spread_ppm: Option<u64>,
    /// The host's TSC rate, measured by xtask just before this boot.
    #[serde(default)]
    pub host_tsc_hz: Option<u64>,
    /// |tsc_hz − host_tsc_hz| in ppm of the host's rate.
    #[serde(default)]
    pub tsc_host_ppm: Option<u64>,
    /// `tsc_hz` is more than 1% from the host's rate: this boot's time
    /// figures are off by as much (meaningful under TCG only).
    #[serde(default)]
    pub tsc_flagged: bool,
    /// Bench records the guest announced (runs × reps) and sent.
    pub expected_records: Option<u32>,
    pub received_records: u32,
}

/// One measured repetition (a Bench record).
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Default)]
pub struct BenchRow {
    pub bench: String,
    pub variant: String,
    pub smp: u32,
    /// CPUs that ran the workload: `smp`, or 1 in a solo run (0 in reports
    /// of schema 1, which had no solo runs: all of them).
    #[serde(default)]
    pub workers: u32,
    pub rep: u32,
    pub ops: u64,
    pub ns: u64,
    pub ops_per_sec: u64,
    pub ns_p50: u64,
    pub ns_p99: u64,
    pub ns_max: u64,
    /// One operation in this many was timed (0: not said, schema 1).
    #[serde(default)]
    pub sample_every: u32,
    /// Operations timed.
    #[serde(default)]
    pub samples: u64,
    pub counters: BTreeMap<String, u64>,
    /// `--trace`: the tracer's counts for the traced boot's same repetition.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace: Option<RepTrace>,
}

impl BenchRow {
    /// A solo run: CPU 0 alone, for the host ceiling of the row at `smp`.
    pub fn is_solo(&self) -> bool {
        self.workers != 0 && self.workers < self.smp
    }

    pub fn from_record(record: &HostRecord) -> Option<BenchRow> {
        match record {
            Record::Bench {
                bench,
                variant,
                smp,
                workers,
                rep,
                ops,
                ns,
                ops_per_sec,
                ns_p50,
                ns_p99,
                ns_max,
                sample_every,
                samples,
                counters,
            } => Some(BenchRow {
                bench: bench.clone(),
                variant: variant.clone(),
                smp: *smp,
                workers: *workers,
                rep: *rep,
                ops: *ops,
                ns: *ns,
                ops_per_sec: *ops_per_sec,
                ns_p50: *ns_p50,
                ns_p99: *ns_p99,
                ns_max: *ns_max,
                sample_every: *sample_every,
                samples: *samples,
                counters: counters.clone(),
                trace: None,
            }),
            _ => None,
        }
    }
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum FailureKind {
    /// A benchmark's correctness check failed (BenchFail).
    Bench,
    /// The boot itself went wrong: bad exit, timeout, missing records.
    Run,
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct Failure {
    pub kind: FailureKind,
    pub smp: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bench: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
    pub detail: String,
}

/// Figures of one bench/variant at one CPU count over its repetitions.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct Summary {
    pub bench: String,
    pub variant: String,
    pub smp: u32,
    pub reps: u32,
    /// Median over repetitions.
    pub ops_per_sec: f64,
    pub ops_per_sec_min: f64,
    pub ops_per_sec_max: f64,
    /// Run-to-run noise of ops/s (standard deviation / mean).
    pub cv: f64,
    /// Medians over repetitions of the per-repetition percentiles.
    pub ns_p50: f64,
    pub ns_p99: f64,
    pub counters_per_op: BTreeMap<String, f64>,
    /// Its correctness check failed: the figures are void.
    pub failed: bool,
    /// `--trace`: the tracer's figures per operation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace: Option<TraceSummary>,
    /// One operation in this many was timed for the latencies (0: not
    /// said), and how many were, over all repetitions.
    #[serde(default)]
    pub sample_every: u32,
    #[serde(default)]
    pub samples: u64,
    /// The same workload on CPU 0 alone (the others halted) in the same
    /// boot, for rows where every CPU works: median, min and max ops/s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub solo: Option<Spread>,
    /// What the host can give this row: min(smp, host cores) × the solo
    /// median (ops/s), and the row's median over it. At 1 CPU the row is
    /// its own solo run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ceiling: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub efficiency: Option<f64>,
}

/// Median, min and max of a figure over repetitions.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq)]
pub struct Spread {
    pub median: f64,
    pub min: f64,
    pub max: f64,
}

impl Host {
    /// Facts about this machine and tree for the report header.
    pub fn gather(qemu_version: String, accel: &str, quick: bool, smp: Vec<u32>, only: Vec<String>) -> Host {
        let cores = std::thread::available_parallelism().map_or(0, |n| n.get() as u32);
        let commit = git(&["rev-parse", "HEAD"]).unwrap_or_else(|| "unknown".into());
        let dirty = git(&["status", "--porcelain"]).is_some_and(|s| !s.is_empty());
        Host {
            cores,
            qemu_version,
            accel: accel.into(),
            kernel_commit: commit,
            dirty,
            date: humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
            quick,
            smp,
            only,
            tsc_hz: None,
        }
    }

    /// `20261121T040524Z-e020fd2`: sorts by time, names the commit.
    pub fn run_folder_name(&self) -> String {
        let stamp: String = self.date.chars().filter(|c| !matches!(c, '-' | ':')).collect();
        let short: String = self.kernel_commit.chars().take(7).collect();
        format!("{stamp}-{short}")
    }
}

fn git(args: &[&str]) -> Option<String> {
    let root = crate::toolchain::workspace_root();
    let mut full = vec!["-C", root.to_str()?];
    full.extend_from_slice(args);
    cmd::output("git", &full).map(|s| s.trim().to_string())
}

impl Report {
    pub fn write(&self, path: &Path) -> Result<()> {
        let json = serde_json::to_string_pretty(self).context("serialising the report")?;
        std::fs::write(path, json + "\n").with_context(|| format!("writing {}", path.display()))
    }

    pub fn read(path: &Path) -> Result<Report> {
        let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let value: serde_json::Value =
            serde_json::from_str(&text).with_context(|| format!("{} is not JSON", path.display()))?;
        // Name a schema mismatch as such instead of a missing-field error.
        let value = match value.get("schema").and_then(|s| s.as_u64()) {
            Some(s) if s == u64::from(REPORT_SCHEMA) => value,
            Some(1) => upgrade_from_1(value),
            other => anyhow::bail!(
                "{} has report schema {other:?}; this xtask reads schemas 1 to {REPORT_SCHEMA}",
                path.display()
            ),
        };
        serde_json::from_value(value).with_context(|| format!("{} is not a benchmark report", path.display()))
    }
}

/// A schema 1 report in schema 2 terms: its `ipis` counted the CPUs each
/// shootdown asked, which schema 2 calls `targets` (schema 2's `ipis`
/// counts ICR writes, which schema 1 did not count). Nothing else moved;
/// the counters schema 1 did not have are simply absent.
fn upgrade_from_1(mut report: serde_json::Value) -> serde_json::Value {
    let rename = |counters: Option<&mut serde_json::Value>| {
        if let Some(serde_json::Value::Object(map)) = counters {
            if let Some(v) = map.remove("ipis") {
                map.insert("targets".into(), v);
            }
        }
    };
    for (list, field) in [("records", "counters"), ("summary", "counters_per_op")] {
        if let Some(serde_json::Value::Array(items)) = report.get_mut(list) {
            for item in items {
                rename(item.get_mut(field));
            }
        }
    }
    report["schema"] = REPORT_SCHEMA.into();
    report
}

/// A run folder, a `report.json`, or `latest` (under `bench_root`).
pub fn resolve(arg: &str, bench_root: &Path) -> PathBuf {
    let path = if arg == "latest" { bench_root.join("latest.json") } else { PathBuf::from(arg) };
    if path.is_dir() {
        path.join("report.json")
    } else {
        path
    }
}

/// A small report for other modules' tests.
#[cfg(test)]
pub mod tests_support {
    use super::*;
    use crate::bench::targets::Status;

    /// What `cargo xtask bench --only tlb.shootdown --smp 2 --quick` wrote
    /// with report schema 1 (trimmed to one row).
    pub const SCHEMA_1_REPORT: &str = r#"{
  "schema": 1,
  "record_schema": 3,
  "host": {"cores": 2, "qemu_version": "10.0.2", "accel": "tcg,thread=multi", "kernel_commit": "36718e9aaaaaaaaa",
           "dirty": false, "date": "2026-12-01T12:00:00Z", "quick": true, "smp": [2], "only": ["tlb.shootdown"]},
  "runs": [{"smp": 2, "exit": "guest exited with success", "ok": true, "duration_s": 9.5, "cpus_online": 2,
            "apic": "x2apic", "tsc_hz": 2596000000, "expected_records": 1, "received_records": 1}],
  "records": [{"bench": "tlb.shootdown", "variant": "cached-2", "smp": 2, "rep": 0, "ops": 1000, "ns": 60000000,
               "ops_per_sec": 500000, "ns_p50": 1500, "ns_p99": 9000, "ns_max": 20000,
               "counters": {"ipis": 1000, "shootdowns": 1000}}],
  "failures": [],
  "summary": [{"bench": "tlb.shootdown", "variant": "cached-2", "smp": 2, "reps": 1, "ops_per_sec": 500000.0,
               "ops_per_sec_min": 500000.0, "ops_per_sec_max": 500000.0, "cv": 0.0, "ns_p50": 1500.0, "ns_p99": 9000.0,
               "counters_per_op": {"ipis": 1.0, "shootdowns": 1.0}, "failed": false}],
  "targets": [{"name": "t", "status": "not_measured", "detail": "no data"}]
}"#;

    /// `sample()` with another summary.
    pub fn sample_with(summary: Vec<Summary>) -> Report {
        Report { summary, ..sample() }
    }

    pub fn sample() -> Report {
        let host = Host {
            cores: 2,
            qemu_version: "10.0.2".into(),
            accel: "tcg,thread=multi".into(),
            kernel_commit: "e020fd2abcdef".into(),
            dirty: true,
            date: "2026-11-21T04:05:24Z".into(),
            quick: true,
            smp: vec![1, 2],
            only: vec!["frames".into()],
            tsc_hz: Some(1_000_100),
        };
        let row = BenchRow {
            bench: "frames.pair".into(),
            variant: "magazine".into(),
            smp: 2,
            rep: 0,
            ops: 10,
            ns: 20,
            ops_per_sec: 500_000_000,
            ns_p50: 3,
            ns_p99: 4,
            ns_max: 5,
            counters: BTreeMap::from([("allocs".into(), 10)]),
            ..Default::default()
        };
        Report {
            schema: REPORT_SCHEMA,
            record_schema: record::SCHEMA,
            host,
            runs: vec![RunInfo {
                smp: 2,
                exit: "guest exited with success".into(),
                ok: true,
                duration_s: 1.5,
                cpus_online: Some(2),
                apic: Some("x2apic".into()),
                tsc_hz: Some(1_000_000),
                accel: Some("tcg".into()),
                tsc_source: Some("hpet".into()),
                tsc_spread_ppm: Some(30),
                host_tsc_hz: Some(1_000_100),
                tsc_host_ppm: Some(99),
                tsc_flagged: false,
                expected_records: Some(1),
                received_records: 1,
            }],
            summary: super::super::stats::summarize(std::slice::from_ref(&row), &Default::default()),
            records: vec![row],
            failures: vec![Failure {
                kind: FailureKind::Bench,
                smp: 2,
                bench: Some("frames.batch".into()),
                variant: Some("global".into()),
                detail: "frame leaked".into(),
            }],
            targets: vec![TargetResult { name: "t".into(), status: Status::NotMeasured, detail: "no data".into() }],
            traced_runs: Vec::new(),
            run_dir: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::tests_support::{sample, SCHEMA_1_REPORT};
    use super::*;

    #[test]
    fn round_trips_through_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("report.json");
        let report = sample();
        report.write(&path).unwrap();
        assert_eq!(Report::read(&path).unwrap(), report);
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains(&format!("\"record_schema\": {}", record::SCHEMA)), "{text}");
        assert!(text.contains("\"kind\": \"bench\""), "{text}");
        assert!(!text.contains("run_dir"), "only latest.json names its folder");
    }

    #[test]
    fn reports_without_the_tsc_check_still_read() {
        // The host TSC fields are additions with defaults: a report
        // written before them reads, with nothing to compare.
        let mut value = serde_json::to_value(sample()).unwrap();
        value["host"].as_object_mut().unwrap().remove("tsc_hz");
        let run = value["runs"][0].as_object_mut().unwrap();
        for key in ["tsc_source", "tsc_spread_ppm", "host_tsc_hz", "tsc_host_ppm", "tsc_flagged"] {
            run.remove(key).unwrap();
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("old.json");
        std::fs::write(&path, value.to_string()).unwrap();
        let old = Report::read(&path).unwrap();
        assert_eq!((old.host.tsc_hz, old.runs[0].host_tsc_hz, old.runs[0].tsc_flagged), (None, None, false));
    }

    #[test]
    fn other_schemas_are_refused_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.json");
        std::fs::write(&path, r#"{"schema": 99}"#).unwrap();
        let err = format!("{:#}", Report::read(&path).unwrap_err());
        assert!(err.contains("report schema Some(99)") && err.contains("reads schemas 1 to 2"), "{err}");
    }

    #[test]
    fn schema_1_reports_still_read() {
        // A report as schema 1 wrote it: rows without workers or sampling,
        // summaries without solo runs.
        let mut v = serde_json::to_value(sample()).unwrap();
        v["schema"] = 1.into();
        for row in v["records"].as_array_mut().unwrap() {
            for k in ["workers", "sample_every", "samples"] {
                row.as_object_mut().unwrap().remove(k);
            }
        }
        for s in v["summary"].as_array_mut().unwrap() {
            for k in ["sample_every", "samples", "solo", "ceiling", "efficiency"] {
                s.as_object_mut().unwrap().remove(k);
            }
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("old.json");
        std::fs::write(&path, serde_json::to_string(&v).unwrap()).unwrap();
        let old = Report::read(&path).unwrap();
        assert_eq!(old.records[0].workers, 0);
        assert!(!old.records[0].is_solo());
        assert_eq!(old.summary[0].ops_per_sec, sample().summary[0].ops_per_sec);
    }

    /// A schema 1 report (as the previous xtask wrote it) reads, with its
    /// shootdown counts under their schema 2 name.
    #[test]
    fn schema_1_reports_are_read_with_ipis_as_targets() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("old.json");
        std::fs::write(&path, SCHEMA_1_REPORT).unwrap();
        let r = Report::read(&path).unwrap();
        assert_eq!(r.schema, REPORT_SCHEMA);
        let row = &r.records[0];
        assert_eq!((row.bench.as_str(), row.smp), ("tlb.shootdown", 2));
        assert_eq!(row.counters.get("targets"), Some(&1000));
        assert_eq!(row.counters.get("ipis"), None, "schema 1 never counted ICR writes");
        assert_eq!(row.counters.get("shootdowns"), Some(&1000));
        assert_eq!(r.summary[0].counters_per_op.get("targets"), Some(&1.0));
        assert!(!r.summary[0].counters_per_op.contains_key("ipis"));
    }

    #[test]
    fn folder_names_and_paths() {
        assert_eq!(sample().host.run_folder_name(), "20261121T040524Z-e020fd2");
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(resolve("latest", dir.path()), dir.path().join("latest.json"));
        assert_eq!(resolve(dir.path().to_str().unwrap(), Path::new("/x")), dir.path().join("report.json"));
        assert_eq!(resolve("/a/report.json", dir.path()), PathBuf::from("/a/report.json"));
    }
}
