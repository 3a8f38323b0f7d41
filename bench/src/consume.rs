//! `rmq-bench consume`: pull every queue of a topic and check what `produce`
//! sent, or (`--latency`) measure send → long-polling-consumer latency.
//!
//! Check mode: every readable queue is pulled (PULL_MESSAGE, one pull in
//! flight per queue, long polling at the tail) from `--from-offset` until a
//! long poll of `--idle-ms` finds nothing more; records are decoded with
//! `engine::record::decode` and their bench tags counted: each message of a
//! producer must arrive exactly once. The expectation is the `--expect` file
//! (the JSON of `produce`: what each producer sent, what failed, what is in
//! doubt) or, without it, sequence numbers 0..=max seen per producer.
//!
//! Latency mode: consumers long-poll the tail of every queue while a light
//! producer sends `--rate` messages per second; latency = receive time −
//! send time written in the body just before the send.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Args;
use engine::record::{decode, Decoded};
use frontends::remoting::codes::{request, response};
use frontends::remoting::{RemotingClient, RemotingCommand};
use hdrhistogram::Histogram;
use parking_lot::Mutex;
use serde::Serialize;

use crate::output::Series;
use crate::remote::{self, code_name, QueueRef, Tag, Target, TAG_LEN};
use crate::report::{size_label, thousands, us, Table};
use crate::stats::{self, Latency};
use crate::STOP;

#[derive(Args, Clone, Debug)]
pub struct ConsumeArgs {
    #[command(flatten)]
    pub target: Target,
    /// Logical offset to start every queue at.
    #[arg(long, default_value_t = 0)]
    pub from_offset: i64,
    /// maxMsgNums per pull.
    #[arg(long, default_value_t = 32)]
    pub batch: u32,
    /// A queue is finished when a long poll this long finds nothing new.
    #[arg(long, default_value_t = 1000)]
    pub idle_ms: u64,
    /// Consumer group.
    #[arg(long, default_value = "rmq-bench-consumer")]
    pub group: String,
    /// The JSON written by `produce --json`: what to expect.
    #[arg(long)]
    pub expect: Option<PathBuf>,
    /// Check only this run id (default: every run found, or the --expect one).
    #[arg(long)]
    pub run_id: Option<u64>,
    /// Latency mode: long-poll the tail while a light producer sends.
    #[arg(long)]
    pub latency: bool,
    /// Latency mode: messages per second sent by the light producer.
    #[arg(long, default_value_t = 1000.0)]
    pub rate: f64,
    /// Latency mode: seconds of sending.
    #[arg(long, default_value_t = 10.0)]
    pub seconds: f64,
    /// Latency mode: body size.
    #[arg(long, value_parser = crate::parse_bytes, default_value = "1KiB")]
    pub size: u64,
    /// Write results as JSON.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// SVG plot of the latency by percentile (latency mode).
    #[arg(long)]
    pub plot: Option<PathBuf>,
    /// No progress line on stderr.
    #[arg(long)]
    pub quiet: bool,
}

const PULL_TIMEOUT_SLACK: Duration = Duration::from_secs(5);

fn pull_request(
    group: &str,
    topic: &str,
    q: &QueueRef,
    offset: i64,
    batch: u32,
    hold_ms: u64,
) -> RemotingCommand {
    RemotingCommand::request(request::PULL_MESSAGE)
        .with_ext("consumerGroup", group)
        .with_ext("topic", topic)
        .with_ext("queueId", q.queue_id)
        .with_ext("queueOffset", offset)
        .with_ext("maxMsgNums", batch)
        // SUSPEND (long polling) | SUBSCRIPTION (expression in the request).
        .with_ext("sysFlag", 0x2 | 0x4)
        .with_ext("commitOffset", 0)
        .with_ext("suspendTimeoutMillis", hold_ms)
        .with_ext("subscription", "*")
        .with_ext("subVersion", 0)
        .with_ext("expressionType", "TAG")
}

/// What one queue's puller saw.
#[derive(Default)]
struct QueueOut {
    tags: Vec<Tag>,
    foreign: u64,
    bytes: u64,
    bad_records: u64,
    offset_moved: u64,
    errors: BTreeMap<String, u64>,
    first_error: Option<String>,
    last_msg: Option<Instant>,
    end_offset: i64,
}

