//! What a check finds: problems (each with a kind, a file and an offset) and
//! the totals printed in the summary.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::Serialize;

/// The kinds of problem `check` reports. The names appear in the summary and
/// the JSON output, so they are stable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    // commit log files
    CommitlogFileName,
    CommitlogFileSize,
    CommitlogGap,
    // commit log records
    BadMagic,
    BadSize,
    BadCrc,
    BadFields,
    PhysOffsetMismatch,
    /// A whole record's QUEUEOFFSET, QUEUEID or topic (fields the body CRC
    /// does not cover) disagrees with the consume-queue entry pointing at it.
    HeaderMismatch,
    Hole,
    BadBlank,
    MissingBlank,
    TornTail,
    BeyondCheckpoint,
    // consume queues
    CqFileName,
    CqFileSize,
    CqGap,
    CqBadEntry,
    CqPastEnd,
    CqOffset,
    CqGarbage,
    CqMissingEntry,
    // index
    IndexFileName,
    IndexFileSize,
    IndexHeader,
    IndexBadEntry,
    IndexChain,
    IndexMissingEntry,
    // checkpoint, abort, config
    CheckpointMissing,
    CheckpointBad,
    CheckpointStale,
    UncleanShutdown,
    ConfigUnparseable,
    /// A config file (or the config directory) exists but cannot be read;
    /// repair leaves it alone (fix its permissions).
    ConfigUnreadable,
    ConfigInconsistent,
}

impl Kind {
    pub fn name(self) -> String {
        serde_json::to_value(self)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default()
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name())
    }
}

/// One problem: what, where (file and byte offset inside it), and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Problem {
    pub kind: Kind,
    pub file: PathBuf,
    /// Byte offset inside `file`, when the problem has a position.
    pub offset: Option<u64>,
    pub detail: String,
}

impl Problem {
    pub fn new(kind: Kind, file: &Path, offset: Option<u64>, detail: impl Into<String>) -> Self {
        Problem {
            kind,
            file: file.to_path_buf(),
            offset,
            detail: detail.into(),
        }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.offset {
            Some(o) => write!(
                f,
                "{}: {} @ {}: {}",
                self.kind,
                self.file.display(),
                o,
                self.detail
            ),
            None => write!(f, "{}: {}: {}", self.kind, self.file.display(), self.detail),
        }
    }
}

/// Totals for the summary.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Totals {
    pub commitlog_files: u64,
    pub consume_queue_files: u64,
    pub index_files: u64,
    pub other_files: u64,
    /// Whole, valid commit log records (including quarantined ones).
    pub records: u64,
    /// Records fsck replaced by a quarantine record in an earlier repair.
    pub quarantined_records: u64,
    pub consume_queue_entries: u64,
    pub index_entries: u64,
    /// Bytes read.
    pub bytes: u64,
    /// Commit log offset just past the last whole record.
    pub commitlog_end: u64,
    pub seconds: f64,
}

/// Everything a check found.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Report {
    pub store: PathBuf,
    pub totals: Totals,
    pub problems: Vec<Problem>,
    /// Notes that are not problems (e.g. inferred file sizes).
    pub notes: Vec<String>,
}

impl Report {
    pub fn is_clean(&self) -> bool {
        self.problems.is_empty()
    }

    pub fn by_kind(&self) -> BTreeMap<Kind, usize> {
        let mut m = BTreeMap::new();
        for p in &self.problems {
            *m.entry(p.kind).or_insert(0) += 1;
        }
        m
    }

    pub fn count(&self, kind: Kind) -> usize {
        self.problems.iter().filter(|p| p.kind == kind).count()
    }

    /// The human summary printed at the end of `check`.
    pub fn summary(&self) -> String {
        let t = &self.totals;
        let mb = t.bytes as f64 / 1e6;
        let mut s = format!(
            "files: {} commit log, {} consume queue, {} index, {} other\n\
             records: {} ({} quarantined), consume-queue entries: {}, index entries: {}\n\
             commit log end: {}\n\
             read {:.1} MB in {:.2} s ({:.0} MB/s)\n",
            t.commitlog_files,
            t.consume_queue_files,
            t.index_files,
            t.other_files,
            t.records,
            t.quarantined_records,
            t.consume_queue_entries,
            t.index_entries,
            t.commitlog_end,
            mb,
            t.seconds,
            if t.seconds > 0.0 { mb / t.seconds } else { 0.0 },
        );
        if self.problems.is_empty() {
            s.push_str("problems: none — store is clean\n");
        } else {
            s.push_str(&format!("problems: {}\n", self.problems.len()));
            for (k, n) in self.by_kind() {
                s.push_str(&format!("  {k}: {n}\n"));
            }
        }
        s
    }
}
