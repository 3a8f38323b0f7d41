//! Aligned text tables and the target checks from the issue.

use serde::Serialize;

use crate::disk::DiskCeilings;
use crate::scenario::{on_off, RunResult};

/// A plain aligned table: first column left-aligned, the rest right-aligned.
pub struct Table {
    header: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(header: &[&str]) -> Self {
        Table {
            header: header.iter().map(|s| s.to_string()).collect(),
            rows: Vec::new(),
        }
    }
    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }
    pub fn render(&self) -> String {
        let n = self.header.len();
        let mut w = vec![0usize; n];
        for r in std::iter::once(&self.header).chain(&self.rows) {
            for (i, c) in r.iter().enumerate().take(n) {
                w[i] = w[i].max(c.chars().count());
            }
        }
        let mut out = String::new();
        let line = |out: &mut String, r: &[String]| {
            for (i, c) in r.iter().enumerate().take(n) {
                if i > 0 {
                    out.push_str("  ");
                }
                let pad = w[i] - c.chars().count();
                if i == 0 {
                    out.push_str(c);
                    out.push_str(&" ".repeat(pad));
                } else {
                    out.push_str(&" ".repeat(pad));
                    out.push_str(c);
                }
            }
            out.push('\n');
        };
        line(&mut out, &self.header);
        let total: usize = w.iter().sum::<usize>() + 2 * (n - 1);
        out.push_str(&"-".repeat(total));
        out.push('\n');
        for r in &self.rows {
            line(&mut out, r);
        }
        out
    }
}

