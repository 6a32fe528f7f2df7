//! The in-kernel test runner: named tests, registered where they are
//! written (`registry`), one result line (and one record for the host)
//! per test, then a summary. A test that expects a CPU exception passes
//! only if that exception happens and is caught. Only in the test image
//! (the kernel's `test-hooks` feature).

use core::fmt::Write;

use drivers::qemu_exit::ExitCode;
use drivers::tsc;

use crate::fault_catch;
use crate::logger::{self, Text};

mod bench;
mod faults;
mod frames;
mod heap;
pub mod ipi;
mod mapping;
mod mapping_smp;
mod nested_fault;
mod on_all;
mod paging;
mod paging_lost_write;
mod paging_smp;
mod paging_stall;
mod paging_store;
mod probe;
mod registry;
mod replica;
mod rng;
mod smp_tests;
mod time;
mod tlb;
/// The user space (program, data, stack, a supervisor-only page) the ring-3 tests run in.
mod user_pages;
mod usermode;
mod virtio_hal;

pub type Failure = Text<256>;
pub type TestResult = Result<(), Failure>;

pub struct Test {
    pub name: &'static str,
    pub run: fn() -> TestResult,
    /// Passes only if this exception vector is raised (and caught).
    pub expect_fault: Option<u8>,
    /// Why the test does not apply to this boot (`None`: it does). A
    /// test that does not apply is not run and sends no record, so the
    /// suites that count it are the ones whose boot it fits.
    pub applies: Option<fn() -> Option<&'static str>>,
}

impl Test {
    pub const fn new(name: &'static str, run: fn() -> TestResult) -> Test {
        Test { name, run, expect_fault: None, applies: None }
    }

    /// Runs only on boots where `why_not()` is `None`.
    pub const fn only_if(self, why_not: fn() -> Option<&'static str>) -> Test {
        Test { applies: Some(why_not), ..self }
    }

    /// A test that passes only if `vector` is raised. Its body runs under
    /// `fault_catch::catch` and must meet that function's contract: hold
    /// no lock or guard where it may fault, and not wait on other CPUs.
    pub const fn expecting_fault(name: &'static str, vector: u8, run: fn() -> TestResult) -> Test {
        Test { name, run, expect_fault: Some(vector), applies: None }
    }
}

/// Per run: what a passing test wants said about it (a measurement),
/// sent as its record's detail.
static NOTE: spin::Mutex<Failure> = spin::Mutex::new(Failure::new());

/// Sets the running test's note (the last one wins).
pub fn note(args: core::fmt::Arguments) {
    *NOTE.lock() = failure(args);
}

/// A failure message (cut off if it does not fit).
pub fn failure(args: core::fmt::Arguments) -> Failure {
    let mut text = Failure::new();
    let _ = text.write_fmt(args);
    text
}

/// A failure that shows an error value (`map_err(fails)`).
pub fn fails(e: impl core::fmt::Debug) -> Failure {
    failure(format_args!("{e:?}"))
}

/// Fails the test with a formatted message unless `cond` holds.
macro_rules! ensure {
    ($cond:expr, $($fmt:tt)+) => {
        if !$cond {
            return Err($crate::tests::failure(format_args!($($fmt)+)));
        }
    };
}
pub(crate) use ensure;
pub(crate) use registry::register;

static SEED: core::sync::atomic::AtomicU64 = core::sync::atomic::AtomicU64::new(0);

/// The seed of this run's randomised tests (printed, and replayable with
/// `seed=` on the kernel command line).
pub fn seed() -> u64 {
    SEED.load(core::sync::atomic::Ordering::Relaxed)
}

fn run_one(test: &Test) -> (TestResult, Failure) {
    *NOTE.lock() = Failure::new();
    let result = match test.expect_fault {
        None => (test.run)(),
        // SAFETY: tests declared with `expecting_fault` promise what
        // `catch` requires (see `Test::expecting_fault`).
        Some(vector) => match unsafe {
            fault_catch::catch(vector, || {
                let _ = (test.run)();
            })
        } {
            Err(f) => {
                note(format_args!("caught vector {} at rip {:#x}, cr2 {:#x}", f.vector, f.rip, f.cr2));
                Ok(())
            }
            Ok(()) => Err(failure(format_args!("expected exception {vector} did not happen"))),
        },
    };
    let note = core::mem::take(&mut *NOTE.lock());
    (result, note)
}

/// Whether `name` is picked by `only` (comma-separated name prefixes;
/// empty picks every test).
fn picked(name: &str, only: &str) -> bool {
    only.is_empty() || only.split(',').any(|p| !p.is_empty() && name.starts_with(p))
}

/// Runs every suite on the BSP (tests fan out to other CPUs themselves),
/// or the tests whose names start with one of the `only` prefixes.
pub fn run_all(seed: u64, only: &str) -> ExitCode {
    SEED.store(seed, core::sync::atomic::Ordering::Relaxed);
    log::info!("tests: seed {seed:#x} (replay with seed={seed:#x})");
    if !only.is_empty() {
        log::info!("tests: only {only}");
    }
    let (mut passed, mut failed) = (0u32, 0u32);
    // A listed suite without tests is a failure, not a silent skip.
    for suite in registry::empty_suites() {
        failed += 1;
        log::error!("test registry ... FAILED: suite {suite} has no registered test");
        let detail = failure(format_args!("suite {suite} has no registered test"));
        let record =
            record::Record::Test { name: "registry", outcome: record::Outcome::Fail, ns: 0, detail: &detail.0 };
        logger::emit(&record);
    }
    for test in registry::in_order().into_iter().filter(|t| picked(t.name, only)) {
        if let Some(why) = test.applies.and_then(|f| f()) {
            log::info!("test {} ... not run: {why}", test.name);
            continue;
        }
        let start = tsc::now_ns();
        let (result, note) = run_one(test);
        let ns = tsc::now_ns() - start;
        let (outcome, detail) = match &result {
            Ok(()) => {
                passed += 1;
                log::info!("test {} ... ok ({} ms) {}", test.name, ns / 1_000_000, note.0);
                (record::Outcome::Pass, note.0.as_str())
            }
            Err(e) => {
                failed += 1;
                log::error!("test {} ... FAILED: {}", test.name, e.0);
                (record::Outcome::Fail, e.0.as_str())
            }
        };
        logger::emit(&record::Record::Test { name: test.name, outcome, ns, detail });
    }
    log::info!("{passed} passed, {failed} failed");
    logger::emit(&record::Record::Summary { passed, failed });
    if failed == 0 {
        ExitCode::Success
    } else {
        ExitCode::Failure
    }
}
