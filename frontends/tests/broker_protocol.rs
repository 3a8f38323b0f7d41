//! The broker over TCP, driven by the remoting client as producers,
//! consumers and admin tools would, with an embedded name server.
//! Every wait is bounded; servers are stopped at the end of each test.

use std::sync::Arc;
use std::time::Duration;

use engine::record::{decode, parse_offset_msg_id, Decoded};
use frontends::remoting::codes::{request, response};
use frontends::remoting::{
    ClientConfig, ConnectionContext, RemotingClient, RemotingCommand, RequestHandler,
};
use parking_lot::Mutex;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::timeout;

mod common;

use common::{send_v2, T};

/// Settings these tests need beyond the common ones.
const EXTRA: &[&str] = &[
    "bindAddress=127.0.0.1",
    "maxMessageSize=4096",
    "flushConsumerOffsetInterval=200",
];

async fn start(store: &std::path::Path) -> common::Env {
    common::start(store, EXTRA).await
}

/// A SEND_BATCH_MESSAGE (V2 header) of `body` to queue 0 of `topic`, with
/// the batch-level properties `props`.
fn batch_request(topic: &str, props: &str, body: Vec<u8>) -> RemotingCommand {
    RemotingCommand::request(request::SEND_BATCH_MESSAGE)
        .with_ext("a", "PG")
        .with_ext("b", topic)
        .with_ext("c", "TBW102")
        .with_ext("d", 4)
        .with_ext("e", 0)
        .with_ext("f", 0)
        .with_ext("g", 1)
        .with_ext("h", 0)
        .with_ext("i", props)
        .with_ext("m", true)
        .with_body(body)
}

fn batch_body(entries: &[(&[u8], &str)]) -> Vec<u8> {
    let mut buf = Vec::new();
    for (body, props) in entries {
        let total = 20 + body.len() + 2 + props.len();
        buf.extend_from_slice(&(total as i32).to_be_bytes());
        buf.extend_from_slice(&0i32.to_be_bytes());
        buf.extend_from_slice(&0i32.to_be_bytes());
        buf.extend_from_slice(&0i32.to_be_bytes());
        buf.extend_from_slice(&(body.len() as i32).to_be_bytes());
        buf.extend_from_slice(body);
        buf.extend_from_slice(&(props.len() as i16).to_be_bytes());
        buf.extend_from_slice(props.as_bytes());
    }
    buf
}

