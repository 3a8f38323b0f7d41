//! Clusters of real processes on loopback (cluster.md §1–3, §7): the
//! `rmq-namesrv` and `rmq-broker` binaries started with the `conf/2m-*`
//! layout files, ports chosen at run time, every wait bounded, every child
//! killed when its guard drops (also when an assertion fails).

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use frontends::remoting::codes::{request, response};
use frontends::remoting::{RemotingClient, RemotingCommand};
use serde_json::Value;

/// Bound of every single wait.
const WAIT: Duration = Duration::from_secs(30);
const RPC: Duration = Duration::from_secs(5);

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

/// A child process killed (SIGKILL) and reaped when dropped. Its stderr
/// goes to `log`, whose tail is printed if the test is failing.
struct Proc {
    name: String,
    child: Option<Child>,
    log: PathBuf,
}

impl Proc {
    /// Starts `bin args…` and waits (bounded) for a stdout line containing
    /// `listening on 127.0.0.1:`; returns the guard and that line.
    fn start(name: &str, bin: &str, args: &[String], log: PathBuf) -> (Proc, String) {
        let err = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .expect("log file");
        let mut child = Command::new(bin)
            .args(args)
            .stdout(Stdio::piped())
            .stderr(err)
            .stdin(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {bin}: {e}"));
        let ready = common::process::ready_line(&mut child, "listening on 127.0.0.1:", WAIT);
        let mut proc = Proc {
            name: name.to_string(),
            child: Some(child),
            log,
        };
        match ready {
            Some(line) => (proc, line),
            None => {
                proc.kill9();
                panic!("{name} not ready within {WAIT:?}:\n{}", proc.tail());
            }
        }
    }

    fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM and a bounded wait for a clean exit.
    fn stop(&mut self) {
        let Some(mut c) = self.child.take() else {
            return;
        };
        // SAFETY: kill(2) on our own child's pid.
        unsafe { kill(c.id() as i32, 15) };
        let deadline = Instant::now() + WAIT;
        loop {
            match c.try_wait() {
                Ok(Some(status)) => {
                    assert!(status.success(), "{} exited with {status}", self.name);
                    return;
                }
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20))
                }
                _ => {
                    let _ = c.kill();
                    let _ = c.wait();
                    panic!("{} did not stop on SIGTERM:\n{}", self.name, self.tail());
                }
            }
        }
    }

    fn tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if std::thread::panicking() && self.child.is_some() {
            eprintln!("---- {} log tail ----\n{}", self.name, self.tail());
        }
        self.kill9();
    }
}

extern "C" {
    fn kill(pid: i32, sig: i32) -> i32;
}

fn port_of(line: &str) -> u16 {
    let rest = line
        .split("listening on 127.0.0.1:")
        .nth(1)
        .expect("address in banner");
    rest.chars()
        .take_while(char::is_ascii_digit)
        .collect::<String>()
        .parse()
        .expect("port")
}

/// A name server on a run-time port.
fn start_namesrv(dir: &Path, name: &str) -> (Proc, String) {
    start_namesrv_on(dir, name, 0)
}

/// A name server on `port` (0: any free port).
fn start_namesrv_on(dir: &Path, name: &str, port: u16) -> (Proc, String) {
    let args = vec![
        format!("listenPort={port}"),
        "listenAddr=127.0.0.1".to_string(),
        format!("kvConfigPath={}", dir.join(name).join("kv.json").display()),
    ];
    let (p, line) = Proc::start(
        name,
        env!("CARGO_BIN_EXE_rmq-namesrv"),
        &args,
        dir.join(format!("{name}.log")),
    );
    let addr = format!("127.0.0.1:{}", port_of(&line));
    (p, addr)
}

/// One broker of a `conf/<layout>/` file, moved to run-time ports and a
/// store under `dir`; the layout's other keys are used as written.
struct BrokerSpec {
    layout: &'static str,
    file: &'static str,
    port: u16,
    store: PathBuf,
    namesrv: String,
    extra: Vec<String>,
}

impl BrokerSpec {
    fn new(dir: &Path, layout: &'static str, file: &'static str, namesrv: &str) -> Self {
        BrokerSpec {
            layout,
            file,
            port: common::free_port_pair(),
            store: dir.join(file),
            namesrv: namesrv.to_string(),
            extra: Vec::new(),
        }
    }

    fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn start(&self, dir: &Path) -> Proc {
        let conf = repo_root()
            .join("conf")
            .join(self.layout)
            .join(format!("{}.properties", self.file));
        let mut args = vec![
            "-c".to_string(),
            conf.display().to_string(),
            "-n".to_string(),
            self.namesrv.clone(),
            format!("listenPort={}", self.port),
            format!("storePathRootDir={}", self.store.display()),
            "mappedFileSizeCommitLog=16777216".to_string(),
            "mappedFileSizeConsumeQueue=60000".to_string(),
        ];
        args.extend(self.extra.iter().cloned());
        let (p, line) = Proc::start(
            self.file,
            env!("CARGO_BIN_EXE_rmq-broker"),
            &args,
            dir.join(format!("{}.log", self.file)),
        );
        assert_eq!(port_of(&line), self.port, "{line}");
        p
    }
}

async fn call(client: &RemotingClient, addr: &str, req: RemotingCommand) -> RemotingCommand {
    match tokio::time::timeout(RPC * 2, client.invoke(addr, req, RPC)).await {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => panic!("request to {addr}: {e}"),
        Err(_) => panic!("request to {addr} timed out"),
    }
}

/// The route of `topic` on one name server: brokerName → (brokerId → addr)
/// of the brokers that hold queues of the topic; empty if there is none.
async fn route(
    client: &RemotingClient,
    namesrv: &str,
    topic: &str,
) -> BTreeMap<String, BTreeMap<i64, String>> {
    let req = RemotingCommand::request(request::GET_ROUTEINFO_BY_TOPIC).with_ext("topic", topic);
    let resp = call(client, namesrv, req).await;
    let mut out = BTreeMap::new();
    if resp.code != response::SUCCESS {
        assert_eq!(resp.code, response::TOPIC_NOT_EXIST, "{:?}", resp.remark);
        return out;
    }
    let v = fastjson::parse(&resp.body).expect("route JSON");
    let names: Vec<String> = v["queueDatas"]
        .as_array()
        .expect("queueDatas")
        .iter()
        .map(|q| q["brokerName"].as_str().expect("brokerName").to_string())
        .collect();
    for bd in v["brokerDatas"].as_array().expect("brokerDatas") {
        let name = bd["brokerName"].as_str().expect("brokerName").to_string();
        if !names.contains(&name) {
            continue;
        }
        let mut addrs = BTreeMap::new();
        if let Some(Value::Object(m)) = bd.get("brokerAddrs") {
            for (id, a) in m {
                addrs.insert(
                    id.trim().parse().expect("broker id"),
                    a.as_str().expect("addr").to_string(),
                );
            }
        }
        out.insert(name, addrs);
    }
    out
}

