//! Per-CPU page-table replicas of user spaces (RadixVM's per-core page
//! tables), so that a shootdown goes only to CPUs that can hold the
//! translation.
//!
//! A user space keeps one master tree: map, lookup, protect, unmap, the
//! audit and sweeps read and change only it, and no CPU ever loads it.
//! Each CPU that activates the space loads its own replica instead: its
//! own PML4, PDPTs and PDs (the kernel half copied from the kernel space,
//! as in every user root), whose PD entries link the master's page tables
//! (the level-0 tables, 2 MiB each) and copy the master's huge leaves. A
//! replica starts empty; a CPU that touches an address the master maps
//! but its replica does not takes a soft fault (`Vm::soft_fault`), which
//! records the CPU in the master table's CPU set (`table_cpus`) and then
//! links the table (or copies the huge leaf) into the replica.
//!
//! x86 caches only translations and table pointers reachable from the
//! loaded CR3, so a CPU can hold a translation of a page only if its CPU
//! set is in the set of the master table mapping it. An unmap or a
//! downgrade shoots down (the union of those sets over its range) ∩ (the
//! CPUs where the space is active now): a CPU that left the space, or is
//! napping (`Vm::idle`), loaded another root, which dropped everything.
//!
//! Ordering (invariant 8, here for the table sets): the faulting CPU makes
//! a locked RMW on the set, then a locked compare-and-swap that links, then
//! loads the master entry again and takes the link back if it changed. An
//! unmapper changes the master (a locked compare-and-swap on the leaf, or
//! a sweep's plain store that detaches a table, followed by a fence), then
//! reads the set. x86 keeps locked operations and fenced loads in one
//! total order, so either the unmapper's read sees the CPU (it is shot
//! down, and a sweep unlinks its replica first), or the CPU's RMW comes
//! later, and so do its re-check and every walk its hardware makes through
//! the link: they see the changed master.
//!
//! Sets only grow while a table lives: a CPU that stopped using a range
//! stays a target of its shootdowns until the table is swept. Tables are
//! freed only by a sweep (`Vm::sweep`, under the exclusive table lock, so
//! no soft fault, which holds the shared side, runs meanwhile) or with the
//! space: the sweep takes the link out of every replica in the table's
//! set, shoots down those where the space is active, and frees after.
//!
//! Cost: per CPU per space a PML4 frame, one PDPT frame per 512 GiB and
//! one PD frame per 1 GiB it touched (3 frames for a CPU that touches one
//! 2 MiB window), and one soft fault per 2 MiB range (per huge page) it
//! touches; the tables are the master's, shared, not copied.

use alloc::boxed::Box;
use core::sync::atomic::{AtomicU64, Ordering};

use cpus::CpuSet;

use super::mapping::Vm;
use super::pte::{self, HUGE};
use super::space::{Space, SpaceKind};
use super::table::{self, index, TOP};
use super::{VmError, VmPlatform, USER_END};
use crate::frame::PhysAddr;
use crate::MAX_CPUS;

/// Each CPU's replica root of one user space (0: none yet). A slot is
/// written once, by its CPU at its first activation, and read by that CPU
/// and by destroy; so the slots need no line of their own.
pub(crate) struct Replicas(Box<[AtomicU64]>);

impl Replicas {
    /// No replicas: the kernel space, which every CPU loads itself.
    pub fn none() -> Replicas {
        Replicas(Box::new([]))
    }

    pub fn per_cpu() -> Replicas {
        Replicas((0..MAX_CPUS).map(|_| AtomicU64::new(0)).collect())
    }

    /// `cpu`'s replica root, 0 if it has none.
    pub fn root(&self, cpu: usize) -> u64 {
        self.0.get(cpu).map_or(0, |r| r.load(Ordering::Acquire))
    }

    /// Every replica made: (CPU, root).
    fn made(&self) -> impl Iterator<Item = (usize, u64)> + '_ {
        self.0.iter().map(|r| r.load(Ordering::Acquire)).enumerate().filter(|&(_, r)| r != 0)
    }
}

/// Clears replica entry `slot` if it still refers to frame `target`. A
/// loop: the hardware may set accessed or dirty in a copied leaf meanwhile.
fn take_out(slot: &AtomicU64, target: u64) {
    let mut e = slot.load(Ordering::Acquire);
    while pte::is_present(e) && pte::addr(e) == pte::addr(target) {
        match slot.compare_exchange(e, 0, Ordering::SeqCst, Ordering::Acquire) {
            Ok(_) => return,
            Err(now) => e = now,
        }
    }
}

impl<P: VmPlatform> Vm<P> {
    /// `cpu`'s replica of user space `space`, made at its first activation
    /// there: the kernel half copied, the user half empty.
    pub(super) fn replica_root(&self, space: &Space, cpu: usize) -> Result<u64, VmError> {
        debug_assert_eq!(space.kind(), SpaceKind::User);
        let made = space.replicas.root(cpu);
        if made != 0 {
            return Ok(made);
        }
        let root = self.new_root()?;
        // Only `cpu` makes its replica (it is the one activating).
        space.replicas.0[cpu].store(root, Ordering::Release);
        Ok(root)
    }

