//! Walking four-level page tables whose entries are atomics: lookups,
//! installing intermediate tables by compare-and-swap, and pruning tables
//! that have become empty.

use core::sync::atomic::{AtomicU64, Ordering};

use alloc::vec::Vec;
use arrayvec::ArrayVec;

use super::marker;
use super::pte::{self, HUGE, TABLE_FLAGS};
use super::{VmError, VmPlatform, PAGE_SIZE};
use crate::frame::PhysAddr;

/// The table in frame `phys`, an address out of an entry or a root (at
/// most 52 bits: entries keep no more).
pub(crate) fn at<P: VmPlatform>(p: &P, phys: u64) -> &Table {
    p.table(PhysAddr::new_truncate(phys))
}

pub type Table = [AtomicU64; 512];

/// The root table's level; 0 is the page table.
pub const TOP: usize = 3;

/// Index into the level-`level` table for `virt`.
pub const fn index(virt: u64, level: usize) -> usize {
    ((virt >> (12 + 9 * level)) & 511) as usize
}

/// Bytes one entry at `level` covers.
pub const fn span(level: usize) -> u64 {
    PAGE_SIZE << (9 * level)
}

/// Sign-extends a 48-bit address to canonical form.
pub const fn canonical(virt: u64) -> u64 {
    (((virt << 16) as i64) >> 16) as u64
}

/// Where a lookup of one address ended.
pub enum Lookup<'t> {
    /// The entry at `level` that maps the address (a leaf: a 4 KiB entry,
    /// a huge entry, or the entry at the level asked for), possibly not
    /// present.
    Entry { entry: &'t AtomicU64, level: usize },
    /// No table covers the address.
    NoTable,
}

/// Follows `virt` from `root` down to `stop` (or to a huge entry above it).
pub fn lookup<P: VmPlatform>(p: &P, root: u64, virt: u64, stop: usize) -> Lookup<'_> {
    let mut table = at(p, root);
    let mut level = TOP;
    loop {
        let entry = &table[index(virt, level)];
        if level == stop {
            return Lookup::Entry { entry, level };
        }
        let e = entry.load(Ordering::Acquire);
        if !pte::is_present(e) {
            return Lookup::NoTable;
        }
        if e & HUGE != 0 {
            return Lookup::Entry { entry, level };
        }
        table = at(p, pte::addr(e));
        level -= 1;
    }
}

/// The level-`stop` entry for `virt`, creating missing tables with frames
/// from `alloc`. A huge page on the way is `AlreadyMapped`.
pub fn entry_for<'p, P: VmPlatform>(
    p: &'p P,
    root: u64,
    virt: u64,
    stop: usize,
    counts: &super::counts::CpuVmCounts,
    alloc: &mut dyn FnMut() -> Result<crate::frame::Frame, VmError>,
) -> Result<&'p AtomicU64, VmError> {
    let mut table = at(p, root);
    let mut level = TOP;
    while level > stop {
        let entry = &table[index(virt, level)];
        let mut e = entry.load(Ordering::Acquire);
        if !pte::is_present(e) {
            let mut fresh = alloc()?;
            counts.table_allocated();
            p.fill_frame(&mut fresh, 0);
            counts.table_zeroed();
            // No replica references a new table: its CPU set starts empty
            // (a set left from the frame's last use as a table would only
            // add targets). Published by the compare-and-swap below.
            if let Some(set) = p.table_cpus(fresh.phys()) {
                set.store(cpus::CpuSet::EMPTY, Ordering::Relaxed);
            }
            let addr = fresh.phys().as_u64();
            match entry.compare_exchange(0, addr | TABLE_FLAGS, Ordering::AcqRel, Ordering::Acquire) {
                // The parent entry owns it now.
                Ok(_) => e = fresh.into_phys().as_u64() | TABLE_FLAGS,
                Err(actual) => {
                    // Another CPU installed a table first; ours was never
                    // visible, so it goes straight back.
                    let _ = p.free_frame(fresh);
                    counts.tables_freed(1);
                    e = actual;
                }
            }
        }
        if e & HUGE != 0 {
            return Err(VmError::AlreadyMapped { virt });
        }
        table = at(p, pte::addr(e));
        level -= 1;
    }
    Ok(&table[index(virt, stop)])
}

