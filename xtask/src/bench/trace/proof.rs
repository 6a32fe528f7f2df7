//! The `trace` stage of `cargo xtask test`: traced boots of the
//! calibration rows (`floor.rmw`, `tlb.shootdown`, quick repetitions),
//! judged by `check::calibrate`: at 2 CPUs with x2APIC (IPIs are `wrmsr`s)
//! and with xAPIC (IPIs are MMIO writes), and at 4 CPUs (a shootdown to
//! all 3 others goes out as one all-but-self ICR write, which the tracer
//! and the kernel both count as one IPI sent). About 45 s here.

use super::check::{calibrate, Verdict};
use super::symbols::Symbols;
use crate::bench::judge;
use crate::build::Images;
use crate::qemu::{parse_mem, Config, Firmware, GuestOptions, Qemu};
use crate::run;
use crate::Mode;
use anyhow::{Context, Result};
use std::time::Duration;

/// (CPUs, xAPIC) of each boot.
pub const BOOTS: [(u32, bool); 3] = [(2, false), (2, true), (4, false)];
pub const ONLY: [&str; 2] = ["floor.rmw", "tlb.shootdown"];

pub fn run(qemu: &Qemu, images: &Images) -> Result<Vec<Verdict>> {
    let plugin = super::plugin::build()?;
    super::plugin::check(qemu, &plugin)?;
    let symbols = Symbols::read(&images.elf)?;
    let mut verdicts = Vec::new();
    for (smp, xapic) in BOOTS {
        for mut v in traced_boot(qemu, images, &plugin, &symbols, smp, xapic)? {
            v.name += &format!(" (smp {smp}, {})", if xapic { "xapic" } else { "x2apic" });
            verdicts.push(v);
        }
    }
    Ok(verdicts)
}

fn traced_boot(
    qemu: &Qemu,
    images: &Images,
    plugin: &std::path::Path,
    symbols: &Symbols,
    smp: u32,
    xapic: bool,
) -> Result<Vec<Verdict>> {
    let dir = crate::toolchain::target_dir().join("trace-test");
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let out = dir.join(format!("windows-smp{smp}{}.jsonl", if xapic { "-xapic" } else { "" }));
    let _ = std::fs::remove_file(&out);
    let config = Config {
        smp,
        // Plugins run only under TCG, whatever the other stages use.
        accel: crate::accel::Accel::Tcg,
        gdb: None,
        mem: parse_mem("1G").expect("a valid size"),
        firmware: Firmware::Bios,
        xapic,
        guest: GuestOptions {
            mode: Mode::Bench,
            only: ONLY.map(String::from).to_vec(),
            quick: true,
            ..Default::default()
        },
        swap: None,
        extra: super::plugin::args(plugin, &out),
    };
    let display = crate::bench::progress::Progress::new(smp, false, false);
    let cap = run::run_qemu(qemu, images, &config, Duration::from_secs(300), display.echo());
    display.finish();
    let cap = cap?;
    let judged = judge::judge(&cap, smp, crate::accel::Accel::Tcg);
    if !judged.failures.is_empty() {
        cap.print_failure_context();
        let details: Vec<&str> = judged.failures.iter().map(|f| f.detail.as_str()).collect();
        anyhow::bail!("the traced boot failed: {}", details.join("; "));
    }
    let mut rows = judged.rows;
    let (traces, problems) = super::match_windows(&rows, super::read_windows(&out)?, Some(symbols));
    anyhow::ensure!(problems.is_empty(), "matching the tracer's windows: {}", problems.join("; "));
    // Each row gets the trace of its own repetition (no plain boot here).
    let unmatched = super::attach(&mut rows, traces);
    anyhow::ensure!(unmatched.is_empty(), "{}", unmatched.join("; "));
    Ok(calibrate(&rows))
}

#[cfg(test)]
mod tests {
    /// The stage alone, against the real QEMU and the kernel image already
    /// built (`cargo xtask build` first): `cargo test -p xtask -- --ignored
    /// trace_calibration`.
    #[test]
    #[ignore = "boots QEMU; run by the trace stage of cargo xtask test"]
    fn trace_calibration() {
        let qemu = crate::install::ensure_qemu().unwrap();
        let verdicts = super::run(&qemu, &crate::build::Images::existing(crate::build::Flavor::Production)).unwrap();
        for v in &verdicts {
            eprintln!("[trace] {} {}: {}", if v.ok { "pass" } else { "FAIL" }, v.name, v.detail);
        }
        assert!(verdicts.iter().all(|v| v.ok));
    }
}