    /// Called by the page-fault handler with the faulting address: links
    /// the master's table (or huge page) covering `virt` into the running
    /// CPU's replica of the user space it runs. True if it did (retry the
    /// access); false for a fault the master itself has (not mapped, or
    /// not allowed), which the caller handles as before.
    pub fn soft_fault(&self, virt: u64) -> bool {
        if virt >= USER_END {
            return false;
        }
        let cpu = self.p.cpu_index();
        let Some(space) = self.current.get(cpu) else { return false };
        self.link(space, cpu, virt).unwrap_or(false)
    }

    /// `soft_fault` for `cpu` in `space`.
    pub(super) fn link(&self, space: &Space, cpu: usize, virt: u64) -> Result<bool, VmError> {
        let replica = space.replicas.root(cpu);
        if replica == 0 {
            return Ok(false);
        }
        // Shared: no sweep detaches and frees a master table this walks.
        let _shared = self.shared(space)?;
        // The master entry replicas share: a link to a page table (level
        // 1), or a huge leaf; and the table holding it.
        let (mut master, mut level) = (space.root, TOP);
        let e = loop {
            let e = table::at(&self.p, master)[index(virt, level)].load(Ordering::Acquire);
            if !pte::is_present(e) {
                return Ok(false);
            }
            if level == 1 || e & HUGE != 0 {
                break e;
            }
            master = pte::addr(e);
            level -= 1;
        };
        let m = &table::at(&self.p, master)[index(virt, level)];
        // The replica's own tables above it, made as any table is.
        let r = match table::entry_for(&self.p, replica, virt, level, self.my_counts(), &mut || self.alloc()) {
            Ok(r) => r,
            Err(VmError::AlreadyMapped { .. }) => return Ok(false),
            Err(e) => return Err(e),
        };
        if r.load(Ordering::Acquire) != 0 {
            return Ok(false); // linked already: the master faults
        }
        // The set that says who may hold what the link reaches: the linked
        // table's, or for a huge leaf its own table's.
        let holder = if e & HUGE != 0 { master } else { pte::addr(e) };
        if let Some(set) = self.p.table_cpus(PhysAddr::new_truncate(holder)) {
            set.insert(cpu, Ordering::SeqCst);
        }
        if r.compare_exchange(0, e, Ordering::SeqCst, Ordering::Relaxed).is_ok() && m.load(Ordering::SeqCst) != e {
            // Changed since it was read: take the link back; the retried
            // access faults again and sees what is there.
            take_out(r, e);
        }
        Ok(true)
    }

    /// Takes out of the replica of every CPU in `cpus` its entry at
    /// `level` for `virt` if it still refers to frame `target` (a master
    /// table or huge page on its way out). The caller changed the master
    /// first and fenced (see the module comment), and shoots those CPUs
    /// down after.
    pub(super) fn unlink(&self, space: &Space, cpus: CpuSet, virt: u64, level: usize, target: u64) {
        'cpus: for cpu in cpus.iter() {
            let mut t = space.replicas.root(cpu);
            if t == 0 {
                continue;
            }
            for l in (level + 1..=TOP).rev() {
                let e = table::at(&self.p, t)[index(virt, l)].load(Ordering::Acquire);
                if !pte::is_present(e) || e & HUGE != 0 {
                    continue 'cpus;
                }
                t = pte::addr(e);
            }
            take_out(&table::at(&self.p, t)[index(virt, level)], target);
        }
    }

    /// The CPUs whose replicas may reference the master tables that map
    /// `start..end` of `space` (the union of their sets). The caller holds
    /// the table lock and has fenced after changing entries.
    pub(super) fn holders(&self, space: &Space, start: u64, end: u64) -> CpuSet {
        let mut cpus = CpuSet::EMPTY;
        table::for_each_table(&self.p, space.root, TOP, 0, (start, end), &mut |t| {
            if let Some(set) = self.p.table_cpus(PhysAddr::new_truncate(t)) {
                cpus = cpus.union(set.load(Ordering::SeqCst));
            }
        });
        cpus
    }

    /// Frees the replicas' own tables and roots (not the master tables
    /// they link): for `destroy_space`, when no CPU runs the space.
    /// Returns how many frames went.
    pub(super) fn free_replicas(&self, space: &Space) -> u64 {
        let mut freed = 0;
        for (_, root) in space.replicas.made() {
            for pml4e in table::at(&self.p, root)[..256].iter().map(|e| e.load(Ordering::Acquire)) {
                if !pte::is_present(pml4e) {
                    continue;
                }
                let pdpt = pte::addr(pml4e);
                for pdpte in table::at(&self.p, pdpt).iter().map(|e| e.load(Ordering::Acquire)) {
                    if pte::is_present(pdpte) && pdpte & HUGE == 0 {
                        self.free_kept(pte::addr(pdpte));
                        freed += 1;
                    }
                }
                self.free_kept(pdpt);
                freed += 1;
            }
            self.free_kept(root);
            freed += 1;
        }
        freed
    }
}
