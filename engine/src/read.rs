//! The read path for pulls (store.md §11.10, semantics.md §6): walk a consume
//! queue from an offset, filter by tag code, and hand back slices of the
//! commit log mapping that the frontend can send without copying.

use crate::commit_log::{CommitLog, MappedSlice};
use crate::config::StoreConfig;
use crate::consume_queue::ConsumeQueue;
use crate::record;

/// RocketMQ's GetMessageStatus.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GetMessageStatus {
    Found,
    /// Every scanned entry was filtered out.
    NoMatchedMessage,
    /// The referenced commit log data was already deleted.
    MessageWasRemoving,
    /// The consume-queue file holding the offset is missing.
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
    for (_, e) in batch {
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
        if let record::Decoded::Message(v) = record::decode(slice.as_bytes(), false) {
            if !filter.matches_properties(v.properties) {
                continue;
            }
        }
        r.total_bytes += slice.as_bytes().len();
        r.messages.push(slice);
    }
    r.next_begin_offset = offset + consumed;
    r.status = if !r.messages.is_empty() {
        GetMessageStatus::Found
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
