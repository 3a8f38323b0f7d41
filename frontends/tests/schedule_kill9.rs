//! Delayed messages and consumer retries across a kill -9 of the broker
//! process in the middle of delivery: every acknowledged delayed message
//! and every acknowledged send-back reaches its real topic exactly once.
//!
//! The broker runs SYNC_FLUSH (an acknowledgement means durable) with every
//! delay level at 1 s. Delayed sends and send-backs go on for 1.5 s and the
//! broker is killed right after, so by then some have been delivered, some
//! are due and some are still waiting. After a restart on the same store,
//! the test waits (bounded) until every real-topic queue holds what was
//! acknowledged, waits a little longer for late duplicates, kills the broker
//! again and reads the store with the engine: each key exactly once.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use engine::record::{decode, find_property, parse_offset_msg_id, Decoded};
use engine::{AcceptAll, MessageStore};
use frontends::namesrv::NameServer;
use frontends::remoting::codes::{request, response};
use frontends::remoting::{RemotingClient, RemotingCommand};
use tokio::time::timeout;

use common::process::BrokerProcess;
use common::T;

const DELAYED_TOPIC: &str = "DelayKill";
const RETRY_SOURCE: &str = "RetryKill";
const GROUP: &str = "CGK";
const QUEUES: i32 = 4;

async fn call(client: &RemotingClient, addr: &str, req: RemotingCommand) -> RemotingCommand {
    timeout(T, client.invoke(addr, req, T))
        .await
        .expect("bounded")
        .expect("response")
}

fn delayed(queue: i32, key: &str, level: i32) -> RemotingCommand {
    common::send_v2(
        DELAYED_TOPIC,
        queue,
        key.as_bytes(),
        &format!("TAGS\u{1}T\u{2}DELAY\u{1}{level}\u{2}UNIQ_KEY\u{1}{key}\u{2}WAIT\u{1}true"),
    )
}

fn send_back(offset: i64, msg_id: &str) -> RemotingCommand {
    RemotingCommand::request(request::CONSUMER_SEND_MSG_BACK)
        .with_ext("group", GROUP)
        .with_ext("offset", offset)
        .with_ext("delayLevel", 0)
        .with_ext("originMsgId", msg_id)
        .with_ext("originTopic", RETRY_SOURCE)
}

async fn max_offset(client: &RemotingClient, addr: &str, topic: &str, queue: i32) -> i64 {
    let r = call(
        client,
        addr,
        RemotingCommand::request(request::GET_MAX_OFFSET)
            .with_ext("topic", topic)
            .with_ext("queueId", queue),
    )
    .await;
    if r.code != response::SUCCESS {
        return 0;
    }
    r.ext("offset").and_then(|v| v.parse().ok()).unwrap_or(0)
}

