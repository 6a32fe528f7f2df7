//! Test platform: each host (or loom) thread plays one CPU, chosen with
//! `on_cpu`. "Interrupts off" is modelled so the owner-biased cache
//! protocol (`owner_cell`) is exercised for real:
//!
//! - host: each CPU of a `Threads` has a sequence word, odd while a thread
//!   is inside `without_interrupts` on it. `quiesce` waits, up to the
//!   platform's bound, until each target's word is even or has changed
//!   (SeqCst on both sides: the target's entry RMW then its load of the
//!   cell's `remote`, against the remote's increment then its load of the
//!   word). A thread waiting in `quiesce` makes its own word even meanwhile,
//!   as the kernel's cross-call services calls while it waits.
//! - loom: each CPU has a loom `Mutex`, held for the length of each
//!   `without_interrupts`; `quiesce` locks and unlocks each target's. Sound
//!   while the caller is not itself inside a section another quiescer waits
//!   for (the models have one remote at a time), and it has no bound.
// Host tests map and free frames by address: host memory is a vector of
// atomics, so a wrong address is test data, never undefined behaviour.
#![allow(unsafe_code)]

use cpus::{CpuGuard, CpuSet};

use crate::platform::{CpuPlatform, NotQuiesced};

#[cfg(not(loom))]
std::thread_local! {
    static CPU: core::cell::Cell<usize> = const { core::cell::Cell::new(0) };
    /// A number for this thread, never 0 (`Cpu::holder`).
    static THREAD: u64 = {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
        NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    };
}
#[cfg(loom)]
loom::thread_local! {
    static CPU: core::cell::Cell<usize> = core::cell::Cell::new(0);
}

/// One modelled CPU's "interrupts off" state.
#[cfg(not(loom))]
#[derive(Default)]
struct Cpu {
    /// Odd while a thread is inside `without_interrupts` on this CPU.
    seq: std::sync::atomic::AtomicU64,
    /// The thread inside (0: none), so a nested section is told apart from
    /// a second thread playing the same CPU (a test bug, caught).
    holder: std::sync::atomic::AtomicU64,
}

#[cfg(loom)]
type Cpu = loom::sync::Mutex<()>;

/// `cpus` modelled CPUs. Copy: tests keep one to hold a CPU's "interrupts"
/// off while the allocator they built with it runs.
#[derive(Clone, Copy)]
pub struct Threads {
    cpus: &'static [Cpu],
    #[cfg(not(loom))]
    bound: std::time::Duration,
}

impl Threads {
    /// `cpus` CPUs, with the kernel's cross-call bound (5 s) on `quiesce`.
    pub fn new(cpus: usize) -> Threads {
        #[cfg(not(loom))]
        return Threads::with_bound(cpus, std::time::Duration::from_secs(5));
        #[cfg(loom)]
        return Threads { cpus: Vec::leak((0..cpus).map(|_| Cpu::new(())).collect()) };
    }

    /// `cpus` CPUs whose `quiesce` gives up after `bound`.
    #[cfg(not(loom))]
    pub fn with_bound(cpus: usize, bound: std::time::Duration) -> Threads {
        Threads { cpus: Vec::leak((0..cpus).map(|_| Cpu::default()).collect()), bound }
    }
}

/// The CPU the calling thread plays.
pub fn current_cpu() -> usize {
    CPU.with(|c| c.get())
}

#[cfg(not(loom))]
fn thread_number() -> u64 {
    THREAD.with(|t| *t)
}

impl CpuPlatform for Threads {
    fn cpu_index(&self) -> usize {
        current_cpu()
    }

