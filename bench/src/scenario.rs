//! One flush-strategy run: a fresh store in a temp directory, W writer
//! threads blocking in `MessageStore::put_message`, each timing every call
//! into its own HdrHistogram.
//!
//! Writers are OS threads by default: under SYNC_FLUSH a writer blocks in
//! `put_message` until the group commit covering its record completes, which
//! is exactly one producer waiting for its ack. With `tasks`, writers are
//! tokio tasks awaiting `put_message_async` on one runtime thread, which is
//! how the broker's connection tasks use the store: waking 64 waiters is
//! then one thread wake-up, not 64 (MACHINE.md: a wake-up costs tens of µs).

use std::io::Write;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Barrier;
use std::time::{Duration, Instant};

use engine::{FlushDiskType, FlushMechanism, MessageStore, MessageToStore, PutStatus, StoreConfig};
use serde::Serialize;

use crate::stats::{self, Latency};

/// What one run measures.
#[derive(Debug, Clone)]
pub struct RunSpec {
    pub mode: FlushDiskType,
    pub mechanism: FlushMechanism,
    pub warm: bool,
    pub allocator: bool,
    pub size: usize,
    pub writers: usize,
    /// Writers are tokio tasks awaiting `put_message_async` on one runtime
    /// thread (as the broker's connection tasks are) instead of OS threads
    /// blocking in `put_message`.
    pub tasks: bool,
    /// With `tasks`: the runtime thread spins through group commits
    /// instead of sleeping ([`engine::MessageStore::park_hook`]). The
    /// broker's runtime does not: its producers share the CPUs.
    pub park_spin: bool,
    pub file_size: u64,
}

impl RunSpec {
    pub fn label(&self) -> String {
        format!(
            "{}/{} warm={} alloc={} {}B W={}{}",
            self.mode,
            self.mechanism,
            on_off(self.warm),
            on_off(self.allocator),
            self.size,
            self.writers,
            match (self.tasks, self.park_spin) {
                (true, true) => " tasks",
                (true, false) => " tasks (parking)",
                (false, _) => "",
            }
        )
    }
}

pub fn on_off(b: bool) -> &'static str {
    if b {
        "on"
    } else {
        "off"
    }
}

/// When a run ends: whichever comes first.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub seconds: Option<f64>,
    /// Total messages over all writers.
    pub messages: Option<u64>,
    /// Pause after opening the store (and the first, unmeasured put) before
    /// the clock starts, so the background allocator can prepare the next file.
    pub settle: Duration,
    /// Paces each thread writer to this many body bytes per second (the
    /// time spent paused is not part of any put's latency).
    pub pace_bytes_per_sec: Option<f64>,
}

/// The measured outcome of one run.
#[derive(Debug, Clone, Serialize)]
pub struct RunResult {
    pub mode: String,
    pub mechanism: String,
    pub warm: bool,
    pub allocator: bool,
    pub size: usize,
    pub writers: usize,
    /// Writers were tokio tasks (see [`RunSpec::tasks`]).
    pub tasks: bool,
    /// See [`RunSpec::park_spin`].
    pub park_spin: bool,
    pub file_size: u64,
    /// Encoded commit log record length of one message.
    pub record_bytes: usize,
    pub messages: u64,
    pub elapsed_s: f64,
    pub msgs_per_sec: f64,
    /// Commit log record bytes per second (10^6).
    pub mb_per_sec: f64,
    pub latency: Latency,
    /// File rolls observed (appends whose record landed in a later file than
    /// that writer's previous record).
    pub rolls: u64,
    /// Longest append that crossed a file boundary, µs.
    pub roll_max_us: f64,
    /// Every append that crossed a file boundary, µs (the stall distribution).
    pub roll_latencies_us: Vec<f64>,
    /// PutStatus other than PUT_OK (FLUSH_DISK_TIMEOUT etc.).
    pub not_ok: u64,
    pub errors: u64,
    pub first_error: Option<String>,
    pub stopped_early: bool,
    /// Percentile curve `[percentile, µs]` for plotting.
    pub curve: Vec<[f64; 2]>,
    /// Throughput over time: `[seconds since start, msg/s over the last
    /// sampling interval]`, one point every ~250 ms.
    pub timeline: Vec<[f64; 2]>,
    /// Commit log flushes that made new bytes durable during the run.
    pub flushes: u64,
    /// Messages acknowledged per such flush (the group-commit group size).
    pub msgs_per_flush: f64,
    /// Mean duration of one flush, µs.
    pub flush_mean_us: f64,
    /// CPU time of the writers' runtime thread per put, µs (`tasks` only):
    /// steadier than throughput on a noisy machine, so A/B comparisons of
    /// the writer path read it first.
    pub writer_cpu_us_per_put: Option<f64>,
}

