//! Who a shootdown goes to: every online CPU for the kernel space; for a
//! user space, the CPUs whose replicas reach the range (`replica`) and that
//! run the space now. Invariant 8 is kept here: callers have changed
//! entries, the fence comes before any set is read.

use core::sync::atomic::{fence, Ordering};

use cpus::CpuSet;

use super::mapping::Vm;
use super::space::{Space, SpaceKind};
use super::{ShootdownFailed, VmPlatform, PAGE_SIZE};

impl<P: VmPlatform> Vm<P> {
    /// CPUs that may cache translations of `space` (any of them).
    pub fn shootdown_targets(&self, space: &Space) -> CpuSet {
        match space.kind() {
            SpaceKind::Kernel => self.p.online_cpus(),
            SpaceKind::User => space.active_cpus(),
        }
    }

    /// CPUs that may cache translations of `pages` pages from `start` in
    /// `space`: every online CPU for the kernel space; for a user space
    /// those whose replicas reference the tables mapping the range
    /// (`replica`) and that run the space now. The caller holds the table
    /// lock (the walk reads master tables) and has fenced.
    fn range_targets(&self, space: &Space, start: u64, pages: u64) -> CpuSet {
        match space.kind() {
            SpaceKind::Kernel => self.p.online_cpus(),
            SpaceKind::User => {
                let end = start.saturating_add(pages.saturating_mul(PAGE_SIZE));
                let holders = self.holders(space, start, end);
                let me = self.p.cpu_index();
                if holders.without(me).is_empty() {
                    // Only this CPU's replica reaches the range (the common
                    // case: a CPU unmapping in its own window). It holds
                    // the range only if it runs the space, which its own
                    // slot says: no load of the active set, a line other
                    // CPUs write whenever they nap (four loads per unmap
                    // were most of vm.local's conflicting accesses).
                    return match holders.contains(me) && self.current.runs(me, space) {
                        true => CpuSet::single(me),
                        false => CpuSet::EMPTY,
                    };
                }
                holders.intersect(space.active_cpus())
            }
        }
    }

    /// Shoots `pages` pages from `start` down on every CPU that may cache
    /// them. Callers have just changed entries or detached tables.
    ///
    /// Invariant 8: the fence keeps the load of the active set (or the
    /// online set) from being satisfied before those changes are visible.
    /// x86-TSO lets a load pass an earlier plain store (`prune` detaches a
    /// table with one); without the fence, a CPU could join the set
    /// (`activate`: a locked `fetch_or`, a full barrier, then CR3) and walk
    /// the old parent entry while this load still reads the set without
    /// it, and the table would be freed under that CPU's paging-structure
    /// cache. With it, either this load sees the CPU (it is shot down), or
    /// the CPU's `fetch_or` comes later in the total order of fences and
    /// locked operations, so its walk after loading CR3 sees the change.
    ///
    /// The caller holds the table lock, so the walk of a user space's
    /// tables for its targets is safe.
    pub(crate) fn shoot_down(&self, space: &Space, start: u64, pages: u64) -> Result<(), ShootdownFailed> {
        fence(Ordering::SeqCst);
        let targets = self.range_targets(space, start, pages);
        self.shoot_down_to(targets, start, pages)
    }

    /// Shoots `pages` pages from `start` down on `targets`.
    pub(super) fn shoot_down_to(&self, targets: CpuSet, start: u64, pages: u64) -> Result<(), ShootdownFailed> {
        if targets.is_empty() {
            return Ok(()); // active nowhere: no TLB can hold it (no PCIDs)
        }
        // Every range here was checked against the space's areas (or is one
        // of them), so it is canonical; were it not, no CPU could be asked,
        // as when smp refuses a bad range.
        match super::VirtAddr::try_new(start) {
            Ok(first) => self.p.shootdown(targets, first, pages),
            Err(_) => Err(ShootdownFailed { cpus: targets }),
        }
    }
}
