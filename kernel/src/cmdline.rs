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
}

pub struct Cmdline {
    pub mode: Mode,
    /// Frames per magazine (`mag=N`, 1..=64).
    pub magazine_capacity: usize,
    /// Seed for randomised tests (`seed=N`); from the TSC when absent.
    pub seed: Option<u64>,
    /// Eviction policy (`evict=clock` or `evict=lru`).
    pub eviction: Eviction,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Eviction {
    /// Clock over not-recently-used classes.
    Clock,
    /// Least recently used with a second chance.
    Lru,
}

pub const DEFAULT_MAGAZINE_CAPACITY: usize = 32;

static BUF: spin::Mutex<[u8; 512]> = spin::Mutex::new([0; 512]);

/// Reads and parses the command line; absent means `mode=run`.
pub fn read() -> Cmdline {
    let mut cmd = Cmdline { mode: Mode::Run, magazine_capacity: DEFAULT_MAGAZINE_CAPACITY, seed: None, eviction: Eviction::Clock };
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
            Some(("mag", n)) => match n.parse() {
                Ok(n) if (1..=mm::magazine::MAG_MAX).contains(&n) => cmd.magazine_capacity = n,
                _ => log::warn!("cmdline: mag={n:?} is not 1..={}", mm::magazine::MAG_MAX),
            },
            Some(("evict", "clock")) => cmd.eviction = Eviction::Clock,
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