/// `1234567.8` → `1,234,568`.
pub fn thousands(v: f64) -> String {
    let s = format!("{:.0}", v.max(0.0));
    let b = s.as_bytes();
    let mut out = String::new();
    for (i, c) in b.iter().enumerate() {
        if i > 0 && (b.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(*c as char);
    }
    out
}

/// Microseconds with sensible precision.
pub fn us(v: f64) -> String {
    if v >= 100.0 {
        format!("{:.0}", v)
    } else {
        format!("{:.1}", v)
    }
}

pub fn size_label(bytes: usize) -> String {
    if bytes >= 1024 && bytes.is_multiple_of(1024) {
        format!("{}KiB", bytes / 1024)
    } else {
        format!("{bytes}B")
    }
}

/// The per-row targets, computed against the measured disk ceilings.
#[derive(Debug, Clone, Serialize)]
pub struct TargetCheck {
    pub row: String,
    pub target: String,
    pub goal: f64,
    pub achieved: f64,
    /// achieved / goal for "at least" targets; goal / achieved for "at most".
    pub ratio: f64,
    pub met: bool,
}

pub const ASYNC_GOAL: f64 = 2_000_000.0;
pub const ROLL_GOAL_US: f64 = 1000.0;

/// SYNC_FLUSH throughput goal: 80% of W / p50(4 KiB append + fdatasync),
/// probe (a) pooled over the run ([`DiskCeilings::yardstick`]).
pub fn sync_goal(writers: usize, disk: &DiskCeilings) -> Option<f64> {
    let p50 = disk.yardstick().p50_us;
    (p50 > 0.0).then(|| writers as f64 / (p50 / 1e6))
}

/// SYNC_FLUSH latency limit: p99 of a put at most 3 × p99(4 KiB append +
/// fdatasync), probe (a) as in [`sync_goal`].
pub fn sync_p99_limit(disk: &DiskCeilings) -> f64 {
    3.0 * disk.yardstick().p99_us
}

pub fn row_name(r: &RunResult) -> String {
    format!(
        "{}/{} warm={} alloc={} {} W={}{}",
        r.mode,
        r.mechanism,
        on_off(r.warm),
        on_off(r.allocator),
        size_label(r.size),
        r.writers,
        if r.tasks { " tasks" } else { "" }
    )
}

pub fn checks(
    runs: &[RunResult],
    rolls: &[RunResult],
    disk: Option<&DiskCeilings>,
) -> Vec<TargetCheck> {
    let mut out = Vec::new();
    for r in runs {
        if r.messages == 0 {
            continue;
        }
        if r.mode == "ASYNC_FLUSH" && r.writers == 1 && r.size == 1024 {
            out.push(TargetCheck {
                row: row_name(r),
                target: "ASYNC_FLUSH 1 writer 1 KiB >= 2,000,000 appends/s".into(),
                goal: ASYNC_GOAL,
                achieved: r.msgs_per_sec,
                ratio: r.msgs_per_sec / ASYNC_GOAL,
                met: r.msgs_per_sec >= ASYNC_GOAL,
            });
        }
        if r.mode == "SYNC_FLUSH" {
            if let Some(d) = disk {
                if let Some(ideal) = sync_goal(r.writers, d) {
                    out.push(TargetCheck {
                        row: row_name(r),
                        target: "throughput >= 80% of W / p50(append+fdatasync)".into(),
                        goal: ideal,
                        achieved: r.msgs_per_sec,
                        ratio: r.msgs_per_sec / ideal,
                        met: r.msgs_per_sec >= 0.8 * ideal,
                    });
                }
                let limit = sync_p99_limit(d);
                if limit > 0.0 {
                    out.push(TargetCheck {
                        row: row_name(r),
                        target: "p99 <= 3 x p99(append+fdatasync)".into(),
                        goal: limit,
                        achieved: r.latency.p99_us,
                        ratio: limit / r.latency.p99_us.max(1e-9),
                        met: r.latency.p99_us <= limit,
                    });
                }
            }
        }
    }
    for r in rolls {
        if r.allocator && r.rolls > 0 {
            out.push(TargetCheck {
                row: format!("roll: {}", row_name(r)),
                target: "longest append at a file roll < 1 ms (allocator on)".into(),
                goal: ROLL_GOAL_US,
                achieved: r.roll_max_us,
                ratio: ROLL_GOAL_US / r.roll_max_us.max(1e-9),
                met: r.roll_max_us < ROLL_GOAL_US,
            });
        }
    }
    out
}

pub fn disk_table(d: &DiskCeilings) -> String {
    let mut t = Table::new(&[
        "disk ceiling",
        "n",
        "p50 µs",
        "p90 µs",
        "p99 µs",
        "p99.9 µs",
        "max µs",
        "ops/s @p50",
    ]);
    for (name, l) in [
        (
            "(a) 4KiB append+fdatasync, growing file",
            &d.append_fdatasync,
        ),
        (
            "(b) 4KiB overwrite+fdatasync, written blocks",
            &d.overwrite_fdatasync,
        ),
        (
            "(d) msync of page just written (fallocated map)",
            &d.msync_page,
        ),
    ] {
        t.row(vec![
            name.to_string(),
            l.count.to_string(),
            us(l.p50_us),
            us(l.p90_us),
            us(l.p99_us),
            us(l.p999_us),
            us(l.max_us),
            thousands(if l.p50_us > 0.0 { 1e6 / l.p50_us } else { 0.0 }),
        ]);
    }
    let mut out = format!(
        "{}(c) sequential buffered write + final fsync: {:.0} MB/s over {} MiB\n",
        t.render(),
        d.seq_write_mb_s,
        d.seq_write_bytes >> 20
    );
    if let Some(p) = &d.append_fdatasync_pooled {
        let bursts: Vec<String> = d
            .append_fdatasync_bursts_p50_us
            .iter()
            .map(|&u| us(u))
            .collect();
        out.push_str(&format!(
            "(a) again in a burst before each SYNC_FLUSH run and after the last, p50 µs: {}\n\
             (a) pooled, {} samples: p50 {} µs, p99 {} µs (the SYNC_FLUSH targets' yardstick)\n",
            bursts.join(" "),
            p.count,
            us(p.p50_us),
            us(p.p99_us)
        ));
    }
    out
}

pub fn runs_table(runs: &[RunResult], disk: Option<&DiskCeilings>) -> String {
    let mut t = Table::new(&[
        "mode/mechanism",
        "warm",
        "alloc",
        "size",
        "W",
        "msgs",
        "msg/s",
        "MB/s",
        "p50 µs",
        "p90 µs",
        "p99 µs",
        "p99.9 µs",
        "max µs",
        "flushes",
        "msgs/flush",
        "flush µs",
        "cpu/put µs",
        "rolls",
        "roll max µs",
        "target msg/s",
        "ratio",
        "p99/(3×fsync p99)",
    ]);
    for r in runs {
        let (goal, ratio, p99r) = match (r.mode.as_str(), disk) {
            ("SYNC_FLUSH", Some(d)) => {
                let g = sync_goal(r.writers, d).unwrap_or(0.0);
                let lim = sync_p99_limit(d);
                (
                    thousands(g),
                    if g > 0.0 {
                        format!("{:.2}", r.msgs_per_sec / g)
                    } else {
                        "-".into()
                    },
                    if lim > 0.0 {
                        format!("{:.2}", r.latency.p99_us / lim)
                    } else {
                        "-".into()
                    },
                )
            }
            ("ASYNC_FLUSH", _) if r.writers == 1 && r.size == 1024 => (
                thousands(ASYNC_GOAL),
                format!("{:.2}", r.msgs_per_sec / ASYNC_GOAL),
                "-".into(),
            ),
            _ => ("-".into(), "-".into(), "-".into()),
        };
        let mut mode = format!("{}/{}", r.mode, r.mechanism);
        if r.stopped_early {
            mode.push_str(" (stopped)");
        }
        if r.errors > 0 || r.not_ok > 0 {
            mode.push_str(&format!(" [{} err, {} not-ok]", r.errors, r.not_ok));
        }
        t.row(vec![
            mode,
            on_off(r.warm).into(),
            on_off(r.allocator).into(),
            size_label(r.size),
            if r.tasks && !r.park_spin {
                format!("{}t(park)", r.writers)
            } else if r.tasks {
                format!("{}t", r.writers)
            } else {
                r.writers.to_string()
            },
            r.messages.to_string(),
            thousands(r.msgs_per_sec),
            format!("{:.1}", r.mb_per_sec),
            us(r.latency.p50_us),
            us(r.latency.p90_us),
            us(r.latency.p99_us),
            us(r.latency.p999_us),
            us(r.latency.max_us),
            r.flushes.to_string(),
            format!("{:.1}", r.msgs_per_flush),
            us(r.flush_mean_us),
            r.writer_cpu_us_per_put
                .map_or_else(|| "-".into(), |c| format!("{c:.2}")),
            r.rolls.to_string(),
            if r.rolls > 0 {
                us(r.roll_max_us)
            } else {
                "-".into()
            },
            goal,
            ratio,
            p99r,
        ]);
    }
    t.render()
}

pub fn checks_table(checks: &[TargetCheck]) -> String {
    let mut t = Table::new(&["row", "target", "goal", "achieved", "met"]);
    for c in checks {
        t.row(vec![
            c.row.clone(),
            c.target.clone(),
            thousands(c.goal),
            thousands(c.achieved),
            if c.met { "yes".into() } else { "NO".into() },
        ]);
    }
    t.render()
}
