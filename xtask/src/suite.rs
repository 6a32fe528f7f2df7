//! One QEMU run of the in-kernel test suites and whether to trust it.

use crate::accel::Accel;
use crate::build::Images;
use crate::exit::Exit;
use crate::qemu::{Config, Qemu};
use crate::records;
use crate::run::{self, Capture, Echo};
use crate::test::{broken, Tally};
use record::{ApicMode, Outcome, Record};
use std::time::Duration;

/// One kernel suite run: counts its tests and adds one failure if the run
/// itself is broken (see [`judge`]).
pub fn kernel_run(qemu: &Qemu, images: &Images, config: &Config, timeout: Duration, verbose: bool) -> Tally {
    let label = config.label();
    let echo = Echo::Compact { label: label.clone(), verbose };
    let cap = match run::run_qemu(qemu, images, config, timeout, echo) {
        Ok(cap) => cap,
        Err(e) => {
            let mut tally = Tally::default();
            broken(&label, &format!("not run: {e:#}"), &mut tally);
            return tally;
        }
    };
    let expected_apic = match (config.xapic, config.accel) {
        (true, _) => Some(ApicMode::XApic),
        (false, Accel::Tcg) => qemu.x2apic_under_tcg().then_some(ApicMode::X2Apic),
        // Not checked: never run on hardware KVM here (see README).
        (false, Accel::Kvm) => None,
    };
    // With a swap disk attached the guest must page to it, not to RAM.
    let expected_store = if config.swap.is_some() { "virtio-blk" } else { "ram" };
    let (mut tally, mut problems) = judge(&cap, config.smp, expected_apic, expected_store);
    if let Some(Record::Boot { accel, .. }) = cap.records.iter().find(|r| matches!(r, Record::Boot { .. })) {
        problems.extend(crate::accel::check_boot(config.accel, *accel));
    }
    for problem in &problems {
        eprintln!("[{label}] broken run: {problem}");
    }
    if !problems.is_empty() || tally.failed > 0 {
        cap.print_failure_context();
    }
    if !problems.is_empty() {
        tally.failed += 1;
    }
    eprintln!("[{label}] {tally} in {:.1} s", cap.elapsed.as_secs_f64());
    tally
}

/// Test counts from the Test records, and everything that makes the run
/// untrustworthy: a bad exit, bad record lines, a missing or inconsistent
/// Summary, a Boot record with the wrong CPU count or APIC mode.
fn judge(cap: &Capture, smp: u32, expected_apic: Option<ApicMode>, expected_store: &str) -> (Tally, Vec<String>) {
    let mut tally = Tally::default();
    let mut problems: Vec<String> = cap.bad_records.iter().map(|e| format!("bad record: {e}")).collect();
    let (mut boot, mut summary) = (None, None);
    for record in &cap.records {
        match record {
            Record::Test { outcome: Outcome::Pass, .. } => tally.passed += 1,
            Record::Test { outcome: Outcome::Fail, .. } => tally.failed += 1,
            Record::Boot { .. } => boot = Some(record),
            Record::Summary { passed, failed } => summary = Some((u64::from(*passed), u64::from(*failed))),
            other => problems.push(format!("unexpected record in a test run: {other:?}")),
        }
    }
    match cap.exit {
        Exit::GuestSuccess if tally.failed > 0 => {
            problems.push(format!("guest exited with success although {} test(s) failed", tally.failed))
        }
        Exit::GuestFailure if tally.failed == 0 => {
            problems.push("guest reported failure (exit 35) but no test failed".into())
        }
        Exit::GuestSuccess | Exit::GuestFailure => {}
        other => problems.push(other.describe()),
    }
    match summary {
        None => problems.push("no Summary record".into()),
        Some((p, f)) if (p, f) != (tally.passed, tally.failed) => problems.push(format!(
            "Summary says {p} passed, {f} failed but {} passed, {} failed were reported",
            tally.passed, tally.failed
        )),
        Some(_) if tally.passed + tally.failed == 0 => problems.push("the guest ran no tests".into()),
        Some(_) => {}
    }
    match boot {
        Some(Record::Boot { cpus_online, cpus_total, apic, store, .. }) => {
            if store != expected_store {
                problems.push(format!("Boot record: paging store {store}, expected {expected_store}"));
            }
            if (*cpus_online, *cpus_total) != (smp, smp) {
                problems
                    .push(format!("Boot record: {cpus_online} of {cpus_total} CPUs online, expected {smp} of {smp}"));
            }
            if let Some(want) = expected_apic.filter(|want| want != apic) {
                problems.push(format!(
                    "Boot record: apic {}, expected {}",
                    records::apic_name(*apic),
                    records::apic_name(want)
                ));
            }
        }
        _ => problems.push("no Boot record".into()),
    }
    (tally, problems)
}

#[cfg(test)]
mod tests {
    use super::*;
    use record::HostRecord;

    fn cap(exit: Exit, records: Vec<HostRecord>) -> Capture {
        Capture::of(exit, records, Duration::ZERO)
    }
    fn boot(n: u32, apic: ApicMode) -> HostRecord {
        crate::records::test_boot(n, apic, record::Accel::Tcg)
    }
    fn test(outcome: Outcome) -> HostRecord {
        Record::Test { name: "t".into(), outcome, ns: 1, detail: String::new() }
    }

    #[test]
    fn a_clean_run_has_no_problems() {
        let c = cap(
            Exit::GuestFailure,
            vec![
                boot(8, ApicMode::X2Apic),
                test(Outcome::Pass),
                test(Outcome::Fail),
                Record::Summary { passed: 1, failed: 1 },
            ],
        );
        assert_eq!(judge(&c, 8, Some(ApicMode::X2Apic), "ram"), (Tally { passed: 1, failed: 1 }, vec![]));
    }

    #[test]
    fn inconsistent_runs_are_broken() {
        let c = cap(
            Exit::GuestSuccess,
            vec![boot(7, ApicMode::X2Apic), test(Outcome::Pass), Record::Summary { passed: 2, failed: 0 }],
        );
        let (tally, problems) = judge(&c, 8, Some(ApicMode::XApic), "virtio-blk");
        assert_eq!(tally, Tally { passed: 1, failed: 0 });
        assert_eq!(problems.len(), 4, "{problems:?}");
        assert!(problems.contains(&"Boot record: paging store ram, expected virtio-blk".to_string()), "{problems:?}");
        let (_, problems) =
            judge(&cap(Exit::Timeout(Duration::from_secs(180)), vec![test(Outcome::Pass)]), 1, None, "ram");
        assert_eq!(problems, ["timeout after 180 s", "no Summary record", "no Boot record"]);
    }
}
