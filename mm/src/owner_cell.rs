//! `OwnerCell<T>`: per-CPU state its owner CPU uses without a lock, and
//! that other CPUs reach only after quiescing the owner (owner-biased
//! locking, made sound by the interrupts-off rule and a cross-call).
//!
//! Owner (`with_owner`, under the `CpuGuard` of the CPU the cell is bound
//! to): marks itself inside, loads `remote` (a plain load); zero means no
//! other CPU wants the cell, and the owner uses the value directly; nonzero
//! sends it to the cell's lock (the rare slow path).
//!
//! Remote (`Freeze`): increments `remote` of every cell it wants, asks the
//! platform to quiesce their owners (`CpuPlatform::quiesce`: an empty
//! cross-call in the kernel), then takes each cell's lock to use the value,
//! and decrements `remote` when it is done.
//!
//! Why that excludes the owner: the owner's access runs with interrupts
//! off, and a CPU answers a cross-call only with interrupts on or while it
//! waits in a cross-call of its own, never inside an access (checked, see
//! `inside`). So each owner access lies wholly before or wholly after the
//! point where the owner answered. One wholly before: its writes precede
//! the answer (the cross-call's release), which the remote acquires before
//! it touches the value. One wholly after: it starts after the owner took
//! the request (acquire), which the remote sent after its increment, so its
//! load of `remote` sees the increment and it takes the lock. Either way the
//! remote and the owner never use the value at once. A remote that cannot
//! quiesce an owner within the bound leaves that cell alone.
//!
//! `inside` catches the one way to break the rule: an owner that waits in
//! a cross-call (answering others) from inside its access. A remote that
//! finds `inside` set after the owner answered does not use the cell
//! (`Freeze::answered_inside`); a nested access on the owner panics.
//!
//! The only `unsafe` of the frame allocator's fast path lives here.
use arrayvec::ArrayVec;
use cpus::{CpuGuard, CpuSet};

use crate::platform::{CpuPlatform, NotQuiesced};
use crate::sync::{AtomicBool, AtomicU32, AtomicUsize, Mutex, MutexGuard, Ordering};
use crate::MAX_CPUS;

#[cfg(loom)]
use loom::cell::UnsafeCell;

/// `core`'s cell with loom's closure interface, so loom can check every
/// access to the value for races.
#[cfg(not(loom))]
struct UnsafeCell<T>(core::cell::UnsafeCell<T>);

#[cfg(not(loom))]
impl<T> UnsafeCell<T> {
    const fn new(value: T) -> Self {
        UnsafeCell(core::cell::UnsafeCell::new(value))
    }

    fn with_mut<R>(&self, f: impl FnOnce(*mut T) -> R) -> R {
        f(self.0.get())
    }
}

/// `owner` of a cell not bound to a CPU yet: no CPU may use it lock-free.
/// Zero, and a bound cell holds its CPU + 1, so that a new cell is all
/// zero bytes: the kernel's `MAX_CPUS` frame caches (2.3 MiB at 256 CPUs)
/// then sit in `.bss` instead of the image's `.data`, which the boot
/// loader reads from disk.
const UNBOUND: usize = 0;

pub struct OwnerCell<T> {
    /// The one CPU that may use the value without the lock (`bind`), + 1.
    owner: AtomicUsize,
    /// Remote CPUs that want the value (`Freeze`s alive); nonzero sends
    /// the owner to the lock.
    remote: AtomicU32,
    /// Set by the owner for the length of each access (plain stores).
    inside: AtomicBool,
    /// Set by the owner for the length of a slow-path (locked) access, so
    /// a nested access panics there too instead of spinning on its own
    /// lock. Rare: a locked swap is fine.
    slow: AtomicBool,
    lock: Mutex<()>,
    value: UnsafeCell<T>,
}

