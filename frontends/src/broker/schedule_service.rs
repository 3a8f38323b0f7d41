//! Delayed (scheduled) messages (semantics.md §3): how a message with
//! `DELAY` > 0 enters `SCHEDULE_TOPIC_XXXX` ([`Schedule::divert`]) and how it
//! leaves it for its real topic when due (one task per delay level).
//!
//! Each level `L` has its own queue (`SCHEDULE_TOPIC_XXXX`, queue `L − 1`).
//! Every message of a level waits the same time, so a queue is in due
//! order: its head is always the next message to deliver. A level's task
//! reads the queue from its offset; a due entry is copied into its real
//! topic and queue and the offset advances; the first entry not yet due
//! stops the scan and the task sleeps until that entry's due time (at most
//! 100 ms at a time, so a wall-clock jump or new messages in an empty queue
//! are noticed as in Java). Delivery is therefore accurate to the timer,
//! not to a 100 ms poll.
//!
//! The due time is computed from the scheduled record (store time + the
//! level's delay), which is exactly the tag code the engine's dispatcher
//! stored for the entry; one more than a level-delay ahead (the clock went
//! back) counts as due now.
//!
//! Offsets (`config/delayOffset.json`, `{"offsetTable":{1:5,2:0}}`):
//! * the in-memory `next` offset advances as messages are delivered;
//! * the *persisted* offset of a level only moves past a delivery once the
//!   delivered copy is durable in the commit log (`durable_offset`), so a
//!   crash — even a power loss — never loses a scheduled message;
//! * it is written (atomically, [`fastjson::config_file::persist`]) soon after every
//!   delivery batch once durable, every `flushDelayOffsetInterval`, and at
//!   shutdown after the store's final flush. A write costs three fsyncs
//!   (tmp file, backup, directory), about 7 ms on the development VM; it
//!   runs on a blocking thread, apart from delivery, and batches coalesce
//!   while a write is in progress, so writing after every batch costs
//!   delivery nothing. Under ASYNC_FLUSH a small delivery becomes durable
//!   at the next flush (`flushCommitLogThoroughInterval`, 10 s, for less
//!   than `flushCommitLogLeastPages`), and the file follows then.
//! * A kill -9 can still fall between a delivery and the next write, so
//!   the first entries a level meets after start are checked against the
//!   index: an entry whose copy is already in its real topic (same
//!   `UNIQ_KEY`, born time, reconsume count and body, stored after it) is
//!   skipped instead of delivered again. Checking stops at the first entry
//!   not yet delivered.
//!
//! Deliberate deviations from Java: an entry that cannot be delivered ever
//! (no `REAL_TOPIC`, unparsable `REAL_QID`, rejected as invalid by the
//! store) is logged and skipped instead of blocking its level forever.

use std::collections::{BTreeMap, VecDeque};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use engine::record::{self, property, sysflag, Decoded, MessageToStore, RecordView};
use engine::schedule::{DelayLevels, SCHEDULE_TOPIC};
use engine::{AcceptAll, GetMessageStatus, MessageStore, StoreError};
use parking_lot::Mutex;
use serde_json::Value;
use tokio::sync::{watch, Notify};
use tokio::task::JoinHandle;

use super::topic_config::TRANS_HALF_TOPIC;
use super::Broker;
use fastjson::as_i64;
use fastjson::config_file;

/// First run of the delivery tasks after start (Java: 1 s).
const FIRST_RUN: Duration = Duration::from_secs(1);
/// Longest single sleep of a level task, and the retry pause after a failed write.
const POLL: Duration = Duration::from_millis(100);
/// Entries read per scan.
const SCAN_BATCH: usize = 32;

/// One level's offsets.
#[derive(Debug, Default)]
struct Level {
    /// Next consume-queue offset to deliver.
    next: i64,
    /// What `delayOffset.json` may say: nothing before it is undelivered
    /// or delivered but not yet durable.
    safe: i64,
    /// Advances waiting for durability: (commit log end of the delivered
    /// copy, or 0 for a skip; offset after it).
    pending: VecDeque<(u64, i64)>,
    /// Entries still to be checked against the index (right after start).
    check_delivered: bool,
}

