//! The kernel heap (`kmalloc`/`kfree`): size classes from 16 to 2048 bytes
//! carved from whole pages, with a per-CPU cache of free objects per class
//! in front of one pool per class. Allocation and free touch only the
//! running CPU's cache; the class pool's lock is taken once per half a
//! cache of objects. Larger requests take contiguous frames directly.
//! Slab pages stay with their class once carved.
//!
//! Bytes in use are counted per CPU (`HeapCpu::in_use`), a signed delta
//! only its CPU writes, with a plain load and store, inside the same
//! interrupts-off section that takes the CPU's cache: no line is written
//! by two CPUs per `kmalloc`/`kfree`. An object freed on another CPU than
//! the one that allocated it lowers the freeing CPU's delta, so one CPU's
//! figure may be negative; `stats` sums them all, which is exact whenever
//! no allocation or free is in flight.

mod free_list;

use arrayvec::ArrayVec;

use crate::platform::CpuPlatform;
use crate::sync::{AtomicI64, AtomicU64, Mutex, Ordering};
use crate::PAGE_SIZE;
use cpus::{CachePadded, PerCpuRef};
use free_list::FreeList;

/// Object sizes; each is also its alignment.
pub const CLASSES: [usize; 8] = [16, 32, 64, 128, 256, 512, 1024, 2048];
/// Free objects a CPU keeps per class.
pub const CPU_CACHE: usize = 32;

/// Where the heap gets its memory: page-aligned runs of pages, addressed
/// by virtual address (the kernel uses the direct map).
pub trait PageSource: Sync {
    /// `pages` contiguous pages aligned to `pages.next_power_of_two()` pages.
    fn alloc_pages(&self, pages: usize) -> Option<usize>;
    fn free_pages(&self, addr: usize, pages: usize);
}

/// One CPU's free objects, per class.
pub struct HeapCpu {
    cache: Mutex<[ArrayVec<usize, CPU_CACHE>; CLASSES.len()]>,
    /// Bytes this CPU allocated minus bytes it freed (negative when it
    /// frees objects other CPUs allocated). Written only by this CPU with
    /// interrupts off; read by `Heap::stats` from any CPU.
    in_use: AtomicI64,
}

impl HeapCpu {
    /// Adds `bytes` (negative: a free) to this CPU's delta: a plain load
    /// and store, no locked instruction. Only the owning CPU calls it, with
    /// interrupts off, so nothing on this CPU interleaves between the two.
    fn count(&self, bytes: i64) {
        self.in_use.store(self.in_use.load(Ordering::Relaxed).wrapping_add(bytes), Ordering::Relaxed);
    }
}

impl HeapCpu {
    #[cfg(not(loom))]
    pub const fn new() -> HeapCpu {
        HeapCpu { cache: Mutex::new([const { ArrayVec::new_const() }; CLASSES.len()]), in_use: AtomicI64::new(0) }
    }
}

#[cfg(not(loom))]
impl Default for HeapCpu {
    fn default() -> Self {
        Self::new()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct HeapStats {
    /// Bytes handed out and not yet freed (by class size or whole pages).
    pub in_use: u64,
    /// Pages taken from the page source.
    pub pages: u64,
}

pub struct Heap<'a, S: PageSource, P: CpuPlatform> {
    /// One line (pair) per class pool: a refill or a flush of one class
    /// takes its lock without writing the line of another class or of the
    /// fields every operation reads.
    pools: [CachePadded<Mutex<FreeList>>; CLASSES.len()],
    /// Read by every operation, written never: on a line of their own.
    cpus: CachePadded<PerCpuRef<'a, HeapCpu>>,
    source: S,
    platform: P,
    /// Pages taken from the source: written only when a page is carved or
    /// a large request is served, not per small object (and apart from the
    /// read-mostly fields above).
    pages: CachePadded<AtomicU64>,
}

/// Class index for a request, or `None` if it needs whole pages.
fn class_of(size: usize, align: usize) -> Option<usize> {
    let need = size.max(align).max(1);
    CLASSES.iter().position(|&c| c >= need)
}

/// Pages for a large request: enough for `size`, and a power-of-two count
/// when `align` exceeds a page so natural alignment covers it.
fn large_pages(size: usize, align: usize) -> usize {
    let pages = size.div_ceil(PAGE_SIZE as usize).max(1);
    if align > (PAGE_SIZE as usize) {
        pages.max(align / (PAGE_SIZE as usize)).next_power_of_two()
    } else {
        pages
    }
}

impl<'a, S: PageSource, P: CpuPlatform> Heap<'a, S, P> {
    #[cfg(not(loom))]
    pub const fn new(cpus: PerCpuRef<'a, HeapCpu>, source: S, platform: P) -> Self {
        Heap {
            pools: [const { CachePadded::new(Mutex::new(FreeList::new())) }; CLASSES.len()],
            cpus: CachePadded::new(cpus),
            source,
            platform,
            pages: CachePadded::new(AtomicU64::new(0)),
        }
    }

