//! What `produce` and `consume` share: talking to a name server and broker
//! over the remoting protocol (route lookup, topic creation), the tagged
//! message body, process statistics from /proc, and `--spawn-broker`
//! (rmq-namesrv + rmq-broker child processes on run-time ports).

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use clap::Args;
use frontends::remoting::codes::{request, response};
use frontends::remoting::{RemotingClient, RemotingCommand};
use serde::Serialize;

/// Bound on every administrative request (route, create, offsets).
pub const ADMIN_TIMEOUT: Duration = Duration::from_secs(5);

/// Options shared by `produce` and `consume`.
#[derive(Args, Clone, Debug)]
pub struct Target {
    /// Name server address (`host:port`); any RocketMQ 4.x name server.
    #[arg(long, required_unless_present = "spawn_broker")]
    pub namesrv: Option<String>,
    /// Topic to produce to / consume from.
    #[arg(long, default_value = "BenchTopic")]
    pub topic: String,
    /// Create the topic with UPDATE_AND_CREATE_TOPIC on every master of the
    /// cluster if the name server does not know it (otherwise rely on the
    /// broker's autoCreateTopicEnable through TBW102).
    #[arg(long)]
    pub create_topic: bool,
    /// Read and write queue count for --create-topic.
    #[arg(long, default_value_t = 8)]
    pub queues: u32,
    /// Start rmq-namesrv and rmq-broker (from --bin-dir) on free loopback
    /// ports with a fresh store, pass these `key=value` settings to the
    /// broker, and stop both at the end. Implies --create-topic.
    #[arg(long, num_args = 0.., value_name = "KEY=VALUE")]
    pub spawn_broker: Option<Vec<String>>,
    /// With --spawn-broker: also start a SLAVE of it (brokerId=1, its own
    /// store, following the master's HA port) with these `key=value`
    /// settings, and wait until the master reports it connected. Produce
    /// then reports how far behind the slave was when sending stopped.
    #[arg(long, num_args = 0.., value_name = "KEY=VALUE", requires = "spawn_broker")]
    pub spawn_slave: Option<Vec<String>>,
    /// Directory holding rmq-broker and rmq-namesrv (default: the directory
    /// of this executable, then its parent).
    #[arg(long)]
    pub bin_dir: Option<PathBuf>,
    /// Pid of an already running broker whose memory and CPU to report.
    #[arg(long)]
    pub broker_pid: Option<u32>,
}

/// One queue of the topic on one broker.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct QueueRef {
    pub broker_name: String,
    pub addr: String,
    pub queue_id: i32,
}

/// The parts of TopicRouteData we use.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Route {
    pub write: Vec<QueueRef>,
    pub read: Vec<QueueRef>,
}

fn err(msg: impl Into<String>) -> String {
    msg.into()
}

async fn call(
    client: &RemotingClient,
    addr: &str,
    req: RemotingCommand,
) -> Result<RemotingCommand, String> {
    let code = req.code;
    client
        .invoke(addr, req, ADMIN_TIMEOUT)
        .await
        .map_err(|e| format!("request {code} to {addr}: {e}"))
}

/// `name (code)`.
pub fn code_name(code: i32) -> String {
    match response::name(code) {
        Some(n) => format!("{n} ({code})"),
        None => format!("code {code}"),
    }
}

/// GET_ROUTEINFO_BY_TOPIC; `Ok(None)` when the name server does not know the topic.
pub async fn route(
    client: &RemotingClient,
    namesrv: &str,
    topic: &str,
) -> Result<Option<Route>, String> {
    let req = RemotingCommand::request(request::GET_ROUTEINFO_BY_TOPIC)
        .with_ext("topic", topic)
        .with_ext("acceptStandardJsonOnly", true);
    let r = call(client, namesrv, req).await?;
    if r.code == response::TOPIC_NOT_EXIST {
        return Ok(None);
    }
    if r.code != response::SUCCESS {
        return Err(format!(
            "route of {topic}: {} {}",
            code_name(r.code),
            r.remark.unwrap_or_default()
        ));
    }
    let v: serde_json::Value =
        serde_json::from_slice(&r.body).map_err(|e| format!("route JSON of {topic}: {e}"))?;
    let mut masters = BTreeMap::new();
    for b in v["brokerDatas"].as_array().into_iter().flatten() {
        let name = b["brokerName"].as_str().unwrap_or_default().to_string();
        if let Some(a) = b["brokerAddrs"]["0"].as_str() {
            masters.insert(name, a.to_string());
        }
    }
    let mut route = Route::default();
    let mut qds: Vec<&serde_json::Value> =
        v["queueDatas"].as_array().into_iter().flatten().collect();
    qds.sort_by_key(|q| q["brokerName"].as_str().unwrap_or_default().to_string());
    for q in qds {
        let name = q["brokerName"].as_str().unwrap_or_default();
        let Some(addr) = masters.get(name) else {
            continue;
        };
        let perm = q["perm"].as_i64().unwrap_or(6);
        let mk = |i| QueueRef {
            broker_name: name.to_string(),
            addr: addr.clone(),
            queue_id: i,
        };
        if perm & 2 != 0 {
            for i in 0..q["writeQueueNums"].as_i64().unwrap_or(0) as i32 {
                route.write.push(mk(i));
            }
        }
        if perm & 4 != 0 {
            for i in 0..q["readQueueNums"].as_i64().unwrap_or(0) as i32 {
                route.read.push(mk(i));
            }
        }
    }
    Ok(Some(route))
}

