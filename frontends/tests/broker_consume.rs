//! The consume side against RocketMQ 4.9's answers: pull status codes for
//! odd offsets, group permissions, offset lookups, OFFSET_MOVED_EVENT.

mod common;

use frontends::remoting::codes::{request, response};
use frontends::remoting::RemotingCommand;
use serde_json::json;

use common::{pull_everything, Env};

async fn send(env: &Env, topic: &str, queue: i32, body: &str) {
    let r = env
        .call(common::send_v2(
            topic,
            queue,
            body.as_bytes(),
            "TAGS\u{1}A\u{2}WAIT\u{1}true",
        ))
        .await;
    assert_eq!(r.code, response::SUCCESS, "{:?}", r.remark);
}

/// A heartbeat registering `client` in consumer `group` with `model`
/// (`CLUSTERING` / `BROADCASTING`), subscribed to `topic` with `*`.
fn heartbeat(client: &str, group: &str, model: &str, topic: &str) -> RemotingCommand {
    let body = json!({
        "clientID": client,
        "consumerDataSet": [{
            "groupName": group,
            "consumeType": "CONSUME_PASSIVELY",
            "messageModel": model,
            "consumeFromWhere": "CONSUME_FROM_LAST_OFFSET",
            "subscriptionDataSet": [{"topic": topic, "subString": "*", "subVersion": 1}],
            "unitMode": false
        }],
        "producerDataSet": []
    });
    RemotingCommand::request(request::HEART_BEAT).with_body(body.to_string())
}

/// A group with `consumeBroadcastEnable=false` refuses pulls of its
/// broadcasting consumers (those relying on the heartbeat's subscription)
/// with NO_PERMISSION, as RocketMQ's PullMessageProcessor does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broadcast_pull_refused_when_group_disables_it() {
    let dir = tempfile::tempdir().unwrap();
    let env = common::start(dir.path(), &[]).await;
    send(&env, "BT", 0, "m0").await;
    let group = RemotingCommand::request(request::UPDATE_AND_CREATE_SUBSCRIPTIONGROUP)
        .with_body(json!({"groupName": "BG", "consumeBroadcastEnable": false}).to_string());
    assert_eq!(env.call(group).await.code, response::SUCCESS);
    let r = env.call(heartbeat("c1", "BG", "BROADCASTING", "BT")).await;
    assert_eq!(r.code, response::SUCCESS);
    // No SUBSCRIPTION flag: the heartbeat's subscription is used.
    let pull = pull_everything("BG", "BT", 0, 0).with_ext("sysFlag", 0);
    let r = env.call(pull.clone()).await;
    assert_eq!(r.code, response::NO_PERMISSION, "{:?}", r.remark);
    // A clustering consumer of the same group may pull.
    let r = env.call(heartbeat("c1", "BG", "CLUSTERING", "BT")).await;
    assert_eq!(r.code, response::SUCCESS);
    let r = env.call(pull).await;
    assert_eq!(r.code, response::SUCCESS, "{:?}", r.remark);
    env.stop().await;
}

/// Offset lookups (GET_MIN/MAX_OFFSET, SEARCH_OFFSET_BY_TIMESTAMP,
/// GET_EARLIEST_MSG_STORETIME, QUERY_CONSUMER_OFFSET) of queues that do not
/// exist answer as for an empty queue and leave no queue behind: any
/// client naming arbitrary topics and queue ids must not grow the store's
/// queue table.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offset_lookups_of_unknown_queues_create_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let env = common::start(dir.path(), &[]).await;
    for q in 0..50 {
        for code in [
            request::GET_MAX_OFFSET,
            request::GET_MIN_OFFSET,
            request::SEARCH_OFFSET_BY_TIMESTAMP,
        ] {
            let r = env
                .call(
                    RemotingCommand::request(code)
                        .with_ext("topic", "Ghost")
                        .with_ext("queueId", q * 1000)
                        .with_ext("timestamp", 1),
                )
                .await;
            assert_eq!(r.code, response::SUCCESS);
            assert_eq!(r.ext("offset"), Some("0"));
        }
        let r = env
            .call(
                RemotingCommand::request(request::GET_EARLIEST_MSG_STORETIME)
                    .with_ext("topic", "Ghost")
                    .with_ext("queueId", q * 1000),
            )
            .await;
        assert_eq!(r.ext("timestamp"), Some("-1"));
        let r = env
            .call(
                RemotingCommand::request(request::QUERY_CONSUMER_OFFSET)
                    .with_ext("consumerGroup", "G")
                    .with_ext("topic", "Ghost")
                    .with_ext("queueId", q * 1000),
            )
            .await;
        assert_eq!((r.code, r.ext("offset")), (response::SUCCESS, Some("0")));
    }
    let queues = env.broker.broker().store.queue_ids("Ghost");
    assert!(queues.is_empty(), "lookups created queues {queues:?}");
    env.stop().await;
}

