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
}

static BUF: spin::Mutex<[u8; 512]> = spin::Mutex::new([0; 512]);

/// Reads and parses the command line; absent means `mode=run`.
pub fn read() -> Cmdline {
    let mut cmd = Cmdline { mode: Mode::Run };
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
            _ => log::warn!("cmdline: ignoring unknown option {word:?}"),
        }
    }
    cmd
}
