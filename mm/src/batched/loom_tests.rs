//! The fold of `BatchedCount` under loom: two CPUs count with batch 2
//! (every second change folds) while a third reads `sum`. A change that
//! finished before the read began is never missed, and the read counts at
//! most a batch per folding CPU twice; after both stop the sum is exact.

use super::*;
use loom::sync::atomic::AtomicI64 as Progress;
use loom::sync::Arc;

#[test]
fn loom_sum_never_misses_a_finished_change() {
    let mut model = loom::model::Builder::new();
    // Two preemptions cover a fold interleaved between a reader's loads.
    model.preemption_bound = Some(2);
    model.check(|| {
        let c = Arc::new(BatchedCount::<2>::new(2));
        // Changes each CPU has finished (the model's own bookkeeping).
        let done = Arc::new([Progress::new(0), Progress::new(0)]);
        let cpus: Vec<_> = (0..2)
            .map(|cpu| {
                let (c, done) = (c.clone(), done.clone());
                loom::thread::spawn(move || {
                    for _ in 0..2 {
                        c.add(cpu, 1);
                        done[cpu].fetch_add(1, Ordering::Release);
                    }
                })
            })
            .collect();
        let before = done[0].load(Ordering::Acquire) + done[1].load(Ordering::Acquire);
        let s = c.sum();
        assert!(s >= before, "sum {s} missed changes: {before} had finished");
        assert!(s <= 4 + 2 * 2, "sum {s}: more than a batch per CPU counted twice");
        for t in cpus {
            t.join().unwrap();
        }
        assert_eq!(c.sum(), 4);
        assert_eq!(c.folded() + c.delta(0) + c.delta(1), 4);
    });
}
