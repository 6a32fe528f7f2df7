//! Live progress of one benchmark boot: a progress bar on a terminal, one
//! line per record otherwise (CI logs, pipes), where a redrawn bar would
//! be noise.

use super::stats::{latency, si};
use crate::run::Echo;
use indicatif::{ProgressBar, ProgressStyle};
use record::{HostRecord, Record};
use std::time::Duration;

pub struct Progress {
    bar: Option<ProgressBar>,
    label: String,
    verbose: bool,
}

impl Progress {
    /// `live`: draw a bar (stderr is a terminal). `verbose`: also show the
    /// guest's free-text lines.
    pub fn new(smp: u32, live: bool, verbose: bool) -> Progress {
        let label = format!("smp {smp}");
        let bar = live.then(|| {
            // A spinner until BenchPlan says how many records to expect.
            let bar = ProgressBar::new_spinner();
            bar.set_style(
                ProgressStyle::with_template("[{prefix}] {spinner} {elapsed} {msg}").expect("valid template"),
            );
            bar.set_prefix(label.clone());
            bar.set_message("booting");
            bar.enable_steady_tick(Duration::from_millis(200));
            bar
        });
        Progress { bar, label, verbose }
    }

    /// The run loop's echo: feeds every serial line to the display.
    pub fn echo(&self) -> Echo {
        let (bar, label, verbose) = (self.bar.clone(), self.label.clone(), self.verbose);
        Echo::Observe(Box::new(move |line, record| {
            let say = |text: String| match &bar {
                Some(bar) => bar.println(text),
                None => eprintln!("{text}"),
            };
            let Some(record) = record else {
                if verbose && !line.contains(record::PREFIX) {
                    say(line.to_string());
                }
                return;
            };
            match (record, &bar) {
                (Record::BenchPlan { runs, reps, .. }, Some(bar)) => {
                    bar.set_style(
                        ProgressStyle::with_template("[{prefix}] {bar:30} {pos}/{len} {elapsed}/~{duration} {msg}")
                            .expect("valid template"),
                    );
                    bar.set_length(u64::from(runs * reps));
                }
                (Record::Bench { bench, variant, .. }, Some(bar)) => {
                    bar.inc(1);
                    bar.set_message(format!("{bench} {variant}"));
                }
                (Record::BenchDone { .. }, Some(bar)) => bar.set_message("done"),
                (Record::BenchFail { .. }, _) | (_, None) => {
                    if let Some(text) = describe(record) {
                        say(format!("[{label}] {text}"));
                    }
                }
                _ => {}
            }
        }))
    }

    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            // Cleared: the caller prints a line about the finished boot.
            bar.finish_and_clear();
        }
    }
}

/// One line about a benchmark record, for logs.
pub fn describe(record: &HostRecord) -> Option<String> {
    Some(match record {
        Record::Boot { cpus_online, .. } => format!("booted, {cpus_online} CPUs online"),
        Record::BenchPlan { runs, reps, quick } => {
            format!("plan: {runs} runs × {reps} repetitions{}", if *quick { " (quick)" } else { "" })
        }
        Record::Bench { bench, variant, smp, workers, rep, ops_per_sec, ns_p50, ns_p99, .. } => format!(
            "{bench} {variant}{} rep {rep}: {} ops/s, p50 {}, p99 {}",
            if workers < smp { " (CPU 0 alone)" } else { "" },
            si(*ops_per_sec as f64),
            latency(*ns_p50 as f64),
            latency(*ns_p99 as f64)
        ),
        Record::BenchFail { bench, variant, detail, .. } => format!("FAIL {bench} {variant}: {detail}"),
        Record::BenchDone { runs, failed } => format!("done: {runs} runs, {failed} failed"),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_lines() {
        let bench = Record::Bench {
            bench: "vm.local".into(),
            variant: "private".into(),
            smp: 4,
            workers: 4,
            rep: 3,
            ops: 1,
            ns: 1,
            ops_per_sec: 2_500_000,
            ns_p50: 1_500,
            ns_p99: 42_000,
            ns_max: 1,
            sample_every: 64,
            samples: 1,
            counters: Default::default(),
        };
        assert_eq!(describe(&bench).unwrap(), "vm.local private rep 3: 2.50M ops/s, p50 1.5 µs, p99 42.0 µs");
        let plan = Record::BenchPlan { runs: 7, reps: 5, quick: true };
        assert_eq!(describe(&plan).unwrap(), "plan: 7 runs × 5 repetitions (quick)");
        assert_eq!(describe(&Record::Summary { passed: 1, failed: 0 }), None);
    }
}
