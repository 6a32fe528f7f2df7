//! Which QEMU we have and the command line we give it. Installing it is in
//! `install.rs`; running it is in `run.rs`.

use crate::build::Images;
use crate::Mode;
use anyhow::{bail, Context, Result};
use std::fmt;
use std::path::PathBuf;
use std::process::Command;

/// Setting `XTASK_QEMU=/path/to/program` makes xtask run that program
/// instead of `qemu-system-x86_64` and skips installing QEMU. It exists so
/// the run loop can be tried with a fake QEMU (a script that prints record
/// lines and exits 33) and to pick a self-built QEMU.
pub const QEMU_ENV: &str = "XTASK_QEMU";
pub const QEMU_BIN: &str = "qemu-system-x86_64";

/// The QEMU binary to run: `$XTASK_QEMU` if set.
pub fn binary() -> (String, bool) {
    match std::env::var(QEMU_ENV) {
        Ok(bin) if !bin.is_empty() => (bin, true),
        _ => (QEMU_BIN.to_string(), false),
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Version(pub u32, pub u32, pub u32);

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.0, self.1, self.2)
    }
}

pub struct Qemu {
    pub bin: String,
    pub version: Version,
}

impl Qemu {
    /// Asks `bin --version` which QEMU it is.
    pub fn probe(bin: String) -> Result<Qemu> {
        let out =
            Command::new(&bin).arg("--version").output().with_context(|| format!("could not run `{bin} --version`"))?;
        let text = String::from_utf8_lossy(&out.stdout);
        let version = parse_version(&text).with_context(|| format!("`{bin} --version` printed {:?}", text.trim()))?;
        Ok(Qemu { bin, version })
    }

    /// TCG emulates x2APIC only from QEMU 8.1 on; older ones drop the
    /// CPUID bit even for `-cpu max`, so the kernel must fall back to xAPIC.
    pub fn x2apic_under_tcg(&self) -> bool {
        self.version >= Version(8, 1, 0)
    }

    pub fn describe(&self) -> String {
        if self.x2apic_under_tcg() {
            format!("qemu {}: x2APIC available under TCG", self.version)
        } else {
            format!("qemu {}: xAPIC only under TCG (x2APIC needs >= 8.1)", self.version)
        }
    }
}

/// Parses `QEMU emulator version 10.0.2 (Debian 1:10.0.2+ds-2...)`.
pub fn parse_version(text: &str) -> Result<Version> {
    let Some(rest) = text.lines().find_map(|l| l.trim().strip_prefix("QEMU emulator version ")) else {
        bail!("no \"QEMU emulator version\" line");
    };
    let word = rest.split_whitespace().next().unwrap_or("");
    // Release candidates look like `8.0.90`; a `-dirty`/`+ds` tail is noise.
    let numbers: Vec<u32> = word.split(|c: char| !c.is_ascii_digit()).take(3).map_while(|n| n.parse().ok()).collect();
    match numbers[..] {
        [major, minor, patch] => Ok(Version(major, minor, patch)),
        [major, minor] => Ok(Version(major, minor, 0)),
        _ => bail!("cannot read a version number from {word:?}"),
    }
}

/// Guest RAM as the user wrote it (passed through to `-m` unchanged) and
/// in bytes (for checks and messages).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mem {
    pub text: String,
    pub bytes: u64,
}

/// Guest RAM: a [`parse_size`] of at least 32M.
pub fn parse_mem(text: &str) -> Result<Mem> {
    let mem = parse_size(text)?;
    if mem.bytes < 32 << 20 {
        bail!("memory size {text:?} is below 32M; the guest cannot boot in that");
    }
    Ok(mem)
}

/// `--smp`: at least 1 and at most the kernel's limit (`record::MAX_CPUS`,
/// the size of its CPU sets), which it would otherwise silently apply by
/// leaving the other CPUs off.
pub fn parse_smp(text: &str) -> Result<u32> {
    let max = record::MAX_CPUS;
    let n: u32 = text.trim().parse().with_context(|| format!("CPU count {text:?} is not a number"))?;
    match n {
        0 => bail!("CPU count 0: the guest needs at least 1 CPU"),
        n if n > max => {
            bail!("CPU count {n}: the kernel runs at most {max} CPUs (record::MAX_CPUS, the width of its CPU sets)")
        }
        n => Ok(n),
    }
}

/// Most CPUs an xAPIC guest can have: QEMU numbers APIC ids `0..smp`, and
/// an 8-bit xAPIC id stops at 254 (255 is the broadcast id), so QEMU
/// refuses `-smp 256` without x2APIC ("APIC ID 255 requires x2APIC feature
/// in CPU").
pub const XAPIC_MAX_CPUS: u32 = 255;

