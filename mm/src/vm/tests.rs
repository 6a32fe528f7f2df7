// Host tests map and free frames by address: host memory is a vector of
// atomics, so a wrong address is test data, never undefined behaviour.
#![allow(unsafe_code)]
use super::testing::{access, boot, SimMachine};
use super::*;
use crate::testing::on_cpu;

const SEED: u64 = KERNEL_SEED_AREA.start;

/// 4096 frames, `cpus` CPUs, each with the kernel root loaded.
fn machine(cpus: usize) -> Vm<SimMachine> {
    boot(4096, cpus)
}

fn free(vm: &Vm<SimMachine>) -> u64 {
    vm.platform().free_bytes()
}

fn shootdowns(vm: &Vm<SimMachine>) -> Vec<(u64, u64, u64)> {
    vm.platform().shootdowns.lock().unwrap().clone()
}

#[test]
fn map_get_and_unmap_one_page() {
    let vm = machine(2);
    let k = vm.kernel();
    let frame = vm.platform().alloc_phys();
    let before = free(&vm);
    // SAFETY: host memory is a vector of atomics: mapping any address is test data, not aliasing.
    unsafe { vm.map_single(k, SEED + 0x5000, PhysAddr::new(frame), Flags::WRITE, PageSize::Size4K) }.unwrap();
    let t = vm.map_get(k, SEED + 0x5123).unwrap();
    assert_eq!(
        (t.phys.as_u64(), t.flags, t.size, t.cache),
        (frame + 0x123, Flags::WRITE, PageSize::Size4K, CacheMode::WriteBack)
    );
    assert!(free(&vm) < before, "page tables were allocated");
    assert_eq!(
        // SAFETY: host memory is a vector of atomics: mapping any address is test data, not aliasing.
        unsafe { vm.map_single(k, SEED + 0x5000, PhysAddr::new(frame), Flags::READ, PageSize::Size4K) },
        Err(VmError::AlreadyMapped { virt: SEED + 0x5000 })
    );
    assert_eq!(vm.umap_single(k, SEED + 0x5000, PageSize::Size2M), Err(VmError::NotAligned { value: SEED + 0x5000 }));
    assert_eq!(vm.umap_single(k, SEED + 0x5000, PageSize::Size4K), Ok(PhysAddr::new(frame)));
    assert!(free(&vm) < before, "empty tables stay for the next map");
    assert_eq!(vm.map_get(k, SEED + 0x5000), Err(VmError::NotMapped { virt: SEED + 0x5000 }));
    assert_eq!(shootdowns(&vm), vec![(0b11, SEED + 0x5000, 1)], "kernel unmaps reach every online CPU");
    assert!(vm.sweep(k).unwrap() > 0);
    assert_eq!(free(&vm), before, "a sweep frees the empty tables");
    assert_eq!(vm.umap_single(k, SEED + 0x5000, PageSize::Size4K), Err(VmError::NotMapped { virt: SEED + 0x5000 }));
}

#[test]
fn size_classes_must_match() {
    let vm = machine(1);
    let k = vm.kernel();
    let big = SEED + (4 << 21);
    // SAFETY: host memory is a vector of atomics: mapping any address is test data, not aliasing.
    unsafe { vm.map_single(k, big, PhysAddr::new(0x20_0000), Flags::READ, PageSize::Size2M) }.unwrap();
    assert_eq!(vm.map_get(k, big + 0x1234).unwrap().phys.as_u64(), 0x20_1234);
    assert_eq!(
        vm.umap_single(k, big, PageSize::Size4K),
        Err(VmError::SizeMismatch { virt: big, mapped: PageSize::Size2M })
    );
    assert_eq!(
        // SAFETY: host memory is a vector of atomics: mapping any address is test data, not aliasing.
        unsafe { vm.map_single(k, big + PAGE_SIZE, PhysAddr::new(0x1000), Flags::READ, PageSize::Size4K) },
        Err(VmError::AlreadyMapped { virt: big + PAGE_SIZE })
    );
    // SAFETY: host memory is a vector of atomics: mapping any address is test data, not aliasing.
    unsafe { vm.map_single(k, SEED, PhysAddr::new(0x1000), Flags::READ, PageSize::Size4K) }.unwrap();
    assert_eq!(
        vm.umap_single(k, SEED, PageSize::Size2M),
        Err(VmError::SizeMismatch { virt: SEED, mapped: PageSize::Size4K })
    );
    assert_eq!(
        // SAFETY: host memory is a vector of atomics: mapping any address is test data, not aliasing.
        unsafe { vm.map_single(k, SEED, PhysAddr::new(0x20_0000), Flags::READ, PageSize::Size2M) },
        Err(VmError::AlreadyMapped { virt: SEED })
    );
    assert_eq!(vm.umap_single(k, big, PageSize::Size2M), Ok(PhysAddr::new(0x20_0000)));
}

