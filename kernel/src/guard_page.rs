//! Telling a stack overflow from other faults when the run is already
//! lost: every kernel stack sits right above an unmapped guard page, so an
//! address in an unmapped page whose upper neighbour is mapped is most
//! likely a stack running off its bottom. The page tables are read without
//! the table lock (a dying CPU must not wait for one; another CPU may hold
//! it across a shootdown this CPU will never answer).

use x86_64::registers::control::Cr3;

use mm::PAGE_SIZE;

use crate::memory;

const PRESENT: u64 = 1;
const HUGE: u64 = 1 << 7;
const ADDR: u64 = 0x000F_FFFF_FFFF_F000;

/// Whether `virt` is mapped in the running address space, by a walk
/// through the direct map that takes no lock. A racing unmap may make the
/// answer stale; it is for reports only.
fn mapped_now(virt: u64) -> bool {
    let mut table = Cr3::read().0.start_address().as_u64();
    for level in (0..4).rev() {
        let index = (virt >> (12 + 9 * level)) & 511;
        let entry = memory::virt_of(table) + index * 8;
        // SAFETY: `table` is a page-table frame (CR3 or a present
        // non-leaf entry), which the direct map covers; reading one
        // aligned word of it has no side effect.
        let e = unsafe { (entry as *const u64).read_volatile() };
        if e & PRESENT == 0 {
            return false;
        }
        if level == 0 || (level < 3 && e & HUGE != 0) {
            return true;
        }
        table = e & ADDR;
    }
    true
}

/// The guard page `addr` lies in, if it looks like one: unmapped, with a
/// mapped page right above it (the bottom of a stack).
pub fn guard_page_of(addr: u64) -> Option<u64> {
    let page = addr & !(PAGE_SIZE - 1);
    let above = page.checked_add(PAGE_SIZE)?;
    let canonical = |a: u64| x86_64::VirtAddr::try_new(a).is_ok();
    if !canonical(page) || !canonical(above) {
        return None;
    }
    (!mapped_now(page) && mapped_now(above)).then_some(page)
}
