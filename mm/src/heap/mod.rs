//! The kernel heap (`kmalloc`/`kfree`): size classes from 16 to 2048 bytes
//! carved from whole pages, with a per-CPU cache of free objects per class
//! in front of one pool per class. Allocation and free touch only the
//! running CPU's cache; the class pool's lock is taken once per half a
//! cache of objects. Larger requests take contiguous frames directly.
//! Slab pages stay with their class once carved.

mod free_list;

use arrayvec::ArrayVec;

use crate::platform::CpuPlatform;
use crate::sync::{AtomicU64, Mutex, Ordering};
use crate::PAGE_SIZE;
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
}

impl HeapCpu {
    #[cfg(not(loom))]
    pub const fn new() -> HeapCpu {
        HeapCpu { cache: Mutex::new([const { ArrayVec::new_const() }; CLASSES.len()]) }
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
    pools: [Mutex<FreeList>; CLASSES.len()],
    cpus: &'a [HeapCpu],
    source: S,
    platform: P,
    in_use: AtomicU64,
    pages: AtomicU64,
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
    pub const fn new(cpus: &'a [HeapCpu], source: S, platform: P) -> Self {
        Heap {
            pools: [const { Mutex::new(FreeList::new()) }; CLASSES.len()],
            cpus,
            source,
            platform,
            in_use: AtomicU64::new(0),
            pages: AtomicU64::new(0),
        }
    }

    pub fn stats(&self) -> HeapStats {
        HeapStats { in_use: self.in_use.load(Ordering::Relaxed), pages: self.pages.load(Ordering::Relaxed) }
    }

    /// An object of at least `size` bytes aligned to `align`, or `None`.
    pub fn alloc(&self, size: usize, align: usize) -> Option<usize> {
        let Some(class) = class_of(size, align) else {
            let pages = large_pages(size, align);
            let addr = self.source.alloc_pages(pages)?;
            self.pages.fetch_add(pages as u64, Ordering::Relaxed);
            self.in_use.fetch_add((pages * (PAGE_SIZE as usize)) as u64, Ordering::Relaxed);
            return Some(addr);
        };
        let addr = self.platform.without_interrupts(|| {
            let mut cache = self.cpus[self.platform.cpu_index()].cache.lock();
            if let Some(a) = cache[class].pop() {
                return Some(a);
            }
            self.refill(class, &mut cache[class])?;
            cache[class].pop()
        })?;
        self.in_use.fetch_add(CLASSES[class] as u64, Ordering::Relaxed);
        Some(addr)
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
            self.in_use.fetch_sub((pages * (PAGE_SIZE as usize)) as u64, Ordering::Relaxed);
            return;
        };
        self.in_use.fetch_sub(CLASSES[class] as u64, Ordering::Relaxed);
        self.platform.without_interrupts(|| {
            let mut cache = self.cpus[self.platform.cpu_index()].cache.lock();
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
    fn refill(&self, class: usize, into: &mut ArrayVec<usize, CPU_CACHE>) -> Option<()> {
        let mut pool = self.pools[class].lock();
        if pool.is_empty() {
            let page = self.source.alloc_pages(1)?;
            self.pages.fetch_add(1, Ordering::Relaxed);
            for obj in (page..page + (PAGE_SIZE as usize)).step_by(CLASSES[class]) {
                // SAFETY: the page is fresh from the source and only ours;
                // every object is class-aligned and at least 16 bytes.
                unsafe { pool.push(obj) };
            }
        }
        while into.len() < CPU_CACHE / 2 {
            match pool.pop() {
                Some(a) => into.push(a),
                None => break,
            }
        }
        Some(())
    }
}

#[cfg(all(test, not(loom)))]
mod tests;
