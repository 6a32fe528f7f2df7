//! Model checks of one pageable page under three or four CPUs, each
//! running the real steps of `transition` in the order its kernel path
//! does (`RUSTFLAGS="--cfg loom" cargo test -p mm --release --lib loom`):
//! - a faulting CPU (`Vm::fault_in`) that writes the page and reads it back,
//! - an evictor (`claim_victim`, `evict_claimed`, `write_back`),
//! - an unmapper (`unmap_one`, then `finish_unmap`'s frame free),
//! - a pinner (`pin_page`, then `unpin`).
//! The loops around the steps follow the paths', with `yield_now` for
//! `wait_busy`; the allocator, the store and the TLB are `loom_machine`'s
//! stand-ins.

use super::loom_machine::{transit, Coverage, LoomMachine, Seen, FRAMES, VA};
use super::*;
use crate::frame::FrameKind;
use loom::sync::Arc;
use std::sync::atomic::Ordering::SeqCst;

/// The page was unmapped under this CPU: the kernel call reports
/// `NotPageable`, and there is nothing left to check.
struct Gone;

const WRITTEN: u64 = 0x5EED;
/// Preemptions per interleaving for the three-CPU models: with 1 each
/// takes 2-7 s (15-65 thousand interleavings); with 2 loom gives up on
/// path length (over 1000 branches) after a minute.
const PREEMPTIONS: usize = 1;

/// `Vm::fault_in`: true if this CPU paged the page in.
fn fault_in(m: &LoomMachine) -> Result<bool, Gone> {
    loop {
        match look(&m.entry) {
            Look::Resident(_) => return Ok(false),
            Look::Busy => loom::thread::yield_now(),
            Look::Token { token, loc, .. } => {
                if !claim_token(&m.entry, token) {
                    continue;
                }
                m.own("a page-in");
                page_in(m, token, loc);
                return Ok(true);
            }
            Look::Other(_) => return Err(Gone),
        }
    }
}

/// `page_in_owned`: a frame, its contents, then the entry. A page-in from
/// the store keeps the slot as the page's valid copy.
fn page_in(m: &LoomMachine, token: u64, loc: Location) {
    let index = m.alloc();
    let (data, fresh, copy) = match loc {
        Location::AnonZero => (0, FRESH_ZERO, 0),
        Location::Slot(s) => {
            m.store_page_ins.fetch_add(1, SeqCst);
            (m.slot_data.load(Ordering::Relaxed), 0, s + 1)
        }
        Location::AnonUninit => unreachable!("the page is zero-fill"),
    };
    m.frame_data[index].store(data, Ordering::Relaxed);
    assert!(install_resident(&m.db, index, &m.entry, token, VA, copy, fresh), "a fresh frame had paging flags");
    m.disown();
    release(&m.db, index);
}

/// A store to the page as the CPU does it: the walk sets dirty (a locked
/// update of a present entry; otherwise it faults), then the frame changes.
fn write(m: &LoomMachine, value: u64) -> Result<(), Gone> {
    loop {
        let done = m.instruction(|| {
            let e = m.entry.load(Ordering::Acquire);
            let marked = token::is_resident(e)
                && (e & DIRTY != 0
                    || m.entry.compare_exchange(e, e | DIRTY | ACCESSED, Ordering::AcqRel, Ordering::Acquire).is_ok());
            if marked {
                m.frame_data[m.index_of(e)].store(value, Ordering::Relaxed);
            }
            marked
        });
        if done {
            return Ok(());
        }
        fault_in(m)?;
    }
}

/// A load from the page; faults it in if it is out.
fn read(m: &LoomMachine) -> Result<u64, Gone> {
    loop {
        let got = m.instruction(|| {
            let e = m.entry.load(Ordering::Acquire);
            token::is_resident(e).then(|| m.frame_data[m.index_of(e)].load(Ordering::Relaxed))
        });
        if let Some(v) = got {
            return Ok(v);
        }
        fault_in(m)?;
    }
}

