//! SQL92 property filtering over TCP (semantics.md §8): pulls with an
//! SQL92 subscription return exactly the matching messages, heartbeat-
//! registered SQL92 subscriptions, CHECK_CLIENT_CONFIG, long polling woken
//! by a matching message only, and the refusals (bad expression, filtering
//! switched off). The C++ client 0.4.4 has no SQL selector, so these
//! protocol-level tests are the proof.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use frontends::remoting::codes::{request, response};
use frontends::remoting::RemotingCommand;
use tokio::time::timeout;

use common::{bodies, Env, T};

const TOPIC: &str = "SqlT";
const FLAG_SUSPEND: i32 = 0x2;
const FLAG_SUBSCRIPTION: i32 = 0x4;

/// One test message and the properties it is sent with.
struct Msg {
    body: String,
    tag: &'static str,
    a: Option<i64>,
    color: &'static str,
    name: Option<&'static str>,
    price: f64,
}

impl Msg {
    fn properties(&self) -> String {
        let mut p = vec![
            format!("TAGS\u{1}{}", self.tag),
            format!("color\u{1}{}", self.color),
            format!("price\u{1}{}", self.price),
            "WAIT\u{1}true".to_string(),
        ];
        if let Some(a) = self.a {
            p.push(format!("a\u{1}{a}"));
        }
        if let Some(n) = self.name {
            p.push(format!("name\u{1}{n}"));
        }
        p.join("\u{2}")
    }
}

/// Twelve messages: `a` = i except message 7 (no `a`), tags cycling
/// A/B/C, colors alternating, price = 1.5·i, one with a quote in `name`.
fn messages() -> Vec<Msg> {
    (0..12)
        .map(|i| Msg {
            body: format!("m{i}"),
            tag: ["TagA", "TagB", "TagC"][i % 3],
            a: (i != 7).then_some(i as i64),
            color: if i % 2 == 0 { "red" } else { "blue" },
            name: (i == 4).then_some("it's"),
            price: i as f64 * 1.5,
        })
        .collect()
}

fn pull(
    group: &str,
    offset: u64,
    expr: &str,
    expr_type: &str,
    flags: i32,
    sub_version: i64,
    suspend_ms: u64,
) -> RemotingCommand {
    pull_topic(
        TOPIC,
        group,
        offset,
        expr,
        expr_type,
        flags,
        sub_version,
        suspend_ms,
    )
}

#[allow(clippy::too_many_arguments)]
fn pull_topic(
    topic: &str,
    group: &str,
    offset: u64,
    expr: &str,
    expr_type: &str,
    flags: i32,
    sub_version: i64,
    suspend_ms: u64,
) -> RemotingCommand {
    RemotingCommand::request(request::PULL_MESSAGE)
        .with_ext("consumerGroup", group)
        .with_ext("topic", topic)
        .with_ext("queueId", 0)
        .with_ext("queueOffset", offset)
        .with_ext("maxMsgNums", 32)
        .with_ext("sysFlag", flags)
        .with_ext("commitOffset", 0)
        .with_ext("suspendTimeoutMillis", suspend_ms)
        .with_ext("subscription", expr)
        .with_ext("subVersion", sub_version)
        .with_ext("expressionType", expr_type)
}

/// A pull with its own SQL92 subscription, from offset 0.
fn pull_sql(expr: &str) -> RemotingCommand {
    pull("CG", 0, expr, "SQL92", FLAG_SUBSCRIPTION, 0, 0)
}

fn heartbeat(group: &str, expr: &str, sub_version: i64) -> RemotingCommand {
    let sub = serde_json::json!({
        "topic": TOPIC,
        "subString": expr,
        "expressionType": "SQL92",
        "subVersion": sub_version,
        "tagsSet": [],
        "codeSet": [],
        "classFilterMode": false,
    });
    let body = serde_json::json!({
        "clientID": "127.0.0.1@sql-test",
        "producerDataSet": [],
        "consumerDataSet": [{
            "groupName": group,
            "consumeType": "CONSUME_PASSIVELY",
            "messageModel": "CLUSTERING",
            "consumeFromWhere": "CONSUME_FROM_FIRST_OFFSET",
            "unitMode": false,
            "subscriptionDataSet": [sub],
        }],
    });
    RemotingCommand::request(request::HEART_BEAT).with_body(body.to_string())
}

fn check_client_config(expr: &str) -> RemotingCommand {
    let body = serde_json::json!({
        "clientId": "127.0.0.1@sql-test",
        "group": "CG",
        "subscriptionData": {
            "topic": TOPIC,
            "subString": expr,
            "expressionType": "SQL92",
            "subVersion": 1,
        },
    });
    RemotingCommand::request(request::CHECK_CLIENT_CONFIG).with_body(body.to_string())
}

