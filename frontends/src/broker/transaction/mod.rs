//! Transactional messages (semantics.md §5): half messages, their end
//! (commit or rollback), and the check-back of unresolved ones.
//!
//! The state lives in two queues of the store, as in RocketMQ, so a restart
//! (clean or not) keeps it:
//! * `RMQ_SYS_TRANS_HALF_TOPIC` queue 0 holds every half message: the
//!   producer's message with `REAL_TOPIC`/`REAL_QID` added and its
//!   transaction bits cleared, so it gets a consume-queue entry there and
//!   none in its real topic ([`divert_to_half`]);
//! * `RMQ_SYS_TRANS_OP_HALF_TOPIC` queue 0 holds one op record per ended
//!   half message (tags `d`, body = the half message's queue offset as
//!   decimal text), written on commit and on rollback ([`op_message`]).
//!
//! A half message is resolved when an op record names its queue offset.
//! The check service ([`check`]) walks the half queue from its progress
//! offset and asks the producer group about what is still unresolved; its
//! progress on both queues is kept as consumer offsets of group
//! `CID_RMQ_SYS_TRANS` (consumerOffset.json).
//!
//! A commit writes the real message ([`committed_message`]): the half
//! record's body, flag, born time and hosts, its properties string as
//! stored (Java keeps `TRAN_MSG`, `PGROUP`, `REAL_TOPIC`, `REAL_QID` in it),
//! sysflag transaction type COMMIT and PREPARED TRANSACTION OFFSET = the
//! half record's commit log offset.
//!
//! Deliberate deviation from Java, for exactly-once delivery: one
//! transaction can be committed more than once in RocketMQ — a commit that
//! arrives after the check service already re-put the half message (the
//! copy is then checked and committed again), or a commit whose op record
//! was lost in a crash (the check asks again). Before writing the real
//! message, a commit looks for an earlier committed record of the same
//! transaction in the real topic (same `UNIQ_KEY` through the index, same
//! producer group, born time and body); if one exists only the op record is
//! written. While one commit of a transaction is being stored, another is
//! answered SYSTEM_BUSY without an op record (a check-back settles it if
//! the first fails); "being stored" lasts until the committed record is in
//! the index, so the next commit finds it there. This needs
//! `messageIndexEnable` (default true) and a `UNIQ_KEY` (every Java and C++
//! client sets one).

pub mod check;

use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use engine::record::{self, sysflag, Decoded, MessageToStore, RecordView};
use engine::MessageStore;
use parking_lot::Mutex;

pub use super::topic_config::{TRANS_CHECK_MAX_TIME_TOPIC, TRANS_HALF_TOPIC, TRANS_OP_HALF_TOPIC};
use crate::remoting::ConnectionContext;

/// The consumer group whose offsets on the half and op topics are the
/// check service's progress.
pub const CHECK_GROUP: &str = "CID_RMQ_SYS_TRANS";
/// Tags of an op record that ends a half message.
pub const REMOVE_TAG: &str = "d";

/// Property names of transactional messages (Java `MessageConst`).
pub mod property {
    /// `true` on a half message (and kept on the committed one).
    pub const TRAN_MSG: &str = "TRAN_MSG";
    /// The producer group, checked on END_TRANSACTION and used for check-backs.
    pub const PGROUP: &str = "PGROUP";
    /// How many times the half message has been checked back.
    pub const CHECK_TIMES: &str = "TRANSACTION_CHECK_TIMES";
    /// A per-message first-check delay, in seconds.
    pub const CHECK_IMMUNITY: &str = "CHECK_IMMUNITY_TIME_IN_SECONDS";
    /// On a re-put copy kept during a custom immunity: the queue offset of
    /// the original half message.
    pub const PREPARED_QUEUE_OFFSET: &str = "TRAN_PREPARED_QUEUE_OFFSET";
}

/// Java `Boolean.parseBoolean`.
fn is_true(v: Option<&str>) -> bool {
    v.is_some_and(|v| v.eq_ignore_ascii_case("true"))
}

