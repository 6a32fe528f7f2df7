//! The project's performance targets, judged from a run's figures. They
//! are reported (met / not met / not measured) and never fail the command:
//! under TCG on a 2-core host a miss is information, not a broken build.

use super::report_json::Summary;
use super::stats::{buddy_locks_per_100_allocs, ns_per_op_per_cpu, Index};
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Met,
    NotMet,
    NotMeasured,
}

impl Status {
    pub fn word(self) -> &'static str {
        match self {
            Status::Met => "met",
            Status::NotMet => "not met",
            Status::NotMeasured => "not measured",
        }
    }
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct TargetResult {
    pub name: String,
    pub status: Status,
    /// The measured figure the verdict rests on.
    pub detail: String,
}

fn result(name: &str, status: Status, detail: String) -> TargetResult {
    TargetResult { name: name.into(), status, detail }
}

fn judged(name: &str, met: bool, detail: String) -> TargetResult {
    result(name, if met { Status::Met } else { Status::NotMet }, detail)
}

pub fn evaluate(summary: &[Summary]) -> Vec<TargetResult> {
    let idx = Index::new(summary);
    vec![
        ratio_at_max(
            &idx,
            "frames.pair magazine ≥ 5× global at the largest CPU count",
            "frames.pair",
            "magazine",
            "global",
            5.0,
        ),
        buddy_locks(&idx),
        remote_vs_pair(&idx),
        no_ipis(&idx),
        ratio_at_max(&idx, "fault.anon busy ≥ 3× global at the largest CPU count", "fault.anon", "busy", "global", 3.0),
    ]
}

/// `variant` ops/s over `base` ops/s at the largest CPU count where both
/// have usable figures.
fn ratio_at_max(idx: &Index, name: &str, bench: &str, variant: &str, base: &str, want: f64) -> TargetResult {
    let smp = idx
        .smps(bench, variant)
        .into_iter()
        .rev()
        .find(|&n| idx.good(bench, variant, n).is_some() && idx.good(bench, base, n).is_some());
    let Some(smp) = smp else {
        return result(
            name,
            Status::NotMeasured,
            format!("no usable {bench} {variant} and {base} at the same CPU count"),
        );
    };
    let (v, b) = (idx.good(bench, variant, smp).unwrap(), idx.good(bench, base, smp).unwrap());
    if b.ops_per_sec <= 0.0 {
        return result(name, Status::NotMeasured, format!("{bench} {base} did no operations at {smp} CPUs"));
    }
    let ratio = v.ops_per_sec / b.ops_per_sec;
    judged(name, ratio >= want, format!("{ratio:.2}× at {smp} CPUs"))
}

/// Usable rows of one bench/variant at every CPU count, ascending.
fn rows<'a>(idx: &Index<'a>, bench: &str, variant: &str) -> Vec<&'a Summary> {
    idx.smps(bench, variant).into_iter().filter_map(|n| idx.good(bench, variant, n)).collect()
}

fn buddy_locks(idx: &Index) -> TargetResult {
    let name = "frames.pair magazine ≤ 2 buddy_locks per 100 allocs";
    let measured: Vec<(u32, f64)> = rows(idx, "frames.pair", "magazine")
        .into_iter()
        .filter_map(|s| Some((s.smp, buddy_locks_per_100_allocs(s)?)))
        .collect();
    // The worst CPU count decides.
    match measured.iter().copied().max_by(|a, b| a.1.total_cmp(&b.1)) {
        None => result(name, Status::NotMeasured, "no frames.pair magazine figures with allocs and buddy_locks".into()),
        Some((smp, worst)) => judged(name, worst <= 2.0, format!("worst {worst:.2} at {smp} CPUs")),
    }
}

fn remote_vs_pair(idx: &Index) -> TargetResult {
    let name = "frames.remote magazine ns/op ≤ 1.5× frames.pair magazine ns/op";
    // At 1 CPU the "neighbour" is the CPU itself: nothing is remote.
    let measured: Vec<(u32, f64)> = rows(idx, "frames.remote", "magazine")
        .into_iter()
        .filter(|remote| remote.smp >= 2)
        .filter_map(|remote| {
            let pair = idx.good("frames.pair", "magazine", remote.smp)?;
            Some((remote.smp, ns_per_op_per_cpu(remote)? / ns_per_op_per_cpu(pair)?))
        })
        .collect();
    match measured.iter().copied().max_by(|a, b| a.1.total_cmp(&b.1)) {
        None => result(
            name,
            Status::NotMeasured,
            "no frames.remote and frames.pair magazine figures at the same CPU count (2 or more)".into(),
        ),
        Some((smp, worst)) => judged(name, worst <= 1.5, format!("worst {worst:.2}× at {smp} CPUs")),
    }
}

