//! Finding, and where we may, installing QEMU and the OVMF firmware.

use crate::cmd;
use crate::qemu::{self, Qemu};
use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Once;

const BACKPORTS_LIST: &str = "/etc/apt/sources.list.d/bookworm-backports.list";
const BACKPORTS_LINE: &str = "deb http://deb.debian.org/debian bookworm-backports main";
/// The 4M build first: it is what current Debian ships as the default.
const OVMF_CODE: [&str; 2] = ["/usr/share/OVMF/OVMF_CODE_4M.fd", "/usr/share/OVMF/OVMF_CODE.fd"];

/// Returns the QEMU to run, installing it with apt when we are root.
/// bookworm's own QEMU is 7.2 (no x2APIC under TCG), so bookworm machines
/// get the backports one (10.x).
pub fn ensure_qemu() -> Result<Qemu> {
    let (bin, overridden) = qemu::binary();
    if !overridden && cmd::which(&bin).is_none() {
        eprintln!("==> {bin} not found; installing QEMU");
        install_qemu()?;
        if cmd::which(&bin).is_none() {
            bail!("{bin} is still not on PATH after installing qemu-system-x86");
        }
    }
    let qemu = Qemu::probe(bin)?;
    static SAID: Once = Once::new();
    SAID.call_once(|| eprintln!("==> {}", qemu.describe()));
    Ok(qemu)
}

fn install_qemu() -> Result<()> {
    let bookworm = is_bookworm();
    if !can_apt() {
        let mut steps = String::new();
        if bookworm {
            steps += &format!("    echo '{BACKPORTS_LINE}' | sudo tee {BACKPORTS_LIST}\n");
            steps += "    sudo apt-get update\n";
            steps += "    sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -t bookworm-backports qemu-system-x86 ovmf\n";
        } else {
            steps += "    sudo apt-get update\n    sudo apt-get install -y qemu-system-x86 ovmf\n";
        }
        bail!("qemu-system-x86_64 is not installed and xtask can only install it as root with apt-get; run:\n{steps}");
    }
    if bookworm {
        if !Path::new(BACKPORTS_LIST).exists() {
            eprintln!("    writing {BACKPORTS_LIST}");
            std::fs::write(BACKPORTS_LIST, format!("{BACKPORTS_LINE}\n"))
                .with_context(|| format!("could not write {BACKPORTS_LIST}"))?;
        }
        cmd::run(&mut apt(&["update"]))?;
        match cmd::run(&mut apt(&["install", "-y", "-t", "bookworm-backports", "qemu-system-x86", "ovmf"])) {
            Ok(()) => return Ok(()),
            Err(e) => eprintln!("    {e:#}; trying bookworm's own QEMU (7.2, xAPIC only)"),
        }
    } else {
        cmd::run(&mut apt(&["update"]))?;
    }
    cmd::run(&mut apt(&["install", "-y", "qemu-system-x86", "ovmf"]))
}

/// The gdb to attach to QEMU's gdbstub (`run --gdb`, the gdb test
/// stage), installing Debian's `gdb` package when it is missing and we are
/// root.
pub fn ensure_gdb() -> Result<String> {
    const GDB: &str = "gdb";
    if cmd::which(GDB).is_some() {
        return Ok(GDB.to_string());
    }
    if !can_apt() {
        bail!("gdb is not installed and xtask can only install it as root with apt-get; run:\n    sudo apt-get install -y gdb");
    }
    eprintln!("==> gdb not found; installing it");
    if let Err(e) = cmd::run(&mut apt(&["install", "-y", "gdb"])) {
        // A fresh container may have empty package lists.
        eprintln!("    {e:#}; updating the package lists and retrying");
        cmd::run(&mut apt(&["update"]))?;
        cmd::run(&mut apt(&["install", "-y", "gdb"]))?;
    }
    if cmd::which(GDB).is_none() {
        bail!("gdb is still not on PATH after installing the gdb package");
    }
    Ok(GDB.to_string())
}

/// Path of the OVMF code image for `-drive if=pflash`, installing the
/// `ovmf` package when it is missing and we are root.
pub fn ensure_ovmf() -> Result<PathBuf> {
    if let Some(found) = find_ovmf() {
        return Ok(found);
    }
    if !can_apt() {
        bail!(
            "UEFI runs need OVMF ({} or {}); install it with:\n    sudo apt-get install -y ovmf",
            OVMF_CODE[0],
            OVMF_CODE[1]
        );
    }
    eprintln!("==> OVMF not found; installing it");
    if let Err(e) = cmd::run(&mut apt(&["install", "-y", "ovmf"])) {
        // A fresh container may have empty package lists.
        eprintln!("    {e:#}; updating the package lists and retrying");
        cmd::run(&mut apt(&["update"]))?;
        cmd::run(&mut apt(&["install", "-y", "ovmf"]))?;
    }
    find_ovmf().with_context(|| format!("installed ovmf but found neither {} nor {}", OVMF_CODE[0], OVMF_CODE[1]))
}

fn find_ovmf() -> Option<PathBuf> {
    OVMF_CODE.iter().map(PathBuf::from).find(|p| p.is_file())
}

fn apt(args: &[&str]) -> Command {
    let mut c = Command::new("apt-get");
    // Without this, tzdata or similar may stop at a prompt with stdin a tty.
    c.env("DEBIAN_FRONTEND", "noninteractive").args(args);
    c
}

/// Root (`id -u` prints 0) with apt-get available.
fn can_apt() -> bool {
    let root = cmd::output("id", &["-u"]).is_some_and(|uid| uid.trim() == "0");
    root && cmd::which("apt-get").is_some()
}

fn is_bookworm() -> bool {
    let text = std::fs::read_to_string("/etc/os-release").unwrap_or_default();
    codename(&text) == Some("bookworm")
}

fn codename(os_release: &str) -> Option<&str> {
    os_release.lines().find_map(|l| l.strip_prefix("VERSION_CODENAME=")).map(|v| v.trim().trim_matches('"'))
}

#[cfg(test)]
mod tests {
    #[test]
    fn reads_codename_quoted_or_not() {
        assert_eq!(super::codename("NAME=\"Debian\"\nVERSION_CODENAME=bookworm\n"), Some("bookworm"));
        assert_eq!(super::codename("VERSION_CODENAME=\"trixie\""), Some("trixie"));
        assert_eq!(super::codename("ID=arch"), None);
    }
}
