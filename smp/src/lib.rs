//! Symmetric multiprocessing: which CPUs exist, how they are started, how
//! they find their own data and how they interrupt each other.
//!
//! Portable protocol code (`counts`, `crosscall`) is plain safe Rust,
//! unit-tested on the host and model-checked with loom. The hardware side
//! (`percpu`, `ipi`, `bringup`, `trampoline`) only builds for the kernel
//! target.
#![cfg_attr(not(test), no_std)]

pub mod counts;
pub mod crosscall;
mod sync;

#[cfg(target_os = "none")]
pub mod bringup;
#[cfg(target_os = "none")]
pub mod ipi;
#[cfg(target_os = "none")]
pub mod percpu;
#[cfg(target_os = "none")]
pub mod tlb;
#[cfg(target_os = "none")]
mod trampoline;

/// CPU sets and the CPU limit are the `cpus` crate's (mm uses them too).
pub use cpus::{CpuSet, MAX_CPUS};
