//! `bench --compare OLD NEW`: what changed between two runs, with changes
//! inside the measured run-to-run noise left unflagged.

use super::report_json::{Report, Summary};
use super::stats::{latency, si};
use std::collections::BTreeMap;

/// Changes smaller than this are never flagged. Repetitions inside one
/// boot agree more closely than boots do: two runs of the same code on a
/// 2-core host moved single rows by up to 19% while their repetitions
/// varied by 5% or less (host scheduling of the vCPU threads differs from
/// boot to boot).
pub const NOISE_FLOOR: f64 = 0.20;

/// How far a change must go to count as real: twice the larger
/// coefficient of variation of the two runs, at least [`NOISE_FLOOR`].
pub fn threshold(cv_old: f64, cv_new: f64) -> f64 {
    (2.0 * cv_old.max(cv_new)).max(NOISE_FLOOR)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Faster,
    Slower,
    /// Within the noise.
    Same,
    /// One side's check failed: no comparison.
    Void,
}

impl Verdict {
    fn word(self) -> &'static str {
        match self {
            Verdict::Faster => "faster",
            Verdict::Slower => "SLOWER",
            Verdict::Same => "~",
            Verdict::Void => "failed",
        }
    }
}

pub fn verdict(old: &Summary, new: &Summary) -> Verdict {
    if old.failed || new.failed || old.ops_per_sec <= 0.0 {
        return Verdict::Void;
    }
    let change = new.ops_per_sec / old.ops_per_sec - 1.0;
    match change {
        c if c.abs() <= threshold(old.cv, new.cv) => Verdict::Same,
        c if c > 0.0 => Verdict::Faster,
        _ => Verdict::Slower,
    }
}

fn pct(old: f64, new: f64) -> String {
    if old <= 0.0 {
        return "–".into();
    }
    format!("{:+.1}%", 100.0 * (new / old - 1.0))
}

type Key = (String, String, u32);

fn keyed(r: &Report) -> BTreeMap<Key, &Summary> {
    r.summary.iter().map(|s| ((s.bench.clone(), s.variant.clone(), s.smp), s)).collect()
}

/// The comparison as text: an aligned table of rows in both runs, then the
/// rows only one run has.
pub fn render(old: &Report, new: &Report, old_name: &str, new_name: &str) -> String {
    let (a, b) = (keyed(old), keyed(new));
    let mut out = format!(
        "old: {old_name} ({} {})\nnew: {new_name} ({} {})\n",
        short(&old.host.kernel_commit),
        old.host.date,
        short(&new.host.kernel_commit),
        new.host.date
    );
    if old.host.quick != new.host.quick || old.host.cores != new.host.cores {
        out += "note: the runs differ in --quick or host cores; expect larger differences\n";
    }
    out.push('\n');
    let mut table: Vec<Vec<String>> = vec![[
        "benchmark",
        "variant",
        "CPUs",
        "old ops/s",
        "new ops/s",
        "change",
        "noise",
        "p50 old→new",
        "Δp50",
        "Δp99",
        "verdict",
    ]
    .map(String::from)
    .to_vec()];
    for (key, o) in &a {
        let Some(n) = b.get(key) else { continue };
        table.push(vec![
            key.0.clone(),
            key.1.clone(),
            key.2.to_string(),
            si(o.ops_per_sec),
            si(n.ops_per_sec),
            pct(o.ops_per_sec, n.ops_per_sec),
            format!("±{:.0}%", 100.0 * threshold(o.cv, n.cv)),
            format!("{}→{}", latency(o.ns_p50), latency(n.ns_p50)),
            pct(o.ns_p50, n.ns_p50),
            pct(o.ns_p99, n.ns_p99),
            verdict(o, n).word().into(),
        ]);
    }
    if table.len() == 1 {
        out += "no benchmark/variant/CPU count is in both runs\n";
    } else {
        out += &aligned(&table);
    }
    for (keys, other, name) in [(&a, &b, old_name), (&b, &a, new_name)] {
        let only: Vec<String> =
            keys.keys().filter(|k| !other.contains_key(*k)).map(|(b, v, n)| format!("{b} {v} @{n}")).collect();
        if !only.is_empty() {
            out += &format!("\nonly in {name}: {}\n", only.join(", "));
        }
    }
    out
}

fn short(commit: &str) -> &str {
    &commit[..commit.len().min(7)]
}