// SAFETY: the value is reached by one CPU at a time: its owner (which the
// guard proves is the running CPU, interrupts off) without the lock only
// while no remote holds a `Freeze`, everyone else under `lock` after
// quiescing the owner (module documentation). `T: Send` because the value
// is used from several CPUs in turn.
unsafe impl<T: Send> Sync for OwnerCell<T> {}

impl<T> OwnerCell<T> {
    #[cfg(not(loom))]
    pub const fn new(value: T) -> Self {
        OwnerCell {
            owner: AtomicUsize::new(UNBOUND),
            remote: AtomicU32::new(0),
            inside: AtomicBool::new(false),
            slow: AtomicBool::new(false),
            lock: Mutex::new(()),
            value: UnsafeCell::new(value),
        }
    }

    #[cfg(loom)]
    pub fn new(value: T) -> Self {
        OwnerCell {
            owner: AtomicUsize::new(UNBOUND),
            remote: AtomicU32::new(0),
            inside: AtomicBool::new(false),
            slow: AtomicBool::new(false),
            lock: Mutex::new(()),
            value: UnsafeCell::new(value),
        }
    }

    /// Makes `cpu` the cell's owner, once: binding it again to another CPU
    /// panics (two CPUs could then use it without the lock).
    pub fn bind(&self, cpu: usize) {
        assert!(cpu < MAX_CPUS, "cpu index {cpu} out of range");
        if let Err(was) = self.owner.compare_exchange(UNBOUND, cpu + 1, Ordering::AcqRel, Ordering::Acquire) {
            let was = was - 1;
            assert_eq!(was, cpu, "owner cell bound to CPU {was} cannot be rebound to CPU {cpu}");
        }
    }

    fn owner(&self) -> Option<usize> {
        match self.owner.load(Ordering::Acquire) {
            UNBOUND => None,
            cpu => Some(cpu - 1),
        }
    }

    /// The owner's access: lock-free unless a remote wants the cell. `me`
    /// must name the CPU the cell is bound to (panics otherwise), and `f`
    /// must not wait for other CPUs (a cross-call, a quiesce): it would
    /// answer their quiesces from inside the access.
    pub fn with_owner<R>(&self, me: &CpuGuard, f: impl FnOnce(&mut T) -> R) -> R {
        assert_eq!(
            self.owner.load(Ordering::Relaxed),
            me.cpu() + 1,
            "owner access from a CPU that does not own the cell"
        );
        assert!(
            !self.inside.load(Ordering::Relaxed) && !self.slow.load(Ordering::Relaxed),
            "nested owner access to CPU {}'s cell",
            me.cpu()
        );
        // Acquire: pairs with the Release decrement of a finished remote,
        // whose writes to the value this access then sees.
        // SeqCst (still a plain `mov` on x86): the remote's increment is a
        // SeqCst RMW, so the pair is ordered in the Rust model too, not only
        // because x86's locked RMW is a full fence.
        if self.remote.load(Ordering::SeqCst) != 0 {
            self.slow.store(true, Ordering::Relaxed);
            let _lock = self.lock.lock();
            struct Slow<'a>(&'a AtomicBool);
            impl Drop for Slow<'_> {
                fn drop(&mut self) {
                    self.0.store(false, Ordering::Relaxed);
                }
            }
            let _slow = Slow(&self.slow);
            // SAFETY: remotes use the value only under `lock`, which this
            // CPU holds; the owner's lock-free accesses run on this CPU
            // only, and none is in progress (`inside` is clear).
            return self.value.with_mut(|p| f(unsafe { &mut *p }));
        }
        // Set only on the lock-free path, after the load: once this CPU
        // answered a quiesce, its accesses see `remote` raised and never
        // set it, so a remote that finds it set knows the access spans the
        // answer. Plain stores: only this CPU writes it.
        self.inside.store(true, Ordering::Relaxed);
        // Clears `inside` on the way out, unwinding included.
        struct Out<'a>(&'a AtomicBool);
        impl Drop for Out<'_> {
            fn drop(&mut self) {
                // Release: a remote that reads `false` sees the access's writes.
                self.0.store(false, Ordering::Release);
            }
        }
        let _out = Out(&self.inside);
        self.value.with_mut(|p| {
            // SAFETY: the guard proves interrupts are off on the owner CPU,
            // so this access ends before the CPU answers any quiesce (or
            // `inside` reports it); `remote` was 0, so every remote that
            // raised it had its `Freeze` end before, or has not had its
            // quiesce answered yet and will not touch the value until then
            // (module documentation). `inside` excludes a nested access.
            f(unsafe { &mut *p })
        })
    }
}

