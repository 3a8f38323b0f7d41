//! Checking the commit log: file names and sizes, then every record.
//!
//! Each file is scanned on its own (records never span files), so files are
//! checked in parallel. At each position the scan finds a whole record, an
//! end-of-file blank, the zeros after the written data, or something broken.
//! When something is broken the scan looks for the next whole record in the
//! same file (message magic, matching PHYSICALOFFSET field and body CRC — a
//! combination garbage does not produce by chance):
//! * found — the broken bytes are a *damaged span* between valid records;
//! * not found — the broken bytes run to the end of the file's data: a torn
//!   tail if no later file holds records, otherwise a damaged file end.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::path::{Path, PathBuf};

use engine::record::{self, body_crc, sysflag, Decoded, RecordView, BLANK_MAGIC, MESSAGE_MAGIC};

use crate::report::{Kind, Problem};
use crate::store::Store;

/// Topic of the records repair writes in place of damaged ones.
pub const QUARANTINE_TOPIC: &str = "FSCK_DAMAGED";
/// Smallest possible message record (IPv4 hosts, empty body, topic and properties).
pub const MIN_RECORD: usize = 91;

/// Whether a record is one that repair wrote over a damaged one.
pub fn is_quarantine(v: &RecordView<'_>) -> bool {
    v.sys_flag & sysflag::TRANSACTION_MASK == sysflag::TRANSACTION_ROLLBACK
        && !v.topic.is_empty()
        && QUARANTINE_TOPIC.starts_with(v.topic)
        && v.property("FSCK").is_some()
}

/// What is at one position of a file.
enum At<'a> {
    Message(RecordView<'a>),
    /// A whole record whose PHYSICALOFFSET field is wrong.
    Misplaced(RecordView<'a>),
    Blank,
    End,
    Bad(Kind, String),
}

fn read_i32(b: &[u8], at: usize) -> i32 {
    i32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn classify(data: &[u8], pos: usize, abs: u64) -> At<'_> {
    let rest = &data[pos..];
    if rest.len() < 8 {
        return if rest.iter().all(|b| *b == 0) {
            At::End
        } else {
            At::Bad(
                Kind::BadSize,
                format!("{} trailing bytes are not a record", rest.len()),
            )
        };
    }
    let total = read_i32(rest, 0);
    let magic = read_i32(rest, 4);
    if total == 0 && magic == 0 {
        return At::End;
    }
    if magic == BLANK_MAGIC {
        return if total as i64 == rest.len() as i64 {
            At::Blank
        } else {
            At::Bad(
                Kind::BadBlank,
                format!(
                    "blank record size {total}, but {} bytes remain in the file",
                    rest.len()
                ),
            )
        };
    }
    if magic != MESSAGE_MAGIC {
        return At::Bad(
            Kind::BadMagic,
            format!("bad magic code {:#010x}", magic as u32),
        );
    }
    if total < MIN_RECORD as i32 || total as i64 > rest.len() as i64 {
        return At::Bad(
            Kind::BadSize,
            format!(
                "record size {total} is impossible ({} bytes remain)",
                rest.len()
            ),
        );
    }
    match record::decode(rest, false) {
        Decoded::Message(v) => {
            let crc = body_crc(v.body);
            if crc != v.body_crc {
                return At::Bad(
                    Kind::BadCrc,
                    format!(
                        "body CRC {:#x} does not match computed {:#x} (topic {:?}, {} bytes)",
                        v.body_crc,
                        crc,
                        v.topic,
                        v.total_size()
                    ),
                );
            }
            if v.topic.is_empty() {
                return At::Bad(Kind::BadFields, "empty topic".into());
            }
            if v.physical_offset != abs as i64 {
                return At::Misplaced(v);
            }
            At::Message(v)
        }
        Decoded::Invalid(why) => At::Bad(Kind::BadFields, why),
        Decoded::Blank(_) | Decoded::End => At::Bad(Kind::BadFields, "unreadable record".into()),
    }
}

/// Whether a whole, valid record (or a correct blank) starts at `pos`.
fn resync_point(data: &[u8], pos: usize, abs: u64) -> bool {
    matches!(classify(data, pos, abs), At::Message(_) | At::Blank)
}

/// The next position after `pos` where a whole record starts, in this file.
fn resync(data: &[u8], pos: usize, file_start: u64, hint: Option<usize>) -> Option<usize> {
    if let Some(h) = hint {
        if h > pos && h < data.len() && resync_point(data, h, file_start + h as u64) {
            return Some(h);
        }
    }
    let mut q = pos + 1;
    while q + 8 <= data.len() {
        // Look for the magic words at q + 4.
        let win = &data[q + 4..];
        let step = win
            .windows(4)
            .position(|w| w == MESSAGE_MAGIC.to_be_bytes() || w == BLANK_MAGIC.to_be_bytes())?;
        q += step;
        if q + 8 > data.len() {
            return None;
        }
        if resync_point(data, q, file_start + q as u64) {
            return Some(q);
        }
        q += 1;
    }
    None
}

/// A defect inside one file, with what repair does about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Defect {
    /// `[pos, pos+len)` is broken and a whole record follows it in the file.
    Span {
        pos: u64,
        len: u64,
        kind: Kind,
        reason: String,
    },
    /// A whole record whose PHYSICALOFFSET field says `found`.
    Misplaced { pos: u64, found: i64 },
}

