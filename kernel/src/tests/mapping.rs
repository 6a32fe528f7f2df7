//! The mapping API on live page tables: k_mem_map/k_mem_unmap, guard
//! pages, read-only aliases, NX, phys_map with cache modes, bad input that
//! changes nothing, the fault-injection sweep and the page-table audit.

use mm::frame::PhysAddr;
use mm::vm::{CacheMode, Flags, KMemFlags, PageSize, VmError, KERNEL_SEED_AREA, PAGE_SIZE};
use smp::tlb::{self, TlbSnapshot};
use smp::MAX_CPUS;
use x86_64::structures::idt::PageFaultErrorCode as Code;

use super::probe;
use super::{ensure, fails, failure, register, Test, TestResult};
use crate::{frames, memory, pat, vm};

/// Everything a failed call must leave as it was.
#[derive(PartialEq, Eq, Debug)]
struct State {
    free: u64,
    regions: u64,
    tlb: [TlbSnapshot; MAX_CPUS],
}

fn state() -> State {
    State {
        free: frames::get().free_bytes(),
        regions: vm::get().region_bytes(),
        tlb: core::array::from_fn(tlb::counters),
    }
}

register!(Test::new("vm::map_unmap_ten_times", map_unmap_ten_times));
fn map_unmap_ten_times() -> TestResult {
    let vm = vm::get();
    let before = frames::get().free_bytes();
    let pages = 4;
    let mut first = 0;
    for round in 0..10u64 {
        let a = vm.k_mem_map(pages * PAGE_SIZE, KMemFlags::RW).map_err(fails)?;
        if round == 0 {
            first = a;
        }
        ensure!(a == first, "round {round}: mapped at {a:#x}, first round at {first:#x}");
        for w in (0..pages * PAGE_SIZE).step_by(8) {
            let v = probe::read(a + w).map_err(|f| failure(format_args!("read of fresh memory faulted: {f:?}")))?;
            ensure!(v == 0, "round {round}: word {w:#x} of fresh memory is {v:#x}");
        }
        for p in 0..pages {
            probe::write(a + p * PAGE_SIZE, round << 8 | p).map_err(|f| failure(format_args!("{f:?}")))?;
        }
        let used = before - frames::get().free_bytes();
        ensure!(used >= pages * PAGE_SIZE, "free count dropped by {used} bytes for {pages} pages");
        vm.k_mem_unmap(a, pages * PAGE_SIZE).map_err(fails)?;
        let now = frames::get().free_bytes();
        ensure!(now == before, "round {round}: free count {now} after unmap, {before} before map");
        let after = probe::read(a);
        ensure!(matches!(after, Err(f) if f.cr2 == a), "read after unmap gave {after:?}");
    }
    Ok(())
}

register!(Test::new("vm::guard_pages_fault", guard_pages_fault));
fn guard_pages_fault() -> TestResult {
    let vm = vm::get();
    let a = vm.k_mem_map(2 * PAGE_SIZE, KMemFlags::RW).map_err(fails)?;
    let below = probe::read(a - 8);
    let above = probe::write(a + 2 * PAGE_SIZE, 1);
    let inside = probe::write(a + 2 * PAGE_SIZE - 8, 1);
    vm.k_mem_unmap(a, 2 * PAGE_SIZE).map_err(fails)?;
    ensure!(
        matches!(below, Err(f) if f.cr2 == a - 8 && !probe::code(&f).contains(Code::PROTECTION_VIOLATION)),
        "guard below: {below:?}"
    );
    ensure!(
        matches!(above, Err(f) if f.cr2 == a + 2 * PAGE_SIZE && probe::code(&f).contains(Code::CAUSED_BY_WRITE)),
        "guard above: {above:?}"
    );
    ensure!(inside.is_ok(), "last word of the region: {inside:?}");
    Ok(())
}

