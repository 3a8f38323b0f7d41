//! The broker and the name server under bad input: every request code with
//! every header field missing, empty, non-numeric, negative or huge, odd
//! bodies, and connections that send random bytes. Neither server may
//! panic, hang or stop serving; each bad request is answered on its own
//! connection, which stays usable (as in RocketMQ 4.9, where a header
//! that does not decode into its fields is an error response, not a
//! closed connection).

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use frontends::remoting::codes::{request, response};
use frontends::remoting::{RemotingClient, RemotingCommand, SerializeType};
use rand::{Rng, SeedableRng};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::time::timeout;

use common::T;

/// Panics anywhere in this test binary (handlers run on runtime threads,
/// whose panics the connection turns into SYSTEM_ERROR answers).
static PANICS: AtomicUsize = AtomicUsize::new(0);

fn count_panics() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        PANICS.fetch_add(1, Ordering::SeqCst);
        default(info);
    }));
}

/// Every header field name some broker or name server processor reads.
const FIELDS: &[&str] = &[
    "a",
    "b",
    "c",
    "d",
    "e",
    "f",
    "g",
    "h",
    "i",
    "j",
    "k",
    "l",
    "m",
    "producerGroup",
    "topic",
    "defaultTopic",
    "defaultTopicQueueNums",
    "queueId",
    "sysFlag",
    "bornTimestamp",
    "flag",
    "properties",
    "reconsumeTimes",
    "unitMode",
    "maxReconsumeTimes",
    "batch",
    "consumerGroup",
    "queueOffset",
    "maxMsgNums",
    "commitOffset",
    "suspendTimeoutMillis",
    "subscription",
    "subVersion",
    "expressionType",
    "key",
    "maxNum",
    "beginTimestamp",
    "endTimestamp",
    "_UNIQUE_KEY_QUERY",
    "offset",
    "timestamp",
    "clientID",
    "group",
    "delayLevel",
    "originMsgId",
    "originTopic",
    "tranStateTableOffset",
    "commitLogOffset",
    "commitOrRollback",
    "fromTransactionCheck",
    "msgId",
    "transactionId",
    "readQueueNums",
    "writeQueueNums",
    "perm",
    "topicFilterType",
    "topicSysFlag",
    "order",
    "groupName",
    "brokerName",
    "brokerAddr",
    "clusterName",
    "haServerAddr",
    "brokerId",
    "compressed",
    "bodyCrc32",
    "acceptStandardJsonOnly",
    "namespace",
    "value",
];

/// Values each field takes in turn (`None`: every field absent).
const VALUES: &[Option<&str>] = &[
    None,
    Some(""),
    Some(" "),
    Some("abc"),
    Some("1.5"),
    Some("-1"),
    Some("-2147483648"),
    Some("2147483647"),
    Some("9223372036854775807"),
    Some("-9223372036854775808"),
    Some("99999999999999999999999"),
    Some("\u{fffd}\u{1}\u{2}%RETRY%"),
    Some("true"),
];

/// Bodies each request is sent with.
const BODIES: &[&[u8]] = &[
    b"",
    b"\x00\xff\xfe garbage",
    b"{}",
    b"[]",
    b"null",
    b"{\"mqSet\":[{\"queueId\":-5}],\"consumerGroup\":1,\"clientId\":[]}",
    b"{\"consumerDataSet\":[{\"groupName\":\"G\",\"subscriptionDataSet\":[{\"topic\":\"T\",\"subVersion\":\"x\",\"expressionType\":\"SQL92\",\"subString\":\"((\"}]}]}",
];