/// Master addresses of every broker the name server knows (GET_BROKER_CLUSTER_INFO).
pub async fn masters(client: &RemotingClient, namesrv: &str) -> Result<Vec<String>, String> {
    let r = call(
        client,
        namesrv,
        RemotingCommand::request(request::GET_BROKER_CLUSTER_INFO),
    )
    .await?;
    if r.code != response::SUCCESS {
        return Err(format!("cluster info: {}", code_name(r.code)));
    }
    // brokerAddrs keys may be unquoted integers (fastjson).
    let v = fastjson::parse(&r.body).map_err(|e| format!("cluster info JSON: {e}"))?;
    let mut out = Vec::new();
    if let Some(table) = v["brokerAddrTable"].as_object() {
        for b in table.values() {
            if let Some(a) = b["brokerAddrs"]["0"].as_str() {
                out.push(a.to_string());
            }
        }
    }
    out.sort();
    Ok(out)
}

/// The topic's route, creating the topic first if asked to and it is missing.
/// Without creation, a missing topic is routed like TBW102 (auto-create on
/// first send, `defaultTopicQueueNums` queues per broker).
pub async fn resolve_route(
    client: &RemotingClient,
    namesrv: &str,
    topic: &str,
    create: bool,
    queues: u32,
) -> Result<(Route, &'static str), String> {
    if let Some(r) = route(client, namesrv, topic).await? {
        if !r.write.is_empty() || !r.read.is_empty() {
            return Ok((r, "existing"));
        }
    }
    if create {
        let brokers = masters(client, namesrv).await?;
        if brokers.is_empty() {
            return Err("the name server knows no broker".into());
        }
        for b in &brokers {
            let req = RemotingCommand::request(request::UPDATE_AND_CREATE_TOPIC)
                .with_ext("topic", topic)
                .with_ext("defaultTopic", "TBW102")
                .with_ext("readQueueNums", queues)
                .with_ext("writeQueueNums", queues)
                .with_ext("perm", 6)
                .with_ext("topicFilterType", "SINGLE_TAG")
                .with_ext("topicSysFlag", 0)
                .with_ext("order", false);
            let r = call(client, b, req).await?;
            if r.code != response::SUCCESS {
                return Err(format!(
                    "create {topic} on {b}: {} {}",
                    code_name(r.code),
                    r.remark.unwrap_or_default()
                ));
            }
        }
        // The broker re-registers with the name server after a create.
        let deadline = Instant::now() + Duration::from_secs(35);
        loop {
            if let Some(r) = route(client, namesrv, topic).await? {
                if r.write.len() >= brokers.len() * queues as usize {
                    return Ok((r, "created"));
                }
            }
            if Instant::now() > deadline {
                return Err(format!("{topic} created but its route did not appear"));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    match route(client, namesrv, "TBW102").await? {
        Some(mut r) if !r.write.is_empty() => {
            let n = queues.min(4) as i32;
            r.write.retain(|q| q.queue_id < n);
            r.read = r.write.clone();
            Ok((r, "auto-create via TBW102"))
        }
        _ => Err(err(format!(
            "topic {topic} unknown to the name server and no TBW102 route (use --create-topic)"
        ))),
    }
}

/// GET_MAX_OFFSET of one queue.
pub async fn max_offset(client: &RemotingClient, q: &QueueRef, topic: &str) -> Result<i64, String> {
    let req = RemotingCommand::request(request::GET_MAX_OFFSET)
        .with_ext("topic", topic)
        .with_ext("queueId", q.queue_id);
    let r = call(client, &q.addr, req).await?;
    if r.code != response::SUCCESS {
        return Err(format!("max offset: {}", code_name(r.code)));
    }
    r.ext("offset")
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| "max offset: no offset field".to_string())
}

// ---------------------------------------------------------------------------
// Tagged bodies

/// Every bench body starts with this magic.
pub const BODY_MAGIC: &[u8; 4] = b"RMQB";
/// Bytes of the tag: magic, run id u64, producer u32, seq u64, send time u64.
pub const TAG_LEN: usize = 32;

/// What a bench body says about itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tag {
    pub run_id: u64,
    pub producer: u32,
    pub seq: u64,
    /// Wall-clock send time, ns since the Unix epoch.
    pub sent_ns: u64,
}

/// Writes the tag into the first [`TAG_LEN`] bytes of `body`.
pub fn write_tag(body: &mut [u8], t: Tag) {
    body[..4].copy_from_slice(BODY_MAGIC);
    body[4..12].copy_from_slice(&t.run_id.to_be_bytes());
    body[12..16].copy_from_slice(&t.producer.to_be_bytes());
    body[16..24].copy_from_slice(&t.seq.to_be_bytes());
    body[24..32].copy_from_slice(&t.sent_ns.to_be_bytes());
}

pub fn read_tag(body: &[u8]) -> Option<Tag> {
    if body.len() < TAG_LEN || &body[..4] != BODY_MAGIC {
        return None;
    }
    let u64_at = |i: usize| u64::from_be_bytes(body[i..i + 8].try_into().unwrap());
    Some(Tag {
        run_id: u64_at(4),
        producer: u32::from_be_bytes(body[12..16].try_into().unwrap()),
        seq: u64_at(16),
        sent_ns: u64_at(24),
    })
}

/// Wall-clock ns since the Unix epoch.
pub fn unix_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

// ---------------------------------------------------------------------------
// Process statistics

/// Memory and CPU of a process, from /proc.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ProcStats {
    pub pid: u32,
    /// Resident anonymous memory (heap, stacks): RSS minus file-backed pages.
    pub rss_anon_kib: u64,
    pub rss_file_kib: u64,
    pub rss_kib: u64,
    /// User + system CPU seconds since the process started.
    pub cpu_s: f64,
}

