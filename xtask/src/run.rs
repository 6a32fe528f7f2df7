//! Runs QEMU once: spawn, capture the serial console with a deadline,
//! collect the guest's records, decode how it ended.

use crate::build::Images;
use crate::exit::Exit;
use crate::qemu::{Config, Qemu};
use crate::{cmd, records};
use anyhow::{bail, Context, Result};
use record::{HostRecord, Outcome, Record};
use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::{mpsc, Once};
use std::time::{Duration, Instant};

/// Serial lines kept for failure reports.
const TAIL: usize = 40;

/// A timeout that never fires (a `--gdb` session without `--timeout`).
pub const NO_TIMEOUT: Duration = Duration::MAX;

/// Called with each serial line and, for a record line, its record.
pub type Observer = Box<dyn FnMut(&str, Option<&HostRecord>)>;

/// What to show on the terminal while the guest runs.
pub enum Echo {
    /// Every serial line as it arrives.
    All,
    /// One line per Test record (`[smp 8 bios] pass name (12 ms)`), plus
    /// the free-text lines when `verbose`.
    Compact { label: String, verbose: bool },
    /// Each serial line and, for a record line, the parsed record are
    /// handed to the callback (benchmark progress, stress rounds); the
    /// callback decides what to show.
    Observe(Observer),
    /// Nothing (unit tests).
    #[cfg(test)]
    Quiet,
}

/// Everything a run produced.
pub struct Capture {
    pub exit: Exit,
    pub records: Vec<HostRecord>,
    /// Record lines that did not parse (each one makes the run fail).
    pub bad_records: Vec<String>,
    pub tail: VecDeque<String>,
    pub stderr: String,
    pub elapsed: Duration,
}

#[cfg(test)]
impl Capture {
    /// A run that ended with `exit` after `elapsed`, having sent `records`.
    pub fn of(exit: Exit, records: Vec<HostRecord>, elapsed: Duration) -> Capture {
        Capture { exit, records, bad_records: Vec::new(), tail: Default::default(), stderr: String::new(), elapsed }
    }
}

impl Capture {
    /// The last serial lines and QEMU's stderr, for a failure report.
    pub fn print_failure_context(&self) {
        eprintln!("--- last {} serial lines ---", self.tail.len());
        for line in &self.tail {
            eprintln!("{line}");
        }
        eprintln!("--- end of serial output ---");
        if !self.stderr.trim().is_empty() {
            eprintln!("--- QEMU stderr ---\n{}", self.stderr.trim_end());
        }
    }
}

/// Starts QEMU for `config` and captures the run.
pub fn run_qemu(qemu: &Qemu, images: &Images, config: &Config, timeout: Duration, echo: Echo) -> Result<Capture> {
    let xapic = if config.xapic { " xapic" } else { "" };
    eprintln!("==> qemu smp={} mem={} {}{xapic}", config.smp, config.mem.text, config.firmware_name());
    let args = config.args(images);
    let mut command = if cmd::which("setpriv").is_some() {
        // PR_SET_PDEATHSIG: QEMU is killed when xtask dies (also on ^C or a
        // killed CI job) instead of running on with 8 busy vCPUs. It fires
        // when the spawning *thread* exits, and we spawn from the main one.
        let mut c = Command::new("setpriv");
        c.args(["--pdeathsig", "KILL", "--", &qemu.bin]);
        c
    } else {
        static SAID: Once = Once::new();
        SAID.call_once(|| eprintln!("    (setpriv not found: QEMU will outlive xtask if xtask is killed)"));
        Command::new(&qemu.bin)
    };
    command.args(&args);
    eprintln!("    $ {}", cmd::show(&command));
    capture(command, timeout, echo)
}