/// A remote's hold on a set of cells: alive, their owners use the lock.
/// Dropping it lets them go back to lock-free access.
pub struct Freeze<'c, T> {
    /// Each cell, with whether it may be used (its owner quiesced).
    cells: ArrayVec<(&'c OwnerCell<T>, bool), MAX_CPUS>,
    unanswered: CpuSet,
    answered_inside: CpuSet,
}

impl<'c, T> Freeze<'c, T> {
    /// Freezes `cells` for the caller, CPU `me`: increments each cell's
    /// `remote`, quiesces their owners (all but `me`) in one platform call,
    /// and keeps usable the cells whose owner answered from outside its
    /// access. Panics if `me` is inside an owner access of one of them.
    pub fn begin<P: CpuPlatform>(
        cells: impl IntoIterator<Item = &'c OwnerCell<T>>,
        me: &CpuGuard,
        platform: &P,
    ) -> Freeze<'c, T> {
        let mut owners = CpuSet::EMPTY;
        let cells: ArrayVec<_, MAX_CPUS> = cells
            .into_iter()
            .map(|cell| {
                // A locked RMW, rare (reclaims, audits, policy switches):
                // several remotes may hold one cell frozen at once.
                cell.remote.fetch_add(1, Ordering::SeqCst);
                match cell.owner() {
                    Some(cpu) if cpu == me.cpu() => {
                        assert!(!cell.inside.load(Ordering::Relaxed), "quiesce from inside CPU {cpu}'s own cell access")
                    }
                    Some(cpu) => owners.insert(cpu),
                    None => {}
                }
                (cell, false)
            })
            .collect();
        let unanswered = match platform.quiesce(owners) {
            Ok(()) => CpuSet::EMPTY,
            Err(NotQuiesced { cpus }) => cpus.intersect(owners),
        };
        let mut freeze = Freeze { cells, unanswered, answered_inside: CpuSet::EMPTY };
        for (cell, usable) in freeze.cells.iter_mut() {
            *usable = match cell.owner() {
                Some(cpu) if unanswered.contains(cpu) => false,
                // Acquire: `false` stored on leaving an access that the
                // owner was still in when it answered makes that access's
                // writes visible; `true` means it answered from inside.
                Some(cpu) if cpu != me.cpu() && cell.inside.load(Ordering::Acquire) => {
                    freeze.answered_inside.insert(cpu);
                    false
                }
                _ => true,
            };
        }
        freeze
    }

    /// Owners that did not answer the quiesce within the platform's bound.
    pub fn unanswered(&self) -> CpuSet {
        self.unanswered
    }

    /// Owners that answered from inside their lock-free access (a bug:
    /// some access waits for other CPUs); their cells were left alone.
    pub fn answered_inside(&self) -> CpuSet {
        self.answered_inside
    }

    /// Owners whose cells this freeze may not use.
    pub fn missing(&self) -> CpuSet {
        self.unanswered.union(self.answered_inside)
    }

    pub fn len(&self) -> usize {
        self.cells.len()
    }

    pub fn is_empty(&self) -> bool {
        self.cells.is_empty()
    }

    /// Runs `f` on cell `i` (in the order given to `begin`) under its lock;
    /// `None` if its owner was not quiesced.
    pub fn with<R>(&self, i: usize, f: impl FnOnce(&mut T) -> R) -> Option<R> {
        let (cell, usable) = self.cells[i];
        if !usable {
            return None;
        }
        let _lock = cell.lock.lock();
        // SAFETY: the owner was quiesced after `remote` was raised and
        // `remote` stays raised while `self` lives, so the owner uses the
        // value only under `lock` (module documentation), which we hold.
        Some(cell.value.with_mut(|p| f(unsafe { &mut *p })))
    }

    /// Every cell's lock at once (in `begin`'s order, so two holders never
    /// deadlock), if every owner was quiesced; else the owners that were not.
    pub fn lock_all(&self) -> Result<AllLocked<'_, 'c, T>, CpuSet> {
        if !self.missing().is_empty() {
            return Err(self.missing());
        }
        let guards = self.cells.iter().map(|(cell, _)| cell.lock.lock()).collect();
        Ok(AllLocked { freeze: self, _guards: guards })
    }
}

