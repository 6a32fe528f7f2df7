//! The table lock on host threads playing CPUs.

use std::sync::atomic::{AtomicBool as StdBool, AtomicU64, AtomicUsize};
use std::thread;

use super::*;

fn never() -> u64 {
    0
}

#[test]
fn readers_on_many_cpus_and_a_pruner_never_hold_the_lock_at_once() {
    let lock: TableLock = TableLock::new();
    let (readers_in, writer_in, stop) = (AtomicUsize::new(0), StdBool::new(false), StdBool::new(false));
    let (reads, prunes) = (AtomicU64::new(0), AtomicU64::new(0));
    thread::scope(|s| {
        // CPUs 0, 1 and the last one, and two threads on CPU 0 (an
        // interrupt handler taking the shared side over its own code).
        for cpu in [0, 0, 1, MAX_CPUS - 1] {
            let (lock, readers_in, writer_in, stop, reads) = (&lock, &readers_in, &writer_in, &stop, &reads);
            s.spawn(move || {
                let counts = LockCounts::new();
                while !stop.load(Ordering::Relaxed) {
                    let g = lock.read_on(cpu, &counts, never, |_| thread::yield_now()).unwrap();
                    readers_in.fetch_add(1, Ordering::SeqCst);
                    assert!(!writer_in.load(Ordering::SeqCst), "cpu {cpu} reads while a pruner holds the lock");
                    readers_in.fetch_sub(1, Ordering::SeqCst);
                    drop(g);
                    reads.fetch_add(1, Ordering::Relaxed);
                    // Leave the pruners a moment without this reader.
                    thread::yield_now();
                }
            });
        }
        // Two pruners try until they have got in 100 times between them
        // (bounded), then the readers stop.
        let pruners: Vec<_> = (0..2)
            .map(|_| {
                let (lock, readers_in, writer_in, prunes) = (&lock, &readers_in, &writer_in, &prunes);
                s.spawn(move || {
                    let start = std::time::Instant::now();
                    while prunes.load(Ordering::Relaxed) < 100 {
                        assert!(start.elapsed().as_secs() < 30, "pruners got in {prunes:?} times in 30 s");
                        if let Some(g) = lock.try_write() {
                            assert!(!writer_in.swap(true, Ordering::SeqCst), "two pruners hold the lock");
                            assert_eq!(readers_in.load(Ordering::SeqCst), 0, "a pruner holds the lock with readers in");
                            writer_in.store(false, Ordering::SeqCst);
                            drop(g);
                            prunes.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                })
            })
            .collect();
        for p in pruners {
            p.join().unwrap();
        }
        stop.store(true, Ordering::Relaxed);
    });
    assert!(reads.load(Ordering::Relaxed) > 0, "no reader got in");
    assert!(!lock.writer.load(Ordering::SeqCst));
    assert!(!lock.readers.any_held(Ordering::SeqCst), "a count was left behind");
    assert!(lock.try_write().is_some(), "a free lock refused its pruner");
}

#[test]
fn a_shared_holder_on_any_cpu_refuses_the_pruner_and_a_refused_try_changes_nothing() {
    let lock: TableLock = TableLock::new();
    let counts = LockCounts::new();
    for cpu in [0, 63.min(MAX_CPUS - 1), MAX_CPUS - 1] {
        let g = lock.read_on(cpu, &counts, never, |_| panic!("the shared side is free")).unwrap();
        assert!(lock.try_write().is_none(), "cpu {cpu}'s reader did not keep the pruner out");
        assert!(!lock.writer.load(Ordering::SeqCst), "the refused try left its flag");
        // Another reader still gets in at once (the failed try wrote nothing).
        drop(lock.read_on(cpu ^ 1, &counts, never, |_| panic!("no pruner holds the lock")).unwrap());
        drop(g);
        assert!(lock.try_write().is_some(), "cpu {cpu}: the reader's count was not given back");
    }
    assert_eq!(counts.snapshot(), crate::lock_count::LockSnapshot { acquired: 6, contended: 0, spins: 0 });
}

#[test]
fn a_reader_waits_answering_steps_while_a_pruner_holds_then_gets_in() {
    let lock: TableLock = TableLock::new();
    let counts = LockCounts::new();
    let ex = std::cell::Cell::new(Some(lock.try_write().unwrap()));
    let mut seen = Vec::new();
    let g = lock
        .read_on(3, &counts, never, |w| {
            seen.push(w.steps());
            // The pruner lets go after the reader's tenth step.
            if w.steps() == 9 {
                ex.take();
            }
        })
        .unwrap();
    assert_eq!(seen, (0..10).collect::<Vec<_>>(), "each step is told how far the wait has got");
    assert_eq!(counts.snapshot(), crate::lock_count::LockSnapshot { acquired: 1, contended: 1, spins: 10 });
    // While it waited its count was withdrawn: the slot holds one reader.
    assert_eq!(lock.readers.get(3).load(Ordering::SeqCst), 1);
    drop(g);
}

#[test]
fn a_reader_past_the_bound_is_refused_and_leaves_no_count() {
    let lock: TableLock = TableLock::new();
    let counts = LockCounts::new();
    let _ex = lock.try_write().unwrap();
    let clock = std::cell::Cell::new(0u64);
    let mut looks = 0;
    let r = lock.read_on(
        2,
        &counts,
        || {
            looks += 1;
            clock.get()
        },
        |_| clock.set(clock.get() + 1_000_000_000),
    );
    assert!(matches!(r, Err(TimedOut)));
    assert!(!lock.readers.any_held(Ordering::SeqCst), "a refused reader left its count");
    let spins = counts.snapshot().spins;
    // 60 s at 1 s per step, the clock read every CLOCK_EVERY steps.
    assert_eq!(spins, u64::from(CLOCK_EVERY), "{spins} steps");
    assert_eq!(looks, 2, "the clock is read at the start and every {CLOCK_EVERY} steps");
}

#[test]
fn a_lock_on_the_heap_excludes_as_the_inline_one() {
    let lock: TableLock = TableLock::on_heap();
    let counts = LockCounts::new();
    let g = lock.read_on(crate::MAX_CPUS - 1, &counts, || 0, |_| {}).unwrap();
    assert!(lock.try_write().is_none(), "the last CPU's slot on the heap holds a reader");
    drop(g);
    let w = lock.try_write().expect("a free lock");
    assert!(lock.try_read(lock.readers.get(0)).is_none(), "a reader got in past the pruner");
    drop(w);
}
