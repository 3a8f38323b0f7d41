//! Transactional messages over TCP (semantics.md §5), with our remoting
//! client acting as a transactional producer: it registers its producer
//! group by HEART_BEAT, sends half messages, ends them with
//! END_TRANSACTION, and answers CHECK_TRANSACTION_STATE (or not).
//!
//! * `commit_rollback_check_back_and_abandon` (in-process broker, check
//!   intervals of a few hundred ms): a committed transaction is delivered
//!   once with its properties, a rolled-back one never, one is resolved by
//!   check-back, one is abandoned and discarded after the maximum checks
//!   (each check observed with its count); half messages are invisible to
//!   pulls before commit; a clean restart keeps the check progress and a
//!   pending transaction.
//! * `pending_half_survives_kill_9` (the `rmq-broker` binary): half
//!   messages sent, broker killed with SIGKILL, restarted; both are checked
//!   back; one is committed both explicitly and through its check-back,
//!   the other through its check-back: each is delivered exactly once.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use engine::record::{decode, parse_offset_msg_id, Decoded};
use frontends::namesrv::NameServer;
use frontends::remoting::client::ClientConfig;
use frontends::remoting::codes::{request, response};
use frontends::remoting::{ConnectionContext, RemotingClient, RemotingCommand, RequestHandler};
use tokio::sync::mpsc;
use tokio::time::timeout;

use common::process::BrokerProcess;
use common::T;

const HALF: &str = "RMQ_SYS_TRANS_HALF_TOPIC";
const OP: &str = "RMQ_SYS_TRANS_OP_HALF_TOPIC";
const MAX_TIME: &str = "TRANS_CHECK_MAX_TIME_TOPIC";
const GROUP: &str = "TXG";
const TOPIC: &str = "TxTopic";

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// A record, owned.
#[derive(Debug, Clone)]
struct Rec {
    topic: String,
    queue_id: i32,
    queue_offset: i64,
    physical_offset: i64,
    sys_flag: i32,
    flag: i32,
    prepared_transaction_offset: i64,
    body: String,
    properties: String,
}

impl Rec {
    fn prop(&self, key: &str) -> Option<&str> {
        engine::record::find_property(&self.properties, key)
    }
}

fn records_in(buf: &[u8]) -> Vec<Rec> {
    let mut out = Vec::new();
    let mut at = 0;
    while at < buf.len() {
        match decode(&buf[at..], true) {
            Decoded::Message(v) => {
                at += v.total_size();
                out.push(Rec {
                    topic: v.topic.to_string(),
                    queue_id: v.queue_id,
                    queue_offset: v.queue_offset,
                    physical_offset: v.physical_offset,
                    sys_flag: v.sys_flag,
                    flag: v.flag,
                    prepared_transaction_offset: v.prepared_transaction_offset,
                    body: String::from_utf8_lossy(v.body).to_string(),
                    properties: v.properties.to_string(),
                });
            }
            other => panic!("bad record in pull body: {other:?}"),
        }
    }
    out
}

/// Everything a store queue holds (in-process broker only).
fn stored(env: &common::Env, topic: &str, queue: i32) -> Vec<Rec> {
    common::stored(env, topic, queue)
        .iter()
        .flat_map(|s| records_in(s))
        .collect()
}

/// A CHECK_TRANSACTION_STATE as the producer received it.
#[derive(Debug, Clone)]
struct Check {
    tran_state_table_offset: i64,
    commit_log_offset: i64,
    msg_id: String,
    transaction_id: String,
    offset_msg_id: String,
    message: Rec,
}

impl Check {
    fn from_request(req: &RemotingCommand) -> Check {
        let ext = |k: &str| req.ext(k).unwrap_or_default().to_string();
        let mut recs = records_in(&req.body);
        assert_eq!(recs.len(), 1, "one message in a check request");
        Check {
            tran_state_table_offset: ext("tranStateTableOffset").parse().unwrap(),
            commit_log_offset: ext("commitLogOffset").parse().unwrap(),
            msg_id: ext("msgId"),
            transaction_id: ext("transactionId"),
            offset_msg_id: ext("offsetMsgId"),
            message: recs.remove(0),
        }
    }

