//! The kernel command line, passed by xtask through QEMU's fw_cfg as
//! space-separated `key=value` words.

use drivers::fw_cfg;

pub const FW_CFG_NAME: &str = "opt/smpmm/cmdline";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Boot, report, exit with success.
    Run,
    /// Run the in-kernel test suites.
    Test,
    /// Run the benchmarks (`only=`, `quick=1`) and send their records.
    Bench,
    /// Run the mixed stress workload for `seconds=` with `seed=`.
    Stress,
}

pub struct Cmdline {
    pub mode: Mode,
    /// Frames per magazine (`mag=N`, 1..=64).
    pub magazine_capacity: usize,
    /// Seed for randomised tests (`seed=N`); from the TSC when absent.
    pub seed: Option<u64>,
    /// Eviction policy (`evict=nru` or `evict=lru`).
    pub eviction: Eviction,
    /// Benchmarks or tests to run (`only=a,b`: name prefixes); empty
    /// means all.
    pub only: arrayvec::ArrayString<256>,
    /// Shorter benchmark runs (`quick=1`).
    pub quick: bool,
    /// How long stress mode runs (`seconds=N`).
    pub seconds: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Eviction {
    /// Not recently used: a clock over NRU classes (`mm`'s `Nru`).
    Nru,
    /// Least recently used with a second chance.
    Lru,
}

pub const DEFAULT_MAGAZINE_CAPACITY: usize = 32;

static BUF: spin::Mutex<[u8; 512]> = spin::Mutex::new([0; 512]);

/// Reads and parses the command line; absent means `mode=run`.
pub fn read() -> Cmdline {
    let mut cmd = Cmdline {
        mode: Mode::Run,
        magazine_capacity: DEFAULT_MAGAZINE_CAPACITY,
        seed: None,
        eviction: Eviction::Nru,
        only: arrayvec::ArrayString::new(),
        quick: false,
        seconds: 60,
    };
    let mut buf = BUF.lock();
    let text = match fw_cfg::read_file(FW_CFG_NAME, &mut buf[..]) {
        Ok(bytes) => core::str::from_utf8(bytes).unwrap_or(""),
        Err(fw_cfg::FwCfgError::NotFound | fw_cfg::FwCfgError::NotPresent) => "",
        Err(e) => {
            log::warn!("cmdline: {e:?}; using defaults");
            ""
        }
    };
    for word in text.split_whitespace() {
        match word.split_once('=') {
            Some(("mode", "run")) => cmd.mode = Mode::Run,
            Some(("mode", "test")) => cmd.mode = Mode::Test,
            Some(("mode", "bench")) => cmd.mode = Mode::Bench,
            Some(("mode", "stress")) => cmd.mode = Mode::Stress,
            Some(("only", names)) => {
                if cmd.only.try_push_str(names).is_err() {
                    log::warn!("cmdline: only= longer than {} bytes; running everything", cmd.only.capacity());
                }
            }
            Some(("quick", v)) => cmd.quick = v == "1",
            Some(("seconds", n)) => match parse_u64(n) {
                Some(s) if s > 0 => cmd.seconds = s,
                _ => log::warn!("cmdline: seconds={n:?} is not a positive number"),
            },
            Some(("mag", n)) => match n.parse() {
                Ok(n) if (1..=mm::magazine::MAG_MAX).contains(&n) => cmd.magazine_capacity = n,
                _ => log::warn!("cmdline: mag={n:?} is not 1..={}", mm::magazine::MAG_MAX),
            },
            Some(("evict", "nru")) => cmd.eviction = Eviction::Nru,
            Some(("evict", "lru")) => cmd.eviction = Eviction::Lru,
            Some(("seed", n)) => match parse_u64(n) {
                Some(s) => cmd.seed = Some(s),
                None => log::warn!("cmdline: seed={n:?} is not a number"),
            },
            _ => log::warn!("cmdline: ignoring unknown option {word:?}"),
        }
    }
    cmd
}

/// Decimal or `0x` hexadecimal.
fn parse_u64(s: &str) -> Option<u64> {
    match s.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16).ok(),
        None => s.parse().ok(),
    }
}
