//! Stress mode: every subsystem at once on every CPU for a given time.
//!
//! Each CPU runs a random mix (from the seed, its index and the round) of
//! frame alloc/free, heap objects of mixed sizes, map/write/read/unmap in
//! its own window of one user space active on every CPU, `vmalloc`,
//! `vmfree` and `umap_single` of a few pages at a time in a window all CPUs
//! share (so their markers, sweeps and reused addresses meet in one page
//! table), kernel `k_mem_map`/`k_mem_unmap` of regions that span whole page
//! tables (so unmaps detach tables and hold the table lock across their
//! shootdown while other CPUs page to the store), accesses to its own
//! pages of one shared on-demand region kept over a small resident limit
//! (so evictions run all the time), explicit page-out/page-in/pin/unpin of
//! those pages, and bad calls that must be refused. Everything a CPU holds is checked (stamps,
//! shadows of what it wrote) and given back at the end of a round; then
//! CPU 0 runs the frame and paging audits. At the end the region is
//! unmapped and the frame ledger must be exactly as at the start.
//!
//! The seed fixes each CPU's sequence of operations; the interleaving of
//! CPUs is up to the machine, so a replay reruns the same operations, not
//! the same timing.

use alloc::boxed::Box;
use alloc::sync::Arc;
use alloc::vec;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicU64, Ordering};

use arrayvec::ArrayVec;
use mm::frame::Frame;
use mm::vm::{AddressSpace, Flags, PageSize};
use record::{Counters, Record};

use crate::failure::{check, fails, failure, Failure};
use crate::machine::{frame_ledger, Machine};
use crate::rng::Rng;
use crate::team::Team;
use crate::workloads::paged;
use crate::workloads::space::{page, within};

/// Length of one round between audits.
const ROUND_NS: u64 = 2_000_000_000;
/// The shared on-demand region and the resident limit over it.
const PAGED: u64 = 512;
const RESIDENT: u64 = 128;

/// `vmalloc` ranges come from here, the same for every CPU: one page
/// table's span.
const SHARED_WINDOW: core::ops::Range<u64> = 0x7000_0000..0x7020_0000;
/// A `k_mem_map` of this size covers at least one whole page table.
const KMEM_SPAN: u64 = 4 << 20;

const KINDS: [&str; 8] = ["frames", "heap", "vm", "paging", "pin", "refused", "vmalloc", "kmem"];

struct Shared {
    region: u64,
    /// The one user space every CPU runs in.
    space: AddressSpace,
    cpus: usize,
    /// Per CPU: the generation each of its region pages holds.
    shadows: Vec<spin::Mutex<Vec<u64>>>,
}

type Ops = [AtomicU64; KINDS.len()];

fn pattern(va: u64, gen: u64) -> u64 {
    if gen == 0 {
        0
    } else {
        va ^ gen << 40
    }
}

fn counts(ops: &Ops) -> ArrayVec<(&'static str, u64), { KINDS.len() }> {
    KINDS.iter().zip(ops).map(|(k, n)| (*k, n.load(Ordering::Relaxed))).collect()
}