    fn times(&self) -> u32 {
        self.message
            .prop("TRANSACTION_CHECK_TIMES")
            .expect("check count")
            .parse()
            .unwrap()
    }
}

/// Forwards the broker's requests on the producer connection to the test.
struct Forward(mpsc::UnboundedSender<RemotingCommand>);

impl RequestHandler for Forward {
    async fn handle(
        &self,
        _ctx: &ConnectionContext,
        req: RemotingCommand,
    ) -> Option<RemotingCommand> {
        let _ = self.0.send(req);
        None
    }
}

/// A transactional producer of group `GROUP` on one connection.
struct Producer {
    conn: ConnectionContext,
    incoming: mpsc::UnboundedReceiver<RemotingCommand>,
}

/// What the send of a half message answered.
#[derive(Debug, Clone)]
struct Half {
    uniq: String,
    queue_offset: i64,
    commit_log_offset: i64,
}

impl Half {
    /// The producer's own END_TRANSACTION (not a check-back answer) for
    /// this half message of `GROUP`, with `state`.
    fn end(&self, state: i32) -> RemotingCommand {
        end_request(
            GROUP,
            self.queue_offset,
            self.commit_log_offset,
            &self.uniq,
            state,
            false,
        )
    }
}

impl Producer {
    async fn connect(addr: &str) -> Producer {
        let (tx, incoming) = mpsc::unbounded_channel();
        let conn =
            RemotingClient::connect_with(addr, ClientConfig::default(), Arc::new(Forward(tx)))
                .await
                .expect("connect");
        let p = Producer { conn, incoming };
        let hb = serde_json::json!({
            "clientID": "127.0.0.1@txn-test",
            "producerDataSet": [{"groupName": GROUP}],
            "consumerDataSet": [],
        });
        let resp = p
            .call(RemotingCommand::request(request::HEART_BEAT).with_body(hb.to_string()))
            .await;
        assert_eq!(resp.code, 0, "{resp:?}");
        p
    }

    async fn call(&self, req: RemotingCommand) -> RemotingCommand {
        self.conn.request(req, T).await.expect("response")
    }

    /// Sends a half message as the Java client does (sysflag PREPARED,
    /// TRAN_MSG, PGROUP, born now).
    async fn send_half(&self, body: &str, tag: &str, uniq: &str, flag: i32) -> Half {
        let props = format!(
            "TAGS\u{1}{tag}\u{2}KEYS\u{1}k-{body}\u{2}UNIQ_KEY\u{1}{uniq}\u{2}TRAN_MSG\u{1}true\u{2}PGROUP\u{1}{GROUP}\u{2}WAIT\u{1}true"
        );
        let req = prepared_request(1, body.as_bytes(), &props).with_ext("h", flag);
        let resp = self.call(req).await;
        assert_eq!(resp.code, 0, "{resp:?}");
        assert_eq!(
            resp.ext("queueId"),
            Some("1"),
            "the requested queue is reported"
        );
        let msg_id = resp.ext("msgId").unwrap();
        let (_, commit_log_offset) = parse_offset_msg_id(msg_id).unwrap();
        Half {
            uniq: uniq.to_string(),
            queue_offset: resp.ext("queueOffset").unwrap().parse().unwrap(),
            commit_log_offset,
        }
    }
}

/// A SEND_MESSAGE_V2 of a prepared (half) message to `TOPIC` from
/// `GROUP`, born now, with the properties as given.
fn prepared_request(queue: i32, body: &[u8], props: &str) -> RemotingCommand {
    common::send_v2(TOPIC, queue, body, props)
        .with_ext("a", GROUP)
        .with_ext("f", 4)
        .with_ext("g", now_ms())
}

