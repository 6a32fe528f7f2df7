//! Subsystem counters summed over CPUs, snapshotted before and after each
//! repetition; a benchmark reports the groups it exercises.
//!
//! Every counter here is a count of work the kernel did, independent of
//! how fast the host runs it: lock acquisitions, contended acquisitions
//! (the first try found the lock held) and their spins (wait iterations),
//! IPIs sent (ICR writes), shootdown targets, pages invalidated, full
//! flushes, page tables made and freed, backing-store transfers. Each is
//! kept per CPU on the CPU's own cache lines; reading sums them.

use arrayvec::ArrayVec;

use mm::paging::stats::HistogramSnapshot;
use mm::paging::Timing;

use crate::machine::Machine;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Group {
    /// The frame allocator: allocations, frees, the buddy lock (under the
    /// `global` policy, the baseline's one lock) and the depot lock.
    Frames,
    /// Shootdowns, the CPUs they asked, IPIs, invalidations, full flushes.
    Tlb,
    /// Page tables allocated, zeroed, freed; the table lock.
    Vm,
    /// Faults, evictions, store transfers, the baseline's global lock.
    Paging,
    /// Median store transfer times (`*_ns`: latencies, not counts; from
    /// the pager's log2 histograms, so a bucket's upper bound).
    StoreLatency,
}

/// The group sets benchmarks use (the table in `workloads` names them).
pub const FRAMES: &[Group] = &[Group::Frames];
pub const MAPPING: &[Group] = &[Group::Tlb, Group::Vm];
pub const FAULTS: &[Group] = &[Group::Paging, Group::Tlb, Group::Vm];
pub const THRASH: &[Group] = &[Group::Paging, Group::Tlb, Group::Vm, Group::StoreLatency];
pub const SETS: &[&[Group]] = &[FRAMES, MAPPING, FAULTS, THRASH];

