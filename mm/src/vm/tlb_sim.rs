//! A simulated TLB for the host `SimMachine`: what each CPU *may* hold, not
//! only what a test touched.
//!
//! Hardware may walk the page tables of its loaded root at any moment
//! (speculatively) and keep what it found — leaf translations and pointers
//! to page tables — until an invalidation that covers it. So before every
//! platform call (any CPU's: the others may walk meanwhile), every CPU with
//! a root loaded walks everything reachable from it, both halves, and adds
//! it to its set. A shootdown drops, on each target, the leaves in its
//! range and every table pointer (`invlpg` drops the paging-structure
//! caches; above `FULL_FLUSH_PAGES` it is a full flush, as in `smp::tlb`);
//! loading a root drops everything (no PCIDs). A CPU with no root loaded
//! holds nothing. Not-present entries (in-transit, busy and paging
//! markers) end a walk: the hardware ignores them.
//!
//! Two checks keep the project's first promise:
//! - freeing a frame a CPU may still hold (as a leaf's frame, a table or
//!   its root) panics at once, naming the CPU, the address and the kind;
//! - a CPU that may hold `virt -> F` finding `virt -> G` means `virt` was
//!   mapped again before the old translation was shot down: that panics
//!   too (it may read or write through the old one).
//!
//! Cost: a refill loads each reachable table once for all the CPUs that
//! share a root and compares it as a whole with what each saw at its last
//! walk; only tables that changed are looked at entry by entry.

use core::fmt;
use core::sync::atomic::Ordering;
use std::collections::{BTreeSet, HashMap};
use std::sync::{Mutex, MutexGuard};
use std::vec::Vec;

use super::pte::{self, HUGE, PRESENT};
use super::table::{canonical, span, Table, TOP};
use super::PAGE_SIZE;
use crate::MAX_CPUS;

/// Above this many pages a shootdown is a full flush (as in `smp::tlb`).
pub const FULL_FLUSH_PAGES: u64 = 33;

/// One leaf translation: `bytes` from `virt` go to `phys`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Leaf {
    virt: u64,
    phys: u64,
    bytes: u64,
}

impl Leaf {
    fn end(&self) -> u64 {
        // The last page of the address space ends at the top, not at 0.
        self.virt.saturating_add(self.bytes)
    }

    /// Virtual minus physical: two leaves that overlap and agree on it
    /// translate every shared page alike.
    fn delta(&self) -> u64 {
        self.virt.wrapping_sub(self.phys)
    }
}

/// The leaves one CPU may hold. 4 KiB ones are indexed both ways (by
/// virtual page for shootdowns, by frame for frees); huge ones are few.
#[derive(Default)]
struct Leaves {
    small: BTreeSet<(u64, u64)>,
    small_by_frame: BTreeSet<(u64, u64)>,
    huge: Vec<Leaf>,
}

impl Leaves {
    /// Every held leaf overlapping `lo..hi` (virtual).
    fn overlapping(&self, lo: u64, hi: u64) -> impl Iterator<Item = Leaf> + '_ {
        let small = self.small.range((lo, 0)..(hi, 0)).map(|&(virt, phys)| Leaf { virt, phys, bytes: PAGE_SIZE });
        small.chain(self.huge.iter().copied().filter(move |h| h.virt < hi && lo < h.end()))
    }

    /// Adds `new`; returns the held leaves it contradicts (same virtual
    /// page, other frame).
    fn add(&mut self, new: Leaf) -> Vec<Leaf> {
        let stale: Vec<Leaf> = self.overlapping(new.virt, new.end()).filter(|l| l.delta() != new.delta()).collect();
        if new.bytes == PAGE_SIZE {
            self.small.insert((new.virt, new.phys));
            self.small_by_frame.insert((new.phys, new.virt));
        } else if !self.huge.contains(&new) {
            self.huge.push(new);
        }
        stale
    }

    fn drop_range(&mut self, lo: u64, hi: u64) {
        let gone: Vec<(u64, u64)> = self.small.range((lo, 0)..(hi, 0)).copied().collect();
        for (virt, phys) in gone {
            self.small.remove(&(virt, phys));
            self.small_by_frame.remove(&(phys, virt));
        }
        self.huge.retain(|h| !(h.virt < hi && lo < h.end()));
    }

    /// Virtual addresses of held leaves whose frames include `phys`.
    fn mapping(&self, phys: u64) -> impl Iterator<Item = u64> + '_ {
        let small = self.small_by_frame.range((phys, 0)..=(phys, u64::MAX)).map(|&(_, virt)| virt);
        small.chain(
            self.huge
                .iter()
                .filter(move |h| h.phys <= phys && phys < h.phys + h.bytes)
                .map(move |h| h.virt + (phys - h.phys)),
        )
    }
}