register!(Test::new("vm::read_only_alias_refuses_writes", read_only_alias));
fn read_only_alias() -> TestResult {
    let vm = vm::get();
    let a = vm.k_mem_map(PAGE_SIZE, KMemFlags::RW | KMemFlags::LOCK).map_err(fails)?;
    let frame = vm.map_get(vm.kernel(), a).map_err(fails)?.phys.as_u64();
    let alias = KERNEL_SEED_AREA.start + 0x10_0000;
    // SAFETY: the frame is the locked `k_mem_map` page's, which this test
    // holds until after the alias is gone.
    unsafe { vm.map_single(vm.kernel(), alias, PhysAddr::new(frame), Flags::READ, PageSize::Size4K) }.map_err(fails)?;
    probe::write(a + 16, 0x5eed).map_err(|f| failure(format_args!("{f:?}")))?;
    let seen = probe::read(alias + 16);
    let write = probe::write(alias + 16, 1);
    let audit = vm.audit_tables(&[]);
    let unmapped = vm.umap_single(vm.kernel(), alias, PageSize::Size4K);
    vm.k_mem_unmap(a, PAGE_SIZE).map_err(fails)?;
    ensure!(seen == Ok(0x5eed), "alias read {seen:?}");
    ensure!(
        matches!(write, Err(f) if f.cr2 == alias + 16 && probe::code(&f).contains(Code::CAUSED_BY_WRITE | Code::PROTECTION_VIOLATION)),
        "write through the read-only alias: {write:?}"
    );
    ensure!(matches!(audit, Ok(r) if r.pinned_aliases >= 1), "audit of a pinned alias: {audit:?}");
    ensure!(unmapped == Ok(PhysAddr::new(frame)), "umap_single of the alias gave {unmapped:?}");
    Ok(())
}

/// `mov eax, 42; ret`
const RETURN_42: [u8; 6] = [0xB8, 42, 0, 0, 0, 0xC3];

register!(Test::new("vm::nx_pages_do_not_execute", nx_pages));
fn nx_pages() -> TestResult {
    let vm = vm::get();
    let a = vm.k_mem_map(PAGE_SIZE, KMemFlags::RW | KMemFlags::LOCK).map_err(fails)?;
    let code = memory::virt_of(vm.map_get(vm.kernel(), a).map_err(fails)?.phys.as_u64()) as *mut u8;
    // SAFETY: the frame is ours (just mapped); the direct map covers it.
    unsafe { core::ptr::copy_nonoverlapping(RETURN_42.as_ptr(), code, RETURN_42.len()) };
    let nx = probe::call(a);
    // Flip to read+exec (never write+exec), run it, then back to NX.
    vm.protect(vm.kernel(), a, 1, Flags::EXEC).map_err(fails)?;
    let exec = probe::call(a);
    vm.protect(vm.kernel(), a, 1, Flags::READ).map_err(fails)?;
    let nx_again = probe::call(a);
    vm.k_mem_unmap(a, PAGE_SIZE).map_err(fails)?;
    let fetch = |r: &Result<u64, crate::fault_catch::CaughtFault>| matches!(r, Err(f) if f.cr2 == a && probe::code(f).contains(Code::INSTRUCTION_FETCH | Code::PROTECTION_VIOLATION));
    ensure!(fetch(&nx), "call into an NX page: {nx:?}");
    ensure!(exec == Ok(42), "call into an executable page: {exec:?}");
    ensure!(fetch(&nx_again), "call after the downgrade to NX: {nx_again:?}");
    Ok(())
}

