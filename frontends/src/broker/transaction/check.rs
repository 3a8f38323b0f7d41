//! The check-back service (semantics.md §5.3; Java
//! `TransactionalMessageCheckService` + `TransactionalMessageServiceImpl.check`),
//! run by masters every `transactionCheckInterval`.
//!
//! One run, per half queue:
//! 1. Read op records from the op progress offset (32 at a time). An op
//!    naming a half offset at or past the half progress offset goes into
//!    the "removed" map; older ones are simply done.
//! 2. Walk the half queue from the half progress offset. A removed offset
//!    is resolved. Otherwise the half message is
//!    * discarded into `TRANS_CHECK_MAX_TIME_TOPIC` once it was checked
//!      `transactionCheckMax` times or is older than `fileReservedTime`;
//!    * left alone (the run stops) if it was stored after the run began or
//!      is younger than `transactionTimeOut` (its immunity);
//!    * checked back otherwise, once every op record that could resolve it
//!      has been read: it is re-put at the end of the half queue with
//!      `TRANSACTION_CHECK_TIMES` incremented (this is how the count is
//!      kept) and CHECK_TRANSACTION_STATE goes, oneway, to one connection of
//!      its producer group (`PGROUP`) for the new copy. The producer answers
//!      with END_TRANSACTION for the copy; the original offset is passed.
//! 3. Save both progress offsets (the op offset over the contiguous run of
//!    done op records) as consumer offsets of `CID_RMQ_SYS_TRANS`.
//!
//! So an unresolved transaction is checked about every interval, starting
//! once it is `transactionTimeOut` old, `transactionCheckMax` times, and
//! then moved aside, never reaching its real topic.
//!
//! Deliberate deviations: Java's re-put copy loses the message's flag and
//! reconsume count (so a transaction committed through a check-back is
//! delivered with flag 0); the copy here keeps both. A half message whose
//! copy cannot be stored at all (its properties would pass 32767 bytes
//! with the check count) is checked back once with its own offsets and
//! passed; Java retries it until the run's time limit, every run, so no
//! later half message is checked until fileReservedTime discards it.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use engine::record::{self, Decoded, MessageToStore, RecordView};
use engine::{AcceptAll, GetMessageStatus, StoreError, StoredMessage};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::{property, with_property, CHECK_GROUP, REMOVE_TAG};
use super::{TRANS_CHECK_MAX_TIME_TOPIC, TRANS_HALF_TOPIC, TRANS_OP_HALF_TOPIC};
use crate::broker::processor::now_ms;
use crate::broker::topic_config::perm;
use crate::broker::Broker;
use crate::remoting::codes::request;
use crate::remoting::RemotingCommand;

/// Longest time one run spends on a queue (Java `MAX_PROCESS_TIME_LIMIT`).
const MAX_PROCESS_TIME_MS: i64 = 60_000;
/// Op records read at a time.
const OP_BATCH: usize = 32;
/// Times a missing half message is stepped over before the run stops.
const MAX_RETRY_COUNT_WHEN_HALF_NULL: u32 = 1;

/// What one run did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct CheckRun {
    /// Half messages re-put and checked back (CHECK_TRANSACTION_STATE sent
    /// when a producer connection of the group was there).
    pub checked: usize,
    /// CHECK_TRANSACTION_STATE requests actually sent.
    pub sent: usize,
    /// Half messages moved to TRANS_CHECK_MAX_TIME_TOPIC.
    pub discarded: usize,
}

/// Starts the periodic check (masters only).
pub fn spawn(broker: &Arc<Broker>, stop: watch::Receiver<bool>) -> JoinHandle<()> {
    tokio::spawn(run_periodically(broker.clone(), stop))
}

async fn run_periodically(broker: Arc<Broker>, mut stop: watch::Receiver<bool>) {
    let period = Duration::from_millis(broker.config.transaction_check_interval.max(10));
    loop {
        tokio::select! {
            _ = tokio::time::sleep(period) => {}
            _ = stop.wait_for(|v| *v) => return,
        }
        let began = now_ms();
        let run = check(&broker).await;
        if run != CheckRun::default() {
            tracing::info!(
                checked = run.checked,
                sent = run.sent,
                discarded = run.discarded,
                took_ms = now_ms() - began,
                "transaction check run"
            );
        }
    }
}

