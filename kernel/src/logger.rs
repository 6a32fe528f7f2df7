//! `log` output on the serial line, one line per record, prefixed with the
//! time since boot and the CPU that logged it.

#[cfg(feature = "test-hooks")]
use core::fmt::Write;

use drivers::{serial, tsc};
use log::{Level, LevelFilter, Metadata, Record};

struct SerialLogger;

static LOGGER: SerialLogger = SerialLogger;

impl log::Log for SerialLogger {
    fn enabled(&self, _: &Metadata) -> bool {
        true
    }

    fn log(&self, r: &Record) {
        let ns = tsc::now_ns();
        let cpu = smp::percpu::current_index();
        let level = match r.level() {
            Level::Error => "ERROR",
            Level::Warn => "WARN ",
            Level::Info => "INFO ",
            Level::Debug => "DEBUG",
            Level::Trace => "TRACE",
        };
        serial::write_fmt(format_args!(
            "[{:5}.{:06} cpu{:<2}] {} {}\n",
            ns / 1_000_000_000,
            ns / 1_000 % 1_000_000,
            cpu,
            level,
            r.args()
        ));
    }

    fn flush(&self) {}
}

pub fn init() {
    log::set_logger(&LOGGER).expect("logger installed twice");
    log::set_max_level(LevelFilter::Info);
}

/// Sends a result record to the host: `record::PREFIX` + JSON, one line.
pub fn emit(rec: &record::GuestRecord) {
    match record::to_json(rec) {
        Ok(json) => serial::write_fmt(format_args!("{}{}\n", record::PREFIX, json)),
        Err(_) => log::error!("record too long for one line; dropped"),
    }
}

/// Formats into a fixed buffer, cutting off what does not fit (the
/// tests' failure messages).
#[cfg(feature = "test-hooks")]
pub struct Text<const N: usize>(pub arrayvec::ArrayString<N>);

#[cfg(feature = "test-hooks")]
impl<const N: usize> Text<N> {
    pub const fn new() -> Self {
        Text(arrayvec::ArrayString::new_const())
    }
}

#[cfg(feature = "test-hooks")]
impl<const N: usize> Default for Text<N> {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(feature = "test-hooks")]
impl<const N: usize> Write for Text<N> {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        for c in s.chars() {
            if self.0.try_push(c).is_err() {
                break;
            }
        }
        Ok(())
    }
}
