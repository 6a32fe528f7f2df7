//! In-kernel throughput benchmarks and the mixed stress mode.
//!
//! Every workload runs on all online CPUs at once (they start together at
//! a barrier), checks its own results (a fast but wrong run fails), and
//! reports per repetition through `record` records. Everything here is
//! safe code over the [`Machine`] the kernel implements; portable parts
//! (histogram, option parsing) are unit-tested on the host.
#![cfg_attr(not(test), no_std)]
// Safe code only: the kernel implements what needs `unsafe`.
#![forbid(unsafe_code)]

extern crate alloc;

pub mod counters;
pub mod driver;
pub mod failure;
pub mod histogram;
pub mod machine;
pub mod options;
pub mod rng;
pub mod sampling;
pub mod team;
pub(crate) mod workloads;

pub use driver::run_benchmarks;
pub use machine::{Clock, Machine, Mark};
pub use options::Plan;
pub mod stress;
