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
