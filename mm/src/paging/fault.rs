//! The page-fault path: find the page's entry, win it with one
//! compare-and-swap (token to busy marker), get a frame (evicting if the
//! budget says so), fill it, install it. A CPU that finds the page busy
//! waits, answering shootdowns, and looks again.

use super::wait::WaitBound;
use core::sync::atomic::AtomicU64;

use super::slots::SlotFor;
use super::token::Location;
use super::transition::{self, Look};
use super::{Pager, Paging, PagingError};
use crate::frame::Frame;
use crate::frame_db::paging::{FRESH_UNINIT, FRESH_ZERO, MAPPED, PINNED};
use crate::paging::stats::{Event, Timing};
use crate::vm::pte::{self, DIRTY, NO_EXECUTE, USER, WRITABLE};
use crate::vm::table::{self, Lookup};
use crate::vm::{VmPlatform, KERNEL_REGION_AREA, PAGE_SIZE};

/// What a faulting access wanted (from the page-fault error code).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Access {
    pub write: bool,
    pub exec: bool,
    pub user: bool,
    /// The CPU found the page present and still refused the access (SMAP,
    /// SMEP, a reserved bit): paging cannot help, whatever the entry says.
    pub denied: bool,
}

impl Access {
    pub const READ: Access = Access { write: false, exec: false, user: false, denied: false };
    pub const WRITE: Access = Access { write: true, ..Access::READ };

    /// From an x86 page-fault error code (bit 0 present, 1 write, 2 user,
    /// 3 reserved bit, 4 fetch).
    pub const fn from_error_code(code: u64) -> Access {
        Access { write: code & 2 != 0, user: code & 4 != 0, exec: code & 16 != 0, denied: code & 9 != 0 }
    }
}

/// Whether entry bits `e` allow `access` to page `virt`.
fn check_access(e: u64, access: Access, virt: u64) -> Result<(), PagingError> {
    let denied = access.denied
        || (access.write && e & WRITABLE == 0)
        || (access.exec && e & NO_EXECUTE != 0)
        || (access.user && e & USER == 0);
    if denied {
        Err(PagingError::Protection { virt })
    } else {
        Ok(())
    }
}