/// A broker whose check service never runs by itself (tests call the
/// check run) and that checks half messages older than 100 ms.
async fn start_for_checks(dir: &std::path::Path) -> common::Env {
    common::start(
        dir,
        &["transactionCheckInterval=600000", "transactionTimeOut=100"],
    )
    .await
}

fn end_request(
    group: &str,
    queue_offset: i64,
    commit_log_offset: i64,
    uniq: &str,
    state: i32,
    from_check: bool,
) -> RemotingCommand {
    RemotingCommand::request(request::END_TRANSACTION)
        .with_ext("producerGroup", group)
        .with_ext("tranStateTableOffset", queue_offset)
        .with_ext("commitLogOffset", commit_log_offset)
        .with_ext("commitOrRollback", state)
        .with_ext("fromTransactionCheck", from_check)
        .with_ext("msgId", uniq)
        .with_ext("transactionId", uniq)
}

const COMMIT: i32 = 8;
const ROLLBACK: i32 = 12;

/// Every message of `topic`'s queue through PULL_MESSAGE.
async fn pull_all(conn: &ConnectionContext, topic: &str, queue: i32) -> Vec<Rec> {
    let mut out = Vec::new();
    let mut offset = 0i64;
    loop {
        let req = common::pull_everything("TXCG", topic, queue, offset);
        let resp = conn.request(req, T).await.expect("pull response");
        match resp.code {
            response::SUCCESS => {
                out.extend(records_in(&resp.body));
                offset = resp.ext("nextBeginOffset").unwrap().parse().unwrap();
            }
            response::PULL_NOT_FOUND | response::PULL_OFFSET_MOVED => return out,
            other => panic!("pull answered {other}: {resp:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commit_rollback_check_back_and_abandon() {
    let dir = tempfile::tempdir().unwrap();
    let args = [
        "transactionTimeOut=1500",
        "transactionCheckInterval=200",
        "transactionCheckMax=3",
    ];
    let env = common::start(dir.path(), &args).await;
    let mut p = Producer::connect(&env.addr).await;
    let a = p.send_half("A", "TagA", "UNIQ-A", 7).await;
    let b = p.send_half("B", "TagB", "UNIQ-B", 0).await;
    let c = p.send_half("C", "TagC", "UNIQ-C", 0).await;
    let d = p.send_half("D", "TagD", "UNIQ-D", 0).await;
    assert_eq!(
        [
            a.queue_offset,
            b.queue_offset,
            c.queue_offset,
            d.queue_offset
        ],
        [0, 1, 2, 3],
        "offsets in the half queue"
    );

    // Half messages: in the half queue with their real queue, invisible to pulls.
    let halves = stored(&env, HALF, 0);
    assert_eq!(halves.len(), 4);
    for h in &halves {
        assert_eq!(h.sys_flag & 0xC, 0, "transaction bits cleared");
        assert_eq!(h.prop("REAL_TOPIC"), Some(TOPIC));
        assert_eq!(h.prop("REAL_QID"), Some("1"));
        assert_eq!(h.prop("TRAN_MSG"), Some("true"));
    }
    assert!(
        pull_all(&p.conn, TOPIC, 1).await.is_empty(),
        "half messages are invisible"
    );

    // END_TRANSACTION checks: wrong group, wrong offsets, unknown state.
    for (req, remark) in [
        (
            end_request(
                "OTHER",
                a.queue_offset,
                a.commit_log_offset,
                &a.uniq,
                COMMIT,
                false,
            ),
            "The producer group wrong",
        ),
        (
            end_request(GROUP, 9, a.commit_log_offset, &a.uniq, COMMIT, false),
            "The transaction state table offset wrong",
        ),
        (
            end_request(
                GROUP,
                a.queue_offset,
                a.commit_log_offset + 1,
                &a.uniq,
                COMMIT,
                false,
            ),
            "Find prepared transaction message failed",
        ),
    ] {
        let resp = p.call(req).await;
        assert_eq!(resp.code, response::SYSTEM_ERROR);
        assert_eq!(resp.remark.as_deref(), Some(remark));
    }
    let unknown = a.end(0);
    assert!(
        p.conn
            .request(unknown, Duration::from_millis(300))
            .await
            .is_err(),
        "UNKNOWN gets no response"
    );

    // A: committed by the producer (and again: a retry is not a second delivery).
    for _ in 0..2 {
        let commit = a.end(COMMIT);
        assert_eq!(p.call(commit).await.code, 0);
    }
    // B: rolled back.
    let rollback = b.end(ROLLBACK);
    assert_eq!(p.call(rollback).await.code, 0);
    let visible = pull_all(&p.conn, TOPIC, 1).await;
    assert_eq!(visible.len(), 1, "{visible:?}");
    let ra = &visible[0];
    assert_eq!(
        (ra.topic.as_str(), ra.queue_id, ra.body.as_str()),
        (TOPIC, 1, "A")
    );
    assert_eq!(ra.sys_flag & 0xC, 8, "transaction type COMMIT");
    assert_eq!(ra.flag, 7);
    assert_eq!(ra.prepared_transaction_offset, a.commit_log_offset);
    assert_eq!(ra.prop("TAGS"), Some("TagA"));
    assert_eq!(ra.prop("KEYS"), Some("k-A"));
    assert_eq!(ra.prop("UNIQ_KEY"), Some("UNIQ-A"));
    assert_eq!(ra.prop("TRAN_MSG"), Some("true"));
    assert_eq!(ra.prop("PGROUP"), Some(GROUP));

    // C and D are checked back (A and B are resolved, so never).
    let mut checks: BTreeMap<String, Vec<Check>> = BTreeMap::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    let discarded = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(!left.is_zero(), "timed out; checks so far: {checks:?}");
        if let Ok(Some(req)) = timeout(Duration::from_millis(50), p.incoming.recv()).await {
            assert_eq!(req.code, request::CHECK_TRANSACTION_STATE);
            assert!(req.is_oneway(), "check-backs are oneway");
            let check = Check::from_request(&req);
            assert_eq!(check.msg_id, check.transaction_id);
            assert_eq!(check.message.topic, TOPIC, "the check shows the real topic");
            assert_eq!(check.message.queue_id, 1);
            assert_eq!(check.message.prop("UNIQ_KEY"), Some(check.msg_id.as_str()));
            assert_eq!(check.message.queue_offset, check.tran_state_table_offset);
            assert_eq!(check.message.physical_offset, check.commit_log_offset);
            let (_, off) = parse_offset_msg_id(&check.offset_msg_id).unwrap();
            assert_eq!(off, check.commit_log_offset);
            if check.msg_id == "UNIQ-C" {
                // Resolved by the check: commit, oneway, as Java producers answer.
                let end = end_request(
                    GROUP,
                    check.tran_state_table_offset,
                    check.commit_log_offset,
                    "UNIQ-C",
                    COMMIT,
                    true,
                );
                p.conn.send_oneway(end).unwrap();
            }
            checks.entry(check.msg_id.clone()).or_default().push(check);
        }
        let d_gone = stored(&env, MAX_TIME, 0);
        if !d_gone.is_empty() {
            break d_gone;
        }
    };
    // A few more intervals: nothing else is checked.
    tokio::time::sleep(Duration::from_millis(700)).await;
    while let Ok(req) = p.incoming.try_recv() {
        let check = Check::from_request(&req);
        checks.entry(check.msg_id.clone()).or_default().push(check);
    }
    let keys: Vec<&str> = checks.keys().map(String::as_str).collect();
    assert_eq!(
        keys,
        ["UNIQ-C", "UNIQ-D"],
        "only unresolved transactions are checked"
    );
    let c_times: Vec<u32> = checks["UNIQ-C"].iter().map(Check::times).collect();
    assert_eq!(c_times, [1], "C is checked once, then resolved");
    let d_times: Vec<u32> = checks["UNIQ-D"].iter().map(Check::times).collect();
    assert_eq!(d_times, [1, 2, 3], "D is checked transactionCheckMax times");
    assert_eq!(discarded.len(), 1);
    assert_eq!(discarded[0].body, "D");
    assert_eq!(discarded[0].prop("TRANSACTION_CHECK_TIMES"), Some("3"));

    // Consumers see A and C once each, never B or D.
    let visible = pull_all(&p.conn, TOPIC, 1).await;
    let bodies: Vec<&str> = visible.iter().map(|r| r.body.as_str()).collect();
    assert_eq!(bodies, ["A", "C"]);
    let rc = &visible[1];
    assert_eq!(rc.sys_flag & 0xC, 8);
    assert_eq!(rc.prop("TAGS"), Some("TagC"));
    assert_eq!(rc.prop("TRANSACTION_CHECK_TIMES"), Some("1"));

    // Op records: bodies are the half offsets that were ended.
    let ops = stored(&env, OP, 0);
    let ended: Vec<&str> = ops.iter().map(|r| r.body.as_str()).collect();
    let c_copy = checks["UNIQ-C"][0].tran_state_table_offset.to_string();
    assert_eq!(ended, ["0", "0", "1", c_copy.as_str()]);
    for op in &ops {
        assert_eq!(op.properties, "WAIT\u{1}true\u{2}TAGS\u{1}d");
        assert_eq!(op.sys_flag, 0);
    }
    // Check progress is kept as consumer offsets of CID_RMQ_SYS_TRANS.
    let offsets = &env.broker.broker().offsets;
    let half_progress = offsets.query("CID_RMQ_SYS_TRANS", HALF, 0).unwrap();
    assert_eq!(
        half_progress,
        stored(&env, HALF, 0).len() as i64,
        "every half offset passed"
    );
    assert_eq!(
        offsets.query("CID_RMQ_SYS_TRANS", OP, 0),
        Some(ops.len() as i64)
    );

    // A clean restart keeps the state: E, pending across it, is checked
    // afterwards (first check) and rolled back; the resolved ones are not
    // checked again and the progress offsets are where they were.
    let e = p.send_half("E", "TagE", "UNIQ-E", 0).await;
    drop(p);
    env.stop().await;
    let env = common::start(dir.path(), &args).await;
    let offsets = &env.broker.broker().offsets;
    assert_eq!(
        offsets.query("CID_RMQ_SYS_TRANS", HALF, 0),
        Some(half_progress)
    );
    assert_eq!(
        offsets.query("CID_RMQ_SYS_TRANS", OP, 0),
        Some(ops.len() as i64)
    );
    let mut p = Producer::connect(&env.addr).await;
    let req = timeout(Duration::from_secs(10), p.incoming.recv())
        .await
        .expect("E checked after the restart")
        .unwrap();
    let check = Check::from_request(&req);
    assert_eq!((check.msg_id.as_str(), check.times()), ("UNIQ-E", 1));
    assert!(
        check.tran_state_table_offset > e.queue_offset,
        "a re-put copy"
    );
    let rollback = end_request(
        GROUP,
        check.tran_state_table_offset,
        check.commit_log_offset,
        "UNIQ-E",
        ROLLBACK,
        true,
    );
    assert_eq!(p.call(rollback).await.code, 0);
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert!(p.incoming.try_recv().is_err(), "nothing else is checked");
    let bodies: Vec<String> = pull_all(&p.conn, TOPIC, 1)
        .await
        .into_iter()
        .map(|r| r.body)
        .collect();
    assert_eq!(bodies, ["A", "C"]);
    drop(p);
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pending_half_survives_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let ns = NameServer::start("127.0.0.1:0").await.unwrap();
    let ns_addr = ns.local_addr().to_string();
    let port = common::free_port_pair();
    // Before the crash: no check-back within the test's time.
    let broker = BrokerProcess::start(dir.path(), &ns_addr, port, &[]);
    let p = Producer::connect(&broker.addr).await;
    let a = p.send_half("A", "TagA", "UNIQ-KA", 0).await;
    let b = p.send_half("B", "TagB", "UNIQ-KB", 0).await;
    assert!(pull_all(&p.conn, TOPIC, 1).await.is_empty());
    drop(p);
    broker.kill9();

    // Restarted with quick check-backs. The producer answers every check
    // with commit; for A it first commits the original half message itself
    // (as a producer whose END_TRANSACTION was lost in the crash and is
    // retried late): A is then committed twice, B once through a check.
    let broker = BrokerProcess::start(
        dir.path(),
        &ns_addr,
        port,
        &["transactionTimeOut=300", "transactionCheckInterval=200"],
    );
    let mut p = Producer::connect(&broker.addr).await;
    let mut checked = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut settle_until: Option<Instant> = None;
    loop {
        if settle_until.is_some_and(|t| Instant::now() > t) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not both resolved; checks: {checked:?}"
        );
        if let Ok(Some(req)) = timeout(Duration::from_millis(50), p.incoming.recv()).await {
            let check = Check::from_request(&req);
            if check.msg_id == a.uniq && !checked.contains(&a.uniq) {
                let commit_a = a.end(COMMIT);
                assert_eq!(
                    p.call(commit_a).await.code,
                    0,
                    "the half message survived the crash"
                );
            }
            let end = end_request(
                GROUP,
                check.tran_state_table_offset,
                check.commit_log_offset,
                &check.msg_id,
                COMMIT,
                true,
            );
            assert_eq!(p.call(end).await.code, 0);
            checked.push(check.msg_id);
        }
        if settle_until.is_none() && checked.contains(&a.uniq) && checked.contains(&b.uniq) {
            // Let further check runs pass, answering anything that still comes.
            settle_until = Some(Instant::now() + Duration::from_millis(800));
        }
    }
    let mut sorted = checked.clone();
    sorted.sort();
    assert_eq!(
        sorted,
        [a.uniq.clone(), b.uniq.clone()],
        "each checked once after the restart"
    );
    let visible = pull_all(&p.conn, TOPIC, 1).await;
    let mut bodies: Vec<&str> = visible.iter().map(|r| r.body.as_str()).collect();
    bodies.sort_unstable();
    assert_eq!(
        bodies,
        ["A", "B"],
        "each delivered exactly once (checks: {checked:?})"
    );
    drop(p);
    drop(broker);
    timeout(T, ns.shutdown()).await.expect("namesrv stops");
}

/// END_TRANSACTION names its half message by commit log offset. A producer
/// that knows where its own message's body is stored (its send response
/// says) can place a record there that looks like a half message of its
/// group with any `REAL_TOPIC`; committing it must not write that message.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn end_transaction_refuses_a_half_record_forged_in_a_body() {
    let dir = tempfile::tempdir().unwrap();
    let env = common::start(dir.path(), &["transactionCheckInterval=600000"]).await;
    let p = Producer::connect(&env.addr).await;
    // A real half message, so queue offset 0 of the half queue exists.
    let real = p.send_half("real", "T", "UNIQ-REAL", 0).await;

    let store = &env.broker.broker().store;
    let carrier_at = store.max_offset();
    // Fixed fields before BODY of a record with IPv4 hosts.
    let body_at = carrier_at as i64 + 88;
    let mut forged = Vec::new();
    let fake = engine::MessageToStore::new(
        HALF,
        0,
        b"forged",
        &format!("PGROUP\u{1}{GROUP}\u{2}REAL_TOPIC\u{1}Victim\u{2}REAL_QID\u{1}0\u{2}UNIQ_KEY\u{1}FORGED"),
    );
    fake.encode_into(&mut forged);
    engine::record::patch_under_lock(&mut forged, real.queue_offset, body_at, now_ms());
    let resp = p
        .call(common::send_v2(
            "Carrier",
            0,
            &forged,
            "UNIQ_KEY\u{1}CARRIER",
        ))
        .await;
    assert_eq!(resp.code, response::SUCCESS, "{resp:?}");
    let (_, at) = parse_offset_msg_id(resp.ext("msgId").unwrap()).unwrap();
    assert_eq!(
        at, carrier_at as i64,
        "the carrier is where it was expected"
    );

    let resp = p
        .call(end_request(
            GROUP,
            real.queue_offset,
            body_at,
            "FORGED",
            COMMIT,
            false,
        ))
        .await;
    assert_eq!(resp.code, response::SYSTEM_ERROR, "{resp:?}");
    assert!(
        stored(&env, "Victim", 0).is_empty(),
        "nothing committed from a forged half record"
    );

    // The real half message still commits.
    let resp = p.call(real.end(COMMIT)).await;
    assert_eq!(resp.code, response::SUCCESS, "{resp:?}");
    assert_eq!(stored(&env, TOPIC, 1).len(), 1);
    drop(p);
    env.stop().await;
}

