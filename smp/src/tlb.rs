//! TLB shootdown: invalidating translations on every CPU that may cache
//! them, built on cross-calls.
//!
//! One request per operation carries the whole range to each target (one
//! IPI per target); the caller flushes its own TLB while the remote IPIs
//! are in flight, counts the acknowledgements, and keeps servicing
//! incoming requests while it waits, so two CPUs shooting each other both
//! finish. Above `FULL_FLUSH_PAGES` pages a full flush is cheaper than
//! page-by-page `invlpg` (Linux's threshold is 33). When `shootdown`
//! returns, no CPU in `targets` holds a translation for the range, so the
//! caller may free or reuse the frames behind it.

use record::PAGE_SIZE;
use x86_64::instructions::tlb;
use x86_64::registers::control::{Cr4, Cr4Flags};
use x86_64::VirtAddr;

use crate::counts::{Counts, Flush};
use crate::cpuset::{CpuSet, MAX_CPUS};
use crate::ipi::{cross_call, CallError};
use crate::percpu;

pub use crate::counts::{TlbSnapshot, FULL_FLUSH_PAGES};

/// Every CPU's shootdown and IPI counts (`counts`).
pub(crate) static COUNTS: Counts<MAX_CPUS> = Counts::new();

pub fn counters(cpu: usize) -> TlbSnapshot {
    COUNTS.snapshot(cpu)
}

/// Flushes this CPU's TLB for `pages` pages from `start` (all of it above
/// the threshold), counting the work.
pub fn flush_local(start: u64, pages: u64) {
    match COUNTS.flush(percpu::current_index(), pages) {
        Flush::All => flush_all_local(),
        Flush::Pages(n) => {
            for i in 0..n {
                tlb::flush(VirtAddr::new(start + i * PAGE_SIZE));
            }
        }
    }
}

/// Drops every translation, global ones included: toggling CR4.PGE
/// flushes global entries, reloading CR3 the rest.
fn flush_all_local() {
    let cr4 = Cr4::read();
    if cr4.contains(Cr4Flags::PAGE_GLOBAL) {
        // SAFETY: clearing and restoring PGE only flushes the TLB; paging
        // stays on and every mapping stays as it was.
        unsafe {
            Cr4::write(cr4 - Cr4Flags::PAGE_GLOBAL);
            Cr4::write(cr4);
        }
    } else {
        tlb::flush_all();
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShootdownError {
    /// Zero pages, or a range that wraps or leaves canonical addresses.
    BadRange { start: u64, pages: u64 },
    /// The cross-call failed (offline target, or CPUs that did not answer).
    Call(CallError),
}

impl ShootdownError {
    /// The CPUs of `targets` that may still hold the translation: all of
    /// them for a refused range, else those the cross-call missed.
    pub fn unconfirmed(self, targets: CpuSet) -> CpuSet {
        match self {
            ShootdownError::BadRange { .. } => targets,
            ShootdownError::Call(e) => e.cpus(),
        }
    }
}

/// Whether `start .. start + pages * 4096` is a non-empty range of
/// canonical addresses within one half of the address space.
fn valid_range(start: u64, pages: u64) -> bool {
    let canonical = |a: u64| VirtAddr::try_new(a).is_ok();
    let Some(len) = pages.checked_mul(PAGE_SIZE) else { return false };
    let Some(end) = start.checked_add(len) else { return false };
    pages > 0 && canonical(start) && canonical(end - 1) && (start >> 63) == ((end - 1) >> 63)
}

/// Invalidates `pages` pages from `start` on every CPU in `targets` (the
/// caller included if it is in the set) and returns once all have done so.
/// Bad input (a bad range, an offline target) is refused before anything
/// is sent or counted.
pub fn shootdown(targets: CpuSet, start: u64, pages: u64) -> Result<(), ShootdownError> {
    if !valid_range(start, pages) {
        return Err(ShootdownError::BadRange { start, pages });
    }
    let result = cross_call(targets, &|| flush_local(start, pages));
    if !matches!(result, Err(CallError::NotOnline { .. })) {
        // Interrupts may be on here, but nothing an interrupt handler
        // does on this CPU counts shootdowns or targets.
        COUNTS.shootdown(percpu::current_index(), targets);
    }
    result.map_err(ShootdownError::Call)
}