impl<P: VmPlatform> Paging<'_, P> {
    /// Handles a page fault at `virt`. `Ok` means the access can be
    /// retried: the page is resident (paged in by this CPU or another).
    /// A fault on anything but a pageable page, or one the mapping does
    /// not allow, is an error and changes nothing.
    pub fn page_fault(&self, virt: u64, access: Access) -> Result<(), PagingError> {
        // Timed from before the baseline's lock, for one fault in
        // TIMING_SAMPLE: no clock read on the others.
        let start = self.pg.stats.start(self.vm.p.cpu_index(), || self.vm.p.now_ns());
        self.paging_op(|pg| {
            if self.fault_in(pg, virt & !(PAGE_SIZE - 1), access, SlotFor::Fault)? {
                pg.stats.count(self.vm.p.cpu_index(), Event::Fault);
                pg.stats.finish(self.vm.p.cpu_index(), Timing::Fault, start, || self.vm.p.now_ns());
            }
            Ok(())
        })
    }

    /// Makes page `va` resident. `Ok(true)` if this call paged it in.
    /// `slot_for`: `Fault` for a page fault, which may take the store's
    /// reserved slot.
    pub(crate) fn fault_in(&self, pg: &Pager, va: u64, access: Access, slot_for: SlotFor) -> Result<bool, PagingError> {
        // The wait's bound starts at the first wait: no clock read on a
        // fault that does not wait.
        let mut deadline = WaitBound::new();
        let mut waited = false;
        loop {
            let entry = self.paged_entry(va)?;
            let (token, loc, perms) = match transition::look(entry) {
                Look::Resident(e) => {
                    check_access(e, access, va)?;
                    return Ok(false);
                }
                Look::Busy => {
                    if !waited {
                        pg.stats.count(self.vm.p.cpu_index(), Event::BusyWait);
                        waited = true;
                    }
                    self.wait_busy(&mut deadline, va)?;
                    continue;
                }
                Look::Token { token, loc, perms } => (token, loc, perms),
                Look::Other(_) => return Err(PagingError::NotPageable { virt: va }),
            };
            check_access(perms, access, va)?;
            if !transition::claim_token(entry, token) {
                continue; // another CPU won the page, or unmapped it
            }
            self.page_in_owned(pg, va, entry, token, loc, slot_for)?;
            return Ok(true);
        }
    }

    /// The 4 KiB entry of kernel page `va` in the region area.
    pub(crate) fn paged_entry(&self, va: u64) -> Result<&AtomicU64, PagingError> {
        if !KERNEL_REGION_AREA.contains(&va) {
            return Err(PagingError::NotPageable { virt: va });
        }
        match table::lookup(&self.vm.p, self.vm.kernel().root, va, 0) {
            Lookup::Entry { entry, level: 0 } => Ok(entry),
            _ => Err(PagingError::NotPageable { virt: va }),
        }
    }

    /// Pages in `va`, whose entry this CPU turned from `token` into a busy
    /// marker. On failure the token goes back exactly as it was.
    fn page_in_owned(
        &self,
        pg: &Pager,
        va: u64,
        entry: &AtomicU64,
        token: u64,
        loc: Location,
        slot_for: SlotFor,
    ) -> Result<(), PagingError> {
        let restore = |e: PagingError| {
            transition::restore_token(entry, token);
            Err(e)
        };
        let mut frame = match self.frame_for_page_in(pg, slot_for) {
            Ok(f) => f,
            Err(e) => return restore(e),
        };
        let index = pg.db.index_of(frame.phys()).expect("the allocator handed out a frame outside its database");
        let fresh = match loc {
            Location::AnonZero => {
                self.vm.p.fill_frame(&mut frame, 0);
                FRESH_ZERO
            }
            Location::AnonUninit => FRESH_UNINIT,
            Location::Slot(s) => {
                pg.stats.count(self.vm.p.cpu_index(), Event::StoreRead);
                let start = pg.stats.start(self.vm.p.cpu_index(), || self.vm.p.now_ns());
                let read = pg.store.page_in(s, &mut frame);
                pg.stats.finish(self.vm.p.cpu_index(), Timing::StoreIn, start, || self.vm.p.now_ns());
                if let Err(e) = read {
                    let _ = self.vm.p.free_frame(frame);
                    return restore(PagingError::Store(e));
                }
                pg.stats.count(self.vm.p.cpu_index(), Event::PageIn);
                0
            }
        };
        // Keep the slot as a valid copy (a clean eviction then needs no
        // write) while the store has room; give it back when it is filling.
        let copy = match loc {
            Location::Slot(s) => {
                let (used, total) = pg.store.usage();
                if used * 4 < total * 3 {
                    s + 1
                } else {
                    let _ = pg.store.location_free(s);
                    0
                }
            }
            _ => 0,
        };
        // The page's entry and the frame database own it from here on.
        let _ = frame.into_phys();
        let marked = transition::install_resident(pg.db, index, entry, token, va, copy, fresh);
        debug_assert!(marked, "a fresh frame had paging flags");
        // Counted before the frame is published (not busy), so an evictor
        // that takes it at once never counts it out first (and finds its
        // candidate bit set, with the `BUSY` hand-over ordering the two).
        pg.track(self.vm.p.cpu_index(), index);
        pg.release(index);
        Ok(())
    }

    /// A frame for a page-in: from eviction when paging is over its budget
    /// (a batch of victims, one reused, the rest freed), otherwise from
    /// the running CPU's magazine, with eviction as the fallback. When
    /// every resident page is busy (other CPUs are evicting them), waits
    /// for those evictions; only when every one is pinned is it an error.
    fn frame_for_page_in(&self, pg: &Pager, slot_for: SlotFor) -> Result<Frame, PagingError> {
        let mut deadline = WaitBound::new();
        // The allocator failed us: evict even under the budget.
        let mut starved = false;
        loop {
            let cpu = self.vm.p.cpu_index();
            let over = starved || pg.over_budget(cpu, || (self.vm.p.free_frames(), self.vm.p.online_cpus().len()));
            let got = if over {
                self.evict_batch(pg, super::evict::BATCH, slot_for)
            } else {
                Err(PagingError::NoEvictableFrame)
            };
            match got {
                Ok(mut frames) => {
                    let reuse = frames.pop().expect("eviction returns at least one frame");
                    for f in frames {
                        self.vm.free_kept(f);
                    }
                    return Ok(self.vm.adopt_kept(reuse));
                }
                Err(PagingError::NoEvictableFrame) if !over || !pg.at_resident_limit(cpu) => match self.vm.alloc() {
                    Ok(f) => return Ok(f),
                    Err(_) if !starved => {
                        starved = true;
                        continue;
                    }
                    Err(_) => {}
                },
                Err(PagingError::NoEvictableFrame) => {}
                Err(e) => return Err(e),
            }
            if !self.any_unpinned_resident(pg) {
                return Err(PagingError::NoEvictableFrame);
            }
            self.wait_busy(&mut deadline, 0)?;
        }
    }

    /// Whether some resident page is not pinned (so it will be evictable
    /// once whoever holds it busy is done).
    fn any_unpinned_resident(&self, pg: &Pager) -> bool {
        let mut i = pg.next_candidate(0);
        while i < pg.db.len() {
            let flags = pg.db.paging_flags(i);
            if flags & MAPPED != 0 && flags & PINNED == 0 {
                return true;
            }
            i = pg.next_candidate(i + 1);
        }
        false
    }
}

/// Whether the resident entry `e` was written since it was installed.
pub(crate) fn is_dirty(e: u64) -> bool {
    e & DIRTY != 0
}

/// Frame address of a resident entry (at most 52 bits: entries keep no
/// more).
pub(crate) fn frame_of(e: u64) -> crate::frame::PhysAddr {
    crate::frame::PhysAddr::new_truncate(pte::addr(e))
}
