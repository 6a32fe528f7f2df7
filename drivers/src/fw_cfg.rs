//! QEMU's firmware configuration device (fw_cfg), used to pass the kernel
//! its command line: xtask adds `-fw_cfg name=opt/smpmm/cmdline,string=...`.
//!
//! Only the legacy port interface is used: a 16-bit selector at 0x510 and
//! an 8-bit data port at 0x511.

use x86_64::instructions::port::Port;

const SELECTOR: u16 = 0x510;
const DATA: u16 = 0x511;
const KEY_SIGNATURE: u16 = 0x0000;
const KEY_FILE_DIR: u16 = 0x0019;
const FILE_NAME_LEN: usize = 56;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FwCfgError {
    /// No fw_cfg device (not QEMU).
    NotPresent,
    /// The device has no file of that name.
    NotFound,
    /// The file is larger than the caller's buffer.
    TooLarge { size: usize },
}

fn select(key: u16) {
    // SAFETY: 0x510 is the fw_cfg selector on QEMU's PC machines; writing a
    // key has no effect other than choosing what the data port returns.
    unsafe { Port::<u16>::new(SELECTOR).write(key) };
}

fn read_bytes(buf: &mut [u8]) {
    let mut port = Port::<u8>::new(DATA);
    for b in buf {
        // SAFETY: reading the fw_cfg data port only advances its offset
        // within the selected item.
        *b = unsafe { port.read() };
    }
}

fn read_be_u32() -> u32 {
    let mut b = [0u8; 4];
    read_bytes(&mut b);
    u32::from_be_bytes(b)
}

/// Reads fw_cfg file `name` into `buf` and returns its length.
pub fn read_file<'a>(name: &str, buf: &'a mut [u8]) -> Result<&'a [u8], FwCfgError> {
    select(KEY_SIGNATURE);
    let mut sig = [0u8; 4];
    read_bytes(&mut sig);
    if &sig != b"QEMU" {
        return Err(FwCfgError::NotPresent);
    }
    select(KEY_FILE_DIR);
    let count = read_be_u32();
    for _ in 0..count {
        let size = read_be_u32() as usize;
        let mut sel = [0u8; 4]; // select (be16) + reserved (u16)
        read_bytes(&mut sel);
        let mut raw_name = [0u8; FILE_NAME_LEN];
        read_bytes(&mut raw_name);
        let len = raw_name.iter().position(|&b| b == 0).unwrap_or(FILE_NAME_LEN);
        if &raw_name[..len] != name.as_bytes() {
            continue;
        }
        if size > buf.len() {
            return Err(FwCfgError::TooLarge { size });
        }
        select(u16::from_be_bytes([sel[0], sel[1]]));
        read_bytes(&mut buf[..size]);
        return Ok(&buf[..size]);
    }
    Err(FwCfgError::NotFound)
}