/// A CPU count the APIC mode cannot boot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApicLimit {
    /// `--xapic` with more CPUs than xAPIC ids.
    XapicTooMany { smp: u32 },
    /// More CPUs than xAPIC ids on a QEMU whose TCG has no x2APIC (< 8.1).
    NoX2apic { smp: u32, version: Version },
}

impl fmt::Display for ApicLimit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            ApicLimit::XapicTooMany { smp } => write!(
                f,
                "--xapic with {smp} CPUs: xAPIC ids stop at {XAPIC_MAX_CPUS} CPUs (APIC id 255 is the broadcast id); drop --xapic or use --smp {XAPIC_MAX_CPUS} or fewer"
            ),
            ApicLimit::NoX2apic { smp, version } => write!(
                f,
                "{smp} CPUs need x2APIC, which qemu {version} does not emulate under TCG (>= 8.1 does); use --smp {XAPIC_MAX_CPUS} or fewer"
            ),
        }
    }
}

impl std::error::Error for ApicLimit {}

/// Refuses a CPU count that the APIC mode cannot give ids to, before
/// anything is built or booted (QEMU would refuse it at start-up).
pub fn check_xapic(smp: u32, xapic: bool) -> Result<(), ApicLimit> {
    if xapic && smp > XAPIC_MAX_CPUS {
        return Err(ApicLimit::XapicTooMany { smp });
    }
    Ok(())
}

impl Qemu {
    /// `check_xapic` for this QEMU: under TCG an old one has only xAPIC.
    pub fn check_apic(&self, smp: u32, xapic: bool, accel: crate::accel::Accel) -> Result<(), ApicLimit> {
        check_xapic(smp, xapic)?;
        if accel == crate::accel::Accel::Tcg && !self.x2apic_under_tcg() && smp > XAPIC_MAX_CPUS {
            return Err(ApicLimit::NoX2apic { smp, version: self.version });
        }
        Ok(())
    }
}

/// Accepts what `qemu -m` accepts in its common form: digits with an
/// optional K/M/G suffix (either case). No suffix means MiB, as in QEMU.
/// No lower bound: callers check theirs.
pub fn parse_size(text: &str) -> Result<Mem> {
    let digits_end = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (number, suffix) = text.split_at(digits_end);
    let shift = match suffix {
        "K" | "k" => 10,
        "" | "M" | "m" => 20,
        "G" | "g" => 30,
        _ => bail!("memory size {text:?}: expected a number with an optional K, M or G suffix (e.g. 512M, 4G)"),
    };
    let n: u64 = number.parse().with_context(|| format!("memory size {text:?}: no number"))?;
    let bytes = n.checked_mul(1 << shift).filter(|&b| b > 0);
    let Some(bytes) = bytes else { bail!("memory size {text:?} is zero or too large") };
    Ok(Mem { text: text.to_string(), bytes })
}

pub enum Firmware {
    Bios,
    Uefi { ovmf: PathBuf },
}

/// Options the guest reads from its command line (fw_cfg
/// `opt/smpmm/cmdline`): space-separated `key=value` pairs.
#[derive(Default)]
pub struct GuestOptions {
    pub mode: Mode,
    /// Seed of the randomised tests (`seed=`); the guest picks one if absent.
    pub seed: Option<u64>,
    /// Frames per magazine (`mag=`); the guest's default if absent.
    pub magazine: Option<u32>,
    /// Eviction policy for demand paging (`evict=`); the guest's default
    /// (the clock) if absent.
    pub eviction: Option<Eviction>,
    /// Benchmark name prefixes to run (`only=a,b`); all when empty.
    pub only: Vec<String>,
    /// Fewer repetitions and shorter runs (`quick=1`).
    pub quick: bool,
    /// How long stress mode runs (`seconds=`).
    pub seconds: Option<u64>,
}

/// The guest's eviction policies.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Eviction {
    /// Not recently used: a clock over NRU classes (`mm`'s `Nru`).
    Nru,
    /// Least recently used, with a second chance.
    Lru,
}

impl Eviction {
    pub fn as_str(self) -> &'static str {
        match self {
            Eviction::Nru => "nru",
            Eviction::Lru => "lru",
        }
    }
}