    #[cfg(not(loom))]
    fn without_interrupts<R>(&self, f: impl FnOnce(&CpuGuard) -> R) -> R {
        use std::sync::atomic::Ordering::{Relaxed, SeqCst};
        let (index, me) = (current_cpu(), thread_number());
        let guard = CpuGuard::host_thread(index);
        let cpu = &self.cpus[index];
        if cpu.holder.load(Relaxed) == me {
            return f(&guard); // nested: interrupts are off already
        }
        let was = cpu.seq.fetch_add(1, SeqCst);
        assert!(was.is_multiple_of(2), "two threads play CPU {index} at once");
        cpu.holder.store(me, Relaxed);
        // Leaves the section on the way out, unwinding included.
        struct Leave<'a>(&'a Cpu);
        impl Drop for Leave<'_> {
            fn drop(&mut self) {
                self.0.holder.store(0, Relaxed);
                self.0.seq.fetch_add(1, SeqCst);
            }
        }
        let _leave = Leave(cpu);
        f(&guard)
    }

    #[cfg(loom)]
    fn without_interrupts<R>(&self, f: impl FnOnce(&CpuGuard) -> R) -> R {
        let index = current_cpu();
        let _off = self.cpus[index].lock().unwrap();
        f(&CpuGuard::host_thread(index))
    }

    #[cfg(not(loom))]
    fn quiesce(&self, targets: CpuSet) -> Result<(), NotQuiesced> {
        use std::sync::atomic::Ordering::{Relaxed, SeqCst};
        let index = current_cpu();
        let own = &self.cpus[index];
        // Waiting counts as outside this CPU's section, as the kernel's
        // cross-call wait services other CPUs' calls.
        let inside = own.holder.load(Relaxed) == thread_number();
        if inside {
            own.seq.fetch_add(1, SeqCst);
        }
        let deadline = std::time::Instant::now() + self.bound;
        let mut missing = CpuSet::EMPTY;
        for t in targets.without(index).iter() {
            let seen = self.cpus[t].seq.load(SeqCst);
            while seen % 2 == 1 && self.cpus[t].seq.load(SeqCst) == seen {
                if std::time::Instant::now() >= deadline {
                    missing.insert(t);
                    break;
                }
                std::thread::yield_now();
            }
        }
        if inside {
            own.seq.fetch_add(1, SeqCst);
        }
        if missing.is_empty() {
            Ok(())
        } else {
            Err(NotQuiesced { cpus: missing })
        }
    }

    #[cfg(loom)]
    fn quiesce(&self, targets: CpuSet) -> Result<(), NotQuiesced> {
        for t in targets.without(current_cpu()).iter() {
            drop(self.cpus[t].lock().unwrap());
        }
        Ok(())
    }
}

/// Makes the calling thread CPU `cpu`.
pub fn on_cpu(cpu: usize) {
    CPU.with(|c| c.set(cpu));
}

/// The allocator by address, for tests that keep frames as numbers (to
/// compare, sort or stamp them, to pass them between threads, or to free
/// one twice on purpose): the frame database's raw path.
pub trait ByAddress {
    fn alloc_addr(&self) -> Result<u64, crate::frame::FrameError>;
    fn free_addr(&self, phys: u64) -> Result<(), crate::frame::FrameError>;
    // The loom models take single frames only.
    #[cfg(not(loom))]
    fn alloc_run(&self, count: u64) -> Result<u64, crate::frame::FrameError>;
    #[cfg(not(loom))]
    fn free_run(&self, phys: u64, count: u64) -> Result<(), crate::frame::FrameError>;
}

impl<P: CpuPlatform> ByAddress for crate::phys::PhysAllocator<'_, P> {
    fn alloc_addr(&self) -> Result<u64, crate::frame::FrameError> {
        self.alloc_page().map(|f| f.into_phys().as_u64())
    }

    fn free_addr(&self, phys: u64) -> Result<(), crate::frame::FrameError> {
        // SAFETY: the allocator's host tests use no frame memory at all
        // (the frame database and links are separate vectors), so a wrong
        // free is only ever the allocator error the test looks for.
        unsafe { self.free_raw(x86_64::PhysAddr::new(phys)) }
    }

    #[cfg(not(loom))]
    fn alloc_run(&self, count: u64) -> Result<u64, crate::frame::FrameError> {
        self.alloc_contiguous(count).map(|p| p.as_u64())
    }

    #[cfg(not(loom))]
    fn free_run(&self, phys: u64, count: u64) -> Result<(), crate::frame::FrameError> {
        // SAFETY: as for `free_addr`.
        unsafe { self.free_contiguous(x86_64::PhysAddr::new(phys), count) }
    }
}
