//! The simulated TLB and the shootdown gate themselves: what a CPU may
//! hold, what drops it, and that each broken promise panics.
// Host tests map and free frames by address: host memory is a vector of
// atomics, so a wrong address is test data, never undefined behaviour.
#![allow(unsafe_code)]

use core::sync::atomic::Ordering;

use super::shootdown_gate::{Park, Shot};
use super::table::{lookup, Lookup};
use super::testing::{access, boot, SimMachine};
use super::*;
use crate::testing::on_cpu;

const SEED: u64 = KERNEL_SEED_AREA.start;

/// A fresh frame mapped at kernel page `virt`; CPU 0 touches it.
fn map(vm: &Vm<SimMachine>, virt: u64) -> u64 {
    let frame = vm.platform().alloc_phys();
    // SAFETY: host memory is a vector of atomics: mapping any address is test data, not aliasing.
    unsafe { vm.map_single(vm.kernel(), virt, PhysAddr::new(frame), Flags::WRITE, PageSize::Size4K) }.unwrap();
    assert_eq!(vm.platform().touch(0, virt), Some(frame));
    frame
}

/// The entry at `level` for `virt` in the kernel space.
fn entry(vm: &Vm<SimMachine>, virt: u64, level: usize) -> &core::sync::atomic::AtomicU64 {
    match lookup(vm.platform(), vm.kernel().root, virt, level) {
        Lookup::Entry { entry, .. } => entry,
        Lookup::NoTable => panic!("no table for {virt:#x}"),
    }
}

#[test]
fn every_cpu_with_the_root_loaded_may_hold_what_it_reaches() {
    let vm = boot(256, 3);
    let f = map(&vm, SEED);
    let m = vm.platform();
    for cpu in 0..3 {
        assert_eq!(m.may_hold(cpu, SEED), vec![f], "CPU {cpu}");
    }
    assert!(m.may_hold(3, SEED).is_empty(), "an offline CPU has no root loaded");
    let pt = pte::addr(entry(&vm, SEED, 1).load(Ordering::Relaxed));
    assert!(m.holds_table(2, pt));
}

#[test]
#[should_panic(expected = "CPU 1 may still hold it as the frame of leaf 0xffffff0040000000")]
fn freeing_a_frame_without_a_shootdown_panics() {
    let vm = boot(256, 2);
    let f = map(&vm, SEED);
    entry(&vm, SEED, 0).store(0, Ordering::Release);
    let _ = vm.platform().free_phys(f);
}

#[test]
fn after_the_shootdown_of_its_page_the_frame_may_go() {
    let vm = boot(256, 2);
    let f = map(&vm, SEED);
    assert_eq!(vm.umap_single(vm.kernel(), SEED, PageSize::Size4K), Ok(crate::frame::PhysAddr::new(f)));
    assert!(vm.platform().may_hold(1, SEED).is_empty());
    vm.platform().free_phys(f).unwrap();
}

#[test]
fn a_shootdown_drops_its_range_and_every_table_pointer() {
    let vm = boot(256, 2);
    let (a, b) = (SEED, SEED + 2 * PAGE_SIZE);
    let fb = {
        map(&vm, a);
        map(&vm, b)
    };
    let m = vm.platform();
    let pt = pte::addr(entry(&vm, a, 1).load(Ordering::Relaxed));
    m.shootdown(CpuSet::from_bits(0b10), VirtAddr::new(a), 1).unwrap();
    assert!(m.may_hold(1, a).is_empty() && !m.holds_table(1, pt), "CPU 1 dropped the page and the tables");
    assert_eq!(m.may_hold(1, b), vec![fb], "a page outside the range stays");
    assert!(!m.may_hold(0, a).is_empty() && m.holds_table(0, pt), "CPU 0 was no target");
    m.shootdown(CpuSet::from_bits(0b10), VirtAddr::new(SEED + (1 << 30)), tlb_sim::FULL_FLUSH_PAGES + 1).unwrap();
    assert!(m.may_hold(1, b).is_empty(), "more than FULL_FLUSH_PAGES pages flush everything");
}

