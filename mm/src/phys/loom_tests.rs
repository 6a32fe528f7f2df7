//! Model checks of the allocator's concurrent paths:
//! `RUSTFLAGS="--cfg loom" cargo test -p mm --release --lib loom`.

use super::*;
use crate::frame_db::FrameEntry;
use loom::sync::Arc;

use crate::testing::{on_cpu, Threads as LoomCpus};

const FRAMES: usize = 4;

/// A tiny allocator: 4 frames, magazines of 1, a depot of 1, `cpus` CPUs.
fn tiny(cpus: usize) -> Arc<PhysAllocator<'static, LoomCpus>> {
    let entries: &'static [FrameEntry] = Vec::leak((0..FRAMES).map(|_| FrameEntry::new()).collect());
    let links = Vec::leak(vec![Link::EMPTY; FRAMES]);
    let slots = Vec::leak((0..cpus).map(|_| CpuSlot::new()).collect());
    let depot = Vec::leak(vec![Magazine::new(); 1]);
    on_cpu(0);
    Arc::new(PhysAllocator::new(FrameDb::new(1024, entries), links, [0..FRAMES], slots, 1, depot, LoomCpus))
}

fn model(f: impl Fn() + Sync + Send + 'static) {
    let mut b = loom::model::Builder::new();
    b.preemption_bound = Some(2);
    b.check(f);
}

fn assert_conserved(a: &PhysAllocator<'static, LoomCpus>, allocated: u64) {
    let c = a.audit().unwrap_or_else(|v| panic!("audit: {v:?}"));
    assert_eq!(c.allocated, allocated);
    assert_eq!(c.buddy + c.magazines + c.depot + c.allocated, FRAMES as u64);
}

/// Two CPUs cycle frames through magazines of one, so every second free
/// sends a magazine to the depot and allocations take it back.
#[test]
fn loom_depot_exchange_two_cpus() {
    model(|| {
        let a = tiny(2);
        let t = {
            let a = a.clone();
            loom::thread::spawn(move || {
                on_cpu(1);
                let x = a.alloc_page().unwrap();
                let y = a.alloc_page().unwrap();
                a.free_page(x).unwrap();
                a.free_page(y).unwrap();
            })
        };
        on_cpu(0);
        let p = a.alloc_page().unwrap();
        let q = a.alloc_page().unwrap();
        a.free_page(p).unwrap();
        a.free_page(q).unwrap();
        t.join().unwrap();
        assert_conserved(&a, 0);
    });
}

/// Two CPUs free the same frame at once: exactly one succeeds.
#[test]
fn loom_concurrent_double_free_has_one_winner() {
    model(|| {
        let a = tiny(2);
        let p = a.alloc_page().unwrap();
        let t = {
            let a = a.clone();
            loom::thread::spawn(move || {
                on_cpu(1);
                a.free_page(p)
            })
        };
        on_cpu(0);
        let mine = a.free_page(p);
        let theirs = t.join().unwrap();
        let wins = [mine, theirs].iter().filter(|r| r.is_ok()).count();
        assert_eq!(wins, 1, "{mine:?} / {theirs:?}");
        let loser = if mine.is_ok() { theirs } else { mine };
        assert_eq!(loser, Err(FrameError::AlreadyFree { phys: p }));
        assert_conserved(&a, 0);
    });
}

/// CPU 1 frees a frame CPU 0 allocated while CPU 0 refills from the buddy.
#[test]
fn loom_remote_free_while_owner_refills() {
    model(|| {
        let a = tiny(2);
        on_cpu(0);
        let p = a.alloc_page().unwrap(); // CPU 0's magazine is now empty
        let t = {
            let a = a.clone();
            loom::thread::spawn(move || {
                on_cpu(1);
                a.free_page(p).unwrap();
            })
        };
        let q = a.alloc_page().unwrap(); // refill
        assert_ne!(p, q);
        t.join().unwrap();
        assert_eq!(a.counters(1).remote_frees, 1);
        assert_conserved(&a, 1);
        a.free_page(q).unwrap();
        assert_conserved(&a, 0);
    });
}
