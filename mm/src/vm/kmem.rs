//! Zephyr's kernel-level mapping calls: `k_mem_map`/`k_mem_unmap` (anonymous
//! memory between two unmapped guard pages) and `phys_map`/`phys_unmap`
//! (device memory with a cache mode), over the region allocator.

use core::ops::BitOr;

use core::sync::atomic::Ordering;

use super::mapping::{check_phys, Contents, Vm};
use super::marker::FrameTo;
use super::pte::{self, CacheMode, Flags, PageSize, SW_DEVICE, SW_OWNED, SW_PINNED};
use super::region::{RegionError, RegionKind};
use super::table::{self, Lookup};
use super::{VmError, VmPlatform, PAGE_SIZE};
use crate::frame::PhysAddr;

/// `k_mem_map` flags (Zephyr's `K_MEM_PERM_RW`, `K_MEM_PERM_EXEC`,
/// `K_MEM_PERM_USER`, `K_MEM_MAP_UNINIT`, `K_MEM_MAP_LOCK`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct KMemFlags(u8);

impl KMemFlags {
    /// Read-only, kernel only, not executable, zeroed.
    pub const NONE: KMemFlags = KMemFlags(0);
    pub const RW: KMemFlags = KMemFlags(1);
    pub const EXEC: KMemFlags = KMemFlags(2);
    pub const USER: KMemFlags = KMemFlags(4);
    /// Do not zero the memory (kernel-only mappings).
    pub const UNINIT: KMemFlags = KMemFlags(8);
    /// Pin the frames: never paged out.
    pub const LOCK: KMemFlags = KMemFlags(16);

    pub const fn contains(self, other: KMemFlags) -> bool {
        self.0 & other.0 == other.0
    }

    pub(crate) fn access(self) -> Flags {
        [(KMemFlags::RW, Flags::WRITE), (KMemFlags::EXEC, Flags::EXEC), (KMemFlags::USER, Flags::USER)]
            .into_iter()
            .filter(|&(k, _)| self.contains(k))
            .fold(Flags::READ, |f, (_, a)| f.union(a))
    }
}

impl BitOr for KMemFlags {
    type Output = KMemFlags;
    fn bitor(self, rhs: KMemFlags) -> KMemFlags {
        KMemFlags(self.0 | rhs.0)
    }
}

/// Zephyr's `k_mem_region_align`: the `align`-aligned range covering
/// `addr .. addr + size`, as (aligned start, aligned size, offset of
/// `addr` in it). `align` must be a power of two. `None` if the range
/// wraps.
pub fn region_align(addr: u64, size: u64, align: u64) -> Option<(u64, u64, u64)> {
    debug_assert!(align.is_power_of_two());
    let start = addr & !(align - 1);
    let end = addr.checked_add(size)?.checked_add(align - 1)? & !(align - 1);
    Some((start, end - start, addr - start))
}

fn check_size(size: u64) -> Result<u64, VmError> {
    if size == 0 {
        return Err(VmError::ZeroSize);
    }
    if !size.is_multiple_of(PAGE_SIZE) {
        return Err(VmError::NotAligned { value: size });
    }
    Ok(size / PAGE_SIZE)
}

impl<P: VmPlatform> Vm<P> {
    /// Maps `size` bytes (page multiple) of fresh memory in the kernel area
    /// between two unmapped guard pages and returns its start. Zeroed
    /// unless `UNINIT`; `USER` with `UNINIT` is refused. With demand
    /// paging on, pages get frames on first touch unless `LOCK` asks for
    /// them (pinned) now.
    pub fn k_mem_map(&self, size: u64, flags: KMemFlags) -> Result<u64, VmError> {
        check_size(size)?;
        if flags.contains(KMemFlags::USER | KMemFlags::UNINIT) {
            return Err(VmError::UserUninit);
        }
        if let (Some(d), false) = (self.demand(), flags.contains(KMemFlags::LOCK)) {
            return d.k_mem_map(self, size, flags);
        }
        let contents = if flags.contains(KMemFlags::UNINIT) { Contents::Uninit } else { Contents::Zeroed };
        let mut bits = flags.access().pte_bits() | SW_OWNED;
        if flags.contains(KMemFlags::LOCK) {
            bits |= SW_PINNED;
        }
        self.in_region(size, &|start, pages| self.populate(self.kernel(), start, pages, bits, contents))
    }