/// A half message inside a custom immunity (CHECK_IMMUNITY_TIME_IN_SECONDS)
/// whose TRAN_PREPARED_QUEUE_OFFSET is not a number (both are properties
/// the producer chooses) is not due for a check: the check run must return
/// at once, not spin over the op queue on a runtime thread for its whole
/// time limit (60 s). (It used to stop there; since the message is kept
/// like one without that property, it is passed.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_run_stops_at_a_half_message_it_must_wait_for() {
    let dir = tempfile::tempdir().unwrap();
    let env = start_for_checks(dir.path()).await;
    let p = Producer::connect(&env.addr).await;
    let props = format!(
        "UNIQ_KEY\u{1}IMMUNE\u{2}TRAN_MSG\u{1}true\u{2}PGROUP\u{1}{GROUP}\u{2}CHECK_IMMUNITY_TIME_IN_SECONDS\u{1}600\u{2}TRAN_PREPARED_QUEUE_OFFSET\u{1}x"
    );
    let req = prepared_request(0, b"immune", &props);
    let resp = p.call(req).await;
    assert_eq!(resp.code, response::SUCCESS, "{resp:?}");
    // The check run only looks at half messages stored before it began.
    tokio::time::sleep(Duration::from_millis(20)).await;

    let broker = env.broker.broker().clone();
    let began = Instant::now();
    let run = frontends::broker::transaction::check::check(&broker).await;
    assert!(
        began.elapsed() < Duration::from_secs(5),
        "check run took {:?}",
        began.elapsed()
    );
    assert_eq!((run.checked, run.sent, run.discarded), (0, 0, 0));
    drop(p);
    env.stop().await;
}