/// The delay levels, their offsets and the scheduled-message rewrite.
pub struct Schedule {
    levels: DelayLevels,
    path: PathBuf,
    table: Mutex<BTreeMap<i32, Level>>,
    /// Text last written, to skip unchanged writes.
    written: Mutex<String>,
    /// A delivery batch finished: offsets may be persistable.
    progress: Notify,
}

/// `delayOffset.json` as read before the store opens.
#[derive(Debug)]
pub struct SavedDelayOffsets {
    path: PathBuf,
    table: BTreeMap<i32, i64>,
}

impl SavedDelayOffsets {
    /// Reads `delayOffset.json` (or its backup). A file that exists but
    /// neither it nor its backup parses is an error, as in RocketMQ:
    /// starting every level from its queue's start would deliver again
    /// every delayed message still in the log.
    pub fn load(config_dir: &std::path::Path) -> Result<Self, config_file::UnreadableConfig> {
        let path = config_dir.join("delayOffset.json");
        let mut table = BTreeMap::new();
        if let Some(Value::Object(t)) =
            config_file::load_or_refuse(&path)?.and_then(|v| v.get("offsetTable").cloned())
        {
            for (k, v) in t {
                if let (Ok(level), Some(off)) = (k.trim().parse::<i32>(), as_i64(Some(&v))) {
                    table.insert(level, off);
                }
            }
        }
        Ok(SavedDelayOffsets { path, table })
    }
}

impl Schedule {
    /// The delay levels from the saved offsets, each clamped into its
    /// queue's [min, max].
    pub fn new(saved: SavedDelayOffsets, store: &MessageStore) -> Self {
        // The store validated messageDelayLevel when it opened.
        let levels = DelayLevels::parse(&store.config().message_delay_level).unwrap_or_default();
        let SavedDelayOffsets { path, table: saved } = saved;
        let mut table = BTreeMap::new();
        for level in 1..=levels.max_level() {
            let q = level - 1;
            let (min, max) = (
                store.min_queue_offset(SCHEDULE_TOPIC, q) as i64,
                store.max_queue_offset(SCHEDULE_TOPIC, q) as i64,
            );
            let saved = saved.get(&level).copied().unwrap_or(0);
            let off = saved.clamp(min, max.max(min));
            if off != saved {
                tracing::warn!(
                    level,
                    saved,
                    off,
                    "delay offset clamped into [{min}, {max}]"
                );
            }
            table.insert(
                level,
                Level {
                    next: off,
                    safe: off,
                    pending: VecDeque::new(),
                    check_delivered: off < max,
                },
            );
        }
        Schedule {
            levels,
            path,
            table: Mutex::new(table),
            written: Mutex::new(String::new()),
            progress: Notify::new(),
        }
    }

    pub fn levels(&self) -> &DelayLevels {
        &self.levels
    }

    /// The level a message is delayed by: `DELAY` > 0 on a non-transactional
    /// or committed message, clamped to the max level.
    pub fn delay_level(&self, properties: &str, sys_flag: i32) -> Option<i32> {
        let level = record::find_property(properties, property::DELAY)?
            .trim()
            .parse::<i32>()
            .ok()?;
        self.level_for(level, sys_flag)
    }

    /// [`delay_level`](Self::delay_level) of an already parsed `DELAY`.
    pub fn level_for(&self, requested: i32, sys_flag: i32) -> Option<i32> {
        let tran = sys_flag & sysflag::TRANSACTION_MASK;
        if tran != sysflag::TRANSACTION_NOT && tran != sysflag::TRANSACTION_COMMIT {
            return None;
        }
        (requested > 0).then(|| requested.min(self.levels.max_level()))
    }

    /// Rewrites `msg` into the schedule queue of `level` (already clamped):
    /// `REAL_TOPIC`/`REAL_QID` added, `DELAY` set to the clamped level,
    /// the properties string re-serialised (keeping `WAIT`, as Java's map
    /// still holds it).
    pub fn divert(&self, msg: &mut MessageToStore, level: i32) {
        let real_topic = std::mem::replace(&mut msg.topic, SCHEDULE_TOPIC.to_string());
        let real_qid = msg.queue_id.to_string();
        let level_text = level.to_string();
        let mut pairs: Vec<(&str, &str)> = record::parse_properties(&msg.properties)
            .into_iter()
            .filter(|(k, _)| *k != property::REAL_TOPIC && *k != property::REAL_QID)
            .map(|(k, v)| {
                if k == property::DELAY {
                    (k, level_text.as_str())
                } else {
                    (k, v)
                }
            })
            .collect();
        pairs.push((property::REAL_TOPIC, &real_topic));
        pairs.push((property::REAL_QID, &real_qid));
        msg.properties = record::serialize_properties(pairs);
        msg.queue_id = level - 1;
    }

