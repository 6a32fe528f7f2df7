//! An address space: a root page table (in a user space, the master tree
//! that each CPU's replica links: `replica`), what part of the address
//! space callers may map in it, and the set of CPUs on which it is active
//! (its shootdowns go to CPUs in both that set and the sets of the tables
//! they change).

use alloc::sync::Arc;
use core::sync::atomic::{AtomicBool, Ordering};

use cpus::{AtomicCpuSet, CachePadded, CpuSet};

use super::replica::Replicas;
use super::table_lock::TableLock;
use super::{VmError, KERNEL_REGION_AREA, KERNEL_SEED_AREA, PAGE_SIZE, USER_END, USER_START};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpaceKind {
    /// The one kernel space: its upper half is shared by every space and
    /// its translations may be cached on every online CPU.
    Kernel,
    /// A user space: its own lower half, the kernel's upper half.
    User,
}

/// Dropping a space without `Vm::destroy_space` leaks its tables and
/// frames: destroy it.
///
/// The state is shared (`Arc`) with the CPUs running the space: each keeps
/// a reference in its `current` slot for as long as it runs it, so a CPU's
/// soft faults and naps reach a live space however the owner's handle
/// moves, and `destroy_space` refuses while any CPU still has one (an
/// activation guard that was leaked keeps the space, safely, for good).
#[must_use = "a user space must be destroyed with Vm::destroy_space"]
pub struct AddressSpace(pub(super) Arc<Space>);

impl core::ops::Deref for AddressSpace {
    type Target = Space;

    fn deref(&self) -> &Space {
        &self.0
    }
}

/// What an `AddressSpace` is (reached through it).
pub struct Space {
    pub(crate) root: u64,
    kind: SpaceKind,
    /// CPUs that run on this space now (user spaces; the kernel space is
    /// on every online CPU). Its own line: written on every activation.
    pub(super) active: CachePadded<AtomicCpuSet>,
    /// Shared by map and unmap, exclusive for freeing empty tables. Its
    /// own line: every page fault reads `root` (its walk starts there),
    /// and the lock word is written by every map and unmap (`fault.anon`
    /// at 8 CPUs: about 6 conflicting reads per fault on the shared line).
    pub(crate) tables: CachePadded<TableLock>,
    /// Each CPU's replica of the tables (user spaces: `replica`).
    pub(super) replicas: Replicas,
    /// A sweep was left undone (the table lock was busy): the next unmap
    /// sweeps. Its own line: read by every unmap, written only then.
    pub(super) sweep_pending: CachePadded<AtomicBool>,
}

impl AddressSpace {
    pub(super) fn new_user(root: u64) -> AddressSpace {
        AddressSpace(Arc::new(Space::new(root, SpaceKind::User)))
    }
}

impl Space {
    pub(super) fn new(root: u64, kind: SpaceKind) -> Space {
        Space {
            root,
            kind,
            active: CachePadded::new(AtomicCpuSet::new(CpuSet::EMPTY)),
            tables: CachePadded::new(match kind {
                SpaceKind::Kernel => TableLock::new(),
                SpaceKind::User => TableLock::on_heap(),
            }),
            replicas: match kind {
                SpaceKind::Kernel => Replicas::none(),
                SpaceKind::User => Replicas::per_cpu(),
            },
            sweep_pending: CachePadded::new(AtomicBool::new(false)),
        }
    }

    /// Physical address of the root table (what CR3 holds).
    pub fn root(&self) -> crate::frame::PhysAddr {
        crate::frame::PhysAddr::new(self.root)
    }

    pub fn kind(&self) -> SpaceKind {
        self.kind
    }

    /// CPUs the space is active on now.
    pub fn active_cpus(&self) -> CpuSet {
        self.active.load(Ordering::SeqCst)
    }

    /// The addresses the seed API may map in this space.
    pub fn mappable(&self) -> core::ops::Range<u64> {
        match self.kind {
            SpaceKind::Kernel => KERNEL_SEED_AREA,
            SpaceKind::User => USER_START..USER_END,
        }
    }

    /// The addresses whose access `protect` may change: the seed area and,
    /// in the kernel space, `k_mem_map` regions too.
    pub fn protectable(&self) -> core::ops::Range<u64> {
        match self.kind {
            SpaceKind::Kernel => KERNEL_SEED_AREA.start..KERNEL_REGION_AREA.end,
            SpaceKind::User => USER_START..USER_END,
        }
    }

    /// Checks that `npages` pages from `virt` are a non-empty, aligned
    /// range inside `mappable()` and returns its end.
    pub fn check_range(&self, virt: u64, npages: u64) -> Result<u64, VmError> {
        check_range_in(self.mappable(), virt, npages)
    }
}

/// Checks `npages` pages from `virt` against `area`; returns the end.
pub fn check_range_in(area: core::ops::Range<u64>, virt: u64, npages: u64) -> Result<u64, VmError> {
    if !virt.is_multiple_of(PAGE_SIZE) {
        return Err(VmError::NotAligned { value: virt });
    }
    if npages == 0 {
        return Err(VmError::ZeroSize);
    }
    if virt < PAGE_SIZE {
        return Err(VmError::NullPage);
    }
    let len = npages.checked_mul(PAGE_SIZE).ok_or(VmError::BadRange { start: virt, len: u64::MAX })?;
    let end = virt.checked_add(len).ok_or(VmError::BadRange { start: virt, len })?;
    if virt < area.start || end > area.end {
        return Err(VmError::BadRange { start: virt, len });
    }
    Ok(end)
}

#[cfg(test)]
mod layout_tests {
    use super::*;

    #[test]
    fn the_root_every_walk_reads_shares_no_line_with_written_fields() {
        let s = Space::new(0x1000, SpaceKind::Kernel);
        let line = |p: usize| p / 128;
        let root = line(&s.root as *const u64 as usize);
        for (name, p) in [
            ("tables", &*s.tables as *const TableLock as usize),
            ("active", &*s.active as *const AtomicCpuSet as usize),
            ("sweep_pending", &*s.sweep_pending as *const AtomicBool as usize),
        ] {
            assert_ne!(line(p), root, "{name} shares the root's line");
        }
    }
}