    /// The sum of every CPU's delta (exact when no call is in flight).
    pub fn stats(&self) -> HeapStats {
        let in_use: i64 = self.cpus.iter().map(|c| c.in_use.load(Ordering::Relaxed)).fold(0, i64::wrapping_add);
        HeapStats { in_use: in_use as u64, pages: self.pages.load(Ordering::Relaxed) }
    }

    /// CPU `cpu`'s delta of bytes in use (negative if it freed more than
    /// it allocated): what `stats` sums.
    pub fn cpu_in_use(&self, cpu: usize) -> i64 {
        self.cpus.remote(cpu).in_use.load(Ordering::Relaxed)
    }

    /// Counts `bytes` on the running CPU (a large request, which takes no
    /// CPU cache, masks interrupts just for this).
    fn count(&self, bytes: i64) {
        self.platform.without_interrupts(|me| self.cpus.local(me).count(bytes));
    }

    /// An object of at least `size` bytes aligned to `align`, or `None`.
    pub fn alloc(&self, size: usize, align: usize) -> Option<usize> {
        let Some(class) = class_of(size, align) else {
            let pages = large_pages(size, align);
            let addr = self.source.alloc_pages(pages)?;
            self.pages.fetch_add(pages as u64, Ordering::Relaxed);
            self.count((pages * (PAGE_SIZE as usize)) as i64);
            return Some(addr);
        };
        self.platform.without_interrupts(|me| {
            let cpu = self.cpus.local(me);
            let mut cache = cpu.cache.lock();
            let addr = match cache[class].pop() {
                Some(a) => a,
                None => {
                    self.refill(class, &mut cache[class])?;
                    cache[class].pop()?
                }
            };
            cpu.count(CLASSES[class] as i64);
            Some(addr)
        })
    }

    /// Returns an object from `alloc` with the same `size` and `align`.
    ///
    /// # Safety
    /// `addr` must come from `alloc(size, align)` on this heap and not be
    /// used or freed again.
    pub unsafe fn free(&self, addr: usize, size: usize, align: usize) {
        let Some(class) = class_of(size, align) else {
            let pages = large_pages(size, align);
            self.source.free_pages(addr, pages);
            self.pages.fetch_sub(pages as u64, Ordering::Relaxed);
            self.count(-((pages * (PAGE_SIZE as usize)) as i64));
            return;
        };
        self.platform.without_interrupts(|me| {
            let cpu = self.cpus.local(me);
            cpu.count(-(CLASSES[class] as i64));
            let mut cache = cpu.cache.lock();
            let mine = &mut cache[class];
            if mine.is_full() {
                // Half back to the pool, so the next frees stay local.
                let mut pool = self.pools[class].lock();
                for _ in 0..CPU_CACHE / 2 {
                    let a = mine.pop().expect("cache is full");
                    // SAFETY: objects in a CPU cache are free and unused.
                    unsafe { pool.push(a) };
                }
            }
            mine.push(addr);
        });
    }

    /// Moves half a cache of objects from the class pool, carving a fresh
    /// page when the pool is empty.
    ///
    /// The page comes from the source with the pool unlocked: the frame
    /// allocator may reclaim other CPUs' magazines, which waits for them to
    /// answer a cross-call, and a CPU spinning on this pool lock with
    /// interrupts off would never answer (both would sit out the
    /// cross-call's bound, and the allocation could fail).
    fn refill(&self, class: usize, into: &mut ArrayVec<usize, CPU_CACHE>) -> Option<()> {
        if self.take(class, into) {
            return Some(());
        }
        let page = self.source.alloc_pages(1)?;
        self.pages.fetch_add(1, Ordering::Relaxed);
        let mut pool = self.pools[class].lock();
        for obj in (page..page + (PAGE_SIZE as usize)).step_by(CLASSES[class]) {
            // SAFETY: the page is fresh from the source and only ours;
            // every object is class-aligned and at least 16 bytes.
            unsafe { pool.push(obj) };
        }
        Self::fill(&mut pool, into);
        Some(())
    }

    /// Half a cache from the pool if it has any object; false if empty.
    fn take(&self, class: usize, into: &mut ArrayVec<usize, CPU_CACHE>) -> bool {
        let mut pool = self.pools[class].lock();
        if pool.is_empty() {
            return false;
        }
        Self::fill(&mut pool, into);
        true
    }

    fn fill(pool: &mut FreeList, into: &mut ArrayVec<usize, CPU_CACHE>) {
        while into.len() < CPU_CACHE / 2 {
            match pool.pop() {
                Some(a) => into.push(a),
                None => break,
            }
        }
    }
}

#[cfg(all(test, not(loom)))]
mod tests;
