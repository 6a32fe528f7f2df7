//! Nanosecond time from the TSC, calibrated once at boot.
//!
//! The frequency comes from CPUID leaf 0x15 when the CPU states it fully,
//! otherwise it is measured against the HPET's main counter, or the ACPI
//! PM timer when there is no HPET, or the PIT last, with bracketed reads
//! (`calibrate`) so a host that deschedules the vCPU cannot skew it. It is
//! stored once and then only read, so `now_ns` is a `rdtsc` plus a multiply
//! on any CPU.

use core::sync::atomic::{AtomicU64, Ordering};

use crate::calibrate::{self, Plan, TickLength, Unwrap};
use crate::hpet::Hpet;
use crate::pit;
use crate::pm_timer::{PmTimer, PM_TIMER_HZ};

/// The calibration, written once at boot and read by every clock read on
/// every CPU: on a cache line of its own, so that no write to a
/// neighbouring static makes each clock read an access to a line another
/// CPU writes (the sharing tracer found the benchmarks' job slot there).
#[repr(align(64))]
struct Calibrated {
    hz: AtomicU64,
    bound_ppm: AtomicU64,
}

static CALIBRATED: Calibrated = Calibrated { hz: AtomicU64::new(0), bound_ppm: AtomicU64::new(0) };

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TscSource {
    Cpuid15,
    Hpet,
    PmTimer,
    Pit,
}

impl TscSource {
    pub fn name(self) -> &'static str {
        match self {
            TscSource::Cpuid15 => "cpuid15",
            TscSource::Hpet => "hpet",
            TscSource::PmTimer => "pm_timer",
            TscSource::Pit => "pit",
        }
    }
}

/// The calibration's result, for the Boot record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TscCalibration {
    pub hz: u64,
    pub source: TscSource,
    /// (max − min) of the kept windows relative to `hz`; 0 for CPUID.
    pub spread_ppm: u64,
    /// Worst-case error of the chosen window; 0 for CPUID.
    pub bound_ppm: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CalibrationError {
    /// Every reference failed; this is the last one's (the PIT's) error.
    Measurement(calibrate::CalibrationError),
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

/// Measures the TSC against a counter of `bits` bits read by `raw`.
fn against(
    len: TickLength,
    bits: u32,
    mut raw: impl FnMut() -> u64,
) -> Result<calibrate::Calibration, calibrate::CalibrationError> {
    let mut unwrap = Unwrap::new(bits, raw());
    calibrate::measure(&Plan::for_reference(len), len, || unwrap.extend(raw()), rdtsc)
}

/// Calibrates the TSC and makes `now_ns` usable. Run on the BSP before the
/// APs start, so nothing else uses the reference clocks. A reference that
/// fails (stopped, or too few tight windows) hands over to the next.
pub fn calibrate(hpet: Option<&Hpet>, pm_timer: Option<&PmTimer>) -> Result<TscCalibration, CalibrationError> {
    let measured = |source, r: Result<calibrate::Calibration, _>| {
        r.map(|c| TscCalibration { hz: c.hz, source, spread_ppm: c.spread_ppm, bound_ppm: c.bound_ppm })
    };
    let mut result = Err(calibrate::CalibrationError::Degenerate);
    if let Some(hz) = cpuid15_hz() {
        result = Ok(TscCalibration { hz, source: TscSource::Cpuid15, spread_ppm: 0, bound_ppm: 0 });
    }
    if let (Err(_), Some(h)) = (&result, hpet) {
        result =
            measured(TscSource::Hpet, against(TickLength::femtos(h.period_fs()), h.counter_bits(), || h.counter()));
        if let Err(e) = &result {
            log::warn!("tsc: calibration against the HPET failed ({e:?}); trying the next clock");
        }
    }
    if let (Err(_), Some(pm)) = (&result, pm_timer) {
        let bits = if pm.is_32bit { 32 } else { 24 };
        result = measured(TscSource::PmTimer, against(TickLength::hz(PM_TIMER_HZ), bits, || pm.read() as u64));
        if let Err(e) = &result {
            log::warn!("tsc: calibration against the PM timer failed ({e:?}); trying the PIT");
        }
    }
    if result.is_err() {
        let pit = pit::FreeRunning::start();
        result = measured(TscSource::Pit, against(TickLength::hz(pit::PIT_HZ), 16, || pit.read()));
    }
    let cal = result.map_err(CalibrationError::Measurement)?;
    if !(10_000_000..=100_000_000_000).contains(&cal.hz) {
        return Err(CalibrationError::Implausible { hz: cal.hz });
    }
    CALIBRATED.hz.store(cal.hz, Ordering::Relaxed);
    CALIBRATED.bound_ppm.store(cal.bound_ppm, Ordering::Relaxed);
    Ok(cal)
}

/// The calibration's worst-case error (ppm), for checks of `tsc_hz`.
pub fn bound_ppm() -> u64 {
    CALIBRATED.bound_ppm.load(Ordering::Relaxed)
}

pub fn tsc_hz() -> u64 {
    CALIBRATED.hz.load(Ordering::Relaxed)
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
