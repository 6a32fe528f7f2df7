//! The run loop against fake QEMUs: shell scripts that print serial lines
//! and exit the way QEMU would. Nothing here needs QEMU or a kernel.

use crate::accel::{self, Accel, AccelChoice};
use crate::build::Images;
use crate::exit::Exit;
use crate::qemu::{parse_mem, Config, Firmware, GuestOptions, Qemu, Version};
use crate::run::{capture, run_qemu, Echo};
use crate::Mode;
use record::Record;
use std::process::Command;
use std::time::{Duration, Instant};

/// Runs `body` with `sh -c`. Inline scripts, not files: exec'ing a file
/// this process just wrote races with other tests' forks (ETXTBSY).
fn run_script(body: &str, timeout: Duration) -> crate::run::Capture {
    let mut sh = Command::new("/bin/sh");
    sh.arg("-c").arg(body);
    capture(sh, timeout, Echo::Quiet).unwrap()
}

/// A Boot record line of this xtask's record schema.
fn boot_line() -> String {
    format!(
        r#"{{"schema":{},"record":{{"kind":"boot","cpus_online":2,"cpus_total":2,"apic":"x2apic","tsc_hz":1000,"tsc_source":"pit","tsc_spread_ppm":0,"tsc_bound_ppm":0,"usable_bytes":4096,"store":"ram","accel":"tcg"}}}}"#,
        record::SCHEMA
    )
}

#[test]
fn records_and_success_exit() {
    let body = format!(
        r#"printf 'kernel says hi\r\n'
printf 'noise@@smpmm %s\r\n' '{BOOT}'
echo '@@smpmm {{"schema":{schema},"record":{{"kind":"test","name":"a","outcome":"pass","ns":5,"detail":""}}}}'
echo '@@smpmm {{"schema":{schema},"record":{{"kind":"summary","passed":1,"failed":0}}}}'
printf 'no newline at the end'
exit 33"#,
        BOOT = boot_line(),
        schema = record::SCHEMA
    );
    let cap = run_script(&body, Duration::from_secs(20));
    assert_eq!(cap.exit, Exit::GuestSuccess);
    assert!(cap.bad_records.is_empty(), "{:?}", cap.bad_records);
    assert_eq!(cap.records.len(), 3);
    assert!(matches!(cap.records[0], Record::Boot { cpus_online: 2, .. }));
    assert_eq!(cap.records[2], Record::Summary { passed: 1, failed: 0 });
    assert_eq!(cap.tail.front().unwrap(), "kernel says hi", "\\r is stripped");
    assert_eq!(cap.tail.back().unwrap(), "no newline at the end");
}

#[test]
fn guest_failure_qemu_error_and_signal() {
    assert_eq!(run_script("exit 35", Duration::from_secs(20)).exit, Exit::GuestFailure);
    let cap = run_script("echo 'qemu: could not open disk' >&2; exit 1", Duration::from_secs(20));
    assert_eq!(cap.exit, Exit::Qemu(1));
    assert!(cap.stderr.contains("could not open disk"), "{:?}", cap.stderr);
    assert_eq!(run_script("kill -9 $$", Duration::from_secs(20)).exit, Exit::Signal(9));
}

#[test]
fn bad_record_lines_are_collected() {
    let cap = run_script(
        "echo '@@smpmm {\"schema\":9,\"record\":{}}'; echo '@@smpmm {oops'; exit 33",
        Duration::from_secs(20),
    );
    assert_eq!(cap.exit, Exit::GuestSuccess);
    assert_eq!(cap.bad_records.len(), 2);
    assert!(cap.bad_records[0].contains("schema 9"), "{}", cap.bad_records[0]);
}

#[test]
fn keeps_only_the_last_40_lines() {
    let cap =
        run_script("i=0; while [ $i -lt 100 ]; do echo line $i; i=$((i+1)); done; exit 33", Duration::from_secs(20));
    assert_eq!(cap.tail.len(), 40);
    assert_eq!(cap.tail.front().unwrap(), "line 60");
    assert_eq!(cap.tail.back().unwrap(), "line 99");
}

#[test]
fn hung_guest_times_out_and_is_killed() {
    let start = Instant::now();
    let cap = run_script("echo booting; exec sleep 1000", Duration::from_millis(700));
    assert_eq!(cap.exit, Exit::Timeout(Duration::from_millis(700)));
    assert_eq!(cap.tail.back().unwrap(), "booting");
    assert!(start.elapsed() < Duration::from_secs(10), "{:?}", start.elapsed());
}

