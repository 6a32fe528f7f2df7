use super::*;
use std::sync::atomic::{AtomicBool, AtomicUsize as StdAtomicUsize, Ordering as O};
use std::sync::Arc;
use std::time::Instant;

struct HostPlatform {
    start: Instant,
}

impl CallPlatform for HostPlatform {
    fn signal(&self, _targets: CpuSet) {} // targets poll `service`
    fn now_ns(&self) -> u64 {
        self.start.elapsed().as_nanos() as u64
    }
    fn relax(&self, _: u32) {
        std::thread::yield_now();
    }
}

fn host() -> HostPlatform {
    HostPlatform { start: Instant::now() }
}

const SECOND: u64 = 1_000_000_000;

#[test]
fn local_only_call_runs_inline() {
    let calls = CrossCalls::<4>::new();
    let hits = StdAtomicUsize::new(0);
    call_closure(
        &calls,
        2,
        CpuSet::single(2),
        &|| {
            hits.fetch_add(1, O::Relaxed);
        },
        SECOND,
        &host(),
    )
    .unwrap();
    assert_eq!(hits.load(O::Relaxed), 1);
}

#[test]
fn every_cpu_calls_every_other_many_rounds() {
    const CPUS: usize = 4;
    const ROUNDS: usize = 300;
    let calls = Arc::new(CrossCalls::<CPUS>::new());
    let ran: Arc<[StdAtomicUsize; CPUS]> = Arc::new(Default::default());
    let finished = Arc::new(StdAtomicUsize::new(0));
    let threads: Vec<_> = (0..CPUS)
        .map(|me| {
            let (calls, ran, finished) = (calls.clone(), ran.clone(), finished.clone());
            std::thread::spawn(move || {
                let p = host();
                for round in 0..ROUNDS {
                    // Vary the target set, always including at least one other CPU.
                    let mut targets = CpuSet::first(CPUS).without(me);
                    if round % 3 == 1 {
                        targets = CpuSet::single((me + 1) % CPUS);
                    }
                    let record = || {
                        // Runs on the target: count it there.
                        ran[me].fetch_add(1, O::Relaxed);
                    };
                    call_closure(&calls, me, targets, &record, 5 * SECOND, &p).unwrap();
                }
                finished.fetch_add(1, O::SeqCst);
                // Keep answering the others until everyone is done.
                while finished.load(O::SeqCst) < CPUS {
                    calls.service(me);
                    std::thread::yield_now();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    for (me, count) in ran.iter().enumerate() {
        let per_round: usize = (0..ROUNDS).map(|r| if r % 3 == 1 { 1 } else { CPUS - 1 }).sum();
        assert_eq!(count.load(O::Relaxed), per_round, "calls issued by cpu {me}");
    }
}

#[test]
fn unanswered_call_is_withdrawn_and_never_runs_later() {
    let calls = CrossCalls::<2>::new();
    let hits = StdAtomicUsize::new(0);
    let r = call_closure(
        &calls,
        0,
        CpuSet::single(1),
        &|| {
            hits.fetch_add(1, O::Relaxed);
        },
        20_000_000,
        &host(),
    );
    assert_eq!(r, Err(CallError::Timeout { missing: CpuSet::single(1) }));
    assert!(!calls.has_pending(1));
    assert_eq!(calls.service(1), 0);
    assert_eq!(hits.load(O::Relaxed), 0);
    // The mailbox is free again.
    let stop = AtomicBool::new(false);
    let ok = std::thread::scope(|s| {
        let (calls, stop) = (&calls, &stop);
        s.spawn(move || {
            while !stop.load(O::SeqCst) {
                calls.service(1);
            }
        });
        let r = call_closure(
            calls,
            0,
            CpuSet::single(1),
            &|| {
                hits.fetch_add(1, O::Relaxed);
            },
            SECOND,
            &host(),
        );
        stop.store(true, O::SeqCst);
        r
    });
    assert_eq!(ok, Ok(()));
    assert_eq!(hits.load(O::Relaxed), 1);
}

#[test]
fn target_stuck_in_the_function_is_reported_as_stuck() {
    let calls = Arc::new(CrossCalls::<2>::new());
    static RELEASE: AtomicBool = AtomicBool::new(false);
    static ENTERED: AtomicBool = AtomicBool::new(false);
    fn block(_: usize) {
        ENTERED.store(true, O::SeqCst);
        while !RELEASE.load(O::SeqCst) {
            std::thread::yield_now();
        }
    }
    let target = {
        let calls = calls.clone();
        std::thread::spawn(move || {
            while calls.service(1) == 0 {
                std::thread::yield_now();
            }
        })
    };
    let r = calls.call(0, CpuSet::single(1), block, 0, 20_000_000, &host());
    assert!(ENTERED.load(O::SeqCst));
    assert_eq!(r, Err(CallError::Stuck { running: CpuSet::single(1) }));
    // While the target is still inside, the mailbox cannot be reused.
    let again = calls.call(0, CpuSet::single(1), |_| {}, 0, 10_000_000, &host());
    assert_eq!(again, Err(CallError::Stuck { running: CpuSet::single(1) }));
    RELEASE.store(true, O::SeqCst);
    target.join().unwrap();
    let p = host();
    let served = std::thread::spawn({
        let calls = calls.clone();
        move || {
            while calls.service(1) == 0 {
                std::thread::yield_now();
            }
        }
    });
    assert_eq!(calls.call(0, CpuSet::single(1), |_| {}, 0, SECOND, &p), Ok(()));
    served.join().unwrap();
}

/// CPUs in different words of the sets: the first and last of word 0, the
/// first of word 1, and two in the last word.
const SPREAD: [usize; 5] = [0, 63, 64, 200, MAX_CPUS - 1];

#[test]
fn calls_between_cpus_in_different_words_run_once_each() {
    const ROUNDS: usize = 100;
    let calls = Arc::new(CrossCalls::<MAX_CPUS>::new());
    let ran: Arc<[StdAtomicUsize; MAX_CPUS]> = Arc::new([const { StdAtomicUsize::new(0) }; MAX_CPUS]);
    let finished = Arc::new(StdAtomicUsize::new(0));
    let all: CpuSet = SPREAD.into_iter().collect();
    let threads: Vec<_> = SPREAD
        .into_iter()
        .map(|me| {
            let (calls, ran, finished) = (calls.clone(), ran.clone(), finished.clone());
            std::thread::spawn(move || {
                let p = host();
                // Counted on each target: every one must run it once.
                let record = || {
                    ran[me].fetch_add(1, O::Relaxed);
                };
                // A failed call ends this CPU's rounds but not its service:
                // the others must still finish, and the test then fails.
                let r =
                    (0..ROUNDS).try_for_each(|_| call_closure(&calls, me, all.without(me), &record, SECOND / 2, &p));
                finished.fetch_add(1, O::SeqCst);
                while finished.load(O::SeqCst) < SPREAD.len() {
                    calls.service(me);
                    std::thread::yield_now();
                }
                r
            })
        })
        .collect();
    for (t, me) in threads.into_iter().zip(SPREAD) {
        assert_eq!(t.join().unwrap(), Ok(()), "calls from cpu {me}");
    }
    for me in SPREAD {
        assert_eq!(ran[me].load(O::Relaxed), ROUNDS * (SPREAD.len() - 1), "calls issued by cpu {me}");
    }
}

#[test]
fn a_silent_target_in_another_word_is_withdrawn_alone() {
    let calls = CrossCalls::<MAX_CPUS>::new();
    let hits = StdAtomicUsize::new(0);
    let stop = AtomicBool::new(false);
    // CPU 255 calls 0 (answers) and 130 (never does).
    let r = std::thread::scope(|s| {
        let (calls, stop) = (&calls, &stop);
        s.spawn(move || {
            while !stop.load(O::SeqCst) {
                calls.service(0);
            }
        });
        let targets: CpuSet = [0, 130].into_iter().collect();
        let f = || {
            hits.fetch_add(1, O::Relaxed);
        };
        let r = call_closure(calls, MAX_CPUS - 1, targets, &f, 20_000_000, &host());
        stop.store(true, O::SeqCst);
        r
    });
    assert_eq!(r, Err(CallError::Timeout { missing: CpuSet::single(130) }));
    assert_eq!(hits.load(O::Relaxed), 1, "CPU 0 ran it");
    assert!(!calls.has_pending(130) && !calls.has_pending(0));
    assert_eq!(calls.service(130), 0, "withdrawn: never runs later");
}