/// A broker's commit log flush counters (GET_BROKER_RUNTIME_INFO keys
/// `commitLogFlushCount`, `commitLogFlushTimeUs`; only our broker has them).
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct FlushCounters {
    pub flushes: u64,
    pub flush_us: u64,
}

pub async fn flush_counters(client: &RemotingClient, addr: &str) -> Option<FlushCounters> {
    let resp = call(
        client,
        addr,
        RemotingCommand::request(request::GET_BROKER_RUNTIME_INFO),
    )
    .await
    .ok()?;
    let v: serde_json::Value = serde_json::from_slice(&resp.body).ok()?;
    let num = |k: &str| v["table"][k].as_str()?.parse::<u64>().ok();
    Some(FlushCounters {
        flushes: num("commitLogFlushCount")?,
        flush_us: num("commitLogFlushTimeUs")?,
    })
}

pub fn proc_stats(pid: u32) -> Option<ProcStats> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kib = |key: &str| {
        status
            .lines()
            .find(|l| l.starts_with(key))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the parenthesised command name; utime/stime are 14/15.
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    let ticks = f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?;
    Some(ProcStats {
        pid,
        rss_anon_kib: kib("RssAnon:"),
        rss_file_kib: kib("RssFile:"),
        rss_kib: kib("VmRSS:"),
        cpu_s: ticks / hz,
    })
}

/// CPU seconds (user + system) of this process.
pub fn self_cpu_s() -> f64 {
    proc_stats(std::process::id()).map_or(0.0, |s| s.cpu_s)
}

// ---------------------------------------------------------------------------
// --spawn-broker

/// rmq-namesrv and rmq-broker started by us; stopped (SIGTERM, then SIGKILL)
/// when dropped, so also on error paths.
pub struct Spawned {
    pub namesrv_addr: String,
    pub broker_addr: String,
    pub broker_pid: u32,
    /// The slave's address (with --spawn-slave).
    pub slave_addr: Option<String>,
    namesrv: Option<Child>,
    broker: Option<Child>,
    slave: Option<Child>,
    pub store: tempfile::TempDir,
}

fn find_bin(dir: Option<&Path>, name: &str) -> Result<PathBuf, String> {
    let mut dirs = Vec::new();
    if let Some(d) = dir {
        dirs.push(d.to_path_buf());
    }
    if let Ok(exe) = std::env::current_exe() {
        if let Some(d) = exe.parent() {
            dirs.push(d.to_path_buf());
            if let Some(p) = d.parent() {
                dirs.push(p.to_path_buf());
            }
        }
    }
    dirs.iter()
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .ok_or_else(|| {
            format!(
                "{name} not found in {:?} (cargo build --release --bins, or --bin-dir)",
                dirs
            )
        })
}