/// Runs `command` until it exits or `timeout` passes, reading its stdout as
/// the guest's serial console.
pub fn capture(mut command: Command, timeout: Duration, echo: Echo) -> Result<Capture> {
    command.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let start = Instant::now();
    // None: no deadline (NO_TIMEOUT, or one too far off to represent).
    let deadline = start.checked_add(timeout);
    let mut child = command.spawn().with_context(|| format!("could not start `{}`", cmd::show(&command)))?;

    // Readers in threads so the main loop can enforce the deadline. They are
    // not joined: after a kill, a grandchild could still hold the pipes.
    let (line_tx, lines) = mpsc::channel::<String>();
    let stdout = child.stdout.take().expect("stdout is piped");
    std::thread::spawn(move || {
        let mut reader = BufReader::new(stdout);
        let mut buf = Vec::new();
        while matches!(reader.read_until(b'\n', &mut buf), Ok(n) if n > 0) {
            let line = String::from_utf8_lossy(&buf).replace(['\r', '\n'], "");
            buf.clear();
            if line_tx.send(line).is_err() {
                break;
            }
        }
    });
    let (err_tx, err_rx) = mpsc::channel::<String>();
    let mut stderr = child.stderr.take().expect("stderr is piped");
    std::thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = stderr.read_to_end(&mut bytes);
        let _ = err_tx.send(String::from_utf8_lossy(&bytes).into_owned());
    });

    let mut sink = Sink { echo, records: Vec::new(), bad_records: Vec::new(), tail: VecDeque::with_capacity(TAIL) };
    let mut timed_out = false;
    loop {
        let next = match deadline {
            Some(deadline) => lines.recv_timeout(deadline.saturating_duration_since(Instant::now())),
            None => lines.recv().map_err(|_| mpsc::RecvTimeoutError::Disconnected),
        };
        match next {
            Ok(line) => sink.line(line),
            Err(mpsc::RecvTimeoutError::Timeout) => {
                timed_out = true;
                break;
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
    }
    // stdout is closed (or time is up); QEMU should be exiting.
    let status = if timed_out { None } else { wait_until(&mut child, deadline)? };
    let exit = match status {
        Some(status) => Exit::decode(status),
        None => {
            let _ = child.kill();
            child.wait().context("waiting for the killed QEMU")?;
            Exit::Timeout(timeout)
        }
    };
    // Lines that arrived while we were deciding still belong to the run.
    while let Ok(line) = lines.try_recv() {
        sink.line(line);
    }
    let stderr = err_rx.recv_timeout(Duration::from_secs(2)).unwrap_or_else(|_| "(stderr still open)".into());
    let Sink { records, bad_records, tail, .. } = sink;
    Ok(Capture { exit, records, bad_records, tail, stderr, elapsed: start.elapsed() })
}

fn wait_until(child: &mut std::process::Child, deadline: Option<Instant>) -> Result<Option<ExitStatus>> {
    loop {
        if let Some(status) = child.try_wait().context("waiting for QEMU")? {
            return Ok(Some(status));
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            return Ok(None);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

struct Sink {
    echo: Echo,
    records: Vec<HostRecord>,
    bad_records: Vec<String>,
    tail: VecDeque<String>,
}

impl Sink {
    fn line(&mut self, line: String) {
        let parsed = records::parse_line(&line);
        if let Echo::Observe(observe) = &mut self.echo {
            observe(&line, parsed.as_ref().and_then(|p| p.as_ref().ok()));
        }
        match (&self.echo, &parsed) {
            (Echo::All, _) => println!("{line}"),
            (Echo::Compact { verbose: true, .. }, None) => println!("{line}"),
            (Echo::Compact { label, .. }, Some(Ok(Record::Test { name, outcome, ns, detail }))) => match outcome {
                Outcome::Pass if detail.is_empty() => println!("[{label}] pass {name} ({})", records::duration(*ns)),
                Outcome::Pass => println!("[{label}] pass {name} ({}): {detail}", records::duration(*ns)),
                Outcome::Fail => println!("[{label}] fail {name} ({}): {detail}", records::duration(*ns)),
            },
            _ => {}
        }
        match parsed {
            Some(Ok(record)) => self.records.push(record),
            Some(Err(e)) => {
                eprintln!("    bad record line: {e:#}");
                self.bad_records.push(format!("{e:#}"));
            }
            None => {}
        }
        if self.tail.len() == TAIL {
            self.tail.pop_front();
        }
        self.tail.push_back(line);
    }
}

/// `run --mode run`: boot once; success needs the guest's success exit and
/// its Boot record.
pub fn boot(qemu: &Qemu, images: &Images, config: &Config, timeout: Duration) -> Result<()> {
    // Before the boot, so the guest does not compete with it (200 ms).
    let host_tsc = crate::host_tsc::measure();
    let cap = run_qemu(qemu, images, config, timeout, Echo::All)?;
    let boot = cap.records.iter().find(|r| matches!(r, Record::Boot { .. }));
    if let Some(problem) = boot_problem(&cap, config) {
        cap.print_failure_context();
        bail!("{} run failed: {problem}", config.label());
    }
    if let Some(Record::Boot {
        cpus_online,
        cpus_total,
        apic,
        tsc_hz,
        tsc_source,
        tsc_spread_ppm,
        tsc_bound_ppm,
        usable_bytes,
        store,
        accel,
    }) = boot
    {
        println!(
            "boot ok in {:.1} s: {cpus_online}/{cpus_total} CPUs online, accel {}, {}, TSC {:.6} GHz ({tsc_source}, spread {tsc_spread_ppm} ppm, bound {tsc_bound_ppm} ppm), {} MiB usable, paging store {store}",
            cap.elapsed.as_secs_f64(),
            accel.name(),
            records::apic_name(*apic),
            *tsc_hz as f64 / 1e9,
            usable_bytes >> 20
        );
        let host_hz = host_tsc.map(|r| r.hz);
        match (host_tsc, host_hz.and_then(|h| crate::host_tsc::disagreement_ppm(*tsc_hz, h))) {
            (Some(r), Some(ppm)) => println!(
                "host TSC {:.6} GHz (bound {} ppm): the guest's is {ppm} ppm from it ({})",
                r.hz as f64 / 1e9,
                r.bound_ppm,
                crate::host_tsc::TCG_ONLY
            ),
            _ => println!("host TSC: not measured (every bracket was preempted)"),
        }
        if let Some(warning) = crate::host_tsc::flag(Some(*tsc_hz), host_hz) {
            eprintln!("warning: {warning}");
        }
    }
    Ok(())
}

/// Why a `mode=run` boot failed, if it did: it needs the guest's success
/// exit, readable records and a Boot record from the accelerator asked for.
fn boot_problem(cap: &Capture, config: &Config) -> Option<String> {
    let boot = cap.records.iter().find_map(|r| match r {
        Record::Boot { accel, .. } => Some(*accel),
        _ => None,
    });
    match (cap.exit, boot) {
        (Exit::GuestSuccess, Some(_)) if !cap.bad_records.is_empty() => {
            Some(format!("{} unreadable record line(s)", cap.bad_records.len()))
        }
        (Exit::GuestSuccess, Some(accel)) => crate::accel::check_boot(config.accel, accel),
        (Exit::GuestSuccess, None) => Some("the guest exited with success but sent no Boot record".to_string()),
        (exit, _) => Some(exit.describe()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::accel::Accel;
    use crate::qemu::{parse_mem, Firmware, GuestOptions};

    fn config(accel: Accel) -> Config {
        Config {
            smp: 1,
            accel,
            gdb: None,
            mem: parse_mem("1G").unwrap(),
            firmware: Firmware::Bios,
            xapic: false,
            guest: GuestOptions::default(),
            swap: None,
            extra: vec![],
        }
    }

    fn boot(accel: record::Accel) -> record::HostRecord {
        crate::records::test_boot(1, record::ApicMode::X2Apic, accel)
    }

    #[test]
    fn a_boot_must_run_on_the_accelerator_asked_for() {
        let cap = |accel| Capture::of(Exit::GuestSuccess, vec![boot(accel)], Duration::ZERO);
        assert_eq!(boot_problem(&cap(record::Accel::Tcg), &config(Accel::Tcg)), None);
        assert_eq!(boot_problem(&cap(record::Accel::Kvm), &config(Accel::Kvm)), None);
        assert_eq!(
            boot_problem(&cap(record::Accel::Tcg), &config(Accel::Kvm)).as_deref(),
            Some("Boot record: the guest runs on tcg, but QEMU was asked for kvm")
        );
        let none = Capture::of(Exit::GuestSuccess, vec![], Duration::ZERO);
        assert_eq!(
            boot_problem(&none, &config(Accel::Tcg)).as_deref(),
            Some("the guest exited with success but sent no Boot record")
        );
    }

    /// `--gdb` without `--timeout`: a session waits as long as it likes.
    #[test]
    fn no_timeout_waits_for_the_end() {
        let mut sh = Command::new("/bin/sh");
        sh.arg("-c").arg("sleep 1; echo late; exit 33");
        let cap = capture(sh, NO_TIMEOUT, Echo::Quiet).unwrap();
        assert_eq!(cap.exit, Exit::GuestSuccess);
        assert_eq!(cap.tail.back().unwrap(), "late");
    }
}