/// Polls `check` every 100 ms until it holds; panics with `what` after `WAIT`.
async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + WAIT;
    while !check().await {
        assert!(
            Instant::now() < deadline,
            "timed out after {WAIT:?}: {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn masters(r: &BTreeMap<String, BTreeMap<i64, String>>) -> BTreeMap<String, String> {
    r.iter()
        .filter_map(|(n, ids)| ids.get(&0).map(|a| (n.clone(), a.clone())))
        .collect()
}

fn create_topic(topic: &str, queues: i32) -> RemotingCommand {
    RemotingCommand::request(request::UPDATE_AND_CREATE_TOPIC)
        .with_ext("topic", topic)
        .with_ext("defaultTopic", "TBW102")
        .with_ext("readQueueNums", queues)
        .with_ext("writeQueueNums", queues)
        .with_ext("perm", 6)
        .with_ext("topicFilterType", "SINGLE_TAG")
        .with_ext("topicSysFlag", 0)
        .with_ext("order", false)
}

/// Sends `n` messages the way a producer does: round robin over the
/// masters of the topic's route on `namesrv`. Returns successes per broker
/// address.
async fn send_round_robin(
    client: &RemotingClient,
    namesrv: &str,
    topic: &str,
    n: usize,
) -> BTreeMap<String, usize> {
    let r = masters(&route(client, namesrv, topic).await);
    assert!(!r.is_empty(), "no master serves {topic}");
    let addrs: Vec<&String> = r.values().collect();
    let mut ok = BTreeMap::new();
    for i in 0..n {
        let addr = addrs[i % addrs.len()];
        let body = format!("m{i}");
        let resp = call(
            client,
            addr,
            common::send_v2(topic, (i / addrs.len()) as i32 % 4, body.as_bytes(), ""),
        )
        .await;
        assert_eq!(
            resp.code,
            response::SUCCESS,
            "send to {addr}: {:?}",
            resp.remark
        );
        *ok.entry(addr.clone()).or_insert(0) += 1;
    }
    ok
}

/// conf/2m-noslave with two name servers: a topic on both masters is routed
/// to both by both name servers; a kill -9'd master leaves the routes once
/// its connections close and producers carry on with the other; restarted,
/// it rejoins; a clean stop unregisters at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_masters_two_namesrvs_survive_a_kill9() {
    let dir = tempfile::tempdir().unwrap();
    let (_ns1, ns1) = start_namesrv(dir.path(), "namesrv-1");
    let (_ns2, ns2) = start_namesrv(dir.path(), "namesrv-2");
    let both = format!("{ns1};{ns2}");
    let a = BrokerSpec::new(dir.path(), "2m-noslave", "broker-a", &both);
    let b = BrokerSpec::new(dir.path(), "2m-noslave", "broker-b", &both);
    let mut pa = a.start(dir.path());
    let mut pb = b.start(dir.path());
    let client = RemotingClient::default();

    // A topic created on both masters is routed to both, by both name servers.
    for addr in [a.addr(), b.addr()] {
        let resp = call(&client, &addr, create_topic("ClusterTopic", 4)).await;
        assert_eq!(resp.code, response::SUCCESS, "{:?}", resp.remark);
    }
    let expected: BTreeMap<String, String> = [
        ("broker-a".to_string(), a.addr()),
        ("broker-b".to_string(), b.addr()),
    ]
    .into();
    for ns in [&ns1, &ns2] {
        assert_eq!(masters(&route(&client, ns, "ClusterTopic").await), expected);
    }
    let sent = send_round_robin(&client, &ns1, "ClusterTopic", 20).await;
    assert_eq!(sent.get(&a.addr()), Some(&10));
    assert_eq!(sent.get(&b.addr()), Some(&10));

    // kill -9 broker-a: its registration connections close, both name
    // servers drop it (well before the 120 s silence expiry).
    pa.kill9();
    let started = Instant::now();
    for ns in [&ns1, &ns2] {
        eventually("broker-a leaves the route", || async {
            masters(&route(&client, ns, "ClusterTopic").await).len() == 1
        })
        .await;
        let r = masters(&route(&client, ns, "ClusterTopic").await);
        assert_eq!(r.get("broker-b"), Some(&b.addr()));
    }
    assert!(started.elapsed() < Duration::from_secs(20));
    // A client that knows only the second name server keeps sending.
    let sent = send_round_robin(&client, &ns2, "ClusterTopic", 10).await;
    assert_eq!(sent.get(&b.addr()), Some(&10));
    assert_eq!(sent.len(), 1);

    // Restarted on its store, broker-a rejoins (its topic came from topics.json).
    let _pa = a.start(dir.path());
    for ns in [&ns1, &ns2] {
        eventually("broker-a rejoins the route", || async {
            masters(&route(&client, ns, "ClusterTopic").await) == expected
        })
        .await;
    }
    let sent = send_round_robin(&client, &ns1, "ClusterTopic", 4).await;
    assert_eq!(sent.len(), 2);

    // A clean stop unregisters from both name servers right away.
    pb.stop();
    for ns in [&ns1, &ns2] {
        let r = masters(&route(&client, ns, "ClusterTopic").await);
        assert_eq!(r.keys().collect::<Vec<_>>(), ["broker-a"], "{ns}");
    }
    client.close_all();
}

/// Name servers keep nothing but KV config: one that restarts is refilled
/// by the brokers' periodic registration (every registerNameServerPeriod,
/// at least 10 s).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_namesrv_is_refilled_by_periodic_registration() {
    let dir = tempfile::tempdir().unwrap();
    // Restarted on the same port below: one outside the ephemeral range.
    let ns_port = common::free_port();
    let (mut pns, ns) = start_namesrv_on(dir.path(), "namesrv", ns_port);
    let mut a = BrokerSpec::new(dir.path(), "2m-noslave", "broker-a", &ns);
    a.extra.push("registerNameServerPeriod=10000".to_string());
    let _pa = a.start(dir.path());
    let client = RemotingClient::default();
    let resp = call(&client, &a.addr(), create_topic("Refill", 2)).await;
    assert_eq!(resp.code, response::SUCCESS);
    assert_eq!(
        masters(&route(&client, &ns, "Refill").await).get("broker-a"),
        Some(&a.addr())
    );

    pns.kill9();
    let (_pns, ns_again) = start_namesrv_on(dir.path(), "namesrv-restarted", ns_port);
    assert_eq!(ns_again, ns);
    assert!(route(&client, &ns, "Refill").await.is_empty());
    let t0 = Instant::now();
    eventually("broker-a registers again", || async {
        masters(&route(&client, &ns, "Refill").await).get("broker-a") == Some(&a.addr())
    })
    .await;
    assert!(t0.elapsed() < Duration::from_secs(15), "{:?}", t0.elapsed());
    client.close_all();
}