/// One check run over every half queue. Creates the half topic's config on
/// first use, as Java does.
pub async fn check(broker: &Broker) -> CheckRun {
    let tc = broker
        .topics
        .get_or_create_internal(TRANS_HALF_TOPIC, 1, perm::READ | perm::WRITE);
    let mut run = CheckRun::default();
    for queue_id in 0..tc.read_queue_nums {
        check_queue(broker, queue_id, &mut run).await;
    }
    run
}

/// A consumer offset of the check group, or the queue's min offset.
fn progress(broker: &Broker, topic: &str, queue_id: i32) -> i64 {
    broker
        .offsets
        .query(CHECK_GROUP, topic, queue_id)
        .filter(|o| *o >= 0)
        .unwrap_or_else(|| broker.store.min_queue_offset(topic, queue_id) as i64)
}

/// The outcome of one read of op records.
struct OpRead {
    /// Where the next read starts.
    next: i64,
    /// Born time of the last op record read, if any was found.
    last_born: Option<i64>,
}

/// Reads op records from `from`; fills `removed` (half offset → op offset)
/// with those at or past `min_half`, and `done` with the rest (Java
/// `fillOpRemoveMap`).
fn read_ops(
    broker: &Broker,
    queue_id: i32,
    from: i64,
    min_half: i64,
    removed: &mut HashMap<i64, i64>,
    done: &mut Vec<i64>,
) -> OpRead {
    let r = broker.store.get_messages(
        TRANS_OP_HALF_TOPIC,
        queue_id,
        from.max(0) as u64,
        OP_BATCH,
        &AcceptAll,
    );
    let next = r.next_begin_offset as i64;
    match r.status {
        GetMessageStatus::Found => {}
        GetMessageStatus::OffsetOverflowOne | GetMessageStatus::NoMessageInQueue => {
            return OpRead {
                next,
                last_born: None,
            }
        }
        _ => {
            // Illegal offset: Java moves the op progress to where the store points.
            broker
                .offsets
                .commit(CHECK_GROUP, TRANS_OP_HALF_TOPIC, queue_id, next);
            return OpRead {
                next,
                last_born: None,
            };
        }
    }
    let mut last_born = None;
    for slice in &r.messages {
        let Decoded::Message(op) = record::decode(slice.as_bytes(), false) else {
            continue;
        };
        last_born = Some(op.born_timestamp);
        if op.property(record::property::TAGS) != Some(REMOVE_TAG) {
            tracing::error!(
                offset = op.queue_offset,
                "op record without the remove tag ignored"
            );
            continue;
        }
        let half = std::str::from_utf8(op.body)
            .ok()
            .and_then(|s| s.trim().parse::<i64>().ok())
            .unwrap_or(-1);
        if half < min_half {
            done.push(op.queue_offset);
        } else if let Some(earlier) = removed.insert(half, op.queue_offset) {
            // Two ops for one half message (a repeated END_TRANSACTION):
            // the earlier is done too, or the op progress would stall on it.
            done.push(earlier);
        }
    }
    OpRead { next, last_born }
}

/// The op progress after the done op records: advanced over the contiguous
/// run starting at `old` (Java `calculateOpOffset`).
fn op_progress(mut done: Vec<i64>, old: i64) -> i64 {
    done.sort_unstable();
    let mut next = old;
    for d in done {
        if d == next {
            next += 1;
        } else if d > next {
            break;
        }
    }
    next
}

/// The half record at `offset`, owned; or where to go when there is none
/// (`None`: nothing new, stop).
enum HalfAt {
    Found(Vec<u8>),
    Missing { next: Option<i64> },
}

fn half_at(broker: &Broker, queue_id: i32, offset: i64) -> HalfAt {
    let r = broker.store.get_messages(
        TRANS_HALF_TOPIC,
        queue_id,
        offset.max(0) as u64,
        1,
        &AcceptAll,
    );
    match r.status {
        GetMessageStatus::Found => match r.messages.first() {
            Some(s) => HalfAt::Found(s.as_bytes().to_vec()),
            None => HalfAt::Missing { next: None },
        },
        GetMessageStatus::OffsetOverflowOne | GetMessageStatus::NoMessageInQueue => {
            HalfAt::Missing { next: None }
        }
        _ => HalfAt::Missing {
            next: Some(r.next_begin_offset as i64),
        },
    }
}

