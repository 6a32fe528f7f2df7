//! The records the kernel sends to the host over the serial line.
//!
//! Every record is one line: [`PREFIX`] followed by one JSON object
//! `{"schema":N,"record":{"kind":...,...}}`. The host reads only these lines
//! and never scrapes free text, so anything the host needs to know (test
//! outcomes, CPU counts, benchmark results) must travel as a record.
//!
//! The types are generic over the string type so the guest can send
//! borrowed `&str` without a heap and the host can parse into `String`.
//! Parsing (feature `parse`) needs `std`: serde's tagged enums buffer.
#![cfg_attr(not(test), no_std)]
// Safe code only: the kernel implements what needs `unsafe`.
#![forbid(unsafe_code)]

use serde::ser::SerializeMap;
#[cfg(feature = "parse")]
use serde::Deserialize;
use serde::{Serialize, Serializer};

#[cfg(feature = "parse")]
extern crate alloc;

mod counts;
mod shared;
pub use counts::TlbSnapshot;
pub use shared::{selected, Accel, BENCHMARKS, KERNEL_BASE, MAX_CPUS, PAGE_SIZE};

/// Marks a record line on the serial console.
pub const PREFIX: &str = "@@smpmm ";

/// Bumped whenever a record changes shape incompatibly.
/// 2: benchmark and stress records; counters as a JSON object.
/// 3: the Boot record names the paging store.
/// 4: Bench records say how many CPUs worked and how latencies were
/// sampled; the Boot record names the accelerator the guest runs on and
/// carries the TSC calibration's spread and bound.
pub const SCHEMA: u32 = 4;

/// The variant every other variant of a benchmark is compared with (the
/// global-lock design), when the benchmark has one.
pub const BASELINE_VARIANT: &str = "global";

/// Wrapper that carries the schema version with every record.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[cfg_attr(feature = "parse", derive(Deserialize))]
pub struct Envelope<S, C> {
    pub schema: u32,
    pub record: Record<S, C>,
}

/// Named counters as the guest sends them (a JSON object `{"name":n,...}`),
/// without a heap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Counters<'a>(pub &'a [(&'a str, u64)]);

impl Serialize for Counters<'_> {
    fn serialize<Z: Serializer>(&self, s: Z) -> Result<Z::Ok, Z::Error> {
        let mut map = s.serialize_map(Some(self.0.len()))?;
        for (name, value) in self.0 {
            map.serialize_entry(name, value)?;
        }
        map.end()
    }
}

/// A record as the guest builds it.
pub type GuestRecord<'a> = Record<&'a str, Counters<'a>>;

/// A record as the host parses it.
#[cfg(feature = "parse")]
pub type HostRecord = Record<alloc::string::String, alloc::collections::BTreeMap<alloc::string::String, u64>>;

/// How the local APIC is driven.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "parse", derive(Deserialize))]
#[serde(rename_all = "lowercase")]
pub enum ApicMode {
    XApic,
    X2Apic,
}

/// Outcome of one in-kernel test.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "parse", derive(Deserialize))]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    Pass,
    Fail,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[cfg_attr(feature = "parse", derive(Deserialize))]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Record<S, C> {
    /// Sent once after AP bring-up.
    Boot {
        cpus_online: u32,
        cpus_total: u32,
        apic: ApicMode,
        tsc_hz: u64,
        /// Where the TSC frequency came from (`cpuid15`, `hpet`,
        /// `pm_timer`, `pit`).
        tsc_source: S,
        /// How much the calibration's kept windows disagree: (max − min)
        /// relative to `tsc_hz`, in ppm (0 when CPUID states the rate).
        tsc_spread_ppm: u64,
        /// Worst-case error of the chosen window from its bracketing
        /// reads, in ppm (0 when CPUID states the rate).
        tsc_bound_ppm: u64,
        usable_bytes: u64,
        /// The demand-paging backing store (`ram`, `virtio-blk`).
        store: S,
        /// The accelerator, from CPUID's hypervisor leaf.
        accel: Accel,
    },
    /// One per test, from the CPU that ran the runner.
    Test {
        name: S,
        outcome: Outcome,
        ns: u64,
        /// Failure message; on success empty or a note (a measurement).
        detail: S,
    },
    /// Last record of a test run.
    Summary { passed: u32, failed: u32 },
    /// First record of a benchmark run: how many `Bench` records follow
    /// (runs × repetitions), for the host's progress display.
    BenchPlan { runs: u32, reps: u32, quick: bool },
    /// One measured repetition of one variant of one benchmark, on every
    /// online CPU at once. Warm-up repetitions are not sent.
    Bench {
        /// `frames.pair`, `fault.anon`, ...
        bench: S,
        /// `magazine`, `busy`, [`BASELINE_VARIANT`], ...
        variant: S,
        /// CPUs online in the boot.
        smp: u32,
        /// CPUs that ran the workload: `smp`, or 1 for the solo run (the
        /// others halted) that gives the host ceiling of an every-CPU
        /// benchmark.
        workers: u32,
        /// Repetition number, from 0.
        rep: u32,
        /// Operations done by all CPUs together.
        ops: u64,
        /// Wall-clock time of the repetition, first start to last finish.
        ns: u64,
        ops_per_sec: u64,
        /// Per-operation latency percentiles of the sampled operations,
        /// from a histogram whose buckets are at most 1/16 wide (values are
        /// bucket upper bounds); `ns_max` is the largest sample.
        ns_p50: u64,
        ns_p99: u64,
        ns_max: u64,
        /// One operation in this many, on average and at random, was timed
        /// (the clock is not read for the others).
        sample_every: u32,
        /// Operations timed.
        samples: u64,
        /// Subsystem counters summed over CPUs for this repetition.
        counters: C,
    },
    /// A benchmark whose correctness check failed: its figures are void
    /// and the run fails.
    BenchFail { bench: S, variant: S, smp: u32, detail: S },
    /// Last record of a benchmark run.
    BenchDone { runs: u32, failed: u32 },
    /// Stress mode's periodic progress (one per audit round).
    StressRound { round: u32, elapsed_ms: u64, audits: u64, ops: C },
    /// Stress mode's result: operations per subsystem, audits passed, and
    /// the first violation (empty when none) with what replays it.
    Stress { seed: u64, seconds: u64, smp: u32, audits: u64, violations: u64, ops: C, detail: S },
}

