//! Binary buddy allocator over frame indexes, orders `0..=MAX_ORDER`.
//!
//! Free blocks are kept in one doubly-linked list per order, threaded
//! through a side table (one `Link` per frame) so the frames themselves are
//! never touched. A block of order `k` starts at an index aligned to `2^k`;
//! the caller makes index alignment equal physical alignment by starting
//! the table at a PFN aligned to `2^MAX_ORDER`. Not thread-safe by itself:
//! the physical allocator keeps it behind one lock.

pub const MAX_ORDER: usize = 10;
const NIL: u32 = u32::MAX;
const NOT_HEAD: u8 = u8::MAX;

/// Per-frame bookkeeping: list links and, for a free block's first frame,
/// its order.
#[derive(Clone, Copy)]
pub struct Link {
    next: u32,
    prev: u32,
    order: u8,
}

impl Link {
    pub const EMPTY: Link = Link { next: NIL, prev: NIL, order: NOT_HEAD };
}

impl Default for Link {
    fn default() -> Self {
        Link::EMPTY
    }
}

pub struct Buddy<'a> {
    links: &'a mut [Link],
    heads: [u32; MAX_ORDER + 1],
    free_frames: u64,
}

impl<'a> Buddy<'a> {
    /// An empty allocator for frames `0..links.len()`.
    pub fn new(links: &'a mut [Link]) -> Buddy<'a> {
        assert!(links.len() < NIL as usize, "too many frames for u32 links");
        links.fill(Link::EMPTY);
        Buddy { links, heads: [NIL; MAX_ORDER + 1], free_frames: 0 }
    }

    pub fn free_frames(&self) -> u64 {
        self.free_frames
    }

    /// Number of free blocks of `order`.
    pub fn blocks(&self, order: usize) -> usize {
        self.iter_order(order).count()
    }

    /// First frame of each free block of `order`.
    pub fn iter_order(&self, order: usize) -> impl Iterator<Item = usize> + '_ {
        let mut cur = self.heads[order];
        core::iter::from_fn(move || {
            if cur == NIL {
                return None;
            }
            let i = cur as usize;
            cur = self.links[i].next;
            Some(i)
        })
    }

    /// Whether `index` starts a free block, and of which order.
    pub fn head_order(&self, index: usize) -> Option<usize> {
        match self.links[index].order {
            NOT_HEAD => None,
            k => Some(k as usize),
        }
    }

    fn push(&mut self, index: usize, order: usize) {
        let old = self.heads[order];
        self.links[index] = Link { next: old, prev: NIL, order: order as u8 };
        if old != NIL {
            self.links[old as usize].prev = index as u32;
        }
        self.heads[order] = index as u32;
    }

    fn unlink(&mut self, index: usize, order: usize) {
        let Link { next, prev, .. } = self.links[index];
        if prev == NIL {
            self.heads[order] = next;
        } else {
            self.links[prev as usize].next = next;
        }
        if next != NIL {
            self.links[next as usize].prev = prev;
        }
        self.links[index] = Link::EMPTY;
    }

    /// Takes a block of `2^order` frames; returns its first index.
    pub fn alloc(&mut self, order: usize) -> Option<usize> {
        let found = (order..=MAX_ORDER).find(|&k| self.heads[k] != NIL)?;
        let index = self.heads[found] as usize;
        self.unlink(index, found);
        // Split: the upper halves go back, smallest last.
        for k in (order..found).rev() {
            self.push(index + (1 << k), k);
        }
        self.free_frames -= 1 << order;
        Some(index)
    }

    /// Returns the block of `2^order` frames at `index`, merging it with its
    /// free buddies. The caller guarantees the block is allocated.
    pub fn free(&mut self, mut index: usize, order: usize) {
        debug_assert!(index.is_multiple_of(1 << order), "misaligned block {index} order {order}");
        self.free_frames += 1 << order;
        let mut k = order;
        while k < MAX_ORDER {
            let buddy = index ^ (1 << k);
            if buddy + (1 << k) > self.links.len() || self.links[buddy].order != k as u8 {
                break;
            }
            self.unlink(buddy, k);
            index = index.min(buddy);
            k += 1;
        }
        self.push(index, k);
    }

    /// Frees the frames `start..end` (any alignment) as maximal aligned
    /// blocks.
    pub fn free_range(&mut self, start: usize, end: usize) {
        let mut i = start;
        while i < end {
            let order = largest_order(i, end - i);
            self.free(i, order);
            i += 1 << order;
        }
    }
}

