//! What every crate that keeps state per CPU shares: how many CPUs there can
//! be (`MAX_CPUS`), sets of them (`CpuSet`), and per-CPU data (`PerCpu`)
//! whose elements each sit on cache lines of their own and whose running
//! CPU's element is reached only under a guard proving interrupts are off
//! (`CpuGuard`).
//!
//! A leaf crate: mm may depend on no other project crate, and smp, the
//! kernel, record and xtask all need the same limit, so it lives here once.
#![no_std]
// The crate holds no unsafe code; its one `unsafe fn` (a contract, not an
// unsafe operation) is allowed where it is declared.
#![deny(unsafe_code)]

#[cfg(test)]
extern crate std;

mod cpuset;
mod guard;
mod percpu;

pub use cpuset::{AtomicCpuSet, CpuSet};
pub use crossbeam_utils::CachePadded;
pub use guard::CpuGuard;
pub use percpu::{PerCpu, PerCpuRef};

/// Most CPUs the kernel runs. Indexes are dense: 0 is the bootstrap CPU.
/// `CpuSet` holds exactly this many (a multiple of 64: whole words), and
/// xtask refuses a larger `--smp` before booting instead of letting the
/// guest ignore the rest. 256: every x2APIC id QEMU gives `-smp 256` (0..255)
/// fits the frame database's 8-bit CPU field.
pub const MAX_CPUS: usize = 256;