/// Records that lack something, counted, with the first few of them (in
/// commit log order) to name in the report.
#[derive(Debug, Clone)]
pub struct Missing<T> {
    pub count: u64,
    pub first: Vec<T>,
}

impl<T> Default for Missing<T> {
    fn default() -> Self {
        Missing {
            count: 0,
            first: Vec::new(),
        }
    }
}

impl<T: PartialEq> Missing<T> {
    /// Enough to name one that is still missing after check takes back a
    /// few it counted (records repair fixes in place, see `check`).
    const KEEP: usize = 8;

    pub fn add(&mut self, item: T) {
        self.count += 1;
        if self.first.len() < Self::KEEP {
            self.first.push(item);
        }
    }

    /// Adds a later file's tally.
    pub fn merge(&mut self, later: Missing<T>) {
        self.count += later.count;
        let room = Self::KEEP.saturating_sub(self.first.len());
        self.first.extend(later.first.into_iter().take(room));
    }

    /// Takes back one counted record that is not missing after all.
    pub fn take_back(&mut self, item: &T) {
        self.count = self.count.saturating_sub(1);
        if let Some(i) = self.first.iter().position(|x| x == item) {
            self.first.remove(i);
        }
    }
}

/// What scanning one file found.
#[derive(Debug, Default)]
pub struct FileScan {
    pub path: PathBuf,
    pub start: u64,
    pub len: u64,
    pub records: u64,
    pub quarantined: u64,
    /// Whether the first 8 bytes are non-zero (the file holds data).
    pub has_data: bool,
    /// Ends with an end-of-file blank record.
    pub blank_end: bool,
    /// Relative end of the last whole record (or blank) — where data stops.
    pub data_end: u64,
    /// Broken bytes after `data_end`: `(end, kind, reason)`; the region is
    /// `[data_end, end)`, `end` just past the last non-zero byte.
    pub tail: Option<(u64, Kind, String)>,
    pub defects: Vec<Defect>,
    pub last_store_timestamp: i64,
    /// Consumable records whose consume-queue entry is missing: per queue,
    /// (physical offset, queue offset) of each.
    pub missing_cq: HashMap<(String, i32), Missing<(u64, i64)>>,
    /// Records with keys not found in the index, by physical offset.
    pub missing_index: Missing<u64>,
    /// (topic, queue id) of the records that get no consume-queue entry
    /// (prepared or rolled back), quarantine records aside.
    pub unqueued: HashSet<(String, i32)>,
}

