//! Machine-readable results (JSON) and a hand-written SVG percentile plot.

use std::fmt::Write as _;
use std::path::Path;

use serde::Serialize;

use crate::disk::DiskCeilings;
use crate::report::{row_name, TargetCheck};
use crate::scenario::RunResult;

#[derive(Debug, Serialize)]
pub struct Report {
    pub tool: &'static str,
    pub unix_time: u64,
    pub command: Vec<String>,
    pub dir: String,
    pub filesystem: String,
    pub cpus: usize,
    pub disk: Option<DiskCeilings>,
    pub runs: Vec<RunResult>,
    pub roll_runs: Vec<RunResult>,
    pub targets: Vec<TargetCheck>,
    pub interrupted: bool,
}

pub fn write_json(path: &Path, r: &Report) -> std::io::Result<()> {
    let text = serde_json::to_string_pretty(r).map_err(std::io::Error::other)?;
    std::fs::write(path, text)
}

const COLORS: &[&str] = &[
    "#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf",
    "#7f7f7f", "#bcbd22",
];

/// x position of a percentile on the usual "number of nines" axis.
fn nines(p: f64) -> f64 {
    let q = (1.0 - p / 100.0).max(1e-6);
    -q.log10()
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// One curve of a percentile plot.
pub struct Series {
    pub name: String,
    /// Series with the same group share a colour.
    pub group: String,
    pub dashed: bool,
    /// `[percentile, µs]` points.
    pub curve: Vec<[f64; 2]>,
}

/// Latency-by-percentile plot of flush runs: one polyline per run, coloured
/// by flush strategy, dashed when warm-up is off.
pub fn svg(runs: &[&RunResult], disk: Option<&DiskCeilings>, title: &str) -> String {
    let series: Vec<Series> = runs
        .iter()
        .map(|r| Series {
            name: row_name(r),
            group: format!("{}/{}", r.mode, r.mechanism),
            dashed: !r.warm,
            curve: r.curve.clone(),
        })
        .collect();
    let mut lines = Vec::new();
    if let Some(d) = disk {
        lines.push((d.yardstick().p50_us, "disk p50 append+fdatasync"));
        lines.push((d.yardstick().p99_us, "disk p99 append+fdatasync"));
    }
    svg_series(&series, &lines, title, "latency of put_message")
}

/// Latency-by-percentile plot: x = percentile (log "nines" scale), y = latency
/// µs (log scale), one polyline per series, plus dashed horizontal reference
/// lines `(µs, label)`.
pub fn svg_series(runs: &[Series], hlines: &[(f64, &str)], title: &str, ylabel: &str) -> String {
    let (w, h) = (1000.0, 640.0);
    let (left, right, top, bottom) = (80.0, 330.0, 40.0, 60.0);
    let pw = w - left - right;
    let ph = h - top - bottom;
    let xmax = 5.0; // 99.999%
    let mut ymin = f64::MAX;
    let mut ymax = f64::MIN;
    for r in runs {
        for p in &r.curve {
            ymin = ymin.min(p[1].max(0.1));
            ymax = ymax.max(p[1].max(0.1));
        }
    }
    for &(v, _) in hlines {
        if v > 0.0 {
            ymin = ymin.min(v);
            ymax = ymax.max(v);
        }
    }
    if ymin > ymax {
        ymin = 1.0;
        ymax = 1000.0;
    }
    let lo = ymin.log10().floor();
    let hi = ymax.log10().ceil().max(lo + 1.0);
    let px = |p: f64| left + nines(p).min(xmax) / xmax * pw;
    let py = |v: f64| top + ph - (v.max(0.1).log10() - lo) / (hi - lo) * ph;
    let mut s = svg_header(w, h, left + pw / 2.0, title);
    // Grid: decades on y, nines on x.
    let mut d = lo;
    while d <= hi + 1e-9 {
        let y = py(10f64.powf(d));
        let label = if d >= 3.0 {
            format!("{} ms", 10f64.powf(d - 3.0))
        } else {
            format!("{} µs", 10f64.powf(d))
        };
        let _ = writeln!(
            s,
            r##"<line x1="{left}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="#ddd"/><text x="{:.1}" y="{:.1}" text-anchor="end">{label}</text>"##,
            left + pw,
            left - 6.0,
            y + 4.0
        );
        d += 1.0;
    }
    for (p, label) in [
        (0.0, "0%"),
        (90.0, "90%"),
        (99.0, "99%"),
        (99.9, "99.9%"),
        (99.99, "99.99%"),
        (99.999, "99.999%"),
    ] {
        let x = px(p);
        let _ = writeln!(
            s,
            r##"<line x1="{x:.1}" y1="{top}" x2="{x:.1}" y2="{:.1}" stroke="#ddd"/><text x="{x:.1}" y="{:.1}" text-anchor="middle">{label}</text>"##,
            top + ph,
            top + ph + 18.0
        );
    }
    let _ = writeln!(
        s,
        r##"<rect x="{left}" y="{top}" width="{pw}" height="{ph}" fill="none" stroke="#333"/>
<text x="{:.1}" y="{:.1}" text-anchor="middle">percentile (max plotted at 99.999%)</text>
<text x="18" y="{:.1}" text-anchor="middle" transform="rotate(-90 18 {:.1})">{}</text>"##,
        left + pw / 2.0,
        h - 18.0,
        top + ph / 2.0,
        top + ph / 2.0,
        esc(ylabel)
    );
    {
        for &(v, label) in hlines {
            if v > 0.0 {
                let y = py(v);
                let _ = writeln!(
                    s,
                    r##"<line x1="{left}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="#000" stroke-dasharray="6 4"/><text x="{:.1}" y="{:.1}" font-size="10">{label}</text>"##,
                    left + pw,
                    left + 4.0,
                    y - 3.0
                );
            }
        }
    }
    // One colour per strategy; runs of the same strategy share it.
    let mut strategies: Vec<String> = Vec::new();
    for (i, r) in runs.iter().enumerate() {
        let strat = r.group.clone();
        let ci = match strategies.iter().position(|x| *x == strat) {
            Some(p) => p,
            None => {
                strategies.push(strat);
                strategies.len() - 1
            }
        };
        let color = COLORS[ci % COLORS.len()];
        let pts: Vec<String> = r
            .curve
            .iter()
            .map(|p| {
                format!(
                    "{:.1},{:.1}",
                    px(if p[0] >= 100.0 { 99.999 } else { p[0] }),
                    py(p[1])
                )
            })
            .collect();
        let dash = if !r.dashed {
            ""
        } else {
            r#" stroke-dasharray="4 2""#
        };
        let _ = writeln!(
            s,
            r#"<polyline fill="none" stroke="{color}" stroke-width="1.5"{dash} points="{}"><title>{}</title></polyline>"#,
            pts.join(" "),
            esc(&r.name)
        );
        let ly = top + 14.0 * i as f64;
        if ly < h - 20.0 {
            let lx = left + pw + 12.0;
            let _ = writeln!(
                s,
                r#"<line x1="{lx}" y1="{:.1}" x2="{:.1}" y2="{:.1}" stroke="{color}" stroke-width="2"{dash}/><text x="{:.1}" y="{:.1}" font-size="10">{}</text>"#,
                ly - 4.0,
                lx + 18.0,
                ly - 4.0,
                lx + 22.0,
                ly,
                esc(&r.name)
            );
        }
    }
    s.push_str("</svg>\n");
    s
}

/// Where the throughput-over-time chart of `--plot FILE` goes:
/// `FILE` with `-throughput` before its extension.
pub fn throughput_path(plot: &std::path::Path) -> std::path::PathBuf {
    let stem = plot
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "plot".into());
    let ext = plot
        .extension()
        .map(|e| e.to_string_lossy().into_owned())
        .unwrap_or_else(|| "svg".into());
    plot.with_file_name(format!("{stem}-throughput.{ext}"))
}