register!(Test::new("vm::phys_map_odd_region_and_cache_modes", phys_map_odd_region));
fn phys_map_odd_region() -> TestResult {
    let vm = vm::get();
    ensure!(pat::read() == pat::LAYOUT, "PAT is {:#x}, expected {:#x}", pat::read(), pat::LAYOUT);
    let f = frames::get();
    let base = f.alloc_contiguous(2).map_err(fails)?;
    let words = memory::virt_of(base.as_u64()) as *mut u64;
    for i in 0..1024 {
        // SAFETY: the two frames are ours; the direct map covers them.
        unsafe { words.add(i).write_volatile(0xA000 + i as u64) };
    }
    // Starts 0x128 into the first frame, ends 0xF28 into the second.
    let (phys, size) = (base.as_u64() + 0x128, 0x1E00);
    let mut result = Ok(());
    for cache in [CacheMode::WriteBack, CacheMode::WriteThrough, CacheMode::Uncached] {
        // SAFETY: the two frames are this test's until after `phys_unmap`.
        let v = unsafe { vm.phys_map(PhysAddr::new(phys), size, cache) }.map_err(fails)?;
        let t = vm.map_get(vm.kernel(), v + 0x1000);
        let first = probe::read(v);
        let last = probe::read(v + size - 8);
        vm.phys_unmap(v, size).map_err(fails)?;
        let gone = probe::read(v);
        let check = (|| {
            ensure!(v % PAGE_SIZE == 0x128, "{cache:?}: offset lost: {v:#x}");
            ensure!(matches!(t, Ok(t) if t.cache == cache && t.phys.as_u64() == phys + 0x1000), "{cache:?}: {t:?}");
            ensure!(first == Ok(0xA000 + 0x128 / 8), "{cache:?}: first word {first:?}");
            ensure!(last == Ok(0xA000 + (0x128 + size - 8) / 8), "{cache:?}: last word {last:?}");
            ensure!(gone.is_err(), "{cache:?}: readable after phys_unmap");
            Ok(())
        })();
        result = result.and(check);
    }
    // SAFETY: the run was allocated above and its mappings are gone.
    unsafe { f.free_contiguous(base, 2) }.map_err(fails)?;
    result
}

register!(Test::new("vm::bad_inputs_change_nothing", bad_inputs));
fn bad_inputs() -> TestResult {
    let vm = vm::get();
    let k = vm.kernel();
    let region = vm.k_mem_map(3 * PAGE_SIZE, KMemFlags::RW).map_err(fails)?;
    let before = state();
    let seed = KERNEL_SEED_AREA.start;
    let checks: [(Result<(), VmError>, VmError); 12] = [
        (vm.k_mem_map(0, KMemFlags::RW).map(drop), VmError::ZeroSize),
        (vm.k_mem_map(PAGE_SIZE + 1, KMemFlags::RW).map(drop), VmError::NotAligned { value: PAGE_SIZE + 1 }),
        (vm.k_mem_map(PAGE_SIZE, KMemFlags::USER | KMemFlags::UNINIT).map(drop), VmError::UserUninit),
        (vm.k_mem_map(1 << 40, KMemFlags::RW).map(drop), VmError::OutOfVirtualSpace),
        (
            vm.k_mem_unmap(region + PAGE_SIZE, 2 * PAGE_SIZE),
            VmError::NotARegion { addr: region + PAGE_SIZE, size: 2 * PAGE_SIZE },
        ),
        (vm.k_mem_unmap(region, 2 * PAGE_SIZE), VmError::NotARegion { addr: region, size: 2 * PAGE_SIZE }),
        (
            vm.k_mem_unmap(region - PAGE_SIZE, 5 * PAGE_SIZE),
            VmError::NotARegion { addr: region - PAGE_SIZE, size: 5 * PAGE_SIZE },
        ),
        (
            // SAFETY: both are refused before anything is mapped.
            unsafe { vm.map_single(k, seed + 8, PhysAddr::new(0x1000), Flags::READ, PageSize::Size4K) },
            VmError::NotAligned { value: seed + 8 },
        ),
        (
            // SAFETY: as above.
            unsafe { vm.map_single(k, !0xFFF, PhysAddr::new(0x1000), Flags::READ, PageSize::Size4K) },
            VmError::BadRange { start: !0xFFF, len: PAGE_SIZE },
        ),
        (vm.umap_single(k, seed, PageSize::Size4K).map(drop), VmError::NotMapped { virt: seed }),
        (vm.vmfree(k, seed, 3), VmError::NotMapped { virt: seed }),
        (vm.phys_unmap(region, PAGE_SIZE), VmError::NotARegion { addr: region, size: PAGE_SIZE }),
    ];
    let after = state();
    vm.k_mem_unmap(region, 3 * PAGE_SIZE).map_err(fails)?;
    for (i, (got, want)) in checks.iter().enumerate() {
        ensure!(*got == Err(*want), "case {i}: got {got:?}, expected {want:?}");
    }
    ensure!(
        after == before,
        "refused calls changed state: free {} -> {}, regions {} -> {}",
        before.free,
        after.free,
        before.regions,
        after.regions
    );
    Ok(())
}

