//! `--plot FILE.svg`: a hand-written SVG with two panels.
//!
//! 1. Latency by percentile, HdrHistogram style: the x axis is `log10(1/(1−p))`, so
//!    90 %, 99 %, 99.9 %, … are equally spaced; y is latency in µs.
//! 2. IOPS over time, one point per status interval.
//!
//! Each job is one coloured series (plus a dashed "Total" when there are several jobs),
//! listed in a legend under the panels.

use std::fmt::Write as _;
use std::path::Path;

use crate::error::BenchError;
use crate::report::JobResult;
use crate::stats::JobStats;

const WIDTH: f64 = 960.0;
const PANEL_H: f64 = 300.0;
const MARGIN_L: f64 = 90.0;
const MARGIN_R: f64 = 30.0;
const TOP: f64 = 50.0;
const GAP: f64 = 90.0;
const LEGEND_ROW_H: f64 = 20.0;
const LEGEND_COLS: usize = 3;
const PALETTE: [&str; 10] = [
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
    "#bcbd22", "#17becf",
];
const TOTAL_COLOR: &str = "#000000";

/// Escapes text for use in SVG content and attribute values.
fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c => out.push(c),
        }
    }
    out
}

/// A "nice" tick step (1, 2 or 5 × 10^k) giving about `target` ticks over `range`.
fn nice_step(range: f64, target: f64) -> f64 {
    if range.is_nan() || range <= 0.0 || !range.is_finite() {
        return 1.0;
    }
    let raw = range / target;
    let mag = 10f64.powf(raw.log10().floor());
    let norm = raw / mag;
    let nice = if norm <= 1.0 {
        1.0
    } else if norm <= 2.0 {
        2.0
    } else if norm <= 5.0 {
        5.0
    } else {
        10.0
    };
    nice * mag
}

/// Axis maximum and step for data whose maximum is `max`.
fn nice_axis(max: f64) -> (f64, f64) {
    let max = if max > 0.0 && max.is_finite() {
        max
    } else {
        1.0
    };
    let step = nice_step(max, 5.0);
    ((max / step).ceil() * step, step)
}

/// Compact number: 1.5M, 250k, 12, 0.5.
fn compact(v: f64) -> String {
    let a = v.abs();
    if a >= 1e9 {
        format!("{}G", trim(v / 1e9))
    } else if a >= 1e6 {
        format!("{}M", trim(v / 1e6))
    } else if a >= 1e3 {
        format!("{}k", trim(v / 1e3))
    } else {
        trim(v)
    }
}

fn trim(v: f64) -> String {
    let s = format!("{v:.2}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    if s.is_empty() || s == "-0" {
        "0".to_string()
    } else {
        s.to_string()
    }
}

fn percentile_label(decade: u32) -> String {
    match decade {
        0 => "0%".to_string(),
        d => {
            let decimals = d.saturating_sub(2) as usize;
            format!("{:.*}%", decimals, 100.0 - 100.0 * 10f64.powi(-(d as i32)))
        }
    }
}

struct Series {
    label: String,
    color: &'static str,
    dashed: bool,
    /// (x, y) in data units.
    points: Vec<(f64, f64)>,
}

struct Panel<'a> {
    title: &'a str,
    x_label: &'a str,
    y_label: &'a str,
    top: f64,
    x_max: f64,
    x_ticks: Vec<(f64, String)>,
}

fn plot_x(x: f64, x_max: f64) -> f64 {
    MARGIN_L + (WIDTH - MARGIN_L - MARGIN_R) * (x / x_max)
}

fn plot_y(y: f64, y_max: f64, top: f64) -> f64 {
    top + PANEL_H - PANEL_H * (y / y_max)
}