fn no_ipis(idx: &Index) -> TargetResult {
    // Shootdown IPIs, counted as the CPUs asked (`targets`): `ipis` also
    // counts the harness's per-repetition wake-ups, which are not the
    // workload's.
    let name = "vm.local private: 0 shootdown IPIs per op";
    let measured: Vec<(u32, f64)> = rows(idx, "vm.local", "private")
        .into_iter()
        .filter_map(|s| Some((s.smp, *s.counters_per_op.get("targets")?)))
        .collect();
    match measured.iter().copied().max_by(|a, b| a.1.total_cmp(&b.1)) {
        None => result(name, Status::NotMeasured, "no vm.local private figures with a targets counter".into()),
        Some((_, 0.0)) => {
            let at: Vec<String> = measured.iter().map(|m| m.0.to_string()).collect();
            judged(name, true, format!("0 at {} CPUs", at.join(", ")))
        }
        Some((smp, worst)) => judged(name, false, format!("{worst:.4} per op at {smp} CPUs")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::report_json::BenchRow;
    use crate::bench::stats::summarize;
    use std::collections::{BTreeMap, BTreeSet};

    fn row(bench: &str, variant: &str, smp: u32, ops_per_sec: u64, counters: &[(&str, u64)]) -> BenchRow {
        BenchRow {
            bench: bench.into(),
            variant: variant.into(),
            smp,
            rep: 0,
            ops: 1000,
            ns: 1,
            ops_per_sec,
            ns_p50: 1,
            ns_p99: 1,
            ns_max: 1,
            counters: counters.iter().map(|(k, v)| (k.to_string(), *v)).collect::<BTreeMap<_, _>>(),
            ..Default::default()
        }
    }

    #[test]
    fn nothing_measured() {
        let results = evaluate(&[]);
        assert_eq!(results.len(), 5);
        assert!(results.iter().all(|r| r.status == Status::NotMeasured), "{results:?}");
    }

    #[test]
    fn each_target_from_the_figures() {
        let rows = vec![
            // 6× at 8 CPUs (met), although only 2× at 4.
            row("frames.pair", "magazine", 4, 200, &[("allocs", 1000), ("buddy_locks", 10)]),
            row("frames.pair", "global", 4, 100, &[]),
            row("frames.pair", "magazine", 8, 600, &[("allocs", 1000), ("buddy_locks", 30)]),
            row("frames.pair", "global", 8, 100, &[]),
            // ns/op at 8 CPUs: pair 8e9/600, remote 8e9/300: 2× (not met).
            row("frames.remote", "magazine", 8, 300, &[]),
            row("vm.local", "private", 4, 10, &[("targets", 0), ("ipis", 3)]),
            row("vm.local", "private", 8, 10, &[("targets", 0), ("ipis", 7)]),
            // 3× at 8 CPUs but that one failed its check: 2.5× at 4 decides.
            row("fault.anon", "busy", 4, 250, &[]),
            row("fault.anon", "global", 4, 100, &[]),
            row("fault.anon", "busy", 8, 300, &[]),
            row("fault.anon", "global", 8, 100, &[]),
        ];
        let failed = BTreeSet::from([("fault.anon".to_string(), "busy".to_string(), 8)]);
        let r = evaluate(&summarize(&rows, &failed));
        assert_eq!((r[0].status, r[0].detail.as_str()), (Status::Met, "6.00× at 8 CPUs"));
        assert_eq!((r[1].status, r[1].detail.as_str()), (Status::NotMet, "worst 3.00 at 8 CPUs"));
        assert_eq!((r[2].status, r[2].detail.as_str()), (Status::NotMet, "worst 2.00× at 8 CPUs"));
        assert_eq!((r[3].status, r[3].detail.as_str()), (Status::Met, "0 at 4, 8 CPUs"));
        assert_eq!((r[4].status, r[4].detail.as_str()), (Status::NotMet, "2.50× at 4 CPUs"));
    }

    #[test]
    fn ipis_without_the_counter_are_not_measured() {
        let r = evaluate(&summarize(&[row("vm.local", "private", 2, 10, &[("maps", 5)])], &BTreeSet::new()));
        assert_eq!(r[3].status, Status::NotMeasured);
        let r = evaluate(&summarize(&[row("vm.local", "private", 2, 10, &[("ipis", 1)])], &BTreeSet::new()));
        assert_eq!(r[3].status, Status::NotMeasured, "wake-up IPIs alone say nothing of shootdowns");
        let r = evaluate(&summarize(&[row("vm.local", "private", 2, 10, &[("targets", 1)])], &BTreeSet::new()));
        assert_eq!((r[3].status, r[3].detail.as_str()), (Status::NotMet, "0.0010 per op at 2 CPUs"));
    }
}
