//! Ring-3 code really runs without kernel permissions: it uses its own
//! user pages, and reading kernel or supervisor-only pages, writing a
//! read-only page, executing a no-execute page or a privileged instruction
//! each end the run as the program's fault, which the kernel survives. In
//! the other direction SMAP and SMEP stop the kernel from touching or
//! executing user pages. Every CPU has the protections on and runs ring 3.

use core::ops::Range;
use core::ptr;
use core::sync::atomic::{AtomicU64, Ordering};

use smp::{percpu, MAX_CPUS};
use x86_64::structures::idt::PageFaultErrorCode as Code;

use super::user_pages::{UserPages, CODE, DATA, STACK, SUPERVISOR};
use super::{ensure, failure, register, Failure, Test, TestResult};
use crate::cpu_features;
use crate::fault_catch;
use crate::user_program::{user_program, EXEC_PROBE, KERNEL_RET, PRIVILEGED, READ_PROBE, WRITE_PROBE};
use crate::usermode::UserExit;
use crate::workers;

const PAGE_FAULT: u8 = 14;
const GENERAL_PROTECTION: u8 = 13;
/// The page-fault error bits these tests look at.
const PF_BITS: Code =
    Code::PROTECTION_VIOLATION.union(Code::CAUSED_BY_WRITE).union(Code::USER_MODE).union(Code::INSTRUCTION_FETCH);
/// Every entry of the program fits in 64 bytes (`user_program`).
const ENTRY_LEN: u64 = 64;
/// A kernel variable for ring 3 to try to read.
static KERNEL_SECRET: AtomicU64 = AtomicU64::new(0x5EC2E7);

/// Fails unless `exit` is a page fault on `addr` at an instruction in
/// `rip`, with exactly `want` among the bits in `PF_BITS`.
fn expect_page_fault(exit: UserExit, addr: u64, rip: Range<u64>, want: Code) -> TestResult {
    let UserExit::Fault { vector, error_code, rip: at, cr2 } = exit else {
        return Err(failure(format_args!("expected a page fault on {addr:#x}, got {exit:?}")));
    };
    ensure!(vector == PAGE_FAULT, "expected a page fault on {addr:#x}, got {exit:?}");
    let bits = Code::from_bits_truncate(error_code) & PF_BITS;
    ensure!(bits == want, "page fault on {addr:#x}: error bits {bits:?}, expected {want:?}");
    ensure!(cr2 == addr, "page fault reports cr2 {cr2:#x}, expected {addr:#x}");
    ensure!(rip.contains(&at), "page fault at rip {at:#x}, expected in {rip:#x?}");
    Ok(())
}

/// Fails unless `exit` is a normal return with `rax`.
fn expect_returned(exit: UserExit, rax: u64) -> TestResult {
    ensure!(exit == UserExit::Returned { rax }, "expected a return with rax {rax:#x}, got {exit:?}");
    Ok(())
}

fn entry_range(entry: u64) -> Range<u64> {
    CODE + entry..CODE + entry + ENTRY_LEN
}

/// Ring 3 may read `target`, a supervisor page: the run must end with a
/// protection fault there, after the program incremented its data (so it
/// did run), and the next run must work as if nothing happened.
fn read_faults(pages: &UserPages, target: u64) -> TestResult {
    pages.write(DATA, 0);
    let exit = pages.run(READ_PROBE, DATA, target);
    expect_page_fault(exit, target, entry_range(READ_PROBE), Code::PROTECTION_VIOLATION | Code::USER_MODE)?;
    ensure!(pages.read(DATA) == 1, "the program did not run up to its probe: data is {}", pages.read(DATA));
    expect_returned(pages.run(READ_PROBE, DATA, 0), 2)
}

// Per CPU, for `protections_on_every_cpu`: bit 0 WP, 1 NX, 2 SMEP, 3 SMAP, 4 reported.
static PROTECTIONS: [AtomicU64; MAX_CPUS] = [const { AtomicU64::new(0) }; MAX_CPUS];