#[test]
fn bad_inputs_are_refused_and_change_nothing() {
    let vm = machine(2);
    let k = vm.kernel();
    let user = vm.new_user_space().unwrap();
    let before = (free(&vm), shootdowns(&vm));
    let f = Flags::WRITE;
    let s4 = PageSize::Size4K;
    assert_eq!(
        // SAFETY: host memory is a vector of atomics: mapping any address is test data, not aliasing.
        unsafe { vm.map_single(k, SEED + 1, PhysAddr::new(0x1000), f, s4) },
        Err(VmError::NotAligned { value: SEED + 1 })
    );
    assert_eq!(
        // SAFETY: host memory is a vector of atomics: mapping any address is test data, not aliasing.
        unsafe { vm.map_single(k, SEED, PhysAddr::new(0x1001), f, s4) },
        Err(VmError::NotAligned { value: 0x1001 })
    );
    // An address no entry can hold (2^52 and up) is no `PhysAddr`: the
    // caller cannot even name it, so `map_single` never sees one.
    assert!(PhysAddr::try_new(1 << 52).is_err());
    assert_eq!(
        // SAFETY: host memory is a vector of atomics: mapping any address is test data, not aliasing.
        unsafe { vm.map_single(k, 0x1000, PhysAddr::new(0x1000), f, s4) },
        Err(VmError::BadRange { start: 0x1000, len: PAGE_SIZE }),
        "user address in kernel space"
    );
    // SAFETY: host memory is a vector of atomics: mapping any address is test data, not aliasing.
    assert_eq!(unsafe { vm.map_single(&user, 0, PhysAddr::new(0x1000), f, s4) }, Err(VmError::NullPage));
    assert_eq!(
        // SAFETY: host memory is a vector of atomics: mapping any address is test data, not aliasing.
        unsafe { vm.map_single(&user, SEED, PhysAddr::new(0x1000), f, s4) },
        Err(VmError::BadRange { start: SEED, len: PAGE_SIZE }),
        "kernel address in user space"
    );
    assert_eq!(
        // SAFETY: host memory is a vector of atomics: mapping any address is test data, not aliasing.
        unsafe { vm.map_single(&user, USER_END - PAGE_SIZE, PhysAddr::new(0x1000), f, PageSize::Size2M) },
        Err(VmError::NotAligned { value: USER_END - PAGE_SIZE })
    );
    assert_eq!(vm.vmalloc(&user, 0x1000, 0x10_0000, 0, f), Err(VmError::ZeroSize));
    assert_eq!(vm.vmfree(&user, 0x4000, 1), Err(VmError::NotMapped { virt: 0x4000 }));
    assert_eq!(vm.vmfree(&user, !0xfff, 2), Err(VmError::BadRange { start: !0xfff, len: 2 * PAGE_SIZE }));
    assert_eq!(vm.k_mem_map(0, KMemFlags::RW), Err(VmError::ZeroSize));
    assert_eq!(vm.k_mem_map(100, KMemFlags::RW), Err(VmError::NotAligned { value: 100 }));
    assert_eq!(vm.k_mem_map(PAGE_SIZE, KMemFlags::USER | KMemFlags::UNINIT), Err(VmError::UserUninit));
    assert_eq!(vm.k_mem_map(!0xfff, KMemFlags::RW), Err(VmError::OutOfVirtualSpace));
    assert_eq!(
        vm.k_mem_unmap(KERNEL_REGION_AREA.start + PAGE_SIZE, PAGE_SIZE),
        Err(VmError::NotARegion { addr: KERNEL_REGION_AREA.start + PAGE_SIZE, size: PAGE_SIZE })
    );
    assert_eq!(vm.phys_unmap(SEED, 10), Err(VmError::NotARegion { addr: SEED, size: 10 }));
    assert_eq!((free(&vm), shootdowns(&vm)), before);
    assert_eq!(vm.region_bytes(), 0);
}