/// Per-record cross checks against the derived files, supplied by the caller.
pub trait RecordCheck: Sync {
    /// Whether the record's consume-queue entry is present and points at it.
    fn cq_has(&self, v: &RecordView<'_>, phys: u64) -> bool;
    /// Whether every key of the record is in the index (true if not indexed).
    fn index_has(&self, v: &RecordView<'_>, phys: u64) -> bool;
}

/// Scans one commit log file.
pub fn scan_file(
    path: &Path,
    start: u64,
    data: &[u8],
    checks: &dyn RecordCheck,
    progress: &dyn Fn(u64),
    read_ahead: &dyn Fn(u64, u64),
) -> FileScan {
    let mut s = FileScan {
        path: path.to_path_buf(),
        start,
        len: data.len() as u64,
        has_data: data.len() >= 8 && data[..8].iter().any(|b| *b != 0),
        ..Default::default()
    };
    let mut pos = 0usize;
    let mut reported = 0usize;
    const STEP: usize = 16 << 20;
    const AHEAD: u64 = 64 << 20;
    read_ahead(0, AHEAD);
    loop {
        if pos - reported >= STEP {
            progress((pos - reported) as u64);
            read_ahead(
                reported as u64 + AHEAD,
                STEP as u64 + (pos - reported) as u64,
            );
            reported = pos;
        }
        if pos >= data.len() {
            s.data_end = pos as u64;
            break;
        }
        let abs = start + pos as u64;
        match classify(data, pos, abs) {
            At::Message(v) | At::Misplaced(v) => {
                if v.physical_offset != abs as i64 {
                    s.defects.push(Defect::Misplaced {
                        pos: pos as u64,
                        found: v.physical_offset,
                    });
                }
                s.records += 1;
                if is_quarantine(&v) {
                    s.quarantined += 1;
                } else {
                    if !v.is_consumable() {
                        s.unqueued.insert((v.topic.to_string(), v.queue_id));
                    } else if !checks.cq_has(&v, abs) {
                        s.missing_cq
                            .entry((v.topic.to_string(), v.queue_id))
                            .or_default()
                            .add((abs, v.queue_offset));
                    }
                    if !checks.index_has(&v, abs) {
                        s.missing_index.add(abs);
                    }
                }
                s.last_store_timestamp = v.store_timestamp;
                pos += v.total_size();
            }
            At::Blank => {
                s.blank_end = true;
                s.data_end = data.len() as u64;
                break;
            }
            At::End => {
                let nz = data[pos..].iter().rposition(|b| *b != 0);
                match nz {
                    None => {
                        s.data_end = pos as u64;
                        break;
                    }
                    Some(nz) => match resync(data, pos, start, None) {
                        Some(q) => {
                            s.defects.push(Defect::Span {
                                pos: pos as u64,
                                len: (q - pos) as u64,
                                kind: Kind::Hole,
                                reason: format!("{} zero bytes between records", q - pos),
                            });
                            pos = q;
                        }
                        None => {
                            s.data_end = pos as u64;
                            s.tail = Some((
                                (pos + nz + 1) as u64,
                                Kind::BadFields,
                                "non-zero bytes after the zeros that end the data".into(),
                            ));
                            break;
                        }
                    },
                }
            }
            At::Bad(kind, reason) => {
                let hint = (pos + 8 <= data.len())
                    .then(|| read_i32(data, pos))
                    .filter(|t| *t >= MIN_RECORD as i32)
                    .map(|t| pos + t as usize);
                match resync(data, pos, start, hint) {
                    Some(q) => {
                        s.defects.push(Defect::Span {
                            pos: pos as u64,
                            len: (q - pos) as u64,
                            kind,
                            reason,
                        });
                        pos = q;
                    }
                    None => {
                        s.data_end = pos as u64;
                        let nz = data[pos..]
                            .iter()
                            .rposition(|b| *b != 0)
                            .map(|n| pos + n + 1)
                            .unwrap_or(pos);
                        s.tail = Some((nz as u64, kind, reason));
                        break;
                    }
                }
            }
        }
    }
    progress((data.len() - reported) as u64);
    s
}

/// What repair does to the commit log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fix {
    /// Zero `[pos, end)` of the file (torn tail).
    Zero { file: PathBuf, pos: u64, end: u64 },
    /// Write an end-of-file blank record at `pos` (the rest of the file is
    /// unused; its bytes stay as they are).
    Blank { file: PathBuf, pos: u64, size: u64 },
    /// Replace the damaged bytes `[pos, pos+len)` with a quarantine record of
    /// exactly that length (see the crate docs).
    Quarantine {
        file: PathBuf,
        file_start: u64,
        pos: u64,
        len: u64,
    },
    /// Rewrite the PHYSICALOFFSET field of the record at `pos`.
    PhysOffset {
        file: PathBuf,
        file_start: u64,
        pos: u64,
    },
    /// Rewrite a header field of the whole record at `pos` to what the
    /// consume-queue entry pointing at it says (see [`HeaderField`]).
    Header {
        file: PathBuf,
        file_start: u64,
        pos: u64,
        field: HeaderField,
    },
    /// Extend a short file with zeros to the configured size.
    Extend { file: PathBuf, from: u64, to: u64 },
    /// Move a file that is not part of the commit log out of the way.
    MoveAside { file: PathBuf },
}

/// A record header field the body CRC does not cover, as found in a whole
/// record and as the consume-queue entry pointing at the record has it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeaderField {
    QueueOffset {
        found: i64,
        want: i64,
    },
    QueueId {
        found: i32,
        want: i32,
    },
    /// Same length (a different length would not decode as the same
    /// record); the topic bytes start `at` bytes into the record.
    Topic {
        at: u64,
        found: String,
        want: String,
    },
}

