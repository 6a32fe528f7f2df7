//! Building the tracer plugin and making sure this QEMU loads it.

use crate::qemu::Qemu;
use crate::toolchain::{target_dir, workspace_root};
use anyhow::{bail, Context, Result};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The plugin API version the tracer is built for (its `qemu-plugin`
/// feature `plugin-api-v4`).
pub const PLUGIN_API: u32 = 4;

/// Builds `tracer` (a host cdylib, with the toolchain xtask runs on) and
/// returns the shared object.
pub fn build() -> Result<PathBuf> {
    eprintln!("==> building the tracer plugin");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let status = Command::new(cargo)
        .args(["build", "--release", "--package", "tracer"])
        .current_dir(workspace_root())
        .status()
        .context("running cargo to build the tracer")?;
    anyhow::ensure!(status.success(), "building the tracer plugin failed ({status})");
    let so = target_dir().join("release").join("libtracer.so");
    anyhow::ensure!(so.is_file(), "the tracer build succeeded but {} is missing", so.display());
    Ok(so)
}

/// `--trace` counts in a TCG plugin: refused with `--accel kvm`.
pub fn check_accel(trace: bool, accel: crate::accel::Accel) -> Result<()> {
    if trace && accel != crate::accel::Accel::Tcg {
        bail!("`--trace` counts with a TCG plugin, which QEMU runs only under TCG; this run would use {} (use --accel tcg)", accel.name());
    }
    Ok(())
}

/// The `-plugin` arguments that load `plugin` writing windows to `out`.
pub fn args(plugin: &Path, out: &Path) -> Vec<String> {
    vec!["-plugin".into(), format!("{},out={}", plugin.display(), out.display())]
}

/// Refuses a QEMU that cannot load a plugin-API-v4 plugin, before any
/// boot: QEMU accepts a plugin whose version lies between its own minimum
/// and current API versions, which only a load tells, so this loads the
/// plugin into a machine-less QEMU (`-M none`) and quits it through the
/// monitor. A QEMU older than 9.2 (API v4 appeared there) is refused by its
/// version alone.
pub fn check(qemu: &Qemu, plugin: &Path) -> Result<()> {
    if qemu.version < crate::qemu::Version(9, 2, 0) {
        bail!(
            "`--trace` needs a QEMU with TCG plugin API v{PLUGIN_API} (QEMU 9.2 or later); {} is QEMU {}",
            qemu.bin,
            qemu.version
        );
    }
    probe(&qemu.bin, plugin).with_context(|| {
        format!(
            "`--trace`: QEMU {} ({}) refused the tracer plugin built for plugin API v{PLUGIN_API}",
            qemu.version, qemu.bin
        )
    })
}

/// Loads `plugin` into `bin -M none` and quits; the error holds QEMU's
/// message when the load fails.
pub fn probe(bin: &str, plugin: &Path) -> Result<()> {
    let mut child = Command::new(bin)
        .args(["-M", "none", "-display", "none", "-nodefaults", "-monitor", "stdio"])
        .args(args(plugin, Path::new("/dev/null")))
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {bin}"))?;
    // A QEMU that ignores the monitor's `quit` still ends (killed) below.
    let _ = child.stdin.take().map(|mut s| s.write_all(b"quit\n"));
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            bail!("the probe did not quit within 30 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut stderr = String::new();
    if let Some(mut e) = child.stderr.take() {
        let _ = std::io::Read::read_to_string(&mut e, &mut stderr);
    }
    if !status.success() {
        let last: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).take(3).collect();
        bail!("the probe load exited with {status}: {}", last.join(" / "));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::qemu::Version;

    fn fake(dir: &Path, script: &str) -> String {
        let path = dir.join("qemu");
        std::fs::write(&path, format!("#!/bin/sh\n{script}\n")).unwrap();
        std::process::Command::new("chmod").arg("+x").arg(&path).status().unwrap();
        path.display().to_string()
    }

    #[test]
    fn a_qemu_that_loads_the_plugin_passes() {
        let dir = tempfile::tempdir().unwrap();
        // Quits when the monitor says so, as QEMU does.
        let bin = fake(dir.path(), "read line; [ \"$line\" = quit ] && exit 0; exit 1");
        check(&Qemu { bin, version: Version(10, 0, 2) }, Path::new("/x/libtracer.so")).unwrap();
    }

    #[test]
    fn a_qemu_that_refuses_the_plugin_is_named_with_its_message() {
        let dir = tempfile::tempdir().unwrap();
        let bin = fake(
            dir.path(),
            "echo \"qemu: Could not load plugin $6: plugin needs API version 4, but this QEMU supports only a minimum version of 5\" >&2; exit 1",
        );
        let err = format!(
            "{:#}",
            check(&Qemu { bin, version: Version(11, 0, 0) }, Path::new("/x/libtracer.so")).unwrap_err()
        );
        assert!(err.contains("QEMU 11.0.0"), "{err}");
        assert!(err.contains("refused the tracer plugin built for plugin API v4"), "{err}");
        assert!(err.contains("minimum version of 5"), "{err}");
    }

    #[test]
    fn trace_needs_tcg() {
        use crate::accel::Accel;
        check_accel(true, Accel::Tcg).unwrap();
        check_accel(false, Accel::Kvm).unwrap();
        let err = check_accel(true, Accel::Kvm).unwrap_err().to_string();
        assert!(err.contains("only under TCG") && err.contains("--accel tcg"), "{err}");
    }

    #[test]
    fn an_old_qemu_is_refused_by_version_without_running_it() {
        let err = format!(
            "{:#}",
            check(&Qemu { bin: "/nonexistent/qemu".into(), version: Version(8, 2, 0) }, Path::new("/x")).unwrap_err()
        );
        assert!(err.contains("needs a QEMU with TCG plugin API v4 (QEMU 9.2 or later)"), "{err}");
        assert!(err.contains("QEMU 8.2.0"), "{err}");
    }
}