/// A half message whose properties are so close to 32767 bytes that the
/// copy a check-back re-puts (with TRANSACTION_CHECK_TIMES added) cannot be
/// stored must not stop every later half message from being checked back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_message_too_big_to_re_put_does_not_block_later_checks() {
    let dir = tempfile::tempdir().unwrap();
    let env = start_for_checks(dir.path()).await;
    let mut p = Producer::connect(&env.addr).await;
    let base =
        format!("UNIQ_KEY\u{1}FAT\u{2}TRAN_MSG\u{1}true\u{2}PGROUP\u{1}{GROUP}\u{2}PAD\u{1}");
    // Stored: base + pad + CLUSTER + REAL_TOPIC + REAL_QID, 10 bytes short
    // of the limit.
    let added =
        "\u{2}CLUSTER\u{1}DefaultCluster\u{2}REAL_TOPIC\u{1}TxTopic\u{2}REAL_QID\u{1}0".len();
    let pad = "p".repeat(32_767 - 10 - added - base.len());
    let req = prepared_request(0, b"fat", &format!("{base}{pad}"));
    let resp = p.call(req).await;
    assert_eq!(resp.code, response::SUCCESS, "{resp:?}");
    let fat = stored(&env, HALF, 0).remove(0);
    assert_eq!(
        fat.properties.len(),
        32_757,
        "{}",
        fat.prop("REAL_TOPIC").unwrap_or("")
    );
    let lean = p.send_half("lean", "T", "UNIQ-LEAN", 0).await;
    tokio::time::sleep(Duration::from_millis(200)).await;

    let broker = env.broker.broker().clone();
    let run = frontends::broker::transaction::check::check(&broker).await;
    assert_eq!(run.sent, 2, "both half messages checked back: {run:?}");
    let mut asked = Vec::new();
    for _ in 0..2 {
        let req = timeout(T, p.incoming.recv())
            .await
            .expect("bounded")
            .expect("a check request");
        let check = Check::from_request(&req);
        asked.push((
            check.message.prop("UNIQ_KEY").unwrap_or("").to_string(),
            check.tran_state_table_offset,
        ));
    }
    asked.sort();
    // The fat one with its own offset (it could not be re-put), the lean
    // one with its copy's (offset 2, after the lean original).
    assert_eq!(
        asked,
        [("FAT".to_string(), 0), (lean.uniq.clone(), 2)],
        "{run:?}"
    );
    // The fat one can be committed through the check's offsets.
    let resp = p
        .call(end_request(
            GROUP,
            0,
            fat.physical_offset,
            "FAT",
            COMMIT,
            true,
        ))
        .await;
    assert_eq!(resp.code, response::SUCCESS, "{resp:?}");
    assert_eq!(stored(&env, TOPIC, 0).len(), 1, "the fat one delivered");
    drop(p);
    env.stop().await;
}

