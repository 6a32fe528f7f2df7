//! The tracer's proof, on the calibration rows of a traced boot (each
//! Bench row carrying the trace of its own repetition):
//! - `floor.rmw shared` (every CPU increments one counter): at least one
//!   conflicting access per operation, and the most-accessed conflicting
//!   line is that counter's (`SHARED`);
//! - `floor.rmw private` (each CPU its own padded counter): no conflicting
//!   line on the counters, and at most [`PRIVATE_BOUND`] conflicting
//!   accesses per operation in all (see there);
//! - `tlb.shootdown`: the IPIs the tracer saw sent (ICR writes, every
//!   vector) equal the kernel's own `ipis` counter, which counts the same
//!   writes where the kernel makes them; and each `cached-K` unmap asked
//!   exactly the K - 1 other readers (the kernel's `targets`) and sent
//!   them their cross-call IPIs ([`shootdown_icr_writes`] per operation,
//!   seen by the tracer): the K readers stay awake until the unmap, so
//!   none has gone lazy and dropped out.

use crate::bench::report_json::BenchRow;

pub const SHARED_SYMBOL: &str = "bench::workloads::floor::SHARED";
pub const PRIVATE_SYMBOL: &str = "bench::workloads::floor::PRIVATE";
/// `smp::ipi::CROSS_CALL_VECTOR`, which shootdowns use (the CPU runner's
/// wake-ups, `workers::WAKE_VECTOR` 0xF1, come before the timed loops and
/// so outside the window); the check requires shootdown IPIs in the
/// window, so that it compares more than an empty window.
pub const CROSS_CALL_VECTOR: u8 = 0xf0;
/// Conflicting accesses per operation `floor.rmw private` may show. An
/// operation that touches a conflicting line at all adds at least one
/// access, so per-operation sharing shows >= 1/op (`shared` shows 2: the
/// locked increment's read and write). What `private` does show
/// (0.001-0.003/op here since the window covers the timed loops only;
/// 0.03-0.14/op when it covered the whole repetition) is the team's
/// coordination inside the window (from the start barrier's release to
/// the last `Team::stop`), a per-repetition cost: the done count, a CPU
/// that finished early waiting in the CPU runner
/// (`kernel::workers::BUSY`), the team's abort flag (read at every
/// deadline check) and the result slots. Divided by the traced
/// operations of a repetition, it grows as a loaded host runs fewer of
/// them. The counters' own lines must not conflict at all.
pub const PRIVATE_BOUND: f64 = 0.05;

/// One check's verdict.
#[derive(Debug, PartialEq)]
pub struct Verdict {
    pub name: String,
    pub ok: bool,
    pub detail: String,
}

fn verdict(name: String, problems: Vec<String>, fine: String) -> Verdict {
    let ok = problems.is_empty();
    Verdict { name, ok, detail: if ok { fine } else { problems.join("; ") } }
}

/// Cross-call ICR writes of one `cached-k` shootdown on an `smp`-CPU
/// boot: one per other reader, or one all-but-self broadcast when the
/// readers are every CPU and more than two (`smp::counts::use_shorthand`).
pub fn shootdown_icr_writes(k: u64, smp: u64) -> u64 {
    if k == smp && smp > 2 {
        1
    } else {
        k.saturating_sub(1)
    }
}

fn per_op(n: u64, ops: u64) -> f64 {
    n as f64 / ops.max(1) as f64
}