/// Java `getLong`/`getInt` on a property: unparsable is −1.
fn parse_or_minus_one(v: &str) -> i64 {
    v.trim().parse().unwrap_or(-1)
}

async fn check_queue(broker: &Broker, queue_id: i32, run: &mut CheckRun) {
    let start = now_ms();
    let timeout = broker.config.transaction_time_out as i64;
    let check_max = broker.config.transaction_check_max as i64;
    let reserved_ms = broker.store.config().file_reserved_time as i64 * 3_600_000;
    let half_offset = progress(broker, TRANS_HALF_TOPIC, queue_id);
    let op_offset = progress(broker, TRANS_OP_HALF_TOPIC, queue_id);
    let mut removed = HashMap::new();
    let mut done = Vec::new();
    let mut ops = read_ops(
        broker,
        queue_id,
        op_offset,
        half_offset,
        &mut removed,
        &mut done,
    );
    let mut null_count = 1;
    let mut new_offset = half_offset;
    let mut i = half_offset;
    loop {
        if now_ms() - start > MAX_PROCESS_TIME_MS {
            tracing::info!(queue_id, "transaction check run took too long, stopping");
            break;
        }
        if let Some(op) = removed.remove(&i) {
            done.push(op);
            new_offset = i + 1;
            i += 1;
            continue;
        }
        let bytes = match half_at(broker, queue_id, i) {
            HalfAt::Found(b) => b,
            HalfAt::Missing { next } => {
                let more = null_count <= MAX_RETRY_COUNT_WHEN_HALF_NULL;
                null_count += 1;
                match next {
                    Some(n) if more => {
                        i = n;
                        new_offset = n;
                        continue;
                    }
                    _ => break,
                }
            }
        };
        let Decoded::Message(half) = record::decode(&bytes, false) else {
            break;
        };
        let now = now_ms();
        let age = now - half.born_timestamp;
        let times = half.property(property::CHECK_TIMES).map(parse_or_minus_one);
        if times.is_some_and(|t| t >= check_max) || age > reserved_ms {
            let next_times = times.map(|t| t + 1).unwrap_or(1);
            let props = if times.is_some_and(|t| t >= check_max) {
                half.properties.to_string()
            } else {
                with_property(
                    half.properties,
                    property::CHECK_TIMES,
                    &next_times.to_string(),
                )
            };
            discard(broker, &half, props).await;
            run.discarded += 1;
            new_offset = i + 1;
            i += 1;
            continue;
        }
        if half.store_timestamp >= start {
            break;
        }
        let mut immunity = timeout;
        match half.property(property::CHECK_IMMUNITY) {
            Some(secs) => {
                let secs = parse_or_minus_one(secs);
                immunity = if secs == -1 { timeout } else { secs * 1000 };
                if age < immunity
                    && keep_during_immunity(broker, &half, &mut removed, &mut done).await
                {
                    new_offset = i + 1;
                    i += 1;
                    continue;
                }
            }
            None => {
                if (0..immunity).contains(&age) {
                    break;
                }
            }
        }
        let need_check = match ops.last_born {
            None => age > immunity,
            Some(last) => last - start > timeout,
        } || age <= -1;
        if !need_check {
            if ops.last_born.is_none() {
                // No op record is left to read, so reading again cannot
                // change the answer: only time can (a message inside its
                // immunity that could not be passed). Java re-reads until
                // its time limit; that would hold a runtime thread for a
                // minute. Stop here; the next run starts at this offset.
                break;
            }
            ops = read_ops(
                broker,
                queue_id,
                ops.next,
                half_offset,
                &mut removed,
                &mut done,
            );
            continue;
        }
        let next_times = times.map(|t| t + 1).unwrap_or(1);
        let props = with_property(
            half.properties,
            property::CHECK_TIMES,
            &next_times.to_string(),
        );
        match put_back(broker, &half, props.clone()).await {
            PutBack::Stored(copy) => {
                run.checked += 1;
                if send_check(broker, &half, &copy, props) {
                    run.sent += 1;
                }
            }
            PutBack::Invalid(why) => {
                // The copy can never be stored (its properties outgrew
                // the limit): ask about the message itself, once, and go
                // on. Java retries the same offset until its time limit,
                // and every run stops there again.
                tracing::warn!(
                    offset = half.queue_offset,
                    "half message cannot be re-put ({why}); checked back once with its own offsets"
                );
                let original = StoredMessage {
                    physical_offset: half.physical_offset as u64,
                    size: half.total_size() as u32,
                    queue_offset: half.queue_offset,
                    store_host: half.store_host,
                };
                run.checked += 1;
                if send_check(broker, &half, &original, half.properties.to_string()) {
                    run.sent += 1;
                }
            }
            PutBack::Refused => {
                // The store refuses writes: try again next run.
                break;
            }
        }
        new_offset = i + 1;
        i += 1;
    }
    if new_offset != half_offset {
        broker
            .offsets
            .commit(CHECK_GROUP, TRANS_HALF_TOPIC, queue_id, new_offset);
    }
    let new_op = op_progress(done, op_offset);
    if new_op != op_offset {
        broker
            .offsets
            .commit(CHECK_GROUP, TRANS_OP_HALF_TOPIC, queue_id, new_op);
    }
}

