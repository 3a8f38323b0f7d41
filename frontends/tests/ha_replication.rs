//! Master/slave replication with real broker processes on loopback
//! (cluster.md §4–§6): SYNC_MASTER acknowledgements survive `kill -9` of the
//! master, slaves catch up after a restart or from an empty store, and a
//! SYNC_MASTER without a slave never answers SEND_OK.
//!
//! The brokers are the `rmq-broker` binary (built by cargo for this test),
//! registered with a name server running in the test; every child process
//! is killed when its guard drops, so also when an assertion fails.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use engine::record::{decode, Decoded};
use frontends::namesrv::NameServer;
use frontends::remoting::codes::{request, response};
use frontends::remoting::{RemotingClient, RemotingCommand};
use tokio::time::timeout;

const TOPIC: &str = "HaTopic";
const QUEUES: i32 = 4;
/// Small commit log files, so replication crosses file boundaries.
const FILE_SIZE: u64 = 1024 * 1024;
/// Commit log files large enough that a test's data fits in the first.
const BIG_FILE_SIZE: u64 = 16 * 1024 * 1024;
/// Bound on every wait.
const T: Duration = Duration::from_secs(30);

/// One `rmq-broker` child process; SIGKILLed when dropped.
struct BrokerProc {
    child: Option<Child>,
    addr: String,
    port: u16,
    store: PathBuf,
    log: PathBuf,
}

impl BrokerProc {
    /// Starts a broker on a fresh port with its store in `store` (kept
    /// across restarts) and waits for its ready banner.
    fn start(store: &Path, namesrv: &str, file_size: u64, extra: &[String]) -> BrokerProc {
        Self::start_on(store, namesrv, file_size, extra, common::free_port_pair())
    }

