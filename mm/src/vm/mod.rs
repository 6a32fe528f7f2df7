//! Virtual memory: address spaces over four-level page tables, the mapping
//! API (the seed API's `map_single`/`map_get`/`umap_single`/`vmfind`/
//! `vmalloc`/`vmfree` and Zephyr's `k_mem_map`/`k_mem_unmap`/`phys_map`),
//! TLB shootdown before any frame is reused, and a page-table audit.
//!
//! The code is portable: page tables are reached through `VmPlatform`,
//! which the kernel implements with the direct map and `smp`, and host
//! tests with a vector of frames.
//!
//! Concurrency: leaf entries change only by compare-and-swap, intermediate
//! tables are installed by compare-and-swap, so CPUs map and unmap in one
//! space at once under a shared (read) lock. Freeing empty tables takes the
//! space's lock exclusively, and only opportunistically (`try_write`), so
//! no mapper ever waits behind a pruner for more than one prune; a mapper
//! that does wait answers shootdowns meanwhile (`table_lock`), since the
//! pruner holds the lock across one. An unmap leaves markers stamped with
//! its own identity (`marker`) and finishes only those.

mod active;
mod audit;
pub mod counts;
#[cfg(test)]
mod counts_tests;
mod current;
pub(crate) mod demand;
mod direct;
#[cfg(any(test, feature = "test-hooks"))]
mod inject;
mod kmem;
mod mapping;
pub(crate) mod marker;
pub mod pte;
#[cfg(test)]
mod race_tests;
pub mod region;
mod replica;
#[cfg(test)]
mod same_page_tests;
#[cfg(test)]
pub(crate) mod shootdown_gate;
pub(crate) mod space;
pub(crate) mod table;
pub mod table_lock;
mod targets;
#[cfg(test)]
pub(crate) mod testing;
#[cfg(test)]
mod tests;
#[cfg(test)]
pub(crate) mod tlb_sim;
#[cfg(test)]
mod tlb_sim_tests;
pub(crate) mod unmap;
mod wait;

pub use active::Active;
pub use audit::{AuditReport, PtViolation};
pub use counts::VmCountSnapshot;
pub(crate) use demand::DemandPaging;
pub use direct::DirectWindow;
pub use kmem::{region_align, KMemFlags};
pub use mapping::Vm;
pub use pte::{CacheMode, Flags, PageSize};
pub use space::{AddressSpace, Space, SpaceKind};
pub use table::Table;
pub use wait::Waited;

use cpus::{AtomicCpuSet, CpuSet};

use crate::frame::{Frame, FrameError, PhysAddr};
pub use x86_64::VirtAddr;

pub use crate::PAGE_SIZE;

/// User halves: everything below the canonical hole, except the null page.
pub const USER_START: u64 = PAGE_SIZE;
pub const USER_END: u64 = 0x0000_8000_0000_0000;
/// Kernel half: the kernel's own mapping area, PML4 entry 510 (the
/// bootloader's mappings and the direct map sit below it).
pub const KERNEL_AREA_START: u64 = 0xFFFF_FF00_0000_0000;
/// CPU stacks, each below an unmapped guard page: 1 GiB.
pub const STACK_AREA: core::ops::Range<u64> = KERNEL_AREA_START..KERNEL_AREA_START + (1 << 30);
/// Where the seed API (`map_single`, `vmalloc`, ...) maps in the kernel
/// space: 1 GiB.
pub const KERNEL_SEED_AREA: core::ops::Range<u64> = STACK_AREA.end..STACK_AREA.end + (1 << 30);
/// `k_mem_map` and `phys_map` regions, from the region allocator: the
/// rest of PML4 entry 510.
pub const KERNEL_REGION_AREA: core::ops::Range<u64> = KERNEL_SEED_AREA.end..KERNEL_AREA_START + (1 << 39);

