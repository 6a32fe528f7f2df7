//! `bench --trace`: every CPU count is booted twice, plainly (its figures
//! are the report's speed figures) and under the `tracer` QEMU plugin,
//! whose per-repetition windows (instructions, locked instructions, IPIs,
//! accesses to conflicting lines) are matched to the traced boot's Bench
//! records and attached to the plain boot's repetitions.
//!
//! The tracer is GPL-2.0-or-later; xtask does not link it, it only builds
//! it and reads the JSON lines it writes (format: `tracer/src/window.rs`).

pub mod check;
pub mod md;
pub mod plugin;
pub mod proof;
pub mod symbols;

use super::report_json::{BenchRow, Summary};
use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use symbols::Symbols;

/// Conflicting lines kept per summary row.
pub const SUMMARY_LINES: usize = 3;

/// Traces of one boot by (bench, variant, workers, rep): a row where every
/// CPU works and its solo run (CPU 0 alone) share the rest.
pub type Traces = BTreeMap<(String, String, u32, u32), RepTrace>;

fn key(row: &BenchRow) -> (String, String, u32, u32) {
    (row.bench.clone(), row.variant.clone(), row.workers, row.rep)
}

/// What `measure` needs to trace.
pub struct Tracing {
    pub plugin: PathBuf,
    /// The kernel ELF the boots run, for symbol names.
    pub kernel_elf: PathBuf,
}

/// One window as the plugin writes it.
#[derive(Deserialize, Debug, Clone, PartialEq)]
pub struct Window {
    pub seq: u32,
    /// Where the begin and end markers ran (see `Symbols::load_bias`).
    pub begin_pc: u64,
    pub end_pc: u64,
    pub vcpus: Vec<VcpuTrace>,
    pub ipi_vectors: BTreeMap<String, u64>,
    pub conflicting_lines: u64,
    pub lines: Vec<TraceLine>,
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Default)]
pub struct VcpuTrace {
    pub insns: u64,
    pub locked: u64,
    pub ipis: u64,
    pub conflicting: u64,
}

/// A conflicting line of one repetition.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct TraceLine {
    /// Guest-physical address of the line.
    pub phys: u64,
    /// A virtual address a vCPU used for it.
    pub vaddr: u64,
    pub accesses: u64,
    pub writes: u64,
    pub vcpus: Vec<u32>,
    /// The kernel symbol `vaddr` belongs to, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub symbol: Option<String>,
}

/// The trace of one repetition (in report.json, per Bench row).
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct RepTrace {
    /// Operations and time of the traced boot's repetition: the per-op
    /// figures divide by these ops. Not speed figures.
    pub ops: u64,
    pub ns: u64,
    pub ops_per_sec: u64,
    pub insns: u64,
    pub locked: u64,
    pub ipis: u64,
    pub conflicting: u64,
    pub conflicting_lines: u64,
    /// IPIs by vector (decimal).
    pub ipi_vectors: BTreeMap<String, u64>,
    pub vcpus: Vec<VcpuTrace>,
    pub lines: Vec<TraceLine>,
}

/// A conflicting line over a row's repetitions.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct SummaryLine {
    pub phys: u64,
    pub vaddr: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub symbol: Option<String>,
    pub accesses_per_op: f64,
    pub writes_per_op: f64,
    pub vcpus: Vec<u32>,
}

/// The trace of one summary row: totals over its traced repetitions
/// divided by their operations (as `counters_per_op` does).
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct TraceSummary {
    pub reps: u32,
    pub insns_per_op: f64,
    pub locked_per_op: f64,
    pub conflicting_per_op: f64,
    pub ipis_per_op: f64,
    /// Median ops/s of the traced repetitions (not a speed figure).
    pub traced_ops_per_sec: f64,
    /// Plain ops/s ÷ traced ops/s: how much the tracer slows the guest.
    pub slowdown: Option<f64>,
    /// Guest instructions per second under the tracer, all vCPUs.
    pub traced_insns_per_sec: f64,
    pub lines: Vec<SummaryLine>,
}

pub fn read_windows(path: &Path) -> Result<Vec<Window>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading the tracer's output {}", path.display()))?;
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            serde_json::from_str(l).with_context(|| format!("{} line {}: not a tracer window", path.display(), i + 1))
        })
        .collect()
}

impl RepTrace {
    fn of(row: &BenchRow, w: Window, symbols: Option<&Symbols>) -> RepTrace {
        let sum = |f: fn(&VcpuTrace) -> u64| w.vcpus.iter().map(f).sum();
        let bias = symbols.and_then(|s| Some((s, s.load_bias(w.begin_pc, w.end_pc)?)));
        let lines = w
            .lines
            .into_iter()
            .map(|l| TraceLine { symbol: bias.and_then(|(s, b)| s.name(l.vaddr.wrapping_sub(b))), ..l })
            .collect();
        RepTrace {
            ops: row.ops,
            ns: row.ns,
            ops_per_sec: row.ops_per_sec,
            insns: sum(|v| v.insns),
            locked: sum(|v| v.locked),
            ipis: sum(|v| v.ipis),
            conflicting: sum(|v| v.conflicting),
            conflicting_lines: w.conflicting_lines,
            ipi_vectors: w.ipi_vectors,
            vcpus: w.vcpus,
            lines,
        }
    }
}

