//! The workloads' random numbers: xorshift64, one stream per CPU from a
//! run's seed, so a seed replays each CPU's choices.

pub struct Rng(u64);

impl Rng {
    /// CPU `cpu`'s stream of the run seeded with `seed`.
    pub fn for_cpu(seed: u64, cpu: usize) -> Rng {
        // Never zero (xorshift's fixed point) for distinct CPUs' streams.
        Rng(seed ^ (cpu as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15))
    }

    // A generator that never ends, not an `Iterator`: its `Option` would
    // only add an unwrap at every call, so clippy's `should_implement_trait`
    // is overruled here.
    #[allow(clippy::should_implement_trait)]
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streams_replay_and_differ_by_cpu() {
        let take = |cpu| {
            let mut r = Rng::for_cpu(42, cpu);
            [r.next(), r.next(), r.next()]
        };
        assert_eq!(take(0), take(0));
        assert_ne!(take(0), take(1));
    }
}
