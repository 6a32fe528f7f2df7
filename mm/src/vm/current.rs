//! Which user space each CPU runs now, for the two things that must find it
//! from the CPU alone: a soft fault (`Vm::soft_fault`, which links the
//! space's tables into the CPU's replica) and a nap (`Vm::idle`, which
//! leaves the space's root for the kernel's meanwhile).
//!
//! Only `Active` sets and clears a CPU's slot, on that CPU, around the
//! time it runs the space. A set slot holds a reference of the space's
//! shared state, so it points at a live space even if the guard is leaked
//! and the owner's handle moved (`destroy_space` then refuses). Only that
//! CPU reads its slot (its fault handler, its nap).

use alloc::sync::Arc;
use core::ptr;
use core::sync::atomic::{AtomicPtr, Ordering};

use cpus::PerCpu;

use super::space::{AddressSpace, Space};

/// Each slot holds one strong reference of the space (`Arc::into_raw`),
/// or null.
pub(crate) struct Current(PerCpu<AtomicPtr<Space>>);

// The slots hold references (`into_raw`/`from_raw`) and a shared borrow
// of one while it is held.
#[allow(unsafe_code)]
impl Current {
    pub fn new() -> Current {
        Current(cpus::per_cpu![AtomicPtr::new(ptr::null_mut())])
    }

    /// `cpu` runs `space` from now until `clear` (called by `Active`, on
    /// `cpu`). Activating again the space a leaked guard left is allowed.
    pub fn set(&self, cpu: usize, space: &AddressSpace) {
        let new = Arc::into_raw(space.0.clone()).cast_mut();
        let old = self.0.unguarded(cpu).swap(new, Ordering::Relaxed);
        debug_assert!(old.is_null() || old == new, "cpu {cpu} activated a user space inside another");
        if !old.is_null() {
            // SAFETY: a non-null slot holds a reference from `into_raw`
            // above; it was swapped out, so it is released once, here.
            drop(unsafe { Arc::from_raw(old) });
        }
    }

    pub fn clear(&self, cpu: usize) {
        let old = self.0.unguarded(cpu).swap(ptr::null_mut(), Ordering::Relaxed);
        if !old.is_null() {
            // SAFETY: as in `set`: the slot's reference, released once.
            drop(unsafe { Arc::from_raw(old) });
        }
    }

    /// Whether `cpu` runs `space` now; called on `cpu` only (a CPU that
    /// asks is not napping, so it runs the space exactly while the slot
    /// points at it: `Active` sets the slot after joining and loading the
    /// replica, and clears it before leaving).
    pub fn runs(&self, cpu: usize, space: &Space) -> bool {
        ptr::eq(self.0.unguarded(cpu).load(Ordering::Relaxed), space)
    }

    /// The user space `cpu` runs; called on `cpu` only, and not kept past
    /// the caller's own call.
    pub fn get(&self, cpu: usize) -> Option<&Space> {
        let space = self.0.unguarded(cpu).load(Ordering::Relaxed);
        // SAFETY: a non-null slot holds a strong reference, which only
        // `set` or `clear` on this CPU gives up; they run in `Active` (never
        // in an interrupt or fault handler, which is where `get`'s callers
        // run, or in the same call), so the space outlives the borrow.
        unsafe { space.as_ref() }
    }
}
