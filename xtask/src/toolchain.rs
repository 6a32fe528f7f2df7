//! The pinned nightly that builds the kernel and the image builder, and the
//! `cargo` invocations that use it.

use crate::cmd;
use anyhow::{bail, Result};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::LazyLock;

/// The kernel toolchain file, the one place the pin is named. It lives in
/// kernel/ (with symlinks in the other kernel-side crates), not at the
/// workspace root: rustup looks for it in the current directory and its
/// parents, so at the root it would make `cargo xtask` itself, which must
/// build on stable, demand the nightly, and with `RUSTUP_AUTO_INSTALL=0`
/// nothing would install it. Read at compile time so xtask needs no path
/// at run time.
const TOOLCHAIN_FILE: &str = include_str!("../../kernel/rust-toolchain.toml");

/// The pinned nightly: `channel` of [`TOOLCHAIN_FILE`].
static PIN: LazyLock<&'static str> = LazyLock::new(|| {
    channel(TOOLCHAIN_FILE).expect("kernel/rust-toolchain.toml names a channel in its [toolchain] table")
});

/// The pinned toolchain's name, e.g. `nightly-2026-08-01`.
pub fn pin() -> &'static str {
    &PIN
}

/// `channel = "..."` of the `[toolchain]` table. The file is ours and
/// small, so a line scan does instead of a TOML parser in xtask.
fn channel(file: &str) -> Option<&str> {
    let mut in_toolchain = false;
    for line in file.lines().map(|l| l.split('#').next().unwrap_or("").trim()) {
        if line.starts_with('[') {
            in_toolchain = line == "[toolchain]";
        } else if let Some((key, value)) = line.split_once('=') {
            if in_toolchain && key.trim() == "channel" {
                return value.trim().strip_prefix('"')?.strip_suffix('"').filter(|v| !v.is_empty());
            }
        }
    }
    None
}

/// The kernel's target (the prebuilt `core`/`alloc` come from rustup).
pub const KERNEL_TARGET: &str = "x86_64-unknown-none";

/// Makes sure [`pin()`] is installed with everything the build needs.
/// `RUSTUP_AUTO_INSTALL=0` is set on these machines, so nothing else will.
pub fn ensure_toolchain() -> Result<()> {
    let pin = pin();
    let missing = missing_parts();
    if missing.is_empty() {
        return Ok(());
    }
    eprintln!("==> toolchain {pin}: {}; installing it", missing.join(", "));
    let mut install = install_command();
    if let Err(e) = cmd::run(&mut install) {
        bail!("{e:#}\ninstall the kernel toolchain yourself with:\n    {}", cmd::show(&install));
    }
    // Re-check: an older rustup may leave an existing toolchain incomplete.
    let still = missing_parts();
    if !still.is_empty() {
        bail!(
            "toolchain {pin}: still {} after installing; run:\n    {}\n    rustup component add --toolchain {pin} rust-src llvm-tools-preview\n    rustup target add --toolchain {pin} {KERNEL_TARGET}",
            still.join(", "),
            cmd::show(&install)
        );
    }
    Ok(())
}

fn install_command() -> Command {
    let mut c = Command::new("rustup");
    c.args(["toolchain", "install", pin(), "--profile", "minimal"]);
    c.args(["--component", "rust-src,llvm-tools-preview", "--target", KERNEL_TARGET]);
    c
}

/// What is missing, worded for "toolchain PIN: {}": `not installed`, or
/// `missing rust-src, missing x86_64-unknown-none`.
fn missing_parts() -> Vec<String> {
    let toolchains = cmd::output("rustup", &["toolchain", "list"]).unwrap_or_default();
    if !has_toolchain(&toolchains) {
        return vec!["not installed".to_string()];
    }
    let components =
        cmd::output("rustup", &["component", "list", "--toolchain", pin(), "--installed"]).unwrap_or_default();
    let targets = cmd::output("rustup", &["target", "list", "--toolchain", pin(), "--installed"]).unwrap_or_default();
    let mut missing = Vec::new();
    if !components.lines().any(|l| l.trim() == "rust-src") {
        missing.push("missing rust-src".to_string());
    }
    if !components.lines().any(|l| l.trim().starts_with("llvm-tools")) {
        missing.push("missing llvm-tools".to_string());
    }
    if !targets.lines().any(|l| l.trim() == KERNEL_TARGET) {
        missing.push(format!("missing {KERNEL_TARGET}"));
    }
    missing
}

