//! `Vm`: the kernel space, user spaces, and the seed API over them
//! (`map_single`, `map_get`, `umap_single`, `protect`, `vmfind`,
//! `vmalloc`, `vmfree`).
//!
//! Every removal or downgrade of a translation follows one order: change
//! the entries, detach tables that became empty, shoot the range down on
//! every CPU that may cache it, and only then free frames and tables. If
//! the shootdown fails, the frames are quarantined (never reused).

use core::sync::atomic::{fence, AtomicU64, AtomicU8, Ordering};
use cpus::CachePadded;

use alloc::vec::Vec;

use super::active::Active;
use super::demand::DemandPaging;
#[cfg(any(test, feature = "test-hooks"))]
use super::inject::Inject;
use super::marker::FrameTo;
use super::pte::{self, CacheMode, Flags, PageSize, HUGE, SW_OWNED, SW_PINNED};
use super::region::{RegionKind, Regions};
use super::space::{check_range_in, AddressSpace, Space, SpaceKind};
use super::table::{self, Lookup, TOP};
use super::{VmError, VmPlatform, KERNEL_AREA_START, KERNEL_REGION_AREA, PAGE_SIZE, STACK_AREA};
use cpus::PerCpu;

use crate::frame::{Frame, PhysAddr};

/// What `map_get` finds at an address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Translation {
    /// The physical address `virt` translates to (page offset included).
    pub phys: PhysAddr,
    pub flags: Flags,
    pub size: PageSize,
    pub cache: CacheMode,
    /// Made with `LOCK`: the frame is pinned.
    pub pinned: bool,
}

pub struct Vm<P: VmPlatform> {
    pub(crate) p: P,
    kernel: Space,
    /// Demand paging, once enabled (the hook `paging` installs).
    demand: spin::Once<alloc::boxed::Box<dyn DemandPaging<P>>>,
    /// The kernel's region allocator: written by every region map and
    /// unmap, so on a line of its own, away from `demand` and the kernel
    /// space's `root`, which every fault reads (the sharing tracer showed 7
    /// conflicting reads per `fault.anon` fault on the shared line).
    pub(super) regions: CachePadded<Regions>,
    /// Test hook: fails a chosen allocation (only in test builds).
    #[cfg(any(test, feature = "test-hooks"))]
    pub(super) inject: Inject,
    next_stack: AtomicU64,
    /// Pages held back by markers whose shootdown failed.
    quarantined: AtomicU64,
    /// Per CPU: how many unmap operations it began (`marker`'s stamps).
    pub(super) unmap_generation: PerCpu<AtomicU8>,
    /// Per CPU: tables allocated, zeroed, freed; table-lock acquisitions.
    counts: super::counts::VmCounts,
    /// Per CPU: the user space it runs (`current`).
    pub(super) current: super::current::Current,
}

impl<P: VmPlatform> Vm<P> {
    /// Adopts the page tables at `root` (the running ones) as the kernel
    /// space and gives the kernel area's PML4 entry a table, so that every
    /// user space created later shares it.
    pub fn new(p: P, root: PhysAddr) -> Result<Vm<P>, VmError> {
        let root = root.as_u64();
        let vm = Vm {
            p,
            kernel: Space::new(root, SpaceKind::Kernel),
            demand: spin::Once::new(),
            regions: CachePadded::new(Regions::new(KERNEL_REGION_AREA)),
            #[cfg(any(test, feature = "test-hooks"))]
            inject: Inject::new(),
            next_stack: AtomicU64::new(STACK_AREA.start),
            quarantined: AtomicU64::new(0),
            unmap_generation: cpus::per_cpu![AtomicU8::new(0)],
            counts: super::counts::VmCounts::new(),
            current: super::current::Current::new(),
        };
        // `new` runs once, at boot, on the bootstrap CPU (index 0).
        table::entry_for(&vm.p, root, KERNEL_AREA_START, TOP - 1, vm.counts.running(0), &mut || vm.alloc())?;
        Ok(vm)
    }

