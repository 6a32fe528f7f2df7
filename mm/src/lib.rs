//! Memory management.
//!
//! Everything is portable and unit-tested on the host (loom models under
//! `cfg(loom)`) except `direct_map`, which reaches page tables and frames
//! through the direct map, and `raw`, which turns physical memory into
//! slices; those two only build for the kernel target. They, `heap`,
//! whose free lists are threaded through the free objects themselves, and
//! `owner_cell`, the per-CPU cell its owner uses without a lock, hold
//! the crate's `unsafe`: `unsafe_code` is denied everywhere else.
#![cfg_attr(not(test), no_std)]
#![deny(unsafe_code)]

extern crate alloc;

pub mod batched;
pub mod boot_frames;
pub mod buddy;
pub mod counters;
// Page tables and frames are reached through raw pointers into the direct map.
#[cfg(target_os = "none")]
#[allow(unsafe_code)]
pub mod direct_map;
pub mod frame;
pub mod frame_db;
// A free object stores the next free one in its own first word, and
// `free` trusts its caller that the object came from this heap.
#[cfg(not(loom))]
#[allow(unsafe_code)]
pub mod heap;
pub mod lock_count;
pub mod magazine;
// Per-CPU state its owner uses without a lock: the frame allocator's
// magazines (`&mut` from a shared cell under the quiesce protocol).
#[allow(unsafe_code)]
pub mod owner_cell;
#[cfg(not(loom))]
pub mod paging;
pub mod phys;
pub mod platform;
// Turns physical memory, through the direct map, into slices.
#[cfg(target_os = "none")]
#[allow(unsafe_code)]
pub mod raw;
mod sync;
#[cfg(test)]
mod testing;
#[cfg(not(loom))]
pub mod vm;
/// Under loom, only what the models need: the entry layout and the
/// page-state steps for the paging model, the table lock for its own (the
/// rest of `vm` and `paging` uses core atomics and spin locks loom cannot
/// see).
#[cfg(loom)]
pub mod vm {
    pub mod pte;
    pub mod table_lock;
    mod wait;
    pub use wait::Waited;
}
#[cfg(loom)]
pub mod paging {
    pub mod token;
    pub mod transition;
}

/// Bytes in a page (the one definition is `record`'s).
pub use record::PAGE_SIZE;

/// Most CPUs the allocator keeps per-CPU state for: the one definition, in
/// `cpus` (smp's limit too, and the one xtask checks `--smp` against).
pub use cpus::MAX_CPUS;