/// A pull from a negative offset of a queue holding messages is below the
/// queue's min offset: RocketMQ answers OFFSET_TOO_SMALL (PULL_OFFSET_MOVED,
/// nextBeginOffset = min offset) and delivers nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pull_from_negative_offset_is_offset_moved() {
    let dir = tempfile::tempdir().unwrap();
    let env = common::start(dir.path(), &[]).await;
    for i in 0..3 {
        send(&env, "NT", 0, &format!("m{i}")).await;
    }
    let r = env.call(pull_everything("CG", "NT", 0, -5)).await;
    assert_eq!(r.code, response::PULL_OFFSET_MOVED, "{:?}", r.remark);
    assert_eq!(r.remark.as_deref(), Some("OFFSET_TOO_SMALL"));
    assert_eq!(r.ext("nextBeginOffset"), Some("0"));
    assert_eq!(r.ext("maxOffset"), Some("3"));
    assert!(r.body.is_empty());
    // An empty queue: NO_MESSAGE_IN_QUEUE, moved to 0.
    let r = env.call(pull_everything("CG", "NT", 1, -5)).await;
    assert_eq!(r.code, response::PULL_OFFSET_MOVED, "{:?}", r.remark);
    assert_eq!(r.ext("nextBeginOffset"), Some("0"));
    env.stop().await;
}

/// A negative committed offset counts as none (ConsumerManageProcessor:
/// `offset >= 0`): QUERY_CONSUMER_OFFSET answers as for a group that never
/// committed, never the negative value.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn negative_committed_offset_is_not_returned() {
    let dir = tempfile::tempdir().unwrap();
    let env = common::start(dir.path(), &[]).await;
    send(&env, "QT", 0, "m0").await;
    let update = RemotingCommand::request(request::UPDATE_CONSUMER_OFFSET)
        .with_ext("consumerGroup", "G")
        .with_ext("topic", "QT")
        .with_ext("queueId", 0)
        .with_ext("commitOffset", -1);
    assert_eq!(env.call(update).await.code, response::SUCCESS);
    let query = RemotingCommand::request(request::QUERY_CONSUMER_OFFSET)
        .with_ext("consumerGroup", "G")
        .with_ext("topic", "QT")
        .with_ext("queueId", 0);
    let r = env.call(query).await;
    assert_eq!((r.code, r.ext("offset")), (response::SUCCESS, Some("0")));
    env.stop().await;
}

/// Every PULL_OFFSET_MOVED on a master records an OFFSET_MOVED_EVENT
/// message (queue 0; tags and keys = the group; body the fastjson
/// OffsetMovedEvent), as RocketMQ's PullMessageProcessor does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offset_moved_pull_records_an_offset_moved_event() {
    let dir = tempfile::tempdir().unwrap();
    let env = common::start(dir.path(), &[]).await;
    for i in 0..3 {
        send(&env, "MT", 1, &format!("m{i}")).await;
    }
    let r = env.call(pull_everything("MG", "MT", 1, 99)).await;
    assert_eq!(r.code, response::PULL_OFFSET_MOVED);
    // Not moved: no event.
    let r = env.call(pull_everything("MG", "MT", 1, 0)).await;
    assert_eq!(r.code, response::SUCCESS);
    let deadline = std::time::Instant::now() + common::T;
    let events = loop {
        let events = common::stored(&env, "OFFSET_MOVED_EVENT", 0);
        if !events.is_empty() || std::time::Instant::now() > deadline {
            break events;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    };
    assert_eq!(events.len(), 1);
    let engine::record::Decoded::Message(v) = engine::record::decode(&events[0], true) else {
        panic!("not a record");
    };
    assert_eq!(
        std::str::from_utf8(v.body).unwrap(),
        "{\"consumerGroup\":\"MG\",\"messageQueue\":{\"brokerName\":\"broker-test\",\"queueId\":1,\"topic\":\"MT\"},\"offsetNew\":3,\"offsetRequest\":99}"
    );
    assert_eq!(v.properties, "KEYS\u{1}MG\u{2}DELAY\u{1}0\u{2}TAGS\u{1}MG");
    assert_eq!((v.queue_id, v.sys_flag), (0, 0));
    env.stop().await;
}

