//! `rmq-bench read`: the engine's read path, through its public API.
//!
//! One fresh store (ASYNC_FLUSH, MSYNC, background allocator) is filled with
//! `--messages` records of `--size` bytes spread round-robin over `--queues`
//! queues of one topic by `--writers` threads, then:
//!
//! 1. **sequential**: every queue is read front to back with
//!    `get_messages(.., 32)` batches (a PULL's store call); each returned
//!    record is copied into a reused buffer, as sending it would. msg/s,
//!    MB/s of record bytes, and the latency of one `get_messages` call;
//! 2. **random**: `read_record` at uniformly random physical offsets of
//!    stored messages (a by-offset VIEW/QUERY), record copied; ops/s, p50/p99;
//! 3. **dispatch lag**: `--writers` threads append as fast as they can for
//!    `--lag-seconds` while a sampler reads `max_offset() − dispatched_offset()`
//!    every 100 µs (bytes the dispatcher is behind); then the time until
//!    dispatch has caught up after the last append.
//!
//! Everything just written is in the page cache: these are in-memory reads.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use clap::Args;
use engine::{
    AcceptAll, FlushDiskType, GetMessageStatus, MessageStore, MessageToStore, StoreConfig,
};
use hdrhistogram::Histogram;
use serde::Serialize;

use crate::report::{self, Table};
use crate::stats::{self, Latency};

const TOPIC: &str = "BenchReadTopic";

#[derive(Args, Clone)]
pub struct ReadArgs {
    /// Directory for the store (default: a temp dir on the same disk as
    /// /work, never tmpfs).
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Messages stored before reading.
    #[arg(long, default_value_t = 400_000)]
    messages: u64,
    /// Message body size (128, 1KiB, 4K ...).
    #[arg(long, value_parser = crate::parse_bytes, default_value = "1KiB")]
    size: u64,
    /// Queues the messages are spread over.
    #[arg(long, default_value_t = 8)]
    queues: usize,
    /// Messages per get_messages call (a pull's maxMsgNums).
    #[arg(long, default_value_t = 32)]
    batch: usize,
    /// Random read_record calls.
    #[arg(long, default_value_t = 400_000)]
    random_reads: u64,
    /// Writer threads for the fill and the dispatch-lag run.
    #[arg(long, default_value_t = 4)]
    writers: usize,
    /// Seconds of maximum-rate appends while dispatch lag is sampled.
    #[arg(long, default_value_t = 5.0)]
    lag_seconds: f64,
    /// Commit log file size (mappedFileSizeCommitLog).
    #[arg(long, value_parser = crate::parse_bytes, default_value = "1GiB")]
    file_size: u64,
    /// Write results as JSON.
    #[arg(long)]
    json: Option<PathBuf>,
    /// No progress lines on stderr.
    #[arg(long)]
    quiet: bool,
}

/// All measurements of one `read` run.
#[derive(Debug, Clone, Serialize)]
pub struct ReadReport {
    pub tool: &'static str,
    pub command: Vec<String>,
    pub dir: String,
    pub filesystem: String,
    pub messages: u64,
    pub queues: usize,
    pub writers: usize,
    pub body_bytes: u64,
    pub record_bytes: u64,
    pub fill: Throughput,
    pub sequential: Sequential,
    pub random: Random,
    pub dispatch_lag: DispatchLag,
}

