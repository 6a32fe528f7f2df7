//! `alloc::` collections on every CPU at once, with objects freed by a CPU
//! other than the one that allocated them.

use alloc::boxed::Box;
use alloc::collections::BTreeMap;
use alloc::string::String;
use alloc::vec::Vec;
use core::fmt::Write;
use core::sync::atomic::{AtomicU64, Ordering};

use smp::{percpu, MAX_CPUS};
use spin::Mutex;

use super::rng::Rng;
use super::{ensure, register, Test, TestResult};
use crate::heap::HEAP;
use crate::workers;

static ERRORS: AtomicU64 = AtomicU64::new(0);
static PASSED: [Mutex<Vec<Box<[u64]>>>; MAX_CPUS] = [const { Mutex::new(Vec::new()) }; MAX_CPUS];

fn worker(cpu: usize) {
    let mut rng = Rng::new(super::seed() ^ cpu as u64);
    let neighbour = (cpu + 1) % percpu::online_count();
    for round in 0..200u64 {
        let mut v: Vec<u64> = Vec::new();
        let n = 1 + rng.below(300);
        v.extend((0..n).map(|i| i * round));
        let mut map = BTreeMap::new();
        for i in 0..(n % 40) {
            map.insert(i, i * 3);
        }
        let mut s = String::new();
        let _ = write!(s, "cpu {cpu} round {round} {}", map.len());
        let ok = v.iter().enumerate().all(|(i, &x)| x == i as u64 * round)
            && map.iter().all(|(k, v)| *v == k * 3)
            && s.starts_with("cpu ");
        if !ok {
            ERRORS.fetch_add(1, Ordering::Relaxed);
        }
        // Hand a boxed slice to the neighbour; free whatever we were given.
        // Word i of a slice is its tag (sender cpu, round) xor i, so a slice
        // overwritten by any other object is caught.
        let tag = (cpu as u64) << 32 | round;
        let boxed: Box<[u64]> = (0..1 + rng.below(600)).map(|i| tag ^ i).collect();
        PASSED[neighbour].lock().push(boxed);
        let sender = (cpu + percpu::online_count() - 1) % percpu::online_count();
        let mine = core::mem::take(&mut *PASSED[cpu].lock());
        for b in mine {
            let from_sender = b[0] >> 32 == sender as u64;
            if !from_sender || b.iter().enumerate().any(|(i, &x)| x != b[0] ^ i as u64) {
                ERRORS.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

register!(Test::new("heap::collections_on_every_cpu", collections_on_every_cpu));
fn collections_on_every_cpu() -> TestResult {
    ERRORS.store(0, Ordering::Relaxed);
    let before = HEAP.stats().in_use;
    if let Err(e) = workers::run_on_all(worker, 60_000_000_000) {
        ensure!(false, "cpus {:?} did not finish", e.cpus);
    }
    for passed in &PASSED {
        drop(core::mem::take(&mut *passed.lock()));
    }
    ensure!(ERRORS.load(Ordering::Relaxed) == 0, "{} corrupted objects", ERRORS.load(Ordering::Relaxed));
    let after = HEAP.stats().in_use;
    ensure!(after == before, "heap bytes in use {before} before, {after} after");
    Ok(())
}