/// Room for the largest set's counters.
pub const MAX_COUNTERS: usize = 32;
pub type CounterList = ArrayVec<(&'static str, u64), MAX_COUNTERS>;

#[derive(Debug, Default, Clone, Copy)]
pub struct Snapshot {
    store_in: Option<HistogramSnapshot>,
    store_out: Option<HistogramSnapshot>,
    frames: mm::counters::CounterSnapshot,
    tlb: record::TlbSnapshot,
    vm: mm::vm::VmCountSnapshot,
    paging: mm::paging::Counts,
}

pub fn snapshot<M: Machine>(m: &M) -> Snapshot {
    let mut s = Snapshot::default();
    for cpu in 0..m.cpus() {
        s.frames += m.frames().counters(cpu);
        s.tlb += m.tlb_counts(cpu);
        s.vm += m.vm().counts(cpu);
    }
    if let Ok(p) = mm::paging::Paging::of(m.vm()).map(|p| p.pager()) {
        s.paging = p.stats().total();
        s.store_in = Some(p.stats().histogram(Timing::StoreIn));
        s.store_out = Some(p.stats().histogram(Timing::StoreOut));
    }
    s
}

/// The counters of `groups` that changed from `before` to `after`.
pub fn delta(before: &Snapshot, after: &Snapshot, groups: &[Group]) -> CounterList {
    let d = |a: u64, b: u64| b.wrapping_sub(a);
    let (f0, f1) = (&before.frames, &after.frames);
    let (t0, t1) = (&before.tlb, &after.tlb);
    let (v0, v1) = (&before.vm, &after.vm);
    let (p0, p1) = (&before.paging, &after.paging);
    let mut list = CounterList::new();
    for g in groups {
        let named: &[(&'static str, u64)] = match g {
            Group::Frames => &[
                ("allocs", d(f0.allocs, f1.allocs)),
                ("frees", d(f0.frees, f1.frees)),
                ("buddy_locks", d(f0.buddy.acquired, f1.buddy.acquired)),
                ("buddy_contended", d(f0.buddy.contended, f1.buddy.contended)),
                ("buddy_spins", d(f0.buddy.spins, f1.buddy.spins)),
                ("depot_locks", d(f0.depot.acquired, f1.depot.acquired)),
                ("depot_contended", d(f0.depot.contended, f1.depot.contended)),
                ("depot_spins", d(f0.depot.spins, f1.depot.spins)),
                ("depot_exchanges", d(f0.depot_exchanges, f1.depot_exchanges)),
                ("remote_frees", d(f0.remote_frees, f1.remote_frees)),
            ],
            Group::Tlb => &[
                ("shootdowns", d(t0.shootdowns, t1.shootdowns)),
                ("targets", d(t0.targets, t1.targets)),
                ("ipis", d(t0.ipis, t1.ipis)),
                ("invlpg", d(t0.pages_invalidated, t1.pages_invalidated)),
                ("full_flushes", d(t0.full_flushes, t1.full_flushes)),
            ],
            Group::Vm => &[
                ("tables_allocated", d(v0.tables_allocated, v1.tables_allocated)),
                ("tables_zeroed", d(v0.tables_zeroed, v1.tables_zeroed)),
                ("tables_freed", d(v0.tables_freed, v1.tables_freed)),
                ("table_locks", d(v0.table_lock.acquired, v1.table_lock.acquired)),
                ("table_contended", d(v0.table_lock.contended, v1.table_lock.contended)),
                ("table_spins", d(v0.table_lock.spins, v1.table_lock.spins)),
            ],
            Group::Paging => &[
                ("faults", d(p0.faults, p1.faults)),
                ("evictions", d(p0.evictions(), p1.evictions())),
                ("page_ins", d(p0.page_ins, p1.page_ins)),
                ("page_outs", d(p0.page_outs, p1.page_outs)),
                ("busy_waits", d(p0.busy_waits, p1.busy_waits)),
                ("store_reads", d(p0.store_reads, p1.store_reads)),
                ("store_writes", d(p0.store_writes, p1.store_writes)),
                ("paging_locks", d(p0.global_lock.acquired, p1.global_lock.acquired)),
                ("paging_contended", d(p0.global_lock.contended, p1.global_lock.contended)),
                ("paging_spins", d(p0.global_lock.spins, p1.global_lock.spins)),
            ],
            Group::StoreLatency => {
                let p50 = |a: &Option<HistogramSnapshot>, b: &Option<HistogramSnapshot>| match (a, b) {
                    (Some(a), Some(b)) => b.since(a).percentile(50),
                    _ => 0,
                };
                &[
                    ("store_in_p50_ns", p50(&before.store_in, &after.store_in)),
                    ("store_out_p50_ns", p50(&before.store_out, &after.store_out)),
                ]
            }
        };
        list.extend(named.iter().copied());
    }
    list
}

#[cfg(test)]
mod tests {
    use super::*;
    use record::{Counters, Record};

    fn after_one_of_each() -> Snapshot {
        let mut s = Snapshot::default();
        s.frames.allocs = 1;
        s.frames.buddy.acquired = 2;
        s.frames.buddy.contended = 3;
        s.frames.buddy.spins = 4;
        s.frames.depot.acquired = 5;
        s.frames.depot.contended = 6;
        s.frames.depot.spins = 7;
        s.tlb = record::TlbSnapshot { shootdowns: 8, targets: 9, ipis: 10, pages_invalidated: 11, full_flushes: 12 };
        s.vm.tables_allocated = 13;
        s.vm.tables_zeroed = 14;
        s.vm.tables_freed = 15;
        s.vm.table_lock.acquired = 16;
        s.vm.table_lock.contended = 17;
        s.vm.table_lock.spins = 18;
        s.paging.store_reads = 19;
        s.paging.store_writes = 20;
        s.paging.global_lock.acquired = 21;
        s.paging.global_lock.contended = 22;
        s.paging.global_lock.spins = 23;
        s
    }

    fn get(list: &CounterList, name: &str) -> u64 {
        list.iter().find(|(n, _)| *n == name).unwrap_or_else(|| panic!("no counter {name} in {list:?}")).1
    }

    #[test]
    fn each_group_reports_its_own_counters() {
        let (zero, after) = (Snapshot::default(), after_one_of_each());
        let f = delta(&zero, &after, FRAMES);
        let frames = [
            ("allocs", 1),
            ("buddy_locks", 2),
            ("buddy_contended", 3),
            ("buddy_spins", 4),
            ("depot_locks", 5),
            ("depot_contended", 6),
            ("depot_spins", 7),
        ];
        for (name, v) in frames {
            assert_eq!(get(&f, name), v, "{name}");
        }
        assert!(
            f.iter().all(|(n, _)| !n.starts_with("table") && *n != "ipis"),
            "frames rows carry frames counters: {f:?}"
        );
        let v = delta(&zero, &after, MAPPING);
        let mapping = [
            ("shootdowns", 8),
            ("targets", 9),
            ("ipis", 10),
            ("invlpg", 11),
            ("full_flushes", 12),
            ("tables_allocated", 13),
            ("tables_zeroed", 14),
            ("tables_freed", 15),
            ("table_locks", 16),
            ("table_contended", 17),
            ("table_spins", 18),
        ];
        for (name, n) in mapping {
            assert_eq!(get(&v, name), n, "{name}");
        }
        let p = delta(&zero, &after, FAULTS);
        for (name, n) in [
            ("store_reads", 19),
            ("store_writes", 20),
            ("paging_locks", 21),
            ("paging_contended", 22),
            ("paging_spins", 23),
            ("ipis", 10),
            ("tables_allocated", 13),
        ] {
            assert_eq!(get(&p, name), n, "{name}");
        }
        // Nothing changed: every counter is 0.
        assert!(delta(&after, &after, THRASH).iter().all(|(_, v)| *v == 0));
    }

    /// The largest set with every counter at its widest, under long names,
    /// still fits one record line (`record::MAX_LINE`) and the list.
    #[test]
    fn the_longest_bench_record_fits_one_line() {
        for set in SETS {
            let mut list = delta(&Snapshot::default(), &after_one_of_each(), set);
            assert!(list.len() <= MAX_COUNTERS);
            for (_, v) in list.iter_mut() {
                *v = u64::MAX;
            }
            let name = "a-benchmark-name-longer-than-any.real-one";
            let variant = "virtio-blk-random-global-and-then-some-more";
            let rec = Record::Bench {
                bench: name,
                variant,
                smp: u32::MAX,
                workers: u32::MAX,
                rep: u32::MAX,
                ops: u64::MAX,
                ns: u64::MAX,
                ops_per_sec: u64::MAX,
                ns_p50: u64::MAX,
                ns_p99: u64::MAX,
                ns_max: u64::MAX,
                sample_every: u32::MAX,
                samples: u64::MAX,
                counters: Counters(&list),
            };
            let line = record::to_json(&rec).unwrap_or_else(|e| panic!("{} counters do not fit: {e:?}", list.len()));
            assert!(line.len() + record::PREFIX.len() < record::MAX_LINE, "{}", line.len());
        }
        assert_eq!(delta(&Snapshot::default(), &Snapshot::default(), THRASH).len(), 23);
    }
}
