//! The kernel's physical frame allocator: `mm::phys::PhysAllocator` over
//! all memory the boot allocator did not use, with the platform hooks
//! implemented by `smp`.

use cpus::{CpuGuard, CpuSet, PerCpu};
use mm::buddy::{Link, MAX_ORDER};
use mm::frame_db::{FrameDb, FrameEntry};
use mm::magazine::Magazine;
use mm::phys::{CpuShare, PhysAllocator};
use mm::platform::{CpuPlatform, NotQuiesced};
use mm::PAGE_SIZE;
use smp::MAX_CPUS;
use spin::Once;

/// Full magazines the depot may hold before it drains to the buddy.
const DEPOT_SLOTS: usize = 2 * MAX_CPUS;

pub struct KernelPlatform;

impl CpuPlatform for KernelPlatform {
    fn cpu_index(&self) -> usize {
        smp::percpu::current_index()
    }

    fn without_interrupts<R>(&self, f: impl FnOnce(&CpuGuard) -> R) -> R {
        smp::percpu::without_interrupts(f)
    }

    /// An empty cross-call: a target runs its handler only with interrupts
    /// on or while it waits in a cross-call of its own, so never inside an
    /// interrupts-off cache access; the mailbox's release/acquire pairs
    /// order the caller's and the target's writes around it. CPUs that are
    /// not online never run allocator code (they never came up or parked
    /// before the allocator existed; the online set only grows), so they
    /// count as quiescent. Bounded by the cross-call's 5 s.
    fn quiesce(&self, targets: CpuSet) -> Result<(), NotQuiesced> {
        let targets = targets.intersect(smp::percpu::online_set()).without(smp::percpu::current_index());
        if targets.is_empty() {
            return Ok(());
        }
        smp::ipi::cross_call(targets, &|| {}).map_err(|e| NotQuiesced { cpus: e.cpus() })
    }
}

pub type Frames = PhysAllocator<'static, KernelPlatform>;

static CPU_SHARES: PerCpu<CpuShare> = cpus::per_cpu![CpuShare::new()];
static FRAMES: Once<Frames> = Once::new();

/// Whether `init` has run.
pub fn ready() -> bool {
    FRAMES.get().is_some()
}

/// The frame allocator. Panics before `init`.
pub fn get() -> &'static Frames {
    FRAMES.get().expect("frame allocator used before frames::init")
}

/// Builds the frame allocator from everything the boot allocator has left:
/// its own tables are carved from that memory first (and stay reserved).
pub fn init(phys_offset: u64, magazine_capacity: usize) -> &'static Frames {
    crate::memory::take_boot_frames(|mut boot| {
        let regions = boot.remaining();
        let lowest = regions.iter().map(|r| r.start.as_u64()).min().expect("no usable memory left");
        let highest = regions.iter().map(|r| r.end.as_u64()).max().expect("no usable memory left");
        // Buddy blocks are aligned by index, so start at an aligned PFN.
        let base = (lowest / PAGE_SIZE) & !((1 << MAX_ORDER) - 1);
        let count = (highest / PAGE_SIZE - base) as usize;
        // SAFETY: the direct map covers all RAM, and `boot` hands out each
        // frame once; these tables are never freed.
        let (entries, links, depot) = unsafe {
            (
                mm::raw::carve(&mut boot, phys_offset, count, FrameEntry::new).expect("no room for the frame database"),
                mm::raw::carve(&mut boot, phys_offset, count, || Link::EMPTY).expect("no room for buddy links"),
                mm::raw::carve(&mut boot, phys_offset, DEPOT_SLOTS, Magazine::new).expect("no room for the depot"),
            )
        };
        let usable = boot
            .remaining()
            .iter()
            .map(|r| (r.start.as_u64() / PAGE_SIZE - base) as usize..(r.end.as_u64() / PAGE_SIZE - base) as usize);
        let db = FrameDb::new(mm::frame::PhysAddr::new(base * PAGE_SIZE), entries);
        FRAMES.call_once(|| {
            PhysAllocator::new(db, links, usable, CPU_SHARES.as_ref(), magazine_capacity, depot, KernelPlatform)
        })
    })
}
