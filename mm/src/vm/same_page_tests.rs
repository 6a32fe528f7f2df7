//! Calls that race for the same pages: every page has at most one winner,
//! a call that loses any page fails as a whole and changes nothing, and a
//! failed shootdown holds back exactly what it says.
// Host tests map and free frames by address: host memory is a vector of
// atomics, so a wrong address is test data, never undefined behaviour.
#![allow(unsafe_code)]

use std::boxed::Box;
use std::sync::{Arc, Barrier};
use std::vec::Vec;

use super::testing::{boot, SimMachine};
use super::*;
use crate::testing::on_cpu;

const PAGES: u64 = 8;

/// The kernel root loaded on every CPU, so the simulated TLB checks every
/// free against what each CPU may hold.
fn machine(cpus: usize) -> Vm<SimMachine> {
    boot(4096, cpus)
}

fn free(vm: &Vm<SimMachine>) -> u64 {
    vm.platform().free_bytes()
}

/// What one racer tries on the 8 pages from `a`: (first page, pages) of a
/// `vmfree`, or of a `umap_single` when pages is 0.
const CALLS: [(u64, u64); 4] = [(0, 8), (2, 4), (4, 4), (3, 0)];

#[test]
fn racing_unmaps_of_the_same_pages_have_one_winner_each() {
    let vm = Arc::new(machine(5));
    let before = free(&vm);
    let user = Arc::new(vm.new_user_space().unwrap());
    on_cpu(4);
    let active = vm.activate(&user).unwrap();
    on_cpu(0);
    let (mut contested, mut lost) = (0, 0);
    for round in 0..400 {
        let a = vm.vmalloc(&user, 0x10_0000, USER_END, PAGES, Flags::WRITE | Flags::USER).unwrap();
        let frames: Vec<u64> =
            (0..PAGES).map(|i| vm.map_get(&user, a + i * PAGE_SIZE).unwrap().phys.as_u64()).collect();
        let start = Arc::new(Barrier::new(CALLS.len()));
        let results: Vec<Result<u64, VmError>> = CALLS
            .iter()
            .enumerate()
            .map(|(cpu, &(first, pages))| {
                let (vm, user, start) = (vm.clone(), user.clone(), start.clone());
                std::thread::spawn(move || {
                    on_cpu(cpu);
                    start.wait();
                    match pages {
                        0 => vm.umap_single(&user, a + first * PAGE_SIZE, PageSize::Size4K).map(|p| p.as_u64()),
                        n => vm.vmfree(&user, a + first * PAGE_SIZE, n).map(|_| 0),
                    }
                })
            })
            .collect::<Vec<_>>()
            .into_iter()
            .map(|h| h.join().unwrap())
            .collect();
        let mut winners = [0u32; PAGES as usize];
        for (&(first, pages), r) in CALLS.iter().zip(&results) {
            match r {
                Ok(frame) => {
                    for p in first..first + pages.max(1) {
                        winners[p as usize] += 1;
                    }
                    if pages == 0 {
                        assert_eq!(
                            *frame, frames[first as usize],
                            "round {round}: umap_single hands back the page's frame"
                        );
                        vm.platform().free_phys(*frame).unwrap();
                    }
                }
                Err(VmError::NotMapped { virt }) => {
                    assert!(
                        (a + first * PAGE_SIZE..a + (first + pages.max(1)) * PAGE_SIZE).contains(virt),
                        "round {round}: {virt:#x} is not the loser's"
                    );
                    lost += 1;
                }
                Err(e) => panic!("round {round}: {e:?}"),
            }
        }
        contested += u64::from(results.iter().filter(|r| r.is_ok()).count() < CALLS.len());
        for (i, &w) in winners.iter().enumerate() {
            let va = a + i as u64 * PAGE_SIZE;
            assert!(w <= 1, "round {round}: page {i} unmapped by {w} calls: {results:?}");
            match (w, vm.map_get(&user, va)) {
                (1, Err(VmError::NotMapped { .. })) => {}
                (0, Ok(t)) => assert_eq!(
                    (t.phys.as_u64(), t.flags),
                    (frames[i], Flags::WRITE | Flags::USER),
                    "round {round}: page {i} changed"
                ),
                (w, now) => panic!("round {round}: page {i} won {w} times but now {now:?}: {results:?}"),
            }
        }
        // Give back what nobody won (umap_single leaves a hole: vmfree
        // goes around it).
        for (i, &w) in winners.iter().enumerate() {
            if w == 0 {
                vm.vmfree(&user, a + i as u64 * PAGE_SIZE, 1).unwrap();
            }
        }
    }
    assert!(lost > 0 && contested > 0, "the calls never raced");
    on_cpu(4);
    drop(active);
    on_cpu(0);
    let user = Arc::into_inner(user).unwrap();
    vm.destroy_space(user).map_err(|(e, _)| e).unwrap();
    // Emptied tables may stay until the space goes: compare after.
    assert_eq!(free(&vm), before, "every frame came back once");
    assert!(vm.platform().frames.audit().is_ok());
    assert_eq!(vm.quarantined_frames(), 0);
}

