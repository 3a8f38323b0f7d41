//! Name server over TCP, driven by the remoting client as brokers and
//! clients would.

use std::time::Duration;

use frontends::namesrv::route_table::DataVersion;
use frontends::namesrv::wire::{
    parse_lenient, RegisterBrokerBody, TopicConfig, TopicConfigWrapper,
};
use frontends::namesrv::{KvConfig, NameServer, NamesrvConfig};
use frontends::remoting::codes::{request, response};
use frontends::remoting::{ConnectionContext, RemotingClient, RemotingCommand};
use tokio::time::timeout;

const T: Duration = Duration::from_secs(10);

fn topic(name: &str, queues: i32) -> TopicConfig {
    TopicConfig {
        topic_name: name.into(),
        read_queue_nums: queues,
        write_queue_nums: queues,
        perm: 6,
        topic_sys_flag: 0,
    }
}

fn register_request(
    name: &str,
    addr: &str,
    id: i64,
    topics: Vec<TopicConfig>,
    counter: i64,
) -> RemotingCommand {
    let body = RegisterBrokerBody {
        topic_config_wrapper: TopicConfigWrapper {
            data_version: DataVersion {
                timestamp: 1_700_000_000_000,
                counter,
            },
            topics,
        },
        filter_server_list: vec![],
    }
    .to_json();
    let crc = crc32fast::hash(body.as_bytes()) & 0x7FFF_FFFF;
    RemotingCommand::request(request::REGISTER_BROKER)
        .with_ext("brokerName", name)
        .with_ext("brokerAddr", addr)
        .with_ext("clusterName", "DefaultCluster")
        .with_ext("haServerAddr", addr.replace("10911", "10912"))
        .with_ext("brokerId", id)
        .with_ext("compressed", false)
        .with_ext("bodyCrc32", crc)
        .with_body(body)
}

async fn route(conn: &ConnectionContext, topic: &str, version: i32) -> RemotingCommand {
    let mut req =
        RemotingCommand::request(request::GET_ROUTEINFO_BY_TOPIC).with_ext("topic", topic);
    req.version = version;
    conn.request(req, T).await.unwrap()
}

