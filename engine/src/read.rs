//! The read path for pulls (store.md §11.10, semantics.md §6): walk a consume
//! queue from an offset, filter by tag code, and hand back slices of the
//! commit log mapping that the frontend can send without copying.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use crate::commit_log::{CommitLog, MappedSlice};
use crate::config::StoreConfig;
use crate::consume_queue::{ConsumeQueue, CqEntry};
use crate::record;

/// RocketMQ's GetMessageStatus.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GetMessageStatus {
    Found,
    /// Every scanned entry was filtered out.
    NoMatchedMessage,
    /// The referenced commit log data was already deleted.
    MessageWasRemoving,
    /// The consume-queue file holding the offset is missing, or the entry
    /// at the offset points at no record of its size (damaged).
    OffsetFoundNull,
    OffsetOverflowBadly,
    /// The offset equals the max offset: nothing new yet.
    OffsetOverflowOne,
    OffsetTooSmall,
    /// The queue has no messages at all.
    NoMessageInQueue,
}

/// What a get returns.
#[derive(Debug, Clone)]
pub struct GetMessageResult {
    pub status: GetMessageStatus,
    /// Whole records, in queue order.
    pub messages: Vec<MappedSlice>,
    /// Where the next pull should start.
    pub next_begin_offset: u64,
    pub min_offset: u64,
    pub max_offset: u64,
    /// The reader is far behind (data no longer likely in memory).
    pub suggest_pull_from_slave: bool,
    pub total_bytes: usize,
}

/// Decides which messages a pull wants.
pub trait MessageFilter {
    /// Consume-queue level: the tag hash code.
    fn matches_tags_code(&self, tags_code: i64) -> bool;
    /// Record level (SQL92 over properties); called only for tag matches.
    fn matches_properties(&self, _properties: &str) -> bool {
        true
    }
}

/// Accepts everything (subscription `*`).
pub struct AcceptAll;
impl MessageFilter for AcceptAll {
    fn matches_tags_code(&self, _: i64) -> bool {
        true
    }
}

/// Matches a set of tag hash codes (subscription `A || B`).
pub struct TagCodes(pub Vec<i32>);
impl MessageFilter for TagCodes {
    fn matches_tags_code(&self, code: i64) -> bool {
        self.0.is_empty() || self.0.contains(&(code as i32))
    }
}

/// Limits for one get, from the config and the request.
pub(crate) struct ReadLimits {
    pub in_memory_threshold: u64,
    pub max_bytes_in_memory: u64,
    pub max_count_in_memory: u64,
    pub max_bytes_in_disk: u64,
    pub max_count_in_disk: u64,
}

impl ReadLimits {
    pub fn from_config(c: &StoreConfig) -> Self {
        ReadLimits {
            in_memory_threshold: physical_memory() / 100 * c.access_message_in_memory_max_ratio,
            max_bytes_in_memory: c.max_transfer_bytes_on_message_in_memory,
            max_count_in_memory: c.max_transfer_count_on_message_in_memory,
            max_bytes_in_disk: c.max_transfer_bytes_on_message_in_disk,
            max_count_in_disk: c.max_transfer_count_on_message_in_disk,
        }
    }
}

fn physical_memory() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let (pages, size) = unsafe {
        (
            libc::sysconf(libc::_SC_PHYS_PAGES),
            libc::sysconf(libc::_SC_PAGESIZE),
        )
    };
    if pages > 0 && size > 0 {
        pages as u64 * size as u64
    } else {
        8 << 30
    }
}

