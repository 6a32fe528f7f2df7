//! Subsystem counters summed over CPUs, snapshotted before and after each
//! repetition; a benchmark reports the groups it exercises.

use arrayvec::ArrayVec;

use crate::machine::Machine;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Group {
    Frames,
    Tlb,
    Paging,
}

pub type CounterList = ArrayVec<(&'static str, u64), 16>;

#[derive(Debug, Default, Clone, Copy)]
pub struct Snapshot {
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
        };
        list.extend(named.iter().copied());
    }
    list
}