/// Longest record line the guest can format (without the prefix). A
/// `Bench` record carries up to 32 counters (`bench::counters`, whose test
/// checks the largest set at its widest fits).
pub const MAX_LINE: usize = 2048;

/// Formats `record` as JSON (without the prefix). Fails only when the line
/// would be longer than [`MAX_LINE`].
pub fn to_json(record: &GuestRecord) -> Result<heapless::String<MAX_LINE>, serde_json_core::ser::Error> {
    serde_json_core::to_string(&Envelope { schema: SCHEMA, record: record.clone() })
}

#[doc(hidden)]
pub use serde_json_core::heapless;

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[test]
    fn bench_record_counters_are_an_object() {
        let counters = [("allocs", 640u64), ("buddy_locks", 3)];
        let rec = Record::Bench {
            bench: "frames.pair",
            variant: "magazine",
            smp: 8,
            workers: 8,
            rep: 2,
            ops: 640,
            ns: 1000,
            ops_per_sec: 640_000_000_000,
            ns_p50: 90,
            ns_p99: 200,
            ns_max: 5000,
            sample_every: 64,
            samples: 10,
            counters: Counters(&counters),
        };
        let line = to_json(&rec).unwrap();
        assert!(line.contains(r#""counters":{"allocs":640,"buddy_locks":3}"#), "{line}");
        let parsed: Envelope<String, BTreeMap<String, u64>> = serde_json::from_str(&line).unwrap();
        match parsed.record {
            Record::Bench { bench, smp: 8, rep: 2, counters, .. } => {
                assert_eq!(bench, "frames.pair");
                assert_eq!(counters["buddy_locks"], 3);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn guest_line_parses_on_host() {
        let line = to_json(&Record::Test {
            name: "smp::cross_call",
            outcome: Outcome::Fail,
            ns: 42,
            detail: "cpu 3 \"late\"",
        })
        .unwrap();
        let parsed: Envelope<String, BTreeMap<String, u64>> = serde_json::from_str(&line).unwrap();
        assert_eq!(parsed.schema, SCHEMA);
        assert_eq!(
            parsed.record,
            Record::Test {
                name: "smp::cross_call".into(),
                outcome: Outcome::Fail,
                ns: 42,
                detail: "cpu 3 \"late\"".into()
            }
        );
    }

    #[test]
    fn boot_record_round_trips() {
        let rec: GuestRecord = Record::Boot {
            cpus_online: 8,
            cpus_total: 8,
            apic: ApicMode::X2Apic,
            tsc_hz: 2_000_000_000,
            tsc_source: "hpet",
            tsc_spread_ppm: 420,
            tsc_bound_ppm: 130,
            usable_bytes: 1 << 30,
            store: "ram",
            accel: Accel::Kvm,
        };
        let line = to_json(&rec).unwrap();
        assert!(line.contains("\"kind\":\"boot\""), "{line}");
        assert!(line.contains("\"accel\":\"kvm\""), "{line}");
        let parsed: Envelope<String, BTreeMap<String, u64>> = serde_json::from_str(&line).unwrap();
        assert!(matches!(
            parsed.record,
            Record::Boot { cpus_online: 8, apic: ApicMode::X2Apic, accel: Accel::Kvm, .. }
        ));
        assert!(line.contains(r#""tsc_source":"hpet","tsc_spread_ppm":420,"tsc_bound_ppm":130"#), "{line}");
        let parsed: Envelope<String, BTreeMap<String, u64>> = serde_json::from_str(&line).unwrap();
        assert!(matches!(
            parsed.record,
            Record::Boot { cpus_online: 8, apic: ApicMode::X2Apic, tsc_spread_ppm: 420, tsc_bound_ppm: 130, .. }
        ));
    }

    #[test]
    fn overlong_record_is_an_error_not_a_truncation() {
        let long = "x".repeat(MAX_LINE);
        assert!(to_json(&Record::Test { name: &long, outcome: Outcome::Pass, ns: 0, detail: "" }).is_err());
    }
}
