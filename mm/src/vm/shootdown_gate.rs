//! Parking one CPU's shootdown, for tests that script races: the test
//! arms a CPU, that CPU's next shootdown stops at the chosen point until
//! the test releases it, and the test can wait until it has stopped. Every
//! wait is bounded, so a bug ends in a panic, never in a hung suite.

use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::MAX_CPUS;

/// How long any wait of the gate lasts before it panics.
pub const WAIT: Duration = Duration::from_secs(10);

/// Where a parked shootdown stops.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Park {
    /// Before any CPU has invalidated: the shootdown has not gone out.
    BeforeSend,
    /// After every target has invalidated, before the call returns: the
    /// unmapper's thread stalls (preempted, say) with its flush done, while
    /// its CPU keeps answering other CPUs' shootdowns.
    AfterAcks,
}

/// A shootdown's arguments.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shot {
    pub targets: cpus::CpuSet,
    pub start: u64,
    pub pages: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Gate {
    Open,
    Armed(Park),
    Parked(Park, Shot),
    Released,
}

pub struct ShootdownGate {
    gates: Mutex<[Gate; MAX_CPUS]>,
    changed: Condvar,
}

impl Default for ShootdownGate {
    fn default() -> Self {
        Self::new()
    }
}

impl ShootdownGate {
    pub fn new() -> ShootdownGate {
        ShootdownGate { gates: Mutex::new([Gate::Open; MAX_CPUS]), changed: Condvar::new() }
    }

    fn lock(&self) -> MutexGuard<'_, [Gate; MAX_CPUS]> {
        self.gates.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Waits (bounded) until `done` holds for the gates; panics with `what`
    /// otherwise.
    fn wait_until<'g>(
        &self,
        mut gates: MutexGuard<'g, [Gate; MAX_CPUS]>,
        what: &str,
        done: impl Fn(&[Gate; MAX_CPUS]) -> bool,
    ) -> MutexGuard<'g, [Gate; MAX_CPUS]> {
        let deadline = Instant::now() + WAIT;
        while !done(&gates) {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                drop(gates);
                panic!("shootdown gate: {what} within {WAIT:?}");
            }
            gates = self.changed.wait_timeout(gates, left).unwrap_or_else(|e| e.into_inner()).0;
        }
        gates
    }

    /// `cpu`'s next shootdown parks at `at`.
    pub fn arm(&self, cpu: usize, at: Park) {
        let mut gates = self.lock();
        assert_eq!(gates[cpu], Gate::Open, "CPU {cpu}'s shootdown gate is already in use");
        gates[cpu] = Gate::Armed(at);
    }

    /// Waits until `cpu`'s shootdown is parked; returns its arguments.
    pub fn wait_parked(&self, cpu: usize) -> Shot {
        let gates = self.wait_until(self.lock(), &format!("CPU {cpu} did not park its shootdown"), |s| {
            matches!(s[cpu], Gate::Parked(..))
        });
        match gates[cpu] {
            Gate::Parked(_, shot) => shot,
            _ => unreachable!(),
        }
    }

    /// Lets `cpu`'s parked shootdown go on (or disarms it if it never came).
    pub fn release(&self, cpu: usize) {
        let mut gates = self.lock();
        gates[cpu] = match gates[cpu] {
            Gate::Parked(..) | Gate::Released => Gate::Released,
            Gate::Armed(_) | Gate::Open => Gate::Open,
        };
        self.changed.notify_all();
    }

    /// Releases every parked shootdown and disarms the rest (a failing
    /// test must not leave threads parked).
    pub fn release_all(&self) {
        for cpu in 0..MAX_CPUS {
            self.release(cpu);
        }
    }

    /// Called by `cpu`'s shootdown at point `at`: parks there if armed for
    /// it, until released.
    pub fn pass(&self, cpu: usize, at: Park, shot: Shot) {
        let mut gates = self.lock();
        if gates[cpu] != Gate::Armed(at) {
            return;
        }
        gates[cpu] = Gate::Parked(at, shot);
        self.changed.notify_all();
        let what = format!("CPU {cpu}'s shootdown parked at {at:?} was not released");
        let mut gates = self.wait_until(gates, &what, |s| s[cpu] == Gate::Released);
        gates[cpu] = Gate::Open;
        self.changed.notify_all();
    }
}