/// Start of entry `i` of a level-`level` table covering from `base`, if
/// the entry's span overlaps `range` (the last span of the address space
/// wraps to 0 at its end).
fn entry_in(base: u64, i: usize, level: usize, range: (u64, u64)) -> Option<u64> {
    let lo = canonical(base + i as u64 * span(level));
    let hi = lo.wrapping_add(span(level));
    (!(hi <= range.0 && hi != 0 || lo >= range.1)).then_some(lo)
}

/// Page tables one sweep batch may detach; more wait for the next batch.
pub const PRUNE_MAX: usize = 64;

/// A table `prune` detached: the parent entry (at `level`, for addresses
/// from `virt`) and the value it held.
pub struct Detached<'p> {
    pub entry: &'p AtomicU64,
    pub old: u64,
    pub virt: u64,
    pub level: usize,
}

/// Whether the table in frame `phys` (entries at `level`, covering from
/// `base`) maps nothing any more: every entry is zero, or a removed
/// mapping inside `range` waiting for a shootdown (the caller's flush of
/// `range` will cover it, so the caller may take it over). A marker
/// outside `range` belongs to another unmap whose shootdown does not
/// cover this caller's range and vice versa, and a quarantined marker is
/// held for good: those tables stay.
pub fn is_reclaimable<P: VmPlatform>(p: &P, phys: u64, level: usize, base: u64, range: (u64, u64)) -> bool {
    at(p, phys).iter().enumerate().all(|(i, e)| {
        let v = e.load(Ordering::Relaxed);
        let lo = canonical(base + i as u64 * span(level));
        v == 0
            || (marker::is_marker(v)
                && !marker::is_quarantined(v)
                && lo >= range.0
                && lo.wrapping_add(span(level)) <= range.1)
    })
}

/// Detaches every table below `table` (at `level`, covering addresses
/// from `base`) that maps nothing within `range`, collecting the parent
/// entry and its old value in `out` (so a failed shootdown can put them
/// back).
/// The caller holds the space's table lock exclusively and keeps it until
/// it has shot the range down and freed what `out` holds, so no CPU can
/// install into a detached entry (or link it into a replica) while another
/// may still cache the old pointer. `keep_children` protects the tables directly below (a root's
/// kernel half, shared with every space). Returns false if `out` filled
/// up before the walk was done.
pub fn prune<'p, P: VmPlatform>(
    p: &'p P,
    table: u64,
    level: usize,
    base: u64,
    range: (u64, u64),
    keep_children: bool,
    out: &mut ArrayVec<Detached<'p>, PRUNE_MAX>,
) -> bool {
    if level == 0 {
        return true;
    }
    let t = at(p, table);
    for (i, entry) in t.iter().enumerate() {
        let Some(lo) = entry_in(base, i, level, range) else { continue };
        let e = entry.load(Ordering::Acquire);
        if !pte::is_present(e) || e & HUGE != 0 {
            continue;
        }
        let child = pte::addr(e);
        if !prune(p, child, level - 1, lo, range, false, out) {
            return false;
        }
        if !keep_children && is_reclaimable(p, child, level - 1, lo, range) {
            if out.is_full() {
                return false;
            }
            entry.store(0, Ordering::Release);
            out.push(Detached { entry, old: e, virt: lo, level });
        }
    }
    true
}