/// Whether a send with these (request) properties is a half message: Java
/// 4.9's rule, `TRAN_MSG=true` unless it is a retry with a delay (clients
/// before 4.6.1 re-sent consumed transactional messages with the property).
pub fn is_half_message(properties: &str, reconsume_times: i32) -> bool {
    if !is_true(record::find_property(properties, property::TRAN_MSG)) {
        return false;
    }
    let delayed = record::find_property(properties, record::property::DELAY)
        .and_then(|d| d.trim().parse::<i32>().ok())
        .is_some_and(|d| d > 0);
    !(reconsume_times > 0 && delayed)
}

/// Rewrites a message into a half message (Java `parseHalfMessageInner`):
/// `REAL_TOPIC` and `REAL_QID` added, transaction bits cleared, topic
/// `RMQ_SYS_TRANS_HALF_TOPIC`, queue 0.
pub fn divert_to_half(msg: &mut MessageToStore) {
    let real_topic = std::mem::replace(&mut msg.topic, TRANS_HALF_TOPIC.to_string());
    let real_qid = msg.queue_id.to_string();
    let mut pairs: Vec<(&str, &str)> = record::parse_properties(&msg.properties)
        .into_iter()
        .filter(|(k, _)| *k != record::property::REAL_TOPIC && *k != record::property::REAL_QID)
        .collect();
    pairs.push((record::property::REAL_TOPIC, &real_topic));
    pairs.push((record::property::REAL_QID, &real_qid));
    msg.properties = record::serialize_properties(pairs);
    msg.sys_flag &= !sysflag::TRANSACTION_MASK;
    msg.queue_id = 0;
}

/// `props` with `key` set to `value` (replaced in place, or appended).
pub fn with_property(props: &str, key: &str, value: &str) -> String {
    let mut found = false;
    let mut pairs: Vec<(&str, &str)> = record::parse_properties(props)
        .into_iter()
        .map(|(k, v)| {
            if k == key {
                found = true;
                (k, value)
            } else {
                (k, v)
            }
        })
        .collect();
    if !found {
        pairs.push((key, value));
    }
    record::serialize_properties(pairs)
}

/// Why a half message cannot be ended (END_TRANSACTION's SYSTEM_ERROR
/// remarks, as Java words them).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HalfError {
    #[error("Find prepared transaction message failed")]
    NotFound,
    #[error("The producer group wrong")]
    ProducerGroup,
    #[error("The transaction state table offset wrong")]
    QueueOffset,
    #[error("The commit log offset wrong")]
    CommitLogOffset,
    #[error("The half message has no valid REAL_TOPIC/REAL_QID")]
    NoRealQueue,
}

/// Reads the half record at `commit_log_offset` and checks it against the
/// END_TRANSACTION header (Java `checkPrepareMessage`), returning a copy.
///
/// Deviation from Java, which accepts whatever decodes at the offset: the
/// record must also be the one the half queue holds at its queue offset.
/// The offset comes from the request, so without that check a record
/// forged inside a message body (bytes the producer chose, at an offset
/// its send response told it) would be committed into any `REAL_TOPIC`.
/// The record is examined where it is mapped and only then copied, so a
/// size read at an offset that is not a record costs no allocation.
pub async fn find_half(
    store: &MessageStore,
    commit_log_offset: i64,
    producer_group: &str,
    tran_state_table_offset: i64,
) -> Result<Vec<u8>, HalfError> {
    let (queue_id, len) = {
        let raw = u64::try_from(commit_log_offset)
            .ok()
            .and_then(|o| store.read_record(o))
            .ok_or(HalfError::NotFound)?;
        let Decoded::Message(half) = record::decode(raw.as_bytes(), false) else {
            return Err(HalfError::NotFound);
        };
        if half.topic != TRANS_HALF_TOPIC {
            return Err(HalfError::NotFound);
        }
        if half.property(property::PGROUP) != Some(producer_group) {
            return Err(HalfError::ProducerGroup);
        }
        if half.queue_offset != tran_state_table_offset {
            return Err(HalfError::QueueOffset);
        }
        if half.physical_offset != commit_log_offset {
            return Err(HalfError::CommitLogOffset);
        }
        (half.queue_id, half.total_size())
    };
    // The half queue hears of a record when it is dispatched, which at high
    // rates trails the append by a fraction of a millisecond.
    store
        .wait_dispatched(commit_log_offset as u64 + 1, DISPATCH_WAIT)
        .await;
    if !in_half_queue(store, queue_id, tran_state_table_offset, commit_log_offset) {
        return Err(HalfError::NotFound);
    }
    store
        .read_record(commit_log_offset as u64)
        .and_then(|raw| raw.as_bytes().get(..len).map(<[u8]>::to_vec))
        .ok_or(HalfError::NotFound)
}

