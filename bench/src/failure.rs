//! A benchmark's correctness failure: a short message that fits a record.

use core::fmt::Write;

pub type Failure = arrayvec::ArrayString<240>;

/// A failure message, cut off at the capacity if it is longer.
pub fn failure(args: core::fmt::Arguments) -> Failure {
    let mut text = Cut(Failure::new());
    let _ = text.write_fmt(args);
    text.0
}

struct Cut(Failure);

impl Write for Cut {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        for c in s.chars() {
            if self.0.try_push(c).is_err() {
                break;
            }
        }
        Ok(())
    }
}

/// Fails the workload with a formatted message unless `cond` holds.
macro_rules! check {
    ($cond:expr, $($fmt:tt)+) => {
        if !$cond {
            return Err($crate::failure::failure(format_args!($($fmt)+)));
        }
    };
}
pub(crate) use check;

/// A failure that shows an error value.
pub fn fails(what: &str, e: impl core::fmt::Debug) -> Failure {
    failure(format_args!("{what}: {e:?}"))
}