fn draw_panel(svg: &mut String, panel: &Panel<'_>, series: &[Series]) {
    let x0 = MARGIN_L;
    let x1 = WIDTH - MARGIN_R;
    let y0 = panel.top;
    let y1 = panel.top + PANEL_H;
    let data_max = series
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.1))
        .fold(0.0, f64::max);
    let (y_max, y_step) = nice_axis(data_max);

    let _ = writeln!(
        svg,
        r#"<text x="{:.1}" y="{:.1}" font-size="15" font-weight="bold" text-anchor="middle">{}</text>"#,
        (x0 + x1) / 2.0,
        y0 - 12.0,
        esc(panel.title)
    );
    let _ = writeln!(
        svg,
        r##"<rect x="{x0:.1}" y="{y0:.1}" width="{:.1}" height="{PANEL_H:.1}" fill="none" stroke="#333"/>"##,
        x1 - x0
    );
    // Y grid and ticks.
    let mut v = 0.0;
    while v <= y_max + y_step * 1e-9 {
        let y = plot_y(v, y_max, y0);
        let _ = writeln!(
            svg,
            r##"<line x1="{x0:.1}" y1="{y:.1}" x2="{x1:.1}" y2="{y:.1}" stroke="#ddd"/>"##
        );
        let _ = writeln!(
            svg,
            r#"<text x="{:.1}" y="{:.1}" font-size="11" text-anchor="end">{}</text>"#,
            x0 - 6.0,
            y + 4.0,
            esc(&compact(v))
        );
        v += y_step;
    }
    // X grid and ticks.
    for (x, label) in &panel.x_ticks {
        let px = plot_x(*x, panel.x_max);
        let _ = writeln!(
            svg,
            r##"<line x1="{px:.1}" y1="{y0:.1}" x2="{px:.1}" y2="{y1:.1}" stroke="#eee"/>"##
        );
        let _ = writeln!(
            svg,
            r#"<text x="{px:.1}" y="{:.1}" font-size="11" text-anchor="middle">{}</text>"#,
            y1 + 16.0,
            esc(label)
        );
    }
    // Axis labels.
    let _ = writeln!(
        svg,
        r#"<text x="{:.1}" y="{:.1}" font-size="12" text-anchor="middle">{}</text>"#,
        (x0 + x1) / 2.0,
        y1 + 36.0,
        esc(panel.x_label)
    );
    let _ = writeln!(
        svg,
        r#"<text x="{:.1}" y="{:.1}" font-size="12" text-anchor="middle" transform="rotate(-90 {:.1} {:.1})">{}</text>"#,
        x0 - 60.0,
        (y0 + y1) / 2.0,
        x0 - 60.0,
        (y0 + y1) / 2.0,
        esc(panel.y_label)
    );
    if series.iter().all(|s| s.points.is_empty()) {
        let _ = writeln!(
            svg,
            r##"<text x="{:.1}" y="{:.1}" font-size="14" fill="#999" text-anchor="middle">no data</text>"##,
            (x0 + x1) / 2.0,
            (y0 + y1) / 2.0
        );
    }
    for s in series.iter().filter(|s| !s.points.is_empty()) {
        let mut pts = String::new();
        for &(x, y) in &s.points {
            let _ = write!(
                pts,
                "{:.1},{:.1} ",
                plot_x(x.min(panel.x_max), panel.x_max),
                plot_y(y, y_max, y0)
            );
        }
        let dash = if s.dashed {
            r#" stroke-dasharray="6 4""#
        } else {
            ""
        };
        let _ = writeln!(
            svg,
            r#"<polyline fill="none" stroke="{}" stroke-width="1.8"{dash} points="{}"><title>{}</title></polyline>"#,
            s.color,
            pts.trim_end(),
            esc(&s.label)
        );
    }
}

fn latency_points(stats: &JobStats) -> Vec<(f64, f64)> {
    stats
        .latency_curve(10)
        .into_iter()
        .filter(|(p, _)| *p < 100.0)
        .map(|(p, ns)| ((1.0 / (1.0 - p / 100.0)).log10(), ns as f64 / 1000.0))
        .collect()
}

fn iops_points(stats: &JobStats) -> Vec<(f64, f64)> {
    stats
        .samples()
        .iter()
        .map(|s| (s.end_s, s.iops()))
        .collect()
}

fn job_labels(results: &[JobResult]) -> Vec<String> {
    let mut seen = std::collections::HashSet::new();
    let dup = results.iter().any(|r| !seen.insert(r.plan.name.as_str()));
    results
        .iter()
        .map(|r| {
            let base = if dup {
                r.plan.label()
            } else {
                r.plan.name.clone()
            };
            match &r.plan.section {
                Some(sec) => format!("{sec}: {base}"),
                None => base,
            }
        })
        .collect()
}

