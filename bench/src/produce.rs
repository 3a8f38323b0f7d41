//! `rmq-bench produce`: a load generator over the remoting protocol.
//!
//! Each producer is one TCP connection driven by one task with a lean
//! pipelined sender: up to `--inflight` SEND_MESSAGE_V2 requests are
//! outstanding; every batch of requests that fits the window is encoded into
//! one buffer and written with one `write`, responses are matched by opaque
//! and each request's latency is send → response. Headers are written
//! directly as JSON bytes (checked against the frontends codec in a test)
//! and responses are parsed for `code`/`opaque` only, so the client spends
//! as little CPU as possible on the shared machine.
//!
//! Bodies carry a tag (run id, producer id, sequence number, send time) so
//! that `consume` can check that every message arrived exactly once.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{BufMut, BytesMut};
use clap::{Args, ValueEnum};
use frontends::remoting::codes::response;
use frontends::remoting::{FrameCodec, RemotingClient};
use hdrhistogram::Histogram;
use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::output::Series;
use crate::remote::{self, code_name, ProcStats, QueueRef, Tag, Target, TAG_LEN};
use crate::report::{size_label, thousands, us, Table};
use crate::stats::{self, Latency};
use crate::STOP;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// One request in flight per producer.
    Sync,
    /// `--inflight` requests in flight per producer (pipelined).
    Async,
    /// No response; the rate is measured at the sender.
    Oneway,
}

#[derive(Args, Clone, Debug)]
pub struct ProduceArgs {
    #[command(flatten)]
    pub target: Target,
    /// Message body size (at least 32 bytes: the tag).
    #[arg(long, value_parser = crate::parse_bytes, default_value = "1KiB")]
    pub size: u64,
    /// Producers, each one TCP connection.
    #[arg(long, default_value_t = 1)]
    pub producers: usize,
    /// Requests in flight per producer (async mode; sync is always 1; in
    /// oneway mode: messages per write).
    #[arg(long, default_value_t = 64)]
    pub inflight: usize,
    #[arg(long, value_enum, default_value_t = Mode::Async)]
    pub mode: Mode,
    /// Seconds of measured sending.
    #[arg(long, default_value_t = 10.0)]
    pub seconds: f64,
    /// Stop after this many messages in total (with --seconds: whichever first).
    #[arg(long)]
    pub messages: Option<u64>,
    /// Unmeasured seconds of sending before the measured window.
    #[arg(long, default_value_t = 0.0)]
    pub warmup: f64,
    /// Per-request timeout, seconds (no byte from the broker for this long
    /// with requests outstanding: they are counted as timed out).
    #[arg(long, default_value_t = 5.0)]
    pub timeout: f64,
    /// Send WAIT=false (the broker answers before the flush under SYNC_FLUSH).
    #[arg(long)]
    pub no_wait: bool,
    /// Client runtime threads (1 = everything on one thread).
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
    /// Producer group sent in the header.
    #[arg(long, default_value = "rmq-bench-producer")]
    pub group: String,
    /// Label of this run in the table, JSON and plot.
    #[arg(long)]
    pub label: Option<String>,
    /// Write results as JSON (also the input of `consume --expect`).
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// SVG plot of send latency by percentile.
    #[arg(long)]
    pub plot: Option<PathBuf>,
    /// No progress line on stderr.
    #[arg(long)]
    pub quiet: bool,
}

// ---------------------------------------------------------------------------
// Request encoding

/// Pre-rendered pieces of a SEND_MESSAGE_V2 JSON header; only the queue id,
/// born timestamp and opaque change per message.
pub struct SendEncoder {
    /// `{"code":310,"extFields":{"a":..,"b":..,"c":"TBW102","d":"N","e":"`
    head: Vec<u8>,
    /// `","f":"0","g":"`
    mid: Vec<u8>,
    /// `","h":"0","i":"...","j":"0","k":"false","m":"false"},"flag":F,"language":"JAVA","opaque":`
    tail: Vec<u8>,
    /// `,"serializeTypeCurrentRPC":"JSON","version":409}`
    end: &'static [u8],
    pub body: Vec<u8>,
}

fn json_str(s: &str) -> String {
    serde_json::to_string(s).expect("string serialises")
}

