//! The table lock under loom: readers (two of them playing one CPU, so
//! sharing a slot, and one on another CPU) and a pruner trying for the
//! exclusive side never hold it at once, a reader that finds the pruner
//! waits (answering "cross-calls": its wait step yields) and gets in once
//! the pruner lets go, and afterwards every slot and the flag are clear.

use super::*;
use loom::sync::atomic::AtomicUsize;
use loom::sync::Arc;

struct Guarded {
    lock: TableLock<2>,
    /// Prunes done (what the exclusive holder changes).
    pruned: AtomicUsize,
    /// Holders now: readers add 1, the pruner adds 1 << 16.
    inside: AtomicUsize,
}

const PRUNER: usize = 1 << 16;

fn reader(g: &Guarded, cpu: usize) {
    let counts = LockCounts::new();
    let shared = g.lock.read_on(cpu, &counts, || 0, |_| loom::thread::yield_now()).expect("the clock never moves");
    let now = g.inside.fetch_add(1, Ordering::SeqCst) + 1;
    assert!(now < PRUNER, "a reader on cpu {cpu} got in while the pruner holds the lock");
    g.inside.fetch_sub(1, Ordering::SeqCst);
    drop(shared);
}

fn pruner(g: &Guarded) -> bool {
    let Some(ex) = g.lock.try_write() else { return false };
    let now = g.inside.fetch_add(PRUNER, Ordering::SeqCst);
    assert_eq!(now, 0, "the pruner got in while {now} readers hold the lock");
    g.pruned.fetch_add(1, Ordering::Relaxed);
    g.inside.fetch_sub(PRUNER, Ordering::SeqCst);
    drop(ex);
    true
}

/// One model run: a reader on CPU 0 and a pruner on threads of their own,
/// and a reader on CPU `main_cpu` on the model's thread. Returns the state
/// after and whether the pruner got in.
fn race(main_cpu: usize) -> (Arc<Guarded>, bool) {
    let g = Arc::new(Guarded { lock: TableLock::new(), pruned: AtomicUsize::new(0), inside: AtomicUsize::new(0) });
    let r = {
        let g = g.clone();
        loom::thread::spawn(move || reader(&g, 0))
    };
    let p = {
        let g = g.clone();
        loom::thread::spawn(move || pruner(&g))
    };
    reader(&g, main_cpu);
    r.join().unwrap();
    let pruned = p.join().unwrap();
    assert_eq!(g.pruned.load(Ordering::Relaxed), usize::from(pruned));
    (g, pruned)
}

fn model() -> loom::model::Builder {
    let mut model = loom::model::Builder::new();
    model.preemption_bound = Some(2);
    model.max_branches = 100_000;
    model
}

#[test]
fn loom_a_reader_and_a_pruner_never_both_hold_the_table_lock() {
    model().check(|| {
        let (g, _) = race(1);
        assert!(!g.lock.writer.load(Ordering::SeqCst));
        assert!(!g.lock.readers.any_held(Ordering::SeqCst));
    });
}

#[test]
fn loom_two_readers_sharing_a_cpu_slot_keep_a_pruner_out() {
    model().check(|| {
        let (g, _) = race(0);
        // With both readers gone the pruner must be able to get in.
        assert!(pruner(&g), "a free lock refused its pruner");
    });
}