#[derive(Debug, Clone, Serialize)]
pub struct Throughput {
    pub messages: u64,
    pub elapsed_s: f64,
    pub msgs_per_sec: f64,
    pub mb_per_sec: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Sequential {
    pub batch: usize,
    pub calls: u64,
    pub throughput: Throughput,
    /// One get_messages call.
    pub call_latency: Latency,
}

#[derive(Debug, Clone, Serialize)]
pub struct Random {
    pub reads: u64,
    pub misses: u64,
    pub ops_per_sec: f64,
    pub latency: Latency,
}

#[derive(Debug, Clone, Serialize)]
pub struct DispatchLag {
    /// The append run the lag was measured under.
    pub appends: Throughput,
    pub samples: u64,
    pub p50_bytes: u64,
    pub p99_bytes: u64,
    pub max_bytes: u64,
    /// From the last append returning to dispatch reaching the commit log end.
    pub catch_up_us: f64,
}

fn throughput(messages: u64, bytes: u64, elapsed: Duration) -> Throughput {
    let s = elapsed.as_secs_f64().max(1e-9);
    Throughput {
        messages,
        elapsed_s: s,
        msgs_per_sec: messages as f64 / s,
        mb_per_sec: bytes as f64 / s / 1e6,
    }
}

fn store_config(root: &Path, file_size: u64, body: u64) -> StoreConfig {
    let mut c = StoreConfig {
        store_path_root_dir: root.to_path_buf(),
        flush_disk_type: FlushDiskType::AsyncFlush,
        mapped_file_size_commit_log: file_size,
        allocate_next_file: true,
        ..StoreConfig::default()
    };
    c.max_message_size = c.max_message_size.max(body);
    c
}

/// Appends with `writers` threads until `quota` messages or `until`; returns
/// (messages, elapsed, physical offsets if `keep_offsets`).
fn append_run(
    store: &MessageStore,
    body: &[u8],
    queues: usize,
    writers: usize,
    quota: u64,
    until: Option<Instant>,
    keep_offsets: bool,
) -> Result<(u64, Duration, Vec<u64>), String> {
    let next = AtomicU64::new(0);
    let start = Instant::now();
    let results: Vec<Result<Vec<u64>, String>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..writers.max(1))
            .map(|_| {
                let next = &next;
                s.spawn(move || {
                    let mut offsets = Vec::new();
                    loop {
                        if until.is_some_and(|u| Instant::now() >= u)
                            || crate::STOP.load(Ordering::Relaxed)
                        {
                            break;
                        }
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        if i >= quota {
                            break;
                        }
                        let msg = MessageToStore::new(TOPIC, (i % queues as u64) as i32, body, "");
                        let r = store.put_message(&msg).map_err(|e| format!("put: {e}"))?;
                        if keep_offsets {
                            offsets.push(r.messages[0].physical_offset);
                        }
                    }
                    Ok(offsets)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("writer thread"))
            .collect()
    });
    let elapsed = start.elapsed();
    let mut offsets = Vec::new();
    for r in results {
        offsets.extend(r?);
    }
    Ok((next.load(Ordering::Relaxed).min(quota), elapsed, offsets))
}

fn wait_dispatched(store: &MessageStore, limit: Duration) -> Result<Duration, String> {
    let start = Instant::now();
    let target = store.max_offset();
    while store.dispatched_offset() < target {
        if start.elapsed() > limit {
            return Err(format!("dispatch did not catch up within {limit:?}"));
        }
        std::hint::spin_loop();
    }
    Ok(start.elapsed())
}

fn sequential(
    store: &MessageStore,
    queues: usize,
    batch: usize,
    record: u64,
) -> Result<Sequential, String> {
    let mut hist = stats::new_hist();
    let mut buf: Vec<u8> = Vec::with_capacity(batch * record as usize);
    let (mut msgs, mut bytes, mut calls) = (0u64, 0u64, 0u64);
    let start = Instant::now();
    for q in 0..queues as i32 {
        let max = store.max_queue_offset(TOPIC, q);
        let mut off = store.min_queue_offset(TOPIC, q);
        while off < max {
            let t0 = Instant::now();
            let r = store.get_messages(TOPIC, q, off, batch, &AcceptAll);
            buf.clear();
            for m in &r.messages {
                buf.extend_from_slice(m.as_bytes());
            }
            stats::record(&mut hist, t0.elapsed().as_nanos() as u64);
            if r.status != GetMessageStatus::Found {
                return Err(format!("queue {q} offset {off}: {:?}", r.status));
            }
            std::hint::black_box(&buf);
            calls += 1;
            msgs += r.messages.len() as u64;
            bytes += r.total_bytes as u64;
            off = r.next_begin_offset;
        }
    }
    let elapsed = start.elapsed();
    Ok(Sequential {
        batch,
        calls,
        throughput: throughput(msgs, bytes, elapsed),
        call_latency: Latency::from_hist(&hist),
    })
}

fn random(store: &MessageStore, offsets: &[u64], reads: u64) -> Random {
    let mut hist = stats::new_hist();
    let mut buf: Vec<u8> = Vec::with_capacity(64 * 1024);
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut misses = 0;
    let start = Instant::now();
    for _ in 0..reads {
        // xorshift64*
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        let i = (x.wrapping_mul(0x2545_F491_4F6C_DD1D) % offsets.len() as u64) as usize;
        let t0 = Instant::now();
        match store.read_record(offsets[i]) {
            Some(s) => {
                buf.clear();
                buf.extend_from_slice(s.as_bytes());
            }
            None => misses += 1,
        }
        stats::record(&mut hist, t0.elapsed().as_nanos() as u64);
        std::hint::black_box(&buf);
    }
    let elapsed = start.elapsed().as_secs_f64().max(1e-9);
    Random {
        reads,
        misses,
        ops_per_sec: reads as f64 / elapsed,
        latency: Latency::from_hist(&hist),
    }
}

fn dispatch_lag(
    store: &MessageStore,
    a: &ReadArgs,
    body: &[u8],
    record: u64,
) -> Result<DispatchLag, String> {
    let stop = AtomicBool::new(false);
    let until = Instant::now() + Duration::from_secs_f64(a.lag_seconds.max(0.01));
    let (lag, appended, catch_up) = std::thread::scope(|s| {
        let sampler = s.spawn(|| {
            let mut h = Histogram::<u64>::new_with_bounds(1, 1 << 40, 3).expect("histogram bounds");
            while !stop.load(Ordering::Acquire) {
                // Read dispatched first: the difference is never negative.
                let d = store.dispatched_offset();
                let m = store.max_offset();
                h.saturating_record(m.saturating_sub(d));
                std::thread::sleep(Duration::from_micros(100));
            }
            h
        });
        let r = append_run(
            store,
            body,
            a.queues,
            a.writers,
            u64::MAX,
            Some(until),
            false,
        );
        let catch_up = wait_dispatched(store, Duration::from_secs(60));
        stop.store(true, Ordering::Release);
        (sampler.join().expect("sampler thread"), r, catch_up)
    });
    let (n, elapsed, _) = appended?;
    let catch_up = catch_up?;
    Ok(DispatchLag {
        appends: throughput(n, n * record, elapsed),
        samples: lag.len(),
        p50_bytes: lag.value_at_quantile(0.50),
        p99_bytes: lag.value_at_quantile(0.99),
        max_bytes: lag.max(),
        catch_up_us: catch_up.as_secs_f64() * 1e6,
    })
}

fn run(a: &ReadArgs, base: &Path) -> Result<ReadReport, String> {
    let progress = |s: &str| {
        if !a.quiet {
            eprintln!("{s}");
        }
    };
    let tmp = tempfile::Builder::new()
        .prefix("rmq-bench-read-")
        .tempdir_in(base)
        .map_err(|e| format!("temp dir in {}: {e}", base.display()))?;
    let store = MessageStore::open(store_config(tmp.path(), a.file_size, a.size))
        .map_err(|e| e.to_string())?;
    let body: Vec<u8> = (0..a.size).map(|i| (i % 251) as u8).collect();
    let queues = a.queues.max(1);
    let record = MessageToStore::new(TOPIC, 0, &body, "").encoded_len() as u64;

    progress(&format!(
        "# filling: {} messages of {} over {queues} queues, {} writers",
        a.messages,
        report::size_label(a.size as usize),
        a.writers
    ));
    let (n, elapsed, offsets) =
        append_run(&store, &body, queues, a.writers, a.messages, None, true)?;
    wait_dispatched(&store, Duration::from_secs(120))?;
    let fill = throughput(n, n * record, elapsed);
    if offsets.is_empty() {
        return Err("nothing was stored".into());
    }

    progress("# sequential get_messages...");
    let seq = sequential(&store, queues, a.batch.max(1), record)?;
    progress("# random read_record...");
    let rnd = random(&store, &offsets, a.random_reads);
    progress("# dispatch lag under maximum-rate appends...");
    let lag = dispatch_lag(&store, a, &body, record)?;
    store.shutdown().map_err(|e| e.to_string())?;
    Ok(ReadReport {
        tool: "rmq-bench read",
        command: std::env::args().collect(),
        dir: base.display().to_string(),
        filesystem: crate::fs_type(base).1,
        messages: n,
        queues,
        writers: a.writers.max(1),
        body_bytes: a.size,
        record_bytes: record,
        fill,
        sequential: seq,
        random: rnd,
        dispatch_lag: lag,
    })
}

fn print(r: &ReadReport) {
    println!(
        "read path: {} messages of {} ({} B records) in {} queues; fill {} msg/s",
        report::thousands(r.messages as f64),
        report::size_label(r.body_bytes as usize),
        r.record_bytes,
        r.queues,
        report::thousands(r.fill.msgs_per_sec)
    );
    let mut t = Table::new(&[
        "measurement",
        "ops",
        "msg/s",
        "MB/s",
        "p50 µs",
        "p99 µs",
        "max µs",
    ]);
    let s = &r.sequential;
    t.row(vec![
        format!("sequential get_messages({})", s.batch),
        report::thousands(s.calls as f64),
        report::thousands(s.throughput.msgs_per_sec),
        format!("{:.1}", s.throughput.mb_per_sec),
        report::us(s.call_latency.p50_us),
        report::us(s.call_latency.p99_us),
        report::us(s.call_latency.max_us),
    ]);
    let rn = &r.random;
    t.row(vec![
        "random read_record".into(),
        report::thousands(rn.reads as f64),
        report::thousands(rn.ops_per_sec),
        format!("{:.1}", rn.ops_per_sec * r.record_bytes as f64 / 1e6),
        report::us(rn.latency.p50_us),
        report::us(rn.latency.p99_us),
        report::us(rn.latency.max_us),
    ]);
    print!("{}", t.render());
    let l = &r.dispatch_lag;
    println!();
    println!(
        "dispatch lag under maximum-rate appends ({} writers, {} msg/s, {:.1} MB/s, {:.1} s, {} samples):",
        r.writers,
        report::thousands(l.appends.msgs_per_sec),
        l.appends.mb_per_sec,
        l.appends.elapsed_s,
        report::thousands(l.samples as f64)
    );
    let mut t = Table::new(&["lag", "p50", "p99", "max", "catch-up µs"]);
    let msgs = |b: u64| {
        format!(
            "{} B (~{} msgs)",
            report::thousands(b as f64),
            report::thousands(b as f64 / r.record_bytes as f64)
        )
    };
    t.row(vec![
        "max_offset − dispatched_offset".into(),
        msgs(l.p50_bytes),
        msgs(l.p99_bytes),
        msgs(l.max_bytes),
        report::us(l.catch_up_us),
    ]);
    print!("{}", t.render());
}

pub fn cmd_read(a: ReadArgs) -> i32 {
    crate::install_stop_handler();
    let dir = a.dir.clone().unwrap_or_else(crate::default_dir);
    if let Err(e) = std::fs::create_dir_all(&dir) {
        eprintln!("cannot create {}: {e}", dir.display());
        return 2;
    }
    if !a.quiet {
        eprintln!(
            "# working directory: {} [{}]",
            dir.display(),
            crate::fs_type(&dir).1
        );
    }
    match run(&a, &dir) {
        Ok(r) => {
            print(&r);
            if let Some(p) = &a.json {
                let text = serde_json::to_string_pretty(&r).expect("serialisable report");
                match std::fs::write(p, text) {
                    Ok(()) => eprintln!("# wrote {}", p.display()),
                    Err(e) => {
                        eprintln!("cannot write {}: {e}", p.display());
                        return 1;
                    }
                }
            }
            0
        }
        Err(e) => {
            eprintln!("rmq-bench read: {e}");
            1
        }
    }
}
