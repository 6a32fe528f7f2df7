//! Model checks of the cross-call protocol: `RUSTFLAGS="--cfg loom" cargo
//! test -p smp --release --lib crosscall`.

use super::*;
use loom::sync::atomic::{AtomicUsize as LoomUsize, Ordering as O};
use loom::sync::Arc;

/// Time advances one tick per clock read, so every wait is bounded by a
/// number of loop iterations the model checker can exhaust.
struct Ticks(LoomUsize);

impl CallPlatform for Ticks {
    fn signal(&self, _targets: CpuSet) {}
    fn now_ns(&self) -> u64 {
        self.0.fetch_add(1, O::Relaxed) as u64
    }
    fn relax(&self, _: u32) {
        loom::thread::yield_now();
    }
}

fn bump(arg: usize) {
    // SAFETY: the tests pass a pointer to a counter that outlives the call.
    unsafe { &*(arg as *const LoomUsize) }.fetch_add(1, O::Relaxed);
}

/// Model with a preemption bound: exhaustive for every schedule with up to
/// three forced context switches, which is where protocol races show up.
fn model(f: impl Fn() + Sync + Send + 'static) {
    let mut b = loom::model::Builder::new();
    b.preemption_bound = Some(3);
    b.check(f);
}

/// Checks one caller's result against how often its function ran.
fn consistent(r: Result<(), CallError>, hits: usize, target: usize) {
    match r {
        Ok(()) => assert_eq!(hits, 1),
        Err(CallError::Timeout { missing }) => {
            assert_eq!(missing, CpuSet::single(target));
            assert_eq!(hits, 0, "a withdrawn call must never run");
        }
        Err(CallError::Stuck { running }) => {
            assert_eq!(running, CpuSet::single(target));
            assert_eq!(hits, 1);
        }
        // Only `ipi::cross_call` checks who is online.
        Err(e @ CallError::NotOnline { .. }) => panic!("CrossCalls::call returned {e:?}"),
    }
}

/// CPUs `a` and `b` call each other at once, on `N`-CPU mailboxes.
fn mutual<const N: usize>(a: usize, b: usize) {
    model(move || {
        // Built in a thread with a large stack: a `CrossCalls<65>` of loom
        // atomics overflows the model's own coroutine stack on its way
        // into the `Arc`.
        let build = loom::thread::Builder::new().stack_size(4 << 20).spawn(|| Arc::new(CrossCalls::<N>::new()));
        let calls = build.unwrap().join().unwrap();
        let hits = Arc::new([LoomUsize::new(0), LoomUsize::new(0)]);
        let other = {
            let (calls, hits) = (calls.clone(), hits.clone());
            loom::thread::spawn(move || {
                let clock = Ticks(LoomUsize::new(0));
                calls.call(b, CpuSet::single(a), bump, &hits[1] as *const _ as usize, 3, &clock)
            })
        };
        let clock = Ticks(LoomUsize::new(0));
        let mine = calls.call(a, CpuSet::single(b), bump, &hits[0] as *const _ as usize, 3, &clock);
        let theirs = other.join().unwrap();
        // Anything still queued runs now; withdrawn calls must not.
        calls.service(a);
        calls.service(b);
        consistent(mine, hits[0].load(O::Relaxed), b);
        consistent(theirs, hits[1].load(O::Relaxed), a);
        assert!(!calls.has_pending(a) && !calls.has_pending(b));
    });
}

#[test]
fn mutual_calls_never_deadlock_or_double_run() {
    mutual::<2>(0, 1);
}

/// The same with the two CPUs in different words of every set: each
/// one's bit sits in a word the other's inbox take and outstanding loads
/// reach only after an empty one.
#[test]
fn mutual_calls_across_set_words() {
    mutual::<65>(0, 64);
}

#[test]
fn withdrawal_races_fairly_with_pickup() {
    model(|| {
        let calls = Arc::new(CrossCalls::<2>::new());
        let hits = Arc::new(LoomUsize::new(0));
        let target = {
            let calls = calls.clone();
            // One chance to service, at any point relative to the caller.
            loom::thread::spawn(move || calls.service(1))
        };
        // A bound of 2 ticks: the caller gives up almost at once.
        let clock = Ticks(LoomUsize::new(0));
        let r = calls.call(0, CpuSet::single(1), bump, &*hits as *const _ as usize, 2, &clock);
        let ran_on_target = target.join().unwrap();
        let hits = hits.load(O::Relaxed);
        match r {
            Ok(()) => assert_eq!((hits, ran_on_target), (1, 1)),
            Err(CallError::Timeout { missing }) => {
                assert_eq!(missing, CpuSet::single(1));
                assert_eq!((hits, ran_on_target), (0, 0), "a withdrawn call must never run");
            }
            // Picked up, but not finished within the tiny bound.
            Err(CallError::Stuck { running }) => {
                assert_eq!(running, CpuSet::single(1));
                assert_eq!((hits, ran_on_target), (1, 1));
            }
            Err(e @ CallError::NotOnline { .. }) => panic!("CrossCalls::call returned {e:?}"),
        }
        assert!(!calls.has_pending(1));
    });
}
