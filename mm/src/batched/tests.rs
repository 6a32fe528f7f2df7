use super::*;

#[test]
fn cpus_fold_a_batch_at_a_time_and_the_sum_is_exact() {
    let c = BatchedCount::<4>::new(8);
    for _ in 0..7 {
        c.add(1, 1);
    }
    assert_eq!((c.folded(), c.delta(1)), (0, 7), "below a batch nothing is shared");
    c.add(1, 1);
    assert_eq!((c.folded(), c.delta(1)), (8, 0), "the eighth change folds");
    // Another CPU takes them away (evictions of CPU 1's pages): its delta
    // goes negative, then folds.
    for _ in 0..5 {
        c.add(3, -1);
    }
    assert_eq!((c.delta(3), c.sum()), (-5, 3));
    for _ in 0..3 {
        c.add(3, -1);
    }
    assert_eq!((c.folded(), c.delta(3), c.sum()), (0, 0, 0));
    c.add(2, 20);
    assert_eq!((c.folded(), c.delta(2), c.sum()), (20, 0, 20), "a large step folds at once");
}

#[test]
fn the_local_estimate_is_within_the_slack_and_at_least_is_exact() {
    let c = BatchedCount::<4>::new(8);
    // Every CPU just under a batch: the estimate misses the others' deltas.
    for cpu in 0..4 {
        for _ in 0..7 {
            c.add(cpu, 1);
        }
    }
    assert_eq!(c.sum(), 28);
    assert_eq!(c.approx_for(0), 7);
    assert_eq!(c.slack(), 4 * 7);
    assert!((c.sum() - c.approx_for(0)).abs() <= c.slack());
    // Near the limit the answer comes from the sum: exact.
    assert!(c.at_least(0, 28));
    assert!(!c.at_least(0, 29));
    // Far from it, from the estimate alone.
    assert!(!c.at_least(0, 1000));
    assert!(c.at_least(0, 0));
}

#[test]
fn threads_counting_up_and_down_sum_exactly() {
    const CPUS: usize = 4;
    let c = std::sync::Arc::new(BatchedCount::<CPUS>::new(16));
    let hs: Vec<_> = (0..CPUS)
        .map(|cpu| {
            let c = c.clone();
            std::thread::spawn(move || {
                for i in 0..10_000i64 {
                    // CPU k adds k+1 per step and takes back all but one
                    // in ten: a mix of signs and folds.
                    c.add(cpu, cpu as i64 + 1);
                    if i % 10 != 0 {
                        c.add(cpu, -(cpu as i64 + 1));
                    }
                }
            })
        })
        .collect();
    for h in hs {
        h.join().unwrap();
    }
    let want: i64 = (1..=CPUS as i64).map(|k| 1000 * k).sum();
    assert_eq!(c.sum(), want);
}

#[test]
fn the_folded_word_has_a_line_of_its_own() {
    let c = BatchedCount::<4>::new(8);
    let (g, me) = (c.global_addr(), &c as *const _ as usize);
    assert_eq!(g % 128, 0);
    let users = &c.users as *const _ as usize;
    assert_ne!(users / 128, g / 128, "a fold would invalidate the readers' line");
    assert!(me <= g && g < me + core::mem::size_of_val(&c));
}
