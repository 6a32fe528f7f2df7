//! Each CPU's own area, reached through the GS base, and the safe ways to
//! turn interrupts off that hand out a `CpuGuard`.
//!
//! Every CPU's GS base points at its own `CpuArea`, whose first word points
//! back at itself, so `current()` is one `mov` from `gs:0`. The kernel
//! never migrates code between CPUs (there is no preemption), so the CPU
//! cannot change under a caller between reading `current()` and using it;
//! state that interrupt handlers also touch is accessed with interrupts off.
//!
//! `CpuArea` is not `cpus::PerCpu`: it is the one per-CPU record the
//! hardware finds (GS base), holding only what identifies and drives a CPU
//! (index, APIC id, state, local APIC). Other per-CPU data is a
//! `cpus::PerCpu<T>` indexed by `current_index()`, and the areas themselves
//! are stored in one (`AREAS`), padded like any other.

use core::arch::asm;
use core::cell::UnsafeCell;
use core::sync::atomic::{AtomicPtr, AtomicU32, AtomicU8, Ordering};

use drivers::lapic::Lapic;
use x86_64::instructions::interrupts;
use x86_64::registers::model_specific::GsBase;
use x86_64::VirtAddr;

use cpus::{AtomicCpuSet, CachePadded, CpuGuard, CpuSet, PerCpu, MAX_CPUS};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum CpuState {
    /// Not (yet) started.
    Absent = 0,
    /// Running kernel code, not yet ready for IPIs.
    Starting = 1,
    /// Ready: in the online set, answers IPIs.
    Online = 2,
    /// Given up on by the BSP; if the CPU ever gets here it parks itself.
    /// The index is never reused.
    Abandoned = 3,
}

#[repr(C)]
pub struct CpuArea {
    /// Must stay the first field: `current()` reads it at `gs:0`.
    self_ptr: AtomicPtr<CpuArea>,
    index: usize,
    apic_id: AtomicU32,
    state: AtomicU8,
    /// Only ever touched by this CPU, with interrupts off (`with_local_apic`).
    lapic: UnsafeCell<Option<Lapic>>,
}

// SAFETY: every field but `lapic` is atomic or immutable; `lapic` is only
// accessed through `with_local_apic`, on its own CPU with interrupts off,
// so no two contexts ever hold a reference to it at once.
unsafe impl Sync for CpuArea {}

static AREAS: PerCpu<CpuArea> = {
    let mut cells = [const { CachePadded::new(CpuArea::absent(0)) }; MAX_CPUS];
    // Each area knows its own index (`current_index` is one load from it);
    // a constant loop because `per_cpu!` gives every element the same value.
    let mut i = 0;
    while i < MAX_CPUS {
        cells[i] = CachePadded::new(CpuArea::absent(i));
        i += 1;
    }
    PerCpu::from_padded(cells)
};

static ONLINE: AtomicCpuSet = AtomicCpuSet::new(CpuSet::EMPTY);

/// The area of CPU `index` (any CPU's: the bring-up and IPI code read
/// other CPUs' APIC ids and states by design).
pub fn cpu(index: usize) -> &'static CpuArea {
    AREAS.remote(index)
}

/// Points this CPU's GS base at its area in `AREAS`.
///
/// # Safety
/// Must run on the CPU that will own `index`, once, before anything calls
/// `current()` there; no two CPUs may install the same index.
pub(crate) unsafe fn install(index: usize) -> &'static CpuArea {
    let me = AREAS.remote(index);
    me.self_ptr.store(me as *const CpuArea as *mut CpuArea, Ordering::Relaxed);
    GsBase::write(VirtAddr::from_ptr(me));
    me
}

/// The running CPU's data.
pub fn current() -> &'static CpuArea {
    let ptr: *const CpuArea;
    // SAFETY: `install` ran on this CPU before any kernel code that can call
    // this (the BSP installs index 0 first thing in the entry point, APs in
    // their entry), so `gs:0` holds a pointer into the static `AREAS`.
    unsafe { asm!("mov {}, gs:[0]", out(reg) ptr, options(nostack, readonly, preserves_flags)) };
    // SAFETY: see above; `AREAS` is 'static.
    unsafe { &*ptr }
}

/// Index of the running CPU.
pub fn current_index() -> usize {
    current().index
}

/// CPUs that are online (answer IPIs).
pub fn online_set() -> CpuSet {
    ONLINE.load(Ordering::Acquire)
}

