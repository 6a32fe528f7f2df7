//! Memory management.
//!
//! `boot_frames` is portable and unit-tested on the host; `kernel_map`
//! edits live page tables and only builds for the kernel target.
#![cfg_attr(not(test), no_std)]

pub mod boot_frames;
pub mod buddy;
pub mod counters;
pub mod frame;
pub mod frame_db;
pub mod magazine;
pub mod phys;
pub mod platform;
mod sync;
#[cfg(target_os = "none")]
pub mod kernel_map;

pub const PAGE_SIZE: u64 = 4096;

/// Most CPUs the allocator keeps per-CPU state for (matches `smp`).
pub const MAX_CPUS: usize = 64;