/// UNIQ_KEY → how many times it is in `topic` (all queues), read with the engine.
fn keys_in(store: &MessageStore, topic: &str, queues: i32) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for q in 0..queues {
        let mut offset = 0;
        loop {
            let r = store.get_messages(topic, q, offset, 64, &AcceptAll);
            if r.messages.is_empty() {
                break;
            }
            offset = r.next_begin_offset;
            for m in &r.messages {
                if let Decoded::Message(v) = decode(m.as_bytes(), true) {
                    let key = find_property(v.properties, "UNIQ_KEY").unwrap_or("?");
                    *out.entry(key.to_string()).or_insert(0) += 1;
                }
            }
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delayed_and_retried_messages_survive_kill_9_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let ns = NameServer::start("127.0.0.1:0").await.unwrap();
    let ns_addr = ns.local_addr().to_string();
    let port = common::free_port_pair();
    let args = [
        "flushDiskType=SYNC_FLUSH",
        "messageDelayLevel=1s 1s 1s 1s 1s 1s",
    ];
    let client = RemotingClient::default();

    let broker = BrokerProcess::start(dir.path(), &ns_addr, port, &args);
    let mut delayed_keys = Vec::new();
    let mut retry_keys = Vec::new();
    let start = Instant::now();
    let mut i = 0;
    while start.elapsed() < Duration::from_millis(1500) {
        // A delayed message...
        let key = format!("D{i}");
        let r = call(&client, &broker.addr, delayed(i % QUEUES, &key, 1 + i % 2)).await;
        assert_eq!(r.code, response::SUCCESS, "{:?}", r.remark);
        delayed_keys.push(key);
        // ...and every other round a message that its consumer sends back.
        if i % 2 == 0 {
            let key = format!("R{i}");
            let props = format!("TAGS\u{1}T\u{2}UNIQ_KEY\u{1}{key}\u{2}WAIT\u{1}true");
            let r = call(
                &client,
                &broker.addr,
                common::send_v2(RETRY_SOURCE, 0, key.as_bytes(), &props),
            )
            .await;
            assert_eq!(r.code, response::SUCCESS, "{:?}", r.remark);
            let msg_id = r.ext("msgId").expect("msgId").to_string();
            let (_, offset) = parse_offset_msg_id(&msg_id).expect("offsetMsgId");
            let r = call(&client, &broker.addr, send_back(offset, &msg_id)).await;
            assert_eq!(r.code, response::SUCCESS, "{:?}", r.remark);
            retry_keys.push(key);
        }
        i += 1;
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // Some deliveries have happened by now (the first sends are 1.5 s old),
    // others are due or still waiting.
    let delivered_before: i64 = {
        let mut n = 0;
        for q in 0..QUEUES {
            n += max_offset(&client, &broker.addr, DELAYED_TOPIC, q).await;
        }
        n
    };
    client.close_all();
    broker.kill9();
    assert!(
        delivered_before > 0 && (delivered_before as usize) < delayed_keys.len(),
        "the kill must fall in the middle of delivery: {delivered_before} of {} delivered",
        delayed_keys.len()
    );

    let broker = BrokerProcess::start(dir.path(), &ns_addr, port, &args);
    let retry_topic = format!("%RETRY%{GROUP}");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let mut delivered = 0;
        for q in 0..QUEUES {
            delivered += max_offset(&client, &broker.addr, DELAYED_TOPIC, q).await;
        }
        let retried = max_offset(&client, &broker.addr, &retry_topic, 0).await;
        if delivered as usize >= delayed_keys.len() && retried as usize >= retry_keys.len() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "after the restart only {delivered}/{} delayed and {retried}/{} retried messages arrived",
            delayed_keys.len(),
            retry_keys.len()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Room for a late duplicate to show up before the store is read.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    client.close_all();
    broker.kill9();
    timeout(T, ns.shutdown()).await.expect("namesrv stops");

    let settings = common::settings(dir.path(), "127.0.0.1:9".parse().unwrap(), port, &args);
    let store = MessageStore::open(settings.store).expect("store opens after kill -9");
    let delayed_seen = keys_in(&store, DELAYED_TOPIC, QUEUES);
    let retried_seen = keys_in(&store, &retry_topic, 1);
    store.abandon();
    for (expected, seen, what) in [
        (&delayed_keys, &delayed_seen, "delayed"),
        (&retry_keys, &retried_seen, "retried"),
    ] {
        let missing: Vec<_> = expected.iter().filter(|k| !seen.contains_key(*k)).collect();
        let doubled: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).collect();
        let strangers: Vec<_> = seen.keys().filter(|k| !expected.contains(k)).collect();
        assert!(missing.is_empty(), "{what}: lost {missing:?}");
        assert!(doubled.is_empty(), "{what}: delivered twice {doubled:?}");
        assert!(strangers.is_empty(), "{what}: unexpected {strangers:?}");
    }
    eprintln!(
        "{} delayed ({delivered_before} delivered before the kill) and {} retried messages, each exactly once",
        delayed_keys.len(),
        retry_keys.len()
    );
}