/// `rustup toolchain list` prints full names such as
/// `nightly-2026-08-01-x86_64-unknown-linux-gnu (default)`.
fn has_toolchain(list: &str) -> bool {
    list.lines()
        .filter_map(|l| l.split_whitespace().next())
        .any(|name| name == pin() || name.strip_prefix(pin()).is_some_and(|rest| rest.starts_with('-')))
}

/// The workspace root (xtask lives one level below it).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("xtask has a parent directory").to_path_buf()
}

/// Where cargo puts build output: `CARGO_TARGET_DIR` if the user set one
/// (relative to where they ran `cargo xtask`, as cargo reads it).
pub fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => std::env::current_dir().unwrap_or_else(|_| workspace_root()).join(dir),
        None => workspace_root().join("target"),
    }
}

/// `cargo +PIN <args>` run from the workspace root, with the variables the
/// outer (stable) `cargo run` exported removed: they describe the xtask
/// build and would make the inner cargo use the stable rustc (`RUSTC`,
/// `RUSTUP_TOOLCHAIN`) or think it is a build script of xtask (`CARGO_*`).
/// `cargo` is called by name so the rustup proxy honours `+PIN`.
pub fn cargo(args: &[&str]) -> Command {
    let mut c = Command::new("cargo");
    c.arg(format!("+{}", pin())).args(args).current_dir(workspace_root());
    if std::env::var_os("CARGO_TARGET_DIR").is_some() {
        // Absolute, so the inner cargo (run from the root) uses the same dir.
        c.env("CARGO_TARGET_DIR", target_dir());
    }
    for (key, _) in std::env::vars_os() {
        let key = key.to_string_lossy();
        if must_remove(&key) {
            c.env_remove(key.as_ref());
        }
    }
    c
}

/// User settings under `CARGO_` that the inner cargo should still see.
/// Network and registry settings are kept so builds work behind proxies.
const KEEP: &[&str] =
    &["CARGO_HOME", "CARGO_TARGET_DIR", "CARGO_TERM_", "CARGO_NET_", "CARGO_HTTP_", "CARGO_REGISTRIES_"];

fn must_remove(key: &str) -> bool {
    match key {
        "RUSTC" | "RUSTDOC" | "CARGO" => true,
        _ if key.starts_with("RUSTUP_TOOLCHAIN") || key.starts_with("__CARGO") => true,
        _ if key.starts_with("CARGO_") => !KEEP.iter().any(|k| key == *k || (k.ends_with('_') && key.starts_with(k))),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_pinned_toolchain_by_full_name() {
        let list = "stable-x86_64-unknown-linux-gnu (active, default)\nnightly-2026-08-01-x86_64-unknown-linux-gnu\n";
        assert!(has_toolchain(list));
        assert!(!has_toolchain("stable-x86_64-unknown-linux-gnu\nnightly-2026-08-011-x86_64-unknown-linux-gnu\n"));
        assert!(!has_toolchain(""));
    }

    #[test]
    fn reads_the_channel_of_the_toolchain_table() {
        assert_eq!(pin(), "nightly-2026-08-01");
        let file = "# channel = \"not-this\"\n[other]\nchannel = \"nor-this\"\n[toolchain]\nprofile = \"minimal\"\n  channel = \"nightly-2030-01-01\"  # why\n";
        assert_eq!(channel(file), Some("nightly-2030-01-01"));
        assert_eq!(channel("[toolchain]\nchannel = \"\"\n"), None);
        assert_eq!(channel("channel = \"stable\"\n"), None);
        assert_eq!(channel(""), None);
    }

    #[test]
    fn removes_outer_cargo_variables_but_keeps_user_settings() {
        for key in ["RUSTC", "RUSTUP_TOOLCHAIN", "CARGO", "CARGO_MANIFEST_DIR", "CARGO_PKG_NAME", "__CARGO_FIX_PLZ"] {
            assert!(must_remove(key), "{key}");
        }
        for key in ["CARGO_HOME", "CARGO_TARGET_DIR", "CARGO_TERM_COLOR", "CARGO_NET_OFFLINE", "RUSTC_WRAPPER", "PATH"]
        {
            assert!(!must_remove(key), "{key}");
        }
    }
}
