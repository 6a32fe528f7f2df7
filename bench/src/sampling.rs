//! Reading the clock rarely on a measured path. Under QEMU's TCG a clock
//! read (`rdtsc`) takes a lock every vCPU shares, so a harness that reads
//! it per operation measures QEMU, not the kernel. Two pieces, both pure:
//!
//! - [`Pacer`] decides when a worker looks at the clock to see whether its
//!   time is up: after a number of loop iterations it adapts so that looks
//!   are about [`CHECK_NS`] apart, which bounds the overshoot past the
//!   deadline to a few looks' worth (the stride at most doubles per look).
//! - [`Sampler`] picks the operations whose latency is timed: random gaps,
//!   uniform on `1..=2S-1` (mean `S`), so a workload that repeats every
//!   `k` operations (a batch of 64 allocations then 64 frees, 1024 faults
//!   then an unmap) is sampled evenly over its whole period, which a fixed
//!   stride would alias with.

use crate::rng::Rng;

/// Aimed-for time between two looks at the clock for the deadline.
pub const CHECK_NS: u64 = 20_000;
/// Most loop iterations between two looks.
const MAX_STRIDE: u32 = 1 << 16;

pub struct Pacer {
    deadline: u64,
    stride: u32,
    left: u32,
    last_ns: u64,
}

impl Pacer {
    pub fn new(start_ns: u64, duration_ns: u64) -> Pacer {
        Pacer { deadline: start_ns.saturating_add(duration_ns), stride: 1, left: 1, last_ns: start_ns }
    }

    /// Called once per loop iteration: whether to read the clock now.
    pub fn due(&mut self) -> bool {
        self.left -= 1;
        self.left == 0
    }

    /// The clock read after `due`: whether the deadline is still ahead.
    /// Sets the next stride from how long the last one took.
    pub fn observe(&mut self, now_ns: u64) -> bool {
        let took = now_ns.saturating_sub(self.last_ns).max(1);
        self.last_ns = now_ns;
        let ideal = (self.stride as u64 * CHECK_NS / took).max(1);
        self.stride = ideal.min(self.stride as u64 * 2).min(MAX_STRIDE as u64) as u32;
        self.left = self.stride;
        now_ns < self.deadline
    }
}

/// Chooses, without a clock, which operations are timed.
pub struct Sampler {
    rng: Rng,
    every: u32,
    left: u32,
}

impl Sampler {
    /// Times one operation in `every` on average (1: all of them).
    pub fn new(every: u32, rng: Rng) -> Sampler {
        let mut s = Sampler { rng, every: every.max(1), left: 0 };
        s.left = s.gap();
        s
    }

    fn gap(&mut self) -> u32 {
        if self.every == 1 {
            return 1;
        }
        1 + (self.rng.next() % (2 * self.every as u64 - 1)) as u32
    }

    /// Whether the next operation is timed.
    // A yes/no per operation that never ends, not an `Iterator` (clippy's
    // `should_implement_trait` is overruled for that reason).
    #[allow(clippy::should_implement_trait)]
    pub fn next(&mut self) -> bool {
        self.left -= 1;
        if self.left == 0 {
            self.left = self.gap();
            return true;
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A loop whose iterations take `ns` each: how far past the deadline it
    /// stops, and how many clock reads it made.
    fn run(iteration_ns: impl Fn(u64) -> u64, duration_ns: u64) -> (u64, u64, u64) {
        let mut p = Pacer::new(0, duration_ns);
        let (mut now, mut reads, mut iters) = (0u64, 0u64, 0u64);
        loop {
            if p.due() {
                reads += 1;
                if !p.observe(now) {
                    break;
                }
            }
            now += iteration_ns(iters);
            iters += 1;
        }
        (now - duration_ns, reads, iters)
    }

    #[test]
    fn fast_loops_read_the_clock_rarely_and_stop_near_the_deadline() {
        let (over, reads, iters) = run(|_| 100, 400_000_000);
        assert!(over <= 2 * CHECK_NS, "stopped {over} ns late");
        assert!(iters / reads >= 150, "{reads} reads for {iters} iterations");
    }

    #[test]
    fn slow_iterations_look_about_every_time() {
        // The very first look (at the start) skips one iteration at most.
        let (over, reads, iters) = run(|_| 1_000_000, 50_000_000);
        assert!(reads >= iters, "{reads} looks for {iters} iterations");
        assert!(over <= 1_000_000, "stopped {over} ns late");
    }

    #[test]
    fn a_loop_that_slows_down_still_stops_in_time() {
        // 100 ns iterations, then from the middle on 5 µs ones.
        let (over, _, _) = run(|i| if i < 1_000_000 { 100 } else { 5_000 }, 400_000_000);
        assert!(over <= 5 * CHECK_NS, "stopped {over} ns late");
    }

    #[test]
    fn sampling_rate_is_as_asked() {
        let mut s = Sampler::new(64, Rng::for_cpu(7, 0));
        let n = 1_000_000;
        let hits = (0..n).filter(|_| s.next()).count();
        let rate = n as f64 / hits as f64;
        assert!((60.0..68.0).contains(&rate), "one in {rate}");
        let mut all = Sampler::new(1, Rng::for_cpu(7, 0));
        assert!((0..100).all(|_| all.next()));
    }

    #[test]
    fn a_periodic_workload_is_sampled_over_its_whole_period() {
        // frames.batch: 64 allocations then 64 frees, over and over. With a
        // fixed stride of 64 every sample would be the same kind.
        let mut s = Sampler::new(64, Rng::for_cpu(11, 3));
        let mut by_phase = [0u64; 128];
        for i in 0..4_000_000u64 {
            if s.next() {
                by_phase[(i % 128) as usize] += 1;
            }
        }
        let allocs: u64 = by_phase[..64].iter().sum();
        let frees: u64 = by_phase[64..].iter().sum();
        let share = allocs as f64 / (allocs + frees) as f64;
        assert!((0.47..0.53).contains(&share), "allocations are {share} of samples");
        let (lo, hi) = (by_phase.iter().min().unwrap(), by_phase.iter().max().unwrap());
        assert!(*lo * 2 > *hi, "phases sampled between {lo} and {hi} times");
    }
}
