//! Atomics facade: loom's under `cfg(loom)` so the model checker sees every
//! access, core's otherwise.

#[cfg(loom)]
pub(crate) use loom::sync::atomic::{AtomicUsize, Ordering};

#[cfg(not(loom))]
pub(crate) use core::sync::atomic::{AtomicUsize, Ordering};
