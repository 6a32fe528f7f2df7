//! `--accel auto|tcg|kvm`: which QEMU accelerator to boot with, and the
//! check that the guest found the one asked for (its Boot record reads the
//! hypervisor CPUID leaf).
//!
//! These machines have a `/dev/kvm` with no hardware virtualisation behind
//! it (a software KVM that boots about a thousand times slower than TCG),
//! so `auto` takes KVM only when the host CPU also has vmx or svm.

use anyhow::{bail, Result};

/// What the user asked for.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum AccelChoice {
    /// KVM when /dev/kvm opens read-write and the CPU has vmx or svm; TCG
    /// otherwise.
    #[default]
    Auto,
    /// QEMU's multi-threaded TCG (`-accel tcg,thread=multi -cpu max`).
    Tcg,
    /// Hardware KVM (`-accel kvm -cpu host`); refused on a host without it.
    Kvm,
}

/// The accelerator a boot uses.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Accel {
    #[default]
    Tcg,
    Kvm,
}

/// Where the host's KVM support is read from.
pub const KVM_DEVICE: &str = "/dev/kvm";
pub const CPUINFO: &str = "/proc/cpuinfo";

impl Accel {
    /// The `-accel` value.
    pub fn qemu_accel(self) -> &'static str {
        match self {
            Accel::Tcg => "tcg,thread=multi",
            Accel::Kvm => "kvm",
        }
    }

    /// The `-cpu` value; `--xapic` hides x2APIC from either model.
    pub fn qemu_cpu(self, xapic: bool) -> &'static str {
        match (self, xapic) {
            (Accel::Tcg, false) => "max",
            (Accel::Tcg, true) => "max,-x2apic",
            (Accel::Kvm, false) => "host",
            (Accel::Kvm, true) => "host,-x2apic",
        }
    }

    /// What the guest's Boot record must say.
    pub fn in_guest(self) -> record::Accel {
        match self {
            Accel::Tcg => record::Accel::Tcg,
            Accel::Kvm => record::Accel::Kvm,
        }
    }

    pub fn name(self) -> &'static str {
        self.in_guest().name()
    }
}

/// Whether some `flags` line of /proc/cpuinfo lists `vmx` (Intel VT-x) or
/// `svm` (AMD-V) as a whole word.
pub fn has_hardware_virt(cpuinfo: &str) -> bool {
    cpuinfo
        .lines()
        .filter(|l| l.split(':').next().is_some_and(|key| key.trim() == "flags"))
        .any(|l| l.split(':').nth(1).unwrap_or("").split_whitespace().any(|f| f == "vmx" || f == "svm"))
}

/// The decision, from what the host offers: whether /dev/kvm opened
/// read-write and the text of /proc/cpuinfo.
pub fn decide(choice: AccelChoice, kvm_opens: bool, cpuinfo: &str) -> Result<Accel> {
    let hw = has_hardware_virt(cpuinfo);
    match choice {
        AccelChoice::Tcg => Ok(Accel::Tcg),
        AccelChoice::Auto if kvm_opens && hw => Ok(Accel::Kvm),
        AccelChoice::Auto => Ok(Accel::Tcg),
        AccelChoice::Kvm if !kvm_opens => bail!(
            "--accel kvm: {KVM_DEVICE} does not open read-write (missing, or no permission: \
             add yourself to the kvm group); use --accel tcg"
        ),
        AccelChoice::Kvm if !hw => bail!(
            "--accel kvm: {CPUINFO} lists neither vmx nor svm, so this host's {KVM_DEVICE} has no \
             hardware virtualisation behind it (a software KVM boots about a thousand times slower \
             than TCG); use --accel tcg (or auto, which picks TCG here)"
        ),
        AccelChoice::Kvm => Ok(Accel::Kvm),
    }
}