fn protection_bits(wp: bool, nx: bool, smep: bool, smap: bool) -> u64 {
    u64::from(wp) | u64::from(nx) << 1 | u64::from(smep) << 2 | u64::from(smap) << 3
}

register!(Test::new("usermode::protections_on_every_cpu", protections_on_every_cpu));
fn protections_on_every_cpu() -> TestResult {
    fn worker(cpu: usize) {
        let bits = protection_bits(
            cpu_features::write_protect_enabled(),
            cpu_features::nx_enabled(),
            cpu_features::smep_enabled(),
            cpu_features::smap_enabled(),
        );
        PROTECTIONS[cpu].store(bits | 1 << 4, Ordering::Relaxed);
    }
    PROTECTIONS.iter().for_each(|p| p.store(0, Ordering::Relaxed));
    workers::run_on_all(worker, 10_000_000_000)
        .map_err(|e| failure(format_args!("cpus {:?} did not finish", e.cpus)))?;
    let s = cpu_features::supported();
    let want = protection_bits(true, s.nx, s.smep, s.smap) | 1 << 4;
    for cpu in percpu::online_set().iter() {
        let got = PROTECTIONS[cpu].load(Ordering::Relaxed);
        ensure!(
            got == want,
            "cpu {cpu}: protections {got:#b} (bits WP, NX, SMEP, SMAP, reported), CPUID wants {want:#b}"
        );
    }
    Ok(())
}

register!(Test::new("usermode::ring3_increments_its_data_page", increments_data_page));
fn increments_data_page() -> TestResult {
    let pages = UserPages::map()?;
    let program = user_program();
    ensure!(&pages.code_bytes()[..program.len()] == program, "the code page does not hold the program");
    pages.write(DATA, 41);
    expect_returned(pages.run(READ_PROBE, DATA, 0), 42)?;
    ensure!(pages.read(DATA) == 42, "ring 3 returned 42 but the data page holds {}", pages.read(DATA));
    // Reading its own pages is allowed: code and stack are user pages too.
    expect_returned(pages.run(READ_PROBE, DATA, CODE), 43)?;
    expect_returned(pages.run(READ_PROBE, DATA, STACK), 44)?;
    ensure!(pages.read(DATA) == 44, "data page holds {} after three runs", pages.read(DATA));
    Ok(())
}

register!(Test::new("usermode::ring3_read_of_kernel_memory_faults", read_kernel_memory));
fn read_kernel_memory() -> TestResult {
    let pages = UserPages::map()?;
    read_faults(&pages, ptr::addr_of!(KERNEL_SECRET) as u64)?;
    ensure!(KERNEL_SECRET.load(Ordering::Relaxed) == 0x5EC2E7, "the kernel variable changed");
    Ok(())
}

register!(Test::new("usermode::ring3_read_of_supervisor_page_faults", read_supervisor_page));
fn read_supervisor_page() -> TestResult {
    let pages = UserPages::map()?;
    // The page tables above it allow user access; only its own entry does not.
    read_faults(&pages, SUPERVISOR + 8)
}

register!(Test::new("usermode::ring3_write_to_read_only_page_faults", write_read_only_page));
fn write_read_only_page() -> TestResult {
    let pages = UserPages::map()?;
    // Control: the same entry may write its own data page.
    pages.write(DATA, 0);
    expect_returned(pages.run(WRITE_PROBE, DATA, DATA + 8), 1)?;
    ensure!(pages.read(DATA + 8) == 1, "ring 3's write to its data page is missing");
    let target = CODE + 0x800;
    let exit = pages.run(WRITE_PROBE, DATA, target);
    let want = Code::PROTECTION_VIOLATION | Code::CAUSED_BY_WRITE | Code::USER_MODE;
    expect_page_fault(exit, target, entry_range(WRITE_PROBE), want)?;
    ensure!(pages.read(target) == 0, "the read-only page was written");
    Ok(())
}