const BROKER_CODES: &[i32] = &[
    request::SEND_MESSAGE,
    request::SEND_MESSAGE_V2,
    request::SEND_BATCH_MESSAGE,
    request::PULL_MESSAGE,
    request::QUERY_MESSAGE,
    request::VIEW_MESSAGE_BY_ID,
    request::QUERY_CONSUMER_OFFSET,
    request::UPDATE_CONSUMER_OFFSET,
    request::SEARCH_OFFSET_BY_TIMESTAMP,
    request::GET_MAX_OFFSET,
    request::GET_MIN_OFFSET,
    request::GET_EARLIEST_MSG_STORETIME,
    request::HEART_BEAT,
    request::UNREGISTER_CLIENT,
    request::GET_CONSUMER_LIST_BY_GROUP,
    request::LOCK_BATCH_MQ,
    request::UNLOCK_BATCH_MQ,
    request::CONSUMER_SEND_MSG_BACK,
    request::END_TRANSACTION,
    request::UPDATE_AND_CREATE_TOPIC,
    request::DELETE_TOPIC_IN_BROKER,
    request::GET_ALL_TOPIC_CONFIG,
    request::GET_BROKER_RUNTIME_INFO,
    request::GET_BROKER_CONFIG,
    request::GET_ALL_CONSUMER_OFFSET,
    request::GET_ALL_DELAY_OFFSET,
    request::GET_ALL_SUBSCRIPTIONGROUP_CONFIG,
    request::UPDATE_AND_CREATE_SUBSCRIPTIONGROUP,
    request::DELETE_SUBSCRIPTIONGROUP,
    request::CHECK_CLIENT_CONFIG,
    -1,
    i16::MAX as i32,
];

const NAMESRV_CODES: &[i32] = &[
    request::PUT_KV_CONFIG,
    request::GET_KV_CONFIG,
    request::DELETE_KV_CONFIG,
    request::REGISTER_BROKER,
    request::UNREGISTER_BROKER,
    request::GET_ROUTEINFO_BY_TOPIC,
    request::GET_BROKER_CLUSTER_INFO,
    request::WIPE_WRITE_PERM_OF_BROKER,
    request::ADD_WRITE_PERM_OF_BROKER,
    request::GET_ALL_TOPIC_LIST_FROM_NAMESERVER,
    request::DELETE_TOPIC_IN_NAMESRV,
    request::GET_KVLIST_BY_NAMESPACE,
    request::QUERY_DATA_VERSION,
    -1,
    i16::MAX as i32,
];

fn bad_request(code: i32, value: Option<&str>, body: &[u8], binary: bool) -> RemotingCommand {
    let mut req = RemotingCommand::request(code).with_body(body.to_vec());
    if let Some(v) = value {
        for f in FIELDS {
            req.ext_fields.insert(f, v);
        }
    }
    if binary {
        req.serialization = SerializeType::RocketMq;
    }
    req
}

/// Whether RocketMQ answers this request at all: END_TRANSACTION with a
/// state other than commit (8) or rollback (12) gets no response.
fn answered(code: i32, value: Option<&str>) -> bool {
    code != request::END_TRANSACTION || matches!(value, Some("8") | Some("12"))
}

/// Sends every bad request to `addr` over one connection, which must
/// answer each (bounded) and stay open.
async fn bad_requests_are_answered(client: &RemotingClient, addr: &str, codes: &[i32]) {
    let conn = client.connection(addr).await.unwrap();
    for &code in codes {
        for &value in VALUES {
            for (b, body) in BODIES.iter().enumerate() {
                let binary = b % 2 == 1;
                let req = bad_request(code, value, body, binary);
                if !answered(code, value) {
                    conn.send_oneway(req).unwrap();
                    continue;
                }
                let resp = conn.request(req, T).await.unwrap_or_else(|e| {
                    panic!("code {code}, fields {value:?}, body {b}: no answer: {e}")
                });
                assert!(resp.is_response());
                if code == -1 || code == i16::MAX as i32 {
                    assert_eq!(resp.code, response::REQUEST_CODE_NOT_SUPPORTED);
                    assert_eq!(
                        resp.remark.as_deref(),
                        Some(format!(" request type {code} not supported").as_str())
                    );
                }
                assert_eq!(
                    resp.serialization,
                    if binary {
                        SerializeType::RocketMq
                    } else {
                        SerializeType::Json
                    }
                );
            }
        }
    }
    assert!(!conn.is_closed(), "bad fields closed the connection");
}