    /// The platform, for mm's tests only: it reaches any frame by address
    /// and loads CR3. What others need of it has a narrow method here
    /// (`fill_frame`, `free_frames`; a RAM store comes from `RamStore::over`).
    #[cfg(test)]
    pub(crate) fn platform(&self) -> &P {
        &self.p
    }

    /// Fills a frame the caller owns with `byte` (zeroing, poisoning).
    pub fn fill_frame(&self, frame: &mut Frame, byte: u8) {
        self.p.fill_frame(frame, byte);
    }

    /// Frames the allocator has free.
    pub fn free_frames(&self) -> u64 {
        self.p.free_frames()
    }

    /// Gives back a frame this `Vm` kept by address only (a mapping's or a
    /// table's, out of an entry or a marker), once nothing reaches it.
    pub(crate) fn free_kept(&self, phys: u64) {
        let _ = self.p.free_frame(self.adopt_kept(phys));
    }

    /// The handle of a frame this `Vm` keeps by address and takes back out
    /// of the entry, marker or victim record that held it: a mapping's
    /// frame after its unmap and shootdown, a table after its prune, an
    /// evicted page's frame. Crate-private: only mm's own bookkeeping
    /// knows which addresses these are.
    // Turns an address this `Vm` kept in an entry back into its handle.
    #[allow(unsafe_code)]
    pub(crate) fn adopt_kept(&self, phys: u64) -> Frame {
        // SAFETY: callers pass a frame this Vm owned by address (allocated
        // through `alloc` and stored in an entry, marker or victim record
        // it has taken it out of), so nobody else holds or uses it; the
        // frame database still rejects anything else when it is freed.
        unsafe { Frame::from_phys(PhysAddr::new(phys)) }
    }

    /// Runs `f` with a handle to a frame this `Vm` keeps by address and
    /// goes on keeping (a resident page being written out): the handle
    /// lives only for the call.
    pub(crate) fn with_kept<R>(&self, phys: u64, f: impl FnOnce(&mut Frame) -> R) -> R {
        let mut frame = self.adopt_kept(phys);
        let r = f(&mut frame);
        let _ = frame.into_phys();
        r
    }

    pub fn kernel(&self) -> &Space {
        &self.kernel
    }

    /// Demand paging's hook, once it is on.
    pub(crate) fn demand(&self) -> Option<&dyn DemandPaging<P>> {
        self.demand.get().map(|d| &**d)
    }

    /// Installs demand paging's hook; false (and `d` dropped) if one is
    /// there already.
    pub(crate) fn set_demand(&self, d: alloc::boxed::Box<dyn DemandPaging<P>>) -> bool {
        let mut fresh = false;
        self.demand.call_once(|| {
            fresh = true;
            d
        });
        fresh
    }

    /// The fault-injection switch (a test hook).
    #[cfg(any(test, feature = "test-hooks"))]
    pub fn inject(&self) -> &Inject {
        &self.inject
    }

    /// Pages kept out of use for good because their shootdown did not
    /// complete: exactly the quarantined markers in the tables (their
    /// tables stay too, and no sweep takes them).
    pub fn quarantined_frames(&self) -> u64 {
        self.quarantined.load(Ordering::Relaxed)
    }

    pub(super) fn quarantine(&self, frames: u64) {
        self.quarantined.fetch_add(frames, Ordering::Relaxed);
    }

    /// Page tables mapping the kernel's `k_mem_map` area. Emptied tables
    /// may stay for reuse (a prune skips a table while another unmap's
    /// markers are in it), so a ledger of frames must count them.
    pub fn region_table_frames(&self) -> Result<u64, VmError> {
        let _shared = self.shared(&self.kernel)?;
        let area = super::KERNEL_REGION_AREA;
        Ok(table::count_tables(&self.p, self.kernel.root, table::TOP, 0, (area.start, area.end)))
    }

    /// What CPU `cpu` counted (`counts`).
    pub fn counts(&self, cpu: usize) -> super::VmCountSnapshot {
        self.counts.cpu(cpu).snapshot()
    }

    /// The running CPU's counters.
    pub(crate) fn my_counts(&self) -> &super::counts::CpuVmCounts {
        self.counts.running(self.p.cpu_index())
    }

