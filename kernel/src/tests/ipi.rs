//! Raw IPIs: to one CPU, to a set, to all but self. Each arrival is
//! counted by the test vector's handler on the receiving CPU.

use core::sync::atomic::{AtomicU64, Ordering};

use drivers::tsc;
use smp::ipi;
use smp::{percpu, CpuSet, MAX_CPUS};

use super::{ensure, register, Test, TestResult};
use crate::interrupts::TEST_VECTOR;

static RECEIVED: [AtomicU64; MAX_CPUS] = [const { AtomicU64::new(0) }; MAX_CPUS];

/// Called by the test vector's interrupt handler.
pub fn received() {
    RECEIVED[percpu::current_index()].fetch_add(1, Ordering::Relaxed);
}

fn counts() -> [u64; MAX_CPUS] {
    core::array::from_fn(|i| RECEIVED[i].load(Ordering::Relaxed))
}

/// Waits (bounded) until every CPU in `targets` got one more IPI than in
/// `before`, then checks nobody else got any.
fn expect_delivery(before: &[u64; MAX_CPUS], targets: CpuSet) -> TestResult {
    let deadline = tsc::now_ns() + 5_000_000_000;
    while targets.iter().any(|c| RECEIVED[c].load(Ordering::Relaxed) == before[c]) {
        ensure!(tsc::now_ns() < deadline, "IPIs to {targets:?} not all delivered within 5 s");
        core::hint::spin_loop();
    }
    let after = counts();
    for cpu in percpu::online_set().iter() {
        let want = before[cpu] + targets.contains(cpu) as u64;
        ensure!(
            after[cpu] == want,
            "cpu {cpu} received {} IPIs, expected {}",
            after[cpu] - before[cpu],
            want - before[cpu]
        );
    }
    Ok(())
}

register!(Test::new("ipi::to_each_cpu", to_each_cpu));
fn to_each_cpu() -> TestResult {
    let me = percpu::current_index();
    for cpu in percpu::online_set().without(me).iter() {
        let before = counts();
        ipi::send(cpu, TEST_VECTOR);
        expect_delivery(&before, CpuSet::single(cpu))?;
    }
    Ok(())
}

register!(Test::new("ipi::to_a_set", to_a_set));
fn to_a_set() -> TestResult {
    let me = percpu::current_index();
    // Every other online CPU with an odd index: a sparse set.
    let set: CpuSet = percpu::online_set().without(me).iter().filter(|c| c % 2 == 1).collect();
    let before = counts();
    ipi::send_set(set, TEST_VECTOR);
    expect_delivery(&before, set)
}

register!(Test::new("ipi::to_all_but_self", to_all_but_self));
fn to_all_but_self() -> TestResult {
    let others = percpu::online_set().without(percpu::current_index());
    let before = counts();
    ipi::send_all_but_self(TEST_VECTOR);
    expect_delivery(&before, others)
}
