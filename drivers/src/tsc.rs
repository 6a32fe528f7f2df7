//! Nanosecond time from the TSC, calibrated once at boot.
//!
//! The frequency comes from CPUID leaf 0x15 when the CPU reports it fully,
//! otherwise from the PIT. It is stored once and then only read, so `now_ns`
//! is a `rdtsc` plus a multiply on any CPU.

use core::sync::atomic::{AtomicU64, Ordering};

use crate::pit;

static TSC_HZ: AtomicU64 = AtomicU64::new(0);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TscSource {
    Cpuid15,
    Pit,
}

impl TscSource {
    pub fn name(self) -> &'static str {
        match self {
            TscSource::Cpuid15 => "cpuid15",
            TscSource::Pit => "pit",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CalibrationError {
    /// The PIT never finished a countdown.
    NoPit,
    /// The measured frequency is outside anything plausible.
    Implausible { hz: u64 },
}

pub fn rdtsc() -> u64 {
    // SAFETY: RDTSC is available on every x86_64 CPU and has no side effects.
    unsafe { core::arch::x86_64::_rdtsc() }
}

/// TSC frequency from CPUID 0x15 (crystal clock and ratio), if reported.
fn cpuid15_hz() -> Option<u64> {
    let max_leaf = core::arch::x86_64::__cpuid(0).eax;
    if max_leaf < 0x15 {
        return None;
    }
    let l = core::arch::x86_64::__cpuid(0x15);
    let (denominator, numerator, crystal_hz) = (l.eax as u64, l.ebx as u64, l.ecx as u64);
    if denominator == 0 || numerator == 0 || crystal_hz == 0 {
        return None;
    }
    Some(crystal_hz * numerator / denominator)
}

/// Measures the TSC against the PIT over `ms` milliseconds (at most 54).
pub fn measure_against_pit(ms: u64) -> Result<u64, CalibrationError> {
    let ticks = (pit::PIT_HZ * ms / 1000).min(u16::MAX as u64) as u16;
    let (start, end) = pit::measure(ticks, rdtsc).ok_or(CalibrationError::NoPit)?;
    Ok((end - start) * pit::PIT_HZ / ticks as u64)
}

/// Calibrates the TSC and makes `now_ns` usable. Run on the BSP before the
/// APs start, so the PIT measurement is not disturbed by their boot.
pub fn calibrate() -> Result<(u64, TscSource), CalibrationError> {
    let (hz, source) = match cpuid15_hz() {
        Some(hz) => (hz, TscSource::Cpuid15),
        None => {
            // Three 50 ms windows; the median rejects one disturbed window.
            let mut runs = [0u64; 3];
            for r in runs.iter_mut() {
                *r = measure_against_pit(50)?;
            }
            runs.sort_unstable();
            (runs[1], TscSource::Pit)
        }
    };
    if !(10_000_000..=100_000_000_000).contains(&hz) {
        return Err(CalibrationError::Implausible { hz });
    }
    TSC_HZ.store(hz, Ordering::Relaxed);
    Ok((hz, source))
}

pub fn tsc_hz() -> u64 {
    TSC_HZ.load(Ordering::Relaxed)
}

/// Converts a TSC delta to nanoseconds. Zero before calibration.
pub fn ticks_to_ns(ticks: u64) -> u64 {
    let hz = tsc_hz();
    if hz == 0 {
        return 0;
    }
    (ticks as u128 * 1_000_000_000 / hz as u128) as u64
}

/// Nanoseconds since the TSC was reset (roughly, since power-on).
pub fn now_ns() -> u64 {
    ticks_to_ns(rdtsc())
}

/// Busy-waits at least `ns` nanoseconds.
pub fn delay_ns(ns: u64) {
    let start = now_ns();
    while now_ns().wrapping_sub(start) < ns {
        core::hint::spin_loop();
    }
}
