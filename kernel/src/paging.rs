//! Demand paging in the kernel: turns it on at boot over a RAM backing
//! store set aside from the frame allocator, and resolves page faults on
//! the kernel's on-demand regions.

use alloc::boxed::Box;
use alloc::vec::Vec;

use cpus::PerCpu;
use mm::buddy::MAX_ORDER;
use mm::paging::block_store::BlockStore;
#[cfg(feature = "test-hooks")]
use mm::paging::faulty_store::FaultyStore;
use mm::paging::policy::{Lru, Nru};
use mm::paging::store_switch::StoreSwitch;
use mm::paging::{Access, BackingStore, EvictionPolicy, PagerConfig, Paging, PagingError, StoreError};
use spin::Once;

use crate::cmdline::Eviction;
use crate::{frames, vm};

/// Slots of the RAM backing store: 16 MiB.
pub const STORE_SLOTS: u64 = 4096;
/// Most slots used on a swap disk: 1 GiB.
const DISK_SLOTS: u64 = 1 << 18;

/// The test image's (disarmed) fault injector in front of the stores.
#[cfg(feature = "test-hooks")]
static STORE: Once<&'static FaultyStore> = Once::new();
/// The stores paging uses.
static SWITCH: Once<&'static StoreSwitch> = Once::new();

/// The fault injector in front of the store (test image only).
#[cfg(feature = "test-hooks")]
pub fn faulty_store() -> &'static FaultyStore {
    STORE.get().expect("paging::init has not run")
}
/// Free frames kept for the rest of the kernel: below this a page-in
/// evicts first.
const RESERVE_FRAMES: u64 = 512;

/// Per CPU: why paging refused the last fault it could not resolve, so a
/// test can tell a reported fault from a resolved one. Reached by index
/// without a `CpuGuard`: the fault handler only `try_lock`s it, so a fault
/// taken while this CPU's thread holds the lock skips the record instead
/// of deadlocking.
static LAST_ERROR: PerCpu<spin::Mutex<Option<PagingError>>> = cpus::per_cpu![spin::Mutex::new(None)];

/// Turns paging on over the swap disk when there is one, else over the RAM
/// store (16 MiB set aside from the frame allocator in runs of its largest
/// block, made either way so benchmarks can compare the two).
pub fn init(eviction: Eviction, disk: Option<crate::swap_disk::VirtioDisk>) {
    let f = frames::get();
    let run = 1u64 << MAX_ORDER;
    let runs: Vec<_> =
        (0..STORE_SLOTS / run).map(|_| f.alloc_contiguous(run).expect("no memory for the RAM backing store")).collect();
    // SAFETY: the runs were just allocated and go to the store for good.
    let ram: &'static dyn BackingStore =
        Box::leak(Box::new(unsafe { mm::paging::store::RamStore::over(vm::get(), runs, run) }));
    let mut stores = Vec::new();
    if let Some(disk) = disk {
        let disk: &'static dyn BackingStore = Box::leak(Box::new(BlockStore::new(disk, DISK_SLOTS)));
        stores.push(disk);
    }
    stores.push(ram);
    let switch: &'static StoreSwitch = Box::leak(Box::new(StoreSwitch::new(stores)));
    SWITCH.call_once(|| switch);
    let store = injector_before(switch);
    let db = f.db();
    let policy: &'static dyn EvictionPolicy = match eviction {
        Eviction::Nru => Box::leak(Box::new(Nru::new())),
        Eviction::Lru => Box::leak(Box::new(Lru::new(db.len()))),
    };
    let config = PagerConfig { db, store, policy, resident_limit: u64::MAX, reserve: RESERVE_FRAMES };
    Paging::enable(vm::get(), config).expect("paging enabled twice");
    let slots = switch.usage().1;
    log::info!("paging: {eviction:?} eviction, {} store of {} MiB", switch.name(), (slots * mm::PAGE_SIZE) >> 20);
}

/// The store paging is given: the test image puts its fault injector in
/// front of the stores; the production image pages to them directly.
#[cfg(feature = "test-hooks")]
fn injector_before(switch: &'static StoreSwitch) -> &'static dyn BackingStore {
    let faulty: &'static FaultyStore = Box::leak(Box::new(FaultyStore::new(switch)));
    STORE.call_once(|| faulty);
    faulty
}

#[cfg(not(feature = "test-hooks"))]
fn injector_before(switch: &'static StoreSwitch) -> &'static dyn BackingStore {
    switch
}

/// The kernel VM's paging: `NotEnabled` before `init`.
pub fn get() -> Result<Paging<'static, vm::KernelVm>, PagingError> {
    Paging::of(vm::get())
}

/// The stores paging can use, the one it starts on first.
pub fn stores() -> Vec<&'static str> {
    SWITCH.get().expect("paging::init has not run").names().collect()
}

/// Moves paging to the store called `name` (only while no page is in the
/// current one).
pub fn use_store(name: &str) -> Result<(), StoreError> {
    SWITCH.get().expect("paging::init has not run").select(name)
}

/// The name of the store paging uses (`ram`, `virtio-blk`).
pub fn store_name() -> &'static str {
    SWITCH.get().expect("paging::init has not run").name()
}

/// Called by the page-fault handler for faults from kernel code: true if
/// the fault was on an on-demand page and is resolved (retry the access).
pub fn resolve_fault(addr: u64, error_code: u64) -> bool {
    let Ok(paging) = get() else { return false };
    match paging.page_fault(addr, Access::from_error_code(error_code)) {
        Ok(()) => true,
        Err(e) => {
            let cpu = smp::percpu::current_index();
            if let Some(mut last) = LAST_ERROR.unguarded(cpu).try_lock() {
                *last = Some(e);
            }
            false
        }
    }
}

/// The error of the last fault on this CPU paging refused, left in place
/// (for the fatal report; `None` if the slot is busy).
pub fn peek_last_error() -> Option<PagingError> {
    *LAST_ERROR.unguarded(smp::percpu::current_index()).try_lock()?
}

/// The error of the last fault on this CPU paging refused, and clears it.
#[cfg(feature = "test-hooks")]
pub fn take_last_error() -> Option<PagingError> {
    LAST_ERROR.unguarded(smp::percpu::current_index()).lock().take()
}
