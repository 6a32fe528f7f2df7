//! Cross-calls: run a function on a set of CPUs and wait until each has run
//! it, without a global lock.
//!
//! Each CPU owns one outgoing call mailbox (function, argument, and the set of
//! targets that have not acknowledged) and one inbox (the set of CPUs with a
//! call waiting for it, one bit per sender). A caller fills its mailbox,
//! sets its bit in every target's inbox, signals them (an IPI in the
//! kernel) and waits. A target takes its inbox (swaps each word to zero),
//! runs each sender's function and clears its own bit in that sender's
//! `outstanding` set.
//!
//! Both sets are `AtomicCpuSet`s, a word per 64 CPUs; every single-CPU
//! change is one atomic operation on one word, which is all the protocol
//! relies on. The multi-word reads are safe without a snapshot: a caller's
//! `outstanding` only loses bits while it waits (it stores the set before
//! it sends the first request), so words read empty one after another are
//! all empty at the last read, and each Acquire load of an emptied word
//! synchronises with the Release that emptied it; a target takes its inbox
//! word by word, each bit exactly once, and a bit set in a word it already
//! took is found by the next service, since its sender signals after
//! setting it.
//!
//! A waiting caller keeps servicing its own inbox, so two CPUs that call
//! each other at the same moment both finish even with interrupts off.
//! The wait is bounded: on timeout the caller takes back the requests that
//! no target has picked up yet (an atomic `fetch_and` on the inbox races
//! fairly with the target's `swap`), and reports those CPUs. A target that
//! did pick up the call but never finishes it is reported separately: its
//! function may still be using the caller's argument.

use crate::sync::{AtomicUsize, Ordering};
use cpus::{AtomicCpuSet, CpuSet, PerCpu, MAX_CPUS};

/// What the protocol needs from its environment.
pub trait CallPlatform {
    /// Prod the CPUs in `targets` to call [`CrossCalls::service`].
    fn signal(&self, targets: CpuSet);
    /// A monotonic clock in nanoseconds for the wait bound.
    fn now_ns(&self) -> u64;
    /// Called on every iteration of a wait loop; `spins` iterations of
    /// this wait came before (so a platform can check a few times, then
    /// give the core away).
    fn relax(&self, spins: u32) {
        let _ = spins;
        core::hint::spin_loop();
    }
}

/// Why a cross-call did not run on every target: the one error from a
/// cross-call up to the TLB shootdown that wraps it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallError {
    /// Some targets are not online; nothing was sent (`ipi::cross_call`).
    NotOnline { cpus: CpuSet },
    /// These targets never picked the call up within the bound; the call was
    /// withdrawn from them, so they will not run it later.
    Timeout { missing: CpuSet },
    /// These targets picked the call up but did not finish it within the
    /// bound. The caller's mailbox stays busy until they do (`call_closure`
    /// panics instead of returning it).
    Stuck { running: CpuSet },
}

impl CallError {
    /// The targets that did not run the call (or may not have finished).
    pub fn cpus(self) -> CpuSet {
        match self {
            CallError::NotOnline { cpus } => cpus,
            CallError::Timeout { missing } => missing,
            CallError::Stuck { running } => running,
        }
    }
}

struct Mailbox {
    func: AtomicUsize,
    arg: AtomicUsize,
    /// Targets that have been asked and have not acknowledged.
    outstanding: AtomicCpuSet,
}

/// Mailboxes for `N` CPUs (indexes `0..N`, `N <= MAX_CPUS`: the sets hold
/// `MAX_CPUS`).
///
/// Each CPU's inbox and mailbox sit on lines of their own (`PerCpu`), so
/// senders setting bits in one CPU's inbox do not disturb another's. Both
/// are reached by index: other CPUs' by design (`remote`: senders fill
/// inboxes, targets read mailboxes), the caller's own `unguarded`, since
/// every access is one atomic operation and the kernel calls in with
/// interrupts off anyway (the loom models pass plain indexes).
pub struct CrossCalls<const N: usize> {
    inbox: PerCpu<AtomicCpuSet, N>,
    mailboxes: PerCpu<Mailbox, N>,
}

impl<const N: usize> Default for CrossCalls<N> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const N: usize> CrossCalls<N> {
    #[cfg(not(loom))]
    pub const fn new() -> Self {
        assert!(N <= MAX_CPUS, "the sets hold MAX_CPUS");
        CrossCalls {
            inbox: cpus::per_cpu![AtomicCpuSet::new(CpuSet::EMPTY); N],
            mailboxes: cpus::per_cpu![
                Mailbox {
                    func: AtomicUsize::new(0),
                    arg: AtomicUsize::new(0),
                    outstanding: AtomicCpuSet::new(CpuSet::EMPTY)
                };
                N
            ],
        }
    }

    #[cfg(loom)]
    pub fn new() -> Self {
        assert!(N <= MAX_CPUS, "the sets hold MAX_CPUS");
        CrossCalls {
            inbox: PerCpu::from_fn(|_| AtomicCpuSet::new(CpuSet::EMPTY)),
            mailboxes: PerCpu::from_fn(|_| Mailbox {
                func: AtomicUsize::new(0),
                arg: AtomicUsize::new(0),
                outstanding: AtomicCpuSet::new(CpuSet::EMPTY),
            }),
        }
    }