#[repr(align(128))]
#[derive(Default)]
struct Slot(AtomicU64);

struct WriterOut {
    hist: hdrhistogram::Histogram<u64>,
    /// Latencies not yet in `hist`. A histogram is hundreds of KiB and 64
    /// writers' do not fit in cache: recording each put into it straight
    /// away cost a cache miss per put on the writers' own thread.
    pending: Vec<u64>,
    count: u64,
    rolls: u64,
    roll_max_ns: u64,
    roll_ns: Vec<u64>,
    not_ok: u64,
    errors: u64,
    first_error: Option<String>,
}

impl WriterOut {
    fn new() -> Self {
        WriterOut {
            hist: stats::new_hist(),
            pending: Vec::with_capacity(Self::PENDING),
            count: 0,
            rolls: 0,
            roll_max_ns: 0,
            roll_ns: Vec::new(),
            not_ok: 0,
            errors: 0,
            first_error: None,
        }
    }

    const PENDING: usize = 4096;

    /// Moves the pending latencies into the histogram.
    fn fold(&mut self) {
        for ns in self.pending.drain(..) {
            stats::record(&mut self.hist, ns);
        }
    }

    /// Accounts one put begun at `t0` that answered `r` and publishes the
    /// writer's count in `counter`; false once the writer must stop (the put
    /// failed, or it ended at or after `deadline`).
    fn put_done(
        &mut self,
        r: engine::Result<engine::PutResult>,
        t0: Instant,
        file_size: u64,
        last_file: &mut u64,
        counter: &AtomicU64,
        deadline: Instant,
    ) -> Option<Instant> {
        let t1 = Instant::now();
        let ns = (t1 - t0).as_nanos() as u64;
        if !self.record(r, ns, file_size, last_file) {
            return None;
        }
        counter.store(self.count, Ordering::Relaxed);
        (t1 < deadline).then_some(t1)
    }

    /// Accounts one put that took `ns`; false once the writer must stop.
    fn record(
        &mut self,
        r: engine::Result<engine::PutResult>,
        ns: u64,
        file_size: u64,
        last_file: &mut u64,
    ) -> bool {
        match r {
            Ok(res) => {
                self.pending.push(ns);
                if self.pending.len() == Self::PENDING {
                    self.fold();
                }
                self.count += 1;
                if res.status != PutStatus::PutOk {
                    self.not_ok += 1;
                }
                let file = res.messages[0].physical_offset / file_size;
                if file > *last_file {
                    self.rolls += file - *last_file;
                    self.roll_max_ns = self.roll_max_ns.max(ns);
                    self.roll_ns.push(ns);
                    *last_file = file;
                }
                true
            }
            Err(e) => {
                self.errors += 1;
                self.first_error.get_or_insert_with(|| e.to_string());
                false
            }
        }
    }
}

pub fn store_config(spec: &RunSpec, root: &Path) -> StoreConfig {
    let mut c = StoreConfig {
        store_path_root_dir: root.to_path_buf(),
        flush_disk_type: spec.mode,
        flush_mechanism: spec.mechanism,
        warm_maped_file_enable: spec.warm,
        allocate_next_file: spec.allocator,
        mapped_file_size_commit_log: spec.file_size,
        ..StoreConfig::default()
    };
    c.max_message_size = c.max_message_size.max(spec.size as u64);
    c
}