    /// `{"offsetTable":{1:5,...}}` of the persistable offsets (what the
    /// file says, or is about to say): GET_ALL_DELAY_OFFSET's body.
    pub fn to_json(&self, pretty: bool) -> String {
        let mut t = serde_json::Map::new();
        for (level, l) in self.table.lock().iter() {
            t.insert(level.to_string(), Value::from(l.safe));
        }
        let v = serde_json::json!({ "offsetTable": t });
        if pretty {
            fastjson::to_pretty(&v, &fastjson::delay_offset_int_keys)
        } else {
            fastjson::to_compact(&v, &fastjson::delay_offset_int_keys)
        }
    }

    /// Slave sync (cluster.md §3): the master's GET_ALL_DELAY_OFFSET text is
    /// written to our delayOffset.json as is (as Java does), and its levels
    /// become our in-memory offsets so that what we serve and persist
    /// agrees with the file. Text that is not a delay-offset table is
    /// refused with `InvalidData` and nothing is written.
    pub fn adopt_master(&self, text: &str) -> std::io::Result<()> {
        let Some(Value::Object(t)) = fastjson::parse(text.as_bytes())
            .ok()
            .and_then(|v| v.get("offsetTable").cloned())
        else {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "not a delay offset table",
            ));
        };
        let mut written = self.written.lock();
        config_file::persist(&self.path, text)?;
        let mut table = self.table.lock();
        for (k, v) in t {
            if let (Ok(level), Some(off)) = (k.trim().parse::<i32>(), as_i64(Some(&v))) {
                if let Some(l) = table.get_mut(&level) {
                    l.next = off;
                    l.safe = off;
                    l.pending.clear();
                }
            }
        }
        drop(table);
        *written = self.to_json(true);
        Ok(())
    }

    /// Moves every level's persistable offset past the advances whose
    /// copies are durable. Returns whether any moved.
    fn promote(&self, durable: u64) -> bool {
        let mut moved = false;
        for l in self.table.lock().values_mut() {
            while let Some(&(end, next)) = l.pending.front() {
                if end > durable {
                    break;
                }
                l.pending.pop_front();
                moved |= l.safe != next;
                l.safe = next;
            }
        }
        moved
    }

    fn has_pending(&self) -> bool {
        self.table.lock().values().any(|l| !l.pending.is_empty())
    }

    /// Promotes what is durable and writes the file if its text changed
    /// (blocking: fsyncs).
    pub fn persist(&self, store: &MessageStore) -> std::io::Result<()> {
        self.promote(store.durable_offset());
        let text = self.to_json(true);
        let mut written = self.written.lock();
        if *written != text {
            config_file::persist(&self.path, &text)?;
            *written = text;
        }
        Ok(())
    }

    fn next(&self, level: i32) -> i64 {
        self.table.lock().get(&level).map(|l| l.next).unwrap_or(0)
    }

    /// Records that `level` advanced to `next`, the last step having put a
    /// copy ending at commit log offset `end` (0: nothing written).
    fn advance(&self, level: i32, next: i64, end: u64) {
        if let Some(l) = self.table.lock().get_mut(&level) {
            if next > l.next {
                l.next = next;
                l.pending.push_back((end, next));
            }
        }
    }

    fn needs_check(&self, level: i32) -> bool {
        self.table
            .lock()
            .get(&level)
            .is_some_and(|l| l.check_delivered)
    }

    fn checked(&self, level: i32) {
        if let Some(l) = self.table.lock().get_mut(&level) {
            l.check_delivered = false;
        }
    }

    /// Starts one delivery task per level and the offset persister.
    pub fn spawn(broker: &Arc<Broker>, stop: watch::Receiver<bool>) -> Vec<JoinHandle<()>> {
        let mut tasks: Vec<JoinHandle<()>> = (1..=broker.schedule.levels.max_level())
            .map(|level| tokio::spawn(deliver_level(broker.clone(), level, stop.clone())))
            .collect();
        tasks.push(tokio::spawn(persist_loop(broker.clone(), stop)));
        tasks
    }
}