/// Renders the SVG document.
pub fn render_svg(results: &[JobResult]) -> Result<String, BenchError> {
    let labels = job_labels(results);
    let total = (results.len() > 1)
        .then(|| JobStats::merged(results.iter().map(|r| &r.stats)))
        .transpose()?;

    let mut lat_series: Vec<Series> = results
        .iter()
        .zip(&labels)
        .enumerate()
        .map(|(i, (r, label))| Series {
            label: label.clone(),
            color: PALETTE[i % PALETTE.len()],
            dashed: false,
            points: latency_points(&r.stats),
        })
        .collect();
    let mut iops_series: Vec<Series> = results
        .iter()
        .zip(&labels)
        .enumerate()
        .map(|(i, (r, label))| Series {
            label: label.clone(),
            color: PALETTE[i % PALETTE.len()],
            dashed: false,
            points: iops_points(&r.stats),
        })
        .collect();
    if let Some(t) = &total {
        lat_series.push(Series {
            label: "Total".to_string(),
            color: TOTAL_COLOR,
            dashed: true,
            points: latency_points(t),
        });
        iops_series.push(Series {
            label: "Total".to_string(),
            color: TOTAL_COLOR,
            dashed: true,
            points: iops_points(t),
        });
    }

    let max_decade = lat_series
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.0))
        .fold(0.0, f64::max)
        .ceil()
        .clamp(2.0, 7.0);
    let lat_ticks = (0..=max_decade as u32)
        .map(|d| (f64::from(d), percentile_label(d)))
        .collect();
    let t_max = iops_series
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.0))
        .fold(0.0, f64::max);
    let (t_axis, t_step) = nice_axis(t_max);
    let mut time_ticks = Vec::new();
    let mut t = 0.0;
    while t <= t_axis + t_step * 1e-9 {
        time_ticks.push((t, trim(t)));
        t += t_step;
    }

    let panel2_top = TOP + PANEL_H + GAP;
    let legend_top = panel2_top + PANEL_H + 60.0;
    let legend_rows = lat_series.len().div_ceil(LEGEND_COLS).max(1);
    let height = legend_top + legend_rows as f64 * LEGEND_ROW_H + 20.0;

    let mut svg = String::new();
    let _ = writeln!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" viewBox="0 0 {WIDTH} {height}" font-family="sans-serif">"#
    );
    let _ = writeln!(
        svg,
        r#"<rect x="0" y="0" width="{WIDTH}" height="{height}" fill="white"/>"#
    );
    let _ = writeln!(svg, "<g id=\"latency\">");
    draw_panel(
        &mut svg,
        &Panel {
            title: "Latency by percentile",
            x_label: "percentile",
            y_label: "latency (µs)",
            top: TOP,
            x_max: max_decade,
            x_ticks: lat_ticks,
        },
        &lat_series,
    );
    let _ = writeln!(svg, "</g>");
    let _ = writeln!(svg, "<g id=\"iops\">");
    draw_panel(
        &mut svg,
        &Panel {
            title: "IOPS over time",
            x_label: "time (s)",
            y_label: "IOPS",
            top: panel2_top,
            x_max: t_axis,
            x_ticks: time_ticks,
        },
        &iops_series,
    );
    let _ = writeln!(svg, "</g>");
    let _ = writeln!(svg, "<g id=\"legend\" font-size=\"12\">");
    let col_w = (WIDTH - MARGIN_L - MARGIN_R) / LEGEND_COLS as f64;
    for (i, s) in lat_series.iter().enumerate() {
        let x = MARGIN_L + (i % LEGEND_COLS) as f64 * col_w;
        let y = legend_top + (i / LEGEND_COLS) as f64 * LEGEND_ROW_H;
        let dash = if s.dashed {
            r#" stroke-dasharray="6 4""#
        } else {
            ""
        };
        let _ = writeln!(
            svg,
            r#"<line x1="{x:.1}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="{}" stroke-width="3"{dash}/>"#,
            x + 24.0,
            s.color
        );
        let _ = writeln!(
            svg,
            r#"<text x="{:.1}" y="{:.1}">{}</text>"#,
            x + 30.0,
            y + 4.0,
            esc(&s.label)
        );
    }
    let _ = writeln!(svg, "</g>");
    svg.push_str("</svg>\n");
    Ok(svg)
}