/// One pass of `evict_batch` over the frames: claim, shoot down, write
/// back what cannot be had again, leave the token, free the frame.
fn evict(m: &LoomMachine) {
    for i in 0..FRAMES {
        let Some(c) = claim_victim_entry(&m.db, i, |va| (va == VA).then_some(&m.entry)) else {
            continue;
        };
        m.own("an eviction");
        m.shootdown();
        let flags = m.db.paging_flags(i);
        let copy = m.db.entry(i).copy.load(Ordering::Relaxed);
        let loc = clean_location(c.old, flags, copy).unwrap_or_else(|| {
            let s = match copy {
                0 => m.take_slot(),
                c => c - 1,
            };
            m.slot_data.store(m.frame_data[i].load(Ordering::Relaxed), Ordering::Relaxed);
            Location::Slot(s)
        });
        let token = token::encode(loc, c.old & KEPT).unwrap();
        m.disown();
        finish_eviction(&m.db, i, c.entry, token);
        m.free(i);
        return;
    }
}

/// `unmap_one`, then what `finish_unmap` does with its marker after the
/// shootdown: clear it and free the frame it owns.
fn unmap(m: &LoomMachine) {
    loop {
        match look(&m.entry) {
            Look::Resident(e) => {
                let index = m.index_of(e);
                match unmap_resident(&m.db, index, &m.entry, e, transit(e)) {
                    Ok(copy) => {
                        m.own("an unmap");
                        m.saw(Seen::UnmappedResident);
                        if let Some(s) = copy {
                            m.free_slot(s);
                        }
                        forget_frame(&m.db, index);
                        m.disown();
                        m.shootdown();
                        let marker = m.entry.swap(0, Ordering::AcqRel);
                        assert_eq!(marker, transit(e), "the in-transit marker changed");
                        m.free(index);
                        return;
                    }
                    Err(Refused::Changed) => continue,
                    Err(Refused::Busy) => {}
                }
            }
            Look::Token { token, loc, .. } => {
                if clear_token(&m.entry, token) {
                    if let Location::Slot(s) = loc {
                        m.saw(Seen::UnmappedInStore);
                        m.free_slot(s);
                    }
                    return;
                }
                continue;
            }
            Look::Busy => {}
            Look::Other(e) => panic!("only this CPU unmaps, yet the entry is {e:#x}"),
        }
        loom::thread::yield_now();
    }
}

/// `with_page_frame`: runs `f` with the page's frame claimed busy; false
/// if the page is not resident.
fn with_page_frame(m: &LoomMachine, f: impl FnOnce(usize)) -> bool {
    loop {
        match claim_frame_of(&m.db, &m.entry) {
            Ok(index) => {
                m.own("a pin or unpin");
                f(index);
                m.disown();
                release(&m.db, index);
                return true;
            }
            Err(FrameClaim::Busy) => loom::thread::yield_now(),
            Err(FrameClaim::NotResident) => return false,
            Err(FrameClaim::Moved) => {}
            Err(FrameClaim::NotInDb) => panic!("the entry maps a frame outside the database"),
        }
    }
}

/// `pin_page` then `unpin`. While pinned, the page must stay in its frame
/// (or be unmapped: unmapping does not wait for pins).
fn pin(m: &LoomMachine) -> Result<(), Gone> {
    let index = loop {
        fault_in(m)?;
        let mut pinned = None;
        if with_page_frame(m, |i| {
            pin_claimed(&m.db, i);
            pinned = Some(i);
        }) {
            break pinned.unwrap();
        }
        loom::thread::yield_now(); // evicted again meanwhile
    };
    // Checked at the unpin, so that every step the other CPUs took while
    // the page was pinned has had its chance to move it.
    let unpinned = with_page_frame(m, |i| {
        assert_eq!(i, index, "a pinned page moved");
        assert_ne!(m.db.paging_flags(i) & PINNED, 0, "a pinned page lost its pin");
        m.saw(Seen::PinnedResident);
        unpin_claimed(&m.db, i);
    });
    if !unpinned {
        let now = look(&m.entry);
        assert!(matches!(now, Look::Other(_)), "a pinned page went out: {now:?}");
        // else unmapped
    }
    Ok(())
}

/// The CPUs a model runs, each on its own loom thread.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Actor {
    /// Faults the page in, writes it, reads it back.
    Fault,
    Evict,
    Unmap,
    Pin,
}