/// Runs stress mode for `seconds`; true if no violation was found.
pub fn run<M: Machine>(m: &'static M, seconds: u64, seed: u64) -> bool {
    let n = m.cpus();
    log::info!("stress: {seconds} s on {n} CPUs, seed {seed:#x}");
    let start = m.now_ns();
    let ops: Arc<Ops> = Arc::new(Default::default());
    let (mut audits, mut round) = (0u64, 0u32);
    let result = (|| -> Result<(), Failure> {
        let pg = paged::pager(m)?;
        // Tables emptied before the run (by earlier tests) stay until a
        // sweep; the rounds sweep now and then, so sweep first, and once
        // more at the end, to compare like with like.
        let sweep = || m.vm().sweep(m.vm().kernel()).map_err(|e| fails("sweep kernel space", e));
        sweep()?;
        let ledger = || frame_ledger(m);
        let before = ledger();
        let limit = pg.resident_limit();
        pg.set_resident_limit(RESIDENT);
        let region =
            m.vm().k_mem_map(PAGED * mm::PAGE_SIZE, mm::vm::KMemFlags::RW).map_err(|e| fails("k_mem_map", e))?;
        let space = m.vm().new_user_space().map_err(|e| fails("new space", e))?;
        let shared = Arc::new(Shared {
            region,
            space,
            cpus: n,
            shadows: (0..n).map(|c| spin::Mutex::new(vec![0; (c..PAGED as usize).step_by(n).count()])).collect(),
        });
        let r = (|| {
            while m.now_ns() - start < seconds.saturating_mul(1_000_000_000) {
                let team = Team::new(n);
                let (s, o) = (shared.clone(), ops.clone());
                let round_seed = seed ^ (round as u64 + 1).wrapping_mul(0xD1B5_4A32_D192_ED03);
                team.run(m, move |team, cpu| worker(m, team, &s, &o, cpu, round_seed))?;
                m.frames().audit().map_err(|e| failure(format_args!("frame audit: {e:?}")))?;
                paged::paging(m)?.audit().map_err(|e| failure(format_args!("paging audit: {e:?}")))?;
                audits += 2;
                let c = counts(&ops);
                m.emit(&Record::StressRound {
                    round,
                    elapsed_ms: (m.now_ns() - start) / 1_000_000,
                    audits,
                    ops: Counters(&c),
                });
                round += 1;
            }
            Ok(())
        })();
        if Team::stuck() {
            // CPUs may still be using the region and the spaces: keep them.
            return r;
        }
        let teardown = (|| -> Result<(), Failure> {
            m.vm().k_mem_unmap(region, PAGED * mm::PAGE_SIZE).map_err(|e| fails("k_mem_unmap", e))?;
            pg.set_resident_limit(limit);
            let shared =
                Arc::try_unwrap(shared).map_err(|_| failure(format_args!("a CPU still holds the stress state")))?;
            m.vm().destroy_space(shared.space).map_err(|(e, _)| fails("destroy space", e))?;
            Ok(())
        })();
        // The rounds' own error first: a failed round leaves things held.
        r?;
        teardown.map_err(|e| failure(format_args!("after the last round: {e}")))?;
        sweep()?;
        let after = ledger();
        check!(after == before, "frames (free, heap, region tables): {before} before the run, {after} after");
        audits += 1;
        Ok(())
    })();
    let c = counts(&ops);
    let (violations, detail) = match &result {
        Ok(()) => (0, Failure::new()),
        Err(e) => (1, failure(format_args!("after {round} complete rounds, seed {seed:#x}: {e}"))),
    };
    log::info!("stress: {round} rounds, {audits} audits, {violations} violations {detail}");
    m.emit(&Record::Stress { seed, seconds, smp: n as u32, audits, violations, ops: Counters(&c), detail: &detail });
    violations == 0
}

/// One CPU's round in the shared user space.
fn worker<M: Machine>(m: &M, team: &Team, s: &Shared, ops: &Ops, cpu: usize, seed: u64) -> Result<(), Failure> {
    let space = &s.space;
    let mut held = Held::default();
    let mut done = [0u64; KINDS.len()];
    let mut rng = Rng::for_cpu(seed, cpu);
    let mut op = 0u64;
    let n = s.cpus;
    let r = within(m, space, || {
        let mixed = (|| {
            let mut shadow = s.shadows[cpu].lock();
            team.barrier(m)?;
            let end = m.now_ns() + ROUND_NS;
            while m.now_ns() < end && !team.aborted() {
                op += 1;
                let kind = mix_step(m, s, space, &mut held, &mut shadow, cpu, &mut rng, op)?;
                done[kind] += 1;
            }
            Ok(())
        })();
        mixed.and_then(|()| held.give_back(m, space, |i| s.region + (cpu + i * n) as u64 * mm::PAGE_SIZE))
    });
    for (total, d) in ops.iter().zip(done) {
        total.fetch_add(d, Ordering::Relaxed);
    }
    r.map_err(|e| failure(format_args!("cpu {cpu} op {op}: {e}")))
}