fn update_offset(group: &str, topic: &str, queue: i32, offset: i64) -> RemotingCommand {
    RemotingCommand::request(request::UPDATE_CONSUMER_OFFSET)
        .with_ext("consumerGroup", group)
        .with_ext("topic", topic)
        .with_ext("queueId", queue)
        .with_ext("commitOffset", offset)
}

fn query_offset(group: &str, topic: &str, queue: i32) -> RemotingCommand {
    RemotingCommand::request(request::QUERY_CONSUMER_OFFSET)
        .with_ext("consumerGroup", group)
        .with_ext("topic", topic)
        .with_ext("queueId", queue)
}

/// [`common::pull_everything`] that also commits offset 7 (COMMIT_OFFSET),
/// which a slave must not take as the group's offset.
fn pull(group: &str, topic: &str, queue: i32, offset: i64) -> RemotingCommand {
    common::pull_everything(group, topic, queue, offset)
        // COMMIT_OFFSET | SUBSCRIPTION, no SUSPEND: answer at once.
        .with_ext("sysFlag", 0x1 | 0x4)
        .with_ext("commitOffset", 7)
}

/// conf/2m-2s-async broker-a + broker-a-s (metadata only, no commit-log
/// replication): the slave learns its master from the name server, copies
/// topics, consumer offsets, delay offsets and subscription groups into its
/// own config files, refuses sends, serves pulls with a slave's offset
/// rules, and stays in the route when the master dies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slave_copies_master_metadata_and_serves_reads() {
    let dir = tempfile::tempdir().unwrap();
    let (_ns, ns) = start_namesrv(dir.path(), "namesrv");
    let mut master = BrokerSpec::new(dir.path(), "2m-2s-async", "broker-a", &ns);
    master.extra.push("slaveReadEnable=true".to_string());
    let slave = BrokerSpec::new(dir.path(), "2m-2s-async", "broker-a-s", &ns);
    let mut pm = master.start(dir.path());
    let client = RemotingClient::default();
    eventually("master registered", || async {
        !route(&client, &ns, "TBW102").await.is_empty()
    })
    .await;
    let _ps = slave.start(dir.path());

    // Metadata created on the master after the slave started.
    let resp = call(&client, &master.addr(), create_topic("SyncTopic", 2)).await;
    assert_eq!(resp.code, response::SUCCESS);
    let resp = call(
        &client,
        &master.addr(),
        update_offset("SyncGroup", "SyncTopic", 1, 42),
    )
    .await;
    assert_eq!(resp.code, response::SUCCESS);
    let group = serde_json::json!({
        "groupName": "ReadFromSlaveGroup", "consumeEnable": true, "consumeFromMinEnable": true,
        "consumeBroadcastEnable": true, "retryQueueNums": 1, "retryMaxTimes": 16,
        "brokerId": 1, "whichBrokerWhenConsumeSlowly": 1, "notifyConsumerIdsChangedEnable": true,
    });
    let resp = call(
        &client,
        &master.addr(),
        RemotingCommand::request(request::UPDATE_AND_CREATE_SUBSCRIPTIONGROUP)
            .with_body(group.to_string()),
    )
    .await;
    assert_eq!(resp.code, response::SUCCESS);

    // The route lists both members of broker-a.
    let r = route(&client, &ns, "SyncTopic").await;
    assert_eq!(
        r.get("broker-a"),
        Some(&[(0, master.addr()), (1, slave.addr())].into())
    );

    // Within a couple of sync periods (10 s) the slave has all of it.
    eventually("topic synced to the slave", || async {
        let resp = call(
            &client,
            &slave.addr(),
            RemotingCommand::request(request::GET_ALL_TOPIC_CONFIG),
        )
        .await;
        let v = fastjson::parse(&resp.body).unwrap_or_default();
        v["topicConfigTable"].get("SyncTopic").is_some()
    })
    .await;
    eventually("offset synced to the slave", || async {
        let resp = call(
            &client,
            &slave.addr(),
            query_offset("SyncGroup", "SyncTopic", 1),
        )
        .await;
        resp.code == response::SUCCESS && resp.ext("offset") == Some("42")
    })
    .await;
    eventually("subscription group synced to the slave", || async {
        let resp = call(
            &client,
            &slave.addr(),
            RemotingCommand::request(request::GET_ALL_SUBSCRIPTIONGROUP_CONFIG),
        )
        .await;
        let v = fastjson::parse(&resp.body).unwrap_or_default();
        v["subscriptionGroupTable"]["ReadFromSlaveGroup"]["brokerId"].as_i64() == Some(1)
    })
    .await;
    // ... persisted in the slave's own config files.
    let config = slave.store.join("config");
    let topics = std::fs::read_to_string(config.join("topics.json")).unwrap();
    assert!(topics.contains("SyncTopic"), "{topics}");
    let offsets = std::fs::read_to_string(config.join("consumerOffset.json")).unwrap();
    assert!(offsets.contains("SyncTopic@SyncGroup"), "{offsets}");
    let groups = std::fs::read_to_string(config.join("subscriptionGroup.json")).unwrap();
    assert!(groups.contains("ReadFromSlaveGroup"), "{groups}");
    let delay = std::fs::read_to_string(config.join("delayOffset.json")).unwrap();
    assert!(delay.contains("offsetTable"), "{delay}");
    // The slave's topic table carries the master's DataVersion.
    let dv = |addr: String| {
        let client = &client;
        async move {
            let resp = call(
                client,
                &addr,
                RemotingCommand::request(request::GET_ALL_TOPIC_CONFIG),
            )
            .await;
            fastjson::parse(&resp.body).unwrap_or_default()["dataVersion"].clone()
        }
    };
    assert_eq!(dv(master.addr()).await, dv(slave.addr()).await);

    // The slave refuses writes.
    let resp = call(
        &client,
        &slave.addr(),
        common::send_v2("SyncTopic", 0, b"x", ""),
    )
    .await;
    assert_eq!(
        resp.code,
        response::SERVICE_NOT_AVAILABLE,
        "{:?}",
        resp.remark
    );
    let resp = call(&client, &slave.addr(), create_topic("SlaveTopic", 1)).await;
    assert_eq!(resp.code, response::SYSTEM_ERROR);
    let resp = call(
        &client,
        &slave.addr(),
        RemotingCommand::request(request::UPDATE_AND_CREATE_SUBSCRIPTIONGROUP)
            .with_body(r#"{"groupName":"SlaveGroup"}"#),
    )
    .await;
    assert_eq!(resp.code, response::SYSTEM_ERROR);

    // The master suggests the group's broker (1) when slave reading is on.
    let resp = call(
        &client,
        &master.addr(),
        pull("ReadFromSlaveGroup", "SyncTopic", 0, 0),
    )
    .await;
    assert_eq!(resp.code, response::PULL_NOT_FOUND, "{:?}", resp.remark);
    assert_eq!(resp.ext("suggestWhichBrokerId"), Some("1"));

    // The slave serves pulls; it neither corrects offsets nor stores the
    // COMMIT_OFFSET of a pull (its offsets come from the master).
    let resp = call(&client, &slave.addr(), pull("SyncGroup", "SyncTopic", 0, 5)).await;
    assert_eq!(
        resp.code,
        response::PULL_RETRY_IMMEDIATELY,
        "{:?}",
        resp.remark
    );
    assert_eq!(resp.ext("nextBeginOffset"), Some("5"));
    assert_eq!(resp.ext("suggestWhichBrokerId"), Some("0"));
    let resp = call(
        &client,
        &slave.addr(),
        query_offset("SyncGroup", "SyncTopic", 0),
    )
    .await;
    assert_ne!(
        resp.ext("offset"),
        Some("7"),
        "a slave stored a pull's commit offset"
    );

    // The master dies: the topic stays routed, to the slave only.
    pm.kill9();
    eventually("route keeps only the slave", || async {
        route(&client, &ns, "SyncTopic").await.get("broker-a") == Some(&[(1, slave.addr())].into())
    })
    .await;
    let resp = call(&client, &slave.addr(), pull("SyncGroup", "SyncTopic", 1, 0)).await;
    assert_eq!(resp.code, response::PULL_NOT_FOUND, "{:?}", resp.remark);
    client.close_all();
}

