//! The benchmarks and stress mode as tests: every benchmark and variant
//! once, briefly, with its correctness checks, and a short stress run
//! with its audits, on every online CPU. (Speed is measured by
//! `cargo xtask bench`, never asserted here.)

use super::{ensure, register, Test, TestResult};
use crate::bench_machine::{CAPTURED, CAPTURING, QUIET};

register!(Test::new("bench::every_benchmark_checks_out", every_benchmark));
fn every_benchmark() -> TestResult {
    let ok = bench::run_benchmarks(&QUIET, "", bench::Plan::SMOKE, true, super::seed());
    ensure!(ok, "a benchmark failed its checks (see the log)");
    Ok(())
}

register!(Test::new("bench::stress_finds_no_violation", stress));
fn stress() -> TestResult {
    let ok = bench::stress::run(&QUIET, 4, super::seed());
    ensure!(ok, "stress found a violation (see the log)");
    Ok(())
}

register!(Test::new("bench::shootdown_counters_match_the_cached_cpus", shootdown_counters));
/// tlb.shootdown cached-k: each operation is one shootdown from CPU 0 to
/// the k CPUs running the space (they keep reading the page, awake, until
/// the move), so its counters must say exactly one shootdown, k - 1 other
/// CPUs asked and their IPIs sent (k - 1 ICR writes, or one all-but-self
/// broadcast when the k are every online CPU) per operation, one or more
/// invalidated pages, and no full flush.
fn shootdown_counters() -> TestResult {
    CAPTURED.lock().clear();
    let ok = bench::run_benchmarks(&CAPTURING, "tlb.shootdown", bench::Plan::SMOKE, true, super::seed());
    ensure!(ok, "tlb.shootdown failed its checks");
    let records = core::mem::take(&mut *CAPTURED.lock());
    ensure!(!records.is_empty(), "no tlb.shootdown record");
    let mut seen = alloc::string::String::new();
    for r in &records {
        let k: u64 = r
            .variant
            .strip_prefix("cached-")
            .and_then(|k| k.parse().ok())
            .ok_or_else(|| super::failure(format_args!("variant {}", r.variant)))?;
        let (shootdowns, targets) = (r.counter("shootdowns"), r.counter("targets"));
        ensure!(r.ops > 0, "{} {}: no operations", r.bench, r.variant);
        ensure!(shootdowns == r.ops, "{}: {shootdowns} shootdowns for {} ops", r.variant, r.ops);
        ensure!(
            targets == r.ops * (k - 1),
            "{}: {targets} targets for {} ops, want {} per op",
            r.variant,
            r.ops,
            k - 1
        );
        let readers = smp::CpuSet::first(k as usize);
        let others = smp::percpu::online_set().without(0);
        let icr = smp::counts::icr_writes(readers.without(0), others);
        ensure!(
            r.counter("ipis") == r.ops * icr,
            "{}: {} IPIs sent for {} ops, want {icr} per op (to the {} other readers)",
            r.variant,
            r.counter("ipis"),
            r.ops,
            k - 1
        );
        ensure!(
            r.counter("invlpg") >= r.ops * k,
            "{}: {} pages invalidated for {} ops on {k} CPUs",
            r.variant,
            r.counter("invlpg"),
            r.ops
        );
        ensure!(r.counter("full_flushes") == 0, "{}: a full flush for one page", r.variant);
        let _ = core::fmt::Write::write_fmt(
            &mut seen,
            format_args!(
                "{} ipis/op {:.2} ({} ipis {} ops); ",
                r.variant,
                r.counter("ipis") as f64 / r.ops as f64,
                r.counter("ipis"),
                r.ops
            ),
        );
    }
    super::note(format_args!("{seen}"));
    Ok(())
}

register!(Test::new("bench::vm_global_catches_a_skipped_cpu", skipped_cpu));
/// vm.global's check must catch a shootdown that leaves out a CPU which
/// cached the page: with CPU 1 skipped (a test hook in `vm`), CPU 1 reads
/// a moved page through its stale translation, finds the poison, and the
/// benchmark fails.
fn skipped_cpu() -> TestResult {
    if smp::percpu::online_count() < 2 {
        super::note(format_args!("one CPU: no other CPU to skip"));
        return Ok(());
    }
    crate::vm::skip_hook::set(Some(1));
    let ok = bench::run_benchmarks(&QUIET, "vm.global", bench::Plan::SMOKE, true, super::seed());
    crate::vm::skip_hook::set(None);
    ensure!(!ok, "vm.global passed although its shootdowns skipped cpu 1");
    Ok(())
}