/// Connections that send random bytes: random garbage, and valid-looking
/// length prefixes around random headers and bodies.
async fn send_garbage(addr: std::net::SocketAddr, seed: u64) {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    for round in 0..40 {
        let Ok(mut s) = TcpStream::connect(addr).await else {
            panic!("cannot connect to {addr}");
        };
        let mut bytes = Vec::new();
        let len = rng.gen_range(0..512usize);
        match round % 4 {
            0 => bytes.extend((0..len).map(|_| rng.gen::<u8>())),
            1 => {
                // A whole frame with a random header word and contents.
                bytes.extend_from_slice(&((4 + len) as i32).to_be_bytes());
                bytes.extend_from_slice(&rng.gen::<u32>().to_be_bytes());
                bytes.extend((0..len).map(|_| rng.gen::<u8>()));
            }
            2 => {
                // A JSON header of random bytes between braces.
                let mut h = vec![b'{'];
                h.extend((0..len).map(|_| rng.gen_range(b' '..=b'~')));
                h.push(b'}');
                bytes.extend_from_slice(&((4 + h.len()) as i32).to_be_bytes());
                bytes.extend_from_slice(&(h.len() as u32).to_be_bytes());
                bytes.extend_from_slice(&h);
            }
            _ => {
                // A valid frame with random bytes flipped.
                let req = RemotingCommand::request(request::GET_BROKER_CLUSTER_INFO)
                    .with_ext("topic", "T");
                let mut f = frontends::remoting::frame::encode_to_bytes(&req)
                    .unwrap()
                    .to_vec();
                for _ in 0..rng.gen_range(1..4) {
                    let at = rng.gen_range(0..f.len());
                    f[at] = rng.gen();
                }
                bytes.extend_from_slice(&f);
            }
        }
        // The peer may already have closed: errors are fine.
        let _ = s.write_all(&bytes).await;
        drop(s);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_fields_bodies_and_garbage_never_stop_the_broker_or_name_server() {
    count_panics();
    let dir = tempfile::tempdir().unwrap();
    let env = start_never_holding(dir.path()).await;
    let ns_addr = env.ns.local_addr().to_string();
    // Connections opened before the garbage must be served after it.
    let broker_conn = env.client.connection(&env.addr).await.unwrap();
    let ns_conn = env.client.connection(&ns_addr).await.unwrap();

    timeout(
        Duration::from_secs(60),
        bad_requests_are_answered(&env.client, &env.addr, BROKER_CODES),
    )
    .await
    .expect("the broker answered every bad request in time");
    timeout(
        Duration::from_secs(60),
        bad_requests_are_answered(&env.client, &ns_addr, NAMESRV_CODES),
    )
    .await
    .expect("the name server answered every bad request in time");

    send_garbage(env.broker.local_addr(), 1).await;
    send_garbage(env.ns.local_addr(), 2).await;

    let resp = env.call(common::send_v2("AfterGarbage", 0, b"x", "")).await;
    assert_eq!(resp.code, response::SUCCESS, "{:?}", resp.remark);
    let resp = broker_conn
        .request(
            RemotingCommand::request(request::GET_BROKER_RUNTIME_INFO),
            T,
        )
        .await
        .unwrap();
    assert_eq!(resp.code, response::SUCCESS);
    let resp = ns_conn
        .request(
            RemotingCommand::request(request::GET_BROKER_CLUSTER_INFO),
            T,
        )
        .await
        .unwrap();
    assert_eq!(resp.code, response::SUCCESS);
    let fresh = RemotingClient::default();
    let resp = fresh
        .invoke(
            &ns_addr,
            RemotingCommand::request(request::GET_BROKER_CLUSTER_INFO),
            T,
        )
        .await
        .unwrap();
    assert_eq!(resp.code, response::SUCCESS);
    fresh.close_all();

    assert_eq!(PANICS.load(Ordering::SeqCst), 0, "a handler panicked");
    env.stop().await;
}

/// Values one field of an otherwise valid request takes in turn.
const ONE_FIELD_VALUES: &[&str] = &[
    "",
    "abc",
    "0",
    "-1",
    "1e3",
    "-2147483648",
    "2147483647",
    "4611686018427387904",
    "9223372036854775807",
    "-9223372036854775808",
    "18446744073709551616",
    " 7 ",
    "TBW102",
    "SCHEDULE_TOPIC_XXXX",
    "RMQ_SYS_TRANS_HALF_TOPIC",
    "RMQ_SYS_TRANS_OP_HALF_TOPIC",
    "%RETRY%HostileG",
    "%DLQ%HostileG",
    "../..",
    "a/b",
    "\u{1}\u{2}",
    "DELAY\u{1}99\u{2}TRAN_MSG\u{1}true\u{2}PGROUP\u{1}PG",
    "TAGS\u{1}\u{2}KEYS\u{1}  \u{2}UNIQ_KEY\u{1}",
];

/// A valid request of every code the servers serve.
fn valid_requests() -> Vec<(bool, RemotingCommand)> {
    let r = RemotingCommand::request;
    let topic = "HostileT";
    let batch_entry = {
        let mut b = Vec::new();
        b.extend_from_slice(&(20 + 1 + 2i32).to_be_bytes());
        b.extend_from_slice(&[0; 8]);
        b.extend_from_slice(&0i32.to_be_bytes());
        b.extend_from_slice(&1i32.to_be_bytes());
        b.push(b'x');
        b.extend_from_slice(&0i16.to_be_bytes());
        b
    };
    let mut long_send = r(request::SEND_MESSAGE);
    for (k, v) in common::send_v2(topic, 0, b"x", "").ext_fields.iter() {
        let long = match k {
            "a" => "producerGroup",
            "b" => "topic",
            "c" => "defaultTopic",
            "d" => "defaultTopicQueueNums",
            "e" => "queueId",
            "f" => "sysFlag",
            "g" => "bornTimestamp",
            "h" => "flag",
            "i" => "properties",
            "j" => "reconsumeTimes",
            "k" => "unitMode",
            _ => "batch",
        };
        long_send.ext_fields.insert(long, v);
    }
    let queue = |code| r(code).with_ext("topic", topic).with_ext("queueId", 0);
    let broker = vec![
        common::send_v2(topic, 0, b"x", "KEYS\u{1}k\u{2}DELAY\u{1}1"),
        long_send.with_body(&b"x"[..]),
        common::send_v2(topic, 0, b"", "")
            .with_ext("m", true)
            .with_body(batch_entry),
        common::pull_everything("HostileG", topic, 0, 0).with_ext("sysFlag", 7),
        r(request::QUERY_MESSAGE)
            .with_ext("topic", topic)
            .with_ext("key", "k")
            .with_ext("maxNum", 32)
            .with_ext("beginTimestamp", 0)
            .with_ext("endTimestamp", i64::MAX),
        r(request::VIEW_MESSAGE_BY_ID).with_ext("offset", 0),
        queue(request::QUERY_CONSUMER_OFFSET).with_ext("consumerGroup", "HostileG"),
        queue(request::UPDATE_CONSUMER_OFFSET)
            .with_ext("consumerGroup", "HostileG")
            .with_ext("commitOffset", 1),
        queue(request::SEARCH_OFFSET_BY_TIMESTAMP).with_ext("timestamp", 1),
        queue(request::GET_MAX_OFFSET),
        queue(request::GET_MIN_OFFSET),
        queue(request::GET_EARLIEST_MSG_STORETIME),
        r(request::UNREGISTER_CLIENT)
            .with_ext("clientID", "c")
            .with_ext("producerGroup", "PG")
            .with_ext("consumerGroup", "HostileG"),
        r(request::GET_CONSUMER_LIST_BY_GROUP).with_ext("consumerGroup", "HostileG"),
        r(request::CONSUMER_SEND_MSG_BACK)
            .with_ext("offset", 0)
            .with_ext("group", "HostileG")
            .with_ext("delayLevel", 0)
            .with_ext("originMsgId", "x")
            .with_ext("originTopic", topic)
            .with_ext("maxReconsumeTimes", 16),
        r(request::END_TRANSACTION)
            .with_ext("producerGroup", "PG")
            .with_ext("tranStateTableOffset", 0)
            .with_ext("commitLogOffset", 0)
            .with_ext("commitOrRollback", 12)
            .with_ext("msgId", "m"),
        r(request::UPDATE_AND_CREATE_TOPIC)
            .with_ext("topic", "HostileAdmin")
            .with_ext("defaultTopic", "TBW102")
            .with_ext("readQueueNums", 4)
            .with_ext("writeQueueNums", 4)
            .with_ext("perm", 6)
            .with_ext("topicFilterType", "SINGLE_TAG")
            .with_ext("topicSysFlag", 0)
            .with_ext("order", false),
        r(request::DELETE_TOPIC_IN_BROKER).with_ext("topic", "HostileAdmin"),
        r(request::DELETE_SUBSCRIPTIONGROUP).with_ext("groupName", "HostileOther"),
    ];
    let namesrv = vec![
        r(request::REGISTER_BROKER)
            .with_ext("brokerName", "b")
            .with_ext("brokerAddr", "127.0.0.1:1")
            .with_ext("clusterName", "C")
            .with_ext("haServerAddr", "127.0.0.1:2")
            .with_ext("brokerId", 0)
            .with_ext("compressed", false)
            .with_ext("bodyCrc32", 0),
        r(request::UNREGISTER_BROKER)
            .with_ext("brokerName", "b")
            .with_ext("brokerAddr", "127.0.0.1:1")
            .with_ext("clusterName", "C")
            .with_ext("brokerId", 0),
        r(request::GET_ROUTEINFO_BY_TOPIC)
            .with_ext("topic", topic)
            .with_ext("acceptStandardJsonOnly", true),
        r(request::WIPE_WRITE_PERM_OF_BROKER).with_ext("brokerName", "b"),
        r(request::DELETE_TOPIC_IN_NAMESRV)
            .with_ext("topic", "x")
            .with_ext("clusterName", "C"),
        r(request::PUT_KV_CONFIG)
            .with_ext("namespace", "N")
            .with_ext("key", "k")
            .with_ext("value", "v"),
        r(request::GET_KV_CONFIG)
            .with_ext("namespace", "N")
            .with_ext("key", "k"),
        r(request::QUERY_DATA_VERSION)
            .with_ext("brokerName", "b")
            .with_ext("brokerAddr", "127.0.0.1:1")
            .with_ext("clusterName", "C")
            .with_ext("brokerId", 0),
    ];
    let mut all: Vec<(bool, RemotingCommand)> = broker.into_iter().map(|c| (false, c)).collect();
    all.extend(namesrv.into_iter().map(|c| (true, c)));
    all
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_bad_field_in_a_valid_request_is_answered() {
    count_panics();
    let dir = tempfile::tempdir().unwrap();
    let env = start_never_holding(dir.path()).await;
    let ns_addr = env.ns.local_addr().to_string();
    // A message at commit log offset 0 for the offset-based requests.
    let resp = env
        .call(common::send_v2("HostileT", 0, b"x", "KEYS\u{1}k"))
        .await;
    assert_eq!(resp.code, response::SUCCESS);
    let broker_conn = env.client.connection(&env.addr).await.unwrap();
    let ns_conn = env.client.connection(&ns_addr).await.unwrap();
    // Past every length limit: topic 127, properties 32767.
    let long = "x".repeat(40_000);
    let work = async {
        for (to_namesrv, valid) in valid_requests() {
            let conn = if to_namesrv { &ns_conn } else { &broker_conn };
            let fields: Vec<String> = valid
                .ext_fields
                .iter()
                .map(|(k, _)| k.to_string())
                .collect();
            for field in &fields {
                for value in ONE_FIELD_VALUES.iter().copied().chain([long.as_str()]) {
                    let mut req = valid.clone();
                    req.ext_fields.insert(field, value);
                    let code = req.code;
                    let no_answer = code == request::END_TRANSACTION
                        && field == "commitOrRollback"
                        && !matches!(value, "8" | "12");
                    if no_answer {
                        conn.send_oneway(req).unwrap();
                        continue;
                    }
                    let resp = conn.request(req, T).await.unwrap_or_else(|e| {
                        panic!("code {code}, {field}={value:?}: no answer: {e}")
                    });
                    assert!(resp.is_response());
                }
            }
        }
    };
    timeout(Duration::from_secs(120), work)
        .await
        .expect("every request answered in time");
    assert!(!broker_conn.is_closed() && !ns_conn.is_closed());
    let resp = env.call(common::send_v2("HostileT", 0, b"y", "")).await;
    assert_eq!(resp.code, response::SUCCESS, "{:?}", resp.remark);
    assert_eq!(PANICS.load(Ordering::SeqCst), 0, "a handler panicked");
    env.stop().await;
}

/// The commit log offset in a send answer's offsetMsgId (its last 16 hex digits).
fn commit_log_offset(resp: &RemotingCommand) -> i64 {
    let id = resp.ext("msgId").expect("msgId");
    i64::from_str_radix(&id[id.len() - 16..], 16).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sending_back_a_message_at_the_reconsume_limits_does_not_overflow() {
    count_panics();
    let dir = tempfile::tempdir().unwrap();
    let env = common::start(dir.path(), &[]).await;
    // The producer sets reconsumeTimes; a consumer then returns the message
    // once it is past its retries (DLQ, count + 1) or with delay level 0
    // under a huge maxReconsumeTimes (level 3 + count). Java's int
    // arithmetic wraps there; it must not panic or fail the request.
    for (reconsume, max) in [(i32::MAX, 16), (i32::MAX - 1, i32::MAX)] {
        let send = common::send_v2("HostileRetry", 0, b"x", "").with_ext("j", reconsume);
        let resp = env.call(send).await;
        assert_eq!(resp.code, response::SUCCESS, "{:?}", resp.remark);
        let back = RemotingCommand::request(request::CONSUMER_SEND_MSG_BACK)
            .with_ext("offset", commit_log_offset(&resp))
            .with_ext("group", "HostileRetryG")
            .with_ext("delayLevel", 0)
            .with_ext("maxReconsumeTimes", max);
        let resp = env.call(back).await;
        assert_eq!(resp.code, response::SUCCESS, "{:?}", resp.remark);
    }
    assert_eq!(PANICS.load(Ordering::SeqCst), 0, "a handler panicked");
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn responses_and_oneway_requests_get_no_answer_on_a_connection_that_stays_open() {
    let dir = tempfile::tempdir().unwrap();
    let env = common::start(dir.path(), &[]).await;
    for addr in [env.broker.local_addr(), env.ns.local_addr()] {
        let mut s = TcpStream::connect(addr).await.unwrap();
        let mut out = bytes::BytesMut::new();
        let codec = frontends::remoting::FrameCodec::default();
        // A "response" nobody asked for (RocketMQ drops it: no request
        // has its opaque), oneway requests of a known and an unknown code
        // with bad fields, then a plain request: only the last is answered.
        let mut stray = RemotingCommand::response(response::SUCCESS);
        stray.opaque = 1;
        let oneway_bad = RemotingCommand::request(request::GET_ROUTEINFO_BY_TOPIC)
            .with_ext("queueId", "abc")
            .oneway();
        let oneway_unknown = RemotingCommand::request(9999).oneway();
        let mut ask = RemotingCommand::request(request::GET_BROKER_RUNTIME_INFO);
        if addr == env.ns.local_addr() {
            ask.code = request::GET_BROKER_CLUSTER_INFO;
        }
        ask.opaque = 4;
        for (i, mut cmd) in [stray, oneway_bad, oneway_unknown].into_iter().enumerate() {
            if !cmd.is_response() {
                cmd.opaque = i as i32 + 1;
            }
            codec.encode(&cmd, &mut out).unwrap();
        }
        codec.encode(&ask, &mut out).unwrap();
        s.write_all(&out).await.unwrap();
        let mut buf = bytes::BytesMut::new();
        let resp = common::read_frame(&mut s, &mut buf)
            .await
            .expect("an answer");
        assert_eq!((resp.opaque, resp.code), (4, response::SUCCESS));
        // Asked again: the next frame is that answer, nothing in between.
        ask.opaque = 5;
        let mut again = bytes::BytesMut::new();
        codec.encode(&ask, &mut again).unwrap();
        s.write_all(&again).await.unwrap();
        let resp = common::read_frame(&mut s, &mut buf)
            .await
            .expect("an answer");
        assert_eq!((resp.opaque, resp.code), (5, response::SUCCESS));
    }
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_heartbeat_of_many_new_groups_is_answered_promptly() {
    // Each new consumer group creates the group and its %RETRY% topic.
    // Writing both tables (three fsyncs each, the whole table every time)
    // once per group took 41 s for the 1000 groups of a 26 KB heartbeat,
    // on a runtime thread; the tables are now written once per heartbeat.
    let dir = tempfile::tempdir().unwrap();
    let env = common::start(dir.path(), &[]).await;
    let n = 1000;
    let groups: Vec<String> = (0..n)
        .map(|i| format!("{{\"groupName\":\"ManyG{i}\",\"unitMode\":{}}}", i % 2 == 0))
        .collect();
    let body = format!(
        "{{\"clientID\":\"127.0.0.1@many\",\"consumerDataSet\":[{}]}}",
        groups.join(",")
    );
    let started = std::time::Instant::now();
    let resp = env
        .call(RemotingCommand::request(request::HEART_BEAT).with_body(body))
        .await;
    assert_eq!(resp.code, response::SUCCESS, "{:?}", resp.remark);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "took {:?}",
        started.elapsed()
    );
    let broker = env.broker.broker();
    for i in [0, 1, n - 1] {
        let group = format!("ManyG{i}");
        assert!(broker.groups.get(&group).is_some(), "{group}");
        let retry = broker
            .topics
            .get(&format!("%RETRY%{group}"))
            .expect("retry topic");
        assert_eq!(retry.topic_sys_flag, if i % 2 == 0 { 1 } else { 0 });
    }
    // Both tables reached their files.
    let config = dir.path().join("config");
    let topics = std::fs::read_to_string(config.join("topics.json")).unwrap();
    let subscriptions = std::fs::read_to_string(config.join("subscriptionGroup.json")).unwrap();
    let last = format!("ManyG{}", n - 1);
    assert!(topics.contains(&format!("%RETRY%{last}")));
    assert!(subscriptions.contains(&last));
    env.stop().await;
}

/// A broker without long polling: a pull whose (random) sysFlag asks to be
/// held is answered after 10 ms instead of after its suspend time.
async fn start_never_holding(dir: &std::path::Path) -> common::Env {
    common::start(
        dir,
        &["longPollingEnable=false", "shortPollingTimeMills=10"],
    )
    .await
}