/// A broker on a store in `dir` with the `extra` settings, holding the
/// `messages()` (returned with it), all readable.
async fn start_with_messages(dir: &Path, extra: &[&str]) -> (Env, Vec<Msg>) {
    let env = common::start(dir, extra).await;
    let msgs = messages();
    send_all(&env, &msgs).await;
    (env, msgs)
}

/// Sends the messages and waits until all are readable.
async fn send_all(env: &Env, msgs: &[Msg]) {
    for m in msgs {
        let r = env
            .call(common::send_v2(
                TOPIC,
                0,
                m.body.as_bytes(),
                &m.properties(),
            ))
            .await;
        assert_eq!(r.code, response::SUCCESS, "{:?}", r.remark);
    }
    let deadline = Instant::now() + T;
    loop {
        let r = env
            .call(pull("CG", 0, "*", "TAG", FLAG_SUBSCRIPTION, 0, 0))
            .await;
        if r.code == response::SUCCESS && bodies(&r).len() == msgs.len() {
            return;
        }
        assert!(Instant::now() < deadline, "messages not readable in time");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Checks one pull answer against the messages a predicate selects.
fn assert_selects(r: &RemotingCommand, expr: &str, msgs: &[Msg], select: &dyn Fn(&Msg) -> bool) {
    let want: Vec<String> = msgs
        .iter()
        .filter(|m| select(m))
        .map(|m| m.body.clone())
        .collect();
    if want.is_empty() {
        assert_eq!(r.code, response::PULL_RETRY_IMMEDIATELY, "{expr}");
        assert_eq!(r.remark.as_deref(), Some("NO_MATCHED_MESSAGE"), "{expr}");
    } else {
        assert_eq!(r.code, response::SUCCESS, "{expr}: {:?}", r.remark);
        assert_eq!(bodies(r), want, "{expr}");
    }
    // Every entry was scanned, matched or not.
    assert_eq!(
        r.ext("nextBeginOffset"),
        Some(msgs.len().to_string().as_str()),
        "{expr}"
    );
}

type Case = (&'static str, fn(&Msg) -> bool);

const CASES: &[Case] = &[
    ("a > 5", |m| m.a.is_some_and(|a| a > 5)),
    ("a >= 3 AND a < 6", |m| {
        m.a.is_some_and(|a| (3..6).contains(&a))
    }),
    ("a <= 2 OR a = 10", |m| {
        m.a.is_some_and(|a| a <= 2 || a == 10)
    }),
    ("a <> 4", |m| m.a.is_some_and(|a| a != 4)),
    ("a BETWEEN 2 AND 4", |m| {
        m.a.is_some_and(|a| (2..=4).contains(&a))
    }),
    ("a NOT BETWEEN 2 AND 9", |m| {
        m.a.is_some_and(|a| !(2..=9).contains(&a))
    }),
    ("TAGS IN ('TagA', 'TagC')", |m| m.tag != "TagB"),
    ("TAGS NOT IN ('TagA')", |m| m.tag != "TagA"),
    ("TAGS = 'TagB'", |m| m.tag == "TagB"),
    ("color = 'red' OR a = 7", |m| m.color == "red"),
    ("NOT (color = 'red')", |m| m.color != "red"),
    ("a IS NULL", |m| m.a.is_none()),
    ("a IS NOT NULL AND color <> 'red'", |m| {
        m.a.is_some() && m.color != "red"
    }),
    ("name = 'it''s'", |m| m.name == Some("it's")),
    ("name IS NULL AND price >= 15.0", |m| {
        m.name.is_none() && m.price >= 15.0
    }),
    ("price > 10.5", |m| m.price > 10.5),
    ("(TAGS = 'TagB' OR TAGS = 'TagC') AND a <= 8", |m| {
        m.tag != "TagA" && m.a.is_some_and(|a| a <= 8)
    }),
    ("color = 'red' AND NOT (TAGS = 'TagA') OR a = 1", |m| {
        (m.color == "red" && m.tag != "TagA") || m.a == Some(1)
    }),
    ("tRuE", |_| true),
    ("FALSE", |_| false),
    ("color = 'green'", |_| false),
    // A missing property makes the comparison NULL: no match either way.
    ("missing = 1 OR missing <> 1", |_| false),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sql92_pulls_return_exactly_the_matching_messages() {
    let dir = tempfile::tempdir().unwrap();
    let (env, msgs) = start_with_messages(dir.path(), &["enablePropertyFilter=true"]).await;

    // The request's own subscription (SUBSCRIPTION flag).
    for (expr, select) in CASES {
        let r = env.call(pull_sql(expr)).await;
        assert_selects(&r, expr, &msgs, select);
    }

    // A bad expression is refused with the reason.
    let r = env.call(pull_sql("a > 'x'")).await;
    assert_eq!(r.code, response::SUBSCRIPTION_PARSE_FAILED);
    let remark = r.remark.unwrap_or_default();
    assert!(
        remark.starts_with("parse the consumer's subscription failed: Invalid MessageSelector:")
            && remark.contains("cannot be compared"),
        "{remark}"
    );
    let r = env.call(pull_sql("a = = 1")).await;
    assert_eq!(r.code, response::SUBSCRIPTION_PARSE_FAILED);
    assert!(r.remark.unwrap_or_default().contains("column 5"));
    let r = env.call(pull_sql("")).await;
    assert_eq!(r.code, response::SUBSCRIPTION_PARSE_FAILED);
    // An unknown expression type does not compile either.
    let r = env
        .call(pull("CG", 0, "a > 1", "XPATH", FLAG_SUBSCRIPTION, 0, 0))
        .await;
    assert_eq!(r.code, response::SUBSCRIPTION_PARSE_FAILED);

    // CHECK_CLIENT_CONFIG compiles the expression.
    let r = env
        .call(check_client_config("a > 5 AND TAGS = 'TagA'"))
        .await;
    assert_eq!(r.code, response::SUCCESS, "{:?}", r.remark);
    let r = env.call(check_client_config("a >")).await;
    assert_eq!(r.code, response::SUBSCRIPTION_PARSE_FAILED);
    assert!(r
        .remark
        .unwrap_or_default()
        .contains("unexpected end of expression"),);

    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heartbeat_registered_sql92_subscriptions() {
    let dir = tempfile::tempdir().unwrap();
    let (env, msgs) = start_with_messages(dir.path(), &["enablePropertyFilter=true"]).await;

    let r = env
        .call(heartbeat("SG", "a > 5 AND color = 'red'", 5))
        .await;
    assert_eq!(r.code, response::SUCCESS);
    // A pull without the SUBSCRIPTION flag uses the registered expression.
    let r = env.call(pull("SG", 0, "", "", 0, 5, 0)).await;
    assert_selects(&r, "registered", &msgs, &|m| {
        m.a.is_some_and(|a| a > 5) && m.color == "red"
    });
    // The client has a newer subscription than the broker.
    let r = env.call(pull("SG", 0, "", "", 0, 6, 0)).await;
    assert_eq!(r.code, response::SUBSCRIPTION_NOT_LATEST);

    // A newer heartbeat replaces the expression.
    let r = env.call(heartbeat("SG", "TAGS = 'TagC'", 6)).await;
    assert_eq!(r.code, response::SUCCESS);
    let r = env.call(pull("SG", 0, "", "", 0, 6, 0)).await;
    assert_selects(&r, "replaced", &msgs, &|m| m.tag == "TagC");

    // A newer heartbeat with a bad expression still succeeds (RocketMQ
    // logs and drops the filter); pulls relying on it get
    // FILTER_DATA_NOT_EXIST.
    let r = env.call(heartbeat("SG", "TAGS = ", 7)).await;
    assert_eq!(r.code, response::SUCCESS);
    let r = env.call(pull("SG", 0, "", "", 0, 7, 0)).await;
    assert_eq!(r.code, response::FILTER_DATA_NOT_EXIST, "{:?}", r.remark);
    // A group whose very first SQL92 subscription is bad: the same.
    let r = env.call(heartbeat("BAD", "a BETWEEN 9 AND 1", 1)).await;
    assert_eq!(r.code, response::SUCCESS);
    let r = env.call(pull("BAD", 0, "", "", 0, 1, 0)).await;
    assert_eq!(r.code, response::FILTER_DATA_NOT_EXIST);

    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_polling_wakes_on_a_matching_message_only() {
    let dir = tempfile::tempdir().unwrap();
    let (env, msgs) = start_with_messages(dir.path(), &["enablePropertyFilter=true"]).await;
    let end = msgs.len() as u64;

    let held = {
        let client = env.client.clone();
        let addr = env.addr.clone();
        tokio::spawn(async move {
            let start = Instant::now();
            let req = pull(
                "CG",
                end,
                "color = 'green' AND a > 100",
                "SQL92",
                FLAG_SUBSCRIPTION | FLAG_SUSPEND,
                0,
                8000,
            );
            let r = client.invoke(&addr, req, T).await.unwrap();
            (r, start.elapsed())
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!held.is_finished(), "nothing to read: the pull is held");
    // Messages that do not match do not answer it.
    for props in [
        "color\u{1}green\u{2}a\u{1}5",
        "color\u{1}red\u{2}a\u{1}500",
        "a\u{1}500",
    ] {
        let r = env.call(common::send_v2(TOPIC, 0, b"no", props)).await;
        assert_eq!(r.code, response::SUCCESS);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        !held.is_finished(),
        "non-matching messages must not wake it"
    );
    let r = env
        .call(common::send_v2(
            TOPIC,
            0,
            b"yes",
            "color\u{1}green\u{2}a\u{1}101",
        ))
        .await;
    assert_eq!(r.code, response::SUCCESS);
    let (r, held_for) = timeout(T, held).await.unwrap().unwrap();
    assert_eq!(r.code, response::SUCCESS, "{:?}", r.remark);
    assert_eq!(bodies(&r), vec!["yes"]);
    assert_eq!(
        r.ext("nextBeginOffset"),
        Some((end + 4).to_string().as_str())
    );
    assert!(
        held_for < Duration::from_secs(5),
        "woken by arrival, not timeout"
    );
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sql92_is_refused_when_property_filtering_is_off() {
    let dir = tempfile::tempdir().unwrap();
    // enablePropertyFilter defaults to false, as in RocketMQ.
    let (env, _) = start_with_messages(dir.path(), &[]).await;
    let not_supported = Some("The broker does not support consumer to filter message by SQL92");

    let r = env.call(pull_sql("a > 5")).await;
    assert_eq!(r.code, response::SYSTEM_ERROR);
    assert_eq!(r.remark.as_deref(), not_supported);
    // Whether or not the expression is valid (RocketMQ checks the switch
    // before using the compiled expression)…
    let r = env.call(pull_sql("a >")).await;
    assert_eq!(r.code, response::SYSTEM_ERROR);
    // …but an empty one is a parse failure first.
    let r = env.call(pull_sql("")).await;
    assert_eq!(r.code, response::SUBSCRIPTION_PARSE_FAILED);
    let r = env.call(check_client_config("a > 5")).await;
    assert_eq!(r.code, response::SYSTEM_ERROR);
    assert_eq!(r.remark.as_deref(), not_supported);

    // Heartbeat-registered: the filter is registered regardless of the
    // switch, the pull is refused by it.
    let r = env.call(heartbeat("SG", "a > 5", 1)).await;
    assert_eq!(r.code, response::SUCCESS);
    let r = env.call(pull("SG", 0, "", "", 0, 1, 0)).await;
    assert_eq!(r.code, response::SYSTEM_ERROR);
    assert_eq!(r.remark.as_deref(), not_supported);

    // TAG subscriptions are unaffected.
    let r = env
        .call(pull("CG", 0, "TagA", "TAG", FLAG_SUBSCRIPTION, 0, 0))
        .await;
    assert_eq!(r.code, response::SUCCESS);
    assert_eq!(bodies(&r), vec!["m0", "m3", "m6", "m9"]);
    env.stop().await;
}

/// `filterSupportRetry=true`: a retry topic's messages are filtered by the
/// group's SQL92 selector for their original topic (`RETRY_TOPIC`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filter_support_retry_applies_the_original_topics_selector() {
    let retry = "%RETRY%SG";
    let messages: Vec<(String, String)> = (0..8)
        .map(|i| {
            (
                format!("r{i}"),
                format!("RETRY_TOPIC\u{1}{TOPIC}\u{2}a\u{1}{i}\u{2}WAIT\u{1}true"),
            )
        })
        .chain([(
            "other".to_string(),
            "RETRY_TOPIC\u{1}OtherTopic\u{2}a\u{1}0\u{2}WAIT\u{1}true".to_string(),
        )])
        .collect();
    let pull_retry = || pull_topic(retry, "SG", 0, "*", "TAG", FLAG_SUBSCRIPTION, 0, 0);
    for (support, want) in [
        (true, vec!["r6", "r7", "other"]),
        (
            false,
            vec!["r0", "r1", "r2", "r3", "r4", "r5", "r6", "r7", "other"],
        ),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let flag = format!("filterSupportRetry={support}");
        let env = common::start(dir.path(), &["enablePropertyFilter=true", &flag]).await;
        // The heartbeat registers `a > 5` for (SqlT, SG) and creates the retry topic.
        let r = env.call(heartbeat("SG", "a > 5", 1)).await;
        assert_eq!(r.code, response::SUCCESS);
        for (body, props) in &messages {
            let r = env
                .call(common::send_v2(retry, 0, body.as_bytes(), props))
                .await;
            assert_eq!(r.code, response::SUCCESS, "{:?}", r.remark);
        }
        let deadline = Instant::now() + T;
        let r = loop {
            let r = env.call(pull_retry()).await;
            if r.ext("maxOffset") == Some("9") || Instant::now() > deadline {
                break env.call(pull_retry()).await;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        };
        assert_eq!(r.code, response::SUCCESS, "{:?}", r.remark);
        assert_eq!(bodies(&r), want, "filterSupportRetry={support}");
        env.stop().await;
    }
}
