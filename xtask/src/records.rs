//! Recognising and parsing the guest's record lines (format: `record` crate).

use anyhow::{bail, Context, Result};
use record::{ApicMode, Envelope, HostRecord, PREFIX, SCHEMA};

/// `None` for free text; `Some(Err)` for a record line we cannot use.
/// The prefix may sit mid-line: another CPU's unterminated text or a
/// firmware escape sequence can precede it on the same serial line.
pub fn parse_line(line: &str) -> Option<Result<HostRecord>> {
    let at = line.find(PREFIX)?;
    Some(parse_json(&line[at + PREFIX.len()..]))
}

fn parse_json(json: &str) -> Result<HostRecord> {
    // Check the schema before the shape, so a kernel speaking a newer
    // schema gets "schema mismatch" and not a confusing field error.
    let value: serde_json::Value =
        serde_json::from_str(json.trim()).with_context(|| format!("bad record JSON: {json}"))?;
    match value.get("schema").and_then(|s| s.as_u64()) {
        Some(s) if s == u64::from(SCHEMA) => {}
        Some(s) => {
            bail!("record schema {s} but this xtask reads schema {SCHEMA}; rebuild both from the same tree: {json}")
        }
        None => bail!("record without a numeric \"schema\": {json}"),
    }
    let envelope: Envelope<String, std::collections::BTreeMap<String, u64>> =
        serde_json::from_value(value).with_context(|| format!("bad record: {json}"))?;
    Ok(envelope.record)
}

/// The name the record format uses for it.
pub fn apic_name(mode: ApicMode) -> &'static str {
    match mode {
        ApicMode::XApic => "xapic",
        ApicMode::X2Apic => "x2apic",
    }
}

/// `12 ms`, `340 us`: enough precision to read at a glance.
pub fn duration(ns: u64) -> String {
    match ns {
        n if n >= 10_000_000_000 => format!("{} s", n / 1_000_000_000),
        n if n >= 1_000_000 => format!("{} ms", n / 1_000_000),
        n => format!("{} us", n / 1_000),
    }
}

/// A Boot record for other modules' tests: `cpus` online of `cpus`, the
/// rest fixed.
#[cfg(test)]
pub fn test_boot(cpus: u32, apic: record::ApicMode, accel: record::Accel) -> HostRecord {
    record::Record::Boot {
        cpus_online: cpus,
        cpus_total: cpus,
        apic,
        tsc_hz: 1,
        tsc_source: "pit".into(),
        tsc_spread_ppm: 0,
        tsc_bound_ppm: 0,
        usable_bytes: 1,
        store: "ram".into(),
        accel,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use record::{Outcome, Record};

    #[test]
    fn free_text_is_not_a_record() {
        assert!(parse_line("kernel: hello").is_none());
        assert!(parse_line("").is_none());
    }

    #[test]
    fn prefix_in_the_middle_of_a_line() {
        let line = format!(
            r#"cpu 3 says hi@@smpmm {{"schema":{},"record":{{"kind":"summary","passed":4,"failed":1}}}}"#,
            record::SCHEMA
        );
        let rec = parse_line(&line).unwrap().unwrap();
        assert_eq!(rec, Record::Summary { passed: 4, failed: 1 });
    }

    #[test]
    fn guest_formatted_lines_parse() {
        let json = record::to_json(&Record::Boot {
            cpus_online: 8,
            cpus_total: 8,
            apic: ApicMode::X2Apic,
            tsc_hz: 2_000_000_000,
            tsc_source: "cpuid15",
            tsc_spread_ppm: 0,
            tsc_bound_ppm: 0,
            usable_bytes: 1 << 30,
            store: "ram",
            accel: record::Accel::Tcg,
        })
        .unwrap();
        let rec = parse_line(&format!("{PREFIX}{json}")).unwrap().unwrap();
        assert!(matches!(rec, Record::Boot { cpus_online: 8, apic: ApicMode::X2Apic, .. }));
        let json =
            record::to_json(&Record::Test { name: "mm::buddy", outcome: Outcome::Pass, ns: 5, detail: "" }).unwrap();
        assert!(matches!(
            parse_line(&format!("{PREFIX}{json}")).unwrap().unwrap(),
            Record::Test { outcome: Outcome::Pass, .. }
        ));
    }

    #[test]
    fn bad_json_is_an_error() {
        let err = parse_line("@@smpmm {\"schema\":1,\"rec").unwrap().unwrap_err();
        assert!(format!("{err:#}").contains("bad record JSON"), "{err:#}");
        let err = parse_line(&format!(r#"@@smpmm {{"schema":{},"record":{{"kind":"nonsense"}}}}"#, record::SCHEMA))
            .unwrap()
            .unwrap_err();
        assert!(format!("{err:#}").contains("bad record"), "{err:#}");
    }

    #[test]
    fn wrong_schema_is_named_as_such() {
        let other = record::SCHEMA + 1;
        let err = parse_line(&format!(r#"@@smpmm {{"schema":{other},"record":{{"kind":"whatever","x":1}}}}"#))
            .unwrap()
            .unwrap_err();
        assert!(
            format!("{err:#}")
                .contains(&format!("record schema {other} but this xtask reads schema {}", record::SCHEMA)),
            "{err:#}"
        );
        let err = parse_line(r#"@@smpmm {"record":{"kind":"summary","passed":0,"failed":0}}"#).unwrap().unwrap_err();
        assert!(format!("{err:#}").contains("without a numeric \"schema\""), "{err:#}");
    }

    #[test]
    fn durations_are_short() {
        assert_eq!(duration(12_300_000), "12 ms");
        assert_eq!(duration(340_000), "340 us");
        assert_eq!(duration(42_000_000_000), "42 s");
    }
}
