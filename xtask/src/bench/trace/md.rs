//! The report.md section of `bench --trace`.

use super::{SummaryLine, TraceSummary};
use crate::bench::report_json::{BenchRow, Summary};
use crate::bench::stats::{median, si};
use std::fmt::Write;

fn line(l: &SummaryLine) -> String {
    let name = l.symbol.clone().unwrap_or_else(|| format!("{:#x}", l.vaddr));
    let cpus: Vec<String> = l.vcpus.iter().map(u32::to_string).collect();
    // Writes per op tell a line every CPU writes from a read-mostly line a
    // rare write makes conflicting (false sharing with a hot word).
    format!(
        "`{name}` (phys {:#x}) {:.2}/op, {:.3} writes/op, CPUs {}",
        l.phys,
        l.accesses_per_op,
        l.writes_per_op,
        cpus.join(",")
    )
}

/// The section, or nothing when no row was traced.
pub fn section(md: &mut String, summary: &[Summary]) {
    let rows: Vec<(&Summary, &TraceSummary)> = summary.iter().filter_map(|s| Some((s, s.trace.as_ref()?))).collect();
    if rows.is_empty() {
        return;
    }
    let slowdowns: Vec<f64> = rows.iter().filter_map(|(_, t)| t.slowdown).collect();
    let ips: Vec<f64> = rows.iter().map(|(_, t)| t.traced_insns_per_sec).collect();
    let _ = writeln!(md, "## Sharing trace (`--trace`)\n");
    let _ = writeln!(
        md,
        "Counted by the `tracer` QEMU plugin in a second boot of each CPU count, inside each measured \
         repetition only. A *conflicting access* is a read or write of a 64-byte line (by guest-physical \
         address) that two or more CPUs accessed in the repetition, at least one of them writing; it does \
         not depend on how the host interleaves the vCPUs. A design with no conflicting access and no IPI \
         per operation scales on a many-core machine whatever this host shows.\n"
    );
    let _ = writeln!(
        md,
        "> **Slowdown.** Under the tracer the guest ran {} guest instructions/s (median over rows) and a \
         median of **{}× fewer ops/s** than the plain boot (range {}–{}×). The ops/s of traced boots are \
         not speed figures; every ops/s elsewhere in this report comes from the plain boots.\n",
        si(median(&ips).unwrap_or(0.0)),
        fmt_x(median(&slowdowns)),
        fmt_x(slowdowns.iter().copied().reduce(f64::min)),
        fmt_x(slowdowns.iter().copied().reduce(f64::max)),
    );
    let _ = writeln!(md, "| benchmark | variant | CPUs | instructions/op | locked/op | conflicting/op | IPIs/op | slowdown | most-accessed conflicting lines |");
    let _ = writeln!(md, "|---|---|---:|---:|---:|---:|---:|---:|---|");
    for (s, t) in rows {
        let lines: Vec<String> = t.lines.iter().map(line).collect();
        let _ = writeln!(
            md,
            "| {} | {} | {} | {:.1} | {:.3} | {:.3} | {:.4} | {} | {} |",
            s.bench,
            s.variant,
            s.smp,
            t.insns_per_op,
            t.locked_per_op,
            t.conflicting_per_op,
            t.ipis_per_op,
            t.slowdown.map_or("?".into(), |v| format!("{v:.1}×")),
            if lines.is_empty() { "none".into() } else { lines.join("; ") },
        );
    }
    md.push('\n');
}

fn fmt_x(v: Option<f64>) -> String {
    v.map_or("?".into(), |v| format!("{v:.1}"))
}

/// The tracer's calibration verdicts on this run's own traced rows at two
/// CPUs or more (at one CPU nothing can conflict), the same checks as the
/// `trace` stage of `cargo xtask test`; nothing when no row was traced.
pub fn calibration(md: &mut String, records: &[BenchRow]) {
    let rows: Vec<BenchRow> = records.iter().filter(|r| r.smp >= 2 && r.trace.is_some()).cloned().collect();
    if rows.is_empty() {
        return;
    }
    let _ = writeln!(md, "\n### Tracer calibration\n");
    if !rows.iter().any(|r| r.bench == "floor.rmw") || !rows.iter().any(|r| r.bench == "tlb.shootdown") {
        let _ = writeln!(
            md,
            "Not checked: the calibration needs the floor.rmw and tlb.shootdown rows (`--only` left them out)."
        );
        return;
    }
    for v in super::check::calibrate(&rows) {
        let _ = writeln!(md, "- {} **{}**: {}", v.name, if v.ok { "pass" } else { "FAIL" }, v.detail);
    }
}