/// A broker's free ports: P, P−2 (fast port) and P+1 (HA port); see
/// [`frontends::ports::free_port_pair`].
fn free_port_pair() -> Result<u16, String> {
    frontends::ports::free_port_pair().ok_or_else(|| "no free port triple for a broker".into())
}

fn start_child(bin: &Path, args: &[String], log: &Path) -> Result<Child, String> {
    use std::os::unix::process::CommandExt;
    let logf = std::fs::File::create(log).map_err(|e| format!("{}: {e}", log.display()))?;
    let mut cmd = Command::new(bin);
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::from(logf))
        // Own process group: a terminal Ctrl-C reaches only us, and we stop
        // the servers after reporting.
        .process_group(0);
    // SAFETY: prctl is async-signal-safe; the child dies with us.
    unsafe {
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
            Ok(())
        });
    }
    cmd.spawn()
        .map_err(|e| format!("cannot start {}: {e}", bin.display()))
}

/// Reads the child's stdout until a line containing `needle`; returns the
/// address after `listening on `. The rest of stdout is drained in a thread.
fn wait_banner(child: &mut Child, needle: &str, log: &Path) -> Result<String, String> {
    let out = child.stdout.take().ok_or("no stdout")?;
    let (tx, rx) = std::sync::mpsc::channel();
    let want = needle.to_string();
    std::thread::spawn(move || {
        let mut sent = false;
        for line in BufReader::new(out).lines() {
            let Ok(line) = line else { break };
            if !sent && line.contains(&want) {
                if let Some(i) = line.find("listening on ") {
                    let addr: String = line[i + 13..]
                        .chars()
                        .take_while(|c| !c.is_whitespace())
                        .collect();
                    let _ = tx.send(addr);
                    sent = true;
                }
            }
        }
    });
    match rx.recv_timeout(Duration::from_secs(60)) {
        Ok(a) => Ok(a),
        Err(_) => {
            let tail = std::fs::read_to_string(log).unwrap_or_default();
            let tail: Vec<&str> = tail.lines().rev().take(20).collect();
            let status = child.try_wait().ok().flatten();
            Err(format!(
                "no `{needle}` banner (exit status {status:?}); log tail:\n{}",
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            ))
        }
    }
}

