//! Checking consume queues: file names and sizes, and that every entry points
//! at a whole record of its topic and queue with the right size, tag hash and
//! queue offset. (That every record has its entry is checked from the commit
//! log side, see [`crate::check`].)

use engine::consume_queue::{CqEntry, CQ_ENTRY_SIZE};
use engine::record::{self, Decoded, RecordView};
use engine::schedule::{DelayLevels, SCHEDULE_TOPIC};

use crate::commitlog::{in_damaged, HeaderField};
use crate::report::{Kind, Problem};
use crate::store::{QueueDir, Store};

/// The whole record that starts at `phys`, if one does (CRC not re-checked:
/// the commit log scan did that, and `damaged` lists what failed).
pub fn record_at<'a>(
    store: &'a Store,
    damaged: &[(u64, u64)],
    end: u64,
    phys: u64,
) -> Option<RecordView<'a>> {
    if phys >= end {
        return None;
    }
    let (f, rel) = store.locate(phys)?;
    match record::decode(&f.file.bytes()[rel..], false) {
        Decoded::Message(v)
            if v.physical_offset == phys as i64
                && phys + v.total_size() as u64 <= end
                && !in_damaged(damaged, phys, v.total_size() as u64) =>
        {
            Some(v)
        }
        _ => None,
    }
}

/// Entry `n` of a queue, if its file is present.
pub fn entry_of(q: &QueueDir, n: u64) -> Option<CqEntry> {
    let off = n.checked_mul(CQ_ENTRY_SIZE)?;
    let i = q.files.partition_point(|f| f.start <= off).checked_sub(1)?;
    let f = &q.files[i];
    let rel = (off - f.start) as usize;
    CqEntry::decode(f.file.bytes().get(rel..)?)
}

/// The tag code the dispatcher writes for a record it puts in
/// `topic`/`queue_id` (checked against the queue holding the entry, which
/// may not be what a damaged header says).
fn tags_code_in(v: &RecordView<'_>, topic: &str, queue_id: i32, delay: &DelayLevels) -> i64 {
    if topic == SCHEDULE_TOPIC {
        delay.due_time(v.store_timestamp, queue_id)
    } else {
        v.tags_code()
    }
}

/// A consume-queue entry that points at a whole record agreeing with it in
/// size and tag code, but not in one header field the body CRC does not
/// cover. The queue was serving the record; a bit flip in that field would
/// make a rebuild from the commit log lose or move it. Whether the field is
/// safely the damaged side needs the whole store, so `check` decides.
#[derive(Debug, Clone)]
pub struct HeaderMismatch {
    /// Commit log offset of the record.
    pub phys: u64,
    /// The queue whose entry points at the record, and the entry's index.
    pub topic: String,
    pub queue_id: i32,
    pub entry: u64,
    pub field: HeaderField,
}

/// Whether the record `e` points at lies, in commit log order, between the
/// records of entries `n - 1` and `n + 1` (where those are messages): then
/// entry `n` sits where the queue's order puts the record.
fn between_neighbours(q: &QueueDir, n: u64, e: &CqEntry) -> bool {
    let phys = e.phys_offset as u64;
    let before = n
        .checked_sub(1)
        .and_then(|p| entry_of(q, p))
        .filter(CqEntry::is_message);
    let after = entry_of(q, n + 1).filter(CqEntry::is_message);
    before.is_none_or(|b| b.phys_end() <= phys)
        && after.is_none_or(|a| a.phys_offset as u64 >= e.phys_end())
}

/// The one header field in which record `v` disagrees with entry `n` of `q`
/// pointing at it, when everything else agrees (the caller checked size and
/// tag code): the QUEUEOFFSET field with the entry in its place in the
/// queue's order and no other entry claiming the record, or else the
/// QUEUEID field or a same-length topic with the queue offset agreeing.
fn header_mismatch(q: &QueueDir, n: u64, e: &CqEntry, v: &RecordView<'_>) -> Option<HeaderField> {
    let topic_agrees = v.topic == q.topic;
    let queue_id_agrees = v.queue_id == q.queue_id;
    let offset_agrees = v.queue_offset == n as i64;
    match (topic_agrees, queue_id_agrees, offset_agrees) {
        (true, true, false) => {
            let claimed_elsewhere = u64::try_from(v.queue_offset)
                .ok()
                .and_then(|o| entry_of(q, o))
                .is_some_and(|other| other.is_message() && other.phys_offset == e.phys_offset);
            (!claimed_elsewhere && between_neighbours(q, n, e)).then_some(
                HeaderField::QueueOffset {
                    found: v.queue_offset,
                    want: n as i64,
                },
            )
        }
        (true, false, true) => Some(HeaderField::QueueId {
            found: v.queue_id,
            want: q.queue_id,
        }),
        (false, true, true) if v.topic.len() == q.topic.len() => {
            // TOTALSIZE … topic, PROPERTIESLENGTH (2 bytes), properties.
            let at = v.total_size() - 2 - v.properties.len() - v.topic.len();
            Some(HeaderField::Topic {
                at: at as u64,
                found: v.topic.to_string(),
                want: q.topic.clone(),
            })
        }
        _ => None,
    }
}

/// What checking one queue found.
#[derive(Debug, Default)]
pub struct QueueResult {
    pub problems: Vec<Problem>,
    pub files: u64,
    pub entries: u64,
    /// Entry index one past the last valid entry (the queue's max offset).
    pub max_offset: u64,
    /// Entries whose record disagrees with them in one header field only;
    /// not in `problems` (check reports them once it has judged them).
    pub header_mismatches: Vec<HeaderMismatch>,
}

/// Counts occurrences of a problem kind, keeping the first one's details.
struct Tally {
    first: Option<Problem>,
    count: u64,
}