fn now_ms() -> i64 {
    super::processor::now_ms()
}

async fn deliver_level(broker: Arc<Broker>, level: i32, mut stop: watch::Receiver<bool>) {
    let mut wait = FIRST_RUN;
    loop {
        if !wait.is_zero() {
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = stop.wait_for(|v| *v) => return,
            }
        } else if *stop.borrow() {
            return;
        }
        let before = broker.schedule.next(level);
        wait = scan(&broker, level).await;
        if broker.schedule.next(level) != before {
            // Delivered or skipped something: the persister has work.
            broker.schedule.progress.notify_one();
        }
    }
}

/// One scan of a level's queue: delivers what is due. Returns how long to
/// sleep before the next scan.
async fn scan(broker: &Broker, level: i32) -> Duration {
    let sched = &broker.schedule;
    let store = &broker.store;
    let queue = level - 1;
    let offset = sched.next(level);
    let r = store.get_messages(SCHEDULE_TOPIC, queue, offset as u64, SCAN_BATCH, &AcceptAll);
    match r.status {
        GetMessageStatus::Found => {}
        GetMessageStatus::OffsetOverflowOne | GetMessageStatus::NoMessageInQueue => return POLL,
        _ => {
            // Too small, too big, missing file, removed data: move on.
            let next = r.next_begin_offset as i64;
            if next != offset {
                tracing::warn!(level, offset, next, status = ?r.status, "delay offset corrected");
                sched.advance(level, next, 0);
                return Duration::ZERO;
            }
            return POLL;
        }
    }
    let delay = sched.levels.delay_ms(level);
    for slice in &r.messages {
        let Decoded::Message(rec) = record::decode(slice.as_bytes(), false) else {
            continue;
        };
        let now = now_ms();
        let mut due = rec.store_timestamp.saturating_add(delay);
        if due > now.saturating_add(delay) {
            due = now;
        }
        if due > now {
            return Duration::from_millis((due - now) as u64).min(POLL);
        }
        if sched.needs_check(level) {
            if already_delivered(store, &rec) {
                tracing::info!(
                    level,
                    offset = rec.queue_offset,
                    "scheduled message was delivered before a crash; not again"
                );
                sched.advance(level, rec.queue_offset + 1, 0);
                continue;
            }
            sched.checked(level);
        }
        let Some(msg) = real_message(&rec) else {
            sched.advance(level, rec.queue_offset + 1, 0);
            continue;
        };
        match store.put_message_async(&msg).await {
            Ok(put) => {
                let end = put
                    .messages
                    .first()
                    .map(|m| m.physical_offset + m.size as u64)
                    .unwrap_or(0);
                sched.advance(level, rec.queue_offset + 1, end);
            }
            Err(StoreError::InvalidArgument(why)) => {
                tracing::error!(
                    level,
                    offset = rec.queue_offset,
                    "scheduled message dropped: {why}"
                );
                sched.advance(level, rec.queue_offset + 1, 0);
            }
            Err(e) => {
                tracing::warn!(
                    level,
                    offset = rec.queue_offset,
                    "delivery failed, retrying: {e}"
                );
                return POLL;
            }
        }
    }
    sched.advance(level, r.next_begin_offset as i64, 0);
    Duration::ZERO
}

/// The message to put for a due scheduled record, or `None` to drop it.
fn real_message(rec: &RecordView<'_>) -> Option<MessageToStore> {
    let Some(topic) = rec.property(property::REAL_TOPIC) else {
        tracing::error!(
            offset = rec.queue_offset,
            "scheduled message without REAL_TOPIC dropped"
        );
        return None;
    };
    if topic == TRANS_HALF_TOPIC {
        tracing::info!(offset = rec.queue_offset, "scheduled half message dropped");
        return None;
    }
    let Some(queue_id) = rec
        .property(property::REAL_QID)
        .and_then(|q| q.trim().parse::<i32>().ok())
    else {
        tracing::error!(
            offset = rec.queue_offset,
            "scheduled message without valid REAL_QID dropped"
        );
        return None;
    };
    Some(MessageToStore {
        topic: topic.to_string(),
        queue_id,
        flag: rec.flag,
        body: rec.body.to_vec(),
        // Java re-serialises the scheduled record's map: the same pairs,
        // still with DELAY, REAL_TOPIC, REAL_QID (and WAIT if present).
        properties: rec.properties.to_string(),
        sys_flag: rec.sys_flag,
        born_timestamp: rec.born_timestamp,
        born_host: rec.born_host,
        store_host: rec.store_host,
        reconsume_times: rec.reconsume_times,
        prepared_transaction_offset: 0,
        wait_for_flush: false,
    })
}

