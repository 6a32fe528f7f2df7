//! `plots/<bench>.svg`: ops/s against CPU count, one line per variant with
//! min–max whiskers over its repetitions, and a dotted "host ceiling" line
//! per variant where every CPU works (min(N, host cores) × its solo rate).

use super::stats::{baseline_of, si, Index};
use anyhow::{anyhow, Result};
use plotters::prelude::*;
use std::path::Path;

/// Line colours that stay apart on white (no yellow), cycled.
const COLOURS: [RGBColor; 8] = [
    RGBColor(31, 119, 180),
    RGBColor(214, 39, 40),
    RGBColor(44, 160, 44),
    RGBColor(148, 103, 189),
    RGBColor(255, 127, 14),
    RGBColor(140, 86, 75),
    RGBColor(23, 190, 207),
    RGBColor(127, 127, 127),
];

/// Writes one SVG per benchmark into `dir`; returns the benchmarks plotted.
/// A plot that fails is reported and skipped: the numbers matter more.
pub fn write_all(idx: &Index, dir: &Path) -> Vec<String> {
    let mut done = Vec::new();
    if let Err(e) = std::fs::create_dir_all(dir) {
        eprintln!("    warning: no plots: cannot create {}: {e}", dir.display());
        return done;
    }
    for (bench, variants) in idx.benches() {
        let mut svg = String::new();
        match render(idx, bench, &variants, &mut svg) {
            Ok(true) => match std::fs::write(dir.join(format!("{bench}.svg")), svg) {
                Ok(()) => done.push(bench.to_string()),
                Err(e) => eprintln!("    warning: writing the {bench} plot: {e}"),
            },
            Ok(false) => {}
            Err(e) => eprintln!("    warning: plotting {bench}: {e:#}"),
        }
    }
    done
}

/// Draws the plot into `svg`. The CPU axis is logarithmic with a tick at
/// each measured count, so 1, 2, 4, 8 are evenly spaced and labelled; the
/// ops/s axis is logarithmic too. Returns false when there is
/// nothing usable to draw (every figure failed its check).
pub fn render(idx: &Index, bench: &str, variants: &[&str], svg: &mut String) -> Result<bool> {
    let lines: Vec<Line> = variants
        .iter()
        .map(|&v| {
            let rows: Vec<_> = idx.smps(bench, v).into_iter().filter_map(|n| idx.good(bench, v, n)).collect();
            Line {
                variant: v,
                points: rows.iter().map(|s| (f64::from(s.smp), s.ops_per_sec)).collect(),
                whiskers: rows.iter().map(|s| (f64::from(s.smp), s.ops_per_sec_min, s.ops_per_sec_max)).collect(),
                ceiling: rows.iter().filter_map(|s| Some((f64::from(s.smp), s.ceiling?))).collect(),
            }
        })
        .filter(|l| !l.points.is_empty())
        .collect();
    if lines.is_empty() {
        return Ok(false);
    }
    let xs = lines.iter().flat_map(|l| l.points.iter().map(|q| q.0));
    let (x_lo, x_hi) = xs.fold((f64::MAX, f64::MIN), |(lo, hi), x| (lo.min(x), hi.max(x)));
    // Logarithmic ops/s: figures that fall from 10^5 to 10^2 when IPIs
    // meet busy host cores stay readable next to flat ones.
    let ys = || {
        lines.iter().flat_map(|l| {
            l.whiskers
                .iter()
                .flat_map(|w| [w.1, w.2])
                .chain(l.points.iter().map(|q| q.1))
                .chain(l.ceiling.iter().map(|c| c.1))
        })
    };
    let y_hi = ys().fold(0.0, f64::max).max(1.0) * 2.0;
    let y_lo = ys().fold(f64::MAX, f64::min).max(1.0) / 2.0;
    let mut ticks: Vec<f64> = lines.iter().flat_map(|l| l.points.iter().map(|q| q.0)).collect();
    ticks.sort_by(f64::total_cmp);
    ticks.dedup();
    // A little room either side so end points do not sit on the frame.
    let x_range = ((x_lo / 1.25)..(x_hi * 1.25)).log_scale().base(2.0);

    let err = |e: &dyn std::fmt::Display| anyhow!("{e}");
    let root = SVGBackend::with_string(svg, (720, 440)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(&e))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(format!("{bench}: throughput by CPU count"), ("sans-serif", 22))
        .margin(12)
        .x_label_area_size(48)
        .y_label_area_size(72)
        .build_cartesian_2d(
            x_range.with_key_points(ticks),
            (y_lo..y_hi).log_scale().with_key_points(log_ticks(y_lo, y_hi)),
        )
        .map_err(|e| err(&e))?;
    chart
        .configure_mesh()
        .x_desc("CPUs (vCPUs under TCG)")
        .y_desc("ops/s, all CPUs together (median, log scale)")
        .x_label_formatter(&|x| format!("{x}"))
        .y_label_formatter(&|y| si(*y))
        .light_line_style(RGBColor(238, 238, 238))
        .label_style(("sans-serif", 14))
        .axis_desc_style(("sans-serif", 15))
        .draw()
        .map_err(|e| err(&e))?;
    for (i, line) in lines.iter().enumerate() {
        let (variant, points) = (&line.variant, &line.points);
        let color = COLOURS[i % COLOURS.len()];
        let style = color.stroke_width(2);
        // Global-lock baselines dashed, so the designs they measure stand out.
        let series = if baseline_of(variant) == *variant {
            let dashed = DashedLineSeries::new(points.iter().copied(), 8, 5, style);
            chart.draw_series(dashed).map_err(|e| err(&e))?
        } else {
            chart.draw_series(LineSeries::new(points.iter().copied(), style)).map_err(|e| err(&e))?
        };
        if baseline_of(variant) == *variant {
            series
                .label(format!("{variant} (baseline)"))
                .legend(move |(x, y)| plotters::element::DashedPathElement::new([(x, y), (x + 20, y)], 6, 3, style));
        } else {
            series.label(*variant).legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], style));
        }
        chart.draw_series(points.iter().map(|&p| Circle::new(p, 4, color.filled()))).map_err(|e| err(&e))?;
        // Min–max over the repetitions.
        chart
            .draw_series(
                line.whiskers.iter().map(|&(x, lo, hi)| PathElement::new([(x, lo), (x, hi)], color.stroke_width(1))),
            )
            .map_err(|e| err(&e))?;
        if line.ceiling.len() > 1 {
            let thin = color.mix(0.6).stroke_width(1);
            chart
                .draw_series(DashedLineSeries::new(line.ceiling.iter().copied(), 3, 4, thin))
                .map_err(|e| err(&e))?
                .label(format!("{variant} host ceiling"))
                .legend(move |(x, y)| plotters::element::DashedPathElement::new([(x, y), (x + 20, y)], 3, 4, thin));
        }
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .label_font(("sans-serif", 14))
        .draw()
        .map_err(|e| err(&e))?;
    root.present().map_err(|e| err(&e))?;
    drop(chart);
    drop(root);
    Ok(true)
}

