//! `cargo xtask lint`: formatting, clippy and rustdoc, all with warnings
//! denied, on the pinned toolchain. Clippy and rustdoc run twice: for the
//! host crates (with their tests) and for the kernel target, where mm, smp,
//! drivers, bench and record are built as the kernel uses them (`direct_map`
//! and `raw` exist only there).

use crate::{cmd, toolchain};
use anyhow::{bail, Result};
use std::process::{Command, ExitCode};

/// The components lint needs beyond what [`toolchain::ensure_toolchain`]
/// installs (a fresh CI machine has neither).
const COMPONENTS: [&str; 2] = ["rustfmt", "clippy"];

/// The crates built for the host, as `-p` arguments (the kernel itself
/// only builds for its target). They are checked with `--release` for the
/// sake of `mkimage`: the `bootloader` crate's build script compiles the
/// boot stages (minutes), and in the release profile that is the run
/// `cargo xtask build` has made or will reuse.
const HOST_CRATES: [&str; 16] = [
    "-p", "smp", "-p", "mm", "-p", "drivers", "-p", "bench", "-p", "record", "-p", "xtask", "-p", "tracer", "-p",
    "mkimage",
];

/// The crates as the kernel builds them.
const KERNEL_CRATES: [&str; 12] =
    ["-p", "kernel", "-p", "mm", "-p", "smp", "-p", "drivers", "-p", "bench", "-p", "record"];

/// One step: a `cargo +PIN` command and whether rustdoc warnings are denied
/// through `RUSTDOCFLAGS` (clippy takes `-D warnings` as an argument).
#[derive(Debug, PartialEq, Eq)]
struct Step {
    name: &'static str,
    args: Vec<&'static str>,
    deny_rustdoc_warnings: bool,
}

/// Every step, in the order they run: the cheap format check first.
fn plan() -> Vec<Step> {
    // With the test kernel's feature: its suites are most of the kernel's
    // code, and the production build compiles clean too (no dead code).
    let kernel_target = ["--release", "--target", toolchain::KERNEL_TARGET, "--features", "kernel/test-hooks"];
    let step = |name, parts: &[&[&'static str]], deny_rustdoc_warnings| Step {
        name,
        args: parts.concat(),
        deny_rustdoc_warnings,
    };
    vec![
        step("fmt", &[&["fmt", "--all", "--check"]], false),
        step(
            "clippy (host crates, all targets)",
            &[
                &["clippy", "--release", "--all-targets", "--features", "record/parse"],
                &HOST_CRATES,
                &["--", "-D", "warnings"],
            ],
            false,
        ),
        step(
            "clippy (kernel target)",
            &[&["clippy"], &KERNEL_CRATES, &kernel_target, &["--", "-D", "warnings"]],
            false,
        ),
        step(
            "doc (host crates)",
            &[&["doc", "--no-deps", "--release", "--features", "record/parse"], &HOST_CRATES],
            true,
        ),
        step("doc (kernel target)", &[&["doc", "--no-deps"], &KERNEL_CRATES, &kernel_target], true),
    ]
}

/// Which of [`COMPONENTS`] `rustup component list --installed` lacks (it
/// prints full names such as `clippy-x86_64-unknown-linux-gnu`).
fn missing_components(installed: &str) -> Vec<&'static str> {
    COMPONENTS
        .into_iter()
        .filter(|c| {
            !installed
                .lines()
                .map(str::trim)
                .any(|l| l == *c || l.strip_prefix(c).is_some_and(|rest| rest.starts_with('-')))
        })
        .collect()
}

/// Installs rustfmt and clippy for the pinned toolchain if they are missing.
fn ensure_components() -> Result<()> {
    let pin = toolchain::pin();
    let installed =
        cmd::output("rustup", &["component", "list", "--toolchain", pin, "--installed"]).unwrap_or_default();
    let missing = missing_components(&installed);
    if missing.is_empty() {
        return Ok(());
    }
    eprintln!("==> toolchain {pin}: missing {}; installing", missing.join(", "));
    let mut add = Command::new("rustup");
    add.args(["component", "add", "--toolchain", pin]).args(&missing);
    cmd::run(&mut add)
}

/// Runs every step (a failing one does not hide the others) and fails
/// naming the steps that failed.
pub fn lint() -> Result<ExitCode> {
    toolchain::ensure_toolchain()?;
    ensure_components()?;
    let mut failed = Vec::new();
    for step in plan() {
        eprintln!("==> lint: {}", step.name);
        let mut cargo = toolchain::cargo(&step.args);
        if step.deny_rustdoc_warnings {
            cargo.env("RUSTDOCFLAGS", "-D warnings");
        }
        if let Err(e) = cmd::run(&mut cargo) {
            eprintln!("lint: {} failed: {e:#}", step.name);
            failed.push(step.name);
        }
    }
    if !failed.is_empty() {
        bail!("lint failed: {}", failed.join("; "));
    }
    eprintln!("==> lint: all passed");
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plans_fmt_then_clippy_then_doc_for_host_and_kernel() {
        let steps = plan();
        let names: Vec<_> = steps.iter().map(|s| s.name).collect();
        assert_eq!(
            names,
            [
                "fmt",
                "clippy (host crates, all targets)",
                "clippy (kernel target)",
                "doc (host crates)",
                "doc (kernel target)"
            ]
        );
        assert_eq!(steps[0].args, ["fmt", "--all", "--check"]);
        for clippy in &steps[1..3] {
            assert!(clippy.args.ends_with(&["--", "-D", "warnings"]), "{clippy:?}");
            assert!(!clippy.deny_rustdoc_warnings);
        }
        assert!(steps[1].args.contains(&"--all-targets"));
        for doc in &steps[3..] {
            assert!(doc.deny_rustdoc_warnings && doc.args.contains(&"--no-deps"), "{doc:?}");
        }
        for kernel in [&steps[2], &steps[4]] {
            assert!(kernel.args.windows(2).any(|w| w == ["--target", "x86_64-unknown-none"]), "{kernel:?}");
            assert!(kernel.args.windows(2).any(|w| w == ["-p", "kernel"]), "{kernel:?}");
        }
        for host in [&steps[1], &steps[3]] {
            assert!(!host.args.contains(&"--target") && !host.args.contains(&"kernel"), "{host:?}");
            assert!(host.args.windows(2).any(|w| w == ["-p", "mkimage"]), "{host:?}");
        }
    }

    #[test]
    fn finds_missing_rustfmt_and_clippy() {
        let both =
            "cargo-x86_64-unknown-linux-gnu\nclippy-x86_64-unknown-linux-gnu\nrustfmt-x86_64-unknown-linux-gnu\n";
        assert!(missing_components(both).is_empty());
        assert_eq!(missing_components("cargo-x86_64-unknown-linux-gnu\nrust-src\n"), ["rustfmt", "clippy"]);
        assert_eq!(missing_components("clippy\nrustfmt-x86_64-unknown-linux-gnu\n"), [] as [&str; 0]);
        assert_eq!(missing_components("clippy-x86_64-unknown-linux-gnu\n"), ["rustfmt"]);
        assert_eq!(missing_components(""), ["rustfmt", "clippy"]);
    }
}
