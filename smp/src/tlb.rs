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

use core::sync::atomic::{AtomicU64, Ordering};

use x86_64::instructions::tlb;
use x86_64::registers::control::{Cr4, Cr4Flags};
use x86_64::VirtAddr;

use crate::cpuset::{CpuSet, MAX_CPUS};
use crate::ipi::{cross_call, CallError};
use crate::percpu;

/// Ranges longer than this are flushed whole.
pub const FULL_FLUSH_PAGES: u64 = 33;
const PAGE: u64 = 4096;

/// Per-CPU shootdown counters (each CPU writes only its own).
#[derive(Default)]
pub struct TlbCounters {
    /// Shootdowns this CPU started.
    pub shootdowns: AtomicU64,
    /// IPIs this CPU sent for them.
    pub ipis: AtomicU64,
    /// Pages this CPU invalidated one by one (for itself or others).
    pub pages_invalidated: AtomicU64,
    /// Full flushes this CPU performed.
    pub full_flushes: AtomicU64,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct TlbSnapshot {
    pub shootdowns: u64,
    pub ipis: u64,
    pub pages_invalidated: u64,
    pub full_flushes: u64,
}

static COUNTERS: [TlbCounters; MAX_CPUS] = [const {
    TlbCounters {
        shootdowns: AtomicU64::new(0),
        ipis: AtomicU64::new(0),
        pages_invalidated: AtomicU64::new(0),
        full_flushes: AtomicU64::new(0),
    }
}; MAX_CPUS];

fn add(c: &AtomicU64, n: u64) {
    c.store(c.load(Ordering::Relaxed) + n, Ordering::Relaxed);
}

pub fn counters(cpu: usize) -> TlbSnapshot {
    let c = &COUNTERS[cpu];
    let r = |a: &AtomicU64| a.load(Ordering::Relaxed);
    TlbSnapshot {
        shootdowns: r(&c.shootdowns),
        ipis: r(&c.ipis),
        pages_invalidated: r(&c.pages_invalidated),
        full_flushes: r(&c.full_flushes),
    }
}

/// Flushes this CPU's TLB for `pages` pages from `start` (all of it above
/// the threshold), counting the work.
pub fn flush_local(start: u64, pages: u64) {
    let me = &COUNTERS[percpu::current_index()];
    if pages > FULL_FLUSH_PAGES {
        flush_all_local();
        add(&me.full_flushes, 1);
    } else {
        for i in 0..pages {
            tlb::flush(VirtAddr::new(start + i * PAGE));
        }
        add(&me.pages_invalidated, pages);
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

/// Whether `start .. start + pages * 4096` is a non-empty range of
/// canonical addresses within one half of the address space.
fn valid_range(start: u64, pages: u64) -> bool {
    let canonical = |a: u64| VirtAddr::try_new(a).is_ok();
    let Some(len) = pages.checked_mul(PAGE) else { return false };
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
        let me = percpu::current_index();
        let c = &COUNTERS[me];
        add(&c.shootdowns, 1);
        add(&c.ipis, targets.without(me).len() as u64);
    }
    result.map_err(ShootdownError::Call)
}