    /// Takes a region for `size` bytes plus guard pages and maps it with
    /// `map(start, pages)`; gives the region back if that fails.
    pub(crate) fn in_region(&self, size: u64, map: &dyn Fn(u64, u64) -> Result<(), VmError>) -> Result<u64, VmError> {
        let pages = check_size(size)?;
        let total = size.checked_add(2 * PAGE_SIZE).ok_or(VmError::OutOfVirtualSpace)?;
        let region =
            self.regions.alloc(total, RegionKind::KMem, self.p.cpu_index()).map_err(|_| VmError::OutOfVirtualSpace)?;
        let start = region + PAGE_SIZE;
        if let Err(e) = map(start, pages) {
            // After a failed shootdown the range stays reserved for good.
            if !matches!(e, VmError::Shootdown { .. }) {
                self.region_free(region, total, RegionKind::KMem);
            }
            return Err(e);
        }
        Ok(start)
    }

    /// Unmaps a region `k_mem_map` returned (`addr` and `size` exactly as
    /// mapped, guard pages still unmapped, every page there) and frees its
    /// frames once no CPU can reach them, and the store slots of its
    /// paged-out pages. Anything else is an error and changes nothing.
    pub fn k_mem_unmap(&self, addr: u64, size: u64) -> Result<(), VmError> {
        let pages = check_size(size)?;
        if !addr.is_multiple_of(PAGE_SIZE) {
            return Err(VmError::NotAligned { value: addr });
        }
        let not_region = VmError::NotARegion { addr, size };
        let region = addr.checked_sub(PAGE_SIZE).ok_or(not_region)?;
        let total = size.checked_add(2 * PAGE_SIZE).ok_or(not_region)?;
        // The claim makes this caller the only one tearing the region down.
        if !self.regions.claim(region, total, RegionKind::KMem) {
            return Err(not_region);
        }
        let intact = self.check_guards(region, addr + size).map_err(|_| not_region).and_then(|_| {
            let _shared = self.shared(self.kernel())?;
            match (0..pages).map(|i| addr + i * PAGE_SIZE).find(|&va| !self.kmem_page_present(va)) {
                Some(va) => Err(VmError::NotMapped { virt: va }),
                None => Ok(()),
            }
        });
        if let Err(e) = intact {
            self.regions.unclaim(region);
            return Err(e);
        }
        // On a failed shootdown the region stays claimed: never reused.
        match self.demand() {
            Some(d) => d.unmap_kmem_pages(self, addr, pages)?,
            None => self.unmap_mapped_pages(addr, pages)?,
        }
        self.region_free(region, total, RegionKind::KMem);
        Ok(())
    }

    /// Whether page `va` of a `k_mem_map` region is there: mapped, or a
    /// page demand paging keeps in any state.
    fn kmem_page_present(&self, va: u64) -> bool {
        match table::lookup(&self.p, self.kernel().root, va, 0) {
            Lookup::Entry { entry, level: 0 } => {
                let e = entry.load(Ordering::Acquire);
                pte::is_present(e) || self.demand().is_some_and(|d| d.holds_page(e))
            }
            _ => false,
        }
    }

    /// `k_mem_unmap`'s pages with demand paging off: every page is mapped
    /// and becomes an in-transit marker that frees its frame after the
    /// shootdown.
    ///
    /// Takes no table lock, as paging's `unmap_one` does not: interrupts
    /// are off and this CPU answers no shootdown between a walk and the
    /// entry's change, so no table it walks can be freed under it.
    fn unmap_mapped_pages(&self, virt: u64, pages: u64) -> Result<(), VmError> {
        let op = self.begin_unmap();
        self.p.without_interrupts(|| {
            for va in (0..pages).map(|i| virt + i * PAGE_SIZE) {
                let Lookup::Entry { entry, level: 0 } = table::lookup(&self.p, self.kernel().root, va, 0) else {
                    continue;
                };
                let mut e = entry.load(Ordering::Acquire);
                // Loop: the CPU may set accessed/dirty bits meanwhile.
                while pte::is_present(e) {
                    match entry.compare_exchange(
                        e,
                        op.marker(e, PAGE_SIZE, FrameTo::Free),
                        Ordering::AcqRel,
                        Ordering::Relaxed,
                    ) {
                        Ok(_) => break,
                        Err(now) => e = now,
                    }
                }
            }
        });
        self.finish_unmap(self.kernel(), op, virt, pages, PageSize::Size4K)
    }