/// What a CPU holds during a round.
#[derive(Default)]
struct Held {
    frames: ArrayVec<Frame, 64>,
    objects: ArrayVec<(Box<[u64]>, u64), 32>,
    /// (address in the CPU's space, frame, stamp)
    mapped: ArrayVec<(u64, u64, u64), 32>,
    next_page: u64,
    /// Indices of its region pages it pinned.
    pinned: ArrayVec<usize, 4>,
    /// `vmalloc` ranges in the shared window: (start, pages, stamp).
    allocated: ArrayVec<(u64, u64, u64), 8>,
}

impl Held {
    fn drop_object(&mut self) -> Result<(), Failure> {
        let (obj, stamp) = self.objects.remove(0);
        check!(obj.iter().all(|&w| w == stamp), "heap object {stamp:#x} was overwritten");
        Ok(())
    }

    fn unmap_oldest<M: Machine>(&mut self, m: &M, space: &AddressSpace) -> Result<(), Failure> {
        let (va, phys, stamp) = self.mapped.remove(0);
        let got = m.read_word(va);
        check!(got == stamp, "page {va:#x} reads {got:#x}, wrote {stamp:#x}");
        let frame = m.vm().umap_owned(space, va, PageSize::Size4K).map_err(|e| fails("unmap", e))?;
        let back = frame.phys().as_u64();
        check!(back == phys, "unmap of {va:#x} gave {back:#x}, mapped {phys:#x}");
        m.frames().free_page(frame).map_err(|e| fails("free", e))
    }

    fn give_back<M: Machine>(
        &mut self,
        m: &M,
        space: &AddressSpace,
        region_page: impl Fn(usize) -> u64,
    ) -> Result<(), Failure> {
        while let Some(i) = self.pinned.pop() {
            paged::paging(m)?.unpin(region_page(i), mm::PAGE_SIZE).map_err(|e| fails("unpin", e))?;
        }
        while let Some(frame) = self.frames.pop() {
            m.frames().free_page(frame).map_err(|e| fails("free", e))?;
        }
        while !self.objects.is_empty() {
            self.drop_object()?;
        }
        while !self.mapped.is_empty() {
            self.unmap_oldest(m, space)?;
        }
        while !self.allocated.is_empty() {
            self.vmfree_oldest(m, space, false)?;
        }
        Ok(())
    }

    /// Checks the oldest `vmalloc` range's stamps and gives it back: with
    /// `split`, its second page by `umap_single` (its frame comes back to
    /// this CPU, which frees it) and the rest by `vmfree` around the hole.
    fn vmfree_oldest<M: Machine>(&mut self, m: &M, space: &AddressSpace, split: bool) -> Result<(), Failure> {
        let (start, pages, stamp) = self.allocated.remove(0);
        let page = |i: u64| start + i * mm::PAGE_SIZE;
        for i in 0..pages {
            let got = m.read_word(page(i));
            check!(got == stamp ^ i, "vmalloc page {:#x} reads {got:#x}, wrote {:#x}", page(i), stamp ^ i);
        }
        if split && pages >= 2 {
            let phys = m.vm().map_get(space, page(1)).map_err(|e| fails("map_get", e))?.phys.as_u64();
            // The vmalloc page's frame comes back to this CPU as its own.
            let back = m.vm().umap_owned(space, page(1), PageSize::Size4K).map_err(|e| fails("umap_single", e))?;
            let got = back.phys().as_u64();
            check!(got == phys, "umap_single of {:#x} gave {got:#x}, mapped {phys:#x}", page(1));
            m.frames().free_page(back).map_err(|e| fails("free", e))?;
            m.vm().vmfree(space, page(0), 1).map_err(|e| fails("vmfree", e))?;
            if pages > 2 {
                m.vm().vmfree(space, page(2), pages - 2).map_err(|e| fails("vmfree", e))?;
            }
            return Ok(());
        }
        m.vm().vmfree(space, start, pages).map_err(|e| fails("vmfree", e))
    }
}

