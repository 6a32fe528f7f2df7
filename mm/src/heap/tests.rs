use super::*;
use crate::testing::{on_cpu, Threads};
use cpus::{CachePadded, PerCpuRef};
use std::alloc::Layout;

/// Pages from the host allocator, with a budget to test exhaustion.
struct HostPages {
    left: std::sync::Mutex<usize>,
}

impl PageSource for HostPages {
    fn alloc_pages(&self, pages: usize) -> Option<usize> {
        {
            let mut left = self.left.lock().unwrap();
            *left = left.checked_sub(pages)?;
        }
        let align = pages.next_power_of_two() * (PAGE_SIZE as usize);
        // SAFETY: non-zero size, valid power-of-two alignment.
        let p =
            unsafe { std::alloc::alloc_zeroed(Layout::from_size_align(pages * (PAGE_SIZE as usize), align).unwrap()) };
        (!p.is_null()).then_some(p as usize)
    }
    fn free_pages(&self, addr: usize, pages: usize) {
        let align = pages.next_power_of_two() * (PAGE_SIZE as usize);
        // SAFETY: allocated above with this layout.
        unsafe {
            std::alloc::dealloc(addr as *mut u8, Layout::from_size_align(pages * (PAGE_SIZE as usize), align).unwrap())
        };
        *self.left.lock().unwrap() += pages;
    }
}

fn heap(cpus: usize, budget: usize) -> &'static Heap<'static, HostPages, Threads> {
    let slots = Vec::leak((0..cpus).map(|_| CachePadded::new(HeapCpu::new())).collect());
    Box::leak(Box::new(Heap::new(
        PerCpuRef::new(slots),
        HostPages { left: std::sync::Mutex::new(budget) },
        Threads::new(cpus),
    )))
}

#[test]
fn classes_cover_sizes_and_alignments() {
    assert_eq!(class_of(1, 1), Some(0));
    assert_eq!(class_of(17, 8), Some(1));
    assert_eq!(class_of(8, 256), Some(4));
    assert_eq!(class_of(2048, 8), Some(7));
    assert_eq!(class_of(2049, 8), None);
    assert_eq!(large_pages(5000, 8), 2);
    assert_eq!(large_pages(100, 16384), 4);
}

#[test]
fn objects_are_aligned_disjoint_and_reused() {
    let h = heap(1, 1000);
    let mut seen = std::collections::HashSet::new();
    let mut objs = Vec::new();
    for (i, &(size, align)) in
        [(1, 1), (24, 8), (100, 64), (700, 8), (2048, 2048), (5000, 8), (64, 8192)].iter().cycle().take(700).enumerate()
    {
        let a = h.alloc(size, align).unwrap();
        assert_eq!(a % align, 0, "#{i}: {size}/{align} at {a:#x}");
        assert!(seen.insert(a), "#{i}: {a:#x} handed out twice");
        // SAFETY: the object is `size` bytes and ours.
        unsafe { std::ptr::write_bytes(a as *mut u8, i as u8, size) };
        objs.push((a, size, align, i as u8));
    }
    for &(a, size, _, tag) in &objs {
        // SAFETY: still allocated.
        let bytes = unsafe { std::slice::from_raw_parts(a as *const u8, size) };
        assert!(bytes.iter().all(|&b| b == tag), "object at {a:#x} was overwritten");
    }
    let pages = h.stats().pages;
    for &(a, size, align, _) in &objs {
        // SAFETY: from `alloc` with these arguments, freed once.
        unsafe { h.free(a, size, align) };
    }
    assert_eq!(h.stats().in_use, 0);
    // Same shapes again: no new slab pages needed.
    let again: Vec<_> = objs.iter().map(|&(_, s, al, _)| (h.alloc(s, al).unwrap(), s, al)).collect();
    let large_pages: u64 =
        objs.iter().filter(|o| class_of(o.1, o.2).is_none()).map(|o| large_pages(o.1, o.2) as u64).sum();
    assert_eq!(h.stats().pages, pages, "slab pages reused ({large_pages} large pages re-taken)");
    for (a, s, al) in again {
        // SAFETY: as above.
        unsafe { h.free(a, s, al) };
    }
}

#[test]
fn exhausted_page_source_is_none_not_a_panic() {
    let h = heap(1, 2);
    assert!(h.alloc(3 * (PAGE_SIZE as usize), 8).is_none());
    let a = h.alloc(2 * (PAGE_SIZE as usize), 8).unwrap();
    assert!(h.alloc(16, 8).is_none(), "no page left for a slab");
    // SAFETY: from alloc above.
    unsafe { h.free(a, 2 * (PAGE_SIZE as usize), 8) };
    assert!(h.alloc(16, 8).is_some());
}

