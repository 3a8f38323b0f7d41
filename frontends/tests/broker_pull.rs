//! PULL_MESSAGE over TCP: statuses, tag filtering, commit-on-pull and long
//! polling woken by a new message.

mod common;

use std::time::{Duration, Instant};

use frontends::remoting::codes::{request, response};
use frontends::remoting::RemotingCommand;
use tokio::time::timeout;

use common::{bodies, T};

fn send(topic: &str, queue: i32, body: &str, tag: &str) -> RemotingCommand {
    common::send_v2(
        topic,
        queue,
        body.as_bytes(),
        &format!("TAGS\u{1}{tag}\u{2}WAIT\u{1}true"),
    )
}

fn pull(
    topic: &str,
    queue: i32,
    offset: u64,
    sub: &str,
    flags: i32,
    suspend_ms: u64,
) -> RemotingCommand {
    RemotingCommand::request(request::PULL_MESSAGE)
        .with_ext("consumerGroup", "CG")
        .with_ext("topic", topic)
        .with_ext("queueId", queue)
        .with_ext("queueOffset", offset)
        .with_ext("maxMsgNums", 32)
        .with_ext("sysFlag", flags)
        .with_ext("commitOffset", 1)
        .with_ext("suspendTimeoutMillis", suspend_ms)
        .with_ext("subscription", sub)
        .with_ext("subVersion", 0)
        .with_ext("expressionType", "TAG")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pull_statuses_filter_commit_and_long_poll() {
    let dir = tempfile::tempdir().unwrap();
    let env = common::start(dir.path(), &[]).await;
    let c = &env.client;
    let a = env.addr.as_str();
    for i in 0..6 {
        let tag = if i % 2 == 0 { "TagA" } else { "TagC" };
        let r = timeout(T, c.invoke(a, send("PT", 0, &format!("m{i}"), tag), T))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(r.code, response::SUCCESS, "{:?}", r.remark);
    }
    // Everything from 0, with the subscription in the request (flag 0x4) and commit (0x1).
    let deadline = Instant::now() + T;
    let r = loop {
        let r = c.invoke(a, pull("PT", 0, 0, "*", 0x5, 0), T).await.unwrap();
        if r.code == response::SUCCESS || Instant::now() > deadline {
            break r;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    assert_eq!(r.code, response::SUCCESS);
    assert_eq!(bodies(&r), vec!["m0", "m1", "m2", "m3", "m4", "m5"]);
    assert_eq!(r.ext("nextBeginOffset"), Some("6"));
    assert_eq!(r.ext("maxOffset"), Some("6"));
    // Tag filter.
    let r = c
        .invoke(a, pull("PT", 0, 0, "TagA || TagB", 0x4, 0), T)
        .await
        .unwrap();
    assert_eq!(bodies(&r), vec!["m0", "m2", "m4"]);
    // Commit-on-pull stored commitOffset=1 for CG.
    let q = RemotingCommand::request(request::QUERY_CONSUMER_OFFSET)
        .with_ext("consumerGroup", "CG")
        .with_ext("topic", "PT")
        .with_ext("queueId", 0);
    let r = c.invoke(a, q, T).await.unwrap();
    assert_eq!(r.ext("offset"), Some("1"));
    // Offset corrections.
    let r = c.invoke(a, pull("PT", 0, 6, "*", 0x4, 0), T).await.unwrap();
    assert_eq!(r.code, response::PULL_NOT_FOUND);
    let r = c
        .invoke(a, pull("PT", 0, 99, "*", 0x4, 0), T)
        .await
        .unwrap();
    assert_eq!(r.code, response::PULL_OFFSET_MOVED);
    assert_eq!(r.ext("nextBeginOffset"), Some("6"));
    let r = c
        .invoke(a, pull("NOPE", 0, 0, "*", 0x4, 0), T)
        .await
        .unwrap();
    assert_eq!(r.code, response::TOPIC_NOT_EXIST);

    // Long polling: a held pull is answered as soon as a matching message arrives.
    let held = {
        let c = c.clone();
        let a = a.to_string();
        tokio::spawn(async move {
            let start = Instant::now();
            let r = c
                .invoke(&a, pull("PT", 0, 6, "TagA", 0x6, 8000), T)
                .await
                .unwrap();
            (r, start.elapsed())
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        !held.is_finished(),
        "pull with nothing to read must be held"
    );
    // A non-matching message does not answer it.
    c.invoke(a, send("PT", 0, "skip", "TagC"), T).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(
        !held.is_finished(),
        "non-matching message must not wake the pull"
    );
    let sent_at = Instant::now();
    c.invoke(a, send("PT", 0, "wake", "TagA"), T).await.unwrap();
    let (r, held_for) = timeout(T, held).await.unwrap().unwrap();
    assert_eq!(r.code, response::SUCCESS);
    assert_eq!(bodies(&r), vec!["wake"]);
    assert!(
        held_for < Duration::from_secs(5),
        "answered by arrival, not timeout"
    );
    assert!(sent_at.elapsed() < Duration::from_secs(2));

    // A held pull with nothing arriving is answered PULL_NOT_FOUND at its timeout.
    let start = Instant::now();
    let r = c
        .invoke(a, pull("PT", 0, 8, "*", 0x6, 300), T)
        .await
        .unwrap();
    assert_eq!(r.code, response::PULL_NOT_FOUND);
    assert!(start.elapsed() >= Duration::from_millis(250));
    env.stop().await;
}
