//! Demand paging in the kernel: turns it on at boot over a RAM backing
//! store set aside from the frame allocator, and resolves page faults on
//! the kernel's on-demand regions.

use alloc::boxed::Box;
use alloc::vec::Vec;

use mm::buddy::MAX_ORDER;
use mm::paging::policy::{Lru, Nru};
use mm::paging::store::RamStore;
use mm::paging::{Access, EvictionPolicy, PagerConfig, PagingError};
use smp::MAX_CPUS;

use crate::cmdline::Eviction;
use crate::vm::KernelVm;
use crate::{frames, vm};

/// Slots of the RAM backing store: 16 MiB.
pub const STORE_SLOTS: u64 = 4096;
/// Free frames kept for the rest of the kernel: below this a page-in
/// evicts first.
const RESERVE_FRAMES: u64 = 512;

/// Per CPU: why paging refused the last fault it could not resolve, so a
/// test can tell a reported fault from a resolved one.
static LAST_ERROR: [spin::Mutex<Option<PagingError>>; MAX_CPUS] = [const { spin::Mutex::new(None) }; MAX_CPUS];

/// Sets the store aside (runs of the buddy's largest block) and turns
/// paging on.
pub fn init(eviction: Eviction) {
    let f = frames::get();
    let run = 1u64 << MAX_ORDER;
    let runs: Vec<u64> = (0..STORE_SLOTS / run).map(|_| f.alloc_contiguous(run).expect("no memory for the RAM backing store")).collect();
    let store: &'static RamStore<'static, KernelVm> = Box::leak(Box::new(RamStore::new(vm::get().platform(), runs, run)));
    let db = f.db();
    let policy: &'static dyn EvictionPolicy = match eviction {
        Eviction::Clock => Box::leak(Box::new(Nru::new())),
        Eviction::Lru => Box::leak(Box::new(Lru::new(db.len()))),
    };
    let config = PagerConfig { db, store, policy, resident_limit: u64::MAX, reserve: RESERVE_FRAMES };
    vm::get().enable_paging(config).expect("paging enabled twice");
    log::info!("paging: {eviction:?} eviction, RAM store of {} MiB", STORE_SLOTS * mm::PAGE_SIZE >> 20);
}

/// Called by the page-fault handler for faults from kernel code: true if
/// the fault was on an on-demand page and is resolved (retry the access).
pub fn resolve_fault(addr: u64, error_code: u64) -> bool {
    let Ok(_) = vm::get().pager() else { return false };
    match vm::get().page_fault(addr, Access::from_error_code(error_code)) {
        Ok(()) => true,
        Err(e) => {
            let cpu = smp::percpu::current_index();
            if let Some(mut last) = LAST_ERROR[cpu].try_lock() {
                *last = Some(e);
            }
            false
        }
    }
}

/// The error of the last fault on this CPU paging refused, and clears it.
pub fn take_last_error() -> Option<PagingError> {
    LAST_ERROR[smp::percpu::current_index()].lock().take()
}
