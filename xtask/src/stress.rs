//! `cargo xtask stress`: one boot running the guest's mixed concurrent
//! workload with the auditors for a fixed time. Every run has a seed
//! (picked here when not given, printed before booting) so a violation
//! can be replayed with the same command line.

use crate::exit::Exit;
use crate::qemu::{parse_mem, Config, Firmware, GuestOptions, Mem};
use crate::run::{self, Capture, Echo};
use crate::{build, install, Mode};
use anyhow::{Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use record::Record;
use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::process::ExitCode;
use std::time::Duration;

#[derive(clap::Args)]
pub struct StressArgs {
    /// Number of virtual CPUs (1 to the kernel's limit, 64).
    #[arg(long, default_value_t = 8, value_parser = crate::qemu::parse_smp)]
    smp: u32,
    /// Accelerator (see `run --accel`).
    #[arg(long, value_enum, default_value_t = crate::accel::AccelChoice::Auto)]
    accel: crate::accel::AccelChoice,
    /// How long the guest runs the workload.
    #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..))]
    seconds: u64,
    /// Seed of the workload (decimal or 0x-hex); random when absent.
    #[arg(long, value_parser = crate::parse_seed)]
    seed: Option<u64>,
    /// Kill QEMU after this many seconds (default: --seconds + 300).
    #[arg(long)]
    timeout: Option<u64>,
    /// Also show the guest's free-text serial output.
    #[arg(long)]
    verbose: bool,
    /// Boot the image already in target/image instead of rebuilding it.
    #[arg(long)]
    no_build: bool,
    /// Attach a fresh sparse swap disk of this size (virtio-blk).
    #[arg(long, value_parser = crate::swap::parse_swap_size)]
    swap: Option<Mem>,
}

/// What one stress boot is asked to do.
pub struct Plan {
    pub smp: u32,
    pub seconds: u64,
    pub seed: u64,
    /// Show rounds on a redrawn line (stderr is a terminal).
    pub live: bool,
    pub verbose: bool,
    /// Size of a swap disk to attach.
    pub swap: Option<Mem>,
    pub accel: crate::accel::Accel,
}

/// The outcome: `text` is the final summary for stdout.
pub struct Verdict {
    pub ok: bool,
    pub text: String,
}

pub fn stress(args: StressArgs) -> Result<ExitCode> {
    // Bad input is refused before a seed is announced.
    let accel = crate::accel::resolve(args.accel)?;
    let seed = match args.seed {
        Some(seed) => seed,
        None => getrandom::u64().map_err(|e| anyhow::anyhow!("no random seed from the OS: {e}"))?,
    };
    // Before anything can fail or hang: the seed is what replays the run.
    println!("stress: seed {seed:#x}");
    let qemu = install::ensure_qemu()?;
    let images = build::images(args.no_build, build::Flavor::Production)?;
    let timeout = Duration::from_secs(args.timeout.unwrap_or(args.seconds + 300));
    let plan = Plan {
        smp: args.smp,
        seconds: args.seconds,
        seed,
        live: std::io::stderr().is_terminal(),
        verbose: args.verbose,
        swap: args.swap.clone(),
        accel,
    };
    let mut launch = |config: &Config, echo: Echo| run::run_qemu(&qemu, &images, config, timeout, echo);
    let verdict = run_stress(&plan, &mut launch)?;
    print!("{}", verdict.text);
    Ok(if verdict.ok { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

/// Boots once through `launch` and judges the run.
pub fn run_stress(plan: &Plan, launch: &mut dyn FnMut(&Config, Echo) -> Result<Capture>) -> Result<Verdict> {
    let config = Config {
        smp: plan.smp,
        accel: plan.accel,
        gdb: None,
        mem: parse_mem("1G").expect("a valid size"),
        firmware: Firmware::Bios,
        xapic: false,
        guest: GuestOptions {
            mode: Mode::Stress,
            seed: Some(plan.seed),
            seconds: Some(plan.seconds),
            ..Default::default()
        },
        swap: plan.swap.clone().map(|size| crate::swap::Swap::create("stress", size)).transpose()?,
        extra: Vec::new(),
    };
    let bar = plan.live.then(|| {
        let bar = ProgressBar::new(plan.seconds * 1000);
        bar.set_style(ProgressStyle::with_template("[stress] {bar:30} {elapsed}/{msg}").expect("valid template"));
        bar.set_message(format!("{} s: booting", plan.seconds));
        bar
    });
    let cap = launch(&config, echo(bar.clone(), plan.seconds, plan.verbose)).context("running the stress boot")?;
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    let verdict = judge(&cap, plan);
    if !verdict.ok {
        cap.print_failure_context();
    }
    Ok(verdict)
}

/// One live line per StressRound: a redrawn bar on a terminal, a log line
/// otherwise.
fn echo(bar: Option<ProgressBar>, seconds: u64, verbose: bool) -> Echo {
    Echo::Observe(Box::new(move |line, record| match (record, &bar) {
        (Some(Record::StressRound { round, elapsed_ms, audits, ops }), _) => {
            let total: u64 = ops.values().sum();
            let text = format!("round {round}: {total} ops ({}), {audits} audits", ops_list(ops));
            match &bar {
                Some(bar) => {
                    bar.set_position(*elapsed_ms);
                    bar.set_message(format!("{seconds} s: {text}"));
                }
                None => eprintln!("[stress] {:.1} s {text}", *elapsed_ms as f64 / 1000.0),
            }
        }
        (None, Some(bar)) if verbose && !line.contains(record::PREFIX) => bar.println(line),
        (None, None) if verbose && !line.contains(record::PREFIX) => eprintln!("{line}"),
        _ => {}
    }))
}

/// `frames 1200, heap 300, vm 45`.
fn ops_list(ops: &BTreeMap<String, u64>) -> String {
    ops.iter().map(|(k, v)| format!("{k} {v}")).collect::<Vec<_>>().join(", ")
}

/// Reads the run: the Stress record's figures, and everything that makes
/// the run fail (a violation, no Stress record, a bad exit, a Stress
/// record for another seed, CPU count or duration).
fn judge(cap: &Capture, plan: &Plan) -> Verdict {
    let mut problems: Vec<String> = cap.bad_records.iter().map(|e| format!("bad record: {e}")).collect();
    let mut result = None;
    for record in &cap.records {
        match record {
            Record::Boot { cpus_online, accel, .. } => {
                if *cpus_online != plan.smp {
                    problems.push(format!("Boot record: {cpus_online} CPUs online, expected {}", plan.smp));
                }
                problems.extend(crate::accel::check_boot(plan.accel, *accel));
            }
            Record::Stress { .. } => result = Some(record),
            _ => {}
        }
    }
    let mut text = String::new();
    let mut violated = false;
    match result {
        Some(Record::Stress { seed, seconds, smp, audits, violations, ops, detail }) => {
            if (*seed, *smp, *seconds) != (plan.seed, plan.smp, plan.seconds) {
                problems.push(format!(
                    "the guest ran seed {seed:#x} on {smp} CPUs for {seconds} s; asked for seed {:#x} on {} CPUs for {} s",
                    plan.seed, plan.smp, plan.seconds
                ));
            }
            violated = *violations > 0;
            let total: u64 = ops.values().sum();
            text += &format!("ops: {total} in all: {}\n", ops_list(ops));
            text += &format!("audits: {audits}\nviolations: {violations}\n");
            if violated {
                text += &format!("violation: {detail}\n");
            }
        }
        _ => problems.push("no Stress record".into()),
    }
    match cap.exit {
        Exit::GuestSuccess if violated => problems.push("guest exited with success despite a violation".into()),
        Exit::GuestFailure if result.is_some() && !violated => {
            problems.push("guest reported failure (exit 35) but the Stress record shows no violation".into())
        }
        Exit::GuestSuccess | Exit::GuestFailure => {}
        other => problems.push(other.describe()),
    }
    for p in &problems {
        text += &format!("broken run: {p}\n");
    }
    let ok = problems.is_empty() && !violated;
    let head = format!(
        "stress {} at {} CPUs for {} s in {:.1} s\n",
        if ok { "passed" } else { "FAILED" },
        plan.smp,
        plan.seconds,
        cap.elapsed.as_secs_f64()
    );
    text = head + &text;
    let swap = plan.swap.as_ref().map(|m| format!(" --swap {}", m.text)).unwrap_or_default();
    text += &format!(
        "seed {seed:#x} (replay: cargo xtask stress --smp {smp} --seconds {s} --seed {seed:#x}{swap})\n",
        seed = plan.seed,
        smp = plan.smp,
        s = plan.seconds
    );
    Verdict { ok, text }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::run::capture;
    use std::process::Command;

    const BOOT: &str = r#"{"kind":"boot","cpus_online":4,"cpus_total":4,"apic":"x2apic","tsc_hz":1000,"tsc_source":"pit","tsc_spread_ppm":0,"tsc_bound_ppm":0,"usable_bytes":4096,"store":"ram","accel":"tcg"}"#;

    fn rec(json: &str) -> String {
        format!("echo '@@smpmm {{\"schema\":{},\"record\":{json}}}'\n", record::SCHEMA)
    }

    fn round(n: u32) -> String {
        rec(&format!(
            r#"{{"kind":"stress_round","round":{n},"elapsed_ms":{},"audits":{n},"ops":{{"frames":{},"vm":7}}}}"#,
            n * 1000,
            n * 100
        ))
    }

    fn stress(seed: u64, violations: u64, detail: &str) -> String {
        rec(&format!(
            r#"{{"kind":"stress","seed":{seed},"seconds":5,"smp":4,"audits":9,"violations":{violations},"ops":{{"frames":1200,"heap":300,"vm":45}},"detail":"{detail}"}}"#
        ))
    }

    /// Runs the stress command against `script`; returns the verdict and
    /// the guest command line it was given.
    fn run(script: String) -> (Verdict, String) {
        let plan = Plan {
            smp: 4,
            seconds: 5,
            seed: 0x2a,
            live: false,
            verbose: false,
            swap: None,
            accel: crate::accel::Accel::Tcg,
        };
        let mut cmdline = String::new();
        let mut launch = |config: &Config, echo: Echo| {
            cmdline = config.guest.cmdline();
            let mut sh = Command::new("/bin/sh");
            sh.arg("-c").arg(&script);
            capture(sh, Duration::from_secs(1), echo)
        };
        let verdict = run_stress(&plan, &mut launch).unwrap();
        (verdict, cmdline)
    }

    const REPLAY: &str = "seed 0x2a (replay: cargo xtask stress --smp 4 --seconds 5 --seed 0x2a)\n";

    #[test]
    fn a_clean_run_passes() {
        let (v, cmdline) = run(format!("{}{}{}{}exit 33", rec(BOOT), round(1), round(2), stress(42, 0, "")));
        assert_eq!(cmdline, "mode=stress seed=0x2a seconds=5");
        assert!(v.ok, "{}", v.text);
        let lines: Vec<&str> = v.text.lines().collect();
        assert!(lines[0].starts_with("stress passed at 4 CPUs for 5 s in "), "{}", v.text);
        assert_eq!(&lines[1..4], ["ops: 1545 in all: frames 1200, heap 300, vm 45", "audits: 9", "violations: 0"]);
        assert!(v.text.ends_with(REPLAY), "{}", v.text);
    }

    #[test]
    fn a_violation_fails_and_names_the_replay() {
        let detail = "cpu 3 frames.free: double free of 0x1000 (seed 0x2a)";
        let (v, _) = run(format!("{}{}{}exit 35", rec(BOOT), round(1), stress(42, 1, detail)));
        assert!(!v.ok);
        assert!(v.text.starts_with("stress FAILED"), "{}", v.text);
        assert!(v.text.contains(&format!("violations: 1\nviolation: {detail}\n")), "{}", v.text);
        assert!(!v.text.contains("broken run"), "{}", v.text);
        assert!(v.text.ends_with(REPLAY), "{}", v.text);
    }

    #[test]
    fn broken_runs_fail() {
        // Hangs after one round: a timeout and no Stress record.
        let (v, _) = run(format!("{}{}exec sleep 1000", rec(BOOT), round(1)));
        assert!(!v.ok);
        assert!(v.text.contains("broken run: no Stress record\nbroken run: timeout after 1 s\n"), "{}", v.text);
        assert!(v.text.ends_with(REPLAY), "{}", v.text);
        // A result for another seed, and success claimed by exit 35.
        let (v, _) = run(format!("{}{}exit 35", rec(BOOT), stress(7, 0, "")));
        assert!(!v.ok);
        assert!(
            v.text.contains("broken run: the guest ran seed 0x7 on 4 CPUs for 5 s; asked for seed 0x2a"),
            "{}",
            v.text
        );
        assert!(
            v.text.contains("broken run: guest reported failure (exit 35) but the Stress record shows no violation"),
            "{}",
            v.text
        );
    }

    #[test]
    fn a_boot_on_the_wrong_accelerator_is_broken() {
        let plan = Plan {
            smp: 4,
            seconds: 5,
            seed: 0x2a,
            live: false,
            verbose: false,
            swap: None,
            accel: crate::accel::Accel::Kvm,
        };
        let script = format!("{}{}exit 33", rec(BOOT), stress(42, 0, ""));
        let mut launch = |_: &Config, echo: Echo| {
            let mut sh = Command::new("/bin/sh");
            sh.arg("-c").arg(&script);
            capture(sh, Duration::from_secs(1), echo)
        };
        let v = run_stress(&plan, &mut launch).unwrap();
        assert!(!v.ok);
        assert!(
            v.text.contains("broken run: Boot record: the guest runs on tcg, but QEMU was asked for kvm\n"),
            "{}",
            v.text
        );
    }
}