/// Collects every table below `table` (at `level`, from `base`) that
/// lies in `start..end`, and every frame a leaf there maps with `SW_OWNED`,
/// for tearing down a whole space.
pub fn collect_all<P: VmPlatform>(
    p: &P,
    table: u64,
    level: usize,
    base: u64,
    range: (u64, u64),
    tables: &mut Vec<u64>,
    owned: &mut Vec<u64>,
) {
    for (i, entry) in at(p, table).iter().enumerate() {
        let Some(lo) = entry_in(base, i, level, range) else { continue };
        let e = entry.load(Ordering::Acquire);
        if !pte::is_present(e) {
            continue;
        }
        if level == 0 || e & HUGE != 0 {
            if e & pte::SW_OWNED != 0 {
                owned.push(pte::addr(e));
            }
            continue;
        }
        collect_all(p, pte::addr(e), level - 1, lo, range, tables, owned);
        tables.push(pte::addr(e));
    }
}

/// Calls `f(phys)` for every table below `table` (at `level`, from
/// `base`) that maps part of `range`, a non-empty range of the lower half
/// (user spaces). Visits only the entries the range covers: an unmap of one
/// page reads one entry per level.
pub fn for_each_table<P: VmPlatform>(
    p: &P,
    table: u64,
    level: usize,
    base: u64,
    range: (u64, u64),
    f: &mut dyn FnMut(u64),
) {
    if level == 0 || range.1 <= base || range.0 >= base.saturating_add(span(level + 1)) {
        return;
    }
    let first = (range.0.saturating_sub(base) / span(level)) as usize;
    let last = (((range.1 - 1 - base) / span(level)) as usize).min(511);
    let t = at(p, table);
    for (i, entry) in t.iter().enumerate().take(last + 1).skip(first) {
        let e = entry.load(Ordering::Acquire);
        if pte::is_present(e) && e & HUGE == 0 {
            f(pte::addr(e));
            for_each_table(p, pte::addr(e), level - 1, base + i as u64 * span(level), range, f);
        }
    }
}

/// Tables below `table` (at `level`, from `base`) that lie in `range`.
pub fn count_tables<P: VmPlatform>(p: &P, table: u64, level: usize, base: u64, range: (u64, u64)) -> u64 {
    let mut count = 0;
    for (i, entry) in at(p, table).iter().enumerate() {
        let Some(lo) = entry_in(base, i, level, range) else { continue };
        let e = entry.load(Ordering::Acquire);
        if level > 0 && pte::is_present(e) && e & HUGE == 0 {
            count += 1 + count_tables(p, pte::addr(e), level - 1, lo, range);
        }
    }
    count
}

/// If anything in `from..to` (`from < to`) is in use — mapped, or a
/// removed mapping still waiting for its shootdown — the end of the first
/// used entry's span; absent tables are skipped whole.
pub fn first_used<P: VmPlatform>(p: &P, root: u64, from: u64, to: u64) -> Option<u64> {
    let mut virt = from;
    'outer: while virt < to {
        let mut table = at(p, root);
        let mut level = TOP;
        loop {
            let e = table[index(virt, level)].load(Ordering::Acquire);
            let entry_end = (virt & !(span(level) - 1)).checked_add(span(level));
            if e == 0 {
                virt = entry_end?;
                continue 'outer;
            }
            if level == 0 || !pte::is_present(e) || e & HUGE != 0 {
                return entry_end.or(Some(u64::MAX));
            }
            table = at(p, pte::addr(e));
            level -= 1;
        }
    }
    None
}

/// Calls `f(virt, entry)` for every non-zero 4 KiB entry in `range`
/// (present or not) below `table` at `level` (covering from `base`).
/// Huge pages and absent tables are skipped.
pub fn for_each_pte<P: VmPlatform>(
    p: &P,
    table: u64,
    level: usize,
    base: u64,
    range: (u64, u64),
    f: &mut dyn FnMut(u64, u64),
) {
    for (i, entry) in at(p, table).iter().enumerate() {
        let Some(lo) = entry_in(base, i, level, range) else { continue };
        let e = entry.load(Ordering::Acquire);
        if e == 0 {
            continue;
        }
        if level == 0 {
            f(lo, e);
        } else if pte::is_present(e) && e & HUGE == 0 {
            for_each_pte(p, pte::addr(e), level - 1, lo, range, f);
        }
    }
}