impl SendEncoder {
    pub fn new(
        group: &str,
        topic: &str,
        queue_nums: usize,
        props: &str,
        size: usize,
        oneway: bool,
    ) -> Self {
        let head = format!(
            "{{\"code\":310,\"extFields\":{{\"a\":{},\"b\":{},\"c\":\"TBW102\",\"d\":\"{}\",\"e\":\"",
            json_str(group),
            json_str(topic),
            queue_nums.max(1)
        );
        let tail = format!(
            "\",\"h\":\"0\",\"i\":{},\"j\":\"0\",\"k\":\"false\",\"m\":\"false\"}},\"flag\":{},\"language\":\"JAVA\",\"opaque\":",
            json_str(props),
            if oneway { 2 } else { 0 }
        );
        let mut body = vec![0u8; size.max(TAG_LEN)];
        for (i, b) in body.iter_mut().enumerate().skip(TAG_LEN) {
            *b = b'a' + (i % 26) as u8;
        }
        SendEncoder {
            head: head.into_bytes(),
            mid: b"\",\"f\":\"0\",\"g\":\"".to_vec(),
            tail: tail.into_bytes(),
            end: b",\"serializeTypeCurrentRPC\":\"JSON\",\"version\":409}",
            body,
        }
    }

    /// Appends one request frame to `out`.
    pub fn encode(
        &mut self,
        out: &mut BytesMut,
        queue_id: i32,
        born_ms: u64,
        opaque: i32,
        tag: Tag,
    ) {
        let mut ibuf = itoa_buf();
        let q = itoa(&mut ibuf, queue_id as i64).to_vec();
        let mut gbuf = itoa_buf();
        let g = itoa(&mut gbuf, born_ms as i64).to_vec();
        let mut obuf = itoa_buf();
        let o = itoa(&mut obuf, opaque as i64);
        let header_len = self.head.len()
            + q.len()
            + self.mid.len()
            + g.len()
            + self.tail.len()
            + o.len()
            + self.end.len();
        remote::write_tag(&mut self.body, tag);
        out.reserve(8 + header_len + self.body.len());
        out.put_u32((4 + header_len + self.body.len()) as u32);
        out.put_u32(header_len as u32); // serialization type 0 (JSON)
        out.put_slice(&self.head);
        out.put_slice(&q);
        out.put_slice(&self.mid);
        out.put_slice(&g);
        out.put_slice(&self.tail);
        out.put_slice(o);
        out.put_slice(self.end);
        out.put_slice(&self.body);
    }
}

fn itoa_buf() -> [u8; 24] {
    [0u8; 24]
}

fn itoa(buf: &mut [u8; 24], v: i64) -> &[u8] {
    let neg = v < 0;
    let mut n = v.unsigned_abs();
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    if neg {
        i -= 1;
        buf[i] = b'-';
    }
    &buf[i..]
}

/// `code` and `opaque` of a JSON response header, read without a full parse;
/// `None` if they cannot be found that way.
fn quick_code_opaque(header: &[u8]) -> Option<(i32, i32)> {
    fn num_after(h: &[u8], key: &[u8]) -> Option<i32> {
        let at = h.windows(key.len()).position(|w| w == key)? + key.len();
        let rest = &h[at..];
        let end = rest
            .iter()
            .position(|c| !(c.is_ascii_digit() || *c == b'-'))
            .unwrap_or(rest.len());
        std::str::from_utf8(&rest[..end]).ok()?.parse().ok()
    }
    Some((
        num_after(header, b"\"code\":")?,
        num_after(header, b"\"opaque\":")?,
    ))
}

// ---------------------------------------------------------------------------
// One producer

struct ProducerSpec {
    id: u32,
    addr: String,
    queues: Vec<i32>,
    queue_nums: usize,
    limit: u64,
}

struct Common {
    run_id: u64,
    topic: String,
    group: String,
    props: String,
    size: usize,
    mode: Mode,
    inflight: usize,
    timeout: Duration,
    measure_start: Instant,
    deadline: Instant,
    done: AtomicU64,
    errors: AtomicU64,
    finished: AtomicBool,
    /// `[seconds since start, sends/s]`, sampled by the progress thread.
    timeline: parking_lot::Mutex<Vec<[f64; 2]>>,
}

/// What one producer did.
#[derive(Debug, Serialize)]
pub struct ProducerReport {
    pub id: u32,
    pub addr: String,
    /// Sequence numbers 0..sent were written to the connection.
    pub sent: u64,
    /// Answered with a code under which the message is stored (0, 10, 11, 12).
    pub ok: u64,
    /// Answered with an error code: not stored.
    pub failed: Vec<u64>,
    /// No answer (timeout, connection lost): stored or not.
    pub in_doubt: Vec<u64>,
    #[serde(skip)]
    hist: Histogram<u64>,
    #[serde(skip)]
    measured: u64,
    #[serde(skip)]
    last_done: Option<Instant>,
    #[serde(skip)]
    errors: BTreeMap<String, u64>,
    #[serde(skip)]
    first_error: Option<String>,
}