    /// Both guard pages must be unmapped (and the tables readable).
    fn check_guards(&self, below: u64, above: u64) -> Result<(), ()> {
        for guard in [below, above] {
            match self.map_get(self.kernel(), guard) {
                Err(VmError::NotMapped { .. }) => {}
                _ => return Err(()),
            }
        }
        Ok(())
    }

    /// Maps the physical range `phys .. phys + size` (any alignment) with
    /// `cache` for device access, writable and not executable, between
    /// guard pages; returns the virtual address of `phys`.
    ///
    /// # Safety
    /// The kernel may read and write physical `phys .. phys + size` for as
    /// long as it stays mapped: device memory (registers, a window such as
    /// ECAM) or memory the caller owns, not frames someone else holds.
    // Maps any physical range: the caller vouches it may be reached.
    #[allow(unsafe_code)]
    pub unsafe fn phys_map(&self, phys: PhysAddr, size: u64, cache: CacheMode) -> Result<u64, VmError> {
        let phys = phys.as_u64();
        if size == 0 {
            return Err(VmError::ZeroSize);
        }
        let (base, len, offset) = region_align(phys, size, PAGE_SIZE).ok_or(VmError::BadPhys { phys })?;
        check_phys(base, PAGE_SIZE, len)?;
        let total = len + 2 * PAGE_SIZE;
        let region = match self.regions.alloc(total, RegionKind::Phys, self.p.cpu_index()) {
            Ok(r) => r,
            Err(RegionError::Exhausted | RegionError::NotARegion) => return Err(VmError::OutOfVirtualSpace),
        };
        let virt = region + PAGE_SIZE;
        let bits = Flags::WRITE.pte_bits() | cache.pte_bits() | SW_DEVICE;
        let shared = match self.shared(self.kernel()) {
            Ok(g) => g,
            Err(e) => {
                self.region_free(region, total, RegionKind::Phys);
                return Err(e);
            }
        };
        for i in 0..len / PAGE_SIZE {
            let done = self.install(self.kernel(), virt + i * PAGE_SIZE, (base + i * PAGE_SIZE) | bits, 0);
            if let Err(e) = done {
                let op = self.begin_unmap();
                self.mark_mapped(self.kernel(), &op, virt, i);
                drop(shared);
                // A failed rollback shootdown returns here: region kept.
                self.finish_rollback(self.kernel(), op, virt, i, len / PAGE_SIZE)?;
                self.region_free(region, total, RegionKind::Phys);
                return Err(e);
            }
        }
        Ok(virt + offset)
    }

    /// Undoes `phys_map`: `virt` and `size` as given to and returned by it.
    pub fn phys_unmap(&self, virt: u64, size: u64) -> Result<(), VmError> {
        if size == 0 {
            return Err(VmError::ZeroSize);
        }
        let not_region = VmError::NotARegion { addr: virt, size };
        let (base, len, _) = region_align(virt, size, PAGE_SIZE).ok_or(not_region)?;
        let region = base.checked_sub(PAGE_SIZE).ok_or(not_region)?;
        let total = len.checked_add(2 * PAGE_SIZE).ok_or(not_region)?;
        if !self.regions.claim(region, total, RegionKind::Phys) {
            return Err(not_region);
        }
        let unmapped = self.unmap_all(self.kernel(), base, len / PAGE_SIZE, &|_, e| match e & SW_DEVICE {
            0 => Err(not_region),
            _ => Ok(()),
        });
        match unmapped {
            // After a failed shootdown the range stays reserved for good.
            Err(VmError::Shootdown { cpus }) => return Err(VmError::Shootdown { cpus }),
            Err(e) => {
                self.regions.unclaim(region);
                return Err(e);
            }
            Ok(()) => {}
        }
        self.region_free(region, total, RegionKind::Phys);
        Ok(())
    }

    /// Whether the kernel page at `virt` is mapped (for callers checking
    /// guard pages).
    pub fn is_mapped(&self, virt: u64) -> bool {
        self.map_get(self.kernel(), virt).is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn region_align_covers_odd_ranges() {
        assert_eq!(region_align(0x1234, 0x10, 0x1000), Some((0x1000, 0x1000, 0x234)));
        assert_eq!(region_align(0x1ff0, 0x20, 0x1000), Some((0x1000, 0x2000, 0xff0)));
        assert_eq!(region_align(0x2000, 0x1000, 0x1000), Some((0x2000, 0x1000, 0)));
        assert_eq!(region_align(u64::MAX - 10, 100, 0x1000), None);
    }
}