    /// The shared side of `space`'s table lock, counted for this CPU.
    pub(crate) fn shared<'s>(&self, space: &'s Space) -> Result<super::table_lock::Shared<'s>, VmError> {
        space.tables.read(&self.p, &self.my_counts().table_lock)
    }

    /// Bytes of kernel virtual regions in use.
    pub fn region_bytes(&self) -> u64 {
        self.regions.used_bytes()
    }

    /// A frame for a mapping or a page table (subject to fault injection).
    pub(crate) fn alloc(&self) -> Result<Frame, VmError> {
        #[cfg(any(test, feature = "test-hooks"))]
        if self.inject.should_fail(self.p.cpu_index()) {
            return Err(VmError::OutOfFrames);
        }
        self.p.alloc_frame().map_err(|_| VmError::OutOfFrames)
    }

    // ---- spaces ----

    /// A new user space: an empty lower half and the kernel's upper half
    /// (its master tree; CPUs that run it get replicas of their own).
    pub fn new_user_space(&self) -> Result<AddressSpace, VmError> {
        Ok(AddressSpace::new_user(self.new_root()?))
    }

    /// A fresh PML4: an empty lower half and the kernel's upper half.
    pub(super) fn new_root(&self) -> Result<u64, VmError> {
        let mut root = self.alloc()?;
        self.p.fill_frame(&mut root, 0);
        let root = root.into_phys().as_u64();
        let counts = self.my_counts();
        counts.table_allocated();
        counts.table_zeroed();
        let (k, u) = (super::table::at(&self.p, self.kernel.root), super::table::at(&self.p, root));
        for i in 256..512 {
            u[i].store(k[i].load(Ordering::Relaxed), Ordering::Relaxed);
        }
        Ok(root)
    }

    /// Frees a user space's tables, its root and the frames its mappings
    /// own. It must not be active on any CPU.
    // The space comes back on failure, whole: a few lines big since its
    // written fields keep off the line of the root every walk reads.
    #[allow(clippy::result_large_err)]
    pub fn destroy_space(&self, space: AddressSpace) -> Result<(), (VmError, AddressSpace)> {
        let cpus = space.active_cpus();
        // A CPU that runs the space holds a reference to it (`current`),
        // napping ones (out of the active set) and leaked guards too.
        if space.kind() == SpaceKind::Kernel || !cpus.is_empty() || alloc::sync::Arc::strong_count(&space.0) > 1 {
            return Err((VmError::SpaceActive { cpus }, space));
        }
        let (mut tables, mut owned) = (Vec::new(), Vec::new());
        table::collect_all(&self.p, space.root, TOP, 0, (super::USER_START, super::USER_END), &mut tables, &mut owned);
        let replicas = self.free_replicas(&space);
        self.my_counts().tables_freed(tables.len() as u64 + 1 + replicas);
        for f in owned.into_iter().chain(tables).chain([space.root]) {
            self.free_kept(f);
        }
        Ok(())
    }

    /// Runs `space` on this CPU (loads its root: for a user space, this
    /// CPU's replica, made at its first activation here, hence
    /// `OutOfFrames`) until the guard is dropped, which goes back to the
    /// kernel space (`Active`).
    pub fn activate<'a>(&'a self, space: &'a AddressSpace) -> Result<Active<'a, P>, VmError> {
        Active::new(self, space)
    }

    // ---- the seed API ----

    /// Maps one page of size class `size` at `virt` to `phys`. The caller
    /// keeps owning the frame (`umap_single` hands it back). `map_frame`
    /// is the safe form for a frame the caller holds.
    ///
    /// # Safety
    /// Whoever runs in `space` may read (and with `WRITE` write) physical
    /// `phys .. phys + size` for as long as it stays mapped: it is memory
    /// the caller owns and does not give back (free) before `umap_single`
    /// returns, or device memory it may hand out. (A `PhysAddr` is below
    /// 2^52, so every one fits an entry: only alignment is checked.)
    // Maps any physical address: the caller vouches it may be reached.
    #[allow(unsafe_code)]
    pub unsafe fn map_single(
        &self,
        space: &Space,
        virt: u64,
        phys: PhysAddr,
        flags: Flags,
        size: PageSize,
    ) -> Result<(), VmError> {
        let phys = phys.as_u64();
        let bytes = size.bytes();
        if !virt.is_multiple_of(bytes) {
            return Err(VmError::NotAligned { value: virt });
        }
        check_phys(phys, bytes, bytes)?;
        space.check_range(virt, bytes / PAGE_SIZE)?;
        let huge = if size == PageSize::Size4K { 0 } else { HUGE };
        let install = || {
            let _shared = self.shared(space)?;
            self.install(space, virt, phys | flags.pte_bits() | huge, size.level())
        };
        match install() {
            // Unmaps leave emptied tables until a sweep: one may be in the
            // way of the huge page. Sweep its range (no lock held) and try
            // once more.
            Err(VmError::AlreadyMapped { .. })
                if huge != 0 && self.sweep_range(space, (virt, virt + bytes))?.is_some_and(|n| n > 0) =>
            {
                install()
            }
            r => r,
        }
    }

    /// Maps `frame` at `virt` (4 KiB) and keeps it: the entry owns the
    /// frame (as `vmalloc`'s do) until `umap_owned` hands it back, or
    /// `vmfree` frees it. On failure the frame comes back with the error.
    pub fn map_frame(&self, space: &Space, virt: u64, frame: Frame, flags: Flags) -> Result<(), (VmError, Frame)> {
        if !virt.is_multiple_of(PAGE_SIZE) {
            return Err((VmError::NotAligned { value: virt }, frame));
        }
        if let Err(e) = space.check_range(virt, 1) {
            return Err((e, frame));
        }
        let mapped = self
            .shared(space)
            .and_then(|_shared| self.install(space, virt, frame.phys().as_u64() | flags.pte_bits() | SW_OWNED, 0));
        match mapped {
            Ok(()) => {
                let _ = frame.into_phys();
                Ok(())
            }
            Err(e) => Err((e, frame)),
        }
    }

    /// Sets the entry at `level` for `virt` to `value` if it is empty,
    /// creating tables on the way. Holds no lock itself.
    pub(crate) fn install(&self, space: &Space, virt: u64, value: u64, level: usize) -> Result<(), VmError> {
        let entry = table::entry_for(&self.p, space.root, virt, level, self.my_counts(), &mut || self.alloc())?;
        if level > 0 {
            // A table below this entry means smaller pages may be mapped.
            let e = entry.load(Ordering::Acquire);
            if pte::is_present(e) && e & HUGE == 0 {
                return Err(VmError::AlreadyMapped { virt });
            }
        }
        entry
            .compare_exchange(0, value, Ordering::AcqRel, Ordering::Relaxed)
            .map(|_| ())
            .map_err(|_| VmError::AlreadyMapped { virt })
    }

    /// What `virt` translates to in `space`, any size class.
    pub fn map_get(&self, space: &Space, virt: u64) -> Result<Translation, VmError> {
        // Shared: a sweep must not free a table this walk is reading.
        let _shared = self.shared(space)?;
        self.translation(space, virt)
    }

    /// `map_get` for a caller that holds the table lock.
    fn translation(&self, space: &Space, virt: u64) -> Result<Translation, VmError> {
        match table::lookup(&self.p, space.root, virt, 0) {
            Lookup::Entry { entry, level } => {
                let e = entry.load(Ordering::Acquire);
                if !pte::is_present(e) {
                    return Err(VmError::NotMapped { virt });
                }
                let size = PageSize::at_level(level);
                // In huge entries bit 12 is the PAT bit, not address.
                let base = if level == 0 { pte::addr(e) } else { pte::addr(e) & !(size.bytes() - 1) };
                Ok(Translation {
                    // An entry holds at most 52 address bits.
                    phys: PhysAddr::new_truncate(base + (virt & (size.bytes() - 1))),
                    flags: Flags::from_pte(e),
                    size,
                    cache: CacheMode::from_pte(e),
                    pinned: e & SW_PINNED != 0,
                })
            }
            Lookup::NoTable => Err(VmError::NotMapped { virt }),
        }
    }

    /// Unmaps the page of size class `size` at `virt` and returns its
    /// frame, after every CPU that may cache it has dropped it.
    pub fn umap_single(&self, space: &Space, virt: u64, size: PageSize) -> Result<PhysAddr, VmError> {
        // An entry holds at most 52 address bits.
        self.umap_checked(space, virt, size, &|_| Ok(())).map(PhysAddr::new_truncate)
    }

    /// `umap_single` of a page `vmalloc` mapped (`NotOwned` otherwise,
    /// changing nothing): the mapping owned its frame, so the caller gets
    /// the frame's handle and gives it back (`free_page`) itself.
    pub fn umap_owned(&self, space: &Space, virt: u64, size: PageSize) -> Result<Frame, VmError> {
        let phys = self.umap_checked(space, virt, size, &|e| match e & SW_OWNED {
            0 => Err(VmError::NotOwned { virt }),
            _ => Ok(()),
        })?;
        Ok(self.adopt_kept(phys))
    }

    /// `umap_single`, refusing (with `check`'s error, before anything
    /// changes) an entry `check` rejects.
    fn umap_checked(
        &self,
        space: &Space,
        virt: u64,
        size: PageSize,
        check: &dyn Fn(u64) -> Result<(), VmError>,
    ) -> Result<u64, VmError> {
        let bytes = size.bytes();
        if !virt.is_multiple_of(bytes) {
            return Err(VmError::NotAligned { value: virt });
        }
        space.check_range(virt, bytes / PAGE_SIZE)?;
        let (old, op) = {
            let _shared = self.shared(space)?;
            let t = self.translation(space, virt)?;
            if t.size != size {
                return Err(VmError::SizeMismatch { virt, mapped: t.size });
            }
            let op = self.begin_unmap();
            let Lookup::Entry { entry, level } = table::lookup(&self.p, space.root, virt, size.level()) else {
                return Err(VmError::NotMapped { virt });
            };
            let mut e = entry.load(Ordering::Acquire);
            let old = loop {
                // Re-check under the lock: the mapping may have changed
                // since `map_get` (a table now where a huge page was), or
                // a concurrent unmap won.
                let leaf = level == size.level() && (level == 0 || e & HUGE != 0);
                if !pte::is_present(e) || !leaf {
                    return Err(VmError::NotMapped { virt });
                }
                check(e)?;
                // The caller takes the frame back: the marker does not own it.
                match entry.compare_exchange(
                    e,
                    op.marker(e, bytes, FrameTo::Caller),
                    Ordering::AcqRel,
                    Ordering::Acquire,
                ) {
                    Ok(_) => break e,
                    Err(now) => e = now, // accessed/dirty bits, or a protect
                }
            };
            if space.kind() == SpaceKind::User && size != PageSize::Size4K {
                // Replicas copied the huge leaf: take the copies out before
                // the shootdown (after a fence: `replica`'s ordering).
                fence(Ordering::SeqCst);
                let holders = self.holders(space, virt, virt + bytes);
                self.unlink(space, holders, virt, size.level(), old);
            }
            (old, op)
        };
        self.finish_unmap(space, op, virt, 1, size)?;
        // In huge entries bit 12 is the PAT bit, not address.
        Ok(pte::addr(old) & !(bytes - 1))
    }

    /// Changes the access of `npages` mapped 4 KiB pages from `virt` and
    /// shoots them down, so a downgrade holds on every CPU on return.
    pub fn protect(&self, space: &Space, virt: u64, npages: u64, flags: Flags) -> Result<(), VmError> {
        check_range_in(space.protectable(), virt, npages)?;
        let shared = self.shared(space)?;
        // The pager owns the permissions of on-demand pages (their tokens
        // keep them too): those are mapped with LOCK when they need protect.
        // The walk also refuses holes and huge pages, paging on or off.
        let demand = self.demand();
        self.for_each_leaf(space, virt, npages, &mut |va, _, e| match demand.is_some_and(|d| d.holds_page(e)) {
            false => Ok(()),
            true => Err(VmError::Pageable { virt: va }),
        })?;
        let keep =
            pte::ADDR_MASK | pte::SW_OWNED | pte::SW_PINNED | pte::SW_DEVICE | pte::WRITE_THROUGH | pte::CACHE_DISABLE;
        for i in 0..npages {
            let Lookup::Entry { entry, level: 0 } = table::lookup(&self.p, space.root, virt + i * PAGE_SIZE, 0) else {
                continue;
            };
            let mut e = entry.load(Ordering::Acquire);
            // Loop: the CPU may set accessed/dirty bits meanwhile. A page a
            // racing unmap took is a marker: it gets the new access too,
            // so that an unmap that loses a race and puts the page back
            // puts it back downgraded.
            loop {
                let new = if pte::is_present(e) {
                    (e & keep) | flags.pte_bits()
                } else if super::marker::is_marker(e) {
                    super::marker::with_access(e, flags.pte_bits())
                } else {
                    break;
                };
                match entry.compare_exchange_weak(e, new, Ordering::AcqRel, Ordering::Acquire) {
                    Ok(_) => break,
                    Err(now) => e = now,
                }
            }
        }
        // Under the lock still: a user space's targets come from a walk.
        let flushed = self.shoot_down(space, virt, npages);
        drop(shared);
        Ok(flushed?)
    }

    /// The first `npages` unmapped pages in `from..to` of `space`.
    pub fn vmfind(&self, space: &Space, from: u64, to: u64, npages: u64) -> Result<u64, VmError> {
        if !from.is_multiple_of(PAGE_SIZE) || !to.is_multiple_of(PAGE_SIZE) {
            return Err(VmError::NotAligned { value: if !from.is_multiple_of(PAGE_SIZE) { from } else { to } });
        }
        let area = space.mappable();
        let (from, to) = (from.max(area.start), to.min(area.end));
        if npages == 0 {
            return Err(VmError::ZeroSize);
        }
        let len = npages.checked_mul(PAGE_SIZE).ok_or(VmError::OutOfVirtualSpace)?;
        let _shared = self.shared(space)?;
        let mut start = from;
        while let Some(end) = start.checked_add(len).filter(|&e| e <= to) {
            match table::first_used(&self.p, space.root, start, end) {
                None => return Ok(start),
                Some(used_end) => start = used_end,
            }
        }
        Err(VmError::OutOfVirtualSpace)
    }

    /// Finds `npages` free pages in `from..to`, backs them with fresh
    /// zeroed frames and maps them with `flags`. All or nothing.
    pub fn vmalloc(&self, space: &Space, from: u64, to: u64, npages: u64, flags: Flags) -> Result<u64, VmError> {
        // Two CPUs may find the same range; the loser sees AlreadyMapped
        // part-way, rolls back and looks again.
        for _ in 0..16 {
            let virt = self.vmfind(space, from, to, npages)?;
            match self.populate(space, virt, npages, flags.pte_bits() | SW_OWNED, Contents::Zeroed) {
                Err(VmError::AlreadyMapped { .. }) => continue,
                r => return r.map(|_| virt),
            }
        }
        Err(VmError::OutOfVirtualSpace)
    }

    /// Maps `npages` fresh frames from `virt` with entry bits `bits`,
    /// zeroed if `zero`. On any failure undoes what it did.
    pub(super) fn populate(
        &self,
        space: &Space,
        virt: u64,
        npages: u64,
        bits: u64,
        contents: Contents,
    ) -> Result<(), VmError> {
        let shared = self.shared(space)?;
        for i in 0..npages {
            let va = virt + i * PAGE_SIZE;
            let done = self.alloc().and_then(|mut frame| {
                if contents == Contents::Zeroed {
                    self.p.fill_frame(&mut frame, 0);
                }
                match self.install(space, va, frame.phys().as_u64() | bits, 0) {
                    // The entry owns it now (`SW_OWNED`).
                    Ok(()) => {
                        let _ = frame.into_phys();
                        Ok(())
                    }
                    Err(e) => {
                        let _ = self.p.free_frame(frame);
                        Err(e)
                    }
                }
            });
            if let Err(e) = done {
                // Undo the pages mapped so far (none if i is 0: then only
                // tables made on the way go, still after a shootdown,
                // since a CPU may have cached an entry pointing at them),
                // marked under the lock this call holds.
                let op = self.begin_unmap();
                self.mark_mapped(space, &op, virt, i);
                drop(shared);
                self.finish_rollback(space, op, virt, i, npages)?;
                return Err(e);
            }
        }
        Ok(())
    }

    /// Unmaps `npages` pages from `virt` that `vmalloc` mapped and frees
    /// their frames. Checks every page first: on error nothing changes.
    /// A page another call is unmapping at the same time fails the whole
    /// call (`NotMapped`): the pages this call had taken are put back.
    pub fn vmfree(&self, space: &Space, virt: u64, npages: u64) -> Result<(), VmError> {
        space.check_range(virt, npages)?;
        self.unmap_all(space, virt, npages, &|va, e| match e & SW_OWNED {
            0 => Err(VmError::NotOwned { virt: va }),
            _ => Ok(()),
        })
    }

    // ---- kernel stacks ----

    /// Maps a zeroed stack of `pages` pages in the stack area below an
    /// unmapped guard page; returns its top. Stacks are never unmapped.
    pub fn map_stack(&self, pages: u64) -> Result<u64, VmError> {
        let len = (pages + 1) * PAGE_SIZE;
        let base = self.next_stack.fetch_add(len, Ordering::Relaxed);
        check_range_in(STACK_AREA, base, pages + 1).map_err(|_| VmError::OutOfVirtualSpace)?;
        let bottom = base + PAGE_SIZE;
        self.populate(&self.kernel, bottom, pages, Flags::WRITE.pte_bits() | SW_OWNED, Contents::Zeroed)?;
        Ok(bottom + pages * PAGE_SIZE)
    }

    /// Points the kernel page at `virt` (in the seed area, mapped) at
    /// `phys` without any TLB flush and returns the old frame. Only for
    /// tests of the shootdown itself: CPUs keep the old translation until
    /// shot down. A test hook: not in the production kernel.
    ///
    /// # Safety
    /// As for `map_single`, for `phys`; and the old frame is still
    /// reachable through stale translations until a shootdown.
    #[cfg(any(test, feature = "test-hooks"))]
    // Maps any physical address, as `map_single`.
    #[allow(unsafe_code)]
    pub unsafe fn retarget_unflushed(&self, virt: u64, phys: PhysAddr) -> Result<PhysAddr, VmError> {
        let phys = phys.as_u64();
        check_range_in(super::KERNEL_SEED_AREA, virt, 1)?;
        check_phys(phys, PAGE_SIZE, PAGE_SIZE)?;
        let _shared = self.shared(&self.kernel)?;
        let mut old = 0;
        self.for_each_leaf(&self.kernel, virt, 1, &mut |_, entry, _| {
            old = entry.swap(phys | (entry.load(Ordering::Relaxed) & !pte::ADDR_MASK), Ordering::AcqRel);
            Ok(())
        })?;
        Ok(PhysAddr::new_truncate(pte::addr(old)))
    }

    /// Regions handed out by the region allocator (for `kmem`).
    pub(crate) fn region_free(&self, start: u64, len: u64, kind: RegionKind) {
        let freed = self.regions.free(start, len, kind);
        debug_assert!(freed.is_ok(), "region {start:#x}+{len:#x} vanished");
    }
}

/// What fresh frames `populate` maps hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Contents {
    /// Zeroed before they are mapped.
    Zeroed,
    /// Whatever they held (`k_mem_map` with `UNINIT`, kernel only).
    Uninit,
}

/// Checks that `phys` is aligned to `align` and that `len` bytes from it
/// are representable in an entry.
pub(super) fn check_phys(phys: u64, align: u64, len: u64) -> Result<(), VmError> {
    if !phys.is_multiple_of(align) {
        return Err(VmError::NotAligned { value: phys });
    }
    if phys.checked_add(len).is_none_or(|end| end > pte::MAX_PHYS) {
        return Err(VmError::BadPhys { phys });
    }
    Ok(())
}