/// A half message still inside its custom immunity (Java
/// `checkPrepareQueueOffset`): resolved if an op names its original offset,
/// else a copy carrying the original offset is re-put. Returns whether the
/// offset may be passed.
///
/// Deviations, so that one message cannot hold up every later check (Java
/// stops the run at it, every run, until its immunity is over): an
/// original offset that is not a number (the producer can set the
/// property) counts as absent, so the message is kept as its own original;
/// a message whose copy can never be stored (no room left in its
/// properties) is passed, unchecked, with a warning: only the producer's
/// own END_TRANSACTION can end it.
async fn keep_during_immunity(
    broker: &Broker,
    half: &RecordView<'_>,
    removed: &mut HashMap<i64, i64>,
    done: &mut Vec<i64>,
) -> bool {
    let original = half
        .property(property::PREPARED_QUEUE_OFFSET)
        .map(parse_or_minus_one)
        .filter(|o| *o != -1);
    if let Some(o) = original {
        if let Some(op) = removed.remove(&o) {
            done.push(op);
            return true;
        }
    }
    let original = original.unwrap_or(half.queue_offset).to_string();
    let props = with_property(half.properties, property::PREPARED_QUEUE_OFFSET, &original);
    match put_back(broker, half, props).await {
        PutBack::Stored(_) => true,
        PutBack::Invalid(why) => {
            tracing::warn!(
                offset = half.queue_offset,
                "half message inside its immunity cannot be kept ({why}); passed without a check"
            );
            true
        }
        PutBack::Refused => false,
    }
}

/// The outcome of re-putting a half message.
enum PutBack {
    Stored(StoredMessage),
    /// The copy can never be stored (too large, ...).
    Invalid(String),
    /// The store refuses writes for now.
    Refused,
}

/// Re-puts `half` at the end of its half queue with `properties`.
async fn put_back(broker: &Broker, half: &RecordView<'_>, properties: String) -> PutBack {
    let msg = copy_of_half(half, half.topic.to_string(), half.queue_id, properties, 0);
    match broker.store.put_message_async(&msg).await {
        Ok(r) => match r.messages.into_iter().next() {
            Some(copy) => PutBack::Stored(copy),
            None => PutBack::Refused,
        },
        Err(StoreError::InvalidArgument(why)) => PutBack::Invalid(why),
        Err(e) => {
            tracing::warn!(
                offset = half.queue_offset,
                "cannot re-put half message: {e}"
            );
            PutBack::Refused
        }
    }
}

