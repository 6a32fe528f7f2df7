//! Where the tests are kept: each test file registers its tests next to
//! their functions with `register!`, which puts one entry in a linker
//! section (a `linkme` distributed slice). The runner reads them back in
//! suite order (`SUITES`) and, within a suite, in the order they are
//! written, because the linker keeps no order of its own and some tests
//! use what the one before them left (`paging_store`'s fault test).

use alloc::vec::Vec;

use linkme::distributed_slice;

use super::Test;

/// One registered test and where it was written.
pub struct Registered {
    /// Index of its module in `SUITES`.
    pub suite: usize,
    pub line: u32,
    pub column: u32,
    pub test: Test,
}

/// Every `register!` of the image, in no particular order.
#[distributed_slice]
pub static REGISTERED: [Registered];

/// The test modules in the order their suites run. A module that
/// registers a test but is missing here fails the build (`suite_of`).
pub const SUITES: &[&str] = &[
    "smp_tests",
    "ipi",
    "time",
    "faults",
    "frames",
    "heap",
    "tlb",
    "mapping",
    "mapping_smp",
    "replica",
    "paging",
    "paging_smp",
    "paging_store",
    "paging_stall",
    "paging_lost_write",
    "nested_fault",
    "virtio_hal",
    "usermode",
    "bench",
];

/// The module path of every test module, up to its name.
const PREFIX: &str = "kernel::tests::";

/// The suite of the test module at `module_path`. Evaluated at compile
/// time by `register!`, so a module that is in no suite is a build error.
pub const fn suite_of(module_path: &str) -> usize {
    let mut i = 0;
    while i < SUITES.len() {
        if is_module(module_path.as_bytes(), SUITES[i].as_bytes()) {
            return i;
        }
        i += 1;
    }
    panic!("a test is registered in a module that is in no suite: add the module to tests::registry::SUITES")
}

/// Whether `path` is `PREFIX` followed by `name` (const: no `==` on str).
const fn is_module(path: &[u8], name: &[u8]) -> bool {
    let prefix = PREFIX.as_bytes();
    if path.len() != prefix.len() + name.len() {
        return false;
    }
    let mut i = 0;
    while i < path.len() {
        let want = if i < prefix.len() { prefix[i] } else { name[i - prefix.len()] };
        if path[i] != want {
            return false;
        }
        i += 1;
    }
    true
}

/// The suites in `SUITES` that registered no test (a file whose
/// registrations were lost, say).
pub fn empty_suites() -> impl Iterator<Item = &'static str> {
    SUITES.iter().enumerate().filter(|(i, _)| !REGISTERED.iter().any(|r| r.suite == *i)).map(|(_, name)| *name)
}

/// Every registered test, suite by suite, each suite in source order.
pub fn in_order() -> Vec<&'static Test> {
    let mut all: Vec<&'static Registered> = REGISTERED.iter().collect();
    all.sort_unstable_by_key(|r| (r.suite, r.line, r.column));
    all.into_iter().map(|r| &r.test).collect()
}

/// Registers a test (a `Test` value) in the suite of the module it is
/// written in; put it right above the test's function.
macro_rules! register {
    ($test:expr) => {
        const _: () = {
            #[linkme::distributed_slice($crate::tests::registry::REGISTERED)]
            static TEST: $crate::tests::registry::Registered = $crate::tests::registry::Registered {
                suite: $crate::tests::registry::suite_of(module_path!()),
                line: line!(),
                column: column!(),
                test: $test,
            };
        };
    };
}
pub(crate) use register;