impl HeaderField {
    /// Where the field starts in the record and the bytes that make it say
    /// what the consume queue says.
    pub fn patch(&self) -> (u64, Vec<u8>) {
        match self {
            HeaderField::QueueOffset { want, .. } => (
                record::pos::QUEUE_OFFSET as u64,
                want.to_be_bytes().to_vec(),
            ),
            HeaderField::QueueId { want, .. } => {
                (record::pos::QUEUE_ID as u64, want.to_be_bytes().to_vec())
            }
            HeaderField::Topic { at, want, .. } => (*at, want.as_bytes().to_vec()),
        }
    }

    /// The value found in the record.
    pub fn found(&self) -> String {
        match self {
            HeaderField::QueueOffset { found, .. } => found.to_string(),
            HeaderField::QueueId { found, .. } => found.to_string(),
            HeaderField::Topic { found, .. } => format!("{found:?}"),
        }
    }

    /// The value the consume-queue entry implies.
    pub fn want(&self) -> String {
        match self {
            HeaderField::QueueOffset { want, .. } => want.to_string(),
            HeaderField::QueueId { want, .. } => want.to_string(),
            HeaderField::Topic { want, .. } => format!("{want:?}"),
        }
    }
}

impl fmt::Display for HeaderField {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            HeaderField::QueueOffset { .. } => "QUEUEOFFSET field",
            HeaderField::QueueId { .. } => "QUEUEID field",
            HeaderField::Topic { .. } => "topic",
        })
    }
}

/// The commit log's problems and fixes.
#[derive(Debug, Default)]
pub struct CommitLogResult {
    pub problems: Vec<Problem>,
    pub fixes: Vec<Fix>,
    /// Problems repair cannot fix without dropping valid records.
    pub unfixable: Vec<Problem>,
    /// Absolute offset just past the last whole record.
    pub end: u64,
    /// Absolute `[start, end)` ranges that hold no valid record.
    pub damaged: Vec<(u64, u64)>,
    pub records: u64,
    pub quarantined: u64,
    pub last_store_timestamp: i64,
}