impl Spawned {
    pub fn start(
        bin_dir: Option<&Path>,
        extra: &[String],
        slave_extra: Option<&[String]>,
    ) -> Result<Spawned, String> {
        let ns_bin = find_bin(bin_dir, "rmq-namesrv")?;
        let br_bin = find_bin(bin_dir, "rmq-broker")?;
        let store = tempfile::Builder::new()
            .prefix("rmq-bench-broker-")
            .tempdir_in(crate::default_dir())
            .map_err(|e| format!("temp store dir: {e}"))?;
        let mut me = Spawned {
            namesrv_addr: String::new(),
            broker_addr: String::new(),
            broker_pid: 0,
            slave_addr: None,
            namesrv: None,
            broker: None,
            slave: None,
            store,
        };
        let ns_log = me.store.path().join("namesrv.log");
        let kv = me.store.path().join("kvConfig.json");
        me.namesrv = Some(start_child(
            &ns_bin,
            &[
                "listenPort=0".into(),
                "listenAddr=127.0.0.1".into(),
                format!("kvConfigPath={}", kv.display()),
            ],
            &ns_log,
        )?);
        me.namesrv_addr = wait_banner(me.namesrv.as_mut().unwrap(), "listening on", &ns_log)?;
        let port = free_port_pair()?;
        let br_log = me.store.path().join("broker.log");
        let mut args = vec![
            "-n".to_string(),
            me.namesrv_addr.clone(),
            format!("listenPort={port}"),
            "brokerIP1=127.0.0.1".into(),
            "brokerName=bench-broker".into(),
            format!(
                "storePathRootDir={}",
                me.store.path().join("store").display()
            ),
        ];
        args.extend(extra.iter().cloned());
        me.broker = Some(start_child(&br_bin, &args, &br_log)?);
        me.broker_pid = me.broker.as_ref().unwrap().id();
        me.broker_addr = wait_banner(me.broker.as_mut().unwrap(), "rmq-broker ready", &br_log)?;
        eprintln!(
            "# spawned rmq-namesrv {} and rmq-broker {} (pid {}, store {}) {}",
            me.namesrv_addr,
            me.broker_addr,
            me.broker_pid,
            me.store.path().display(),
            extra.join(" ")
        );
        if let Some(slave_extra) = slave_extra {
            let slave_port = free_port_pair()?;
            let log = me.store.path().join("slave.log");
            let mut args = vec![
                "-n".to_string(),
                me.namesrv_addr.clone(),
                format!("listenPort={slave_port}"),
                "brokerIP1=127.0.0.1".into(),
                "brokerName=bench-broker".into(),
                "brokerRole=SLAVE".into(),
                "brokerId=1".into(),
                format!("haMasterAddress=127.0.0.1:{}", port + 1),
                format!(
                    "storePathRootDir={}",
                    me.store.path().join("slave-store").display()
                ),
            ];
            args.extend(slave_extra.iter().cloned());
            me.slave = Some(start_child(&br_bin, &args, &log)?);
            let addr = wait_banner(me.slave.as_mut().unwrap(), "rmq-broker ready", &log)?;
            // SYNC_MASTER answers SLAVE_NOT_AVAILABLE until the slave is in.
            let deadline = Instant::now() + Duration::from_secs(30);
            while !std::fs::read_to_string(&br_log)
                .unwrap_or_default()
                .contains("slave connected")
            {
                if Instant::now() > deadline {
                    return Err("the master never reported its slave connected".into());
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            eprintln!(
                "# spawned slave rmq-broker {addr} (pid {}) {}",
                me.slave.as_ref().map_or(0, |c| c.id()),
                slave_extra.join(" ")
            );
            me.slave_addr = Some(addr);
        }
        Ok(me)
    }

    fn stop_child(c: &mut Child, what: &str) {
        // SAFETY: signalling a child we started, by its pid.
        unsafe {
            libc::kill(c.id() as i32, libc::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            match c.try_wait() {
                Ok(Some(s)) => {
                    if !s.success() {
                        eprintln!("# {what} exited with {s}");
                    }
                    return;
                }
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20))
                }
                _ => {
                    eprintln!("# {what} did not stop within 15 s: killing it");
                    let _ = c.kill();
                    let _ = c.wait();
                    return;
                }
            }
        }
    }
}

impl Drop for Spawned {
    fn drop(&mut self) {
        if let Some(mut s) = self.slave.take() {
            Self::stop_child(&mut s, "slave rmq-broker");
        }
        if let Some(mut b) = self.broker.take() {
            Self::stop_child(&mut b, "rmq-broker");
        }
        if let Some(mut n) = self.namesrv.take() {
            Self::stop_child(&mut n, "rmq-namesrv");
        }
    }
}

/// Sum of the max offsets of `queues` of `topic` on `addr` (GET_MAX_OFFSET).
pub async fn queue_total(
    client: &RemotingClient,
    addr: &str,
    topic: &str,
    queues: &[i32],
) -> Result<u64, String> {
    let mut total = 0;
    for q in queues {
        let req = RemotingCommand::request(request::GET_MAX_OFFSET)
            .with_ext("topic", topic)
            .with_ext("queueId", *q);
        let r = call(client, addr, req).await?;
        if r.code != response::SUCCESS {
            return Err(format!("max offset of {topic}/{q}: {}", code_name(r.code)));
        }
        total += r
            .ext("offset")
            .and_then(|v| v.parse::<u64>().ok())
            .ok_or("max offset: no offset")?;
    }
    Ok(total)
}

/// Where to connect: the given name server, or one we spawn.
pub struct Endpoint {
    pub namesrv: String,
    pub spawned: Option<Spawned>,
    pub broker_pid: Option<u32>,
}

pub fn endpoint(t: &Target) -> Result<Endpoint, String> {
    match &t.spawn_broker {
        Some(extra) => {
            let s = Spawned::start(t.bin_dir.as_deref(), extra, t.spawn_slave.as_deref())?;
            Ok(Endpoint {
                namesrv: s.namesrv_addr.clone(),
                broker_pid: Some(s.broker_pid),
                spawned: Some(s),
            })
        }
        None => Ok(Endpoint {
            namesrv: t
                .namesrv
                .clone()
                .ok_or("--namesrv or --spawn-broker is required")?,
            spawned: None,
            broker_pid: t.broker_pid,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tag_round_trip() {
        let mut b = vec![0u8; 64];
        let t = Tag {
            run_id: 7,
            producer: 3,
            seq: 1 << 40,
            sent_ns: 123,
        };
        write_tag(&mut b, t);
        assert_eq!(read_tag(&b), Some(t));
        assert_eq!(read_tag(&b[..31]), None);
    }
}