#[test]
fn closed_stdout_without_exit_still_times_out() {
    let cap = run_script("exec >/dev/null; exec sleep 1000", Duration::from_millis(500));
    assert!(matches!(cap.exit, Exit::Timeout(_)));
}

/// The whole path: QEMU arguments (through setpriv when present) reach the
/// program, and its output comes back. `/bin/echo` stands in for QEMU.
#[test]
fn run_qemu_passes_the_command_line() {
    let qemu = Qemu { bin: "/bin/echo".into(), version: Version(10, 0, 2) };
    let images = Images { bios: "/img/bios.img".into(), uefi: "/img/uefi.img".into(), elf: "/img/kernel".into() };
    let config = Config {
        smp: 4,
        accel: Accel::Tcg,
        gdb: None,
        mem: parse_mem("512M").unwrap(),
        firmware: Firmware::Uefi { ovmf: "/fw/OVMF_CODE_4M.fd".into() },
        xapic: true,
        guest: GuestOptions { mode: Mode::Test, ..Default::default() },
        swap: None,
        extra: vec!["-d".into(), "int".into()],
    };
    let cap = run_qemu(&qemu, &images, &config, Duration::from_secs(20), Echo::Quiet).unwrap();
    assert_eq!(cap.exit, Exit::Qemu(0));
    let want = "-machine q35 -accel tcg,thread=multi -cpu max,-x2apic -smp 4 -m 512M -nic none -display none \
        -serial stdio -monitor none -no-reboot -device isa-debug-exit,iobase=0xf4,iosize=0x04 \
        -fw_cfg name=opt/smpmm/cmdline,string=mode=test \
        -drive if=pflash,format=raw,readonly=on,file=/fw/OVMF_CODE_4M.fd -drive format=raw,file=/img/uefi.img -d int";
    assert_eq!(cap.tail.back().unwrap(), want);
}

/// What `run` hands QEMU for `--accel` and `--gdb`, decided from a host
/// description as `accel::resolve` would: this machine's kind (/dev/kvm
/// opens, no vmx/svm) gets TCG from `auto`, one with VT-x gets KVM.
#[test]
fn accel_and_gdb_reach_the_command_line() {
    let qemu = Qemu { bin: "/bin/echo".into(), version: Version(10, 0, 2) };
    let images = Images { bios: "/img/bios.img".into(), uefi: "/img/uefi.img".into(), elf: "/img/kernel".into() };
    let no_virt = "processor\t: 0\nflags\t\t: fpu tsc msr hypervisor\n";
    let vmx = "processor\t: 0\nflags\t\t: fpu tsc msr vmx\n";
    let line = |accel: Accel, xapic: bool, gdb: Option<u16>| {
        let config = Config {
            smp: 2,
            accel,
            gdb,
            mem: parse_mem("1G").unwrap(),
            firmware: Firmware::Bios,
            xapic,
            guest: GuestOptions { mode: Mode::Run, ..Default::default() },
            swap: None,
            extra: vec![],
        };
        let cap = run_qemu(&qemu, &images, &config, Duration::from_secs(20), Echo::Quiet).unwrap();
        cap.tail.back().unwrap().clone()
    };
    let here = accel::decide(AccelChoice::Auto, true, no_virt).unwrap();
    assert!(line(here, false, None).starts_with("-machine q35 -accel tcg,thread=multi -cpu max -smp 2 "));
    let kvm = accel::decide(AccelChoice::Auto, true, vmx).unwrap();
    assert!(line(kvm, false, None).starts_with("-machine q35 -accel kvm -cpu host -smp 2 "));
    let kvm_xapic = line(kvm, true, Some(4321));
    assert!(kvm_xapic.starts_with("-machine q35 -accel kvm -cpu host,-x2apic -smp 2 "), "{kvm_xapic}");
    assert!(kvm_xapic.ends_with("-drive format=raw,file=/img/bios.img -gdb tcp::4321 -S"), "{kvm_xapic}");
    assert!(line(here, true, None).contains(" -cpu max,-x2apic "));
    // --accel kvm on this kind of host: refused, nothing started.
    assert!(accel::decide(AccelChoice::Kvm, true, no_virt).is_err());
}
