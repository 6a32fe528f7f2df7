//! How a QEMU run ended, decoded from its exit status.

use std::process::ExitStatus;
use std::time::Duration;

/// How a QEMU run ended. The guest exits through `isa-debug-exit` at port
/// 0xf4: it writes 0x10 (success) or 0x11 (failure) and QEMU exits with
/// `(value << 1) | 1`, i.e. 33 or 35. Any other code is QEMU's own.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exit {
    GuestSuccess,
    GuestFailure,
    Qemu(i32),
    Signal(i32),
    Timeout(Duration),
}

impl Exit {
    pub fn decode(status: ExitStatus) -> Exit {
        use std::os::unix::process::ExitStatusExt;
        match (status.code(), status.signal()) {
            (Some(33), _) => Exit::GuestSuccess,
            (Some(35), _) => Exit::GuestFailure,
            (Some(code), _) => Exit::Qemu(code),
            (None, Some(sig)) => Exit::Signal(sig),
            (None, None) => Exit::Qemu(-1),
        }
    }

    pub fn describe(self) -> String {
        match self {
            Exit::GuestSuccess => "guest exited with success".into(),
            Exit::GuestFailure => "guest reported failure (QEMU exit 35)".into(),
            // -no-reboot turns a guest triple fault into QEMU exiting 0.
            Exit::Qemu(0) => "QEMU exited with status 0 without a guest exit code (triple fault?)".into(),
            Exit::Qemu(code) => format!("QEMU failed with exit status {code}"),
            Exit::Signal(sig) => format!("QEMU was killed by signal {sig}"),
            Exit::Timeout(t) => format!("timeout after {} s", t.as_secs()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::ExitStatusExt;

    #[test]
    fn decodes_debug_exit_codes() {
        // Raw wait statuses: exit code in bits 8..16, signal in the low bits.
        assert_eq!(Exit::decode(ExitStatus::from_raw(33 << 8)), Exit::GuestSuccess);
        assert_eq!(Exit::decode(ExitStatus::from_raw(35 << 8)), Exit::GuestFailure);
        assert_eq!(Exit::decode(ExitStatus::from_raw(1 << 8)), Exit::Qemu(1));
        assert_eq!(Exit::decode(ExitStatus::from_raw(0)), Exit::Qemu(0));
        assert_eq!(Exit::decode(ExitStatus::from_raw(9)), Exit::Signal(9));
    }
}