/// A message carrying `half`'s flag, body, sys flag, born/store hosts, born
/// time and reconsume count, placed in `topic`/`queue_id` with `properties`
/// and `prepared_transaction_offset`; it never waits for a flush.
fn copy_of_half(
    half: &RecordView<'_>,
    topic: String,
    queue_id: i32,
    properties: String,
    prepared_transaction_offset: i64,
) -> MessageToStore {
    MessageToStore {
        topic,
        queue_id,
        flag: half.flag,
        body: half.body.to_vec(),
        properties,
        sys_flag: half.sys_flag,
        born_timestamp: half.born_timestamp,
        born_host: half.born_host,
        store_host: half.store_host,
        reconsume_times: half.reconsume_times,
        prepared_transaction_offset,
        wait_for_flush: false,
    }
}

/// Moves a half message that was checked too often (or is too old) into
/// `TRANS_CHECK_MAX_TIME_TOPIC` (Java `resolveDiscardMsg`).
async fn discard(broker: &Broker, half: &RecordView<'_>, properties: String) {
    tracing::warn!(
        offset = half.queue_offset,
        group = half.property(property::PGROUP).unwrap_or(""),
        uniq_key = half.property(record::property::UNIQ_KEY).unwrap_or(""),
        "transaction unresolved after the maximum checks; discarded"
    );
    let tc = broker.topics.get_or_create_internal(
        TRANS_CHECK_MAX_TIME_TOPIC,
        1,
        perm::READ | perm::WRITE,
    );
    let msg = copy_of_half(half, tc.topic_name.clone(), 0, properties, 0);
    if let Err(e) = broker.store.put_message_async(&msg).await {
        tracing::error!(
            offset = half.queue_offset,
            "cannot store discarded half message: {e}"
        );
    }
}

/// Sends CHECK_TRANSACTION_STATE for the re-put `copy` of `half` to one
/// connection of its producer group (Java `sendCheckMessage` +
/// `Broker2Client.checkProducerTransactionState`). Returns whether it went.
fn send_check(
    broker: &Broker,
    half: &RecordView<'_>,
    copy: &StoredMessage,
    properties: String,
) -> bool {
    let Some(group) = half.property(property::PGROUP) else {
        tracing::warn!(
            offset = copy.queue_offset,
            "half message without PGROUP: no check-back"
        );
        return false;
    };
    let (Some(topic), Some(queue_id)) = (
        half.property(record::property::REAL_TOPIC),
        half.property(record::property::REAL_QID)
            .and_then(|q| q.trim().parse::<i32>().ok()),
    ) else {
        tracing::warn!(
            offset = copy.queue_offset,
            "half message without valid REAL_TOPIC/REAL_QID"
        );
        return false;
    };
    let channels = broker.clients.producer_channels(group);
    let Some(channel) = broker.transactions.pick_channel(&channels) else {
        tracing::warn!(
            group,
            "no producer connection of the group to check a transaction with"
        );
        return false;
    };
    // The body is the message as the producer sent it (real topic and
    // queue), with the copy's offsets and the original store time.
    let msg = copy_of_half(
        half,
        topic.to_string(),
        queue_id,
        properties,
        half.prepared_transaction_offset,
    );
    if msg.topic.len() > record::MAX_TOPIC_LEN || msg.properties.len() > record::MAX_PROPERTIES_LEN
    {
        return false;
    }
    let mut body = Vec::with_capacity(msg.encoded_len());
    msg.encode_into(&mut body);
    record::patch_under_lock(
        &mut body,
        copy.queue_offset,
        copy.physical_offset as i64,
        half.store_timestamp,
    );
    let mut req = RemotingCommand::request(request::CHECK_TRANSACTION_STATE)
        .with_ext("tranStateTableOffset", copy.queue_offset)
        .with_ext("commitLogOffset", copy.physical_offset)
        .with_ext("offsetMsgId", copy.msg_id());
    if let Some(id) = half.property(record::property::UNIQ_KEY) {
        req = req.with_ext("msgId", id).with_ext("transactionId", id);
    }
    match channel.send_oneway(req.with_body(body)) {
        Ok(()) => true,
        Err(e) => {
            tracing::warn!(group, "cannot send a transaction check: {e}");
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::op_progress;

    #[test]
    fn op_progress_advances_over_contiguous_done() {
        assert_eq!(op_progress(vec![5, 3, 4, 7], 3), 6);
        assert_eq!(op_progress(vec![], 3), 3);
        assert_eq!(op_progress(vec![1, 2], 3), 3);
    }
}