impl Tally {
    fn new() -> Self {
        Tally {
            first: None,
            count: 0,
        }
    }
    fn add(&mut self, p: impl FnOnce() -> Problem) {
        if self.first.is_none() {
            self.first = Some(p());
        }
        self.count += 1;
    }
    fn finish(self, out: &mut Vec<Problem>) {
        if let Some(mut p) = self.first {
            if self.count > 1 {
                p.detail = format!("{} (and {} more like it)", p.detail, self.count - 1);
            }
            out.push(p);
        }
    }
}

pub fn check_queue(
    store: &Store,
    q: &QueueDir,
    damaged: &[(u64, u64)],
    end: u64,
    delay: &DelayLevels,
) -> QueueResult {
    let mut r = QueueResult {
        files: q.files.len() as u64,
        ..Default::default()
    };
    let size = store.cq_size;
    for p in &q.strays {
        r.problems.push(Problem::new(
            Kind::CqFileName,
            p,
            None,
            "not a consume-queue file (its name is not a 20-digit offset within a Java long)",
        ));
    }
    for (i, f) in q.files.iter().enumerate() {
        if f.start % size != 0 {
            r.problems.push(Problem::new(
                Kind::CqFileName,
                &f.file.path,
                None,
                format!(
                    "start {} is not a multiple of the file size {size}",
                    f.start
                ),
            ));
        } else if i > 0 && f.start != q.files[i - 1].start + size {
            r.problems.push(Problem::new(
                Kind::CqGap,
                &f.file.path,
                None,
                format!(
                    "previous file starts at {}; a file is missing before this one",
                    q.files[i - 1].start
                ),
            ));
        }
        if f.file.len != size {
            r.problems.push(Problem::new(
                Kind::CqFileSize,
                &f.file.path,
                None,
                format!("{} bytes, configured size is {size}", f.file.len),
            ));
        }
    }
    let mut past_end = Tally::new();
    let mut bad = Tally::new();
    let mut wrong_offset = Tally::new();
    let mut garbage = Tally::new();
    let mut ended: Option<u64> = None;
    // Entries before the first live one may point below the commit log's
    // first file: expired by retention. One after a live entry is out of order.
    let mut seen_message = false;
    let expired_below = store.commitlog_min().unwrap_or(0);
    for f in &q.files {
        // A longer file (reported above) is read only to its configured size.
        let bytes = f.file.bytes_within(size);
        let n0 = f.start / CQ_ENTRY_SIZE;
        for (k, chunk) in bytes.chunks_exact(CQ_ENTRY_SIZE as usize).enumerate() {
            let n = n0 + k as u64;
            let pos = Some(k as u64 * CQ_ENTRY_SIZE);
            let Some(e) = CqEntry::decode(chunk) else {
                continue;
            };
            if !e.is_valid() {
                if ended.is_none() {
                    ended = Some(n);
                }
                continue;
            }
            if let Some(at) = ended {
                garbage.add(|| {
                    Problem::new(
                        Kind::CqGarbage,
                        &f.file.path,
                        pos,
                        format!("entry {n} is valid but the queue's data ended at entry {at}"),
                    )
                });
                continue;
            }
            r.max_offset = n + 1;
            if e.is_placeholder() {
                continue;
            }
            let phys = e.phys_offset as u64;
            if !seen_message && phys < expired_below {
                continue;
            }
            r.entries += 1;
            seen_message = true;
            if e.phys_end() > end {
                past_end.add(|| {
                    Problem::new(
                        Kind::CqPastEnd,
                        &f.file.path,
                        pos,
                        format!(
                            "entry {n} points at [{phys}, {}) past the commit log end {end}",
                            e.phys_end()
                        ),
                    )
                });
                continue;
            }
            let Some(v) = record_at(store, damaged, end, phys) else {
                bad.add(|| {
                    Problem::new(
                        Kind::CqBadEntry,
                        &f.file.path,
                        pos,
                        format!("entry {n} points at {phys}, where no whole record starts"),
                    )
                });
                continue;
            };
            let size_agrees = v.total_size() as i64 == e.size as i64;
            // As dispatched to this queue, whatever the header says.
            let tags_code = tags_code_in(&v, &q.topic, q.queue_id, delay);
            let tags_agree = e.tags_code_is_ext_address() || e.tags_code == tags_code;
            if size_agrees && tags_agree {
                if let Some(field) = header_mismatch(q, n, &e, &v) {
                    r.header_mismatches.push(HeaderMismatch {
                        phys,
                        topic: q.topic.clone(),
                        queue_id: q.queue_id,
                        entry: n,
                        field,
                    });
                    continue;
                }
            }
            let why = if v.topic != q.topic || v.queue_id != q.queue_id {
                Some(format!(
                    "the record at {phys} belongs to {}/{}",
                    v.topic, v.queue_id
                ))
            } else if !size_agrees {
                Some(format!(
                    "size {} but the record at {phys} has {} bytes",
                    e.size,
                    v.total_size()
                ))
            } else if !tags_agree {
                Some(format!(
                    "tag code {} but the record's is {tags_code}",
                    e.tags_code
                ))
            } else {
                None
            };
            if let Some(why) = why {
                bad.add(|| {
                    Problem::new(
                        Kind::CqBadEntry,
                        &f.file.path,
                        pos,
                        format!("entry {n}: {why}"),
                    )
                });
            } else if v.queue_offset != n as i64 {
                wrong_offset.add(|| {
                    Problem::new(
                        Kind::CqOffset,
                        &f.file.path,
                        pos,
                        format!(
                            "entry {n} points at a record with queue offset {}",
                            v.queue_offset
                        ),
                    )
                });
            }
        }
    }
    for t in [past_end, bad, wrong_offset, garbage] {
        t.finish(&mut r.problems);
    }
    r
}