/// The checks, one per calibration row kind found; a kind with no traced
/// row fails (the proof must not pass by not running).
pub fn calibrate(rows: &[BenchRow]) -> Vec<Verdict> {
    let of = |bench: &str, variant: Option<&str>| -> Vec<&BenchRow> {
        // Solo runs (CPU 0 alone) share nothing and prove nothing.
        rows.iter().filter(|r| r.bench == bench && variant.is_none_or(|v| r.variant == v) && !r.is_solo()).collect()
    };
    let mut out = Vec::new();

    let shared = of("floor.rmw", Some("shared"));
    let mut problems = Vec::new();
    let mut lowest = f64::INFINITY;
    for r in &shared {
        let Some(t) = &r.trace else {
            problems.push(format!("rep {}: no trace", r.rep));
            continue;
        };
        let c = per_op(t.conflicting, r.ops);
        lowest = lowest.min(c);
        if c < 1.0 {
            problems.push(format!("rep {}: {c:.3} conflicting accesses/op, expected >= 1", r.rep));
        }
        match t.lines.first() {
            Some(l) if l.symbol.as_deref() == Some(SHARED_SYMBOL) => {}
            top => problems.push(format!(
                "rep {}: top conflicting line is {:?}, not {SHARED_SYMBOL}",
                r.rep,
                top.map(|l| (&l.symbol, l.vaddr))
            )),
        }
    }
    if shared.is_empty() {
        problems.push("no floor.rmw shared row".into());
    }
    out.push(verdict(
        "floor.rmw shared".into(),
        problems,
        format!("{lowest:.2} conflicting accesses/op at least, top line {SHARED_SYMBOL}"),
    ));

    let private = of("floor.rmw", Some("private"));
    let mut problems = Vec::new();
    let mut highest: f64 = 0.0;
    for r in &private {
        let Some(t) = &r.trace else {
            problems.push(format!("rep {}: no trace", r.rep));
            continue;
        };
        let c = per_op(t.conflicting, r.ops);
        highest = highest.max(c);
        if c > PRIVATE_BOUND {
            problems.push(format!("rep {}: {c:.4} conflicting accesses/op, bound {PRIVATE_BOUND}", r.rep));
        }
        if let Some(l) = t.lines.iter().find(|l| l.symbol.as_deref().is_some_and(|s| s.starts_with(PRIVATE_SYMBOL))) {
            problems.push(format!(
                "rep {}: private counter line {:?} conflicts ({} accesses)",
                r.rep, l.symbol, l.accesses
            ));
        }
    }
    if private.is_empty() {
        problems.push("no floor.rmw private row".into());
    }
    out.push(verdict(
        "floor.rmw private".into(),
        problems,
        format!("{highest:.4} conflicting accesses/op at most (bound {PRIVATE_BOUND}), none on {PRIVATE_SYMBOL}"),
    ));

    let tlb = of("tlb.shootdown", None);
    let mut problems = Vec::new();
    let mut total = 0;
    for r in &tlb {
        let Some(t) = &r.trace else {
            problems.push(format!("{} rep {}: no trace", r.variant, r.rep));
            continue;
        };
        let seen: u64 = t.ipi_vectors.values().sum();
        let cross = t.ipi_vectors.get(&CROSS_CALL_VECTOR.to_string()).copied().unwrap_or(0);
        let kernel = r.counters.get("ipis").copied();
        total += seen;
        if kernel != Some(seen) {
            problems
                .push(format!("{} rep {}: tracer saw {seen} IPIs sent, kernel counted {kernel:?}", r.variant, r.rep));
        }
        let Some(k) = r.variant.strip_prefix("cached-").and_then(|k| k.parse::<u64>().ok()) else {
            problems.push(format!("{} rep {}: not a cached-K variant", r.variant, r.rep));
            continue;
        };
        // The traced boot's own unmaps (its repetition ran its own count).
        let want = t.ops * shootdown_icr_writes(k, u64::from(r.smp));
        if cross != want {
            problems.push(format!(
                "{} rep {}: {cross} shootdown IPIs for {} unmaps at {} CPUs, want {want} ({} readers awake)",
                r.variant, r.rep, t.ops, r.smp, k
            ));
        }
        // The plain boot's kernel counters, over its own unmaps.
        if let Some(&asked) = r.counters.get("targets") {
            if asked != r.ops * k.saturating_sub(1) {
                problems.push(format!(
                    "{} rep {}: {asked} CPUs asked for {} unmaps, want {} each",
                    r.variant,
                    r.rep,
                    r.ops,
                    k.saturating_sub(1)
                ));
            }
        }
    }
    if tlb.is_empty() {
        problems.push("no tlb.shootdown row".into());
    }
    out.push(verdict(
        "tlb.shootdown IPIs".into(),
        problems,
        format!("{} repetitions, {total} IPIs, tracer = kernel in each", tlb.len()),
    ));
    out
}