#[test]
fn vmalloc_zeroes_and_vmfree_returns_every_frame() {
    let vm = machine(1);
    let user = vm.new_user_space().unwrap();
    let m = vm.platform();
    let before = free(&vm);
    let a = vm.vmalloc(&user, 0x40_0000, 0x80_0000, 3, Flags::WRITE | Flags::USER).unwrap();
    assert_eq!(a, 0x40_0000);
    let t = vm.map_get(&user, a).unwrap();
    assert_eq!(m.word(t.phys.as_u64(), 0), 0, "zeroed");
    m.set_word(t.phys.as_u64(), 0, 7);
    let b = vm.vmalloc(&user, 0x40_0000, 0x80_0000, 2, Flags::USER).unwrap();
    assert_eq!(b, a + 3 * PAGE_SIZE, "vmfind skips mapped pages");
    assert_eq!(vm.vmfind(&user, 0x40_0000, 0x40_0000 + 5 * PAGE_SIZE, 1), Err(VmError::OutOfVirtualSpace));
    // A page mapped with map_single is not vmalloc's: vmfree refuses it.
    // SAFETY: host memory is a vector of atomics: mapping any address is test data, not aliasing.
    unsafe { vm.map_single(&user, b + 2 * PAGE_SIZE, PhysAddr::new(0x1000), Flags::READ, PageSize::Size4K) }.unwrap();
    let mid = free(&vm);
    assert_eq!(vm.vmfree(&user, b, 3), Err(VmError::NotOwned { virt: b + 2 * PAGE_SIZE }));
    assert_eq!(
        vm.vmfree(&user, a, 6),
        Err(VmError::NotOwned { virt: b + 2 * PAGE_SIZE }),
        "the first foreign page is named"
    );
    assert_eq!(
        vm.vmfree(&user, a, (USER_END - a) / PAGE_SIZE),
        Err(VmError::NotOwned { virt: b + 2 * PAGE_SIZE }),
        "a huge count is checked page by page"
    );
    assert_eq!(free(&vm), mid, "refused vmfree changed nothing");
    assert!(vm.map_get(&user, a).is_ok());
    assert_eq!(vm.umap_single(&user, b + 2 * PAGE_SIZE, PageSize::Size4K), Ok(PhysAddr::new(0x1000)));
    vm.vmfree(&user, a, 3).unwrap();
    vm.vmfree(&user, b, 2).unwrap();
    vm.sweep(&user).unwrap();
    assert_eq!(free(&vm), before);
    assert!(shootdowns(&vm).is_empty(), "a space active nowhere needs no shootdown");
    vm.destroy_space(user).map_err(|(e, _)| e).unwrap();
}