/// Throughput over time: x = seconds since the run's start, y = msg/s
/// (both linear), one polyline per `(name, points)` series.
pub fn svg_timeline(series: &[(String, Vec<[f64; 2]>)], title: &str) -> String {
    let (w, h) = (1000.0, 640.0);
    let (left, right, top, bottom) = (90.0, 330.0, 40.0, 60.0);
    let pw = w - left - right;
    let ph = h - top - bottom;
    let xmax = series
        .iter()
        .flat_map(|(_, p)| p.iter().map(|q| q[0]))
        .fold(0.0f64, f64::max)
        .max(1.0);
    let ymax = series
        .iter()
        .flat_map(|(_, p)| p.iter().map(|q| q[1]))
        .fold(0.0f64, f64::max)
        .max(1.0)
        * 1.05;
    let px = |x: f64| left + x / xmax * pw;
    let py = |y: f64| top + ph - y / ymax * ph;
    let mut s = svg_header(w, h, left + pw / 2.0, title);
    for i in 0..=5 {
        let y = ymax * i as f64 / 5.0;
        let _ = writeln!(
            s,
            r##"<line x1="{left}" y1="{:.1}" x2="{:.1}" y2="{:.1}" stroke="#ddd"/><text x="{:.1}" y="{:.1}" text-anchor="end">{:.0} msg/s</text>"##,
            py(y),
            left + pw,
            py(y),
            left - 6.0,
            py(y) + 4.0,
            y
        );
        let x = xmax * i as f64 / 5.0;
        let _ = writeln!(
            s,
            r##"<text x="{:.1}" y="{:.1}" text-anchor="middle">{:.1} s</text>"##,
            px(x),
            top + ph + 18.0,
            x
        );
    }
    const COLOURS: [&str; 8] = [
        "#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf",
    ];
    for (i, (name, points)) in series.iter().enumerate() {
        let colour = COLOURS[i % COLOURS.len()];
        let path: Vec<String> = points
            .iter()
            .map(|p| format!("{:.1},{:.1}", px(p[0]), py(p[1])))
            .collect();
        let _ = writeln!(
            s,
            r#"<polyline fill="none" stroke="{colour}" stroke-width="1.5" points="{}"/>"#,
            path.join(" ")
        );
        let ly = top + 14.0 * i as f64;
        let _ = writeln!(
            s,
            r#"<line x1="{:.1}" y1="{ly:.1}" x2="{:.1}" y2="{ly:.1}" stroke="{colour}" stroke-width="2"/><text x="{:.1}" y="{:.1}">{}</text>"#,
            w - right + 10.0,
            w - right + 30.0,
            w - right + 34.0,
            ly + 4.0,
            esc(name)
        );
    }
    s.push_str("</svg>\n");
    s
}

/// The opening of a chart: the `<svg>` element, a white background and the
/// title centred at `title_x`.
fn svg_header(w: f64, h: f64, title_x: f64, title: &str) -> String {
    let mut s = String::new();
    let _ = write!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}" font-family="sans-serif" font-size="12">
<rect width="100%" height="100%" fill="white"/>
<text x="{title_x}" y="22" font-size="15" text-anchor="middle">{}</text>
"#,
        esc(title)
    );
    s
}