/// Whether a copy of the scheduled record `rec` is already in its real
/// topic (found through the UNIQ_KEY index).
fn already_delivered(store: &MessageStore, rec: &RecordView<'_>) -> bool {
    let (Some(topic), Some(key)) = (
        rec.property(property::REAL_TOPIC),
        rec.property(property::UNIQ_KEY),
    ) else {
        return false;
    };
    let qid = rec.property(property::REAL_QID);
    store
        .query_by_key(topic, key, 64, rec.store_timestamp, i64::MAX)
        .iter()
        .any(|slice| match record::decode(slice.as_bytes(), false) {
            Decoded::Message(v) => {
                v.physical_offset > rec.physical_offset
                    && v.property(property::REAL_QID) == qid
                    && qid.and_then(|q| q.trim().parse().ok()) == Some(v.queue_id)
                    && v.born_timestamp == rec.born_timestamp
                    && v.reconsume_times == rec.reconsume_times
                    && v.body == rec.body
            }
            _ => false,
        })
}

async fn persist_loop(broker: Arc<Broker>, mut stop: watch::Receiver<bool>) {
    let period = Duration::from_millis(broker.store.config().flush_delay_offset_interval.max(100));
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    loop {
        // Deliveries not yet durable (ASYNC_FLUSH) are re-checked shortly.
        let recheck = if broker.schedule.has_pending() {
            Duration::from_millis(20)
        } else {
            Duration::from_secs(3600)
        };
        tokio::select! {
            _ = tick.tick() => {}
            _ = broker.schedule.progress.notified() => {}
            _ = tokio::time::sleep(recheck) => {}
            _ = stop.wait_for(|v| *v) => return,
        }
        let b = broker.clone();
        let _ = tokio::task::spawn_blocking(move || {
            if let Err(e) = b.schedule.persist(&b.store) {
                tracing::error!("cannot persist delay offsets: {e}");
            }
        })
        .await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn divert_adds_real_topic_and_clamps_delay() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = engine::StoreConfig {
            store_path_root_dir: dir.path().to_path_buf(),
            mapped_file_size_commit_log: 1 << 20,
            mapped_file_size_consume_queue: 6000,
            ..Default::default()
        };
        let store = MessageStore::open(cfg).unwrap();
        std::fs::write(
            dir.path().join("delayOffset.json"),
            "{\"offsetTable\":{1:5,2:0}}",
        )
        .unwrap();
        let saved = SavedDelayOffsets::load(dir.path()).unwrap();
        let s = Schedule::new(saved, &store);
        // Clamped into the (empty) queue.
        assert!(s
            .to_json(false)
            .starts_with("{\"offsetTable\":{1:0,2:0,3:0"));
        let props = "DELAY\u{1}99\u{2}WAIT\u{1}true\u{2}TAGS\u{1}A";
        let level = s.delay_level(props, 0).unwrap();
        assert_eq!(level, 18);
        assert_eq!(s.delay_level(props, sysflag::TRANSACTION_PREPARED), None);
        assert_eq!(s.delay_level("DELAY\u{1}0", 0), None);
        let mut m = MessageToStore::new("T", 3, b"x", props);
        s.divert(&mut m, level);
        assert_eq!((m.topic.as_str(), m.queue_id), (SCHEDULE_TOPIC, 17));
        assert_eq!(
            m.properties,
            "DELAY\u{1}18\u{2}WAIT\u{1}true\u{2}TAGS\u{1}A\u{2}REAL_TOPIC\u{1}T\u{2}REAL_QID\u{1}3"
        );
        store.shutdown().unwrap();
    }
}