#[test]
fn user_shootdowns_target_only_cpus_whose_replicas_reach_the_range() {
    let vm = machine(5);
    let user = vm.new_user_space().unwrap();
    for cpu in [1, 3, 4] {
        on_cpu(cpu);
        // Left active past the guard, so that destroying the space is
        // refused at run time: a leaked guard must not free its tables.
        core::mem::forget(vm.activate(&user).unwrap());
        let replica = user.replicas.root(cpu);
        assert!(replica != 0 && replica != user.root, "cpu {cpu} runs a replica of its own");
        assert_eq!(vm.platform().loaded_root(cpu), Some(replica));
    }
    on_cpu(0);
    let a = vm.vmalloc(&user, 0x1000, USER_END, 40, Flags::WRITE | Flags::USER).unwrap();
    // CPUs 1 and 3 read the range (soft faults link its table); 4 runs the
    // space but never touches it, 2 does not run it.
    for cpu in [1, 3] {
        assert!(access(&vm, cpu, a + 39 * PAGE_SIZE).is_some());
    }
    assert!(vm.platform().may_hold(4, a + 39 * PAGE_SIZE).is_empty());
    vm.vmfree(&user, a, 40).unwrap();
    assert_eq!(shootdowns(&vm), vec![(0b1010, a, 40)], "one batched shootdown to CPUs 1 and 3");
    // Sets only grow while the table lives: a CPU that touched it once
    // stays a target until the table is swept.
    let b = vm.vmalloc(&user, 0x1000, USER_END, 1, Flags::WRITE | Flags::USER).unwrap();
    vm.vmfree(&user, b, 1).unwrap();
    assert_eq!(shootdowns(&vm)[1], (0b1010, b, 1));
    // A sweep takes the table out of both replicas and flushes them.
    assert!(vm.sweep(&user).unwrap() > 0);
    assert_eq!(shootdowns(&vm)[2].0, 0b1010);
    assert_eq!(access(&vm, 1, a), None);
    let user = match vm.destroy_space(user) {
        Err((VmError::SpaceActive { cpus: 0b11010 }, s)) => s,
        other => panic!("destroying an active space: {:?}", other.err().map(|e| e.0)),
    };
    for cpu in [1, 3, 4] {
        on_cpu(cpu);
        // Activating again is idempotent; the new guard's drop leaves.
        drop(vm.activate(&user).unwrap());
    }
    on_cpu(0);
    assert_eq!(user.active_cpus(), CpuSet::EMPTY);
    vm.destroy_space(user).map_err(|(e, _)| e).unwrap();
}

#[test]
fn destroying_a_space_frees_its_tables_and_owned_frames() {
    let vm = machine(1);
    let before = free(&vm);
    let user = vm.new_user_space().unwrap();
    vm.vmalloc(&user, 0x1000, USER_END, 5, Flags::USER).unwrap();
    vm.vmalloc(&user, 0x7000_0000_0000, USER_END, 600, Flags::USER).unwrap();
    // SAFETY: host memory is a vector of atomics: mapping any address is test data, not aliasing.
    unsafe { vm.map_single(&user, 0x2000_0000, PhysAddr::new(0x1000), Flags::READ, PageSize::Size4K) }.unwrap();
    vm.destroy_space(user).map_err(|(e, _)| e).unwrap();
    assert_eq!(free(&vm), before);
    assert!(vm.platform().frames.audit().is_ok());
}

#[test]
fn k_mem_map_has_guards_zeroes_and_reuses_its_address() {
    let vm = machine(2);
    let before = free(&vm);
    let (mut first, mut tables) = (None, None);
    for round in 0..10 {
        let a = vm.k_mem_map(3 * PAGE_SIZE, KMemFlags::RW).unwrap();
        assert_eq!(*first.get_or_insert(a), a, "round {round}: same address reused");
        assert!(!vm.is_mapped(a - PAGE_SIZE) && !vm.is_mapped(a + 3 * PAGE_SIZE), "guard pages unmapped");
        for i in 0..3 {
            let t = vm.map_get(vm.kernel(), a + i * PAGE_SIZE).unwrap();
            assert_eq!(vm.platform().word(t.phys.as_u64(), 8), 0, "zeroed");
            vm.platform().set_word(t.phys.as_u64(), 8, 0xdead);
        }
        assert!(free(&vm) <= before - 3 * PAGE_SIZE);
        vm.k_mem_unmap(a, 3 * PAGE_SIZE).unwrap();
        // The region's tables stay, and the next round reuses them.
        assert_eq!(*tables.get_or_insert(before - free(&vm)), before - free(&vm), "round {round}: tables churned");
    }
    assert!(tables.is_some_and(|t| t > 0));
    assert_eq!(vm.region_bytes(), 0);
    vm.sweep(vm.kernel()).unwrap();
    assert_eq!(free(&vm), before);
}

