//! Where a page that has no frame lives, recorded in its not-present PTE
//! (Zephyr's `ARCH_UNPAGED_ANON_ZERO` and backing-store locations): the
//! hardware ignores every other bit of a not-present entry, so the entry
//! keeps the location and the page's permissions for the page-in.

use crate::vm::pte::{ADDR_MASK, NO_EXECUTE, PRESENT, SW_OWNED, SW_TRANSIT, USER, WRITABLE};

/// Marks an entry as a pageable page: a not-present one holds a location
/// token, a present one maps a frame the pager may evict. (Bits 52..58 of
/// a present entry are ignored by the hardware.)
pub const SW_PAGED: u64 = 1 << 53;
/// With `SW_PAGED` in a not-present entry: one CPU is paging the page in
/// or out. Others wait for the bit to go and look again. The entry keeps
/// the token's bits (page-in) or the frame address (eviction), and is
/// never reclaimed by a prune, so its table stays while the owner works.
pub const SW_BUSY: u64 = 1 << 56;
const KIND_SHIFT: u32 = 54;
const KIND_MASK: u64 = 0b11 << KIND_SHIFT;
/// The permission bits a token keeps for the page-in.
pub const KEPT: u64 = WRITABLE | USER | NO_EXECUTE | SW_OWNED;
/// Largest slot index a token can hold (it sits where a frame address
/// would).
pub const MAX_SLOT: u64 = ADDR_MASK >> 12;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Location {
    /// Not touched yet: the first touch gets a zeroed frame.
    AnonZero,
    /// Not touched yet, contents undefined (kernel-only `UNINIT` maps).
    AnonUninit,
    /// Paged out to this backing-store slot.
    Slot(u64),
}

/// The not-present entry for a page at `loc` with permissions from the
/// entry bits `perms` (only `KEPT` bits are used). `None` if the slot does
/// not fit.
pub const fn encode(loc: Location, perms: u64) -> Option<u64> {
    let (kind, slot) = match loc {
        Location::AnonZero => (0, 0),
        Location::AnonUninit => (1, 0),
        Location::Slot(s) => (2, s),
    };
    if slot > MAX_SLOT {
        return None;
    }
    Some(SW_PAGED | (kind << KIND_SHIFT) | (slot << 12) | (perms & KEPT))
}

/// The location and kept permissions of a token; `None` for anything
/// else (present entries, holes, in-transit markers).
pub const fn decode(e: u64) -> Option<(Location, u64)> {
    if e & PRESENT != 0 || e & SW_PAGED == 0 || e & (SW_TRANSIT | SW_BUSY) != 0 {
        return None;
    }
    let loc = match (e & KIND_MASK) >> KIND_SHIFT {
        0 => Location::AnonZero,
        1 => Location::AnonUninit,
        2 => Location::Slot((e & ADDR_MASK) >> 12),
        _ => return None,
    };
    Some((loc, e & KEPT))
}

/// Whether `e` is a busy marker: a page some CPU is paging in or out.
pub const fn is_busy(e: u64) -> bool {
    e & (PRESENT | SW_PAGED | SW_BUSY) == SW_PAGED | SW_BUSY
}

/// Whether `e` is a pageable page in any state: resident, busy, or a token.
pub const fn is_pageable(e: u64) -> bool {
    is_resident(e) || is_busy(e) || decode(e).is_some()
}

/// Whether `e` maps a pageable page's frame.
pub const fn is_resident(e: u64) -> bool {
    e & (PRESENT | SW_PAGED) == PRESENT | SW_PAGED
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip_with_permissions() {
        let perms = WRITABLE | NO_EXECUTE | SW_OWNED;
        for loc in [Location::AnonZero, Location::AnonUninit, Location::Slot(0), Location::Slot(MAX_SLOT)] {
            let e = encode(loc, perms | PRESENT | 0x60).unwrap();
            assert_eq!(e & PRESENT, 0, "a token is never present");
            assert_eq!(decode(e), Some((loc, perms)));
        }
        assert_eq!(encode(Location::Slot(MAX_SLOT + 1), 0), None);
    }

    #[test]
    fn other_entries_are_not_tokens() {
        assert_eq!(decode(0), None);
        assert_eq!(decode(0x1000 | PRESENT | WRITABLE), None);
        assert_eq!(decode(0x1000 | SW_TRANSIT), None);
        assert_eq!(decode(encode(Location::AnonZero, 0).unwrap() | PRESENT), None);
        let busy = encode(Location::Slot(3), WRITABLE).unwrap() | SW_BUSY;
        assert_eq!(decode(busy), None, "a busy page has no token to act on");
        assert!(is_busy(busy) && !is_resident(busy));
        assert!(is_resident(0x5000 | PRESENT | SW_PAGED) && !is_busy(0x5000 | PRESENT | SW_PAGED | SW_BUSY));
    }

    // Markers are not built under loom (`vm` has only `pte` there).
    #[cfg(not(loom))]
    #[test]
    fn a_marker_is_never_a_paging_entry() {
        use crate::vm::marker::{is_marker, FrameTo, UnmapOp};
        let m = UnmapOp::new(255, 3).marker(!0, 4096, FrameTo::Free);
        assert!(!crate::vm::pte::is_present(m));
        assert!(!is_pageable(m) && decode(m).is_none());
        assert!(!is_marker(0) && !is_marker(encode(Location::AnonZero, !0).unwrap()));
    }
}