    /// Runs `func(arg)` on every CPU in `targets` (including `me` if it is
    /// in the set, locally while the remote requests are in flight) and
    /// waits up to `timeout_ns` for all of them.
    pub fn call(
        &self,
        me: usize,
        targets: CpuSet,
        func: fn(usize),
        arg: usize,
        timeout_ns: u64,
        platform: &impl CallPlatform,
    ) -> Result<(), CallError> {
        let mailbox = self.mailboxes.unguarded(me);
        // A previous call whose targets got stuck still owns the mailbox.
        let deadline = platform.now_ns().saturating_add(timeout_ns);
        if !self.wait_acked(me, deadline, platform) {
            return Err(CallError::Stuck { running: mailbox.outstanding.load(Ordering::Acquire) });
        }

        let remote = targets.without(me);
        mailbox.func.store(func as usize, Ordering::Relaxed);
        mailbox.arg.store(arg, Ordering::Relaxed);
        // Every word, before the first request: the Release below publishes
        // all of them with func and arg.
        mailbox.outstanding.store(remote, Ordering::Relaxed);
        for cpu in remote.iter() {
            // Release publishes func/arg/outstanding to the target's take.
            self.inbox.remote(cpu).insert(me, Ordering::Release);
        }
        if !remote.is_empty() {
            platform.signal(remote);
        }
        if targets.contains(me) {
            func(arg);
        }

        let deadline = platform.now_ns().saturating_add(timeout_ns);
        if self.wait_acked(me, deadline, platform) {
            return Ok(());
        }

        // Withdraw the requests nobody took.
        let mut missing = CpuSet::EMPTY;
        for cpu in mailbox.outstanding.load(Ordering::Acquire).iter() {
            // One atomic operation on the word holding our bit, racing
            // fairly with the target's swap of that word.
            if self.inbox.remote(cpu).remove(me, Ordering::AcqRel) {
                mailbox.outstanding.remove(cpu, Ordering::AcqRel);
                missing.insert(cpu);
            }
        }
        // Whoever took it is running it now; give them one more bound.
        let deadline = platform.now_ns().saturating_add(timeout_ns);
        if !self.wait_acked(me, deadline, platform) {
            return Err(CallError::Stuck { running: mailbox.outstanding.load(Ordering::Acquire) });
        }
        if missing.is_empty() {
            Ok(()) // everyone answered while we were withdrawing
        } else {
            Err(CallError::Timeout { missing })
        }
    }

    /// Waits until `me`'s mailbox has no outstanding targets, servicing
    /// incoming calls meanwhile. Returns false at the deadline.
    fn wait_acked(&self, me: usize, deadline: u64, platform: &impl CallPlatform) -> bool {
        let mailbox = self.mailboxes.unguarded(me);
        let mut spins = 0u32;
        loop {
            // Word by word; fine because the set only shrinks meanwhile.
            if mailbox.outstanding.load(Ordering::Acquire).is_empty() {
                return true;
            }
            self.service(me);
            if platform.now_ns() >= deadline {
                return mailbox.outstanding.load(Ordering::Acquire).is_empty();
            }
            platform.relax(spins);
            spins = spins.saturating_add(1);
        }
    }

    /// Runs every call waiting for CPU `me`; returns how many ran. Called
    /// from the IPI handler and from wait loops.
    pub fn service(&self, me: usize) -> usize {
        let senders = self.inbox.unguarded(me).take(Ordering::Acquire);
        for sender in senders.iter() {
            let mailbox = &self.mailboxes.remote(sender);
            let func = mailbox.func.load(Ordering::Relaxed);
            let arg = mailbox.arg.load(Ordering::Relaxed);
            run(func, arg);
            mailbox.outstanding.remove(me, Ordering::Release);
        }
        senders.len()
    }

    /// Whether any call is waiting for `me` (for idle loops).
    pub fn has_pending(&self, me: usize) -> bool {
        !self.inbox.unguarded(me).load(Ordering::Relaxed).is_empty()
    }
}

/// Calls the `fn(usize)` whose address `call` stored.
fn run(func: usize, arg: usize) {
    // SAFETY: `func` was produced by `func as usize` from a `fn(usize)` in
    // `call`, published with Release and read after an Acquire swap, so it
    // is a valid function pointer of exactly this type.
    let f: fn(usize) = unsafe { core::mem::transmute::<usize, fn(usize)>(func) };
    f(arg)
}

/// Adapts a closure to the `fn(usize)` + argument form of [`CrossCalls::call`].
///
/// Returns an error like `call`. On `Stuck` the closure may still be running
/// on the reported CPUs, so the reference cannot be released: this panics
/// instead of returning, which is the only sound report left.
pub fn call_closure<const N: usize, F: Fn() + Sync>(
    calls: &CrossCalls<N>,
    me: usize,
    targets: CpuSet,
    f: &F,
    timeout_ns: u64,
    platform: &impl CallPlatform,
) -> Result<(), CallError> {
    fn trampoline<F: Fn() + Sync>(arg: usize) {
        // SAFETY: `arg` is `f as *const F` from `call_closure`, which does
        // not return while any CPU that picked up the call is still in it
        // (it panics on `Stuck`), so the pointee is alive.
        let f = unsafe { &*(arg as *const F) };
        f()
    }
    match calls.call(me, targets, trampoline::<F>, f as *const F as usize, timeout_ns, platform) {
        Err(CallError::Stuck { running }) => {
            panic!("cross-call from cpu {me}: cpus {running:?} took the call and never finished it")
        }
        other => other,
    }
}

#[cfg(all(test, loom))]
mod loom_tests;
#[cfg(all(test, not(loom)))]
mod tests;