/// `Actor::Fault`: the read must see the write, whatever happened to the
/// page in between (short of an unmap).
fn fault_write_read(m: &LoomMachine) {
    let faulted = (|| -> Result<(u64, bool), Gone> {
        fault_in(m)?;
        write(m, WRITTEN)?;
        let before = m.store_page_ins.load(SeqCst);
        let v = read(m)?;
        Ok((v, m.store_page_ins.load(SeqCst) > before))
    })();
    if let Ok((v, via_store)) = faulted {
        assert_eq!(v, WRITTEN, "the page lost its write");
        if via_store {
            m.saw(Seen::ReadBackFromStore);
        }
    }
}

/// Runs `actors` on one page, every interleaving within `preemptions`,
/// and fails unless some interleaving reached each of `expect`. Checked
/// on the way: one owner of the busy state at a time, no frame or slot
/// freed twice or while in use, a pinned page stays put, a read after
/// the write sees it. At the end: the page is unmapped (by the unmapper,
/// else afterwards), every frame and the store slot are free (nothing
/// leaked).
fn check(actors: &'static [Actor], preemptions: usize, expect: &[Seen]) {
    let mut b = loom::model::Builder::new();
    // `LOOM_MAX_PREEMPTIONS` still wins, for a deeper run by hand.
    b.preemption_bound = b.preemption_bound.or(Some(preemptions));
    let runs = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let coverage = Coverage::default();
    let (counter, seen) = (runs.clone(), coverage.clone());
    b.check(move || {
        counter.fetch_add(1, SeqCst);
        let m = Arc::new(LoomMachine::new(seen.clone()));
        let threads: Vec<_> = actors
            .iter()
            .map(|&a| {
                let m = m.clone();
                loom::thread::spawn(move || match a {
                    Actor::Fault => fault_write_read(&m),
                    Actor::Evict => evict(&m),
                    Actor::Unmap => unmap(&m),
                    Actor::Pin => {
                        let _ = pin(&m);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        if !actors.contains(&Actor::Unmap) {
            unmap(&m);
        }
        assert_eq!(m.entry.load(Ordering::Acquire), 0, "the page is unmapped");
        assert_eq!(m.owners(), 0);
        for i in 0..FRAMES {
            assert_eq!(m.db.kind(i), FrameKind::Free, "frame {i} leaked");
        }
        assert!(!m.slot_used(), "the store slot leaked");
    });
    eprintln!("{actors:?}: {} interleavings, reached {:#x}", runs.load(SeqCst), coverage.load(SeqCst));
    for &what in expect {
        assert!(coverage.load(SeqCst) & what as u32 != 0, "no interleaving reached {what:?}");
    }
}

use Actor::{Evict, Fault, Pin, Unmap};
use Seen::{PinnedResident, ReadBackFromStore, UnmappedInStore, UnmappedResident};

// Three CPUs, one preemption: every race between two steps.

#[test]
fn loom_page_fault_evict_pin() {
    check(&[Fault, Evict, Pin], PREEMPTIONS, &[ReadBackFromStore, PinnedResident]);
}

#[test]
fn loom_page_fault_evict_unmap() {
    check(&[Fault, Evict, Unmap], PREEMPTIONS, &[ReadBackFromStore, UnmappedResident, UnmappedInStore]);
}

#[test]
fn loom_page_fault_unmap_pin() {
    check(&[Fault, Unmap, Pin], PREEMPTIONS, &[PinnedResident, UnmappedResident]);
}

#[test]
fn loom_page_evict_unmap_pin() {
    // Nobody writes: the eviction of the clean zero page needs no store.
    check(&[Evict, Unmap, Pin], PREEMPTIONS, &[PinnedResident, UnmappedResident]);
}

/// All four at once. With one preemption this does not finish in 5
/// minutes (2.8 million interleavings and counting), so: none. CPUs then
/// switch only where one waits for another, so the fault's write and
/// read-back never have an eviction between them (the three-CPU models
/// cover that); what this adds is every order of whole operations, and
/// every wait, with all four CPUs on the page.
#[test]
fn loom_page_four_actors() {
    check(&[Fault, Evict, Unmap, Pin], 0, &[PinnedResident, UnmappedResident, UnmappedInStore]);
}