impl<T> Drop for Freeze<'_, T> {
    fn drop(&mut self) {
        for (cell, _) in &self.cells {
            // Release: the owner's next Acquire load of 0 sees what we wrote
            // (we also wrote it under the lock, which the owner may take).
            cell.remote.fetch_sub(1, Ordering::Release);
        }
    }
}

/// Every cell of a `Freeze` locked: a consistent view of all of them.
pub struct AllLocked<'f, 'c, T> {
    freeze: &'f Freeze<'c, T>,
    _guards: ArrayVec<MutexGuard<'c, ()>, MAX_CPUS>,
}

impl<T> AllLocked<'_, '_, T> {
    /// Runs `f` on cell `i`.
    pub fn with<R>(&mut self, i: usize, f: impl FnOnce(&mut T) -> R) -> R {
        let (cell, _) = self.freeze.cells[i];
        // SAFETY: as for `Freeze::with` (every owner was quiesced), and we
        // hold every cell's lock; `&mut self` keeps the accesses apart.
        cell.value.with_mut(|p| f(unsafe { &mut *p }))
    }

    pub fn len(&self) -> usize {
        self.freeze.len()
    }

    pub fn is_empty(&self) -> bool {
        self.freeze.is_empty()
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use crate::testing::{on_cpu, Threads};

    fn nested(raise_remote: bool) {
        let cell = OwnerCell::new(0u32);
        cell.bind(0);
        let platform = Threads::new(1);
        on_cpu(0);
        platform.without_interrupts(|me| {
            // A freeze by the owner itself raises `remote`: the owner's
            // accesses then take the slow (locked) path.
            let _freeze = raise_remote.then(|| Freeze::begin([&cell], me, &platform));
            cell.with_owner(me, |_| cell.with_owner(me, |v| *v += 1));
        });
    }

    #[test]
    #[should_panic(expected = "bound to CPU 0 cannot be rebound to CPU 1")]
    fn a_cell_bound_to_cpu_0_is_bound() {
        // CPU 0 is stored as 1: 0 means unbound (a new cell is all zeros).
        let cell = OwnerCell::new(0u32);
        assert_eq!(cell.owner(), None);
        cell.bind(0);
        cell.bind(0); // the same CPU again is fine
        assert_eq!(cell.owner(), Some(0));
        cell.bind(1);
    }

    #[test]
    fn the_last_cpu_binds() {
        let cell = OwnerCell::new(0u32);
        cell.bind(MAX_CPUS - 1);
        assert_eq!(cell.owner(), Some(MAX_CPUS - 1));
    }

    #[test]
    #[should_panic(expected = "nested owner access")]
    fn a_nested_access_on_the_lock_free_path_panics() {
        nested(false);
    }

    #[test]
    #[should_panic(expected = "nested owner access")]
    fn a_nested_access_on_the_locked_path_panics() {
        nested(true);
    }
}
