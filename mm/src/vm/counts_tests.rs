//! The virtual-memory counters move when their event happens and only then.
// Host tests map and free frames by address: host memory is a vector of
// atomics, so a wrong address is test data, never undefined behaviour.
#![allow(unsafe_code)]

use std::sync::Barrier;
use std::thread;
use std::time::Duration;

use super::testing::{boot, SimMachine};
use super::*;
use crate::lock_count::LockSnapshot;
use crate::testing::on_cpu;

const SEED: u64 = KERNEL_SEED_AREA.start;

fn total(vm: &Vm<SimMachine>) -> VmCountSnapshot {
    let mut t = VmCountSnapshot::default();
    for cpu in 0..crate::MAX_CPUS {
        t += vm.counts(cpu);
    }
    t
}

#[test]
fn tables_are_counted_as_they_are_made_zeroed_and_freed() {
    let vm = boot(4096, 2);
    let k = vm.kernel();
    let frame = vm.platform().alloc_phys();
    let free = vm.platform().free_bytes();
    let start = vm.counts(0);
    // SAFETY: host memory is a vector of atomics: mapping any address is test data, not aliasing.
    unsafe { vm.map_single(k, SEED, PhysAddr::new(frame), Flags::WRITE, PageSize::Size4K) }.unwrap();
    let mapped = vm.counts(0) - start;
    let made = (free - vm.platform().free_bytes()) / PAGE_SIZE;
    assert!(made > 0, "setup: the first page in the area needs tables");
    assert_eq!((mapped.tables_allocated, mapped.tables_zeroed, mapped.tables_freed), (made, made, 0), "{mapped:?}");
    assert_eq!(mapped.table_lock, LockSnapshot { acquired: 1, contended: 0, spins: 0 }, "one shared acquisition");

    // A neighbour in the same last-level table needs none; a lookup none.
    let before = vm.counts(0);
    // SAFETY: host memory is a vector of atomics: mapping any address is test data, not aliasing.
    unsafe { vm.map_single(k, SEED + PAGE_SIZE, PhysAddr::new(frame), Flags::WRITE, PageSize::Size4K) }.unwrap();
    vm.map_get(k, SEED + PAGE_SIZE).unwrap();
    let d = vm.counts(0) - before;
    assert_eq!((d.tables_allocated, d.tables_zeroed, d.tables_freed), (0, 0, 0), "{d:?}");
    assert_eq!(d.table_lock.acquired, 2);

    // Unmapping both empties the tables, which stay for the next map
    // there; a sweep frees every one made.
    let before = vm.counts(0);
    assert_eq!(vm.umap_single(k, SEED + PAGE_SIZE, PageSize::Size4K), Ok(crate::frame::PhysAddr::new(frame)));
    assert_eq!(vm.umap_single(k, SEED, PageSize::Size4K), Ok(crate::frame::PhysAddr::new(frame)));
    let d = vm.counts(0) - before;
    assert_eq!((d.tables_allocated, d.tables_freed), (0, 0), "{d:?}");
    assert_eq!(vm.sweep(k), Ok(made));
    let d = vm.counts(0) - before;
    assert_eq!((d.tables_allocated, d.tables_freed), (0, made), "{d:?}");
    assert_eq!(vm.platform().free_bytes(), free);
    assert_eq!(vm.counts(1), VmCountSnapshot::default(), "CPU 1 did nothing");
}

#[test]
fn a_user_space_counts_its_root_and_tables() {
    let vm = boot(4096, 1);
    let before = total(&vm);
    let space = vm.new_user_space().unwrap();
    let frame = vm.platform().alloc_phys();
    // SAFETY: host memory is a vector of atomics: mapping any address is test data, not aliasing.
    unsafe { vm.map_single(&space, USER_START, PhysAddr::new(frame), Flags::WRITE | Flags::USER, PageSize::Size4K) }
        .unwrap();
    let made = total(&vm) - before;
    assert_eq!(made.tables_allocated, 4, "root, PDPT, PD, PT: {made:?}");
    assert_eq!(made.tables_zeroed, 4);
    vm.umap_single(&space, USER_START, PageSize::Size4K).unwrap();
    assert!(vm.destroy_space(space).is_ok());
    let d = total(&vm) - before;
    assert_eq!(d.tables_freed, 4, "pruned or freed with the space: {d:?}");
}

#[test]
fn a_shared_side_waiting_for_a_pruner_is_contended() {
    let vm = boot(4096, 2);
    let k = vm.kernel();
    let held = Barrier::new(2);
    let before = vm.counts(0);
    thread::scope(|s| {
        s.spawn(|| {
            on_cpu(1);
            let g = k.tables.try_write().expect("nobody holds the lock");
            held.wait();
            thread::sleep(Duration::from_millis(30));
            drop(g);
        });
        held.wait();
        on_cpu(0);
        assert_eq!(vm.map_get(k, SEED), Err(VmError::NotMapped { virt: SEED }));
    });
    let d = (vm.counts(0) - before).table_lock;
    assert_eq!((d.acquired, d.contended), (1, 1), "{d:?}");
    assert!(d.spins > 0, "{d:?}");
}

#[test]
fn a_sweep_that_cannot_have_the_lock_is_counted_refused() {
    let vm = boot(4096, 2);
    let k = vm.kernel();
    let frame = vm.platform().alloc_phys();
    // SAFETY: host memory is a vector of atomics: mapping any address is test data, not aliasing.
    unsafe { vm.map_single(k, SEED, PhysAddr::new(frame), Flags::WRITE, PageSize::Size4K) }.unwrap();
    assert_eq!(vm.umap_single(k, SEED, PageSize::Size4K), Ok(crate::frame::PhysAddr::new(frame)));
    let reader = k.tables.read(vm.platform(), &crate::lock_count::LockCounts::new()).unwrap();
    let before = vm.counts(0);
    assert_eq!(vm.sweep(k), Ok(0), "a sweep never waits for the lock");
    let d = vm.counts(0) - before;
    drop(reader);
    // The exclusive side never came, after every one of its tries.
    assert_eq!((d.table_lock.acquired, d.table_lock.contended), (0, 1), "{d:?}");
    assert_eq!(d.table_lock.spins, 1000, "PRUNE_ATTEMPTS failed tries");
    assert_eq!(d.tables_freed, 0, "the tables stay for a later sweep");
    assert!(vm.sweep(k).unwrap() > 0, "the next sweep frees them");
}