#[test]
fn a_failed_shootdown_drops_nothing() {
    let vm = boot(256, 2);
    let f = map(&vm, SEED);
    let m = vm.platform();
    m.fail_shootdowns.store(true, Ordering::Relaxed);
    assert!(m.shootdown(CpuSet::from_bits(0b11), VirtAddr::new(SEED), 1).is_err());
    assert_eq!(m.may_hold(1, SEED), vec![f]);
}

#[test]
#[should_panic(expected = "CPU 0 may still hold it as a level-0 page table covering from 0xffffff0040000000")]
fn freeing_a_detached_table_without_a_shootdown_panics() {
    let vm = boot(256, 1);
    map(&vm, SEED);
    let pd_entry = entry(&vm, SEED, 1);
    let pt = pte::addr(pd_entry.load(Ordering::Relaxed));
    pd_entry.store(0, Ordering::Release);
    let _ = vm.platform().free_phys(pt);
}

#[test]
#[should_panic(expected = "mapped again before a shootdown")]
fn mapping_a_page_again_before_its_shootdown_panics() {
    let vm = boot(256, 2);
    map(&vm, SEED);
    let other = vm.platform().alloc_phys();
    // SAFETY: host memory is a vector of atomics: mapping any address is test data, not aliasing.
    unsafe { vm.retarget_unflushed(SEED, crate::frame::PhysAddr::new(other)) }.unwrap();
    vm.platform().touch(1, SEED);
}

#[test]
fn only_cpus_running_a_space_hold_it_and_loading_a_root_drops_it() {
    let vm = boot(256, 3);
    let m = vm.platform();
    let user = vm.new_user_space().unwrap();
    on_cpu(1);
    let active = vm.activate(&user).unwrap();
    on_cpu(0);
    let u = vm.vmalloc(&user, PAGE_SIZE, USER_END, 1, Flags::USER).unwrap();
    let f = vm.map_get(&user, u).unwrap().phys.as_u64();
    assert_eq!(access(&vm, 1, u), Some(f));
    assert_eq!(access(&vm, 2, u), None, "CPU 2 runs the kernel space");
    assert!(m.may_hold(2, u).is_empty());
    let kernel_page = SEED + 8 * PAGE_SIZE;
    let k = map(&vm, kernel_page);
    on_cpu(1);
    drop(active);
    on_cpu(0);
    assert!(m.may_hold(1, u).is_empty(), "loading the kernel root dropped the user page");
    assert_eq!(m.may_hold(1, kernel_page), vec![k], "and the kernel half is cacheable again");
    vm.vmfree(&user, u, 1).unwrap();
    vm.destroy_space(user).map_err(|(e, _)| e).unwrap();
}

#[test]
#[should_panic(expected = "CPU 1 may still hold it as its loaded root")]
fn freeing_a_loaded_root_panics() {
    let vm = boot(256, 2);
    let user = vm.new_user_space().unwrap();
    on_cpu(1);
    let _active = vm.activate(&user).unwrap();
    let _ = vm.platform().free_phys(user.replicas.root(1));
}

#[test]
fn a_parked_shootdown_waits_for_its_release() {
    let vm = boot(256, 2);
    map(&vm, SEED);
    let m = vm.platform();
    let shot = Shot { targets: 0b10, start: SEED, pages: 1 };
    for at in [Park::BeforeSend, Park::AfterAcks] {
        m.shootdowns.lock().unwrap().clear();
        m.touch(1, SEED);
        m.park_shootdowns_of(1, at);
        std::thread::scope(|s| {
            let h = s.spawn(|| {
                on_cpu(1);
                m.shootdown(CpuSet::from_bits(shot.targets), VirtAddr::new(shot.start), shot.pages)
            });
            assert_eq!(m.wait_parked(1), shot);
            let sent = !m.shootdowns.lock().unwrap().is_empty();
            assert_eq!(sent, at == Park::AfterAcks, "{at:?}");
            assert_eq!(m.may_hold(1, SEED).is_empty(), at == Park::AfterAcks, "{at:?}");
            assert!(!h.is_finished(), "{at:?}: returned while parked");
            m.release_shootdown(1);
            assert_eq!(h.join().unwrap(), Ok(()));
        });
        assert!(m.may_hold(1, SEED).is_empty());
    }
}