#[test]
fn threads_allocating_and_freeing_each_others_objects() {
    const CPUS: usize = 4;
    let h = heap(CPUS, 100_000);
    let (tx, rx): (Vec<_>, Vec<_>) = (0..CPUS).map(|_| std::sync::mpsc::channel::<(usize, usize, u8)>()).unzip();
    let mut rx = rx.into_iter().map(Some).collect::<Vec<_>>();
    let handles: Vec<_> = (0..CPUS)
        .map(|cpu| {
            let next = tx[(cpu + 1) % CPUS].clone();
            let inbox = rx[cpu].take().unwrap();
            std::thread::spawn(move || {
                on_cpu(cpu);
                for i in 0..5000usize {
                    let size = [8, 40, 200, 1000, 3000][i % 5];
                    let a = h.alloc(size, 8).unwrap();
                    let tag = (cpu * 31 + i) as u8;
                    // SAFETY: fresh object of `size` bytes.
                    unsafe { std::ptr::write_bytes(a as *mut u8, tag, size) };
                    next.send((a, size, tag)).unwrap();
                    while let Ok((b, s, t)) = inbox.try_recv() {
                        // SAFETY: allocated by a neighbour, ownership passed to us.
                        let bytes = unsafe { std::slice::from_raw_parts(b as *const u8, s) };
                        assert!(bytes.iter().all(|&x| x == t), "object {b:#x} corrupted");
                        // SAFETY: freed once, with its allocation's size.
                        unsafe { h.free(b, s, 8) };
                    }
                }
                drop(next);
                inbox
            })
        })
        .collect();
    drop(tx);
    let inboxes: Vec<_> = handles.into_iter().map(|t| t.join().unwrap()).collect();
    for inbox in inboxes {
        for (b, s, _) in inbox.try_iter() {
            // SAFETY: as above.
            unsafe { h.free(b, s, 8) };
        }
    }
    assert_eq!(h.stats().in_use, 0);
}

#[test]
fn bytes_in_use_are_counted_on_the_cpu_that_allocates_or_frees() {
    let h = heap(3, 1000);
    on_cpu(0);
    let small = h.alloc(100, 8).unwrap();
    let large = h.alloc(5000, 8).unwrap();
    assert_eq!((h.cpu_in_use(0), h.cpu_in_use(1)), (128 + 2 * PAGE_SIZE as i64, 0));
    // Freed on CPU 1: CPU 1's figure goes negative, CPU 0's stays.
    std::thread::spawn(move || {
        on_cpu(1);
        // SAFETY: allocated above with these arguments, freed once.
        unsafe { h.free(small, 100, 8) };
        assert_eq!(h.stats().in_use, 2 * PAGE_SIZE);
        // SAFETY: as above.
        unsafe { h.free(large, 5000, 8) };
    })
    .join()
    .unwrap();
    assert_eq!(h.cpu_in_use(0), 128 + 2 * PAGE_SIZE as i64);
    assert_eq!(h.cpu_in_use(1), -(128 + 2 * PAGE_SIZE as i64));
    assert_eq!(h.cpu_in_use(2), 0);
    assert_eq!(h.stats().in_use, 0, "the sum over CPUs is exact");
}

#[test]
fn pool_locks_share_no_line_with_each_other_or_the_read_mostly_fields() {
    let h = heap(2, 10);
    let line = |p: *const u8| p as usize / 128;
    let cpus = line(&*h.cpus as *const _ as *const u8);
    let pages = line(&*h.pages as *const _ as *const u8);
    let pools: Vec<usize> = h.pools.iter().map(|p| line(&**p as *const _ as *const u8)).collect();
    for (k, &p) in pools.iter().enumerate() {
        assert_ne!(p, cpus, "class {k}'s pool lock shares a line with the CPU caches' reference");
        assert_ne!(p, pages, "class {k}'s pool lock shares a line with the page count");
        assert!(pools[..k].iter().all(|&q| q != p), "two class pools share a line");
    }
    assert_ne!(cpus, pages);
}

/// A page source that checks no class pool is locked while it is asked:
/// the frame allocator behind the kernel's source may wait for other CPUs
/// to answer a cross-call, and one spinning on a pool lock never would.
struct PoolsUnlocked {
    inner: HostPages,
    asked: std::sync::atomic::AtomicUsize,
}

static PROBED: std::sync::OnceLock<&'static Heap<'static, PoolsUnlocked, Threads>> = std::sync::OnceLock::new();

impl PageSource for PoolsUnlocked {
    fn alloc_pages(&self, pages: usize) -> Option<usize> {
        let heap = PROBED.get().expect("probe installed");
        for (class, pool) in heap.pools.iter().enumerate() {
            assert!(pool.try_lock().is_some(), "class {class}'s pool is locked while the heap asks for pages");
        }
        self.asked.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.inner.alloc_pages(pages)
    }
    fn free_pages(&self, addr: usize, pages: usize) {
        self.inner.free_pages(addr, pages)
    }
}

#[test]
fn pages_are_asked_for_with_no_pool_locked() {
    let slots = Vec::leak(vec![CachePadded::new(HeapCpu::new())]);
    let source = PoolsUnlocked {
        inner: HostPages { left: std::sync::Mutex::new(100) },
        asked: std::sync::atomic::AtomicUsize::new(0),
    };
    let h = Box::leak(Box::new(Heap::new(PerCpuRef::new(slots), source, Threads::new(1))));
    assert!(PROBED.set(h).is_ok());
    on_cpu(0);
    let objs: Vec<usize> = (0..CPU_CACHE * 2).map(|_| h.alloc(2048, 8).unwrap()).collect();
    assert!(h.source.asked.load(std::sync::atomic::Ordering::Relaxed) >= 2, "refills carved pages");
    for a in objs {
        // SAFETY: from `alloc(2048, 8)` above, freed once.
        unsafe { h.free(a, 2048, 8) };
    }
}