/// Half messages inside a long custom immunity that cannot be kept the
/// usual way (a copy re-put with TRAN_PREPARED_QUEUE_OFFSET): one whose
/// TRAN_PREPARED_QUEUE_OFFSET (a property the producer can set) is not a
/// number, one whose properties leave no room for that property. Neither
/// may stop the check-back of the half messages after them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_message_that_cannot_be_kept_immune_does_not_block_later_checks() {
    let dir = tempfile::tempdir().unwrap();
    let env = start_for_checks(dir.path()).await;
    let mut p = Producer::connect(&env.addr).await;
    let immune = format!(
        "TRAN_MSG\u{1}true\u{2}PGROUP\u{1}{GROUP}\u{2}CHECK_IMMUNITY_TIME_IN_SECONDS\u{1}100000"
    );
    let bogus = format!("{immune}\u{2}UNIQ_KEY\u{1}BOGUS\u{2}TRAN_PREPARED_QUEUE_OFFSET\u{1}x");
    let base = format!("{immune}\u{2}UNIQ_KEY\u{1}FAT\u{2}PAD\u{1}");
    let added =
        "\u{2}CLUSTER\u{1}DefaultCluster\u{2}REAL_TOPIC\u{1}TxTopic\u{2}REAL_QID\u{1}0".len();
    let fat = format!("{base}{}", "p".repeat(32_767 - 10 - added - base.len()));
    for props in [&bogus, &fat] {
        let req = prepared_request(0, b"immune", props);
        let resp = p.call(req).await;
        assert_eq!(resp.code, response::SUCCESS, "{resp:?}");
    }
    let lean = p.send_half("lean", "T", "UNIQ-LEAN", 0).await;
    tokio::time::sleep(Duration::from_millis(200)).await;

    let broker = env.broker.broker().clone();
    let run = frontends::broker::transaction::check::check(&broker).await;
    assert_eq!(run.sent, 1, "the lean one was checked back: {run:?}");
    let req = timeout(T, p.incoming.recv())
        .await
        .expect("bounded")
        .expect("a check request");
    let check = Check::from_request(&req);
    assert_eq!(check.message.prop("UNIQ_KEY"), Some(lean.uniq.as_str()));
    drop(p);
    env.stop().await;
}