/// A table a CPU walked since its last invalidation: where it sits and
/// its entries as walked (what the next walk compares with).
struct Walked {
    level: usize,
    base: u64,
    entries: Box<[u64; 512]>,
}

#[derive(Default)]
struct CpuTlb {
    /// The loaded root, 0 for none.
    root: u64,
    leaves: Leaves,
    /// Table frame -> what the CPU may cache of it (the pointer, and the
    /// entries it read).
    tables: HashMap<u64, Walked>,
}

impl CpuTlb {
    fn invalidate(&mut self, start: u64, pages: u64) {
        self.tables.clear();
        if pages > FULL_FLUSH_PAGES {
            self.leaves = Leaves::default();
        } else {
            self.leaves.drop_range(start, start.saturating_add(pages * PAGE_SIZE));
        }
    }

    fn drop_all(&mut self) {
        self.tables.clear();
        self.leaves = Leaves::default();
    }

    /// How this CPU may still hold frame `phys`.
    fn holds(&self, phys: u64) -> Vec<Held> {
        let mut held: Vec<Held> = self.leaves.mapping(phys).map(|virt| Held::Leaf { virt }).collect();
        if let Some(w) = self.tables.get(&phys) {
            held.push(Held::Table { level: w.level, base: w.base });
        }
        if self.root == phys {
            held.push(Held::Root);
        }
        held
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Held {
    /// The frame of a leaf translation of `virt`.
    Leaf { virt: u64 },
    /// A page table whose entries are at `level`, covering from `base`.
    Table { level: usize, base: u64 },
    /// The root the CPU has loaded (CR3).
    Root,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Violation {
    /// Frame `phys` was freed while `cpu` may still hold it.
    Freed { cpu: usize, phys: u64, held: Held },
    /// `virt` maps `new` while `cpu` may still translate it to `old`.
    Remapped { cpu: usize, virt: u64, old: u64, new: u64 },
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Violation::Freed { cpu, phys, held } => {
                write!(f, "frame {phys:#x} freed while CPU {cpu} may still hold it as ")?;
                match held {
                    Held::Leaf { virt } => write!(f, "the frame of leaf {virt:#x}"),
                    Held::Table { level, base } => write!(f, "a level-{level} page table covering from {base:#x}"),
                    Held::Root => write!(f, "its loaded root"),
                }
            }
            Violation::Remapped { cpu, virt, old, new } => write!(
                f,
                "page {virt:#x} maps frame {new:#x} while CPU {cpu} may still translate it to {old:#x} (mapped again before a shootdown)"
            ),
        }
    }
}

/// Walks the table at `table` (entries at `level`, covering from `base`)
/// and everything below it for the CPUs in `group` (which share the root
/// it hangs from), adding to each what is new to it.
fn walk(
    cpus: &mut [CpuTlb],
    group: &[usize],
    mem: &[Table],
    table: u64,
    level: usize,
    base: u64,
    found: &mut Vec<Violation>,
) {
    let Some(t) = mem.get((table / PAGE_SIZE) as usize) else { return };
    let mut now = [0u64; 512];
    // Plain index loops: this runs at every platform call, and iterator
    // adapters cost several calls per entry if the build is unoptimised.
    let mut i = 0;
    while i < 512 {
        now[i] = t[i].load(Ordering::Acquire);
        i += 1;
    }
    let is_leaf = |e: u64| level == 0 || (level < TOP && e & HUGE != 0);
    let virt = |i: usize| canonical(base.wrapping_add(i as u64 * span(level)));
    for &c in group {
        let cpu = &mut cpus[c];
        let walked = cpu.tables.entry(table).or_insert_with(|| Walked { level, base, entries: Box::new([0; 512]) });
        if *walked.entries == now {
            continue;
        }
        for (i, &e) in now.iter().enumerate() {
            if core::mem::replace(&mut walked.entries[i], e) == e || e & PRESENT == 0 || !is_leaf(e) {
                continue;
            }
            // In huge entries bit 12 is the PAT bit, not address.
            let leaf = Leaf { virt: virt(i), phys: pte::addr(e) & !(span(level) - 1), bytes: span(level) };
            for old in cpu.leaves.add(leaf) {
                found.push(Violation::Remapped {
                    cpu: c,
                    virt: leaf.virt.max(old.virt),
                    old: old.phys,
                    new: leaf.phys,
                });
            }
        }
    }
    if level == 0 {
        return;
    }
    let mut i = 0;
    while i < 512 {
        let e = now[i];
        if e & PRESENT != 0 && !is_leaf(e) {
            walk(cpus, group, mem, pte::addr(e), level - 1, virt(i), found);
        }
        i += 1;
    }
}

/// Panics naming every violation, if there is one.
fn report(found: &[Violation]) {
    if !found.is_empty() {
        let all: Vec<String> = found.iter().map(|v| v.to_string()).collect();
        panic!("TLB sim: {}", all.join("; "));
    }
}

pub struct TlbSim {
    cpus: Mutex<Vec<CpuTlb>>,
}

impl Default for TlbSim {
    fn default() -> Self {
        Self::new()
    }
}

impl TlbSim {
    pub fn new() -> TlbSim {
        TlbSim { cpus: Mutex::new((0..MAX_CPUS).map(|_| CpuTlb::default()).collect()) }
    }