fn stored_code(code: i32) -> bool {
    matches!(
        code,
        response::SUCCESS
            | response::FLUSH_DISK_TIMEOUT
            | response::SLAVE_NOT_AVAILABLE
            | response::FLUSH_SLAVE_TIMEOUT
    )
}

async fn run_producer(spec: ProducerSpec, c: Arc<Common>) -> ProducerReport {
    let mut rep = ProducerReport {
        id: spec.id,
        addr: spec.addr.clone(),
        sent: 0,
        ok: 0,
        failed: Vec::new(),
        in_doubt: Vec::new(),
        hist: stats::new_hist(),
        measured: 0,
        last_done: None,
        errors: BTreeMap::new(),
        first_error: None,
    };
    let fail = |rep: &mut ProducerReport, what: String, detail: String| {
        *rep.errors.entry(what).or_default() += 1;
        if rep.first_error.is_none() {
            rep.first_error = Some(detail);
        }
        c.errors.fetch_add(1, Ordering::Relaxed);
    };
    let mut stream = match tokio::time::timeout(c.timeout, TcpStream::connect(&spec.addr)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            fail(
                &mut rep,
                "connect failed".into(),
                format!("connect {}: {e}", spec.addr),
            );
            return rep;
        }
        Err(_) => {
            fail(
                &mut rep,
                "connect timeout".into(),
                format!("connect {}: timeout", spec.addr),
            );
            return rep;
        }
    };
    let _ = stream.set_nodelay(true);
    let (mut rd, mut wr) = stream.split();
    let mut enc = SendEncoder::new(
        &c.group,
        &c.topic,
        spec.queue_nums,
        &c.props,
        c.size,
        c.mode == Mode::Oneway,
    );
    // Oneway runs end with one answered request: the broker has read
    // everything before it by then (closing at once could drop requests
    // still in the broker's hands).
    let mut barrier = (c.mode == Mode::Oneway)
        .then(|| SendEncoder::new(&c.group, &c.topic, spec.queue_nums, &c.props, c.size, false));
    let window = match c.mode {
        Mode::Sync => 1,
        _ => c.inflight.max(1),
    };
    let codec = FrameCodec::default();
    let mut out = BytesMut::with_capacity(window * (c.size + 400));
    let mut inbuf = BytesMut::with_capacity(256 * 1024);
    let mut pending: HashMap<i32, (u64, Instant)> = HashMap::with_capacity(window * 2);
    let mut seq: u64 = 0;
    let nq = spec.queues.len().max(1);
    loop {
        let now = Instant::now();
        let stopping = STOP.load(Ordering::Relaxed) || now >= c.deadline || seq >= spec.limit;
        if !stopping {
            let born_ms = remote::unix_ns() / 1_000_000;
            let sent_ns = remote::unix_ns();
            let room = window - pending.len();
            for _ in 0..room {
                if seq >= spec.limit {
                    break;
                }
                let q = spec.queues[((spec.id as u64 + seq) % nq as u64) as usize];
                let opaque = seq as i32;
                let tag = Tag {
                    run_id: c.run_id,
                    producer: spec.id,
                    seq,
                    sent_ns,
                };
                enc.encode(&mut out, q, born_ms, opaque, tag);
                if c.mode != Mode::Oneway {
                    pending.insert(opaque, (seq, now));
                } else if now >= c.measure_start {
                    rep.measured += 1;
                }
                seq += 1;
                if c.mode == Mode::Oneway {
                    rep.ok += 1;
                    c.done.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        if !out.is_empty() {
            if let Err(e) = wr.write_all_buf(&mut out).await {
                fail(&mut rep, "connection lost".into(), format!("write: {e}"));
                break;
            }
            out.clear();
            if c.mode == Mode::Oneway {
                rep.last_done = Some(Instant::now());
                tokio::task::yield_now().await;
            }
        }
        if pending.is_empty() && stopping {
            match barrier.take() {
                Some(mut b) if seq > 0 && rep.errors.is_empty() => {
                    let tag = Tag {
                        run_id: c.run_id,
                        producer: spec.id,
                        seq,
                        sent_ns: remote::unix_ns(),
                    };
                    let q = spec.queues[((spec.id as u64 + seq) % nq as u64) as usize];
                    b.encode(&mut out, q, tag.sent_ns / 1_000_000, seq as i32, tag);
                    pending.insert(seq as i32, (seq, Instant::now()));
                    seq += 1;
                    if let Err(e) = wr.write_all_buf(&mut out).await {
                        fail(&mut rep, "connection lost".into(), format!("write: {e}"));
                        break;
                    }
                    out.clear();
                }
                _ => break,
            }
        }
        if pending.is_empty() {
            continue;
        }
        let read = tokio::time::timeout(c.timeout, rd.read_buf(&mut inbuf)).await;
        match read {
            Ok(Ok(0)) => {
                fail(
                    &mut rep,
                    "connection closed".into(),
                    "broker closed the connection".into(),
                );
                break;
            }
            Ok(Ok(_)) => {}
            Ok(Err(e)) => {
                fail(&mut rep, "connection lost".into(), format!("read: {e}"));
                break;
            }
            Err(_) => {
                let n = pending.len() as u64;
                *rep.errors.entry("timeout".into()).or_default() += n;
                c.errors.fetch_add(n, Ordering::Relaxed);
                if rep.first_error.is_none() {
                    rep.first_error =
                        Some(format!("{n} requests unanswered after {:?}", c.timeout));
                }
                break;
            }
        }
        let now = Instant::now();
        loop {
            let total = match codec.check(&inbuf) {
                Ok(Some(t)) => t,
                Ok(None) => break,
                Err(e) => {
                    fail(
                        &mut rep,
                        "bad frame".into(),
                        format!("bad response frame: {e}"),
                    );
                    inbuf.clear();
                    break;
                }
            };
            let frame = inbuf.split_to(total);
            let word = u32::from_be_bytes([frame[4], frame[5], frame[6], frame[7]]);
            let hlen = (word & 0xFF_FFFF) as usize;
            let quick = if word >> 24 == 0 && 8 + hlen <= frame.len() {
                quick_code_opaque(&frame[8..8 + hlen])
            } else {
                None
            };
            let (code, opaque, remark) = match quick {
                Some((code, opaque)) if code == response::SUCCESS => (code, opaque, None),
                _ => match frontends::remoting::frame::decode_frame(frame.freeze().slice(4..)) {
                    Ok(cmd) => (cmd.code, cmd.opaque, cmd.remark),
                    Err(e) => {
                        fail(&mut rep, "bad frame".into(), format!("bad response: {e}"));
                        continue;
                    }
                },
            };
            let Some((s, sent_at)) = pending.remove(&opaque) else {
                continue;
            };
            if c.mode != Mode::Oneway {
                rep.last_done = Some(now);
            }
            if stored_code(code) {
                rep.ok += 1;
                c.done.fetch_add(1, Ordering::Relaxed);
                if sent_at >= c.measure_start && c.mode != Mode::Oneway {
                    rep.measured += 1;
                    stats::record(&mut rep.hist, now.duration_since(sent_at).as_nanos() as u64);
                }
                if code != response::SUCCESS {
                    *rep.errors.entry(code_name(code)).or_default() += 1;
                }
            } else {
                rep.failed.push(s);
                fail(
                    &mut rep,
                    code_name(code),
                    format!("{}: {}", code_name(code), remark.unwrap_or_default()),
                );
            }
        }
    }
    let mut left: Vec<u64> = pending.into_values().map(|(s, _)| s).collect();
    left.sort_unstable();
    rep.in_doubt = left;
    rep.sent = seq;
    rep
}

// ---------------------------------------------------------------------------
// The run

/// The measured figures of one produce run.
#[derive(Debug, Serialize)]
pub struct ProduceResult {
    pub label: String,
    pub mode: Mode,
    pub size: usize,
    pub producers: usize,
    pub inflight: usize,
    pub wait: bool,
    pub queues: usize,
    /// Successful sends in the measured window.
    pub messages: u64,
    pub elapsed_s: f64,
    pub msgs_per_sec: f64,
    /// Body bytes per second (10^6).
    pub mb_per_sec: f64,
    /// Send → response latency (empty in oneway mode).
    pub latency: Latency,
    pub curve: Vec<[f64; 2]>,
    /// Throughput over time: `[seconds since start, acknowledged sends/s
    /// over the last ~250 ms]` (warm-up included).
    pub timeline: Vec<[f64; 2]>,
    pub sent_total: u64,
    pub ok_total: u64,
    /// Errors by response code (and transport failures by kind).
    pub errors: BTreeMap<String, u64>,
    pub first_error: Option<String>,
    pub stopped_early: bool,
    /// CPU seconds of this client process during the run.
    pub client_cpu_s: f64,
    pub broker: Option<BrokerUse>,
    /// The spawned slave's replication lag (with --spawn-slave).
    pub slave: Option<SlaveLag>,
    /// The broker's commit log flushes during the run, warm-up included
    /// (single-broker runs against our broker only).
    pub flush: Option<remote::FlushCounters>,
}

/// How far a slave was behind its master when producing stopped.
#[derive(Debug, Serialize)]
pub struct SlaveLag {
    /// Messages stored on the master but not yet in the slave's queues.
    pub behind_messages: u64,
    /// Time until the slave's queues matched the master's.
    pub caught_up_ms: f64,
}

/// Measures the slave's lag on `queues` of `topic` right after producing.
async fn slave_lag(
    topic: &str,
    master: &str,
    slave: &str,
    queues: &[i32],
) -> Result<SlaveLag, String> {
    let client = RemotingClient::default();
    let start = Instant::now();
    let (want, first) = tokio::join!(
        remote::queue_total(&client, master, topic, queues),
        remote::queue_total(&client, slave, topic, queues)
    );
    let (want, mut have) = (want?, first?);
    let behind = want.saturating_sub(have);
    while have < want {
        if start.elapsed() > Duration::from_secs(60) {
            return Err(format!(
                "slave still {} messages behind after 60 s",
                want - have
            ));
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
        have = remote::queue_total(&client, slave, topic, queues).await?;
    }
    client.close_all();
    Ok(SlaveLag {
        behind_messages: behind,
        caught_up_ms: start.elapsed().as_secs_f64() * 1000.0,
    })
}

/// What the broker process used (when its pid is known).
#[derive(Debug, Serialize)]
pub struct BrokerUse {
    pub idle: ProcStats,
    pub after: ProcStats,
    /// CPU seconds of the broker during the run.
    pub cpu_s: f64,
    /// Broker CPU utilisation during the run (1.0 = one core).
    pub cores: f64,
}

#[derive(Debug, Serialize)]
pub struct ProduceReport {
    pub tool: &'static str,
    pub subcommand: &'static str,
    pub unix_time: u64,
    pub command: Vec<String>,
    pub run_id: u64,
    pub topic: String,
    pub namesrv: String,
    pub route: &'static str,
    pub write_queues: Vec<QueueRef>,
    pub result: ProduceResult,
    pub producer_reports: Vec<ProducerReport>,
    pub interrupted: bool,
}

pub fn table(results: &[&ProduceResult]) -> String {
    let mut t = Table::new(&[
        "run",
        "mode",
        "size",
        "P",
        "inflight",
        "msgs",
        "msg/s",
        "MB/s",
        "p50 µs",
        "p90 µs",
        "p99 µs",
        "p99.9 µs",
        "max µs",
        "errors",
    ]);
    for r in results {
        let errs: u64 = r.errors.values().sum();
        t.row(vec![
            format!(
                "{}{}",
                r.label,
                if r.stopped_early { " (stopped)" } else { "" }
            ),
            format!("{:?}", r.mode).to_lowercase(),
            size_label(r.size),
            r.producers.to_string(),
            r.inflight.to_string(),
            r.messages.to_string(),
            thousands(r.msgs_per_sec),
            format!("{:.1}", r.mb_per_sec),
            us(r.latency.p50_us),
            us(r.latency.p90_us),
            us(r.latency.p99_us),
            us(r.latency.p999_us),
            us(r.latency.max_us),
            errs.to_string(),
        ]);
    }
    t.render()
}

fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

pub fn broker_line(b: &BrokerUse) -> String {
    format!(
        "broker pid {}: RssAnon idle {} (RSS {}, file-backed {}), after run {} (RSS {}); CPU {:.2} s during the run = {:.2} cores",
        b.idle.pid,
        mib(b.idle.rss_anon_kib),
        mib(b.idle.rss_kib),
        mib(b.idle.rss_file_kib),
        mib(b.after.rss_anon_kib),
        mib(b.after.rss_kib),
        b.cpu_s,
        b.cores
    )
}

/// Samples throughput every 250 ms into `common.timeline` and, when
/// `print`, shows a progress line every second.
fn progress(common: &Common, start: Instant, print: bool) {
    let mut last = (Instant::now(), 0u64);
    let mut last_print = Instant::now();
    loop {
        std::thread::sleep(Duration::from_millis(250));
        if common.finished.load(Ordering::Relaxed) {
            break;
        }
        let now = Instant::now();
        let done = common.done.load(Ordering::Relaxed);
        let rate = (done - last.1.min(done)) as f64 / now.duration_since(last.0).as_secs_f64();
        last = (now, done);
        common
            .timeline
            .lock()
            .push([now.duration_since(start).as_secs_f64(), rate]);
        if print && last_print.elapsed() >= Duration::from_secs(1) {
            last_print = now;
            eprint!(
                "\r[produce] {:5.1} s  {:>9} msg/s  {} ok  {} errors   ",
                now.duration_since(start).as_secs_f64(),
                thousands(rate),
                done,
                common.errors.load(Ordering::Relaxed)
            );
        }
        if now > common.deadline + Duration::from_secs(1) || STOP.load(Ordering::Relaxed) {
            break;
        }
    }
}

pub fn cmd_produce(a: ProduceArgs) -> i32 {
    crate::install_stop_handler();
    if (a.size as usize) < TAG_LEN {
        eprintln!("--size must be at least {TAG_LEN} bytes (the tag)");
        return 2;
    }
    let ep = match remote::endpoint(&a.target) {
        Ok(e) => e,
        Err(e) => {
            eprintln!("rmq-bench produce: {e}");
            return 1;
        }
    };
    let rt = if a.threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(a.threads)
            .enable_all()
            .build()
    };
    let rt = match rt {
        Ok(r) => r,
        Err(e) => {
            eprintln!("rmq-bench produce: runtime: {e}");
            return 1;
        }
    };
    let slave = ep.spawned.as_ref().and_then(|s| s.slave_addr.clone());
    let code = rt.block_on(produce(
        &a,
        &ep.namesrv,
        ep.broker_pid,
        ep.spawned.is_some(),
        slave.as_deref(),
    ));
    drop(rt);
    drop(ep); // stops spawned servers
    code
}

async fn produce(
    a: &ProduceArgs,
    namesrv: &str,
    broker_pid: Option<u32>,
    spawned: bool,
    slave: Option<&str>,
) -> i32 {
    let client = RemotingClient::default();
    let create = a.target.create_topic || spawned;
    let (route, how) =
        match remote::resolve_route(&client, namesrv, &a.target.topic, create, a.target.queues)
            .await
        {
            Ok(r) => r,
            Err(e) => {
                eprintln!("rmq-bench produce: {e}");
                return 1;
            }
        };
    client.close_all();
    if route.write.is_empty() {
        eprintln!(
            "rmq-bench produce: topic {} has no writable queue",
            a.target.topic
        );
        return 1;
    }
    // Group the write queues by broker; producer p uses broker p % brokers.
    let mut brokers: Vec<(String, Vec<i32>)> = Vec::new();
    for q in &route.write {
        match brokers.iter_mut().find(|(addr, _)| *addr == q.addr) {
            Some((_, v)) => v.push(q.queue_id),
            None => brokers.push((q.addr.clone(), vec![q.queue_id])),
        }
    }
    let run_id = remote::unix_ns() ^ ((std::process::id() as u64) << 48);
    let mode_s = format!("{:?}", a.mode).to_lowercase();
    let inflight = if a.mode == Mode::Sync {
        1
    } else {
        a.inflight.max(1)
    };
    let label = a
        .label
        .clone()
        .unwrap_or_else(|| format!("{mode_s} x{inflight} P={}", a.producers));
    if !a.quiet {
        eprintln!(
            "# produce {}: topic {} ({how}, {} write queues on {} broker(s)), run id {run_id}, {} producers x {} in flight, {} bodies, {} s{}",
            mode_s,
            a.target.topic,
            route.write.len(),
            brokers.len(),
            a.producers,
            inflight,
            size_label(a.size as usize),
            a.seconds,
            if a.warmup > 0.0 { format!(" after {} s warm-up", a.warmup) } else { String::new() }
        );
    }
    let idle = broker_pid.and_then(remote::proc_stats);
    // Flush counters only mean something for a single broker.
    let single_broker = match brokers.as_slice() {
        [(addr, _)] => Some(addr.clone()),
        _ => None,
    };
    let flush0 = match &single_broker {
        Some(addr) => remote::flush_counters(&client, addr).await,
        None => None,
    };
    let cpu0 = remote::self_cpu_s();
    let start = Instant::now();
    let measure_start = start + Duration::from_secs_f64(a.warmup.max(0.0));
    let common = Arc::new(Common {
        run_id,
        topic: a.target.topic.clone(),
        group: a.group.clone(),
        props: format!(
            "TAGS\u{1}bench\u{2}WAIT\u{1}{}",
            if a.no_wait { "false" } else { "true" }
        ),
        size: a.size as usize,
        mode: a.mode,
        inflight,
        timeout: Duration::from_secs_f64(a.timeout.max(0.1)),
        measure_start,
        deadline: measure_start + Duration::from_secs_f64(a.seconds.max(0.0)),
        done: AtomicU64::new(0),
        errors: AtomicU64::new(0),
        finished: AtomicBool::new(false),
        timeline: parking_lot::Mutex::new(Vec::new()),
    });
    let producers = a.producers.max(1);
    let mut tasks = Vec::new();
    for p in 0..producers {
        let (addr, queues) = &brokers[p % brokers.len()];
        let limit = match a.messages {
            Some(m) => m / producers as u64 + u64::from((p as u64) < m % producers as u64),
            None => u64::MAX,
        };
        let spec = ProducerSpec {
            id: p as u32,
            addr: addr.clone(),
            queues: queues.clone(),
            queue_nums: queues.len(),
            limit,
        };
        tasks.push(tokio::spawn(run_producer(spec, common.clone())));
    }
    let prog = {
        let c = common.clone();
        let print = !a.quiet;
        Some(std::thread::spawn(move || progress(&c, start, print)))
    };
    let mut reports = Vec::new();
    for t in tasks {
        match t.await {
            Ok(r) => reports.push(r),
            Err(e) => eprintln!("producer task failed: {e}"),
        }
    }
    let end = Instant::now();
    common.finished.store(true, Ordering::Relaxed);
    let client_cpu_s = remote::self_cpu_s() - cpu0;
    let after = broker_pid.and_then(remote::proc_stats);
    let flush1 = match &single_broker {
        Some(addr) => remote::flush_counters(&client, addr).await,
        None => None,
    };
    let slave = match (slave, brokers.first()) {
        (Some(s), Some((master, queues))) => {
            match slave_lag(&a.target.topic, master, s, queues).await {
                Ok(l) => Some(l),
                Err(e) => {
                    eprintln!("slave lag: {e}");
                    None
                }
            }
        }
        _ => None,
    };
    if let Some(h) = prog {
        let _ = h.join();
        if !a.quiet {
            eprintln!();
        }
    }
    let mut hist = stats::new_hist();
    let mut errors: BTreeMap<String, u64> = BTreeMap::new();
    let mut measured = 0;
    let mut last = measure_start;
    let mut first_error = None;
    for r in &reports {
        let _ = hist.add(&r.hist);
        for (k, v) in &r.errors {
            *errors.entry(k.clone()).or_default() += v;
        }
        measured += r.measured;
        if let Some(t) = r.last_done {
            last = last.max(t);
        }
        if first_error.is_none() {
            first_error = r.first_error.clone();
        }
    }
    let elapsed = last
        .saturating_duration_since(measure_start)
        .as_secs_f64()
        .max(1e-9);
    let msgs_per_sec = measured as f64 / elapsed;
    let broker = match (idle, after) {
        (Some(i), Some(af)) => Some(BrokerUse {
            cpu_s: af.cpu_s - i.cpu_s,
            cores: (af.cpu_s - i.cpu_s) / end.duration_since(start).as_secs_f64().max(1e-9),
            idle: i,
            after: af,
        }),
        _ => None,
    };
    let result = ProduceResult {
        label,
        mode: a.mode,
        size: a.size as usize,
        producers,
        inflight,
        wait: !a.no_wait,
        queues: route.write.len(),
        messages: measured,
        elapsed_s: elapsed,
        msgs_per_sec,
        mb_per_sec: msgs_per_sec * a.size as f64 / 1e6,
        latency: Latency::from_hist(&hist),
        curve: stats::curve(&hist),
        timeline: common.timeline.lock().clone(),
        sent_total: reports.iter().map(|r| r.sent).sum(),
        ok_total: reports.iter().map(|r| r.ok).sum(),
        errors,
        first_error,
        stopped_early: STOP.load(Ordering::SeqCst),
        client_cpu_s,
        broker,
        slave,
        flush: match (flush0, flush1) {
            (Some(f0), Some(f1)) => Some(remote::FlushCounters {
                flushes: f1.flushes.saturating_sub(f0.flushes),
                flush_us: f1.flush_us.saturating_sub(f0.flush_us),
            }),
            _ => None,
        },
    };
    println!("produce (latency = send → response of one request; MB/s = body bytes):");
    print!("{}", table(&[&result]));
    println!(
        "sent {} messages, {} stored-acknowledged, {} in doubt; client CPU {:.2} s ({:.2} cores)",
        result.sent_total,
        result.ok_total,
        reports.iter().map(|r| r.in_doubt.len()).sum::<usize>(),
        client_cpu_s,
        client_cpu_s / end.duration_since(start).as_secs_f64().max(1e-9)
    );
    if !result.errors.is_empty() {
        println!("errors by response code:");
        let mut t = Table::new(&["code", "count"]);
        for (k, v) in &result.errors {
            t.row(vec![k.clone(), v.to_string()]);
        }
        print!("{}", t.render());
        if let Some(e) = &result.first_error {
            println!("first error: {e}");
        }
    }
    if let Some(l) = &result.slave {
        println!(
            "slave: {} messages behind when sending stopped; caught up {:.0} ms later",
            l.behind_messages, l.caught_up_ms
        );
    }
    if let Some(b) = &result.broker {
        println!("{}", broker_line(b));
    }
    if let Some(f) = result.flush.filter(|f| f.flushes > 0) {
        println!(
            "broker commit log flushes (warm-up included): {}, {:.1} acknowledged sends per flush, mean flush {:.0} µs",
            f.flushes,
            result.ok_total as f64 / f.flushes as f64,
            f.flush_us as f64 / f.flushes as f64
        );
    }
    if result.stopped_early {
        println!("(interrupted: results above are partial)");
    }
    let interrupted = result.stopped_early;
    let ok = result.ok_total > 0;
    if let Some(p) = &a.plot {
        let s = [Series {
            name: result.label.clone(),
            group: format!("{:?}", a.mode),
            dashed: false,
            curve: result.curve.clone(),
        }];
        let svg = crate::output::svg_series(
            &s,
            &[],
            "rmq-bench produce: send → response latency by percentile",
            "latency of one send",
        );
        match std::fs::write(p, svg) {
            Ok(()) => eprintln!("# wrote {}", p.display()),
            Err(e) => eprintln!("cannot write {}: {e}", p.display()),
        }
        let tp = crate::output::throughput_path(p);
        let svg = crate::output::svg_timeline(
            &[(result.label.clone(), result.timeline.clone())],
            "rmq-bench produce: acknowledged sends/s over time (warm-up included)",
        );
        match std::fs::write(&tp, svg) {
            Ok(()) => eprintln!("# wrote {}", tp.display()),
            Err(e) => eprintln!("cannot write {}: {e}", tp.display()),
        }
    }
    let rep = ProduceReport {
        tool: "rmq-bench",
        subcommand: "produce",
        unix_time: crate::unix_time(),
        command: std::env::args().collect(),
        run_id,
        topic: a.target.topic.clone(),
        namesrv: namesrv.to_string(),
        route: how,
        write_queues: route.write.clone(),
        result,
        producer_reports: reports,
        interrupted,
    };
    if let Some(p) = &a.json {
        match serde_json::to_string_pretty(&rep) {
            Ok(text) => match std::fs::write(p, text) {
                Ok(()) => eprintln!("# wrote {}", p.display()),
                Err(e) => eprintln!("cannot write {}: {e}", p.display()),
            },
            Err(e) => eprintln!("cannot serialise: {e}"),
        }
    }
    if ok || interrupted {
        0
    } else {
        1
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use frontends::remoting::codes::request;

    #[test]
    fn encoder_matches_codec() {
        let mut enc = SendEncoder::new("PG", "T\"x", 8, "TAGS\u{1}a\u{2}WAIT\u{1}true", 100, false);
        let mut out = BytesMut::new();
        let tag = Tag {
            run_id: 1,
            producer: 2,
            seq: 3,
            sent_ns: 4,
        };
        enc.encode(&mut out, 5, 1_700_000_000_123, -7, tag);
        enc.encode(&mut out, 0, 1, 12345, tag);
        let codec = FrameCodec::default();
        let cmd = codec.decode(&mut out).unwrap().unwrap();
        assert_eq!(cmd.code, request::SEND_MESSAGE_V2);
        assert_eq!(cmd.opaque, -7);
        assert_eq!(cmd.flag, 0);
        assert_eq!(cmd.ext("a"), Some("PG"));
        assert_eq!(cmd.ext("b"), Some("T\"x"));
        assert_eq!(cmd.ext("d"), Some("8"));
        assert_eq!(cmd.ext("e"), Some("5"));
        assert_eq!(cmd.ext("g"), Some("1700000000123"));
        assert_eq!(cmd.ext("i"), Some("TAGS\u{1}a\u{2}WAIT\u{1}true"));
        assert_eq!(cmd.body.len(), 100);
        assert_eq!(remote::read_tag(&cmd.body), Some(tag));
        let cmd2 = codec.decode(&mut out).unwrap().unwrap();
        assert_eq!(cmd2.opaque, 12345);
        assert_eq!(cmd2.ext("e"), Some("0"));
        assert!(out.is_empty());
        let mut enc = SendEncoder::new("PG", "T", 1, "", 32, true);
        enc.encode(&mut out, 0, 1, 1, tag);
        assert!(codec.decode(&mut out).unwrap().unwrap().is_oneway());
    }

    #[test]
    fn quick_parse() {
        let h = br#"{"code":0,"extFields":{"msgId":"AB","queueId":"1"},"flag":1,"language":"JAVA","opaque":-42,"serializeTypeCurrentRPC":"JSON","version":409}"#;
        assert_eq!(quick_code_opaque(h), Some((0, -42)));
    }
}