/// suggestWhichBrokerId (cluster.md §7.1), on an in-process master: with
/// `accessMessageInMemoryMaxRatio=0` every read behind the head counts as
/// "lagging", so the rule's three rows can be seen with a few messages.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn master_suggests_the_slave_to_lagging_consumers_only_with_slave_read() {
    async fn suggestion(extra: &[&str]) -> (String, String) {
        let dir = tempfile::tempdir().unwrap();
        let env = common::start(dir.path(), extra).await;
        for i in 0..3 {
            let resp = env
                .call(common::send_v2("Lag", 0, format!("m{i}").as_bytes(), ""))
                .await;
            assert_eq!(resp.code, response::SUCCESS, "{:?}", resp.remark);
        }
        let mut req = pull("LagGroup", "Lag", 0, 0);
        req.ext_fields.insert("maxMsgNums", "1");
        // The consume queue is filled right after the append; bounded retry.
        let deadline = Instant::now() + WAIT;
        let resp = loop {
            let resp = env.call(req.clone()).await;
            if resp.code == response::SUCCESS || Instant::now() > deadline {
                break resp;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        assert_eq!(resp.code, response::SUCCESS, "{:?}", resp.remark);
        let first = resp.ext("suggestWhichBrokerId").unwrap_or("").to_string();
        // Reading the last message (nothing behind the head but itself).
        req.ext_fields.insert("queueOffset", "2");
        let resp = env.call(req).await;
        assert_eq!(resp.code, response::SUCCESS, "{:?}", resp.remark);
        let last = resp.ext("suggestWhichBrokerId").unwrap_or("").to_string();
        env.stop().await;
        (first, last)
    }
    // Without slaveReadEnable: always the master.
    let (a, b) = suggestion(&["accessMessageInMemoryMaxRatio=0"]).await;
    assert_eq!((a.as_str(), b.as_str()), ("0", "0"));
    // With it, a lagging read gets whichBrokerWhenConsumeSlowly (1).
    let (a, _) = suggestion(&["accessMessageInMemoryMaxRatio=0", "slaveReadEnable=true"]).await;
    assert_eq!(a, "1");
    // Not lagging (default ratio, 40 % of RAM): the group's brokerId (0).
    let (a, b) = suggestion(&["slaveReadEnable=true"]).await;
    assert_eq!((a.as_str(), b.as_str()), ("0", "0"));
}

/// forceRegister=false (cluster.md §2.2): the periodic round registers only
/// if a name server reports the DataVersion as changed (or cannot be asked).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn periodic_registration_asks_for_the_data_version_first() {
    use frontends::broker::{BrokerConfig, Registrar, TopicConfig, TopicConfigTable};
    let dir = tempfile::tempdir().unwrap();
    let ns1 = frontends::namesrv::NameServer::start("127.0.0.1:0")
        .await
        .unwrap();
    let ns2 = frontends::namesrv::NameServer::start("127.0.0.1:0")
        .await
        .unwrap();
    let cfg = BrokerConfig {
        broker_name: "broker-q".to_string(),
        namesrv_addr: Some(format!("{};{}", ns1.local_addr(), ns2.local_addr())),
        force_register: false,
        ..BrokerConfig::default()
    };
    let topics = TopicConfigTable::load(dir.path().to_path_buf(), &cfg);
    let reg = Registrar::new(&cfg, "127.0.0.1:1".to_string(), "127.0.0.1:2".to_string());

    // Unknown to both name servers: changed.
    assert!(reg.needs_register(topics.data_version()).await);
    assert_eq!(reg.register_all(&topics).await, 2);
    assert_eq!(ns1.routes().live_broker_count(), 1);
    assert_eq!(ns2.routes().live_broker_count(), 1);
    // Registered with this version everywhere: nothing to do.
    assert!(!reg.needs_register(topics.data_version()).await);
    // A topic change bumps the version: both name servers say changed.
    topics.upsert(TopicConfig::new("Q", 1, 1, 6));
    assert!(reg.needs_register(topics.data_version()).await);
    // One name server that cannot be asked counts as changed.
    assert_eq!(reg.register_all(&topics).await, 2);
    assert!(!reg.needs_register(topics.data_version()).await);
    ns2.shutdown().await;
    assert!(reg.needs_register(topics.data_version()).await);
    ns1.shutdown().await;
}