async fn wait_until_no_route(conn: &ConnectionContext, topic: &str) {
    timeout(T, async {
        loop {
            if route(conn, topic, 409).await.code == response::TOPIC_NOT_EXIST {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("route removed in time");
}

#[tokio::test]
async fn register_route_and_unregister() {
    let ns = NameServer::start("127.0.0.1:0").await.unwrap();
    let addr = ns.local_addr().to_string();
    let client = RemotingClient::default();
    let broker = client.connection(&addr).await.unwrap();

    let resp = broker
        .request(
            register_request(
                "broker-a",
                "10.0.0.1:10911",
                0,
                vec![topic("T1", 4), topic("TBW102", 8)],
                1,
            ),
            T,
        )
        .await
        .unwrap();
    assert_eq!(resp.code, response::SUCCESS, "{:?}", resp.remark);
    assert_eq!(resp.ext("masterAddr"), None);

    // A slave learns its master.
    let resp = broker
        .request(
            register_request("broker-a", "10.0.0.2:10911", 1, vec![topic("T1", 4)], 1),
            T,
        )
        .await
        .unwrap();
    assert_eq!(resp.ext("masterAddr"), Some("10.0.0.1:10911"));
    assert_eq!(resp.ext("haServerAddr"), Some("10.0.0.1:10912"));

    // Standard JSON for 4.9.4+ clients.
    let r = route(&broker, "T1", 409).await;
    assert_eq!(r.code, response::SUCCESS);
    let text = std::str::from_utf8(&r.body).unwrap();
    assert_eq!(
        text,
        r#"{"brokerDatas":[{"brokerAddrs":{"0":"10.0.0.1:10911","1":"10.0.0.2:10911"},"brokerName":"broker-a","cluster":"DefaultCluster"}],"filterServerTable":{},"queueDatas":[{"brokerName":"broker-a","perm":6,"readQueueNums":4,"topicSysFlag":0,"writeQueueNums":4}]}"#
    );
    // fastjson's unquoted keys for older clients (C++ 1.2.x sends version 63).
    let r = route(&broker, "T1", 63).await;
    let text = std::str::from_utf8(&r.body).unwrap();
    assert!(
        text.contains(r#""brokerAddrs":{0:"10.0.0.1:10911",1:"10.0.0.2:10911"}"#),
        "{text}"
    );
    let v = parse_lenient(&r.body).unwrap();
    assert_eq!(v["queueDatas"][0]["writeQueueNums"], 4);
    // … unless it asks for standard JSON.
    let mut req = RemotingCommand::request(request::GET_ROUTEINFO_BY_TOPIC)
        .with_ext("topic", "T1")
        .with_ext("acceptStandardJsonOnly", "true");
    req.version = 63;
    let r = broker.request(req, T).await.unwrap();
    assert!(serde_json::from_slice::<serde_json::Value>(&r.body).is_ok());

    // Unknown topic.
    let r = route(&broker, "nope", 409).await;
    assert_eq!(r.code, response::TOPIC_NOT_EXIST);
    assert!(r.remark.unwrap().contains("nope"));

    // Cluster info and topic list.
    let r = broker
        .request(
            RemotingCommand::request(request::GET_BROKER_CLUSTER_INFO),
            T,
        )
        .await
        .unwrap();
    let v = parse_lenient(&r.body).unwrap();
    assert_eq!(v["clusterAddrTable"]["DefaultCluster"][0], "broker-a");
    assert_eq!(
        v["brokerAddrTable"]["broker-a"]["brokerAddrs"]["1"],
        "10.0.0.2:10911"
    );
    let r = broker
        .request(
            RemotingCommand::request(request::GET_ALL_TOPIC_LIST_FROM_NAMESERVER),
            T,
        )
        .await
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(v["topicList"], serde_json::json!(["T1", "TBW102"]));

    // Wipe write permission.
    let r = broker
        .request(
            RemotingCommand::request(request::WIPE_WRITE_PERM_OF_BROKER)
                .with_ext("brokerName", "broker-a"),
            T,
        )
        .await
        .unwrap();
    assert_eq!(r.ext("wipeTopicCount"), Some("2"));
    let v = parse_lenient(&route(&broker, "T1", 409).await.body).unwrap();
    assert_eq!(v["queueDatas"][0]["perm"], 4);
    // A re-registration with the same DataVersion does not restore it …
    broker
        .request(
            register_request("broker-a", "10.0.0.1:10911", 0, vec![topic("T1", 4)], 1),
            T,
        )
        .await
        .unwrap();
    let v = parse_lenient(&route(&broker, "T1", 409).await.body).unwrap();
    assert_eq!(v["queueDatas"][0]["perm"], 4);
    // … a new version does.
    broker
        .request(
            register_request("broker-a", "10.0.0.1:10911", 0, vec![topic("T1", 4)], 2),
            T,
        )
        .await
        .unwrap();
    let v = parse_lenient(&route(&broker, "T1", 409).await.body).unwrap();
    assert_eq!(v["queueDatas"][0]["perm"], 6);

    // Delete a topic.
    let r = broker
        .request(
            RemotingCommand::request(request::DELETE_TOPIC_IN_NAMESRV).with_ext("topic", "TBW102"),
            T,
        )
        .await
        .unwrap();
    assert_eq!(r.code, 0);
    assert_eq!(
        route(&broker, "TBW102", 409).await.code,
        response::TOPIC_NOT_EXIST
    );

    // Unregister the master: the slave keeps the route alive …
    let unreg = |addr: &str, id: i64| {
        RemotingCommand::request(request::UNREGISTER_BROKER)
            .with_ext("brokerName", "broker-a")
            .with_ext("brokerAddr", addr)
            .with_ext("clusterName", "DefaultCluster")
            .with_ext("brokerId", id)
    };
    assert_eq!(
        broker
            .request(unreg("10.0.0.1:10911", 0), T)
            .await
            .unwrap()
            .code,
        0
    );
    let v = parse_lenient(&route(&broker, "T1", 409).await.body).unwrap();
    assert_eq!(
        v["brokerDatas"][0]["brokerAddrs"],
        serde_json::json!({"1": "10.0.0.2:10911"})
    );
    // … until it leaves too.
    assert_eq!(
        broker
            .request(unreg("10.0.0.2:10911", 1), T)
            .await
            .unwrap()
            .code,
        0
    );
    assert_eq!(
        route(&broker, "T1", 409).await.code,
        response::TOPIC_NOT_EXIST
    );
    ns.shutdown().await;
}

#[tokio::test]
async fn bad_registrations_are_refused() {
    let ns = NameServer::start("127.0.0.1:0").await.unwrap();
    let conn = RemotingClient::connect(&ns.local_addr().to_string())
        .await
        .unwrap();
    let mut req = register_request("b", "10.0.0.1:10911", 0, vec![topic("T", 1)], 1);
    req.ext_fields.insert("bodyCrc32", "12345");
    let r = conn.request(req, T).await.unwrap();
    assert_eq!(
        (r.code, r.remark.as_deref()),
        (response::SYSTEM_ERROR, Some("crc32 not match"))
    );
    let mut req = register_request("b", "10.0.0.1:10911", 0, vec![], 1);
    req.ext_fields.remove("brokerName");
    assert_eq!(
        conn.request(req, T).await.unwrap().code,
        response::SYSTEM_ERROR
    );
    // Unknown request codes are refused at once.
    let r = conn
        .request(RemotingCommand::request(9999), T)
        .await
        .unwrap();
    assert_eq!(r.code, response::REQUEST_CODE_NOT_SUPPORTED);
    ns.shutdown().await;
}

#[tokio::test]
async fn fastjson_bodies_with_bare_keys_and_numeric_ext_values_are_accepted() {
    let ns = NameServer::start("127.0.0.1:0").await.unwrap();
    let conn = RemotingClient::connect(&ns.local_addr().to_string())
        .await
        .unwrap();
    let body = r#"{"filterServerList":[],"topicConfigSerializeWrapper":{"dataVersion":{"counter":3,"timestamp":1},"topicConfigTable":{"T":{"order":false,"perm":6,"readQueueNums":"2","topicFilterType":"SINGLE_TAG","topicName":"T","topicSysFlag":0,"writeQueueNums":2,"attributes":{}}},"odd":{0:"x"}}}"#;
    let req = RemotingCommand::request(request::REGISTER_BROKER)
        .with_ext("brokerName", "b")
        .with_ext("brokerAddr", "127.0.0.1:10911")
        .with_ext("clusterName", "C")
        .with_ext("haServerAddr", "127.0.0.1:10912")
        .with_ext("brokerId", "0")
        .with_body(body);
    assert_eq!(conn.request(req, T).await.unwrap().code, 0);
    let v = parse_lenient(&route(&conn, "T", 409).await.body).unwrap();
    assert_eq!(v["queueDatas"][0]["readQueueNums"], 2);
    ns.shutdown().await;
}

#[tokio::test]
async fn a_broker_whose_connection_closes_leaves_the_routes() {
    let ns = NameServer::start("127.0.0.1:0").await.unwrap();
    let addr = ns.local_addr().to_string();
    let client_view = RemotingClient::connect(&addr).await.unwrap();
    let broker = RemotingClient::connect(&addr).await.unwrap();
    broker
        .request(
            register_request("broker-x", "10.0.0.9:10911", 0, vec![topic("TX", 2)], 1),
            T,
        )
        .await
        .unwrap();
    assert_eq!(route(&client_view, "TX", 409).await.code, 0);
    broker.close();
    wait_until_no_route(&client_view, "TX").await;
    assert_eq!(ns.routes().live_broker_count(), 0);
    ns.shutdown().await;
}

#[tokio::test]
async fn a_silent_broker_expires() {
    let config = NamesrvConfig {
        broker_channel_expired_time: 300,
        scan_not_active_broker_interval: 50,
        ..NamesrvConfig::default()
    };
    let ns = NameServer::start_with("127.0.0.1:0", &config, KvConfig::in_memory())
        .await
        .unwrap();
    let addr = ns.local_addr().to_string();
    let broker = RemotingClient::connect(&addr).await.unwrap();
    broker
        .request(
            register_request("broker-s", "10.0.0.8:10911", 0, vec![topic("TS", 2)], 1),
            T,
        )
        .await
        .unwrap();
    let client_view = RemotingClient::connect(&addr).await.unwrap();
    assert_eq!(route(&client_view, "TS", 409).await.code, 0);
    // The broker stays connected but never registers again.
    wait_until_no_route(&client_view, "TS").await;
    // Its connection was closed by the name server.
    timeout(T, broker.closed())
        .await
        .expect("expired broker's connection closed");
    ns.shutdown().await;
}

#[tokio::test]
async fn the_binary_prints_its_port_and_serves() {
    use std::io::{BufRead, BufReader};
    let dir = std::env::temp_dir().join(format!("rmq-namesrv-test-{}", std::process::id()));
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_rmq-namesrv"))
        .arg("listenPort=0")
        .arg("listenAddr=127.0.0.1")
        .arg(format!("kvConfigPath={}", dir.join("kv.json").display()))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn rmq-namesrv");
    let stdout = child.stdout.take().unwrap();
    let line = tokio::task::spawn_blocking(move || {
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line).map(|_| line)
    });
    let line = timeout(T, line)
        .await
        .expect("startup line")
        .unwrap()
        .unwrap();
    let addr = line
        .trim()
        .strip_prefix("listening on ")
        .expect("banner")
        .to_string();
    assert!(addr.starts_with("127.0.0.1:"), "{addr}");
    let conn = RemotingClient::connect(&addr).await.unwrap();
    let put = RemotingCommand::request(request::PUT_KV_CONFIG)
        .with_ext("namespace", "ORDER_TOPIC_CONFIG")
        .with_ext("key", "T")
        .with_ext("value", "broker-a:4");
    assert_eq!(conn.request(put, T).await.unwrap().code, 0);
    let get = RemotingCommand::request(request::GET_KV_CONFIG)
        .with_ext("namespace", "ORDER_TOPIC_CONFIG")
        .with_ext("key", "T");
    assert_eq!(
        conn.request(get, T).await.unwrap().ext("value"),
        Some("broker-a:4")
    );
    assert!(dir.join("kv.json").exists(), "KV config persisted");
    // SIGTERM stops it cleanly.
    // SAFETY: plain kill(2) on our own child's pid.
    unsafe { libc_kill(child.id() as i32, 15) };
    let status = tokio::task::spawn_blocking(move || child.wait());
    let status = timeout(T, status).await.expect("exits").unwrap().unwrap();
    assert!(status.success(), "{status:?}");
    let _ = std::fs::remove_dir_all(&dir);
}

extern "C" {
    #[link_name = "kill"]
    fn libc_kill(pid: i32, sig: i32) -> i32;
}

/// A Java broker with `compressedRegister=true` (remoting.md §7.11): zlib of
/// i32-length-prefixed DataVersion JSON, topic count, `name r w perm
/// filterType` lines and the filter server list JSON.
fn compressed_register_body(topics: &[(&str, i32, i32, i32)], counter: i64) -> Vec<u8> {
    use std::io::Write;
    let mut raw = Vec::new();
    let chunk = |raw: &mut Vec<u8>, b: &[u8]| {
        raw.extend_from_slice(&(b.len() as i32).to_be_bytes());
        raw.extend_from_slice(b);
    };
    let dv = format!("{{\"counter\":{counter},\"timestamp\":1700000000000}}");
    chunk(&mut raw, dv.as_bytes());
    raw.extend_from_slice(&(topics.len() as i32).to_be_bytes());
    for (name, r, w, perm) in topics {
        chunk(
            &mut raw,
            format!("{name} {r} {w} {perm} SINGLE_TAG").as_bytes(),
        );
    }
    chunk(&mut raw, b"[]");
    let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::best());
    z.write_all(&raw).unwrap();
    z.finish().unwrap()
}

#[tokio::test]
async fn compressed_registrations_are_accepted() {
    let ns = NameServer::start("127.0.0.1:0").await.unwrap();
    let conn = RemotingClient::connect(&ns.local_addr().to_string())
        .await
        .unwrap();
    let register = |body: Vec<u8>| {
        let crc = crc32fast::hash(&body) & 0x7FFF_FFFF;
        RemotingCommand::request(request::REGISTER_BROKER)
            .with_ext("brokerName", "broker-z")
            .with_ext("brokerAddr", "10.0.0.9:10911")
            .with_ext("clusterName", "DefaultCluster")
            .with_ext("haServerAddr", "10.0.0.9:10912")
            .with_ext("brokerId", 0)
            .with_ext("compressed", true)
            .with_ext("bodyCrc32", crc)
            .with_body(body)
    };
    let body = compressed_register_body(&[("TopicZ", 8, 4, 6), ("TBW102", 8, 8, 7)], 3);
    let r = conn.request(register(body), T).await.unwrap();
    assert_eq!(r.code, response::SUCCESS, "{:?}", r.remark);
    let v = parse_lenient(&route(&conn, "TopicZ", 409).await.body).unwrap();
    let qd = &v["queueDatas"][0];
    assert_eq!(
        (
            &qd["brokerName"],
            &qd["readQueueNums"],
            &qd["writeQueueNums"],
            &qd["perm"]
        ),
        (&"broker-z".into(), &8.into(), &4.into(), &6.into())
    );
    assert_eq!(v["brokerDatas"][0]["brokerAddrs"]["0"], "10.0.0.9:10911");
    // The stored DataVersion is the body's.
    let q = RemotingCommand::request(request::QUERY_DATA_VERSION)
        .with_ext("brokerName", "broker-z")
        .with_ext("brokerAddr", "10.0.0.9:10911")
        .with_ext("clusterName", "DefaultCluster")
        .with_ext("brokerId", 0)
        .with_body(r#"{"counter":3,"timestamp":1700000000000}"#);
    assert_eq!(
        conn.request(q, T).await.unwrap().ext("changed"),
        Some("false")
    );

    // Garbage, a truncated stream and a body that inflates past the limit
    // are refused without taking the name server down.
    let mut truncated = compressed_register_body(&[("TopicZ", 8, 4, 6)], 4);
    truncated.truncate(truncated.len() / 2);
    let bomb = {
        use std::io::Write;
        let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::best());
        z.write_all(&i32::MAX.to_be_bytes()).unwrap();
        for _ in 0..20 {
            z.write_all(&vec![b'x'; 1 << 20]).unwrap();
        }
        z.finish().unwrap()
    };
    for body in [b"not zlib".to_vec(), truncated, bomb] {
        let r = conn.request(register(body), T).await.unwrap();
        assert_eq!(r.code, response::SYSTEM_ERROR);
    }
    assert_eq!(route(&conn, "TopicZ", 409).await.code, response::SUCCESS);
    ns.shutdown().await;
}