#[test]
fn k_mem_unmap_refuses_anything_but_a_whole_region() {
    let vm = machine(2);
    let a = vm.k_mem_map(4 * PAGE_SIZE, KMemFlags::RW | KMemFlags::LOCK).unwrap();
    let snapshot = (free(&vm), shootdowns(&vm), vm.region_bytes());
    for (addr, size) in [
        (a + PAGE_SIZE, 3 * PAGE_SIZE),
        (a, 3 * PAGE_SIZE),
        (a, 5 * PAGE_SIZE),
        (a - PAGE_SIZE, 6 * PAGE_SIZE),
        (a + 1, PAGE_SIZE),
    ] {
        let r = vm.k_mem_unmap(addr, size);
        assert!(
            matches!(r, Err(VmError::NotARegion { .. } | VmError::NotAligned { .. })),
            "k_mem_unmap({addr:#x}, {size:#x}) = {r:?}"
        );
    }
    // The seed API cannot reach into regions.
    let frame = vm.umap_single(vm.kernel(), a + PAGE_SIZE, PageSize::Size4K);
    assert_eq!(frame, Err(VmError::BadRange { start: a + PAGE_SIZE, len: PAGE_SIZE }), "seed API cannot reach regions");
    assert!(vm.map_get(vm.kernel(), a).unwrap().pinned);
    assert_eq!((free(&vm), shootdowns(&vm), vm.region_bytes()), snapshot);
    vm.k_mem_unmap(a, 4 * PAGE_SIZE).unwrap();
}

#[test]
fn fault_injection_sweep_rolls_back_every_failure_point() {
    let vm = machine(2);
    let before = free(&vm);
    let mut failures = 0;
    for k in 1.. {
        vm.inject().arm(0, k);
        let r = vm.k_mem_map(700 * PAGE_SIZE, KMemFlags::RW);
        let fired = vm.inject().fired(0);
        vm.inject().arm(0, 0);
        if !fired {
            let a = r.unwrap();
            vm.k_mem_unmap(a, 700 * PAGE_SIZE).unwrap();
            break;
        }
        failures += 1;
        assert_eq!(r, Err(VmError::OutOfFrames), "k = {k}");
        assert_eq!(free(&vm), before, "k = {k}: frames or tables leaked");
        assert_eq!(vm.region_bytes(), 0, "k = {k}: virtual range leaked");
        assert!(vm.platform().frames.audit().is_ok());
    }
    // 700 frames plus a page directory and two page tables.
    assert_eq!(failures, 703);
    vm.sweep(vm.kernel()).unwrap();
    assert_eq!(free(&vm), before);
}

#[test]
fn phys_map_keeps_the_offset_and_cache_mode() {
    let vm = machine(1);
    // SAFETY: host memory is a vector of atomics: mapping any address is test data, not aliasing.
    let v = unsafe { vm.phys_map(PhysAddr::new(0xFEE0_0123), 0x2000, CacheMode::Uncached) }.unwrap();
    assert_eq!(v % PAGE_SIZE, 0x123);
    for i in 0..3 {
        let t = vm.map_get(vm.kernel(), v - 0x123 + i * PAGE_SIZE).unwrap();
        assert_eq!(
            (t.phys.as_u64(), t.cache, t.flags),
            (0xFEE0_0000 + i * PAGE_SIZE, CacheMode::Uncached, Flags::WRITE)
        );
    }
    assert!(!vm.is_mapped(v - 0x123 + 3 * PAGE_SIZE));
    assert_eq!(vm.phys_unmap(v, 0x1000), Err(VmError::NotARegion { addr: v, size: 0x1000 }));
    vm.phys_unmap(v, 0x2000).unwrap();
    assert!(!vm.is_mapped(v));
    assert_eq!(vm.region_bytes(), 0);
}