#[test]
fn a_quarantine_is_held_for_good_and_counted_exactly() {
    let vm = machine(2);
    let fail = |on: bool| vm.platform().fail_shootdowns.store(on, core::sync::atomic::Ordering::Relaxed);
    let a = vm.k_mem_map(2 * PAGE_SIZE, KMemFlags::RW).unwrap();
    fail(true);
    assert_eq!(vm.k_mem_unmap(a, 2 * PAGE_SIZE), Err(VmError::Shootdown { cpus: 0b11 }));
    fail(false);
    assert_eq!(vm.quarantined_frames(), 2);
    let held = (free(&vm), vm.region_bytes());
    // A sweep of the whole kernel area after a good flush may take over
    // markers in flight, never quarantined ones (nor their table).
    let b = vm.k_mem_map(PAGE_SIZE, KMemFlags::RW).unwrap();
    vm.k_mem_unmap(b, PAGE_SIZE).unwrap();
    vm.sweep(vm.kernel()).unwrap();
    assert_eq!((free(&vm), vm.region_bytes()), held, "the sweep reused quarantined memory");
    assert_eq!(vm.quarantined_frames(), 2);
    assert_eq!(
        vm.k_mem_unmap(a, 2 * PAGE_SIZE),
        Err(VmError::NotARegion { addr: a, size: 2 * PAGE_SIZE }),
        "the region stays claimed"
    );
    // umap_single's frame is held too, and counted.
    let frame = vm.platform().alloc_phys();
    // SAFETY: host memory is a vector of atomics: mapping any address is test data, not aliasing.
    unsafe { vm.map_single(vm.kernel(), KERNEL_SEED_AREA.start, PhysAddr::new(frame), Flags::READ, PageSize::Size4K) }
        .unwrap();
    fail(true);
    assert_eq!(
        vm.umap_single(vm.kernel(), KERNEL_SEED_AREA.start, PageSize::Size4K),
        Err(VmError::Shootdown { cpus: 0b11 })
    );
    fail(false);
    assert_eq!(vm.quarantined_frames(), 3);
    assert_eq!(
        vm.vmfind(vm.kernel(), KERNEL_SEED_AREA.start, KERNEL_SEED_AREA.end, 1),
        Ok(KERNEL_SEED_AREA.start + PAGE_SIZE),
        "the address stays reserved"
    );
}

#[test]
fn a_protect_that_succeeds_holds_even_if_a_racing_unmap_puts_pages_back() {
    // A long range, so that the protect can run while the vmfree has
    // taken the first pages and not yet lost the last one.
    const LONG: u64 = 64;
    let vm = Arc::new(machine(4));
    let user = Arc::new(vm.new_user_space().unwrap());
    let mut protected = 0;
    for round in 0..200 {
        let a = vm.vmalloc(&user, 0x10_0000, USER_END, LONG, Flags::WRITE | Flags::USER).unwrap();
        let start = Arc::new(Barrier::new(3));
        type Op = Box<dyn FnOnce(&Vm<SimMachine>, &AddressSpace) -> Result<u64, VmError> + Send>;
        let spawn = |cpu: usize, f: Op| {
            let (vm, user, start) = (vm.clone(), user.clone(), start.clone());
            std::thread::spawn(move || {
                on_cpu(cpu);
                start.wait();
                f(&vm, &user)
            })
        };
        // The vmfree loses the last page to the umap_single (often) and
        // puts the others back, maybe after a protect that returned Ok.
        let f = spawn(2, Box::new(move |vm, u| vm.vmfree(u, a, LONG).map(|_| 0)));
        let p = spawn(1, Box::new(move |vm, u| vm.protect(u, a, LONG, Flags::USER).map(|_| 0)));
        let s = spawn(
            3,
            Box::new(move |vm, u| vm.umap_single(u, a + (LONG - 1) * PAGE_SIZE, PageSize::Size4K).map(|p| p.as_u64())),
        );
        let (p, f, s) = (p.join().unwrap(), f.join().unwrap(), s.join().unwrap());
        if let Ok(frame) = s {
            vm.platform().free_phys(frame).unwrap();
        }
        protected += u32::from(p.is_ok());
        for i in 0..LONG {
            if let Ok(t) = vm.map_get(&user, a + i * PAGE_SIZE) {
                assert!(
                    p.is_err() || t.flags == Flags::USER,
                    "round {round}: page {i} is {:?} after protect {p:?}, vmfree {f:?}, umap {s:?}",
                    t.flags
                );
                vm.vmfree(&user, a + i * PAGE_SIZE, 1).unwrap();
            }
        }
    }
    assert!(protected > 0, "protect never won");
    let user = Arc::into_inner(user).unwrap();
    vm.destroy_space(user).map_err(|(e, _)| e).unwrap();
    assert!(vm.platform().frames.audit().is_ok());
}

#[test]
fn a_huge_page_quarantine_counts_every_page() {
    let vm = machine(2);
    let big = KERNEL_SEED_AREA.start + (4 << 21);
    // SAFETY: host memory is a vector of atomics: mapping any address is test data, not aliasing.
    unsafe { vm.map_single(vm.kernel(), big, PhysAddr::new(0x20_0000), Flags::READ, PageSize::Size2M) }.unwrap();
    vm.platform().fail_shootdowns.store(true, core::sync::atomic::Ordering::Relaxed);
    assert_eq!(vm.umap_single(vm.kernel(), big, PageSize::Size2M), Err(VmError::Shootdown { cpus: 0b11 }));
    assert_eq!(vm.quarantined_frames(), 512);
}