register!(Test::new("vm::fault_injection_sweep_rolls_back", fault_injection_sweep));
fn fault_injection_sweep() -> TestResult {
    let vm = vm::get();
    let me = smp::percpu::current_index();
    let pages = 600;
    let before = state();
    // Every k before the one that did not fire was a failure point.
    for (failures, k) in (0u64..).zip(1..10_000) {
        vm.inject().arm(me, k);
        let r = vm.k_mem_map(pages * PAGE_SIZE, KMemFlags::RW | KMemFlags::LOCK);
        let fired = vm.inject().fired(me);
        vm.inject().arm(me, 0);
        if !fired {
            let a = r.map_err(fails)?;
            vm.k_mem_unmap(a, pages * PAGE_SIZE).map_err(fails)?;
            ensure!(failures >= pages, "only {failures} failure points for {pages} pages");
            log::info!(
                "vm: fault-injection sweep: {failures} failure points of k_mem_map({pages} pages), all rolled back"
            );
            return Ok(());
        }
        ensure!(r == Err(VmError::OutOfFrames), "k = {k}: {r:?}");
        let now = state();
        ensure!(
            now.free == before.free && now.regions == before.regions,
            "k = {k}: free {} -> {}, regions {} -> {}",
            before.free,
            now.free,
            before.regions,
            now.regions
        );
    }
    Err(failure(format_args!("k_mem_map kept failing")))
}

register!(Test::new("vm::page_table_audit", page_table_audit));
fn page_table_audit() -> TestResult {
    let vm = vm::get();
    let a = vm.k_mem_map(8 * PAGE_SIZE, KMemFlags::RW).map_err(fails)?;
    let report = vm.audit_tables(&[]);
    vm.k_mem_unmap(a, 8 * PAGE_SIZE).map_err(fails)?;
    let report = report.map_err(|v| failure(format_args!("page-table audit: {v:?}")))?;
    ensure!(report.leaves > 8, "audit saw only {} leaves", report.leaves);
    log::info!("vm: audit checked {} leaf entries: W^X, null page, no double mappings", report.leaves);
    Ok(())
}

register!(Test::new("vm::direct_map_is_bounds_checked", direct_map_bounds));
fn direct_map_bounds() -> TestResult {
    let window = memory::direct_map();
    let mut handle = frames::get().alloc_page().map_err(fails)?;
    let frame = handle.phys().as_u64();
    memory::fill_frame_words(&mut handle, 0x51DE);
    let virt = window.virtualize(PhysAddr::new(frame + 0x40));
    let back = virt.and_then(|v| window.phys(v));
    let seen = virt.map(probe::read);
    frames::get().free_page(handle).map_err(fails)?;
    ensure!(virt == Ok(memory::virt_of(frame) + 0x40), "virtualize gave {virt:?}");
    ensure!(back == Ok(PhysAddr::new(frame + 0x40)), "phys(virtualize(p)) gave {back:?}");
    ensure!(seen == Ok(Ok(0x51DE)), "read through the direct map: {seen:?}");
    let end = window.len();
    ensure!(window.virtualize(PhysAddr::new(end)) == Err(VmError::BadPhys { phys: end }), "virtualize past the end");
    let stack = &end as *const u64 as u64;
    ensure!(
        window.phys(stack) == Err(VmError::NotDirectMapped { virt: stack }),
        "a stack address is not direct-mapped"
    );
    Ok(())
}