    /// [`BrokerProc::start`] on a given port (a restart on the same address).
    fn start_on(
        store: &Path,
        namesrv: &str,
        file_size: u64,
        extra: &[String],
        port: u16,
    ) -> BrokerProc {
        std::fs::create_dir_all(store).unwrap();
        let log = store.with_extension(format!("{port}.log"));
        let mut args = vec![
            "-n".to_string(),
            namesrv.to_string(),
            format!("listenPort={port}"),
            "brokerIP1=127.0.0.1".into(),
            "brokerName=ha-test".into(),
            format!("storePathRootDir={}", store.display()),
            format!("mappedFileSizeCommitLog={file_size}"),
            "mappedFileSizeConsumeQueue=60000".into(),
        ];
        args.extend(extra.iter().cloned());
        let mut child = Command::new(env!("CARGO_BIN_EXE_rmq-broker"))
            .args(&args)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(std::fs::File::create(&log).unwrap()))
            .spawn()
            .expect("start rmq-broker");
        let ready = common::process::ready_line(&mut child, "rmq-broker ready", T);
        let me = BrokerProc {
            child: Some(child),
            addr: format!("127.0.0.1:{port}"),
            port,
            store: store.to_path_buf(),
            log,
        };
        if ready.is_none() {
            panic!("broker did not start; log:\n{}", me.log_tail());
        }
        me
    }

    fn ha_addr(&self) -> String {
        format!("127.0.0.1:{}", self.port + 1)
    }

    /// The arguments of a slave `broker_id` of this master.
    fn slave_args(&self, broker_id: u32) -> Vec<String> {
        vec![
            "brokerRole=SLAVE".to_string(),
            format!("brokerId={broker_id}"),
            format!("haMasterAddress={}", self.ha_addr()),
        ]
    }

    fn log_tail(&self) -> String {
        let all = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = all.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    /// `kill -9`.
    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for BrokerProc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Pre-provisions the test topic (as an operator copies topics.json to
/// every broker of a group): a slave serves pulls only for topics it knows.
fn provision_topic(store: &Path) {
    let dir = store.join("config");
    std::fs::create_dir_all(&dir).unwrap();
    let json = format!(
        r#"{{"topicConfigTable":{{"{TOPIC}":{{"topicName":"{TOPIC}","readQueueNums":{QUEUES},"writeQueueNums":{QUEUES},"perm":6,"topicFilterType":"SINGLE_TAG","topicSysFlag":0,"order":false}}}},"dataVersion":{{"timestamp":1,"counter":1}}}}"#
    );
    std::fs::write(dir.join("topics.json"), json).unwrap();
}

fn body(i: usize) -> Vec<u8> {
    let mut b = format!("ha-{i:06}-").into_bytes();
    b.resize(200 + (i * 997) % 3000, b'a' + (i % 26) as u8);
    b
}

async fn call(client: &RemotingClient, addr: &str, req: RemotingCommand) -> RemotingCommand {
    timeout(T, client.invoke(addr, req, T))
        .await
        .expect("bounded")
        .unwrap_or_else(|e| panic!("request to {addr}: {e}"))
}

/// What a send answered: code and, when stored, (queue, queue offset).
async fn send(client: &RemotingClient, addr: &str, i: usize) -> (i32, i32, u64) {
    let req = common::send_v2(
        TOPIC,
        (i % QUEUES as usize) as i32,
        &body(i),
        "WAIT\u{1}true",
    );
    let r = call(client, addr, req).await;
    let q = r.ext("queueId").and_then(|v| v.parse().ok()).unwrap_or(-1);
    let off = r
        .ext("queueOffset")
        .and_then(|v| v.parse().ok())
        .unwrap_or(u64::MAX);
    (r.code, q, off)
}

/// Sends `range` with `concurrency` requests in flight; returns each
/// message's (code, queue, queue offset) by index.
async fn send_all(
    client: &RemotingClient,
    addr: &str,
    range: std::ops::Range<usize>,
    concurrency: usize,
) -> BTreeMap<usize, (i32, i32, u64)> {
    use futures_util::StreamExt;
    futures_util::stream::iter(range)
        .map(|i| async move { (i, send(client, addr, i).await) })
        .buffer_unordered(concurrency)
        .collect()
        .await
}

/// Every message of the topic on `addr`, by (queue, queue offset) → body.
async fn pull_all(client: &RemotingClient, addr: &str) -> BTreeMap<(i32, u64), Vec<u8>> {
    let mut out = BTreeMap::new();
    for q in 0..QUEUES {
        let mut offset = 0u64;
        loop {
            let req = common::pull_everything("HaCG", TOPIC, q, offset);
            let r = call(client, addr, req).await;
            if r.code != response::SUCCESS {
                assert_eq!(
                    r.code,
                    response::PULL_NOT_FOUND,
                    "pull {q}@{offset}: {:?}",
                    r.remark
                );
                break;
            }
            let mut at = 0;
            let mut n = 0;
            while at < r.body.len() {
                match decode(&r.body[at..], true) {
                    Decoded::Message(v) => {
                        out.insert((q, v.queue_offset as u64), v.body.to_vec());
                        at += v.total_size();
                        n += 1;
                    }
                    other => panic!("bad record in pull body: {other:?}"),
                }
            }
            let next: u64 = r.ext("nextBeginOffset").unwrap().parse().unwrap();
            if n == 0 || next <= offset {
                break;
            }
            offset = next;
        }
    }
    out
}

async fn max_offsets(client: &RemotingClient, addr: &str) -> Vec<u64> {
    let mut out = Vec::new();
    for q in 0..QUEUES {
        let req = RemotingCommand::request(request::GET_MAX_OFFSET)
            .with_ext("topic", TOPIC)
            .with_ext("queueId", q);
        let r = call(client, addr, req).await;
        assert_eq!(r.code, response::SUCCESS);
        out.push(r.ext("offset").unwrap().parse().unwrap());
    }
    out
}

/// Waits until the slave's queues are as long as the master's. The
/// master's are read again each round: its dispatch may still be a few
/// records behind its acknowledged sends when the wait starts.
async fn wait_caught_up(client: &RemotingClient, master: &str, slave: &BrokerProc) {
    let deadline = Instant::now() + T;
    loop {
        let want = max_offsets(client, master).await;
        let got = max_offsets(client, &slave.addr).await;
        if got == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "slave at {got:?}, master at {want:?}; slave log:\n{}",
            slave.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The commit log files of a store, name → bytes.
fn commit_log(store: &Path) -> BTreeMap<String, Vec<u8>> {
    let dir = store.join("commitlog");
    let mut out = BTreeMap::new();
    for e in std::fs::read_dir(&dir).unwrap() {
        let e = e.unwrap();
        let name = e.file_name().to_string_lossy().to_string();
        if name.len() == 20 {
            out.insert(name, std::fs::read(e.path()).unwrap());
        }
    }
    out
}

/// Asserts the slave's commit log equals the master's wherever the slave
/// has data, and returns the slave's end offset (first file start + data).
fn assert_log_prefix_identical(master: &Path, slave: &Path) -> u64 {
    let m = commit_log(master);
    let s = commit_log(slave);
    assert!(!s.is_empty(), "slave has no commit log");
    let mut end = 0;
    for (name, bytes) in &s {
        let theirs = m
            .get(name)
            .unwrap_or_else(|| panic!("slave file {name} not on the master"));
        let used = bytes.iter().rposition(|b| *b != 0).map_or(0, |p| p + 1);
        assert_eq!(
            &bytes[..used],
            &theirs[..used],
            "commit log file {name} differs"
        );
        if used > 0 {
            end = name.parse::<u64>().unwrap() + used as u64;
        }
    }
    end
}

async fn name_server() -> NameServer {
    NameServer::start("127.0.0.1:0").await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_master_acks_survive_master_kill() {
    let dir = tempfile::tempdir().unwrap();
    let ns = name_server().await;
    let ns_addr = ns.local_addr().to_string();
    let (mstore, sstore) = (dir.path().join("master"), dir.path().join("slave"));
    provision_topic(&mstore);
    provision_topic(&sstore);
    let mut master = BrokerProc::start(
        &mstore,
        &ns_addr,
        FILE_SIZE,
        // A generous slaveTimeout: on a loaded machine a stall of a few
        // seconds must not turn an acknowledgement into FLUSH_SLAVE_TIMEOUT.
        &["brokerRole=SYNC_MASTER".into(), "slaveTimeout=20000".into()],
    );
    let slave = BrokerProc::start(&sstore, &ns_addr, FILE_SIZE, &master.slave_args(1));
    let client = RemotingClient::default();
    // Until the slave has connected, sends answer SLAVE_NOT_AVAILABLE.
    acked_once_connected(&client, &master.addr, &slave, 1_000_000).await;
    const N: usize = 1500;
    let sent = send_all(&client, &master.addr, 0..N, 64).await;
    for (i, (code, _, _)) in &sent {
        assert_eq!(
            *code,
            response::SUCCESS,
            "message {i}; master log:\n{}\nslave log:\n{}",
            master.log_tail(),
            slave.log_tail()
        );
    }
    master.kill();

    // Every acknowledged message is on the slave, at the master's queue offset.
    let on_slave = pull_all(&client, &slave.addr).await;
    for (i, (_, q, off)) in &sent {
        assert_eq!(
            on_slave.get(&(*q, *off)),
            Some(&body(*i)),
            "message {i} ({q}@{off}) not on the slave"
        );
    }
    let end = assert_log_prefix_identical(&master.store, &slave.store);
    assert!(
        end > FILE_SIZE,
        "replication crossed a file boundary: {end}"
    );
    drop(slave);
    ns.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slaves_catch_up_after_restart_and_from_empty() {
    let dir = tempfile::tempdir().unwrap();
    let ns = name_server().await;
    let ns_addr = ns.local_addr().to_string();
    let (mstore, astore, bstore) = (
        dir.path().join("master"),
        dir.path().join("slave-a"),
        dir.path().join("slave-b"),
    );
    for s in [&mstore, &astore, &bstore] {
        provision_topic(s);
    }
    let master = BrokerProc::start(
        &mstore,
        &ns_addr,
        BIG_FILE_SIZE,
        &["brokerRole=ASYNC_MASTER".into()],
    );
    let mut a = BrokerProc::start(&astore, &ns_addr, BIG_FILE_SIZE, &master.slave_args(1));
    let client = RemotingClient::default();
    let first = send_all(&client, &master.addr, 0..400, 16).await;
    assert!(first.values().all(|(c, _, _)| *c == response::SUCCESS));
    wait_caught_up(&client, &master.addr, &a).await;

    // Slave A crashes; the master moves on; A restarts and catches up.
    a.kill();
    let second = send_all(&client, &master.addr, 400..800, 16).await;
    assert!(second.values().all(|(c, _, _)| *c == response::SUCCESS));
    let a = BrokerProc::start(&astore, &ns_addr, BIG_FILE_SIZE, &master.slave_args(1));
    wait_caught_up(&client, &master.addr, &a).await;

    // Slave B starts on an empty store while the master still has its first
    // file (B's first file is the master's last): it copies everything. B
    // has no haMasterAddress: it learns the master's HA address from the
    // name server's answer to its registration.
    let with_data = commit_log(&mstore)
        .values()
        .filter(|f| f.iter().any(|b| *b != 0))
        .count();
    assert_eq!(with_data, 1, "the master's data is within one file");
    let b = BrokerProc::start(
        &bstore,
        &ns_addr,
        BIG_FILE_SIZE,
        &["brokerRole=SLAVE".into(), "brokerId=2".into()],
    );
    wait_caught_up(&client, &master.addr, &b).await;

    let on_master = pull_all(&client, &master.addr).await;
    assert_eq!(on_master.len(), 800);
    for s in [&a, &b] {
        assert_eq!(pull_all(&client, &s.addr).await, on_master);
        assert_log_prefix_identical(&mstore, &s.store);
    }
    drop((a, b, master));
    ns.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_master_without_slave_never_acks() {
    let dir = tempfile::tempdir().unwrap();
    let env = common::start(dir.path(), &["brokerRole=SYNC_MASTER"]).await;
    for i in 0..10 {
        let r = env
            .call(common::send_v2("NoSlave", 0, &body(i), "WAIT\u{1}true"))
            .await;
        assert_eq!(r.code, response::SLAVE_NOT_AVAILABLE, "message {i}");
        // Stored anyway, with a full send response header (Java: SendStatus.SLAVE_NOT_AVAILABLE).
        assert_eq!(r.ext("queueOffset"), Some(i.to_string().as_str()));
        assert!(r.ext("msgId").is_some_and(|m| !m.is_empty()));
    }
    // WAIT=false is acknowledged at once, as in Java.
    let r = env
        .call(common::send_v2("NoSlave", 0, b"x", "WAIT\u{1}false"))
        .await;
    assert_eq!(r.code, response::SUCCESS);
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slave_refuses_sends() {
    let dir = tempfile::tempdir().unwrap();
    let env = common::start(
        dir.path(),
        &[
            "brokerRole=SLAVE",
            "brokerId=1",
            "haMasterAddress=127.0.0.1:1",
        ],
    )
    .await;
    let r = env
        .call(common::send_v2("OnSlave", 0, b"x", "WAIT\u{1}true"))
        .await;
    assert_eq!(r.code, response::SERVICE_NOT_AVAILABLE);
    assert!(r.remark.unwrap_or_default().contains("slave"));
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slave_started_empty_past_the_first_file_survives_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let ns = name_server().await;
    let ns_addr = ns.local_addr().to_string();
    let (mstore, sstore) = (dir.path().join("master"), dir.path().join("slave"));
    provision_topic(&mstore);
    provision_topic(&sstore);
    let master = BrokerProc::start(
        &mstore,
        &ns_addr,
        FILE_SIZE,
        &["brokerRole=ASYNC_MASTER".into()],
    );
    let client = RemotingClient::default();
    // The master's log reaches its fourth file before the slave exists.
    let first = send_all(&client, &master.addr, 0..2500, 32).await;
    assert!(first.values().all(|(c, _, _)| *c == response::SUCCESS));
    let files = commit_log(&mstore);
    let last_with_data = files
        .iter()
        .filter(|(_, f)| f.iter().any(|b| *b != 0))
        .map(|(n, _)| n.parse::<u64>().unwrap())
        .max()
        .unwrap();
    assert!(last_with_data >= 3 * FILE_SIZE, "{last_with_data}");

    // An empty slave starts at the master's last file, catches up, dies.
    let slave_args = master.slave_args(1);
    let mut slave = BrokerProc::start(&sstore, &ns_addr, FILE_SIZE, &slave_args);
    wait_caught_up(&client, &master.addr, &slave).await;
    slave.kill();

    // It restarts on what it holds and follows the master again.
    let second = send_all(&client, &master.addr, 2500..2600, 32).await;
    assert!(second.values().all(|(c, _, _)| *c == response::SUCCESS));
    let slave = BrokerProc::start(&sstore, &ns_addr, FILE_SIZE, &slave_args);
    wait_caught_up(&client, &master.addr, &slave).await;
    assert_log_prefix_identical(&mstore, &slave.store);
    // It serves what it holds, at the master's queue offsets.
    for (i, (_, q, off)) in second.iter().step_by(7) {
        let r = call(
            &client,
            &slave.addr,
            common::pull_everything("HaCG", TOPIC, *q, *off),
        )
        .await;
        assert_eq!(r.code, response::SUCCESS, "pull {q}@{off}: {:?}", r.remark);
        match decode(&r.body, true) {
            Decoded::Message(v) => {
                assert_eq!((v.queue_offset as u64, v.body), (*off, &body(*i)[..]))
            }
            other => panic!("bad record in pull body: {other:?}"),
        }
    }
    drop((slave, master));
    ns.shutdown().await;
}

/// Sends probes (indexes from `from`) to a SYNC_MASTER until one is
/// acknowledged: SLAVE_NOT_AVAILABLE until its slave has connected.
async fn acked_once_connected(
    client: &RemotingClient,
    master: &str,
    slave: &BrokerProc,
    from: usize,
) {
    let deadline = Instant::now() + T;
    let mut i = from;
    loop {
        let (code, _, _) = send(client, master, i).await;
        i += 1;
        if code == response::SUCCESS {
            return;
        }
        assert_eq!(code, response::SLAVE_NOT_AVAILABLE);
        assert!(
            Instant::now() < deadline,
            "slave never connected:\n{}",
            slave.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slave_follows_a_restarted_sync_master() {
    let dir = tempfile::tempdir().unwrap();
    let ns = name_server().await;
    let ns_addr = ns.local_addr().to_string();
    let (mstore, sstore) = (dir.path().join("master"), dir.path().join("slave"));
    provision_topic(&mstore);
    provision_topic(&sstore);
    let master_args = vec![
        "brokerRole=SYNC_MASTER".to_string(),
        "slaveTimeout=20000".into(),
    ];
    let mut master = BrokerProc::start(&mstore, &ns_addr, FILE_SIZE, &master_args);
    let slave = BrokerProc::start(&sstore, &ns_addr, FILE_SIZE, &master.slave_args(1));
    let client = RemotingClient::default();
    acked_once_connected(&client, &master.addr, &slave, 1_000_000).await;
    let first = send_all(&client, &master.addr, 0..500, 32).await;
    assert!(first.values().all(|(c, _, _)| *c == response::SUCCESS));

    // kill -9, restart on the same ports: the slave reconnects by itself.
    let port = master.port;
    master.kill();
    master = BrokerProc::start_on(&mstore, &ns_addr, FILE_SIZE, &master_args, port);
    acked_once_connected(&client, &master.addr, &slave, 2_000_000).await;
    let second = send_all(&client, &master.addr, 500..1000, 32).await;
    assert!(second.values().all(|(c, _, _)| *c == response::SUCCESS));
    master.kill();
    let on_slave = pull_all(&client, &slave.addr).await;
    for (i, (_, q, off)) in first.iter().chain(second.iter()) {
        assert_eq!(
            on_slave.get(&(*q, *off)),
            Some(&body(*i)),
            "message {i} not on the slave"
        );
    }
    assert_log_prefix_identical(&mstore, &sstore);
    drop(slave);
    ns.shutdown().await;
}
