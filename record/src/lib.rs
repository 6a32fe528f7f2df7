//! The records the kernel sends to the host over the serial line.
//!
//! Every record is one line: [`PREFIX`] followed by one JSON object
//! `{"schema":N,"record":{"kind":...,...}}`. The host reads only these lines
//! and never scrapes free text, so anything the host needs to know (test
//! outcomes, CPU counts, benchmark results) must travel as a record.
//!
//! The types are generic over the string type so the guest can send
//! borrowed `&str` without a heap and the host can parse into `String`.
//! Parsing (feature `parse`) needs `std`: serde's tagged enums buffer.
#![cfg_attr(not(test), no_std)]

use serde::Serialize;
#[cfg(feature = "parse")]
use serde::Deserialize;

/// Marks a record line on the serial console.
pub const PREFIX: &str = "@@smpmm ";

/// Bumped whenever a record changes shape incompatibly.
pub const SCHEMA: u32 = 1;

/// Wrapper that carries the schema version with every record.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[cfg_attr(feature = "parse", derive(Deserialize))]
pub struct Envelope<S> {
    pub schema: u32,
    pub record: Record<S>,
}

/// How the local APIC is driven.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "parse", derive(Deserialize))]
#[serde(rename_all = "lowercase")]
pub enum ApicMode {
    XApic,
    X2Apic,
}

/// Outcome of one in-kernel test.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "parse", derive(Deserialize))]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    Pass,
    Fail,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[cfg_attr(feature = "parse", derive(Deserialize))]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Record<S> {
    /// Sent once after AP bring-up.
    Boot {
        cpus_online: u32,
        cpus_total: u32,
        apic: ApicMode,
        tsc_hz: u64,
        /// Where the TSC frequency came from (`cpuid15`, `pit`).
        tsc_source: S,
        usable_bytes: u64,
    },
    /// One per test, from the CPU that ran the runner.
    Test {
        name: S,
        outcome: Outcome,
        ns: u64,
        /// Failure message; empty on success.
        detail: S,
    },
    /// Last record of a test run.
    Summary { passed: u32, failed: u32 },
}

/// Longest record line the guest can format (without the prefix).
pub const MAX_LINE: usize = 1024;

/// Formats `record` as JSON (without the prefix). Fails only when the line
/// would be longer than [`MAX_LINE`].
pub fn to_json(record: &Record<&str>) -> Result<heapless::String<MAX_LINE>, serde_json_core::ser::Error> {
    serde_json_core::to_string(&Envelope { schema: SCHEMA, record: record.clone() })
}

#[doc(hidden)]
pub use serde_json_core::heapless;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guest_line_parses_on_host() {
        let line = to_json(&Record::Test {
            name: "smp::cross_call",
            outcome: Outcome::Fail,
            ns: 42,
            detail: "cpu 3 \"late\"",
        })
        .unwrap();
        let parsed: Envelope<String> = serde_json::from_str(&line).unwrap();
        assert_eq!(parsed.schema, SCHEMA);
        assert_eq!(
            parsed.record,
            Record::Test { name: "smp::cross_call".into(), outcome: Outcome::Fail, ns: 42, detail: "cpu 3 \"late\"".into() }
        );
    }

    #[test]
    fn boot_record_round_trips() {
        let rec = Record::Boot {
            cpus_online: 8,
            cpus_total: 8,
            apic: ApicMode::X2Apic,
            tsc_hz: 2_000_000_000,
            tsc_source: "pit",
            usable_bytes: 1 << 30,
        };
        let line = to_json(&rec).unwrap();
        assert!(line.contains("\"kind\":\"boot\""), "{line}");
        let parsed: Envelope<String> = serde_json::from_str(&line).unwrap();
        assert!(matches!(parsed.record, Record::Boot { cpus_online: 8, apic: ApicMode::X2Apic, .. }));
    }

    #[test]
    fn overlong_record_is_an_error_not_a_truncation() {
        let long = "x".repeat(MAX_LINE);
        assert!(to_json(&Record::Test { name: &long, outcome: Outcome::Pass, ns: 0, detail: "" }).is_err());
    }
}
