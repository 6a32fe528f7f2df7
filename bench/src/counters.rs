//! Subsystem counters summed over CPUs, snapshotted before and after each
//! repetition; a benchmark reports the groups it exercises.

use arrayvec::ArrayVec;

use mm::paging::stats::HistogramSnapshot;
use mm::paging::Timing;

use crate::machine::Machine;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Group {
    Frames,
    Tlb,
    Paging,
    /// Median store transfer times (`*_ns`: latencies, not counts; from
    /// the pager's log2 histograms, so a bucket's upper bound).
    StoreLatency,
}

pub type CounterList = ArrayVec<(&'static str, u64), 16>;

#[derive(Debug, Default, Clone, Copy)]
pub struct Snapshot {
    store_in: Option<HistogramSnapshot>,
    store_out: Option<HistogramSnapshot>,
    allocs: u64,
    frees: u64,
    buddy_locks: u64,
    depot_exchanges: u64,
    remote_frees: u64,
    shootdowns: u64,
    ipis: u64,
    faults: u64,
    evictions: u64,
    page_ins: u64,
    page_outs: u64,
    busy_waits: u64,
}

pub fn snapshot<M: Machine>(m: &M) -> Snapshot {
    let mut s = Snapshot::default();
    for cpu in 0..m.cpus() {
        let f = m.frames().counters(cpu);
        s.allocs += f.allocs;
        s.frees += f.frees;
        s.buddy_locks += f.buddy_locks;
        s.depot_exchanges += f.depot_exchanges;
        s.remote_frees += f.remote_frees;
        let t = m.tlb_counts(cpu);
        s.shootdowns += t.shootdowns;
        s.ipis += t.ipis;
    }
    if let Ok(p) = m.vm().pager() {
        let c = p.stats().total();
        s.faults = c.faults;
        s.evictions = c.evictions();
        s.page_ins = c.page_ins;
        s.page_outs = c.page_outs;
        s.busy_waits = c.busy_waits;
        s.store_in = Some(p.stats().histogram(Timing::StoreIn));
        s.store_out = Some(p.stats().histogram(Timing::StoreOut));
    }
    s
}

/// The counters of `groups` that changed from `before` to `after`.
pub fn delta(before: &Snapshot, after: &Snapshot, groups: &[Group]) -> CounterList {
    let d = |a: u64, b: u64| b.wrapping_sub(a);
    let mut list = CounterList::new();
    for g in groups {
        let named: &[(&'static str, u64)] = match g {
            Group::Frames => &[
                ("allocs", d(before.allocs, after.allocs)),
                ("frees", d(before.frees, after.frees)),
                ("buddy_locks", d(before.buddy_locks, after.buddy_locks)),
                ("depot_exchanges", d(before.depot_exchanges, after.depot_exchanges)),
                ("remote_frees", d(before.remote_frees, after.remote_frees)),
            ],
            Group::Tlb => &[("shootdowns", d(before.shootdowns, after.shootdowns)), ("ipis", d(before.ipis, after.ipis))],
            Group::Paging => &[
                ("faults", d(before.faults, after.faults)),
                ("evictions", d(before.evictions, after.evictions)),
                ("page_ins", d(before.page_ins, after.page_ins)),
                ("page_outs", d(before.page_outs, after.page_outs)),
                ("busy_waits", d(before.busy_waits, after.busy_waits)),
            ],
            Group::StoreLatency => {
                let p50 = |a: &Option<HistogramSnapshot>, b: &Option<HistogramSnapshot>| match (a, b) {
                    (Some(a), Some(b)) => b.since(a).percentile(50),
                    _ => 0,
                };
                &[("store_in_p50_ns", p50(&before.store_in, &after.store_in)), ("store_out_p50_ns", p50(&before.store_out, &after.store_out))]
            }
        };
        list.extend(named.iter().copied());
    }
    list
}
