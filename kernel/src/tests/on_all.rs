//! Running a test body on every online CPU at once: the first failure any
//! CPU reports (and how many there were) becomes the test's result.

use core::sync::atomic::{AtomicU64, Ordering};

use spin::Mutex;

use super::{failure, Failure, TestResult};
use crate::workers;

/// How long the other CPUs get to finish one body.
const RUN_NS: u64 = 60_000_000_000;

static ERRORS: AtomicU64 = AtomicU64::new(0);
static FIRST_ERROR: Mutex<Option<Failure>> = Mutex::new(None);

/// Records a failure from any CPU.
pub fn fail(args: core::fmt::Arguments) {
    ERRORS.fetch_add(1, Ordering::Relaxed);
    let mut first = FIRST_ERROR.lock();
    if first.is_none() {
        *first = Some(failure(args));
    }
}

/// Runs `f(cpu)` on every online CPU and reports the first failure.
pub fn run(f: fn(usize)) -> TestResult {
    ERRORS.store(0, Ordering::Relaxed);
    *FIRST_ERROR.lock() = None;
    workers::run_on_all(f, RUN_NS).map_err(|e| failure(format_args!("cpus {:?} did not finish", e.cpus)))?;
    match FIRST_ERROR.lock().take() {
        Some(e) => Err(failure(format_args!("{} errors; first: {}", ERRORS.load(Ordering::Relaxed), e.0))),
        None => Ok(()),
    }
}
