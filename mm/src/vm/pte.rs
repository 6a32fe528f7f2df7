//! Page-table entries: the x86_64 bit layout, the flags callers ask for,
//! cache modes and page sizes.

use core::ops::BitOr;

pub const PRESENT: u64 = 1 << 0;
pub const WRITABLE: u64 = 1 << 1;
pub const USER: u64 = 1 << 2;
/// With `CACHE_DISABLE`, selects the PAT entry (reset PAT: 0 = WB,
/// 1 = WT, 3 = UC; the kernel programs exactly that layout).
pub const WRITE_THROUGH: u64 = 1 << 3;
pub const CACHE_DISABLE: u64 = 1 << 4;
pub const ACCESSED: u64 = 1 << 5;
pub const DIRTY: u64 = 1 << 6;
/// In a PD or PDPT entry: this entry maps a 2 MiB or 1 GiB page.
pub const HUGE: u64 = 1 << 7;
pub const GLOBAL: u64 = 1 << 8;
/// Software bit: the mapping was made with `LOCK` and its frame is pinned;
/// the page-table audit lets a pinned frame be mapped more than once.
pub const SW_PINNED: u64 = 1 << 9;
/// Software bit: device memory from `phys_map`, not an allocator frame.
pub const SW_DEVICE: u64 = 1 << 10;
/// Software bit: the mapping owns its frame (made by `vmalloc` or
/// `k_mem_map`), so unmapping it frees the frame.
pub const SW_OWNED: u64 = 1 << 11;
/// Software bit of a not-present entry: the mapping was removed and its
/// shootdown has not finished. The entry keeps the frame address (and
/// `SW_OWNED`) so the frame is freed after the flush; until then the entry
/// counts as used, so nothing new is mapped where a CPU may still hold the
/// old translation.
pub const SW_TRANSIT: u64 = 1 << 52;
pub const NO_EXECUTE: u64 = 1 << 63;
pub const ADDR_MASK: u64 = 0x000F_FFFF_FFFF_F000;

/// What an intermediate entry gets: everything allowed, so the leaf alone
/// decides (x86 ANDs write and user permission across levels).
pub const TABLE_FLAGS: u64 = PRESENT | WRITABLE | USER;

/// Highest physical address bit an entry can hold (52-bit physical).
pub const MAX_PHYS: u64 = 1 << 52;

/// Access a mapping allows. Reading is always allowed; `READ` alone is a
/// read-only, non-executable kernel mapping.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Flags(u8);

impl Flags {
    pub const READ: Flags = Flags(0);
    pub const WRITE: Flags = Flags(1);
    pub const USER: Flags = Flags(2);
    pub const EXEC: Flags = Flags(4);

    pub const fn contains(self, other: Flags) -> bool {
        self.0 & other.0 == other.0
    }

    pub const fn union(self, other: Flags) -> Flags {
        Flags(self.0 | other.0)
    }

    /// The permission bits of a leaf entry with these flags.
    pub const fn pte_bits(self) -> u64 {
        let mut bits = PRESENT;
        if self.contains(Flags::WRITE) {
            bits |= WRITABLE;
        }
        if self.contains(Flags::USER) {
            bits |= USER;
        }
        if !self.contains(Flags::EXEC) {
            bits |= NO_EXECUTE;
        }
        bits
    }

    /// The flags a leaf entry grants.
    pub const fn from_pte(pte: u64) -> Flags {
        let mut f = 0;
        if pte & WRITABLE != 0 {
            f |= Flags::WRITE.0;
        }
        if pte & USER != 0 {
            f |= Flags::USER.0;
        }
        if pte & NO_EXECUTE == 0 {
            f |= Flags::EXEC.0;
        }
        Flags(f)
    }
}

impl BitOr for Flags {
    type Output = Flags;
    fn bitor(self, rhs: Flags) -> Flags {
        self.union(rhs)
    }
}

/// Memory type of a mapping, through the PAT entry its PWT/PCD bits pick.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CacheMode {
    #[default]
    WriteBack,
    WriteThrough,
    Uncached,
}

impl CacheMode {
    pub const fn pte_bits(self) -> u64 {
        match self {
            CacheMode::WriteBack => 0,
            CacheMode::WriteThrough => WRITE_THROUGH,
            CacheMode::Uncached => WRITE_THROUGH | CACHE_DISABLE,
        }
    }

    pub const fn from_pte(pte: u64) -> CacheMode {
        match pte & (WRITE_THROUGH | CACHE_DISABLE) {
            0 => CacheMode::WriteBack,
            WRITE_THROUGH => CacheMode::WriteThrough,
            // PCD alone selects PAT entry 2 (UC-), which the kernel never
            // writes; report it as uncached, which it effectively is.
            _ => CacheMode::Uncached,
        }
    }
}

/// The size class of one mapping.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PageSize {
    Size4K,
    Size2M,
    Size1G,
}

impl PageSize {
    pub const fn bytes(self) -> u64 {
        match self {
            PageSize::Size4K => 1 << 12,
            PageSize::Size2M => 1 << 21,
            PageSize::Size1G => 1 << 30,
        }
    }

    /// Table level whose entries map pages of this size (0 = page table).
    pub const fn level(self) -> usize {
        match self {
            PageSize::Size4K => 0,
            PageSize::Size2M => 1,
            PageSize::Size1G => 2,
        }
    }

    pub const fn at_level(level: usize) -> PageSize {
        match level {
            0 => PageSize::Size4K,
            1 => PageSize::Size2M,
            _ => PageSize::Size1G,
        }
    }
}

/// Physical address an entry points at. Crate-private: outside mm a
/// physical address is a `PhysAddr` (`Translation::phys`).
pub(crate) const fn addr(pte: u64) -> u64 {
    pte & ADDR_MASK
}

pub const fn is_present(pte: u64) -> bool {
    pte & PRESENT != 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_round_trip_through_entries() {
        for f in [Flags::READ, Flags::WRITE, Flags::USER | Flags::EXEC, Flags::WRITE | Flags::USER | Flags::EXEC] {
            assert_eq!(Flags::from_pte(f.pte_bits()), f);
        }
        assert_ne!(Flags::READ.pte_bits() & NO_EXECUTE, 0, "NX unless EXEC");
        assert_eq!((Flags::EXEC).pte_bits() & NO_EXECUTE, 0);
    }

    #[test]
    fn cache_modes_pick_reset_pat_entries() {
        for c in [CacheMode::WriteBack, CacheMode::WriteThrough, CacheMode::Uncached] {
            assert_eq!(CacheMode::from_pte(c.pte_bits()), c);
        }
        assert_eq!(CacheMode::Uncached.pte_bits(), WRITE_THROUGH | CACHE_DISABLE, "PAT entry 3");
    }
}