impl GuestOptions {
    /// The one place the guest command line is built.
    pub fn cmdline(&self) -> String {
        let mut pairs = vec![("mode", self.mode.as_str().to_string())];
        if let Some(seed) = self.seed {
            pairs.push(("seed", format!("{seed:#x}")));
        }
        if let Some(mag) = self.magazine {
            pairs.push(("mag", mag.to_string()));
        }
        if let Some(e) = self.eviction {
            pairs.push(("evict", e.as_str().to_string()));
        }
        if !self.only.is_empty() {
            pairs.push(("only", self.only.join(",")));
        }
        if self.quick {
            pairs.push(("quick", "1".to_string()));
        }
        if let Some(seconds) = self.seconds {
            pairs.push(("seconds", seconds.to_string()));
        }
        pairs.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(" ")
    }
}

pub struct Config {
    pub smp: u32,
    pub accel: crate::accel::Accel,
    /// Start QEMU's gdbstub on this TCP port, halted at reset (`--gdb`).
    pub gdb: Option<u16>,
    pub mem: Mem,
    pub firmware: Firmware,
    pub xapic: bool,
    pub guest: GuestOptions,
    /// A swap disk to attach.
    pub swap: Option<crate::swap::Swap>,
    pub extra: Vec<String>,
}

impl Config {
    pub fn firmware_name(&self) -> &'static str {
        match self.firmware {
            Firmware::Bios => "bios",
            Firmware::Uefi { .. } => "uefi",
        }
    }

    /// Short name of the run for output lines: `smp 8 bios xapic`.
    pub fn label(&self) -> String {
        let mut label = format!("smp {} {}", self.smp, self.firmware_name());
        if self.accel == crate::accel::Accel::Kvm {
            label += " kvm";
        }
        if self.xapic {
            label += " xapic";
        }
        if let Some(mag) = self.guest.magazine {
            label += &format!(" mag={mag}");
        }
        if let Some(e) = self.guest.eviction {
            label += &format!(" evict={}", e.as_str());
        }
        if let Some(swap) = &self.swap {
            label += &format!(" swap={}", swap.size.text);
        }
        label
    }

    /// Everything after the QEMU program name.
    pub fn args(&self, images: &Images) -> Vec<String> {
        let mut a: Vec<String> = Vec::new();
        let mut push = |items: &[&str]| a.extend(items.iter().map(|s| s.to_string()));
        // TCG unless --accel picked KVM (see accel.rs: these machines'
        // /dev/kvm is a slow software KVM).
        push(&["-machine", "q35", "-accel", self.accel.qemu_accel()]);
        push(&["-cpu", self.accel.qemu_cpu(self.xapic)]);
        push(&["-smp", &self.smp.to_string(), "-m", &self.mem.text]);
        // Keep the default VGA device: the bootloader's BIOS stage 2 sets a
        // VESA mode and halts when there is no display adapter.
        // No network card: nothing uses it, and its option ROM slows boot.
        push(&["-nic", "none", "-display", "none", "-serial", "stdio", "-monitor", "none", "-no-reboot"]);
        // The guest exits by writing to port 0xf4 (see run::Exit).
        push(&["-device", "isa-debug-exit,iobase=0xf4,iosize=0x04"]);
        // QEMU option values escape a comma by doubling it.
        let cmdline = self.guest.cmdline().replace(',', ",,");
        push(&["-fw_cfg", &format!("name=opt/smpmm/cmdline,string={cmdline}")]);
        match &self.firmware {
            Firmware::Bios => push(&["-drive", &format!("format=raw,file={}", images.bios.display())]),
            Firmware::Uefi { ovmf } => {
                push(&["-drive", &format!("if=pflash,format=raw,readonly=on,file={}", ovmf.display())]);
                push(&["-drive", &format!("format=raw,file={}", images.uefi.display())]);
            }
        }
        if let Some(swap) = &self.swap {
            a.extend(swap.args());
        }
        if let Some(port) = self.gdb {
            // -S: the CPUs stay halted at reset until gdb says continue.
            a.extend(["-gdb".to_string(), format!("tcp::{port}"), "-S".to_string()]);
        }
        a.extend(self.extra.iter().cloned());
        a
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_debian_and_plain_versions() {
        let debian = "QEMU emulator version 10.0.2 (Debian 1:10.0.2+ds-2+deb13u1~bpo12+1)\nCopyright (c) 2003-2025";
        assert_eq!(parse_version(debian).unwrap(), Version(10, 0, 2));
        assert_eq!(
            parse_version("QEMU emulator version 7.2.15 (Debian 1:7.2+dfsg-7+deb12u13)").unwrap(),
            Version(7, 2, 15)
        );
        assert_eq!(parse_version("QEMU emulator version 8.1.0-dirty\n").unwrap(), Version(8, 1, 0));
        assert!(parse_version("qemu-img version 8.0").is_err());
        assert!(parse_version("QEMU emulator version (weird)").is_err());
    }

    #[test]
    fn x2apic_needs_8_1() {
        let q = |v| Qemu { bin: String::new(), version: v };
        assert!(!q(Version(7, 2, 15)).x2apic_under_tcg());
        assert!(!q(Version(8, 0, 90)).x2apic_under_tcg());
        assert!(q(Version(8, 1, 0)).x2apic_under_tcg());
        assert!(q(Version(10, 0, 2)).x2apic_under_tcg());
    }

    #[test]
    fn memory_sizes_follow_qemu_syntax() {
        assert_eq!(parse_mem("128M").unwrap().bytes, 128 << 20);
        assert_eq!(parse_mem("4G").unwrap().bytes, 4 << 30);
        assert_eq!(parse_mem("1g").unwrap().bytes, 1 << 30);
        assert_eq!(parse_mem("512").unwrap().bytes, 512 << 20, "no suffix is MiB");
        assert_eq!(parse_mem("65536K").unwrap().bytes, 64 << 20);
        assert_eq!(parse_mem("1G").unwrap().text, "1G", "passed through as written");
        for bad in ["", "G", "512MiB", "1.5G", "-1G", "0", "16M", "4T", "1 G", "99999999999999999G"] {
            assert!(parse_mem(bad).is_err(), "{bad:?} should be rejected");
        }
    }

    #[test]
    fn smp_is_refused_above_the_kernel_limit() {
        assert_eq!(parse_smp("1").unwrap(), 1);
        assert_eq!(parse_smp("64").unwrap(), 64);
        assert_eq!(parse_smp("256").unwrap(), 256);
        let e = format!("{:#}", parse_smp("257").unwrap_err());
        assert_eq!(e, "CPU count 257: the kernel runs at most 256 CPUs (record::MAX_CPUS, the width of its CPU sets)");
        assert!(format!("{:#}", parse_smp("0").unwrap_err()).contains("at least 1"));
        assert!(parse_smp("eight").is_err());
        assert!(parse_smp("-1").is_err());
    }

    #[test]
    fn xapic_is_refused_above_255_cpus() {
        assert_eq!(check_xapic(255, true), Ok(()));
        assert_eq!(check_xapic(256, false), Ok(()), "x2APIC has ids for all");
        assert_eq!(check_xapic(256, true), Err(ApicLimit::XapicTooMany { smp: 256 }));
        assert!(check_xapic(256, true).unwrap_err().to_string().starts_with("--xapic with 256 CPUs"));
        let q = |v| Qemu { bin: String::new(), version: v };
        let (tcg, kvm) = (crate::accel::Accel::Tcg, crate::accel::Accel::Kvm);
        assert_eq!(q(Version(10, 0, 2)).check_apic(256, false, tcg), Ok(()));
        assert_eq!(q(Version(10, 0, 2)).check_apic(256, true, tcg), Err(ApicLimit::XapicTooMany { smp: 256 }));
        let old = Version(7, 2, 15);
        assert_eq!(q(old).check_apic(255, false, tcg), Ok(()));
        assert_eq!(q(old).check_apic(256, false, tcg), Err(ApicLimit::NoX2apic { smp: 256, version: old }));
        assert_eq!(q(old).check_apic(256, false, kvm), Ok(()), "KVM's x2APIC is the host's");
    }

    #[test]
    fn cmdline_is_key_value_pairs() {
        assert_eq!(GuestOptions { mode: Mode::Test, ..Default::default() }.cmdline(), "mode=test");
        assert_eq!(GuestOptions { mode: Mode::Run, ..Default::default() }.cmdline(), "mode=run");
        let all = GuestOptions {
            mode: Mode::Test,
            seed: Some(255),
            magazine: Some(4),
            eviction: Some(Eviction::Lru),
            ..Default::default()
        };
        assert_eq!(all.cmdline(), "mode=test seed=0xff mag=4 evict=lru");
        let bench = GuestOptions {
            mode: Mode::Bench,
            only: vec!["frames".into(), "vm.local".into()],
            quick: true,
            ..Default::default()
        };
        assert_eq!(bench.cmdline(), "mode=bench only=frames,vm.local quick=1");
        let stress = GuestOptions { mode: Mode::Stress, seed: Some(0xabc), seconds: Some(30), ..Default::default() };
        assert_eq!(stress.cmdline(), "mode=stress seed=0xabc seconds=30");
    }
}