/// Matches the windows of a traced boot to its Bench records (window `i`
/// is the boot's `i`-th record: the guest numbers them so) and returns the
/// traces by (bench, variant, rep), plus the problems found.
pub fn match_windows(traced: &[BenchRow], windows: Vec<Window>, symbols: Option<&Symbols>) -> (Traces, Vec<String>) {
    let mut problems = Vec::new();
    let mut by_seq: BTreeMap<u32, Window> = BTreeMap::new();
    for w in windows {
        if let Some(old) = by_seq.insert(w.seq, w) {
            problems.push(format!("the tracer wrote window {} twice", old.seq));
        }
    }
    let mut out = BTreeMap::new();
    for (i, row) in traced.iter().enumerate() {
        match by_seq.remove(&(i as u32)) {
            Some(w) => {
                out.insert(key(row), RepTrace::of(row, w, symbols));
            }
            None => problems
                .push(format!("no trace window for Bench record {i} ({} {} rep {})", row.bench, row.variant, row.rep)),
        }
    }
    let extra: Vec<u32> = by_seq.into_keys().collect();
    if !extra.is_empty() {
        problems.push(format!("trace windows {extra:?} match no Bench record"));
    }
    (out, problems)
}

/// Attaches the traces of a traced boot to the same repetitions of the
/// plain boot; names the plain repetitions left without one.
pub fn attach(plain: &mut [BenchRow], mut traces: Traces) -> Vec<String> {
    let mut missing = BTreeSet::new();
    for row in plain.iter_mut() {
        match traces.remove(&key(row)) {
            Some(t) => row.trace = Some(t),
            None => {
                missing.insert(format!("{} {}", row.bench, row.variant));
            }
        }
    }
    missing.into_iter().map(|m| format!("{m}: the traced boot has no repetition to match a plain one")).collect()
}

fn per_op(n: u64, ops: u64) -> f64 {
    if ops == 0 {
        0.0
    } else {
        n as f64 / ops as f64
    }
}

/// Fills `trace` of every summary row whose repetitions were traced.
pub fn summarize(rows: &[BenchRow], summary: &mut [Summary]) {
    for s in summary.iter_mut() {
        let reps: Vec<&RepTrace> = rows
            .iter()
            .filter(|r| r.bench == s.bench && r.variant == s.variant && r.smp == s.smp && !r.is_solo())
            .filter_map(|r| r.trace.as_ref())
            .collect();
        if reps.is_empty() {
            continue;
        }
        let ops: u64 = reps.iter().map(|t| t.ops).sum();
        let total = |f: fn(&RepTrace) -> u64| per_op(reps.iter().map(|t| f(t)).sum(), ops);
        // The same figure as the plain rows' (the guest's ops/s).
        let rates: Vec<f64> = reps.iter().map(|t| t.ops_per_sec as f64).collect();
        let traced = super::stats::median(&rates).unwrap_or(0.0);
        let ns: u64 = reps.iter().map(|t| t.ns).sum();
        // Per line over the repetitions: its first line, accesses, writes, CPUs.
        let mut merged: BTreeMap<u64, (&TraceLine, u64, u64, BTreeSet<u32>)> = BTreeMap::new();
        for l in reps.iter().flat_map(|t| &t.lines) {
            let e = merged.entry(l.phys).or_insert_with(|| (l, 0, 0, BTreeSet::new()));
            e.1 += l.accesses;
            e.2 += l.writes;
            e.3.extend(&l.vcpus);
        }
        let mut lines: Vec<SummaryLine> = merged
            .into_values()
            .map(|(first, acc, wr, vcpus)| SummaryLine {
                phys: first.phys,
                vaddr: first.vaddr,
                symbol: first.symbol.clone(),
                accesses_per_op: per_op(acc, ops),
                writes_per_op: per_op(wr, ops),
                vcpus: vcpus.into_iter().collect(),
            })
            .collect();
        lines.sort_by(|a, b| b.accesses_per_op.total_cmp(&a.accesses_per_op).then(a.phys.cmp(&b.phys)));
        lines.truncate(SUMMARY_LINES);
        s.trace = Some(TraceSummary {
            reps: reps.len() as u32,
            insns_per_op: total(|t| t.insns),
            locked_per_op: total(|t| t.locked),
            conflicting_per_op: total(|t| t.conflicting),
            ipis_per_op: total(|t| t.ipis),
            traced_ops_per_sec: traced,
            slowdown: (traced > 0.0 && s.ops_per_sec > 0.0).then(|| s.ops_per_sec / traced),
            traced_insns_per_sec: if ns == 0 {
                0.0
            } else {
                reps.iter().map(|t| t.insns).sum::<u64>() as f64 * 1e9 / ns as f64
            },
            lines,
        });
    }
}

#[cfg(test)]
mod tests;