/// A `k_mem_map` of a region spanning whole page tables, checked and
/// unmapped at once: the unmap detaches tables and holds the kernel table
/// lock across its shootdown, which every other CPU (paging with
/// interrupts off, swapping to the disk) must answer.
fn kmem_round_trip<M: Machine>(m: &M, op: u64) -> Result<(), Failure> {
    let flags = mm::vm::KMemFlags::RW | mm::vm::KMemFlags::LOCK;
    let a = m.vm().k_mem_map(KMEM_SPAN, flags).map_err(|e| fails("k_mem_map", e))?;
    let pages = KMEM_SPAN / mm::PAGE_SIZE;
    for i in [0, pages / 2, pages - 1] {
        let va = a + i * mm::PAGE_SIZE;
        check!(m.read_word(va) == 0, "k_mem_map page {va:#x} is not zeroed");
        m.write_word(va, va ^ op);
        check!(m.read_word(va) == va ^ op, "k_mem_map page {va:#x} lost a write");
    }
    // A CPU that cannot answer the shootdown makes this fail (Shootdown).
    m.vm().k_mem_unmap(a, KMEM_SPAN).map_err(|e| fails("k_mem_unmap", e))?;
    let q = m.vm().quarantined_frames();
    check!(q == 0, "{q} frames quarantined");
    Ok(())
}

