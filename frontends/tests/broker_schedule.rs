//! Delayed messages and retries over TCP (semantics.md §3, §4): delivery
//! time, exactly-once delivery across restarts (clean, and with a stale
//! delayOffset.json as after a crash), CONSUMER_SEND_MSG_BACK into
//! `%RETRY%` after its delay and into `%DLQ%` past the limit.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use engine::record::{decode, parse_offset_msg_id, Decoded};
use frontends::remoting::codes::{request, response};
use frontends::remoting::RemotingCommand;

use common::{Env, T};

const SCHEDULE: &str = "SCHEDULE_TOPIC_XXXX";

/// A stored record, owned.
#[derive(Debug, Clone)]
struct Rec {
    store_timestamp: i64,
    physical_offset: i64,
    queue_id: i32,
    reconsume_times: i32,
    body: String,
    properties: String,
}

impl Rec {
    fn prop(&self, key: &str) -> Option<&str> {
        engine::record::find_property(&self.properties, key)
    }
}

fn records(env: &Env, topic: &str, queue: i32) -> Vec<Rec> {
    common::stored(env, topic, queue)
        .iter()
        .filter_map(|s| match decode(s, false) {
            Decoded::Message(v) => Some(Rec {
                store_timestamp: v.store_timestamp,
                physical_offset: v.physical_offset,
                queue_id: v.queue_id,
                reconsume_times: v.reconsume_times,
                body: String::from_utf8_lossy(v.body).to_string(),
                properties: v.properties.to_string(),
            }),
            _ => None,
        })
        .collect()
}

