//! `--gdb`: QEMU's gdbstub, halted at reset, and the gdb command that
//! attaches to it; plus the test stage that drives a real gdb to a
//! hardware breakpoint in the kernel's entry and back.
//!
//! The kernel ELF is position-independent and the bootloader maps it at
//! `record::KERNEL_BASE`, so gdb loads its symbols at that offset
//! (`symbol-file -o`). At reset nothing of the kernel is mapped yet (the
//! CPU is in real mode), so only hardware breakpoints work there: a
//! software one would be written into memory the bootloader overwrites.

use crate::accel::Accel;
use crate::build::Images;
use crate::exit::Exit;
use crate::qemu::{parse_mem, Config, Firmware, GuestOptions, Qemu};
use crate::run::{self, Capture, Echo};
use crate::test::{broken, Tally};
use crate::{install, Mode};
use anyhow::{bail, Context, Result};
use record::Record;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

/// gdb's customary port (what `qemu -s` uses).
pub const DEFAULT_PORT: u16 = 1234;

/// The kernel's entry function: `entry_point!` calls it once on the BSP.
pub const ENTRY: &str = "kernel_main";

/// Longest the test stage's boot may take (a `mode=run` boot at 1 CPU
/// takes about 6 s; gdb adds about one).
const STAGE_TIMEOUT: Duration = Duration::from_secs(120);

/// The gdb arguments that load the kernel's symbols at their run-time
/// addresses and attach to the gdbstub on `port`.
pub fn attach_args(elf: &Path, port: u16) -> Vec<String> {
    vec![
        "-ex".into(),
        format!("symbol-file -o {:#x} {}", record::KERNEL_BASE, elf.display()),
        "-ex".into(),
        format!("target remote :{port}"),
    ]
}

/// The one command line that attaches, as a user pastes it.
pub fn attach_command(gdb: &str, elf: &Path, port: u16) -> String {
    let mut c = Command::new(gdb);
    c.args(attach_args(elf, port));
    crate::cmd::show(&c)
}