register!(Test::new("usermode::ring3_execute_of_no_execute_page_faults", execute_no_execute_page));
fn execute_no_execute_page() -> TestResult {
    let pages = UserPages::map()?;
    let fetch = Code::PROTECTION_VIOLATION | Code::USER_MODE | Code::INSTRUCTION_FETCH;
    pages.write(DATA, 0);
    // Control: a jump within the code page runs (into the read probe, which
    // increments again and reads [rsi], the code page, which is allowed).
    expect_returned(pages.run(EXEC_PROBE, DATA, CODE + READ_PROBE), 2)?;
    let target = DATA + 0x100;
    expect_page_fault(pages.run(EXEC_PROBE, DATA, target), target, target..target + 1, fetch)?;
    let kernel_code = protections_on_every_cpu as fn() -> TestResult as usize as u64;
    expect_page_fault(pages.run(EXEC_PROBE, DATA, kernel_code), kernel_code, kernel_code..kernel_code + 1, fetch)?;
    ensure!(pages.read(DATA) == 4, "data is {} after four runs", pages.read(DATA));
    Ok(())
}

register!(Test::new("usermode::ring3_privileged_instruction_is_a_gp", privileged_instruction));
fn privileged_instruction() -> TestResult {
    let pages = UserPages::map()?;
    pages.write(DATA, 0);
    let exit = pages.run(PRIVILEGED, DATA, 0);
    let UserExit::Fault { vector, error_code, rip, cr2 } = exit else {
        return Err(failure(format_args!("cli in ring 3 did not fault: {exit:?}")));
    };
    ensure!(vector == GENERAL_PROTECTION && error_code == 0, "cli in ring 3 gave {exit:?}, expected #GP(0)");
    ensure!(entry_range(PRIVILEGED).contains(&rip), "#GP at rip {rip:#x}, outside the entry");
    ensure!(cr2 == 0, "a #GP reports cr2 {cr2:#x}");
    ensure!(pages.read(DATA) == 1, "data is {} after the run", pages.read(DATA));
    expect_returned(pages.run(READ_PROBE, DATA, 0), 2)
}

register!(Test::new("usermode::smap_stops_kernel_reads_of_user_pages", smap_stops_kernel_reads));
fn smap_stops_kernel_reads() -> TestResult {
    if !cpu_features::supported().smap {
        log::info!("usermode: CPU has no SMAP; kernel-read test skipped");
        return Ok(());
    }
    let pages = UserPages::map()?;
    pages.write(DATA, 0xDA7A);
    // Control: with RFLAGS.AC set (`stac`) SMAP allows the read, so a
    // fault without it is SMAP's doing and not a missing mapping.
    let (allowed, read) = pages.while_active(|| {
        let allowed: u64;
        // SAFETY: DATA is mapped (user, readable) while the space is
        // active here; `stac`/`clac` exist because the CPU has SMAP, and AC
        // is clear again afterwards.
        unsafe {
            core::arch::asm!("stac", "mov {v}, [{a}]", "clac", a = in(reg) DATA, v = out(reg) allowed, options(nostack))
        };
        // SAFETY: the closure holds nothing; the read faults (SMAP) or
        // reads a mapped page, and `catch` turns the fault into an error.
        let read = unsafe {
            fault_catch::catch(PAGE_FAULT, || {
                ptr::read_volatile(DATA as *const u64);
            })
        };
        (allowed, read)
    });
    ensure!(allowed == 0xDA7A, "read with AC set gave {allowed:#x}");
    let Err(f) = read else {
        return Err(failure(format_args!("the kernel read a user page with SMAP on")));
    };
    let bits = Code::from_bits_truncate(f.error_code) & PF_BITS;
    ensure!(
        f.cr2 == DATA && bits == Code::PROTECTION_VIOLATION,
        "SMAP fault {f:?}: bits {bits:?}, expected only a protection violation on {DATA:#x}"
    );
    Ok(())
}