pub fn online_count() -> usize {
    online_set().len()
}

/// Runs `f` with interrupts off on this CPU and a guard that proves it,
/// for reaching this CPU's element of a `cpus::PerCpu` (`PerCpu::local`).
pub fn without_interrupts<R>(f: impl FnOnce(&CpuGuard) -> R) -> R {
    interrupts::without_interrupts(|| {
        // SAFETY: interrupts are off until `without_interrupts` returns, and
        // the guard, borrowed by `f` only, cannot outlive it; `install` ran
        // on this CPU, so `current_index` is the running CPU's index.
        let guard = unsafe { CpuGuard::new_unchecked(current_index()) };
        f(&guard)
    })
}

/// Runs `f` with a guard for this CPU, for code that runs with interrupts
/// off already (interrupt handlers, cross-call functions) and needs its
/// CPU's element of a `cpus::PerCpu`.
///
/// Panics if interrupts are on: reading RFLAGS costs a few cycles, and a
/// caller that is wrong about its context must not get a guard.
pub fn with_guard<R>(f: impl FnOnce(&CpuGuard) -> R) -> R {
    assert!(!interrupts::are_enabled(), "with_guard with interrupts on");
    // SAFETY: interrupts are off (checked above) and stay off for `f`,
    // which borrows the guard only for the call; `current_index` is the
    // running CPU's index (`install` ran on it).
    let guard = unsafe { CpuGuard::new_unchecked(current_index()) };
    f(&guard)
}

/// Runs `f` with this CPU's local APIC, interrupts off for the duration.
pub fn with_local_apic<R>(f: impl FnOnce(&mut Lapic) -> R) -> R {
    with_local_apic_guarded(|lapic, _| f(lapic))
}

/// `with_local_apic`, with the guard interrupts off gives (for counting
/// the ICR writes in this CPU's element).
pub(crate) fn with_local_apic_guarded<R>(f: impl FnOnce(&mut Lapic, &CpuGuard) -> R) -> R {
    without_interrupts(|guard| {
        let me = current();
        // SAFETY: only this CPU reaches its own `lapic` cell, and only here
        // with interrupts off, so this is the sole live reference.
        let lapic = unsafe { &mut *me.lapic.get() };
        f(lapic.as_mut().expect("local APIC used before it was enabled"), guard)
    })
}

impl CpuArea {
    /// CPU `index`'s area before the CPU starts.
    const fn absent(index: usize) -> CpuArea {
        CpuArea {
            self_ptr: AtomicPtr::new(core::ptr::null_mut()),
            index,
            apic_id: AtomicU32::new(u32::MAX),
            state: AtomicU8::new(CpuState::Absent as u8),
            lapic: UnsafeCell::new(None),
        }
    }

    pub fn index(&self) -> usize {
        self.index
    }

    pub fn apic_id(&self) -> u32 {
        self.apic_id.load(Ordering::Acquire)
    }

    pub fn state(&self) -> CpuState {
        match self.state.load(Ordering::Acquire) {
            1 => CpuState::Starting,
            2 => CpuState::Online,
            3 => CpuState::Abandoned,
            _ => CpuState::Absent,
        }
    }

    pub(crate) fn set_expected_apic_id(&self, apic_id: u32) {
        self.apic_id.store(apic_id, Ordering::Release);
    }

    /// Moves `from` -> `to` if the state is still `from`. The BSP and the
    /// AP race on these transitions; exactly one of them wins.
    pub(crate) fn transition(&self, from: CpuState, to: CpuState) -> bool {
        self.state.compare_exchange(from as u8, to as u8, Ordering::AcqRel, Ordering::Acquire).is_ok()
    }

    /// Stores the enabled local APIC and joins the online set. Returns
    /// false, leaving the online set alone, if the BSP has abandoned this
    /// CPU (it was `Starting` for too long).
    ///
    /// Must run on this CPU (the APIC handle belongs to it).
    pub(crate) fn go_online(&self, lapic: Lapic) -> bool {
        assert!(core::ptr::eq(self, current()), "go_online on a foreign CPU");
        interrupts::without_interrupts(|| {
            // SAFETY: on this CPU with interrupts off, and nothing has used
            // the cell yet (the CPU was not online).
            unsafe { *self.lapic.get() = Some(lapic) };
        });
        if !self.transition(CpuState::Starting, CpuState::Online) {
            return false;
        }
        ONLINE.insert(self.index, Ordering::AcqRel);
        true
    }
}