/// Turns per-file scans into problems and fixes (the files must be in order).
pub fn assemble(store: &Store, scans: &[FileScan]) -> CommitLogResult {
    let mut r = CommitLogResult::default();
    let size = store.commitlog_size;
    for p in &store.commitlog_strays {
        r.problems.push(Problem::new(
            Kind::CommitlogFileName,
            p,
            None,
            "not a commit log file (its name is not a 20-digit offset within a Java long)",
        ));
        r.fixes.push(Fix::MoveAside { file: p.clone() });
    }
    for (i, f) in store.commitlog.iter().enumerate() {
        if f.start % size != 0 {
            let p = Problem::new(
                Kind::CommitlogFileName,
                &f.file.path,
                None,
                format!(
                    "start offset {} is not a multiple of the file size {size}",
                    f.start
                ),
            );
            r.problems.push(p.clone());
            r.unfixable.push(p);
        } else if i > 0 && f.start != store.commitlog[i - 1].start + size {
            let p = Problem::new(
                Kind::CommitlogGap,
                &f.file.path,
                None,
                format!(
                    "previous file starts at {}; expected this one at {}",
                    store.commitlog[i - 1].start,
                    store.commitlog[i - 1].start + size
                ),
            );
            r.problems.push(p.clone());
            r.unfixable.push(p);
        }
        if f.file.len != size {
            let p = Problem::new(
                Kind::CommitlogFileSize,
                &f.file.path,
                None,
                format!("{} bytes, configured size is {size}", f.file.len),
            );
            r.problems.push(p.clone());
            if f.file.len < size {
                r.fixes.push(Fix::Extend {
                    file: f.file.path.clone(),
                    from: f.file.len,
                    to: size,
                });
            } else {
                r.unfixable.push(p);
            }
        }
    }
    let last_data = scans.iter().rposition(|s| s.has_data || s.records > 0);
    r.end = store.commitlog.first().map(|f| f.start).unwrap_or(0);
    for (i, s) in scans.iter().enumerate() {
        r.records += s.records;
        r.quarantined += s.quarantined;
        if s.records > 0 {
            r.last_store_timestamp = s.last_store_timestamp;
        }
        for d in &s.defects {
            match d {
                Defect::Span {
                    pos,
                    len,
                    kind,
                    reason,
                } => {
                    r.problems.push(Problem::new(
                        *kind,
                        &s.path,
                        Some(*pos),
                        format!(
                            "{reason}; {len} damaged bytes at commit log offset {} are followed by valid records",
                            s.start + pos
                        ),
                    ));
                    r.damaged.push((s.start + pos, s.start + pos + len));
                    r.fixes.push(Fix::Quarantine {
                        file: s.path.clone(),
                        file_start: s.start,
                        pos: *pos,
                        len: *len,
                    });
                }
                Defect::Misplaced { pos, found } => {
                    r.problems.push(Problem::new(
                        Kind::PhysOffsetMismatch,
                        &s.path,
                        Some(*pos),
                        format!(
                            "PHYSICALOFFSET field is {found}, the record is at {}",
                            s.start + pos
                        ),
                    ));
                    r.fixes.push(Fix::PhysOffset {
                        file: s.path.clone(),
                        file_start: s.start,
                        pos: *pos,
                    });
                }
            }
        }
        let later_data = last_data.is_some_and(|l| i < l);
        // Room for an end-of-file blank up to the configured size: a short
        // file is extended to it first (the Fix::Extend planned above), so
        // its current length is not where the blank must end.
        let room = size.saturating_sub(s.data_end);
        if let Some((end, kind, reason)) = &s.tail {
            if later_data {
                r.problems.push(Problem::new(
                    *kind,
                    &s.path,
                    Some(s.data_end),
                    format!(
                        "{reason}; no whole record follows in this file, but later files hold records"
                    ),
                ));
                r.damaged.push((s.start + s.data_end, s.start + s.len));
                if room >= 8 {
                    r.fixes.push(Fix::Blank {
                        file: s.path.clone(),
                        pos: s.data_end,
                        size: room,
                    });
                } else {
                    r.fixes.push(Fix::Zero {
                        file: s.path.clone(),
                        pos: s.data_end,
                        end: *end,
                    });
                }
            } else {
                r.problems.push(Problem::new(
                    Kind::TornTail,
                    &s.path,
                    Some(s.data_end),
                    format!(
                        "{} bytes after the last whole record at commit log offset {} ({reason})",
                        end - s.data_end,
                        s.start + s.data_end
                    ),
                ));
                r.damaged.push((s.start + s.data_end, s.start + end));
                r.fixes.push(Fix::Zero {
                    file: s.path.clone(),
                    pos: s.data_end,
                    end: *end,
                });
            }
        } else if later_data && !s.blank_end && room >= 8 {
            r.problems.push(Problem::new(
                Kind::MissingBlank,
                &s.path,
                Some(s.data_end),
                "data ends without an end-of-file blank record, but later files hold records",
            ));
            r.fixes.push(Fix::Blank {
                file: s.path.clone(),
                pos: s.data_end,
                size: room,
            });
        }
        if Some(i) == last_data {
            r.end = if s.blank_end {
                s.start + s.len
            } else {
                s.start + s.data_end
            };
        }
    }
    r.damaged.sort_unstable();
    r
}

/// Whether `[phys, phys+size)` overlaps a damaged range.
pub fn in_damaged(damaged: &[(u64, u64)], phys: u64, size: u64) -> bool {
    let i = damaged.partition_point(|(_, e)| *e <= phys);
    damaged.get(i).is_some_and(|(s, _)| *s < phys + size.max(1))
}