/// Writes the SVG to `path`.
pub fn write_svg(path: &Path, results: &[JobResult]) -> Result<(), BenchError> {
    let svg = render_svg(results)?;
    std::fs::write(path, svg).map_err(|source| BenchError::Io {
        context: format!("cannot write plot '{}'", path.display()),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorKind;
    use crate::plan::{JobPlan, OffsetPattern};
    use crate::report::JobStatus;
    use crate::workload::Workload;

    fn result(name: &str, core: usize, scale: u64) -> JobResult {
        let mut stats = JobStats::new(8).unwrap();
        for sec in 1..=5u64 {
            for i in 0..2000 * sec {
                stats.record(1000 * scale + (i % 97) * 10 * scale, 4096, true);
            }
            stats.mark_interval(sec as f64);
        }
        JobResult {
            plan: JobPlan {
                name: name.into(),
                section: None,
                bdev: name.into(),
                block_size: 512,
                core,
                workload: Workload::RandRead,
                io_size: 4096,
                queue_depth: 8,
                rwmixread: 50,
                offset: 0,
                length: 1 << 20,
                pattern: OffsetPattern::Uniform,
                seed: 1,
                verify_seed: 1,
            },
            stats,
            runtime_s: 5.0,
            status: JobStatus::Finished,
        }
    }

    /// Checks that every element is closed in order; returns the element count.
    fn check_balanced(svg: &str) -> usize {
        let mut stack: Vec<String> = Vec::new();
        let mut count = 0;
        let mut rest = svg;
        while let Some(start) = rest.find('<') {
            let end = rest[start..].find('>').expect("unterminated tag") + start;
            let tag = &rest[start + 1..end];
            if let Some(name) = tag.strip_prefix('/') {
                let open = stack.pop().expect("close without open");
                assert_eq!(open, name.trim(), "mismatched close");
            } else if !tag.ends_with('/') {
                let name = tag.split_whitespace().next().unwrap().to_string();
                stack.push(name);
                count += 1;
            } else {
                count += 1;
            }
            rest = &rest[end + 1..];
        }
        assert!(stack.is_empty(), "unclosed: {stack:?}");
        count
    }

    #[test]
    fn svg_is_well_formed_and_names_jobs() {
        let results = [result("Null0", 0, 1), result("Malloc<&>", 1, 3)];
        let svg = render_svg(&results).unwrap();
        assert!(svg.starts_with("<svg"));
        assert!(svg.trim_end().ends_with("</svg>"));
        assert!(check_balanced(&svg) > 20);
        assert!(svg.contains("Null0"));
        assert!(svg.contains("Malloc&lt;&amp;&gt;"));
        assert!(!svg.contains("Malloc<&>"));
        assert!(svg.contains(">Total<"));
        assert!(svg.contains("Latency by percentile"));
        assert!(svg.contains("IOPS over time"));
        assert!(svg.contains(">99%<") && svg.contains(">99.9%<"));
        assert_eq!(svg.matches("<polyline").count(), 6);
    }

    #[test]
    fn single_job_has_no_total_and_duplicates_get_cores() {
        let svg = render_svg(&[result("Null0", 0, 1)]).unwrap();
        assert!(!svg.contains(">Total<"));
        assert_eq!(svg.matches("<polyline").count(), 2);
        let mut a = result("Null0", 0, 1);
        a.plan.section = Some("sec".into());
        let svg = render_svg(&[a, result("Null0", 3, 1)]).unwrap();
        assert!(svg.contains("sec: Null0 (core 0)"));
        assert!(svg.contains("Null0 (core 3)"));
    }

    #[test]
    fn empty_data_says_so() {
        let mut r = result("Idle", 0, 1);
        r.stats = JobStats::new(0).unwrap();
        let svg = render_svg(&[r]).unwrap();
        check_balanced(&svg);
        assert_eq!(svg.matches("no data").count(), 2);
        let svg = render_svg(&[]).unwrap();
        check_balanced(&svg);
    }

    #[test]
    fn file_is_written() {
        let dir = std::env::temp_dir().join(format!("ferrite-bench-plot-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("out.svg");
        write_svg(&path, &[result("Null0", 0, 1)]).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.starts_with("<svg") && text.contains("Null0"));
        let e = write_svg(&dir.join("missing/dir/out.svg"), &[]).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Io);
        assert!(e.to_string().starts_with("cannot write plot '"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn helpers() {
        assert_eq!(nice_step(10.0, 5.0), 2.0);
        assert_eq!(nice_step(1000.0, 5.0), 200.0);
        assert_eq!(nice_step(0.0, 5.0), 1.0);
        assert_eq!(nice_axis(0.0), (1.0, 0.2));
        assert_eq!(nice_axis(7.3), (8.0, 2.0));
        assert_eq!(compact(1_500_000.0), "1.5M");
        assert_eq!(compact(250_000.0), "250k");
        assert_eq!(compact(12.0), "12");
        assert_eq!(compact(0.5), "0.5");
        assert_eq!(compact(0.0), "0");
        assert_eq!(compact(2e9), "2G");
        assert_eq!(percentile_label(0), "0%");
        assert_eq!(percentile_label(1), "90%");
        assert_eq!(percentile_label(2), "99%");
        assert_eq!(percentile_label(3), "99.9%");
        assert_eq!(percentile_label(4), "99.99%");
        assert_eq!(percentile_label(7), "99.99999%");
        assert_eq!(esc(r#"a"b'c"#), "a&quot;b&apos;c");
    }
}