    /// The state, even after a panic elsewhere poisoned the lock (reports
    /// panic after unlocking, so the state itself is never half-changed).
    fn lock(&self) -> MutexGuard<'_, Vec<CpuTlb>> {
        self.cpus.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn refill_locked(cpus: &mut [CpuTlb], mem: &[Table]) -> Vec<Violation> {
        let mut found = Vec::new();
        let mut roots: Vec<u64> = cpus.iter().map(|c| c.root).filter(|&r| r != 0).collect();
        roots.sort_unstable();
        roots.dedup();
        for root in roots {
            let group: Vec<usize> = (0..cpus.len()).filter(|&i| cpus[i].root == root).collect();
            walk(cpus, &group, mem, root, TOP, 0, &mut found);
        }
        found
    }

    /// Every CPU with a root loaded walks it (what it may have done since
    /// the last platform call).
    pub fn refill(&self, mem: &[Table]) {
        let found = Self::refill_locked(&mut self.lock(), mem);
        report(&found);
    }

    /// Refills, then panics if any CPU may still hold frame `phys`.
    pub fn check_free(&self, mem: &[Table], phys: u64) {
        let found = {
            let mut cpus = self.lock();
            let mut found = Self::refill_locked(&mut cpus, mem);
            for (cpu, c) in cpus.iter().enumerate() {
                found.extend(c.holds(phys).into_iter().map(|held| Violation::Freed { cpu, phys, held }));
            }
            found
        };
        report(&found);
    }

    /// Refills, then drops `pages` pages from `start` and every table
    /// pointer on each CPU in `targets`.
    pub fn shootdown(&self, mem: &[Table], targets: cpus::CpuSet, start: u64, pages: u64) {
        let found = {
            let mut cpus = self.lock();
            let found = Self::refill_locked(&mut cpus, mem);
            for (_, c) in cpus.iter_mut().enumerate().filter(|&(i, _)| targets.contains(i)) {
                c.invalidate(start, pages);
            }
            found
        };
        report(&found);
    }

    /// `cpu` loads `root`: the others walk first, `cpu` drops everything,
    /// then the new root's content becomes cacheable.
    pub fn load_root(&self, mem: &[Table], cpu: usize, root: u64) {
        let found = {
            let mut cpus = self.lock();
            let mut found = Self::refill_locked(&mut cpus, mem);
            let c = &mut cpus[cpu];
            c.drop_all();
            c.root = root;
            walk(&mut cpus, &[cpu], mem, root, TOP, 0, &mut found);
            found
        };
        report(&found);
    }

    /// The root `cpu` has loaded.
    pub fn root(&self, cpu: usize) -> Option<u64> {
        Some(self.lock()[cpu].root).filter(|&r| r != 0)
    }

    /// The frames `cpu` may translate page `virt` to.
    pub fn may_hold(&self, cpu: usize, virt: u64) -> Vec<u64> {
        let page = virt & !(PAGE_SIZE - 1);
        self.lock()[cpu].leaves.overlapping(page, page + PAGE_SIZE).map(|l| l.phys + (page - l.virt)).collect()
    }

    /// Whether `cpu` may hold frame `phys` as a page table.
    pub fn holds_table(&self, cpu: usize, phys: u64) -> bool {
        self.lock()[cpu].tables.contains_key(&phys)
    }
}