pub(crate) fn get_messages(
    log: &CommitLog,
    cq: &ConsumeQueue,
    limits: &ReadLimits,
    offset: u64,
    max_count: usize,
    filter: &dyn MessageFilter,
) -> GetMessageResult {
    let (min, max) = (cq.min_offset(), cq.max_offset());
    let mut r = GetMessageResult {
        status: GetMessageStatus::NoMatchedMessage,
        messages: Vec::new(),
        next_begin_offset: offset,
        min_offset: min,
        max_offset: max,
        suggest_pull_from_slave: false,
        total_bytes: 0,
    };
    let correct = |r: &mut GetMessageResult, status, next| {
        r.status = status;
        r.next_begin_offset = next;
    };
    if max == 0 {
        correct(&mut r, GetMessageStatus::NoMessageInQueue, 0);
        return r;
    }
    if offset < min {
        correct(&mut r, GetMessageStatus::OffsetTooSmall, min);
        return r;
    }
    if offset == max {
        correct(&mut r, GetMessageStatus::OffsetOverflowOne, offset);
        return r;
    }
    if offset > max {
        correct(&mut r, GetMessageStatus::OffsetOverflowBadly, max);
        return r;
    }
    let max_count = max_count.max(1);
    let Some(batch) = cq.batch(offset, max_count.max(800)) else {
        correct(
            &mut r,
            GetMessageStatus::OffsetFoundNull,
            cq.next_file_start(offset),
        );
        return r;
    };
    let log_max = log.max_offset();
    let log_min = log.min_offset();
    let mut consumed = 0u64;
    let mut last_phys = None;
    let mut removing = false;
    // Queue offset of an entry whose record does not decode: the batch
    // stops there and the next pull starts at it again.
    let mut damaged = None;
    for (queue_offset, e) in batch {
        if !e.is_message() {
            consumed += 1;
            continue;
        }
        let phys = e.phys_offset as u64;
        let in_disk = log_max.saturating_sub(phys) > limits.in_memory_threshold;
        let (max_bytes, max_n) = if in_disk {
            (limits.max_bytes_in_disk, limits.max_count_in_disk)
        } else {
            (limits.max_bytes_in_memory, limits.max_count_in_memory)
        };
        let n = r.messages.len() as u64;
        if n >= max_count as u64
            || (n > 0 && (n >= max_n || r.total_bytes as u64 + e.size as u64 > max_bytes))
        {
            break;
        }
        consumed += 1;
        last_phys = Some(phys);
        if !filter.matches_tags_code(e.tags_code) {
            continue;
        }
        if phys < log_min {
            removing = true;
            continue;
        }
        let Some(slice) = log.slice(phys, e.size as u64) else {
            removing = true;
            continue;
        };
        // A damaged entry (pointing off a record, or with the wrong size)
        // must not hand consumers garbage as a message. Skipping it would
        // lose the record it was meant to point at, so the batch stops
        // here and the queue waits for `rmq-fsck`.
        match record::decode(slice.as_bytes(), false) {
            record::Decoded::Message(v) if v.total_size() == e.size as usize => {
                if !filter.matches_properties(v.properties) {
                    continue;
                }
            }
            _ => {
                warn_damaged_entry(cq, queue_offset, &e);
                damaged = Some(queue_offset);
                break;
            }
        }
        r.total_bytes += slice.as_bytes().len();
        r.messages.push(slice);
    }
    r.next_begin_offset = damaged.unwrap_or(offset + consumed);
    r.status = if !r.messages.is_empty() {
        GetMessageStatus::Found
    } else if damaged.is_some() {
        // PULL_NOT_FOUND: the broker holds the pull (long polling) instead
        // of having the consumer retry at once, as a "removing" or "no
        // match" status would, in a loop on the same entry.
        GetMessageStatus::OffsetFoundNull
    } else if removing {
        GetMessageStatus::MessageWasRemoving
    } else {
        GetMessageStatus::NoMatchedMessage
    };
    if let Some(p) = last_phys {
        r.suggest_pull_from_slave = log_max.saturating_sub(p) > limits.in_memory_threshold;
    }
    r
}

/// Least time between two warnings about damaged entries: every pull of a
/// queue stuck on one meets it again.
const DAMAGED_ENTRY_WARN_INTERVAL_MS: i64 = 10_000;
/// When the last warning was logged (ms), and how many were held back since.
static DAMAGED_ENTRY_LAST_WARN_MS: AtomicI64 = AtomicI64::new(i64::MIN);
static DAMAGED_ENTRIES_NOT_LOGGED: AtomicU64 = AtomicU64::new(0);

/// Logs a consume queue entry whose record does not decode, at most once
/// per [`DAMAGED_ENTRY_WARN_INTERVAL_MS`] for the whole store.
fn warn_damaged_entry(cq: &ConsumeQueue, queue_offset: u64, e: &CqEntry) {
    let now = crate::commit_log::now_ms();
    let last = DAMAGED_ENTRY_LAST_WARN_MS.load(Ordering::Relaxed);
    let due = now.saturating_sub(last) >= DAMAGED_ENTRY_WARN_INTERVAL_MS
        && DAMAGED_ENTRY_LAST_WARN_MS
            .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok();
    if !due {
        DAMAGED_ENTRIES_NOT_LOGGED.fetch_add(1, Ordering::Relaxed);
        return;
    }
    let held_back = DAMAGED_ENTRIES_NOT_LOGGED.swap(0, Ordering::Relaxed);
    tracing::warn!(
        "consume queue {}/{} entry at queue offset {queue_offset} points at physical offset {} ({} bytes), where no such record decodes; not served, pulls stop there — run `rmq-fsck check` ({held_back} more such reads not logged)",
        cq.topic(),
        cq.queue_id(),
        e.phys_offset,
        e.size
    );
}