/// Columns padded to their widest cell; text left, numbers right.
fn aligned(rows: &[Vec<String>]) -> String {
    let cols = rows[0].len();
    let width: Vec<usize> = (0..cols).map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0)).collect();
    let mut out = String::new();
    for row in rows {
        let cells: Vec<String> = row
            .iter()
            .enumerate()
            .map(|(c, cell)| {
                let pad = " ".repeat(width[c] - cell.chars().count());
                if c < 2 || c == cols - 1 {
                    format!("{cell}{pad}")
                } else {
                    format!("{pad}{cell}")
                }
            })
            .collect();
        out += cells.join("  ").trim_end();
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::report_json::tests_support::sample_with;

    fn s(variant: &str, smp: u32, ops_per_sec: f64, cv: f64) -> Summary {
        Summary {
            bench: "frames.pair".into(),
            variant: variant.into(),
            smp,
            reps: 5,
            ops_per_sec,
            ops_per_sec_min: ops_per_sec,
            ops_per_sec_max: ops_per_sec,
            cv,
            ns_p50: 100.0,
            ns_p99: 1000.0,
            counters_per_op: Default::default(),
            failed: false,
            trace: None,
            sample_every: 64,
            samples: 100,
            solo: None,
            ceiling: None,
            efficiency: None,
        }
    }

    #[test]
    fn noise_decides_the_flag() {
        assert_eq!(threshold(0.0, 0.0), NOISE_FLOOR);
        assert_eq!(threshold(0.05, 0.1), 0.2);
        // +30% with 2% noise: faster; with 16% noise (threshold 32%): same.
        assert_eq!(verdict(&s("m", 1, 100.0, 0.02), &s("m", 1, 130.0, 0.01)), Verdict::Faster);
        assert_eq!(verdict(&s("m", 1, 100.0, 0.16), &s("m", 1, 130.0, 0.01)), Verdict::Same);
        assert_eq!(verdict(&s("m", 1, 100.0, 0.0), &s("m", 1, 85.0, 0.0)), Verdict::Same, "inside the floor");
        assert_eq!(verdict(&s("m", 1, 100.0, 0.0), &s("m", 1, 70.0, 0.0)), Verdict::Slower);
        let mut failed = s("m", 1, 90.0, 0.0);
        failed.failed = true;
        assert_eq!(verdict(&s("m", 1, 100.0, 0.0), &failed), Verdict::Void);
    }

    #[test]
    fn table_is_aligned_and_lists_one_sided_rows() {
        let old = sample_with(vec![
            s("magazine", 1, 1_000_000.0, 0.01),
            s("magazine", 8, 4_000_000.0, 0.01),
            s("global", 8, 500_000.0, 0.0),
        ]);
        let mut new_p50 = s("magazine", 8, 6_000_000.0, 0.02);
        new_p50.ns_p50 = 80.0;
        let new = sample_with(vec![s("magazine", 1, 1_010_000.0, 0.01), new_p50, s("magazine", 2, 2e6, 0.0)]);
        let text = render(&old, &new, "OLD", "NEW");
        let lines: Vec<&str> = text.lines().collect();
        let head = lines.iter().position(|l| l.starts_with("benchmark")).unwrap();
        assert_eq!(
            &lines[head..head + 3],
            [
                "benchmark    variant   CPUs  old ops/s  new ops/s  change  noise    p50 old→new    Δp50   Δp99  verdict",
                "frames.pair  magazine     1      1.00M      1.01M   +1.0%   ±20%  100 ns→100 ns   +0.0%  +0.0%  ~",
                "frames.pair  magazine     8      4.00M      6.00M  +50.0%   ±20%   100 ns→80 ns  -20.0%  +0.0%  faster",
            ]
        );
        assert!(text.contains("\nonly in OLD: frames.pair global @8\n"), "{text}");
        assert!(text.contains("\nonly in NEW: frames.pair magazine @2\n"), "{text}");
    }

    /// `--compare` of a report the previous xtask wrote (schema 1) with a
    /// current one.
    #[test]
    fn an_old_schema_report_compares_with_a_new_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("report.json");
        std::fs::write(&path, crate::bench::report_json::tests_support::SCHEMA_1_REPORT).unwrap();
        let old = Report::read(&path).unwrap();
        let mut row = old.summary[0].clone();
        row.ops_per_sec = 600_000.0;
        let new = sample_with(vec![row]);
        let text = render(&old, &new, "OLD", "NEW");
        assert!(text.contains("tlb.shootdown  cached-2     2       500k       600k  +20.0%"), "{text}");
    }
}