/// Largest `k <= MAX_ORDER` with `index` aligned to `2^k` and `2^k <= len`.
pub fn largest_order(index: usize, len: usize) -> usize {
    let align = if index == 0 { MAX_ORDER } else { index.trailing_zeros() as usize };
    let fit = (usize::BITS - 1 - len.leading_zeros()) as usize;
    align.min(fit).min(MAX_ORDER)
}

/// Smallest order whose block holds `count` frames.
pub fn order_for(count: u64) -> usize {
    count.next_power_of_two().trailing_zeros() as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    fn buddy(n: usize) -> Buddy<'static> {
        Buddy::new(Vec::leak(vec![Link::EMPTY; n]))
    }

    #[test]
    fn seeding_makes_maximal_aligned_blocks() {
        let mut b = buddy(4096);
        b.free_range(3, 2048 + 5);
        assert_eq!(b.free_frames(), 2048 + 2);
        // 3, 4..8, 8..16, ... 1024..2048, 2048..2052, 2052
        assert_eq!(b.iter_order(0).collect::<Vec<_>>(), vec![2052, 3]);
        assert_eq!(b.iter_order(2).collect::<Vec<_>>(), vec![2048, 4]);
        assert_eq!(b.blocks(MAX_ORDER), 1);
    }

    #[test]
    fn split_then_merge_restores_one_block() {
        let mut b = buddy(1 << MAX_ORDER);
        b.free_range(0, 1 << MAX_ORDER);
        let a = b.alloc(0).unwrap();
        assert_eq!(a, 0);
        for k in 0..MAX_ORDER {
            assert_eq!(b.blocks(k), 1, "one buddy left per order after the split");
        }
        let c = b.alloc(3).unwrap();
        assert_eq!(c % 8, 0);
        b.free(a, 0);
        b.free(c, 3);
        assert_eq!(b.blocks(MAX_ORDER), 1);
        assert_eq!(b.free_frames(), 1 << MAX_ORDER);
        for k in 0..MAX_ORDER {
            assert_eq!(b.blocks(k), 0);
        }
    }

    #[test]
    fn blocks_are_naturally_aligned_and_disjoint() {
        let mut b = buddy(4096);
        b.free_range(0, 4096);
        let mut taken = vec![false; 4096];
        let mut got = Vec::new();
        for order in [0, 3, 1, 5, 0, 2, 7, 4, 0, 6] {
            let i = b.alloc(order).unwrap();
            assert_eq!(i % (1 << order), 0, "order {order} block at {i}");
            for (f, t) in taken.iter_mut().enumerate().skip(i).take(1 << order) {
                assert!(!*t, "frame {f} handed out twice");
                *t = true;
            }
            got.push((i, order));
        }
        for (i, order) in got {
            b.free(i, order);
        }
        assert_eq!(b.free_frames(), 4096);
        assert_eq!(b.blocks(MAX_ORDER), 4);
    }

    #[test]
    fn exhaustion_and_full_recovery() {
        let mut b = buddy(1000);
        b.free_range(1, 999);
        let total = b.free_frames();
        let mut frames = Vec::new();
        while let Some(i) = b.alloc(0) {
            frames.push(i);
        }
        assert_eq!(frames.len() as u64, total);
        assert_eq!(b.alloc(0), None);
        for i in frames.into_iter().rev() {
            b.free(i, 0);
        }
        assert_eq!(b.free_frames(), total);
        let mut fresh = buddy(1000);
        fresh.free_range(1, 999);
        for k in 0..=MAX_ORDER {
            assert_eq!(b.blocks(k), fresh.blocks(k), "order {k} after recovery");
        }
    }

    #[test]
    fn never_merges_past_the_table_end() {
        let mut b = buddy(6);
        b.free_range(0, 6);
        assert_eq!(b.iter_order(2).collect::<Vec<_>>(), vec![0]);
        assert_eq!(b.iter_order(1).collect::<Vec<_>>(), vec![4]);
        assert_eq!(b.alloc(3), None);
    }

    #[test]
    fn order_helpers() {
        assert_eq!(order_for(1), 0);
        assert_eq!(order_for(3), 2);
        assert_eq!(order_for(1024), 10);
        assert_eq!(largest_order(8, 100), 3);
        assert_eq!(largest_order(0, 5), 2);
        assert_eq!(largest_order(0, 1 << 20), MAX_ORDER);
    }
}