struct Counters {
    msgs: AtomicU64,
    errors: AtomicU64,
}

/// Decodes a pull body; calls `f` for each record's tag (None: not ours).
fn each_record(body: &[u8], out: &mut QueueOut, mut f: impl FnMut(Option<Tag>)) {
    let mut at = 0;
    while at < body.len() {
        match decode(&body[at..], true) {
            Decoded::Message(v) => {
                out.bytes += v.body.len() as u64;
                f(remote::read_tag(v.body));
                at += v.total_size();
            }
            other => {
                out.bad_records += 1;
                if out.first_error.is_none() {
                    out.first_error = Some(format!("undecodable record in pull body: {other:?}"));
                }
                break;
            }
        }
    }
}

/// Pulls one queue. `until`: None = until idle (check mode); Some(flag) =
/// until the flag says stop (latency mode), calling `on_tag` per message.
async fn pull_queue(
    client: RemotingClient,
    a: Arc<ConsumeArgs>,
    q: QueueRef,
    start_offset: i64,
    counters: Arc<Counters>,
    latency: Option<Arc<LatencyState>>,
) -> QueueOut {
    let mut out = QueueOut::default();
    let mut offset = start_offset;
    let mut last_progress = Instant::now();
    let idle = Duration::from_millis(a.idle_ms);
    let hold_ms = if latency.is_some() { 2000 } else { a.idle_ms };
    let mut consecutive_errors = 0;
    loop {
        if let Some(l) = &latency {
            if l.stop.load(Ordering::Relaxed) != 0 {
                break;
            }
        } else if STOP.load(Ordering::Relaxed) {
            break;
        }
        let req = pull_request(&a.group, &a.target.topic, &q, offset, a.batch, hold_ms);
        let asked = Instant::now();
        let r = match client
            .invoke(
                &q.addr,
                req,
                Duration::from_millis(hold_ms) + PULL_TIMEOUT_SLACK,
            )
            .await
        {
            Ok(r) => r,
            Err(e) => {
                *out.errors.entry("transport".into()).or_default() += 1;
                counters.errors.fetch_add(1, Ordering::Relaxed);
                if out.first_error.is_none() {
                    out.first_error = Some(format!("pull {}#{}: {e}", q.addr, q.queue_id));
                }
                consecutive_errors += 1;
                if consecutive_errors > 10 {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let next = r.ext("nextBeginOffset").and_then(|s| s.parse::<i64>().ok());
        match r.code {
            response::SUCCESS => {
                consecutive_errors = 0;
                let now = Instant::now();
                let recv_ns = remote::unix_ns();
                let mut n = 0u64;
                let mut tags = Vec::new();
                let mut foreign = 0;
                each_record(&r.body, &mut out, |t| {
                    n += 1;
                    match t {
                        Some(t) => tags.push(t),
                        None => foreign += 1,
                    }
                });
                out.foreign += foreign;
                if let Some(l) = &latency {
                    let mut h = l.hist.lock();
                    for t in &tags {
                        if t.run_id == l.run_id {
                            stats::record(&mut h, recv_ns.saturating_sub(t.sent_ns));
                            l.received.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
                out.tags.extend(tags);
                counters.msgs.fetch_add(n, Ordering::Relaxed);
                if n > 0 {
                    out.last_msg = Some(now);
                    last_progress = now;
                }
                match next {
                    Some(o) if o > offset => offset = o,
                    _ => offset += n as i64,
                }
            }
            response::PULL_NOT_FOUND | response::PULL_RETRY_IMMEDIATELY => {
                consecutive_errors = 0;
                if let Some(o) = next {
                    if o > offset {
                        offset = o;
                    }
                }
                if latency.is_none() && last_progress.elapsed() >= idle {
                    break;
                }
                if asked.elapsed() < Duration::from_millis(20) {
                    // Not held (long polling off?): don't spin.
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
            response::PULL_OFFSET_MOVED => {
                out.offset_moved += 1;
                match next {
                    Some(o) if o != offset => offset = o,
                    _ => {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                }
            }
            code => {
                *out.errors.entry(code_name(code)).or_default() += 1;
                counters.errors.fetch_add(1, Ordering::Relaxed);
                if out.first_error.is_none() {
                    out.first_error = Some(format!(
                        "pull {}#{}: {} {}",
                        q.addr,
                        q.queue_id,
                        code_name(code),
                        r.remark.clone().unwrap_or_default()
                    ));
                }
                consecutive_errors += 1;
                if consecutive_errors > 10 {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    out.end_offset = offset;
    out
}

struct LatencyState {
    run_id: u64,
    hist: Mutex<Histogram<u64>>,
    received: AtomicU64,
    stop: AtomicU64,
}

// ---------------------------------------------------------------------------
// Verification

/// Per producer of one run: which sequence numbers to expect.
#[derive(Debug, Clone, Default)]
struct Expected {
    sent: u64,
    failed: Vec<u64>,
    in_doubt: Vec<u64>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Check {
    pub run_id: u64,
    /// Where the expectation came from: `expect file` or `inferred`.
    pub basis: String,
    pub producers: usize,
    pub expected: u64,
    /// Bench messages of this run found (with repeats).
    pub found: u64,
    pub unique: u64,
    /// Extra copies of messages already seen.
    pub duplicates: u64,
    /// Expected and not found.
    pub missing: u64,
    /// Found though not expected (answered with an error, or beyond `sent`).
    pub unexpected: u64,
    /// In doubt (no answer) and found: fine either way.
    pub in_doubt_found: u64,
    pub first_missing: Vec<(u32, u64)>,
    pub ok: bool,
}

fn load_expect(path: &PathBuf) -> Result<(u64, BTreeMap<u32, Expected>), String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let v: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
    let run = v["run_id"]
        .as_u64()
        .ok_or_else(|| format!("{}: no run_id (not a produce JSON?)", path.display()))?;
    let list = |x: &serde_json::Value| -> Vec<u64> {
        x.as_array()
            .into_iter()
            .flatten()
            .filter_map(|s| s.as_u64())
            .collect()
    };
    let mut m = BTreeMap::new();
    for p in v["producer_reports"].as_array().into_iter().flatten() {
        m.insert(
            p["id"].as_u64().unwrap_or(0) as u32,
            Expected {
                sent: p["sent"].as_u64().unwrap_or(0),
                failed: list(&p["failed"]),
                in_doubt: list(&p["in_doubt"]),
            },
        );
    }
    Ok((run, m))
}

fn check_run(
    run_id: u64,
    seen: &HashMap<u32, Vec<u8>>,
    expect: Option<&BTreeMap<u32, Expected>>,
) -> Check {
    let mut c = Check {
        run_id,
        basis: if expect.is_some() {
            "expect file"
        } else {
            "inferred (0..=max seq per producer)"
        }
        .into(),
        ..Default::default()
    };
    let inferred: BTreeMap<u32, Expected>;
    let exp = match expect {
        Some(e) => e,
        None => {
            inferred = seen
                .iter()
                .map(|(p, counts)| {
                    let max = counts
                        .iter()
                        .rposition(|&n| n > 0)
                        .map_or(0, |i| i as u64 + 1);
                    (
                        *p,
                        Expected {
                            sent: max,
                            ..Default::default()
                        },
                    )
                })
                .collect();
            &inferred
        }
    };
    c.producers = exp.len();
    let empty = Vec::new();
    for (p, e) in exp {
        let counts = seen.get(p).unwrap_or(&empty);
        let failed: std::collections::HashSet<u64> = e.failed.iter().copied().collect();
        let doubt: std::collections::HashSet<u64> = e.in_doubt.iter().copied().collect();
        for s in 0..e.sent {
            let n = counts.get(s as usize).copied().unwrap_or(0) as u64;
            c.found += n;
            if n > 0 {
                c.unique += 1;
                c.duplicates += n - 1;
            }
            if failed.contains(&s) {
                if n > 0 {
                    c.unexpected += 1;
                }
            } else if doubt.contains(&s) {
                if n > 0 {
                    c.in_doubt_found += 1;
                }
            } else {
                c.expected += 1;
                if n == 0 {
                    c.missing += 1;
                    if c.first_missing.len() < 10 {
                        c.first_missing.push((*p, s));
                    }
                }
            }
        }
        for (s, &n) in counts.iter().enumerate().skip(e.sent as usize) {
            if n > 0 {
                c.found += n as u64;
                c.unique += 1;
                c.duplicates += n as u64 - 1;
                c.unexpected += 1;
                let _ = s;
            }
        }
    }
    for (p, counts) in seen {
        if !exp.contains_key(p) {
            for &n in counts.iter().filter(|&&n| n > 0) {
                c.found += n as u64;
                c.unique += 1;
                c.duplicates += n as u64 - 1;
                c.unexpected += 1;
            }
        }
    }
    c.ok = c.missing == 0 && c.duplicates == 0 && c.unexpected == 0;
    c
}

// ---------------------------------------------------------------------------
// Reports

#[derive(Debug, Serialize)]
pub struct ConsumeReport {
    pub tool: &'static str,
    pub subcommand: &'static str,
    pub unix_time: u64,
    pub command: Vec<String>,
    pub topic: String,
    pub namesrv: String,
    pub queues: usize,
    /// Records pulled (ours and others).
    pub messages: u64,
    pub bench_messages: u64,
    pub foreign_messages: u64,
    pub body_bytes: u64,
    pub elapsed_s: f64,
    pub msgs_per_sec: f64,
    pub mb_per_sec: f64,
    pub bad_records: u64,
    pub offset_moved: u64,
    pub errors: BTreeMap<String, u64>,
    pub first_error: Option<String>,
    pub checks: Vec<Check>,
    pub latency: Option<LatencyResult>,
    pub interrupted: bool,
}

#[derive(Debug, Serialize)]
pub struct LatencyResult {
    pub rate: f64,
    pub size: usize,
    pub sent: u64,
    pub send_errors: u64,
    pub received: u64,
    /// Send (body written) → record decoded by the waiting consumer.
    pub latency: Latency,
    pub curve: Vec<[f64; 2]>,
    /// Send → response of the light producer's requests.
    pub send_latency: Latency,
}

pub fn cmd_consume(a: ConsumeArgs) -> i32 {
    crate::install_stop_handler();
    let ep = match remote::endpoint(&a.target) {
        Ok(e) => e,
        Err(e) => {
            eprintln!("rmq-bench consume: {e}");
            return 1;
        }
    };
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("rmq-bench consume: runtime: {e}");
            return 1;
        }
    };
    let code = rt.block_on(consume(
        Arc::new(a),
        ep.namesrv.clone(),
        ep.spawned.is_some(),
    ));
    drop(rt);
    drop(ep);
    code
}

fn spawn_progress(
    counters: Arc<Counters>,
    quiet: bool,
) -> Option<(Arc<AtomicU64>, std::thread::JoinHandle<()>)> {
    if quiet {
        return None;
    }
    let done = Arc::new(AtomicU64::new(0));
    let d = done.clone();
    let start = Instant::now();
    Some((
        done,
        std::thread::spawn(move || {
            let mut last = (Instant::now(), 0u64);
            while d.load(Ordering::Relaxed) == 0 {
                std::thread::sleep(Duration::from_millis(250));
                if last.0.elapsed() < Duration::from_secs(1) {
                    continue;
                }
                let now = Instant::now();
                let m = counters.msgs.load(Ordering::Relaxed);
                let rate = (m - last.1) as f64 / now.duration_since(last.0).as_secs_f64();
                last = (now, m);
                eprint!(
                    "\r[consume] {:5.1} s  {:>9} msg/s  {} messages  {} errors   ",
                    now.duration_since(start).as_secs_f64(),
                    thousands(rate),
                    m,
                    counters.errors.load(Ordering::Relaxed)
                );
            }
            eprintln!();
        }),
    ))
}

async fn consume(a: Arc<ConsumeArgs>, namesrv: String, spawned: bool) -> i32 {
    let admin = RemotingClient::default();
    let create = a.target.create_topic || spawned;
    let (route, how) =
        match remote::resolve_route(&admin, &namesrv, &a.target.topic, create, a.target.queues)
            .await
        {
            Ok(r) => r,
            Err(e) => {
                eprintln!("rmq-bench consume: {e}");
                return 1;
            }
        };
    if route.read.is_empty() {
        eprintln!(
            "rmq-bench consume: topic {} has no readable queue",
            a.target.topic
        );
        return 1;
    }
    let expect = match &a.expect {
        Some(p) => match load_expect(p) {
            Ok(x) => Some(x),
            Err(e) => {
                eprintln!("rmq-bench consume: {e}");
                return 2;
            }
        },
        None => None,
    };
    let counters = Arc::new(Counters {
        msgs: AtomicU64::new(0),
        errors: AtomicU64::new(0),
    });
    let client = RemotingClient::default();
    let lat_state = if a.latency {
        Some(Arc::new(LatencyState {
            run_id: remote::unix_ns() ^ ((std::process::id() as u64) << 48),
            hist: Mutex::new(stats::new_hist()),
            received: AtomicU64::new(0),
            stop: AtomicU64::new(0),
        }))
    } else {
        None
    };
    // Start offsets: --from-offset, or the current end in latency mode.
    let mut starts = Vec::new();
    for q in &route.read {
        let o = if a.latency {
            match remote::max_offset(&admin, q, &a.target.topic).await {
                Ok(o) => o,
                Err(e) => {
                    eprintln!("rmq-bench consume: {}#{}: {e}", q.addr, q.queue_id);
                    return 1;
                }
            }
        } else {
            a.from_offset
        };
        starts.push(o);
    }
    if !a.quiet {
        eprintln!(
            "# consume{}: topic {} ({how}), {} read queues, group {}",
            if a.latency { " --latency" } else { "" },
            a.target.topic,
            route.read.len(),
            a.group
        );
    }
    let prog = spawn_progress(counters.clone(), a.quiet);
    let start = Instant::now();
    let mut tasks = Vec::new();
    for (q, o) in route.read.iter().zip(&starts) {
        tasks.push(tokio::spawn(pull_queue(
            client.clone(),
            a.clone(),
            q.clone(),
            *o,
            counters.clone(),
            lat_state.clone(),
        )));
    }
    let mut lat_result = None;
    if let Some(l) = &lat_state {
        // Let every pull reach the broker and be held before sending.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let (sent, send_errors, send_hist) = light_producer(&a, &route.write, l.run_id).await;
        // Wait for stragglers, then stop the pullers (their held pulls end
        // within the hold time).
        let deadline = Instant::now() + Duration::from_secs(3);
        while l.received.load(Ordering::Relaxed) < sent && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        l.stop.store(1, Ordering::Relaxed);
        let h = l.hist.lock().clone();
        lat_result = Some(LatencyResult {
            rate: a.rate,
            size: a.size as usize,
            sent,
            send_errors,
            received: l.received.load(Ordering::Relaxed),
            latency: Latency::from_hist(&h),
            curve: stats::curve(&h),
            send_latency: Latency::from_hist(&send_hist),
        });
    }
    let mut outs = Vec::new();
    for t in tasks {
        match t.await {
            Ok(o) => outs.push(o),
            Err(e) => eprintln!("pull task failed: {e}"),
        }
    }
    if let Some((done, h)) = prog {
        done.store(1, Ordering::Relaxed);
        let _ = h.join();
    }
    client.close_all();
    admin.close_all();

    // Tally.
    let mut seen: BTreeMap<u64, HashMap<u32, Vec<u8>>> = BTreeMap::new();
    let mut errors: BTreeMap<String, u64> = BTreeMap::new();
    let (mut bench, mut foreign, mut bytes, mut bad, mut moved) = (0u64, 0u64, 0u64, 0u64, 0u64);
    let mut last = None::<Instant>;
    let mut first_error = None;
    for o in &outs {
        for t in &o.tags {
            bench += 1;
            let v = seen
                .entry(t.run_id)
                .or_default()
                .entry(t.producer)
                .or_default();
            let i = t.seq as usize;
            if v.len() <= i {
                v.resize(i + 1, 0);
            }
            v[i] = v[i].saturating_add(1);
        }
        foreign += o.foreign;
        bytes += o.bytes;
        bad += o.bad_records;
        moved += o.offset_moved;
        for (k, n) in &o.errors {
            *errors.entry(k.clone()).or_default() += n;
        }
        if first_error.is_none() {
            first_error = o.first_error.clone();
        }
        if let Some(t) = o.last_msg {
            last = Some(last.map_or(t, |l: Instant| l.max(t)));
        }
    }
    let total = bench + foreign;
    let elapsed = last
        .map_or(0.0, |l| l.duration_since(start).as_secs_f64())
        .max(1e-9);
    let mut checks = Vec::new();
    if !a.latency {
        match &expect {
            Some((run, exp)) => {
                let empty = HashMap::new();
                checks.push(check_run(*run, seen.get(run).unwrap_or(&empty), Some(exp)));
            }
            None => {
                for (run, s) in &seen {
                    if a.run_id.is_none_or(|r| r == *run) {
                        checks.push(check_run(*run, s, None));
                    }
                }
            }
        }
    }
    let rep = ConsumeReport {
        tool: "rmq-bench",
        subcommand: "consume",
        unix_time: crate::unix_time(),
        command: std::env::args().collect(),
        topic: a.target.topic.clone(),
        namesrv: namesrv.clone(),
        queues: route.read.len(),
        messages: total,
        bench_messages: bench,
        foreign_messages: foreign,
        body_bytes: bytes,
        elapsed_s: elapsed,
        msgs_per_sec: total as f64 / elapsed,
        mb_per_sec: bytes as f64 / elapsed / 1e6,
        bad_records: bad,
        offset_moved: moved,
        errors,
        first_error,
        checks,
        latency: lat_result,
        interrupted: STOP.load(Ordering::SeqCst),
    };
    print_report(&rep, &a);
    if let Some(p) = &a.json {
        match serde_json::to_string_pretty(&rep) {
            Ok(text) => match std::fs::write(p, text) {
                Ok(()) => eprintln!("# wrote {}", p.display()),
                Err(e) => eprintln!("cannot write {}: {e}", p.display()),
            },
            Err(e) => eprintln!("cannot serialise: {e}"),
        }
    }
    if let (Some(p), Some(l)) = (&a.plot, &rep.latency) {
        let s = [Series {
            name: format!("send → consume, {} msg/s", thousands(l.rate)),
            group: "latency".into(),
            dashed: false,
            curve: l.curve.clone(),
        }];
        let svg = crate::output::svg_series(
            &s,
            &[(2000.0, "target p99 2 ms")],
            "rmq-bench consume --latency: send → long-polling consumer",
            "send → consume latency",
        );
        match std::fs::write(p, svg) {
            Ok(()) => eprintln!("# wrote {}", p.display()),
            Err(e) => eprintln!("cannot write {}: {e}", p.display()),
        }
    }
    let bad_check = rep.checks.iter().any(|c| !c.ok);
    let lat_bad = rep.latency.as_ref().is_some_and(|l| l.received == 0);
    if bad_check || lat_bad || (rep.bad_records > 0) {
        1
    } else {
        0
    }
}

fn print_report(rep: &ConsumeReport, a: &ConsumeArgs) {
    if let Some(l) = &rep.latency {
        println!("consume --latency (send → record decoded by a consumer long-polling the tail; one sync light producer):");
        let mut t = Table::new(&[
            "rate msg/s",
            "size",
            "sent",
            "received",
            "p50 µs",
            "p90 µs",
            "p99 µs",
            "p99.9 µs",
            "max µs",
            "send p50 µs",
            "send p99 µs",
        ]);
        t.row(vec![
            thousands(l.rate),
            size_label(l.size),
            l.sent.to_string(),
            l.received.to_string(),
            us(l.latency.p50_us),
            us(l.latency.p90_us),
            us(l.latency.p99_us),
            us(l.latency.p999_us),
            us(l.latency.max_us),
            us(l.send_latency.p50_us),
            us(l.send_latency.p99_us),
        ]);
        print!("{}", t.render());
        if l.send_errors > 0 {
            println!("send errors: {}", l.send_errors);
        }
    } else {
        println!(
            "consume (all {} queues from offset {} to the end; MB/s = body bytes):",
            rep.queues, a.from_offset
        );
        let mut t = Table::new(&[
            "messages",
            "bench msgs",
            "other msgs",
            "seconds",
            "msg/s",
            "MB/s",
            "bad records",
            "offset moved",
        ]);
        t.row(vec![
            rep.messages.to_string(),
            rep.bench_messages.to_string(),
            rep.foreign_messages.to_string(),
            format!("{:.2}", rep.elapsed_s),
            thousands(rep.msgs_per_sec),
            format!("{:.1}", rep.mb_per_sec),
            rep.bad_records.to_string(),
            rep.offset_moved.to_string(),
        ]);
        print!("{}", t.render());
        println!("exactly-once check:");
        let mut t = Table::new(&[
            "run id",
            "basis",
            "producers",
            "expected",
            "found",
            "unique",
            "duplicates",
            "missing",
            "unexpected",
            "in-doubt found",
            "ok",
        ]);
        for c in &rep.checks {
            t.row(vec![
                c.run_id.to_string(),
                c.basis.clone(),
                c.producers.to_string(),
                c.expected.to_string(),
                c.found.to_string(),
                c.unique.to_string(),
                c.duplicates.to_string(),
                c.missing.to_string(),
                c.unexpected.to_string(),
                c.in_doubt_found.to_string(),
                if c.ok { "yes".into() } else { "NO".into() },
            ]);
        }
        print!("{}", t.render());
        for c in rep.checks.iter().filter(|c| !c.first_missing.is_empty()) {
            println!(
                "run {}: first missing (producer, seq): {:?}",
                c.run_id, c.first_missing
            );
        }
        if rep.checks.is_empty() {
            println!("(no bench messages found)");
        }
    }
    if !rep.errors.is_empty() {
        println!("errors by response code:");
        let mut t = Table::new(&["code", "count"]);
        for (k, v) in &rep.errors {
            t.row(vec![k.clone(), v.to_string()]);
        }
        print!("{}", t.render());
    }
    if let Some(e) = &rep.first_error {
        println!("first error: {e}");
    }
    if rep.interrupted {
        println!("(interrupted: results above are partial)");
    }
}

/// Sends `--rate` messages per second for `--seconds`, one at a time,
/// round-robin over the write queues, each body stamped with its send time.
async fn light_producer(
    a: &ConsumeArgs,
    queues: &[QueueRef],
    run_id: u64,
) -> (u64, u64, Histogram<u64>) {
    let client = RemotingClient::default();
    let mut hist = stats::new_hist();
    let (mut sent, mut errors) = (0u64, 0u64);
    let size = (a.size as usize).max(TAG_LEN);
    let mut body = vec![b'x'; size];
    let interval = Duration::from_secs_f64(1.0 / a.rate.max(0.1));
    let start = tokio::time::Instant::now();
    let end = Instant::now() + Duration::from_secs_f64(a.seconds.max(0.0));
    let mut i = 0u64;
    while Instant::now() < end && !STOP.load(Ordering::Relaxed) {
        tokio::time::sleep_until(start + interval.mul_f64(i as f64)).await;
        let q = &queues[(i % queues.len() as u64) as usize];
        let sent_ns = remote::unix_ns();
        remote::write_tag(
            &mut body,
            Tag {
                run_id,
                producer: 0,
                seq: i,
                sent_ns,
            },
        );
        let req = RemotingCommand::request(request::SEND_MESSAGE_V2)
            .with_ext("a", "rmq-bench-latency")
            .with_ext("b", &a.target.topic)
            .with_ext("c", "TBW102")
            .with_ext("d", 4)
            .with_ext("e", q.queue_id)
            .with_ext("f", 0)
            .with_ext("g", sent_ns / 1_000_000)
            .with_ext("h", 0)
            .with_ext("i", "TAGS\u{1}bench\u{2}WAIT\u{1}true")
            .with_ext("j", 0)
            .with_ext("k", false)
            .with_ext("m", false)
            .with_body(body.clone());
        let t0 = Instant::now();
        match client.invoke(&q.addr, req, Duration::from_secs(5)).await {
            Ok(r) if r.code == response::SUCCESS => {
                stats::record(&mut hist, t0.elapsed().as_nanos() as u64);
            }
            _ => errors += 1,
        }
        sent += 1;
        i += 1;
    }
    client.close_all();
    (sent - errors, errors, hist)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn check_counts() {
        let mut seen = HashMap::new();
        seen.insert(0u32, vec![1u8, 1, 2, 0, 1]); // seq 2 twice, seq 3 missing
        let c = check_run(9, &seen, None);
        assert_eq!(
            (c.expected, c.found, c.unique, c.duplicates, c.missing),
            (5, 5, 4, 1, 1)
        );
        assert!(!c.ok);
        let mut exp = BTreeMap::new();
        exp.insert(
            0u32,
            Expected {
                sent: 6,
                failed: vec![3],
                in_doubt: vec![5],
            },
        );
        seen.insert(0, vec![1, 1, 1, 0, 1]);
        let c = check_run(9, &seen, Some(&exp));
        assert_eq!(
            (c.expected, c.missing, c.duplicates, c.unexpected),
            (4, 0, 0, 0)
        );
        assert!(c.ok);
    }
}