/// One random operation; returns its kind (an index into `KINDS`).
#[allow(clippy::too_many_arguments)]
fn mix_step<M: Machine>(
    m: &M,
    s: &Shared,
    space: &AddressSpace,
    held: &mut Held,
    shadow: &mut [u64],
    cpu: usize,
    rng: &mut Rng,
    op: u64,
) -> Result<usize, Failure> {
    let (vm, frames, paging) = (m.vm(), m.frames(), paged::paging(m)?);
    let r = rng.next();
    let coin = r >> 32 & 1 == 1;
    let n = s.cpus;
    // This CPU's pages of the shared region: cpu, cpu + n, ...
    let i = (r >> 40) as usize % shadow.len();
    let va = s.region + (cpu + i * n) as u64 * mm::PAGE_SIZE;
    let pinned = held.pinned.contains(&i);
    Ok(match r % 20 {
        0..=2 => {
            if held.frames.is_full() || (coin && !held.frames.is_empty()) {
                let frame = held.frames.swap_remove((r >> 8) as usize % held.frames.len());
                frames.free_page(frame).map_err(|e| fails("free", e))?;
            } else {
                held.frames.push(frames.alloc_page().map_err(|e| fails("alloc", e))?);
            }
            0
        }
        3..=5 => {
            if held.objects.is_full() || (coin && !held.objects.is_empty()) {
                held.drop_object()?;
            } else {
                let words = [2, 3, 4, 8, 16, 32, 64][(r >> 8) as usize % 7];
                let stamp = (cpu as u64) << 48 | op;
                held.objects.push((vec![stamp; words].into_boxed_slice(), stamp));
            }
            1
        }
        6..=7 if op.is_multiple_of(32) => {
            // Now and then a sweep of both spaces, racing the other CPUs'
            // maps, unmaps and soft faults (it frees only empty tables).
            vm.sweep(space).map_err(|e| fails("sweep", e))?;
            vm.sweep(vm.kernel()).map_err(|e| fails("sweep kernel space", e))?;
            2
        }
        6..=7 => {
            if held.mapped.is_full() || (coin && !held.mapped.is_empty()) {
                held.unmap_oldest(m, space)?;
            } else {
                let va = page(cpu, held.next_page);
                held.next_page += 1;
                let mut frame = frames.alloc_page().map_err(|e| fails("alloc", e))?;
                vm.fill_frame(&mut frame, 0);
                let phys = frame.phys().as_u64();
                if let Err((e, frame)) = vm.map_frame(space, va, frame, Flags::WRITE) {
                    frames.free_page(frame).map_err(|e| fails("free", e))?;
                    return Err(fails("map", e));
                }
                check!(m.read_word(va) == 0, "new page {va:#x} is not zeroed");
                let stamp = va ^ phys ^ op;
                m.write_word(va, stamp);
                held.mapped.push((va, phys, stamp));
            }
            2
        }
        8..=12 => {
            let got = m.read_word(va);
            check!(
                got == pattern(va, shadow[i]),
                "region page {va:#x} reads {got:#x}, wrote generation {} last",
                shadow[i]
            );
            shadow[i] += 1;
            m.write_word(va, pattern(va, shadow[i]));
            3
        }
        13 => {
            let r = if coin { paging.page_out(va, mm::PAGE_SIZE) } else { paging.page_in(va, mm::PAGE_SIZE) };
            match (r, pinned, coin) {
                (Ok(()), false, _) | (Ok(()), true, false) => {}
                (Err(mm::paging::PagingError::Pinned { .. }), true, true) => {}
                (r, _, _) => {
                    return Err(failure(format_args!(
                        "page {} of {va:#x} (pinned: {pinned}): {r:?}",
                        if coin { "out" } else { "in" }
                    )))
                }
            }
            3
        }
        14 => {
            if pinned {
                paging.unpin(va, mm::PAGE_SIZE).map_err(|e| fails("unpin", e))?;
                held.pinned.retain(|&mut p| p != i);
            } else if !held.pinned.is_full() {
                paging.pin(va, mm::PAGE_SIZE).map_err(|e| fails("pin", e))?;
                held.pinned.push(i);
            }
            4
        }
        15 => {
            // Bad calls: each must fail with its own error.
            // A free by address is unsafe, out of bench's reach: the frame
            // database's check that every free runs first stands for it.
            let unaligned = frames.db().index_of(mm::frame::PhysAddr::new(0x1001));
            check!(matches!(unaligned, Err(mm::frame::FrameError::NotAligned { .. })), "free of 0x1001: {unaligned:?}");
            let unmapped = vm.umap_single(space, page(n + cpu, op), PageSize::Size4K);
            check!(
                matches!(unmapped, Err(mm::vm::VmError::NotMapped { .. })),
                "unmap of an unmapped page: {unmapped:?}"
            );
            let odd = paging.page_out(va + 8, mm::PAGE_SIZE);
            check!(
                matches!(odd, Err(mm::paging::PagingError::Range(mm::vm::VmError::NotAligned { .. }))),
                "page-out of an unaligned address: {odd:?}"
            );
            5
        }
        16..=18 => {
            if held.allocated.is_full() || (coin && !held.allocated.is_empty()) {
                held.vmfree_oldest(m, space, r >> 33 & 1 == 1)?;
            } else {
                let pages = 1 + (r >> 8) % 4;
                let a = vm
                    .vmalloc(space, SHARED_WINDOW.start, SHARED_WINDOW.end, pages, Flags::WRITE)
                    .map_err(|e| fails("vmalloc", e))?;
                let stamp = (cpu as u64) << 48 | op << 8;
                for i in 0..pages {
                    let va = a + i * mm::PAGE_SIZE;
                    check!(m.read_word(va) == 0, "vmalloc page {va:#x} is not zeroed");
                    m.write_word(va, stamp ^ i);
                }
                held.allocated.push((a, pages, stamp));
            }
            6
        }
        _ => {
            // Rare: each is 1024 frames mapped, zeroed and unmapped.
            if (r >> 8).is_multiple_of(8) {
                kmem_round_trip(m, op)?;
            }
            7
        }
    })
}