/// Runs one scenario. `progress` prints a status line on stderr.
pub fn run(
    spec: &RunSpec,
    base: &Path,
    limits: Limits,
    stop: &AtomicBool,
    progress: Option<&str>,
) -> Result<RunResult, String> {
    let tmp = tempfile::Builder::new()
        .prefix("rmq-bench-store-")
        .tempdir_in(base)
        .map_err(|e| format!("temp dir in {}: {e}", base.display()))?;
    let owned = MessageStore::open(store_config(spec, tmp.path())).map_err(|e| e.to_string())?;
    let store = &owned;
    let body: Vec<u8> = (0..spec.size).map(|i| (i % 251) as u8).collect();
    let topic = "BenchTopic";
    // The store asks its allocator for file 0 when it opens: settling first
    // lets that file be prepared (and, if enabled, warmed) before any write.
    if !limits.settle.is_zero() {
        std::thread::sleep(limits.settle);
    }
    // Unmeasured first put: takes file 0.
    let prime = store
        .put_message(&MessageToStore::new(topic, 0, &body, ""))
        .map_err(|e| format!("first put: {e}"))?;
    let record_bytes = prime.messages[0].size as usize;
    let prime_file = prime.messages[0].physical_offset / spec.file_size;

    let writers = spec.writers.max(1);
    let quota = limits
        .messages
        .map(|m| m.div_ceil(writers as u64))
        .unwrap_or(u64::MAX);
    let seconds = limits.seconds.unwrap_or(if limits.messages.is_some() {
        3600.0
    } else {
        5.0
    });
    let counters: Vec<Slot> = (0..writers).map(|_| Slot::default()).collect();
    let done = AtomicUsize::new(0);
    let writer_cpu_ns = AtomicU64::new(0);
    // Every writer thread and the timing thread meet here (tasks: one runtime thread).
    let barrier = Barrier::new(if spec.tasks { 2 } else { writers + 1 });
    let (mut outs, elapsed, timeline, flush_before) = std::thread::scope(|s| {
        let handles: Vec<_> = if spec.tasks {
            // One runtime thread drives every writer task: the shape of the
            // broker, where connection tasks await the group commit.
            let (body, counters, barrier, done) = (&body, &counters, &barrier, &done);
            let writer_cpu_ns = &writer_cpu_ns;
            // Under SYNC_FLUSH every put awaits its flush, which lets the
            // other writers run; a yield on top would only add a round
            // through the runtime's driver before each writer's next put.
            let yield_each = spec.mode == FlushDiskType::AsyncFlush;
            vec![s.spawn(move || {
                let mut builder = tokio::runtime::Builder::new_current_thread();
                builder.enable_all();
                if spec.park_spin {
                    builder.on_thread_park(store.park_hook());
                }
                let rt = match builder.build() {
                    Ok(rt) => rt,
                    Err(e) => {
                        barrier.wait();
                        done.fetch_add(writers, Ordering::Release);
                        let mut out = WriterOut::new();
                        out.errors = 1;
                        out.first_error = Some(format!("tokio runtime: {e}"));
                        return vec![(out, Duration::ZERO)];
                    }
                };
                barrier.wait();
                let cpu_before = thread_cpu_ns();
                let outs = rt.block_on(futures_util::future::join_all((0..writers).map(
                    |w| async move {
                        let msg = MessageToStore::new(topic, (w % 8) as i32, body, "");
                        let mut out = WriterOut::new();
                        let mut last_file = prime_file;
                        let start = Instant::now();
                        let deadline = start + Duration::from_secs_f64(seconds);
                        let mut t0 = start;
                        while out.count < quota && !stop.load(Ordering::Relaxed) {
                            let r = store.put_message_async(&msg).await;
                            let c = &counters[w].0;
                            let Some(t1) =
                                out.put_done(r, t0, spec.file_size, &mut last_file, c, deadline)
                            else {
                                break;
                            };
                            // Under ASYNC_FLUSH nothing awaits: let the other
                            // writers run, as a real producer's send would.
                            // Otherwise the next put starts right away: the
                            // end of this one is its start (one clock read
                            // per put, not two).
                            t0 = if yield_each {
                                tokio::task::yield_now().await;
                                Instant::now()
                            } else {
                                t1
                            };
                        }
                        done.fetch_add(1, Ordering::Release);
                        (out, start.elapsed())
                    },
                )));
                writer_cpu_ns.store(thread_cpu_ns() - cpu_before, Ordering::Relaxed);
                outs
            })]
        } else {
            (0..writers)
                .map(|w| {
                    let (body, counters, barrier, done) = (&body, &counters, &barrier, &done);
                    s.spawn(move || {
                        let msg = MessageToStore::new(topic, (w % 8) as i32, body, "");
                        let mut out = WriterOut::new();
                        let mut last_file = prime_file;
                        barrier.wait();
                        let start = Instant::now();
                        let deadline = start + Duration::from_secs_f64(seconds);
                        while out.count < quota && !stop.load(Ordering::Relaxed) {
                            if let Some(rate) = limits.pace_bytes_per_sec {
                                let due = start
                                    + Duration::from_secs_f64(
                                        out.count as f64 * spec.size as f64 / rate,
                                    );
                                let now = Instant::now();
                                if due > now + Duration::from_millis(1) {
                                    std::thread::sleep(due - now);
                                }
                            }
                            let t0 = Instant::now();
                            let r = store.put_message(&msg);
                            let c = &counters[w].0;
                            if out
                                .put_done(r, t0, spec.file_size, &mut last_file, c, deadline)
                                .is_none()
                            {
                                break;
                            }
                        }
                        done.fetch_add(1, Ordering::Release);
                        vec![(out, start.elapsed())]
                    })
                })
                .collect()
        };
        barrier.wait();
        let start = Instant::now();
        let flush_before = store.flush_stats();
        let mut last_print = Instant::now();
        let mut last_sample = (0.0f64, 0u64);
        let mut timeline = Vec::new();
        while done.load(Ordering::Acquire) < writers {
            std::thread::sleep(Duration::from_millis(20));
            if last_print.elapsed() >= Duration::from_millis(250) {
                last_print = Instant::now();
                let n: u64 = counters.iter().map(|c| c.0.load(Ordering::Relaxed)).sum();
                let t = start.elapsed().as_secs_f64();
                let dt = t - last_sample.0;
                if dt > 0.0 {
                    timeline.push([t, (n - last_sample.1.min(n)) as f64 / dt]);
                }
                last_sample = (t, n);
                if let Some(label) = progress {
                    let mut e = std::io::stderr().lock();
                    let _ = write!(
                        e,
                        "\r\x1b[K{label}: {t:5.1}s {n:>11} msgs {:>12.0} msg/s",
                        n as f64 / t.max(1e-9)
                    );
                    let _ = e.flush();
                }
            }
        }
        let outs: Vec<(WriterOut, Duration)> = handles
            .into_iter()
            .flat_map(|h| h.join().expect("writer panicked"))
            .collect();
        (outs, start.elapsed(), timeline, flush_before)
    });
    let flush_after = store.flush_stats();
    let flushes = flush_after.flushes - flush_before.flushes;
    let flush_nanos = flush_after.flush_nanos - flush_before.flush_nanos;
    if progress.is_some() {
        eprint!("\r\x1b[K");
    }
    let shutdown = store.shutdown();

    let mut hist = stats::new_hist();
    let mut r = RunResult {
        mode: spec.mode.to_string(),
        mechanism: spec.mechanism.to_string(),
        warm: spec.warm,
        allocator: spec.allocator,
        size: spec.size,
        writers,
        tasks: spec.tasks,
        park_spin: spec.tasks && spec.park_spin,
        file_size: spec.file_size,
        record_bytes,
        messages: 0,
        elapsed_s: 0.0,
        msgs_per_sec: 0.0,
        mb_per_sec: 0.0,
        latency: Latency::default(),
        rolls: 0,
        roll_max_us: 0.0,
        roll_latencies_us: Vec::new(),
        not_ok: 0,
        errors: 0,
        first_error: None,
        stopped_early: stop.load(Ordering::Relaxed),
        curve: Vec::new(),
        timeline,
        flushes,
        msgs_per_flush: 0.0,
        flush_mean_us: flush_nanos as f64 / 1000.0 / flushes.max(1) as f64,
        writer_cpu_us_per_put: None,
    };
    // Throughput over the longest writer's own measured span.
    let span = outs.iter().map(|(_, d)| *d).max().unwrap_or(elapsed);
    for (o, _) in &mut outs {
        o.fold();
        hist.add(&o.hist).expect("same histogram bounds");
        r.messages += o.count;
        r.rolls += o.rolls;
        r.roll_max_us = r.roll_max_us.max(o.roll_max_ns as f64 / 1000.0);
        r.roll_latencies_us
            .extend(o.roll_ns.iter().map(|&n| n as f64 / 1000.0));
        r.not_ok += o.not_ok;
        r.errors += o.errors;
        if r.first_error.is_none() {
            r.first_error = o.first_error.clone();
        }
    }
    if let Err(e) = shutdown {
        r.first_error
            .get_or_insert_with(|| format!("shutdown: {e}"));
    }
    r.elapsed_s = span.as_secs_f64();
    r.msgs_per_sec = r.messages as f64 / r.elapsed_s.max(1e-9);
    r.msgs_per_flush = r.messages as f64 / r.flushes.max(1) as f64;
    r.mb_per_sec = r.msgs_per_sec * record_bytes as f64 / 1e6;
    if spec.tasks && r.messages > 0 {
        r.writer_cpu_us_per_put =
            Some(writer_cpu_ns.load(Ordering::Relaxed) as f64 / 1000.0 / r.messages as f64);
    }
    r.latency = Latency::from_hist(&hist);
    r.curve = stats::curve(&hist);
    drop(owned);
    drop(tmp);
    // Leave no dirty pages behind to disturb the next run.
    // SAFETY: sync(2) has no preconditions.
    unsafe { libc::sync() };
    Ok(r)
}

/// CPU time consumed by the calling thread so far, ns.
fn thread_cpu_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid timespec for the call to fill.
    if unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) } != 0 {
        return 0;
    }
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}