#[test]
fn a_failed_shootdown_quarantines_the_frames() {
    let vm = machine(2);
    let a = vm.k_mem_map(2 * PAGE_SIZE, KMemFlags::RW).unwrap();
    let held = free(&vm);
    vm.platform().fail_shootdowns.store(true, core::sync::atomic::Ordering::Relaxed);
    assert_eq!(vm.k_mem_unmap(a, 2 * PAGE_SIZE), Err(VmError::Shootdown { cpus: 0b11 }));
    assert_eq!(free(&vm), held, "no frame reused before the flush");
    assert!(vm.quarantined_frames() >= 2);
    assert_ne!(vm.k_mem_map(2 * PAGE_SIZE, KMemFlags::RW), Ok(a), "the range is not handed out again");
    // In a user space the unmapped pages stay reserved: vmalloc goes around.
    let user = vm.new_user_space().unwrap();
    vm.platform().fail_shootdowns.store(false, core::sync::atomic::Ordering::Relaxed);
    let u = vm.vmalloc(&user, 0x1000, USER_END, 2, Flags::USER).unwrap();
    on_cpu(1);
    // Active for the rest of the test, and holding the pages.
    core::mem::forget(vm.activate(&user).unwrap());
    assert!(access(&vm, 1, u).is_some());
    on_cpu(0);
    vm.platform().fail_shootdowns.store(true, core::sync::atomic::Ordering::Relaxed);
    assert_eq!(vm.vmfree(&user, u, 2), Err(VmError::Shootdown { cpus: 0b10 }));
    vm.platform().fail_shootdowns.store(false, core::sync::atomic::Ordering::Relaxed);
    assert_eq!(vm.vmfind(&user, 0x1000, USER_END, 2), Ok(u + 2 * PAGE_SIZE));
    assert_eq!(
        // SAFETY: host memory is a vector of atomics: mapping any address is test data, not aliasing.
        unsafe { vm.map_single(&user, u, PhysAddr::new(0x1000), Flags::READ, PageSize::Size4K) },
        Err(VmError::AlreadyMapped { virt: u })
    );
}

#[test]
fn concurrent_unmaps_of_one_region_free_it_once() {
    let vm = std::sync::Arc::new(machine(4));
    let before = free(&vm);
    for _ in 0..50 {
        let a = vm.k_mem_map(8 * PAGE_SIZE, KMemFlags::RW).unwrap();
        let ok: usize = (0..3)
            .map(|cpu| {
                let vm = vm.clone();
                std::thread::spawn(move || {
                    on_cpu(cpu + 1);
                    vm.k_mem_unmap(a, 8 * PAGE_SIZE).is_ok() as usize
                })
            })
            .collect::<Vec<_>>()
            .into_iter()
            .map(|h| h.join().unwrap())
            .sum();
        assert_eq!(ok, 1, "exactly one unmap wins");
    }
    on_cpu(0);
    vm.sweep(vm.kernel()).unwrap();
    assert_eq!(free(&vm), before);
    assert!(vm.platform().frames.audit().is_ok());
}

#[test]
fn protect_downgrades_and_shoots_down() {
    let vm = machine(2);
    let user = vm.new_user_space().unwrap();
    let a = vm.vmalloc(&user, 0x1000, USER_END, 2, Flags::WRITE | Flags::USER).unwrap();
    on_cpu(1);
    // Active for the rest of the test, and holding the pages.
    core::mem::forget(vm.activate(&user).unwrap());
    assert!(access(&vm, 1, a).is_some());
    on_cpu(0);
    vm.protect(&user, a, 2, Flags::USER).unwrap();
    assert_eq!(vm.map_get(&user, a + PAGE_SIZE).unwrap().flags, Flags::USER);
    assert_eq!(shootdowns(&vm), vec![(0b10, a, 2)]);
    assert_eq!(vm.protect(&user, a, 3, Flags::READ), Err(VmError::NotMapped { virt: a + 2 * PAGE_SIZE }));
    assert_eq!(vm.map_get(&user, a).unwrap().flags, Flags::USER, "refused protect changed nothing");
}