/// Waits (bounded) until `topic`/`queue` holds `n` records.
async fn wait_records(env: &Env, topic: &str, queue: i32, n: usize, within: Duration) -> Vec<Rec> {
    let deadline = Instant::now() + within;
    loop {
        let r = records(env, topic, queue);
        if r.len() >= n || Instant::now() > deadline {
            return r;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn delayed(topic: &str, queue: i32, body: &str, level: i32, key: &str) -> RemotingCommand {
    common::send_v2(
        topic,
        queue,
        body.as_bytes(),
        &format!("TAGS\u{1}TagA\u{2}DELAY\u{1}{level}\u{2}UNIQ_KEY\u{1}{key}\u{2}WAIT\u{1}true"),
    )
}

/// Store-time delay of a delivered copy after its scheduled record.
fn lateness(scheduled: &Rec, delivered: &Rec, delay_ms: i64) -> i64 {
    delivered.store_timestamp - scheduled.store_timestamp - delay_ms
}

fn delay_offsets(dir: &Path) -> String {
    std::fs::read_to_string(dir.join("config").join("delayOffset.json")).unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delayed_messages_are_delivered_on_time_once_across_restarts() {
    let dir = tempfile::tempdir().unwrap();
    // delayOffset.json only moves past deliveries that are durable: flush
    // the (ASYNC_FLUSH) commit log often so the file follows quickly.
    let quick_flush = ["flushCommitLogThoroughInterval=200"];
    let env = common::start(dir.path(), &quick_flush).await;

    // Level 1 (1 s) to DT queue 2, level 2 (5 s) to DT queue 1.
    let r = env.call(delayed("DT", 2, "one", 1, "K1")).await;
    assert_eq!(r.code, response::SUCCESS, "{:?}", r.remark);
    assert_eq!(r.ext("queueId"), Some("2"), "original queue reported");
    assert_eq!(
        r.ext("queueOffset"),
        Some("0"),
        "offset in the schedule queue"
    );
    let r = env.call(delayed("DT", 1, "five", 2, "K2")).await;
    assert_eq!(r.code, response::SUCCESS, "{:?}", r.remark);
    assert_eq!(r.ext("queueId"), Some("1"));
    assert_eq!(r.ext("queueOffset"), Some("0"));
    // A level above the max is clamped to it.
    let r = env.call(delayed("DT", 0, "max", 99, "K3")).await;
    assert_eq!(r.code, response::SUCCESS, "{:?}", r.remark);

    let s1 = wait_records(&env, SCHEDULE, 0, 1, T).await;
    assert_eq!(s1.len(), 1);
    assert_eq!(s1[0].prop("REAL_TOPIC"), Some("DT"));
    assert_eq!(s1[0].prop("REAL_QID"), Some("2"));
    assert_eq!(s1[0].prop("WAIT"), Some("true"), "delayed keeps WAIT");
    let s17 = wait_records(&env, SCHEDULE, 17, 1, T).await;
    assert_eq!(s17[0].prop("DELAY"), Some("18"));
    assert!(records(&env, "DT", 2).is_empty(), "not delivered at once");

    let d1 = wait_records(&env, "DT", 2, 1, T).await;
    assert_eq!(d1.len(), 1, "level 1 delivered");
    let late = lateness(&s1[0], &d1[0], 1000);
    eprintln!("level 1 delivered {late} ms after due");
    assert!((0..=100).contains(&late), "level 1 lateness {late} ms");
    assert_eq!(d1[0].body, "one");
    assert_eq!(d1[0].queue_id, 2);
    assert_eq!(d1[0].prop("REAL_TOPIC"), Some("DT"));
    assert_eq!(d1[0].prop("DELAY"), Some("1"));
    assert_eq!(d1[0].prop("UNIQ_KEY"), Some("K1"));
    // The tag code was recomputed: a tag-filtered pull finds it.
    let tagged = env.broker.broker().store.get_messages(
        "DT",
        2,
        0,
        8,
        &engine::TagCodes(vec![engine::record::java_string_hash("TagA")]),
    );
    assert_eq!(tagged.messages.len(), 1);

    // Restart before the 5 s message is due.
    let waited = Instant::now();
    let deadline = Instant::now() + Duration::from_secs(2);
    while !delay_offsets(dir.path()).contains("1:1") && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        delay_offsets(dir.path()).contains("1:1"),
        "{}",
        delay_offsets(dir.path())
    );
    eprintln!("delayOffset.json caught up in {:?}", waited.elapsed());
    env.stop().await;
    let text = delay_offsets(dir.path());
    assert!(
        text.contains("\t\t1:1,") && text.contains("\t\t2:0,"),
        "{text}"
    );

    let env = common::start(dir.path(), &quick_flush).await;
    let r = env
        .call(RemotingCommand::request(request::GET_ALL_DELAY_OFFSET))
        .await;
    assert_eq!(r.code, response::SUCCESS);
    let body = String::from_utf8_lossy(&r.body).to_string();
    assert!(body.contains("1:1") && body.contains("2:0"), "{body}");
    let s2 = records(&env, SCHEDULE, 1);
    let d2 = wait_records(&env, "DT", 1, 1, T).await;
    assert_eq!(d2.len(), 1, "level 2 delivered after the restart");
    let late = lateness(&s2[0], &d2[0], 5000);
    eprintln!("level 2 delivered {late} ms after due (across a restart)");
    assert!((0..=100).contains(&late), "level 2 lateness {late} ms");
    assert_eq!(
        records(&env, "DT", 2).len(),
        1,
        "level 1 not delivered twice"
    );
    env.stop().await;
    assert!(delay_offsets(dir.path()).contains("2:1"));

    // As after a crash between delivery and offset write: the file is stale,
    // yet nothing is delivered again.
    std::fs::write(
        dir.path().join("config").join("delayOffset.json"),
        "{\"offsetTable\":{1:0,2:0}}",
    )
    .unwrap();
    let env = common::start(dir.path(), &quick_flush).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(records(&env, "DT", 2).len(), 1, "no duplicate of level 1");
    assert_eq!(records(&env, "DT", 1).len(), 1, "no duplicate of level 2");
    let r = env
        .call(RemotingCommand::request(request::GET_ALL_DELAY_OFFSET))
        .await;
    let body = String::from_utf8_lossy(&r.body).to_string();
    assert!(body.contains("1:1") && body.contains("2:1"), "{body}");
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_with_delay_is_illegal() {
    let dir = tempfile::tempdir().unwrap();
    let env = common::start(dir.path(), &[]).await;
    let mut req = common::send_v2("BT", 0, b"whatever", "DELAY\u{1}1").with_ext("m", true);
    req.code = request::SEND_BATCH_MESSAGE;
    let r = env.call(req).await;
    assert_eq!(r.code, response::MESSAGE_ILLEGAL, "{:?}", r.remark);
    env.stop().await;
}

/// A DELAY that is not a number fails the send (Java's store throws on
/// it) instead of storing the message undelayed; nothing is stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unparsable_delay_fails_the_send() {
    let dir = tempfile::tempdir().unwrap();
    let env = common::start(dir.path(), &[]).await;
    for props in [
        "DELAY\u{1}soon",
        "DELAY\u{1}-",
        "TRAN_MSG\u{1}true\u{2}DELAY\u{1}3s",
    ] {
        let r = env.call(common::send_v2("UD", 0, b"x", props)).await;
        assert_eq!(r.code, response::SYSTEM_ERROR, "{props:?}: {:?}", r.remark);
        assert!(
            r.remark.as_deref().unwrap_or("").contains("DELAY"),
            "{:?}",
            r.remark
        );
    }
    let mut batch = common::send_v2("UD", 0, b"whatever", "DELAY\u{1}x").with_ext("m", true);
    batch.code = request::SEND_BATCH_MESSAGE;
    assert_eq!(env.call(batch).await.code, response::SYSTEM_ERROR);
    assert!(records(&env, "UD", 0).is_empty());
    assert!(records(&env, SCHEDULE, 0).is_empty());
    // A number still works.
    let r = env
        .call(common::send_v2("UD", 0, b"x", "DELAY\u{1}0"))
        .await;
    assert_eq!(r.code, response::SUCCESS, "{:?}", r.remark);
    env.stop().await;
}

/// A delayOffset.json that, like its backup, is not JSON stops the broker
/// from starting (as RocketMQ's does): starting each level from its
/// queue's start would deliver every delayed message in the log again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreadable_delay_offsets_refuse_start() {
    let dir = tempfile::tempdir().unwrap();
    let env = common::start(dir.path(), &[]).await;
    let ns = env.ns.local_addr();
    env.stop().await;
    let file = dir.path().join("config").join("delayOffset.json");
    std::fs::write(&file, b"{\"offsetTable\":{1:").unwrap();
    std::fs::write(file.with_extension("json.bak"), b"\0\0").unwrap();
    common::assert_start_refused(dir.path(), ns, "delayOffset.json").await;
    // An empty file counts as none: the broker starts.
    std::fs::write(&file, b"").unwrap();
    std::fs::remove_file(file.with_extension("json.bak")).unwrap();
    let env = common::start(dir.path(), &[]).await;
    env.stop().await;
}

fn send_back(offset: i64, msg_id: &str, delay_level: i32, max: Option<i32>) -> RemotingCommand {
    let mut r = RemotingCommand::request(request::CONSUMER_SEND_MSG_BACK)
        .with_ext("group", "CG")
        .with_ext("offset", offset)
        .with_ext("delayLevel", delay_level)
        .with_ext("originMsgId", msg_id)
        .with_ext("originTopic", "RT");
    if let Some(m) = max {
        r = r.with_ext("maxReconsumeTimes", m);
        r.version = 121;
    }
    r
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_back_retries_after_its_delay_then_dead_letters() {
    let dir = tempfile::tempdir().unwrap();
    // Every level 1 s, so the first retry (level 3) is quick.
    let env = common::start(dir.path(), &["messageDelayLevel=1s 1s 1s 1s 1s 1s"]).await;
    let r = env
        .call(common::send_v2(
            "RT",
            0,
            b"retry me",
            "TAGS\u{1}T\u{2}UNIQ_KEY\u{1}U1",
        ))
        .await;
    assert_eq!(r.code, response::SUCCESS);
    let msg_id = r.ext("msgId").unwrap().to_string();
    let (_, offset) = parse_offset_msg_id(&msg_id).unwrap();

    let r = env.call(send_back(offset, &msg_id, 0, None)).await;
    assert_eq!(r.code, response::SUCCESS, "{:?}", r.remark);
    let sched = wait_records(&env, SCHEDULE, 2, 1, T).await;
    assert_eq!(sched.len(), 1, "reconsumeTimes 0 waits at level 3");
    assert_eq!(sched[0].prop("REAL_TOPIC"), Some("%RETRY%CG"));
    let retry_tc = env.broker.broker().topics.get("%RETRY%CG").unwrap();
    assert_eq!((retry_tc.read_queue_nums, retry_tc.perm), (1, 6));

    let retried = wait_records(&env, "%RETRY%CG", 0, 1, T).await;
    assert_eq!(retried.len(), 1, "retry delivered");
    let late = lateness(&sched[0], &retried[0], 1000);
    eprintln!("retry delivered {late} ms after due");
    assert!((0..=100).contains(&late), "retry lateness {late} ms");
    let m = &retried[0];
    assert_eq!(m.body, "retry me");
    assert_eq!(m.reconsume_times, 1);
    assert_eq!(m.prop("RETRY_TOPIC"), Some("RT"));
    assert_eq!(m.prop("ORIGIN_MESSAGE_ID"), Some(msg_id.as_str()));
    assert_eq!(m.prop("UNIQ_KEY"), Some("U1"));

    // Past maxReconsumeTimes (1, from the header of a 4.x request): DLQ, no delay.
    let r = env
        .call(send_back(m.physical_offset, &msg_id, 0, Some(1)))
        .await;
    assert_eq!(r.code, response::SUCCESS, "{:?}", r.remark);
    let dlq = wait_records(&env, "%DLQ%CG", 0, 1, Duration::from_millis(500)).await;
    assert_eq!(dlq.len(), 1, "dead-lettered at once");
    assert_eq!(dlq[0].reconsume_times, 2);
    assert_eq!(dlq[0].prop("DELAY"), Some("0"));
    let dlq_tc = env.broker.broker().topics.get("%DLQ%CG").unwrap();
    assert_eq!((dlq_tc.read_queue_nums, dlq_tc.perm), (1, 6));
    // Nothing else reached the retry topic.
    assert_eq!(records(&env, "%RETRY%CG", 0).len(), 1);
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_delayed_messages_each_delivered_once_on_time() {
    let dir = tempfile::tempdir().unwrap();
    let env = common::start(dir.path(), &[]).await;
    let n = 300;
    for i in 0..n {
        let r = env
            .call(delayed("MT", i % 4, &format!("m{i}"), 1, &format!("K{i}")))
            .await;
        assert_eq!(r.code, response::SUCCESS, "{:?}", r.remark);
    }
    let scheduled = wait_records(&env, SCHEDULE, 0, n as usize, T).await;
    assert_eq!(scheduled.len(), n as usize);
    let deadline = Instant::now() + T;
    let delivered = loop {
        let all: Vec<Rec> = (0..4).flat_map(|q| records(&env, "MT", q)).collect();
        if all.len() >= n as usize || Instant::now() > deadline {
            break all;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let again: usize = (0..4).map(|q| records(&env, "MT", q).len()).sum();
    assert_eq!(again, n as usize, "each delivered exactly once");
    let by_body: std::collections::HashMap<_, _> =
        scheduled.iter().map(|r| (r.body.clone(), r)).collect();
    let mut worst = 0;
    for d in &delivered {
        let s = by_body[&d.body];
        let late = lateness(s, d, 1000);
        assert!(late >= 0, "{} delivered {late} ms early", d.body);
        worst = worst.max(late);
        assert_eq!(Some(d.queue_id.to_string().as_str()), s.prop("REAL_QID"));
    }
    eprintln!("{n} level-1 messages: worst lateness {worst} ms");
    assert!(worst <= 100, "worst lateness {worst} ms");
    env.stop().await;
}