register!(Test::new("usermode::smep_stops_kernel_execution_of_user_pages", smep_stops_kernel_execution));
fn smep_stops_kernel_execution() -> TestResult {
    if !cpu_features::supported().smep {
        log::info!("usermode: CPU has no SMEP; kernel-execute test skipped");
        return Ok(());
    }
    let pages = UserPages::map()?;
    let target = CODE + KERNEL_RET;
    ensure!(pages.code_bytes()[KERNEL_RET as usize] == 0xC3, "no ret at the kernel-call entry");
    // SAFETY: the target is a lone `ret` (checked above) mapped while the
    // space is active: if SMEP let the kernel run it, the call would just
    // return. The closure holds nothing.
    let call = pages.while_active(|| unsafe {
        fault_catch::catch(PAGE_FAULT, || {
            let f: extern "C" fn() = core::mem::transmute(target as usize);
            f();
        })
    });
    let Err(f) = call else {
        return Err(failure(format_args!("the kernel executed a user page with SMEP on")));
    };
    let bits = Code::from_bits_truncate(f.error_code) & PF_BITS;
    let want = Code::PROTECTION_VIOLATION | Code::INSTRUCTION_FETCH;
    ensure!(
        f.cr2 == target && f.rip == target && bits == want,
        "SMEP fault {f:?}: bits {bits:?}, expected {want:?} on {target:#x}"
    );
    Ok(())
}

/// The pages every CPU runs on in `every_cpu_runs_ring3`.
static SHARED: spin::RwLock<Option<UserPages>> = spin::RwLock::new(None);

/// Per CPU, what each of `RUNS` ended with.
const RUNS: usize = 4;
static EXITS: [spin::Mutex<[Option<UserExit>; RUNS]>; MAX_CPUS] = [const { spin::Mutex::new([None; RUNS]) }; MAX_CPUS];

fn slot(cpu: usize) -> u64 {
    DATA + 8 * cpu as u64
}

fn start_value(cpu: usize) -> u64 {
    (cpu as u64) << 32
}

register!(Test::new("usermode::every_cpu_runs_ring3", every_cpu_runs_ring3));
/// Every CPU runs the program four times on its own u64 of the data page:
/// a return, a page fault and a #GP (both on the rsp0 stack) and a
/// return again.
fn every_cpu_runs_ring3() -> TestResult {
    fn worker(cpu: usize) {
        let shared = SHARED.read();
        let Some(pages) = shared.as_ref() else { return };
        let exits = [
            pages.run(READ_PROBE, slot(cpu), 0),
            pages.run(READ_PROBE, slot(cpu), SUPERVISOR),
            pages.run(PRIVILEGED, slot(cpu), 0),
            pages.run(READ_PROBE, slot(cpu), 0),
        ];
        *EXITS[cpu].lock() = exits.map(Some);
    }
    let pages = UserPages::map()?;
    let online = percpu::online_set();
    for cpu in online.iter() {
        pages.write(slot(cpu), start_value(cpu));
        *EXITS[cpu].lock() = [None; RUNS];
    }
    *SHARED.write() = Some(pages);
    let ran = workers::run_on_all(worker, 30_000_000_000);
    let pages = SHARED.write().take().expect("set above");
    ran.map_err(|e| failure(format_args!("cpus {:?} did not finish", e.cpus)))?;
    for cpu in online.iter() {
        check_cpu(&pages, cpu).map_err(|e| failure(format_args!("cpu {cpu}: {}", e.0)))?;
    }
    Ok(())
}

fn check_cpu(pages: &UserPages, cpu: usize) -> Result<(), Failure> {
    let [Some(first), Some(pf), Some(gp), Some(last)] = *EXITS[cpu].lock() else {
        return Err(failure(format_args!("did not record its runs")));
    };
    let start = start_value(cpu);
    expect_returned(first, start + 1)?;
    expect_page_fault(pf, SUPERVISOR, entry_range(READ_PROBE), Code::PROTECTION_VIOLATION | Code::USER_MODE)?;
    ensure!(matches!(gp, UserExit::Fault { vector: GENERAL_PROTECTION, error_code: 0, .. }), "cli gave {gp:?}");
    expect_returned(last, start + 4)?;
    ensure!(pages.read(slot(cpu)) == start + 4, "its data slot holds {:#x}", pages.read(slot(cpu)));
    Ok(())
}
