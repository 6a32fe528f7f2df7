//! The benchmarks and stress mode as tests: every benchmark and variant
//! once, briefly, with its correctness checks, and a short stress run
//! with its audits, on every online CPU. (Speed is measured by
//! `cargo xtask bench`, never asserted here.)

use super::{ensure, Test, TestResult};
use crate::bench_machine::QUIET;

pub const TESTS: &[Test] = &[
    Test::new("bench::every_benchmark_checks_out", every_benchmark),
    Test::new("bench::stress_finds_no_violation", stress),
];

fn every_benchmark() -> TestResult {
    let ok = bench::run_benchmarks(&QUIET, "", bench::Plan::SMOKE, true, super::seed());
    ensure!(ok, "a benchmark failed its checks (see the log)");
    Ok(())
}

fn stress() -> TestResult {
    let ok = bench::stress::run(&QUIET, 4, super::seed());
    ensure!(ok, "stress found a violation (see the log)");
    Ok(())
}
