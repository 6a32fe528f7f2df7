//! The one way the mapping code reaches demand paging. `vm` defines this
//! hook and `paging` implements it, so the dependency runs one way: paging
//! builds on the mapping code, and the mapping code never names paging's
//! types (tokens, the pager, the store).

use core::any::Any;

use super::kmem::KMemFlags;
use super::mapping::Vm;
use super::{VmError, VmPlatform};

/// What `k_mem_map`, `k_mem_unmap` and `protect` ask of demand paging once
/// it is on (`Vm::demand`).
pub(crate) trait DemandPaging<P: VmPlatform>: Send + Sync {
    /// `k_mem_map` of `size` bytes of on-demand pages (`flags` without
    /// `LOCK`) in the region area of `vm`, which holds this hook.
    fn k_mem_map(&self, vm: &Vm<P>, size: u64, flags: KMemFlags) -> Result<u64, VmError>;

    /// Whether entry `e` is a page demand paging keeps, in any state
    /// (resident, paged out, busy): present or not, it is there.
    fn holds_page(&self, e: u64) -> bool;

    /// Unmaps `pages` pages of a `k_mem_map` region from `virt`, whatever
    /// their paging state; frames go after the shootdown.
    fn unmap_kmem_pages(&self, vm: &Vm<P>, virt: u64, pages: u64) -> Result<(), VmError>;

    /// The implementation itself, for the paging code to find its own
    /// state again (`Paging::of`).
    fn as_any(&self) -> &dyn Any;
}