/// What the virtual-memory code needs from the machine.
pub trait VmPlatform: Sync {
    /// The page table held by frame `phys`. Tables are arrays of atomics,
    /// so any number of references to one may exist; only `Vm`'s walks
    /// call this (`Vm::platform` is crate-private) and they name only
    /// frames they installed as tables.
    fn table(&self, phys: PhysAddr) -> &Table;
    /// Fills `frame` with `byte` (zeroing, poisoning); holding it proves
    /// nobody else uses it.
    fn fill_frame(&self, frame: &mut Frame, byte: u8);
    /// Copies frame `from` into frame `to` (distinct: `to` is borrowed
    /// mutably).
    fn copy_frame(&self, from: &Frame, to: &mut Frame);
    fn alloc_frame(&self) -> Result<Frame, FrameError>;
    fn free_frame(&self, frame: Frame) -> Result<(), FrameError>;
    /// The CPU set kept with page-table frame `table`
    /// (`FrameEntry::table_cpus`): which CPUs' replicas reference it.
    /// `None` for a frame the frame database does not cover (tables made
    /// at boot, which are the kernel space's and need no set).
    fn table_cpus(&self, table: PhysAddr) -> Option<&AtomicCpuSet>;
    /// Index of the running CPU, `0..MAX_CPUS`.
    fn cpu_index(&self) -> usize;
    /// The online CPUs.
    fn online_cpus(&self) -> CpuSet;
    /// Invalidates `pages` pages from `start` on every CPU in `targets`
    /// (the caller too when it is in the set) and returns once all have.
    fn shootdown(&self, targets: CpuSet, start: VirtAddr, pages: u64) -> Result<(), ShootdownFailed>;
    /// Makes `root` the running CPU's page-table root (CR3). Only `Vm`
    /// makes a [`Root`], so an implementation may rely on what it says.
    fn load_root(&self, root: &Root);
    /// Frames the allocator has free (for the paging reserve).
    fn free_frames(&self) -> u64;
    /// Nanoseconds from a monotonic clock (timing and wait bounds).
    fn now_ns(&self) -> u64;
    /// One step of a wait on another CPU, `waited` steps into it: runs
    /// the cross-calls (TLB shootdowns) aimed at this CPU, then gives the
    /// CPU a moment (the kernel: nothing for the first steps, then a nap
    /// that answers IPIs, so the core goes to the CPU waited for). Waits
    /// with interrupts off use it, so no CPU ever waits with requests to
    /// it unanswered; a caller must tolerate interrupt handlers running in
    /// it (the kernel's nap enables interrupts inside `sti; hlt`).
    fn wait_step(&self, waited: Waited);
    /// Runs `f` with interrupts off on this CPU. The paging code runs so:
    /// a CPU answers a shootdown only between walks, which is what keeps
    /// the page tables it walks from being freed under it (tables are freed
    /// only after a shootdown to every CPU).
    fn without_interrupts<R>(&self, f: impl FnOnce() -> R) -> R;
}

/// A PML4 that `Vm` built (`new_user_space`: the kernel's upper half
/// copied in) or adopted (the kernel space's, the one running at boot):
/// loading it keeps the kernel's code, stacks and data mapped. Only mm
/// makes one, for the moment of a `load_root`.
pub struct Root {
    phys: PhysAddr,
}

impl Root {
    pub(crate) fn new(phys: u64) -> Root {
        Root { phys: PhysAddr::new(phys) }
    }

    pub fn phys(&self) -> PhysAddr {
        self.phys
    }
}

/// A shootdown that did not complete: CPUs in `cpus` may still hold the
/// translation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShootdownFailed {
    pub cpus: CpuSet,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VmError {
    /// An address or size that must be page-aligned is not.
    NotAligned {
        value: u64,
    },
    /// A size (or page count) of zero.
    ZeroSize,
    /// The range wraps, or leaves the part of the space the call may use.
    BadRange {
        start: u64,
        len: u64,
    },
    /// The null page is never mapped.
    NullPage,
    /// A physical address an entry cannot hold, or outside the direct map.
    BadPhys {
        phys: u64,
    },
    /// A virtual address outside the direct map (`DirectWindow::phys`).
    NotDirectMapped {
        virt: u64,
    },
    AlreadyMapped {
        virt: u64,
    },
    NotMapped {
        virt: u64,
    },
    /// The mapping at `virt` has another size class than the call named.
    SizeMismatch {
        virt: u64,
        mapped: PageSize,
    },
    /// `vmfree` of a page `vmalloc` did not map (its frame is not ours).
    NotOwned {
        virt: u64,
    },
    /// `k_mem_unmap`/`phys_unmap` of a range that is not exactly one
    /// region `k_mem_map`/`phys_map` made.
    NotARegion {
        addr: u64,
        size: u64,
    },
    /// `USER` together with `UNINIT`: user code must never see old data.
    UserUninit,
    OutOfVirtualSpace,
    OutOfFrames,
    /// Destroying a space that is still active on some CPU.
    SpaceActive {
        cpus: CpuSet,
    },
    /// The mapping is gone but CPUs in `cpus` did not confirm the flush;
    /// its frames (and its address range) are kept out of use for good
    /// (quarantined). A frame `umap_single` would have handed back is
    /// held too: the caller must not reuse it.
    Shootdown {
        cpus: CpuSet,
    },
    /// A space's table lock stayed held past its bound
    /// (`table_lock::TABLE_WAIT_NS`).
    TablesBusy,
    /// An on-demand mapping of `pages` pages would commit more than RAM
    /// for paging plus the backing store can hold (`available` pages).
    CommitLimit {
        pages: u64,
        available: u64,
    },
    /// `protect` of an on-demand page (map it with `LOCK` instead).
    Pageable {
        virt: u64,
    },
    /// A page of the range stayed busy (paging in or out) past the wait
    /// bound.
    Busy {
        virt: u64,
    },
}

impl From<ShootdownFailed> for VmError {
    fn from(e: ShootdownFailed) -> VmError {
        VmError::Shootdown { cpus: e.cpus }
    }
}