/// How long END_TRANSACTION waits for a just-appended record (a half
/// message, a committed one) to be dispatched.
pub(crate) const DISPATCH_WAIT: Duration = Duration::from_secs(1);

/// Whether the half queue's entry at `queue_offset` is the record at
/// `commit_log_offset`.
fn in_half_queue(
    store: &MessageStore,
    queue_id: i32,
    queue_offset: i64,
    commit_log_offset: i64,
) -> bool {
    let Ok(from) = u64::try_from(queue_offset) else {
        return false;
    };
    let r = store.get_messages(TRANS_HALF_TOPIC, queue_id, from, 1, &engine::AcceptAll);
    r.messages
        .first()
        .is_some_and(|s| match record::decode(s.as_bytes(), false) {
            Decoded::Message(v) => {
                v.queue_offset == queue_offset && v.physical_offset == commit_log_offset
            }
            _ => false,
        })
}

/// The real message a commit writes for `half` (Java
/// `endMessageTransaction` + `resetTransactionValue(COMMIT)`).
pub fn committed_message(half: &RecordView<'_>) -> Result<MessageToStore, HalfError> {
    let topic = half
        .property(record::property::REAL_TOPIC)
        .filter(|t| !t.is_empty())
        .ok_or(HalfError::NoRealQueue)?;
    let queue_id = half
        .property(record::property::REAL_QID)
        .and_then(|q| q.trim().parse::<i32>().ok())
        .ok_or(HalfError::NoRealQueue)?;
    Ok(MessageToStore {
        topic: topic.to_string(),
        queue_id,
        flag: half.flag,
        body: half.body.to_vec(),
        // The half's string as stored: Java adopts the half's property map
        // and serialises it, so TRAN_MSG, PGROUP, REAL_TOPIC and REAL_QID
        // stay (clients read the transaction id from TRAN_MSG messages).
        properties: half.properties.to_string(),
        sys_flag: (half.sys_flag & !sysflag::TRANSACTION_MASK) | sysflag::TRANSACTION_COMMIT,
        born_timestamp: half.born_timestamp,
        born_host: half.born_host,
        store_host: half.store_host,
        reconsume_times: half.reconsume_times,
        prepared_transaction_offset: half.physical_offset,
        // Java's WAIT=false is overwritten by the half's property map.
        wait_for_flush: MessageToStore::wait_property(half.properties),
    })
}

/// The op record ending the half message at `half_queue_offset` of half
/// queue `queue_id` (Java `addRemoveTagInTransactionOp`): stored properties
/// exactly `WAIT=true, TAGS=d`, born and stored by the broker, no flush wait.
pub fn op_message(
    queue_id: i32,
    half_queue_offset: i64,
    broker_host: std::net::SocketAddr,
    now_ms: i64,
) -> MessageToStore {
    MessageToStore {
        topic: TRANS_OP_HALF_TOPIC.to_string(),
        queue_id,
        flag: 0,
        body: half_queue_offset.to_string().into_bytes(),
        properties: record::serialize_properties([
            (record::property::WAIT, "true"),
            (record::property::TAGS, REMOVE_TAG),
        ]),
        sys_flag: 0,
        born_timestamp: now_ms,
        born_host: broker_host,
        store_host: broker_host,
        reconsume_times: 0,
        prepared_transaction_offset: 0,
        wait_for_flush: false,
    }
}