/// One variant's figures: medians, whiskers (x, min, max), ceiling.
struct Line<'a> {
    variant: &'a str,
    points: Vec<(f64, f64)>,
    whiskers: Vec<(f64, f64, f64)>,
    ceiling: Vec<(f64, f64)>,
}

/// 1, 2 and 5 times each power of ten in `lo..=hi`, so even a range
/// inside one decade gets labels.
fn log_ticks(lo: f64, hi: f64) -> Vec<f64> {
    let mut ticks = Vec::new();
    let mut decade = 10f64.powi(lo.log10().floor() as i32);
    while decade <= hi {
        ticks.extend([1.0, 2.0, 5.0].iter().map(|m| m * decade).filter(|t| (lo..=hi).contains(t)));
        decade *= 10.0;
    }
    ticks
}

#[cfg(test)]
mod tests {
    #[test]
    fn log_ticks_inside_one_decade() {
        assert_eq!(super::log_ticks(116e3, 722e3), vec![200e3, 500e3]);
        assert_eq!(super::log_ticks(40.0, 1200.0), vec![50.0, 100.0, 200.0, 500.0, 1000.0]);
    }

    use super::*;
    use crate::bench::report_json::BenchRow;
    use crate::bench::stats::summarize;

    fn row(variant: &str, smp: u32, ops_per_sec: u64) -> BenchRow {
        BenchRow {
            bench: "frames.pair".into(),
            variant: variant.into(),
            smp,
            rep: 0,
            ops: 1,
            ns: 1,
            ops_per_sec,
            ns_p50: 1,
            ns_p99: 1,
            ns_max: 1,
            counters: Default::default(),
            ..Default::default()
        }
    }

    #[test]
    fn svg_has_axes_labels_and_legend() {
        let rows: Vec<BenchRow> = [1, 2, 4, 8]
            .into_iter()
            .flat_map(|n| [row("magazine", n, 1_000_000 * u64::from(n)), row("global", n, 900_000 / u64::from(n))])
            .collect();
        let mut rows = rows;
        rows.extend([2, 4, 8].map(|n| BenchRow { workers: 1, ..row("magazine", n, 1_100_000) }));
        let mut summary = summarize(&rows, &Default::default());
        crate::bench::stats::set_ceilings(&mut summary, 2);
        let idx = Index::new(&summary);
        let mut svg = String::new();
        assert!(render(&idx, "frames.pair", &["global", "magazine"], &mut svg).unwrap());
        assert!(svg.contains("magazine host ceiling"), "ceiling in the legend: {svg}");
        assert!(svg.starts_with("<svg"), "{svg}");
        let texts = texts(&svg);
        for text in [
            "frames.pair: throughput by CPU count",
            "CPUs (vCPUs under TCG)",
            "magazine",
            "global (baseline)",
            "1",
            "2",
            "4",
            "8",
            "100k",
            "1.00M",
            "10.0M",
        ] {
            assert!(texts.iter().any(|t| t == text), "no {text:?} in {texts:?}");
        }
        assert!(!texts.iter().any(|t| t == "3" || t == "1.5"), "only measured CPU counts are ticks: {texts:?}");
    }

    /// The contents of the SVG's <text> elements.
    fn texts(svg: &str) -> Vec<String> {
        svg.split("<text")
            .skip(1)
            .filter_map(|t| Some(t.split_once('>')?.1.split_once("</text>")?.0.trim().to_string()))
            .collect()
    }

    #[test]
    fn nothing_to_draw() {
        let rows = vec![row("global", 2, 5)];
        let failed = [("frames.pair".to_string(), "global".to_string(), 2)].into();
        let summary = summarize(&rows, &failed);
        let mut svg = String::new();
        assert!(!render(&Index::new(&summary), "frames.pair", &["global"], &mut svg).unwrap());
    }
}