/// Fails unless gdb finds `ENTRY` with a source line in `elf`: the kernel
/// build keeps its symbol table and line tables (release profile `debug =
/// "line-tables-only"`, not stripped).
pub fn check_symbols(gdb: &str, elf: &Path) -> Result<()> {
    let out = Command::new(gdb)
        .args(["-batch", "-nx", "-ex", &format!("info line {ENTRY}")])
        .arg(elf)
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("could not run `{gdb}`"))?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !text.contains("of \"kernel/src/main.rs\"") {
        bail!(
            "gdb finds no source line for {ENTRY} in {} (stripped, or built without line tables?): {}{}",
            elf.display(),
            text.trim(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// What `run --gdb` prints before QEMU starts (and waits for gdb).
pub fn announce(gdb: &str, elf: &Path, port: u16) -> Result<()> {
    check_symbols(gdb, elf)?;
    println!("gdb: QEMU starts halted at reset, gdbstub on tcp port {port}; no timeout unless --timeout");
    println!("gdb: kernel ELF with symbols: {}", elf.display());
    println!("gdb: attach with: {}", attach_command(gdb, elf, port));
    println!("gdb: the kernel is not mapped at reset, so break with `hbreak` (e.g. `hbreak {ENTRY}`), then `continue`");
    Ok(())
}

/// A TCP port nothing listens on now (the OS picks it), for the test
/// stage: a fixed one could be in use by another run.
fn free_port() -> Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").context("finding a free TCP port")?;
    Ok(listener.local_addr()?.port())
}

/// The test stage: one gdb session, counted as one test.
pub fn stage(qemu: &Qemu, images: &Images, accel: Accel) -> Tally {
    let mut tally = Tally::default();
    eprintln!("==> gdb stage: hbreak {ENTRY} from reset, then continue to the end of the boot");
    match run_stage(qemu, images, accel) {
        Ok(problems) if problems.is_empty() => {
            println!("[gdb] pass gdb::hbreak_at_entry: stopped at {ENTRY}, continued, the boot completed");
            tally.passed += 1;
        }
        Ok(problems) => {
            for p in &problems {
                eprintln!("[gdb] {p}");
            }
            println!("[gdb] fail gdb::hbreak_at_entry");
            tally.failed += 1;
        }
        Err(e) => broken("gdb", &format!("not run: {e:#}"), &mut tally),
    }
    tally
}

fn run_stage(qemu: &Qemu, images: &Images, accel: Accel) -> Result<Vec<String>> {
    let gdb = install::ensure_gdb()?;
    let elf = &images.elf;
    check_symbols(&gdb, elf)?;
    let port = free_port()?;
    let config = Config {
        smp: 1,
        accel,
        gdb: Some(port),
        mem: parse_mem("1G").expect("a valid size"),
        firmware: Firmware::Bios,
        xapic: false,
        guest: GuestOptions { mode: Mode::Run, ..Default::default() },
        swap: None,
        extra: Vec::new(),
    };
    // gdb first: it retries the connection (tcp auto-retry) until QEMU
    // listens. It ends when QEMU does, so its wait is bounded by QEMU's.
    let mut session = Command::new(&gdb);
    session.args(["-batch", "-nx", "-ex", "set tcp connect-timeout 60"]).args(attach_args(elf, port));
    // `*`: the function's first instruction, not the line after its
    // prologue, so `info symbol $pc` names it with no `+ offset`.
    for step in [&format!("hbreak *{ENTRY}"), "continue", "info symbol $pc", "delete", "continue"] {
        session.args(["-ex", step]);
    }
    eprintln!("    $ {}", crate::cmd::show(&session));
    let child = session
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("could not start `{gdb}`"))?;
    let waiter = std::thread::spawn(move || child.wait_with_output());
    let cap = run::run_qemu(qemu, images, &config, STAGE_TIMEOUT, Echo::Observe(Box::new(|_, _| {})));
    let out = waiter.join().map_err(|_| anyhow::anyhow!("the gdb waiter panicked"))?.context("waiting for gdb")?;
    let cap = cap?;
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    let problems = judge(&text, out.status.success(), &cap, accel);
    if !problems.is_empty() {
        eprintln!("--- gdb output ---\n{}\n--- end of gdb output ---", text.trim_end());
        cap.print_failure_context();
    }
    Ok(problems)
}

/// What went wrong with a session: gdb must have stopped at the hardware
/// breakpoint in `ENTRY` (`info symbol $pc` names it) and exited cleanly,
/// and the boot must then have completed as a normal one does.
fn judge(gdb_out: &str, gdb_ok: bool, cap: &Capture, accel: Accel) -> Vec<String> {
    let mut problems = Vec::new();
    if !gdb_ok {
        problems.push("gdb exited with an error".to_string());
    }
    if !gdb_out.lines().any(|l| l.starts_with("Breakpoint 1, ")) {
        problems.push(format!("gdb never stopped at the hardware breakpoint on {ENTRY}"));
    }
    // `info symbol $pc` at the entry itself: `kernel[<hash>]::kernel_main
    // in section .text` (an offset, `+ 20`, would mean elsewhere).
    let at_entry = |l: &str| {
        l.split_once(" in section .text").is_some_and(|(sym, _)| sym == ENTRY || sym.ends_with(&format!("::{ENTRY}")))
    };
    if !gdb_out.lines().any(at_entry) {
        problems.push(format!("gdb stopped, but `info symbol $pc` does not name the first instruction of {ENTRY}"));
    }
    if cap.exit != Exit::GuestSuccess {
        problems.push(format!("after the breakpoint the boot did not complete: {}", cap.exit.describe()));
    }
    match cap.records.iter().find_map(|r| match r {
        Record::Boot { accel, .. } => Some(*accel),
        _ => None,
    }) {
        Some(found) => problems.extend(crate::accel::check_boot(accel, found)),
        None => problems.push("no Boot record after continuing".into()),
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;

    const SESSION: &str = "0x000000000000fff0 in ?? ()\n\
        Hardware assisted breakpoint 1 at 0xffff80000004b2f0: file kernel/src/main.rs, line 71.\n\
        \n\
        Breakpoint 1, 0xffff8000000362c0 in kernel_main () at kernel/src/main.rs:77\n\
        kernel[8afe9dfa53aba23c]::kernel_main in section .text\n\
        [Inferior 1 (process 1) exited with code 041]\n";

    fn boot() -> record::HostRecord {
        crate::records::test_boot(1, record::ApicMode::X2Apic, record::Accel::Tcg)
    }

    #[test]
    fn a_session_that_stopped_at_the_entry_and_finished_passes() {
        let cap = Capture::of(Exit::GuestSuccess, vec![boot()], Duration::ZERO);
        assert_eq!(judge(SESSION, true, &cap, Accel::Tcg), Vec::<String>::new());
    }

    #[test]
    fn missed_breakpoints_and_broken_boots_fail() {
        let cap = Capture::of(Exit::GuestSuccess, vec![boot()], Duration::ZERO);
        let ran_through = "0x000000000000fff0 in ?? ()\n[Inferior 1 (process 1) exited with code 041]\n";
        assert_eq!(
            judge(ran_through, true, &cap, Accel::Tcg),
            [
                "gdb never stopped at the hardware breakpoint on kernel_main",
                "gdb stopped, but `info symbol $pc` does not name the first instruction of kernel_main"
            ]
        );
        let past_prologue = SESSION.replace("::kernel_main in", "::kernel_main + 20 in");
        assert_eq!(judge(&past_prologue, true, &cap, Accel::Tcg).len(), 1);
        let hung = Capture::of(Exit::Timeout(STAGE_TIMEOUT), vec![], Duration::ZERO);
        assert_eq!(
            judge(SESSION, false, &hung, Accel::Tcg),
            [
                "gdb exited with an error",
                "after the breakpoint the boot did not complete: timeout after 120 s",
                "no Boot record after continuing"
            ]
        );
        assert_eq!(
            judge(SESSION, true, &cap, Accel::Kvm),
            ["Boot record: the guest runs on tcg, but QEMU was asked for kvm"]
        );
    }

    #[test]
    fn the_attach_command_loads_symbols_at_the_kernel_base() {
        let cmd = attach_command("gdb", Path::new("/t/kernel"), 1234);
        assert_eq!(cmd, "gdb -ex 'symbol-file -o 0xffff800000000000 /t/kernel' -ex 'target remote :1234'");
    }
}
