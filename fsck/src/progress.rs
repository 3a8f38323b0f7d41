//! Progress for large stores: an indicatif bar (rate, ETA) on a terminal,
//! plain lines every few seconds otherwise, nothing for small stores.

use std::io::IsTerminal;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};

/// Stores smaller than this show no progress.
const SHOW_ABOVE: u64 = 256 << 20;

pub struct Progress {
    bar: Option<ProgressBar>,
    done: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    printer: Option<std::thread::JoinHandle<()>>,
}

impl Progress {
    pub fn new(label: &str, total: u64, enabled: bool) -> Self {
        let done = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let mut p = Progress {
            bar: None,
            done: done.clone(),
            stop: stop.clone(),
            printer: None,
        };
        if !enabled || total < SHOW_ABOVE {
            return p;
        }
        if std::io::stderr().is_terminal() {
            let bar = ProgressBar::new(total);
            bar.set_style(
                ProgressStyle::with_template(
                    "{msg} [{bar:40}] {bytes}/{total_bytes} {binary_bytes_per_sec} ETA {eta}",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
            );
            bar.set_message(label.to_string());
            p.bar = Some(bar);
        } else {
            let label = label.to_string();
            p.printer = std::thread::Builder::new()
                .name("fsck-progress".into())
                .spawn(move || {
                    let t0 = Instant::now();
                    while !stop.load(Ordering::Acquire) {
                        std::thread::park_timeout(Duration::from_secs(5));
                        if stop.load(Ordering::Acquire) {
                            break;
                        }
                        let d = done.load(Ordering::Relaxed);
                        let secs = t0.elapsed().as_secs_f64();
                        let rate = d as f64 / secs.max(1e-9);
                        let eta = total.saturating_sub(d) as f64 / rate.max(1.0);
                        eprintln!(
                            "{label}: {:.0}/{:.0} MB ({:.0}%), {:.0} MB/s, ETA {:.0} s",
                            d as f64 / 1e6,
                            total as f64 / 1e6,
                            d as f64 * 100.0 / total as f64,
                            rate / 1e6,
                            eta
                        );
                    }
                })
                .ok();
        }
        p
    }

    pub fn add(&self, bytes: u64) {
        self.done.fetch_add(bytes, Ordering::Relaxed);
        if let Some(b) = &self.bar {
            b.inc(bytes);
        }
    }

    pub fn finish(mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(h) = self.printer.take() {
            h.thread().unpark();
            let _ = h.join();
        }
        if let Some(b) = self.bar.take() {
            b.finish_and_clear();
        }
    }
}
