//! One benchmark boot: what it measured, which checks failed, and whether
//! the boot itself can be trusted.

use super::report_json::{BenchRow, Failure, FailureKind, RunInfo};
use crate::exit::Exit;
use crate::records;
use crate::run::Capture;
use record::Record;
use std::collections::BTreeSet;

pub struct Judged {
    pub run: RunInfo,
    pub rows: Vec<BenchRow>,
    /// BenchFail records, then one entry per problem with the boot.
    pub failures: Vec<Failure>,
}

/// Reads the records of a boot at `smp` CPUs. A boot is broken when QEMU
/// did not end through the guest's exit, a record line was unreadable, the
/// Boot, BenchPlan or BenchDone record is missing, or the counts the guest
/// announced disagree with what arrived.
pub fn judge(cap: &Capture, smp: u32, accel: crate::accel::Accel) -> Judged {
    let mut problems: Vec<String> = cap.bad_records.iter().map(|e| format!("bad record: {e}")).collect();
    let (mut boot, mut plan, mut done, mut guest_accel) = (None, None, None, None);
    let mut tsc = None;
    let mut rows = Vec::new();
    let mut fails = Vec::new();
    for record in &cap.records {
        match record {
            Record::Boot { cpus_online, apic, tsc_hz, tsc_source, tsc_spread_ppm, accel: found, .. } => {
                boot = Some((*cpus_online, *apic, *tsc_hz));
                tsc = Some((tsc_source.clone(), *tsc_spread_ppm));
                guest_accel = Some(*found);
                problems.extend(crate::accel::check_boot(accel, *found));
            }
            Record::BenchPlan { runs, reps, .. } => plan = Some((*runs, *reps)),
            Record::Bench { .. } => rows.extend(BenchRow::from_record(record)),
            Record::BenchFail { bench, variant, smp, detail } => fails.push(Failure {
                kind: FailureKind::Bench,
                smp: *smp,
                bench: Some(bench.clone()),
                variant: Some(variant.clone()),
                detail: detail.clone(),
            }),
            Record::BenchDone { runs, failed } => done = Some((*runs, *failed)),
            other => problems.push(format!("unexpected record in a benchmark run: {other:?}")),
        }
    }

    match cap.exit {
        Exit::GuestSuccess if !fails.is_empty() => {
            problems.push(format!("guest exited with success although {} benchmark check(s) failed", fails.len()))
        }
        Exit::GuestFailure if fails.is_empty() => {
            problems.push("guest reported failure (exit 35) but sent no BenchFail".into())
        }
        Exit::GuestSuccess | Exit::GuestFailure => {}
        other => problems.push(other.describe()),
    }
    match boot {
        None => problems.push("no Boot record".into()),
        Some((online, ..)) if online != smp => {
            problems.push(format!("Boot record: {online} CPUs online, expected {smp}"))
        }
        Some(_) => {}
    }
    let strays: BTreeSet<u32> = rows.iter().map(|r| r.smp).filter(|&n| n != smp).collect();
    if !strays.is_empty() {
        problems.push(format!("Bench records for {strays:?} CPUs in a boot with {smp}"));
    }
    let received = rows.len() as u32;
    if plan.is_none() {
        problems.push("no BenchPlan record".into());
    }
    match (plan, done) {
        (_, None) => problems.push(format!("no BenchDone record (the run stopped after {received} Bench records)")),
        (Some((runs, reps)), Some((done_runs, failed))) => {
            if done_runs != runs {
                problems.push(format!("BenchDone says {done_runs} runs but BenchPlan announced {runs}"));
            }
            if failed as usize != fails.len() {
                problems.push(format!("BenchDone says {failed} failed but {} BenchFail arrived", fails.len()));
            }
            // A benchmark whose check failed may stop before its last
            // repetition; every other one sends all of them.
            let full = runs * reps;
            let least = full.saturating_sub(fails.len() as u32 * reps);
            if received > full || received < least {
                problems.push(format!(
                    "{received} Bench records arrived; BenchPlan announced {runs} runs × {reps} repetitions"
                ));
            }
        }
        (None, Some(_)) => {}
    }

    let (cpus_online, apic, tsc_hz) = match boot {
        Some((cpus, apic, hz)) => (Some(cpus), Some(records::apic_name(apic).to_string()), Some(hz)),
        None => (None, None, None),
    };
    let run = RunInfo {
        smp,
        exit: cap.exit.describe(),
        ok: problems.is_empty(),
        duration_s: cap.elapsed.as_secs_f64(),
        cpus_online,
        apic,
        tsc_hz,
        accel: guest_accel.map(|a| a.name().to_string()),
        tsc_source: tsc.as_ref().map(|t| t.0.clone()),
        tsc_spread_ppm: tsc.map(|t| t.1),
        // The host's side is `measure`'s: it measured the host.
        host_tsc_hz: None,
        tsc_host_ppm: None,
        tsc_flagged: false,
        expected_records: plan.map(|(runs, reps)| runs * reps),
        received_records: received,
    };
    fails.extend(problems.into_iter().map(|detail| Failure {
        kind: FailureKind::Run,
        smp,
        bench: None,
        variant: None,
        detail,
    }));
    Judged { run, rows, failures: fails }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::accel::Accel;
    use record::{ApicMode, HostRecord};
    use std::time::Duration;

    fn cap(exit: Exit, records: Vec<HostRecord>) -> Capture {
        Capture::of(exit, records, Duration::from_millis(1500))
    }
    fn boot(n: u32) -> HostRecord {
        Record::Boot {
            cpus_online: n,
            cpus_total: n,
            apic: ApicMode::X2Apic,
            tsc_hz: 3,
            tsc_source: "hpet".into(),
            tsc_spread_ppm: 7,
            tsc_bound_ppm: 2,
            usable_bytes: 1,
            store: "ram".into(),
            accel: record::Accel::Tcg,
        }
    }
    fn bench(variant: &str, smp: u32, rep: u32) -> HostRecord {
        Record::Bench {
            bench: "frames.pair".into(),
            variant: variant.into(),
            smp,
            workers: smp,
            rep,
            ops: 10,
            ns: 10,
            ops_per_sec: 1_000_000_000,
            ns_p50: 1,
            ns_p99: 2,
            ns_max: 3,
            sample_every: 64,
            samples: 1,
            counters: [("allocs".to_string(), 10)].into(),
        }
    }
    fn details(j: &Judged) -> Vec<&str> {
        j.failures.iter().map(|f| f.detail.as_str()).collect()
    }

    #[test]
    fn clean_run() {
        let j = judge(
            &cap(
                Exit::GuestSuccess,
                vec![
                    boot(2),
                    Record::BenchPlan { runs: 2, reps: 1, quick: true },
                    bench("magazine", 2, 0),
                    bench("global", 2, 0),
                    Record::BenchDone { runs: 2, failed: 0 },
                ],
            ),
            2,
            Accel::Tcg,
        );
        assert!(j.failures.is_empty(), "{:?}", details(&j));
        assert!(j.run.ok);
        assert_eq!((j.run.cpus_online, j.run.apic.as_deref(), j.run.tsc_hz), (Some(2), Some("x2apic"), Some(3)));
        assert_eq!(j.run.accel.as_deref(), Some("tcg"));
        assert_eq!((j.run.tsc_source.as_deref(), j.run.tsc_spread_ppm), (Some("hpet"), Some(7)));
        assert_eq!((j.run.expected_records, j.run.received_records), (Some(2), 2));
        assert_eq!(j.rows[1].variant, "global");
    }

    #[test]
    fn a_failed_check_may_cut_its_repetitions_short() {
        let j = judge(
            &cap(
                Exit::GuestFailure,
                vec![
                    boot(2),
                    Record::BenchPlan { runs: 2, reps: 2, quick: false },
                    bench("magazine", 2, 0),
                    bench("magazine", 2, 1),
                    bench("global", 2, 0),
                    Record::BenchFail {
                        bench: "frames.pair".into(),
                        variant: "global".into(),
                        smp: 2,
                        detail: "lost".into(),
                    },
                    Record::BenchDone { runs: 2, failed: 1 },
                ],
            ),
            2,
            Accel::Tcg,
        );
        assert!(j.run.ok, "{:?}", details(&j));
        assert_eq!(details(&j), ["lost"]);
        assert_eq!(j.failures[0].kind, FailureKind::Bench);
    }

    #[test]
    fn broken_runs_are_named() {
        let j = judge(
            &cap(
                Exit::GuestSuccess,
                vec![
                    boot(3),
                    Record::BenchPlan { runs: 2, reps: 2, quick: false },
                    bench("magazine", 4, 0),
                    Record::BenchDone { runs: 1, failed: 1 },
                ],
            ),
            4,
            Accel::Tcg,
        );
        assert!(!j.run.ok);
        assert_eq!(
            details(&j),
            [
                "Boot record: 3 CPUs online, expected 4",
                "BenchDone says 1 runs but BenchPlan announced 2",
                "BenchDone says 1 failed but 0 BenchFail arrived",
                "1 Bench records arrived; BenchPlan announced 2 runs × 2 repetitions",
            ]
        );
        let j = judge(&cap(Exit::Timeout(Duration::from_secs(900)), vec![bench("magazine", 1, 0)]), 1, Accel::Tcg);
        assert_eq!(
            details(&j),
            [
                "timeout after 900 s",
                "no Boot record",
                "no BenchPlan record",
                "no BenchDone record (the run stopped after 1 Bench records)"
            ]
        );
        assert_eq!(j.rows.len(), 1, "what arrived before the timeout is kept");
        let j = judge(&cap(Exit::GuestFailure, vec![]), 1, Accel::Tcg);
        assert_eq!(details(&j)[0], "guest reported failure (exit 35) but sent no BenchFail");
    }

    #[test]
    fn a_boot_on_another_accelerator_is_broken() {
        let records = vec![
            boot(1),
            Record::BenchPlan { runs: 0, reps: 1, quick: true },
            Record::BenchDone { runs: 0, failed: 0 },
        ];
        let j = judge(&cap(Exit::GuestSuccess, records), 1, Accel::Kvm);
        assert!(!j.run.ok);
        assert_eq!(details(&j), ["Boot record: the guest runs on tcg, but QEMU was asked for kvm"]);
        assert_eq!(j.run.accel.as_deref(), Some("tcg"), "the report says what it ran on");
    }
}