/// Polls `f` until it returns true, for at most `T`.
async fn eventually<F: FnMut() -> Fut, Fut: std::future::Future<Output = bool>>(mut f: F) {
    let deadline = tokio::time::Instant::now() + T;
    while tokio::time::Instant::now() < deadline {
        if f().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("condition not met within {T:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registers_and_sends_single_messages() {
    let dir = tempfile::tempdir().unwrap();
    let env = start(dir.path()).await;
    // Registered at start: the template topic routes to us.
    let route = env.ns.routes().route("TBW102").expect("TBW102 route");
    assert_eq!(route.broker_datas[0].broker_addrs[&0], env.addr);

    let props = "TAGS\u{1}TagA\u{2}KEYS\u{1}order-1\u{2}WAIT\u{1}true\u{2}UNIQ_KEY\u{1}ABCDEF0123";
    let mut offsets = Vec::new();
    for i in 0..2 {
        let resp = env
            .call(send_v2(
                "TopicTest",
                1,
                format!("hello {i}").as_bytes(),
                props,
            ))
            .await;
        assert_eq!(resp.code, response::SUCCESS, "{:?}", resp.remark);
        assert_eq!(resp.ext("queueId"), Some("1"));
        assert_eq!(resp.ext("queueOffset"), Some(i.to_string().as_str()));
        assert_eq!(resp.ext("MSG_REGION"), Some("DefaultRegion"));
        assert_eq!(resp.ext("TRACE_ON"), Some("true"));
        let (host, phys) = parse_offset_msg_id(resp.ext("msgId").unwrap()).unwrap();
        assert_eq!(host.to_string(), env.addr);
        offsets.push(phys);
    }
    // Auto-created topic reaches the name server (registration on change).
    eventually(|| async { env.ns.routes().route("TopicTest").is_some() }).await;
    let qd = &env.ns.routes().route("TopicTest").unwrap().queue_datas[0];
    assert_eq!(
        (qd.read_queue_nums, qd.write_queue_nums, qd.perm),
        (4, 4, 6)
    );

    // VIEW_MESSAGE_BY_ID returns the stored record.
    let resp = env
        .call(RemotingCommand::request(request::VIEW_MESSAGE_BY_ID).with_ext("offset", offsets[1]))
        .await;
    assert_eq!(resp.code, response::SUCCESS);
    let Decoded::Message(rec) = decode(&resp.body, true) else {
        panic!("not a record")
    };
    assert_eq!(rec.body, b"hello 1");
    assert_eq!(rec.topic, "TopicTest");
    assert_eq!(rec.queue_offset, 1);
    assert_eq!(rec.property("CLUSTER"), Some("DefaultCluster"));
    assert_eq!(rec.property("WAIT"), None, "WAIT=true stripped");
    assert_eq!(rec.property("TAGS"), Some("TagA"));
    assert_eq!(rec.store_host.to_string(), env.addr);
    let resp = env
        .call(RemotingCommand::request(request::VIEW_MESSAGE_BY_ID).with_ext("offset", 1i64 << 40))
        .await;
    assert_eq!(resp.code, response::SYSTEM_ERROR);

    // Queue offsets (dispatch is asynchronous).
    let max = RemotingCommand::request(request::GET_MAX_OFFSET)
        .with_ext("topic", "TopicTest")
        .with_ext("queueId", 1);
    eventually(|| async { env.call(max.clone()).await.ext("offset") == Some("2") }).await;
    let min = env
        .call(
            RemotingCommand::request(request::GET_MIN_OFFSET)
                .with_ext("topic", "TopicTest")
                .with_ext("queueId", 1),
        )
        .await;
    assert_eq!(min.ext("offset"), Some("0"));
    let earliest = env
        .call(
            RemotingCommand::request(request::GET_EARLIEST_MSG_STORETIME)
                .with_ext("topic", "TopicTest")
                .with_ext("queueId", 1),
        )
        .await;
    assert!(earliest.ext("timestamp").unwrap().parse::<i64>().unwrap() > 0);

    // QUERY_MESSAGE by key.
    let query = RemotingCommand::request(request::QUERY_MESSAGE)
        .with_ext("topic", "TopicTest")
        .with_ext("key", "order-1")
        .with_ext("maxNum", 32)
        .with_ext("beginTimestamp", 0)
        .with_ext("endTimestamp", i64::MAX);
    eventually(|| async {
        let r = env.call(query.clone()).await;
        r.code == response::SUCCESS && r.body.len() > 2 * 100
    })
    .await;
    let none = env
        .call(
            RemotingCommand::request(request::QUERY_MESSAGE)
                .with_ext("topic", "TopicTest")
                .with_ext("key", "no-such-key")
                .with_ext("maxNum", 32)
                .with_ext("beginTimestamp", 0)
                .with_ext("endTimestamp", i64::MAX),
        )
        .await;
    assert_eq!(none.code, response::QUERY_NOT_FOUND);
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_oversize_and_bad_requests() {
    let dir = tempfile::tempdir().unwrap();
    let env = start(dir.path()).await;

    // Java batch: 320 with m=true.
    let body = batch_body(&[
        (b"a", "UNIQ_KEY\u{1}1"),
        (b"bb", "UNIQ_KEY\u{1}2"),
        (b"ccc", ""),
    ]);
    let req = batch_request("BatchTopic", "WAIT\u{1}true", body.clone());
    let resp = env.call(req).await;
    assert_eq!(resp.code, response::SUCCESS, "{:?}", resp.remark);
    let ids: Vec<&str> = resp.ext("msgId").unwrap().split(',').collect();
    assert_eq!(ids.len(), 3);
    assert_eq!(resp.ext("queueOffset"), Some("0"));
    let (_, phys) = parse_offset_msg_id(ids[2]).unwrap();
    let view = env
        .call(RemotingCommand::request(request::VIEW_MESSAGE_BY_ID).with_ext("offset", phys))
        .await;
    let Decoded::Message(rec) = decode(&view.body, true) else {
        panic!()
    };
    assert_eq!((rec.body, rec.queue_offset), (&b"ccc"[..], 2));
    assert_eq!(rec.property("CLUSTER"), Some("DefaultCluster"));

    // C++ 1.2.x batch: code 10, long names, batch="1" → unpacked.
    let req = RemotingCommand::request(request::SEND_MESSAGE)
        .with_ext("producerGroup", "PG")
        .with_ext("topic", "BatchTopic")
        .with_ext("defaultTopic", "TBW102")
        .with_ext("defaultTopicQueueNums", 4)
        .with_ext("queueId", 0)
        .with_ext("sysFlag", 0)
        .with_ext("bornTimestamp", "1")
        .with_ext("flag", 0)
        .with_ext("properties", "")
        .with_ext("batch", "1")
        .with_body(body);
    let resp = env.call(req).await;
    assert_eq!(resp.code, response::SUCCESS, "{:?}", resp.remark);
    assert_eq!(resp.ext("queueOffset"), Some("3"));
    assert_eq!(resp.ext("msgId").unwrap().split(',').count(), 3);

    // Oversize body → MESSAGE_ILLEGAL, and the connection keeps working.
    let resp = env
        .call(send_v2("BigTopic", 0, &vec![b'x'; 5000], ""))
        .await;
    assert_eq!(resp.code, response::MESSAGE_ILLEGAL);
    assert!(resp.remark.unwrap_or_default().contains("4096"));
    let resp = env.call(send_v2("BigTopic", 0, b"small", "")).await;
    assert_eq!(resp.code, response::SUCCESS);

    // Bad topic name, forbidden topic, bad queue id, unknown topic without template.
    let resp = env.call(send_v2("bad topic", 0, b"x", "")).await;
    assert_eq!(resp.code, response::SYSTEM_ERROR);
    let resp = env.call(send_v2("SCHEDULE_TOPIC_XXXX", 0, b"x", "")).await;
    assert_eq!(resp.code, response::NO_PERMISSION);
    let resp = env.call(send_v2("BigTopic", 99, b"x", "")).await;
    assert_eq!(resp.code, response::SYSTEM_ERROR);
    let resp = env
        .call(send_v2("Other", 0, b"x", "").with_ext("c", "NoTemplate"))
        .await;
    assert_eq!(resp.code, response::TOPIC_NOT_EXIST);
    // Missing required field.
    let mut req = send_v2("BigTopic", 0, b"x", "");
    req.ext_fields.remove("e");
    assert_eq!(env.call(req).await.code, response::SYSTEM_ERROR);

    // Unknown code → 3 with Java's remark; PULL on the fast port → 3.
    let resp = env.call(RemotingCommand::request(9999)).await;
    assert_eq!(resp.code, response::REQUEST_CODE_NOT_SUPPORTED);
    assert_eq!(
        resp.remark.as_deref(),
        Some(" request type 9999 not supported")
    );
    let fast = env.broker.fast_addr().to_string();
    let resp = env
        .client
        .invoke(&fast, RemotingCommand::request(request::PULL_MESSAGE), T)
        .await
        .unwrap();
    assert_eq!(resp.code, response::REQUEST_CODE_NOT_SUPPORTED);
    let resp = env
        .client
        .invoke(&fast, send_v2("BigTopic", 0, b"via fast port", ""), T)
        .await
        .unwrap();
    assert_eq!(resp.code, response::SUCCESS);
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumer_offsets_and_topic_admin() {
    let dir = tempfile::tempdir().unwrap();
    let env = start(dir.path()).await;
    let update = RemotingCommand::request(request::UPDATE_CONSUMER_OFFSET)
        .with_ext("consumerGroup", "CG")
        .with_ext("topic", "T1")
        .with_ext("queueId", 2)
        .with_ext("commitOffset", 42);
    assert_eq!(env.call(update).await.code, response::SUCCESS);
    let query = |q: i32| {
        RemotingCommand::request(request::QUERY_CONSUMER_OFFSET)
            .with_ext("consumerGroup", "CG")
            .with_ext("topic", "T1")
            .with_ext("queueId", q)
    };
    let resp = env.call(query(2)).await;
    assert_eq!(
        (resp.code, resp.ext("offset")),
        (response::SUCCESS, Some("42"))
    );
    // Nothing stored, queue starts at 0 → 0.
    let resp = env.call(query(3)).await;
    assert_eq!(
        (resp.code, resp.ext("offset")),
        (response::SUCCESS, Some("0"))
    );

    // Create a topic: persisted, registered, listed.
    let create = RemotingCommand::request(request::UPDATE_AND_CREATE_TOPIC)
        .with_ext("topic", "AdminTopic")
        .with_ext("defaultTopic", "TBW102")
        .with_ext("readQueueNums", 3)
        .with_ext("writeQueueNums", 3)
        .with_ext("perm", 6)
        .with_ext("topicFilterType", "SINGLE_TAG");
    assert_eq!(env.call(create).await.code, response::SUCCESS);
    let route = env
        .ns
        .routes()
        .route("AdminTopic")
        .expect("registered synchronously");
    assert_eq!(route.queue_datas[0].write_queue_nums, 3);
    let all = env
        .call(RemotingCommand::request(request::GET_ALL_TOPIC_CONFIG))
        .await;
    let v: serde_json::Value = serde_json::from_slice(&all.body).unwrap();
    assert_eq!(v["topicConfigTable"]["AdminTopic"]["readQueueNums"], 3);
    assert!(v["dataVersion"]["counter"].as_i64().unwrap() > 0);
    let text = std::fs::read_to_string(dir.path().join("config/topics.json")).unwrap();
    assert!(text.contains("\"AdminTopic\""));
    // System topics cannot be created.
    let sys = RemotingCommand::request(request::UPDATE_AND_CREATE_TOPIC)
        .with_ext("topic", "TBW102")
        .with_ext("readQueueNums", 3)
        .with_ext("writeQueueNums", 3)
        .with_ext("perm", 6);
    assert_eq!(env.call(sys).await.code, response::SYSTEM_ERROR);
    // Delete.
    let del =
        RemotingCommand::request(request::DELETE_TOPIC_IN_BROKER).with_ext("topic", "AdminTopic");
    assert_eq!(env.call(del).await.code, response::SUCCESS);
    let all = env
        .call(RemotingCommand::request(request::GET_ALL_TOPIC_CONFIG))
        .await;
    let v: serde_json::Value = serde_json::from_slice(&all.body).unwrap();
    assert!(v["topicConfigTable"].get("AdminTopic").is_none());

    let info = env
        .call(RemotingCommand::request(request::GET_BROKER_RUNTIME_INFO))
        .await;
    let v: serde_json::Value = serde_json::from_slice(&info.body).unwrap();
    assert!(v["table"]["commitLogMaxOffset"].is_string());
    env.stop().await;
}

/// Records requests the broker sends to a client connection.
#[derive(Default)]
struct Recorder(Mutex<Vec<RemotingCommand>>);

impl RequestHandler for Recorder {
    async fn handle(
        &self,
        _ctx: &ConnectionContext,
        req: RemotingCommand,
    ) -> Option<RemotingCommand> {
        self.0.lock().push(req);
        None
    }
}

fn heartbeat(client_id: &str) -> RemotingCommand {
    let body = format!(
        r#"{{"clientID":"{client_id}","producerDataSet":[{{"groupName":"PG"}}],
           "consumerDataSet":[{{"groupName":"CG","consumeType":1,"messageModel":"CLUSTERING",
             "consumeFromWhere":"CONSUME_FROM_LAST_OFFSET","unitMode":false,
             "subscriptionDataSet":[{{"topic":"TopicTest","subString":"TagA || TagB","tagsSet":["TagA","TagB"],"subVersion":"17"}}]}}]}}
"#
    );
    RemotingCommand::request(request::HEART_BEAT).with_body(body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heartbeats_consumer_list_notifications_and_locks() {
    let dir = tempfile::tempdir().unwrap();
    let env = start(dir.path()).await;
    let rec1 = Arc::new(Recorder::default());
    let c1 = RemotingClient::connect_with(&env.addr, ClientConfig::default(), rec1.clone())
        .await
        .unwrap();
    let c2 = RemotingClient::connect_with(
        &env.addr,
        ClientConfig::default(),
        Arc::new(Recorder::default()),
    )
    .await
    .unwrap();
    assert_eq!(
        c1.request(heartbeat("10.0.0.1@1"), T).await.unwrap().code,
        response::SUCCESS
    );
    assert_eq!(
        c2.request(heartbeat("10.0.0.2@2"), T).await.unwrap().code,
        response::SUCCESS
    );
    // The first member hears that the group changed.
    eventually(|| async {
        rec1.0.lock().iter().any(|r| {
            r.code == request::NOTIFY_CONSUMER_IDS_CHANGED && r.ext("consumerGroup") == Some("CG")
        })
    })
    .await;
    let list = env
        .call(
            RemotingCommand::request(request::GET_CONSUMER_LIST_BY_GROUP)
                .with_ext("consumerGroup", "CG"),
        )
        .await;
    let v: serde_json::Value = serde_json::from_slice(&list.body).unwrap();
    let mut ids: Vec<&str> = v["consumerIdList"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_str().unwrap())
        .collect();
    ids.sort();
    assert_eq!(ids, ["10.0.0.1@1", "10.0.0.2@2"]);
    let broker = env.broker.broker();
    let sub = broker.clients.subscription("CG", "TopicTest").unwrap();
    assert_eq!(sub.sub_version, 17);
    assert!(sub
        .codes_set
        .contains(&engine::record::java_string_hash("TagB")));
    assert!(broker.topics.get("%RETRY%CG").is_some());
    let unknown = env
        .call(
            RemotingCommand::request(request::GET_CONSUMER_LIST_BY_GROUP)
                .with_ext("consumerGroup", "NoGroup"),
        )
        .await;
    assert_eq!(unknown.code, response::SYSTEM_ERROR);

    // Locks: c1 gets both queues, c2 none; after unlock c2 gets them.
    let lock = |client: &str| {
        RemotingCommand::request(request::LOCK_BATCH_MQ).with_body(format!(
            r#"{{"consumerGroup":"CG","clientId":"{client}","mqSet":[{{"topic":"TopicTest","brokerName":"broker-test","queueId":0}},{{"topic":"TopicTest","brokerName":"broker-test","queueId":1}}]}}"#
        ))
    };
    let granted = |r: &RemotingCommand| {
        let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        v["lockOKMQSet"].as_array().unwrap().len()
    };
    assert_eq!(granted(&env.call(lock("10.0.0.1@1")).await), 2);
    assert_eq!(granted(&env.call(lock("10.0.0.2@2")).await), 0);
    let mut unlock = lock("10.0.0.1@1");
    unlock.code = request::UNLOCK_BATCH_MQ;
    assert_eq!(env.call(unlock).await.code, response::SUCCESS);
    assert_eq!(granted(&env.call(lock("10.0.0.2@2")).await), 2);

    // A member leaving: the list shrinks.
    c2.close();
    eventually(|| async { broker.clients.consumer_ids("CG").len() == 1 }).await;
    let unreg = RemotingCommand::request(request::UNREGISTER_CLIENT)
        .with_ext("clientID", "10.0.0.1@1")
        .with_ext("consumerGroup", "CG")
        .with_ext("producerGroup", "PG");
    assert_eq!(c1.request(unreg, T).await.unwrap().code, response::SUCCESS);
    assert!(broker.clients.consumer_ids("CG").is_empty());
    c1.close();
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tables_survive_restart() {
    let dir = tempfile::tempdir().unwrap();
    let env = start(dir.path()).await;
    assert_eq!(
        env.call(send_v2("Durable", 0, b"x", "")).await.code,
        response::SUCCESS
    );
    let update = RemotingCommand::request(request::UPDATE_CONSUMER_OFFSET)
        .with_ext("consumerGroup", "CG")
        .with_ext("topic", "Durable")
        .with_ext("queueId", 0)
        .with_ext("commitOffset", 1);
    assert_eq!(env.call(update).await.code, response::SUCCESS);
    env.stop().await;
    let config = dir.path().join("config");
    assert!(!config.join("topics.json.tmp").exists());
    assert!(config.join("topics.json.bak").exists());
    let offsets = std::fs::read_to_string(config.join("consumerOffset.json")).unwrap();
    assert!(
        offsets.contains("\"Durable@CG\"") && offsets.contains("0:1"),
        "{offsets}"
    );

    let env = start(dir.path()).await;
    assert!(env.broker.broker().topics.get("Durable").is_some());
    let query = RemotingCommand::request(request::QUERY_CONSUMER_OFFSET)
        .with_ext("consumerGroup", "CG")
        .with_ext("topic", "Durable")
        .with_ext("queueId", 0);
    assert_eq!(env.call(query).await.ext("offset"), Some("1"));
    let resp = env.call(send_v2("Durable", 0, b"y", "")).await;
    assert_eq!(resp.ext("queueOffset"), Some("1"));
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_frame_closes_only_that_connection() {
    let dir = tempfile::tempdir().unwrap();
    let env = start(dir.path()).await;
    let mut raw = tokio::net::TcpStream::connect(&env.addr).await.unwrap();
    // frame_len 8, serialization type 9 (invalid).
    raw.write_all(&[0, 0, 0, 8, 9, 0, 0, 4, 1, 2, 3, 4])
        .await
        .unwrap();
    let mut buf = [0u8; 16];
    let n = timeout(T, raw.read(&mut buf))
        .await
        .expect("closed in time")
        .unwrap_or(0);
    assert_eq!(n, 0, "connection closed without a response");
    let resp = env.call(send_v2("StillFine", 0, b"x", "")).await;
    assert_eq!(resp.code, response::SUCCESS);
    env.stop().await;
}

/// VIEW_MESSAGE_BY_ID with an offset that is not the start of a message
/// (a malformed or forged offsetMsgId) answers "can not find message",
/// never bytes that are not a record.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn view_by_id_refuses_offsets_inside_a_record() {
    let dir = tempfile::tempdir().unwrap();
    let env = start(dir.path()).await;
    let resp = env
        .call(send_v2("ViewTopic", 1, b"body", "WAIT\u{1}true"))
        .await;
    assert_eq!(resp.code, response::SUCCESS, "{:?}", resp.remark);
    let (_, phys) = parse_offset_msg_id(resp.ext("msgId").unwrap()).unwrap();
    let view = |offset: i64| {
        env.call(RemotingCommand::request(request::VIEW_MESSAGE_BY_ID).with_ext("offset", offset))
    };
    let ok = view(phys).await;
    assert_eq!(ok.code, response::SUCCESS);
    assert!(matches!(decode(&ok.body, true), Decoded::Message(_)));
    // phys + 12 is the QUEUEID field (1): read as a record size it names
    // one readable byte.
    for offset in [phys + 12, phys + 1, -1] {
        let r = view(offset).await;
        assert_eq!(
            r.code,
            response::SYSTEM_ERROR,
            "offset {offset}: {} bytes",
            r.body.len()
        );
        assert_eq!(
            r.remark.as_deref(),
            Some(format!("can not find message by the offset, {offset}").as_str())
        );
    }
    env.stop().await;
}

/// QUERY_MESSAGE's `indexLastUpdateTimestamp` / `indexLastUpdatePhyoffset`
/// describe the index (its newest file's endTimestamp and endPhyOffset: the
/// store time and offset of the last indexed message), as RocketMQ sends them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn query_message_reports_the_index_last_update() {
    let dir = tempfile::tempdir().unwrap();
    let env = start(dir.path()).await;
    let mut last = (0, 0);
    for i in 0..2 {
        let resp = env
            .call(send_v2("QueryTopic", 0, b"x", &format!("KEYS\u{1}k{i}")))
            .await;
        assert_eq!(resp.code, response::SUCCESS, "{:?}", resp.remark);
        let (_, phys) = parse_offset_msg_id(resp.ext("msgId").unwrap()).unwrap();
        last.1 = phys;
    }
    // A message without keys is not indexed.
    let resp = env.call(send_v2("QueryTopic", 0, b"unkeyed", "")).await;
    assert_eq!(resp.code, response::SUCCESS, "{:?}", resp.remark);
    let view = env
        .call(RemotingCommand::request(request::VIEW_MESSAGE_BY_ID).with_ext("offset", last.1))
        .await;
    let Decoded::Message(rec) = decode(&view.body, true) else {
        panic!("not a record")
    };
    last.0 = rec.store_timestamp;
    // Not the time of the answer either.
    tokio::time::sleep(Duration::from_millis(20)).await;
    let query = RemotingCommand::request(request::QUERY_MESSAGE)
        .with_ext("topic", "QueryTopic")
        .with_ext("key", "k0")
        .with_ext("maxNum", 32)
        .with_ext("beginTimestamp", 0)
        .with_ext("endTimestamp", i64::MAX);
    let mut r = env.call(query.clone()).await;
    let deadline = tokio::time::Instant::now() + T;
    while r.code != response::SUCCESS && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
        r = env.call(query.clone()).await;
    }
    assert_eq!(r.code, response::SUCCESS, "{:?}", r.remark);
    let header = |k: &str| r.ext(k).and_then(|v| v.parse::<i64>().ok());
    assert_eq!(header("indexLastUpdateTimestamp"), Some(last.0));
    assert_eq!(header("indexLastUpdatePhyoffset"), Some(last.1));
    env.stop().await;
}

/// The batch-level properties (the header's) are stored with every entry
/// of a batch. A body of many empty entries with a 30 KB header properties
/// string is a 4 KB request that would store (and first build in memory)
/// 30 KB per entry: refused, and nothing is stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_multiplying_its_header_properties_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let env = start(dir.path()).await;
    let entries: Vec<(&[u8], &str)> = vec![(&b""[..], ""); 180];
    let body = batch_body(&entries);
    assert!(body.len() <= 4096, "within maxMessageSize");
    let header_props = format!("BIG\u{1}{}", "p".repeat(30_000));
    let batch = |props: &str| batch_request("AmpTopic", props, body.clone());
    let resp = env.call(batch(&header_props)).await;
    assert_eq!(resp.code, response::MESSAGE_ILLEGAL, "{:?}", resp.remark);
    assert!(common::stored(&env, "AmpTopic", 0).is_empty());

    // The same entries with Java's batch-level properties are stored.
    let resp = env.call(batch("WAIT\u{1}true")).await;
    assert_eq!(resp.code, response::SUCCESS, "{:?}", resp.remark);
    assert_eq!(common::stored(&env, "AmpTopic", 0).len(), 180);
    env.stop().await;
}

/// A batch to a topic name longer than 127 characters fails the topic name
/// check like any send (Java `msgCheck` runs before the batch's own topic
/// length check, which therefore never fires): SYSTEM_ERROR.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_to_an_over_long_topic_is_a_topic_name_error() {
    let dir = tempfile::tempdir().unwrap();
    let env = start(dir.path()).await;
    let body = batch_body(&[(&b"a"[..], "UNIQ_KEY\u{1}1")]);
    let topic = "T".repeat(128);
    let req = batch_request(&topic, "WAIT\u{1}true", body);
    let resp = env.call(req).await;
    assert_eq!(resp.code, response::SYSTEM_ERROR, "{:?}", resp.remark);
    assert!(
        resp.remark.unwrap_or_default().contains("max length"),
        "the topic name check's remark"
    );
    env.stop().await;
}