#[test]
fn audit_finds_double_mappings_and_allows_pinned_aliases() {
    let vm = machine(1);
    let user = vm.new_user_space().unwrap();
    vm.vmalloc(&user, 0x1000, USER_END, 4, Flags::USER).unwrap();
    assert!(vm.audit_tables(&[&user]).is_ok());
    let locked = vm.k_mem_map(PAGE_SIZE, KMemFlags::RW | KMemFlags::LOCK).unwrap();
    let frame = vm.map_get(vm.kernel(), locked).unwrap().phys.as_u64();
    // SAFETY: host memory is a vector of atomics: mapping any address is test data, not aliasing.
    unsafe { vm.map_single(&user, 0x10_0000, PhysAddr::new(frame), Flags::USER, PageSize::Size4K) }.unwrap();
    assert_eq!(vm.audit_tables(&[&user]).unwrap().pinned_aliases, 1);
    let plain = vm.k_mem_map(PAGE_SIZE, KMemFlags::RW).unwrap();
    let frame = vm.map_get(vm.kernel(), plain).unwrap().phys.as_u64();
    // SAFETY: host memory is a vector of atomics: mapping any address is test data, not aliasing.
    unsafe { vm.map_single(vm.kernel(), SEED, PhysAddr::new(frame), Flags::READ, PageSize::Size4K) }.unwrap();
    assert!(matches!(vm.audit_tables(&[&user]), Err(PtViolation::DoubleMapped { phys, .. }) if phys.as_u64() == frame));
    vm.umap_single(vm.kernel(), SEED, PageSize::Size4K).unwrap();
    // SAFETY: host memory is a vector of atomics: mapping any address is test data, not aliasing.
    unsafe { vm.map_single(vm.kernel(), SEED, PhysAddr::new(0x1000), Flags::WRITE | Flags::EXEC, PageSize::Size4K) }
        .unwrap();
    assert_eq!(vm.audit_tables(&[]), Err(PtViolation::WriteAndExecute { virt: SEED }));
}