/// A consumerOffset.json that, like its backup, is not JSON stops the
/// broker from starting (as RocketMQ's does) rather than starting with no
/// offsets, which would move every group to its consumeFromWhere and skip
/// what it had not consumed. One readable file of the two is enough.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreadable_consumer_offsets_refuse_start() {
    let dir = tempfile::tempdir().unwrap();
    let env = common::start(dir.path(), &[]).await;
    let update = RemotingCommand::request(request::UPDATE_CONSUMER_OFFSET)
        .with_ext("consumerGroup", "G")
        .with_ext("topic", "T")
        .with_ext("queueId", 0)
        .with_ext("commitOffset", 7);
    assert_eq!(env.call(update).await.code, response::SUCCESS);
    let ns = env.ns.local_addr();
    env.stop().await;
    let file = dir.path().join("config").join("consumerOffset.json");
    let bak = dir.path().join("config").join("consumerOffset.json.bak");
    let good = std::fs::read(&file).unwrap();
    std::fs::write(&file, b"{\"offsetTable\":{\"T@G\":{0:7").unwrap();
    std::fs::write(&bak, b"\0\0\0\0").unwrap();
    common::assert_start_refused(dir.path(), ns, "consumerOffset.json").await;
    // With the backup readable the broker starts and keeps the offset.
    std::fs::write(&bak, good).unwrap();
    let env = common::start(dir.path(), &[]).await;
    let query = RemotingCommand::request(request::QUERY_CONSUMER_OFFSET)
        .with_ext("consumerGroup", "G")
        .with_ext("topic", "T")
        .with_ext("queueId", 0);
    assert_eq!(env.call(query).await.ext("offset"), Some("7"));
    env.stop().await;
}

/// A suspending pull at a damaged consume-queue entry (OFFSET_FOUND_NULL,
/// PULL_NOT_FOUND with nextBeginOffset at the entry) is held, not answered
/// at once: answered at once, the consumer pulls the same entry again in a
/// tight loop. Held like RocketMQ's hold service holds it (re-run at its
/// next check, 5 s at most), or until a new message arrives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pull_at_a_damaged_entry_is_held() {
    let dir = tempfile::tempdir().unwrap();
    let env = common::start(dir.path(), &[]).await;
    for i in 0..4 {
        send(&env, "DT", 0, &format!("m{i}")).await;
    }
    env.stop().await;
    // Entry 2 points 4 bytes past its record (PHYSICALOFFSET is its first
    // 8 bytes).
    let path = dir
        .path()
        .join("consumequeue")
        .join("DT")
        .join("0")
        .join(format!("{:020}", 0));
    let mut cq = std::fs::read(&path).unwrap();
    let mut phys = [0u8; 8];
    phys.copy_from_slice(&cq[40..48]);
    cq[40..48].copy_from_slice(&(i64::from_be_bytes(phys) + 4).to_be_bytes());
    std::fs::write(&path, &cq).unwrap();

    let env = common::start(dir.path(), &[]).await;
    let held = pull_everything("CG", "DT", 0, 2)
        .with_ext("sysFlag", 0x6)
        .with_ext("suspendTimeoutMillis", 1500);
    let start = std::time::Instant::now();
    let r = env.call(held).await;
    let took = start.elapsed();
    assert_eq!(r.code, response::PULL_NOT_FOUND, "{:?}", r.remark);
    assert_eq!(r.ext("nextBeginOffset"), Some("2"));
    assert!(
        took >= std::time::Duration::from_millis(1200),
        "answered after {took:?}, not held"
    );
    env.stop().await;
}