/// Whether the real topic already holds a committed record of the same
/// transaction as `half` (see the module's deviation note).
pub fn already_committed(store: &MessageStore, half: &RecordView<'_>) -> bool {
    let (Some(topic), Some(key)) = (
        half.property(record::property::REAL_TOPIC),
        half.property(record::property::UNIQ_KEY),
    ) else {
        return false;
    };
    let group = half.property(property::PGROUP);
    store
        .query_by_key(topic, key, 32, 0, i64::MAX)
        .iter()
        .any(|slice| match record::decode(slice.as_bytes(), false) {
            Decoded::Message(v) => {
                v.transaction_type() == sysflag::TRANSACTION_COMMIT
                    && v.property(property::PGROUP) == group
                    && v.born_timestamp == half.born_timestamp
                    && v.body == half.body
            }
            _ => false,
        })
}

/// Broker-wide transaction state that is not in the store: commits in
/// flight (for the duplicate-commit guard) and the round-robin position
/// among a producer group's connections.
#[derive(Default)]
pub struct Transactions {
    committing: Mutex<HashSet<String>>,
    next_channel: AtomicUsize,
}

/// Marks one transaction's commit as in flight; dropping it clears the mark.
pub struct CommitGuard<'a> {
    owner: &'a Transactions,
    key: String,
}

impl Drop for CommitGuard<'_> {
    fn drop(&mut self) {
        self.owner.committing.lock().remove(&self.key);
    }
}

impl Transactions {
    /// Claims the commit of the transaction of `half`; `None` if another
    /// commit of it is in flight. Messages without `UNIQ_KEY` always get a
    /// guard of their own.
    pub fn begin_commit(&self, half: &RecordView<'_>) -> Option<CommitGuard<'_>> {
        let key = match (
            half.property(record::property::REAL_TOPIC),
            half.property(record::property::UNIQ_KEY),
        ) {
            (Some(t), Some(k)) => format!("{t}#{k}"),
            _ => format!("@{}", half.physical_offset),
        };
        if !self.committing.lock().insert(key.clone()) {
            return None;
        }
        Some(CommitGuard { owner: self, key })
    }

    /// One of `channels`, in turn (Java `ProducerManager.getAvailableChannel`).
    pub fn pick_channel(&self, channels: &[ConnectionContext]) -> Option<ConnectionContext> {
        let live: Vec<&ConnectionContext> = channels.iter().filter(|c| !c.is_closed()).collect();
        if live.is_empty() {
            return None;
        }
        let i = self.next_channel.fetch_add(1, Ordering::Relaxed) % live.len();
        Some(live[i].clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn half_rule_and_rewrite() {
        assert!(is_half_message("TRAN_MSG\u{1}true\u{2}PGROUP\u{1}G", 0));
        assert!(is_half_message("TRAN_MSG\u{1}TRUE", 3));
        assert!(!is_half_message("TRAN_MSG\u{1}true\u{2}DELAY\u{1}3", 1));
        assert!(!is_half_message("TRAN_MSG\u{1}false", 0));
        assert!(!is_half_message("PGROUP\u{1}G", 0));
        let mut m = MessageToStore::new("T", 3, b"x", "TRAN_MSG\u{1}true\u{2}WAIT\u{1}true");
        m.sys_flag = sysflag::TRANSACTION_PREPARED | sysflag::COMPRESSED;
        divert_to_half(&mut m);
        assert_eq!((m.topic.as_str(), m.queue_id), (TRANS_HALF_TOPIC, 0));
        assert_eq!(m.sys_flag, sysflag::COMPRESSED);
        assert_eq!(
            m.properties,
            "TRAN_MSG\u{1}true\u{2}WAIT\u{1}true\u{2}REAL_TOPIC\u{1}T\u{2}REAL_QID\u{1}3"
        );
    }

    #[test]
    fn op_record_properties_and_body() {
        let host = "127.0.0.1:10911".parse().unwrap();
        let op = op_message(0, 42, host, 5);
        assert_eq!(op.properties, "WAIT\u{1}true\u{2}TAGS\u{1}d");
        assert_eq!(op.body, b"42");
        assert_eq!((op.topic.as_str(), op.sys_flag), (TRANS_OP_HALF_TOPIC, 0));
    }

    #[test]
    fn property_replacement() {
        assert_eq!(
            with_property("A\u{1}1\u{2}B\u{1}2", "A", "9"),
            "A\u{1}9\u{2}B\u{1}2"
        );
        assert_eq!(with_property("A\u{1}1", "C", "3"), "A\u{1}1\u{2}C\u{1}3");
    }
}
