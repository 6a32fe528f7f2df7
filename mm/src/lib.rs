//! Memory management.
//!
//! `boot_frames` is portable and unit-tested on the host; `kernel_map`
//! edits live page tables and only builds for the kernel target.
#![cfg_attr(not(test), no_std)]

pub mod boot_frames;
#[cfg(target_os = "none")]
pub mod kernel_map;

pub const PAGE_SIZE: u64 = 4096;