/// [`decide`] on this host.
pub fn resolve(choice: AccelChoice) -> Result<Accel> {
    let kvm_opens = std::fs::OpenOptions::new().read(true).write(true).open(KVM_DEVICE).is_ok();
    let cpuinfo = std::fs::read_to_string(CPUINFO).unwrap_or_default();
    let accel = decide(choice, kvm_opens, &cpuinfo)?;
    if choice == AccelChoice::Auto {
        eprintln!(
            "==> accel auto: {} ({KVM_DEVICE} {}, {CPUINFO} {})",
            accel.name(),
            if kvm_opens { "opens" } else { "does not open" },
            if has_hardware_virt(&cpuinfo) { "has vmx/svm" } else { "has no vmx/svm" }
        );
    }
    Ok(accel)
}

/// A problem when the Boot record's accelerator is not the one asked for.
pub fn check_boot(asked: Accel, reported: record::Accel) -> Option<String> {
    (reported != asked.in_guest())
        .then(|| format!("Boot record: the guest runs on {}, but QEMU was asked for {}", reported.name(), asked.name()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const NO_VIRT: &str = "processor\t: 0\nflags\t\t: fpu vme de pse tsc msr hypervisor\n\nprocessor\t: 1\nflags\t\t: fpu vme de pse tsc msr hypervisor\n";
    const VMX: &str = "processor\t: 0\nflags\t\t: fpu vme vmx ept\nvmx flags\t: vnmi preemption_timer\n";
    const SVM: &str = "processor\t: 0\nflags\t\t: fpu svm npt\n";

    #[test]
    fn finds_vmx_or_svm_only_in_flags() {
        assert!(!has_hardware_virt(NO_VIRT));
        assert!(has_hardware_virt(VMX));
        assert!(has_hardware_virt(SVM));
        // `vmx flags` lines exist only with vmx; on their own (or a flag
        // that merely contains the letters) they do not count.
        assert!(!has_hardware_virt("vmx flags\t: vnmi\nflags\t\t: fpu vmxon_like svmish\n"));
        assert!(!has_hardware_virt(""));
    }

    #[test]
    fn auto_takes_kvm_only_with_hardware_support() {
        assert_eq!(decide(AccelChoice::Auto, true, VMX).unwrap(), Accel::Kvm);
        assert_eq!(decide(AccelChoice::Auto, true, SVM).unwrap(), Accel::Kvm);
        // These machines: /dev/kvm opens but the CPU has no vmx/svm.
        assert_eq!(decide(AccelChoice::Auto, true, NO_VIRT).unwrap(), Accel::Tcg);
        assert_eq!(decide(AccelChoice::Auto, false, VMX).unwrap(), Accel::Tcg);
        assert_eq!(decide(AccelChoice::Tcg, true, VMX).unwrap(), Accel::Tcg);
    }

    #[test]
    fn kvm_without_support_is_refused_with_the_reason() {
        assert_eq!(decide(AccelChoice::Kvm, true, VMX).unwrap(), Accel::Kvm);
        let e = decide(AccelChoice::Kvm, true, NO_VIRT).unwrap_err().to_string();
        assert!(e.contains("lists neither vmx nor svm") && e.contains("use --accel tcg"), "{e}");
        let e = decide(AccelChoice::Kvm, false, VMX).unwrap_err().to_string();
        assert!(e.contains("/dev/kvm does not open read-write"), "{e}");
    }

    #[test]
    fn qemu_arguments() {
        assert_eq!((Accel::Tcg.qemu_accel(), Accel::Tcg.qemu_cpu(false)), ("tcg,thread=multi", "max"));
        assert_eq!(Accel::Tcg.qemu_cpu(true), "max,-x2apic");
        assert_eq!((Accel::Kvm.qemu_accel(), Accel::Kvm.qemu_cpu(false)), ("kvm", "host"));
        assert_eq!(Accel::Kvm.qemu_cpu(true), "host,-x2apic");
    }

    #[test]
    fn boot_record_must_agree() {
        assert_eq!(check_boot(Accel::Tcg, record::Accel::Tcg), None);
        assert_eq!(check_boot(Accel::Kvm, record::Accel::Kvm), None);
        assert_eq!(
            check_boot(Accel::Kvm, record::Accel::Tcg).as_deref(),
            Some("Boot record: the guest runs on tcg, but QEMU was asked for kvm")
        );
        assert!(check_boot(Accel::Tcg, record::Accel::None).is_some());
    }
}