#[test]
fn cpus_map_and_unmap_in_one_space_at_once() {
    let vm = std::sync::Arc::new(machine(4));
    let before = free(&vm);
    let handles: Vec<_> = (0..4)
        .map(|cpu| {
            let vm = vm.clone();
            std::thread::spawn(move || {
                on_cpu(cpu);
                for round in 0..300u64 {
                    let pages = 1 + (round + cpu as u64) % 7;
                    let a = vm.k_mem_map(pages * PAGE_SIZE, KMemFlags::RW).unwrap();
                    let t = vm.map_get(vm.kernel(), a).unwrap();
                    vm.platform().set_word(t.phys.as_u64(), 0, cpu as u64);
                    assert_eq!(vm.platform().word(t.phys.as_u64(), 0), cpu as u64);
                    vm.k_mem_unmap(a, pages * PAGE_SIZE).unwrap();
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    on_cpu(0);
    vm.sweep(vm.kernel()).unwrap();
    assert_eq!(free(&vm), before);
    assert!(vm.platform().frames.audit().is_ok());
}

#[test]
fn a_mapped_frame_is_the_entrys_until_umap_owned_gives_it_back() {
    let vm = machine(2);
    let k = vm.kernel();
    let frame = vm.platform().frames.alloc_page().unwrap();
    let phys = frame.phys();
    vm.map_frame(k, SEED, frame, Flags::WRITE).unwrap();
    assert_eq!(vm.map_get(k, SEED).unwrap().phys, phys);
    // A second frame at the same address comes back with the error.
    let other = vm.platform().frames.alloc_page().unwrap();
    let (e, other) = vm.map_frame(k, SEED, other, Flags::WRITE).unwrap_err();
    assert_eq!(e, VmError::AlreadyMapped { virt: SEED });
    vm.platform().frames.free_page(other).unwrap();
    let back = vm.umap_owned(k, SEED, PageSize::Size4K).unwrap();
    assert_eq!(back.phys(), phys);
    vm.platform().frames.free_page(back).unwrap();
    // A page `map_single` mapped is not the mapping's: refused, kept.
    let addr = vm.platform().alloc_phys();
    // SAFETY: host memory is a vector of atomics: mapping any address is test data, not aliasing.
    unsafe { vm.map_single(k, SEED, PhysAddr::new(addr), Flags::READ, PageSize::Size4K) }.unwrap();
    assert_eq!(vm.umap_owned(k, SEED, PageSize::Size4K).map(|f| f.into_phys()), Err(VmError::NotOwned { virt: SEED }));
    assert_eq!(vm.umap_single(k, SEED, PageSize::Size4K), Ok(PhysAddr::new(addr)));
    vm.platform().free_phys(addr).unwrap();
    assert!(vm.platform().frames.audit().is_ok());
}

#[test]
fn a_sweep_that_takes_over_a_huge_unmap_shoots_its_copiers_down() {
    use super::marker::FrameTo;
    use super::table::{lookup, Lookup};
    use core::sync::atomic::Ordering;
    let vm = machine(3);
    let m = vm.platform();
    let user = vm.new_user_space().unwrap();
    on_cpu(1);
    let guard = vm.activate(&user).unwrap();
    on_cpu(0);
    // 1 GiB in: alone in its PD and PDPT, so a sweep detaches both.
    let virt = 0x4000_0000u64;
    // SAFETY: host memory is a vector of atomics: mapping any address is test data, not aliasing.
    unsafe { vm.map_single(&user, virt, PhysAddr::new(0x40_0000), Flags::USER, PageSize::Size2M) }.unwrap();
    assert_eq!(access(&vm, 1, virt), Some(0x40_0000), "CPU 1 copies the huge leaf into its replica");
    // What `umap_single` does before it drops the lock: the marker, the
    // fence, the copies taken out of the replicas.
    let op = vm.begin_unmap();
    {
        let _shared = vm.shared(&user).unwrap();
        let Lookup::Entry { entry, .. } = lookup(m, user.root, virt, 1) else { panic!("no PD entry") };
        let e = entry.load(Ordering::Acquire);
        entry.store(op.marker(e, 2 << 20, FrameTo::Caller), Ordering::Release);
        core::sync::atomic::fence(Ordering::SeqCst);
        let holders = vm.holders(&user, virt, virt + (2 << 20));
        assert!(holders.contains(1));
        vm.unlink(&user, holders, virt, 1, e);
    }
    // A sweep gets in before the unmap's finish: it takes the marker over
    // with its table, and must shoot down the CPU that copied the leaf.
    assert_eq!(vm.sweep(&user), Ok(2));
    assert_eq!(shootdowns(&vm).iter().map(|s| s.0).collect::<Vec<_>>(), vec![0b10]);
    vm.finish_unmap(&user, op, virt, 1, PageSize::Size2M).unwrap();
    assert!(m.may_hold(1, virt).is_empty(), "CPU 1 still holds {:x?}", m.may_hold(1, virt));
    on_cpu(1);
    drop(guard);
    on_cpu(0);
    vm.destroy_space(user).map_err(|(e, _)| e).unwrap();
}

#[test]
fn a_huge_page_maps_where_emptied_small_pages_left_their_table() {
    let vm = machine(1);
    let user = vm.new_user_space().unwrap();
    let window = 0x4000_0000u64;
    let a = vm.vmalloc(&user, window, window + (2 << 20), 3, Flags::USER).unwrap();
    vm.vmfree(&user, a, 3).unwrap();
    // SAFETY: host memory is a vector of atomics: mapping any address is test data, not aliasing.
    let mapped = unsafe { vm.map_single(&user, window, PhysAddr::new(0x40_0000), Flags::USER, PageSize::Size2M) };
    assert_eq!(mapped, Ok(()), "the empty page table was in the way");
    assert_eq!(vm.map_get(&user, window + 0x1234).unwrap().phys.as_u64(), 0x40_1234);
    vm.umap_single(&user, window, PageSize::Size2M).unwrap();
    vm.destroy_space(user).map_err(|(e, _)| e).unwrap();
}

#[test]
fn a_rollback_that_cannot_sweep_leaves_it_to_the_next_unmap() {
    let vm = machine(2);
    let before = free(&vm);
    let reader = vm.kernel().tables.read(vm.platform(), &crate::lock_count::LockCounts::new()).unwrap();
    vm.inject().arm(0, 3);
    assert_eq!(vm.k_mem_map(8 * PAGE_SIZE, KMemFlags::RW | KMemFlags::LOCK), Err(VmError::OutOfFrames));
    vm.inject().arm(0, 0);
    assert!(free(&vm) < before, "setup: the rollback could not sweep its tables while the lock was held");
    drop(reader);
    let a = vm.k_mem_map(PAGE_SIZE, KMemFlags::RW | KMemFlags::LOCK).unwrap();
    vm.k_mem_unmap(a, PAGE_SIZE).unwrap();
    assert_eq!(free(&vm), before, "the next unmap swept");
}
