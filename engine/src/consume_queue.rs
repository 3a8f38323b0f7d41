//! The consume queue of one (topic, queueId): an array of 20-byte entries
//! pointing into the commit log, stored exactly as RocketMQ 4.x stores it
//! (store.md §7): files of `consume_queue_file_size()` bytes in
//! `<consumequeue>/<TOPIC>/<QUEUEID>/`, each named by its first logical byte
//! offset (entry index × 20) as 20 digits.
//!
//! The dispatcher derives entries from the commit log ([`ConsumeQueue::append_entry`]);
//! pulls read them ([`ConsumeQueue::batch`]). This module knows nothing about
//! the commit log: callers pass plain offsets, and a closure where a record's
//! store time is needed.
//!
//! # Positions
//!
//! All positions are *logical byte offsets* (entry index × 20) internally; the
//! API speaks in entry indexes ("queue offsets"), as RocketMQ's clients do.
//! * `min` — first readable entry (placeholders and expired entries lie below it);
//! * `write` — one past the last written entry; `max_offset() = write / 20`;
//! * `flushed` — everything below it has been `msync`ed.
//!
//! # Concurrency contract
//!
//! * Mutations (`append_entry`, `truncate_dirty`, `delete_expired`,
//!   `correct_min_offset`) serialise on a per-queue writer mutex. In practice
//!   the dispatcher is the only caller of `append_entry`.
//! * Readers take no lock but a per-queue `RwLock` read guard held only while
//!   cloning an `Arc` of one file. The writer stores an entry's words and then
//!   publishes the write position with `Release`; readers load it with
//!   `Acquire` and read only below it, so a reader never sees a half-written
//!   entry during normal operation.
//! * Truncation ([`truncate_dirty`](ConsumeQueue::truncate_dirty)) lowers the
//!   write position first and then zeroes the dropped entries; a reader that
//!   loaded the old position may see an old or zero entry (never undefined
//!   behaviour: the mapping is only touched through atomic words, see
//!   `word_map`). Zero entries are not [`CqEntry::is_message`], so such a
//!   reader skips them.
//! * Deleted files stay mapped while a reader holds their `Arc`; the directory
//!   entry is removed immediately.
//! * `flush` may run concurrently with the writer (it serialises with other
//!   flushes only).

mod entry;
mod set;

pub use entry::{CqEntry, CQ_ENTRY_SIZE, PLACEHOLDER_SIZE};
pub use set::ConsumeQueueSet;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::{Mutex, RwLock};

use crate::error::{Result, StoreError};
use crate::word_map::WordMap;

/// Bytes per page for the "least pages" flush rule (RocketMQ's `OS_PAGE_SIZE`).
const PAGE_SIZE: u64 = 4096;

const ENTRY: u64 = CQ_ENTRY_SIZE;

/// What [`ConsumeQueue::append_entry`] did with an entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AppendOutcome {
    /// Written at its queue offset.
    Appended,
    /// Written at its queue offset after `placeholders` padding entries were
    /// written before it: either the first entry of an empty queue at a
    /// non-zero offset (the padding lies below the min offset) or a gap in the
    /// queue offsets (the padding lies inside the readable range and readers
    /// skip it, see [`CqEntry::is_message`]).
    AppendedAfterPadding { placeholders: u64 },
    /// Ignored: the record ends at or below the queue's max physical end
    /// (re-dispatch of an already indexed record).
    Duplicate,
    /// Ignored: its queue offset is below the write position.
    Behind,
}

/// One consume-queue file, mapped.
struct CqFile {
    /// Logical byte offset of the file's first entry (= its name).
    start: u64,
    map: WordMap,
}

impl CqFile {
    fn entry_at(&self, rel: u64) -> CqEntry {
        let p = rel as usize;
        CqEntry {
            phys_offset: self.map.get_i64(p),
            size: self.map.get_i32(p + 8),
            tags_code: self.map.get_i64(p + 12),
        }
    }

    fn put_entry(&self, rel: u64, e: CqEntry) {
        let p = rel as usize;
        self.map.put_i64(p, e.phys_offset);
        self.map.put_i32(p + 8, e.size);
        self.map.put_i64(p + 12, e.tags_code);
    }
}

/// The 20-digit file name of a consume-queue (or commit log) file.
pub fn file_name(start: u64) -> String {
    format!("{start:020}")
}

/// The consume queue of one (topic, queueId). See the module docs for the
/// concurrency contract.
pub struct ConsumeQueue {
    topic: String,
    queue_id: i32,
    dir: PathBuf,
    file_size: u64,
    /// Files in offset order, contiguous.
    files: RwLock<Vec<Arc<CqFile>>>,
    write_pos: AtomicU64,
    min_pos: AtomicU64,
    max_phys_end: AtomicU64,
    flushed_pos: AtomicU64,
    writer: Mutex<()>,
    flush_lock: Mutex<()>,
    /// Set by [`retire`](Self::retire): the topic was deleted.
    retired: AtomicBool,
    /// Set at load when valid entries followed the first invalid one and were
    /// cut: the queue lost entries that re-dispatch must put back.
    lost_entries: AtomicBool,
}

impl std::fmt::Debug for ConsumeQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConsumeQueue")
            .field("topic", &self.topic)
            .field("queue_id", &self.queue_id)
            .field("min_offset", &self.min_offset())
            .field("max_offset", &self.max_offset())
            .field("max_phys_end", &self.max_phys_end())
            .finish()
    }
}

impl ConsumeQueue {
    /// An empty queue whose files will live in `<root>/<topic>/<queue_id>/`.
    /// Does no I/O: files are created by the first append.
    ///
    /// # Panics
    /// If `file_size` is not a positive multiple of 20 (use
    /// [`StoreConfig::consume_queue_file_size`](crate::StoreConfig::consume_queue_file_size)).
    pub fn new(root: &Path, topic: &str, queue_id: i32, file_size: u64) -> Self {
        assert!(
            file_size > 0 && file_size.is_multiple_of(ENTRY),
            "consume queue file size {file_size} must be a positive multiple of 20"
        );
        ConsumeQueue {
            topic: topic.to_string(),
            queue_id,
            dir: root.join(topic).join(queue_id.to_string()),
            file_size,
            files: RwLock::new(Vec::new()),
            write_pos: AtomicU64::new(0),
            min_pos: AtomicU64::new(0),
            max_phys_end: AtomicU64::new(0),
            flushed_pos: AtomicU64::new(0),
            writer: Mutex::new(()),
            flush_lock: Mutex::new(()),
            retired: AtomicBool::new(false),
            lost_entries: AtomicBool::new(false),
        }
    }

    /// Loads the queue's files and recovers it (store.md §11.7 step 2):
    /// every file must have exactly `file_size` bytes and the names must be
    /// contiguous; scanning starts at the third-last file and stops at the first
    /// invalid entry (phys offset < 0 or size ≤ 0), which becomes the write
    /// position; later files are deleted and stale bytes after the write
    /// position (a torn tail) are zeroed so they can never be mistaken for
    /// entries by a later recovery. The min offset is the first non-placeholder
    /// entry; call [`correct_min_offset`](Self::correct_min_offset) once the
    /// commit log's min offset is known.
    pub fn open(root: &Path, topic: &str, queue_id: i32, file_size: u64) -> Result<Self> {
        let q = Self::new(root, topic, queue_id, file_size);
        q.load_and_recover()?;
        Ok(q)
    }

    pub fn topic(&self) -> &str {
        &self.topic
    }

    pub fn queue_id(&self) -> i32 {
        self.queue_id
    }

    /// The directory holding this queue's files.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Entries per file.
    pub fn entries_per_file(&self) -> u64 {
        self.file_size / ENTRY
    }

    /// First readable queue offset (RocketMQ's `getMinOffsetInQueue`).
    pub fn min_offset(&self) -> u64 {
        self.min_pos.load(Ordering::Acquire) / ENTRY
    }

    /// Next queue offset to be written (RocketMQ's `getMaxOffsetInQueue`); the
    /// queue holds entries `min_offset()..max_offset()`.
    pub fn max_offset(&self) -> u64 {
        self.write_pos.load(Ordering::Acquire) / ENTRY
    }

    /// End (`offset + size`) of the last record referenced by this queue; 0
    /// if it references none. Dispatch restarts from the max over all queues.
    pub fn max_phys_end(&self) -> u64 {
        self.max_phys_end.load(Ordering::Acquire)
    }

    /// Whether loading cut valid entries that followed a damaged one (see
    /// [`ConsumeQueue::open`]); they are in the commit log, to re-dispatch.
    pub fn lost_entries(&self) -> bool {
        self.lost_entries.load(Ordering::Acquire)
    }

    /// Queue offset up to which entries are durable.
    pub fn flushed_offset(&self) -> u64 {
        self.flushed_pos.load(Ordering::Acquire) / ENTRY
    }

    /// Number of files currently mapped.
    pub fn file_count(&self) -> usize {
        self.files.read().len()
    }

    /// Queue offset of the first entry of each file, oldest first.
    pub fn file_start_offsets(&self) -> Vec<u64> {
        self.files.read().iter().map(|f| f.start / ENTRY).collect()
    }

    /// Queue offset of the first entry of the file after the one that would
    /// contain `index` — where a pull continues when that file is missing
    /// (OFFSET_FOUND_NULL, semantics.md §6.2).
    pub fn next_file_start(&self, index: u64) -> u64 {
        let per = self.entries_per_file();
        index - index % per + per
    }

    fn file_containing(&self, pos: u64) -> Option<Arc<CqFile>> {
        let files = self.files.read();
        let first = files.first()?;
        if pos < first.start {
            return None;
        }
        let i = ((pos - first.start) / self.file_size) as usize;
        let f = files.get(i)?;
        (pos >= f.start && pos < f.start + self.file_size).then(|| f.clone())
    }

    /// The entry at queue offset `index`, if `min_offset() <= index < max_offset()`
    /// and its file is present. The entry may still be a placeholder (gap fill).
    pub fn entry(&self, index: u64) -> Option<CqEntry> {
        let pos = index.checked_mul(ENTRY)?;
        let write = self.write_pos.load(Ordering::Acquire);
        if pos >= write || pos < self.min_pos.load(Ordering::Acquire) {
            return None;
        }
        let f = self.file_containing(pos)?;
        Some(f.entry_at(pos - f.start))
    }

    /// Up to `max_entries` entries from queue offset `index`, never crossing
    /// the end of the file containing `index` (store.md §11.10: a pull does
    /// not cross a CQ file boundary). `None` if `index` is outside
    /// `min_offset()..max_offset()` or its file is missing; the caller tells
    /// these apart with `min_offset`/`max_offset` (semantics.md §6.2).
    ///
    /// The batch holds the file mapped: it stays readable even if the file is
    /// deleted meanwhile. Entries written after the call are not included.
    pub fn batch(&self, index: u64, max_entries: usize) -> Option<CqBatch> {
        let pos = index.checked_mul(ENTRY)?;
        let write = self.write_pos.load(Ordering::Acquire);
        if pos >= write || pos < self.min_pos.load(Ordering::Acquire) {
            return None;
        }
        let file = self.file_containing(pos)?;
        let want = (max_entries as u64).saturating_mul(ENTRY);
        let end = write
            .min(file.start + self.file_size)
            .min(pos.saturating_add(want));
        Some(CqBatch { file, pos, end })
    }

    // ---- writing -------------------------------------------------------

    /// Appends the entry for a record (store.md §7.3), called by the
    /// dispatcher in commit log order:
    /// * a record ending at or below [`max_phys_end`](Self::max_phys_end) is
    ///   ignored ([`AppendOutcome::Duplicate`]) — re-dispatch is idempotent;
    /// * a queue offset below the write position is ignored ([`AppendOutcome::Behind`]);
    /// * the first entry of an empty queue at a non-zero offset: the file
    ///   containing it is created, padded with placeholders `(0, 0x7FFFFFFF, 0)`
    ///   from its start, and the min offset set to `queue_offset`;
    /// * a gap (queue offset above the write position) of at most one file's
    ///   worth of entries is padded with placeholders and logged. RocketMQ
    ///   would write the entry at the write position instead, silently
    ///   breaking "entry index = the record's QUEUEOFFSET", which consumers'
    ///   offsets rely on; refusing would stall the dispatcher. A larger gap
    ///   means a corrupt QUEUEOFFSET and is refused with `InvalidArgument`
    ///   (the caller should log and skip the record).
    ///
    /// `phys_offset` must be ≥ 0 and `size` > 0.
    pub fn append_entry(
        &self,
        queue_offset: u64,
        phys_offset: i64,
        size: i32,
        tags_code: i64,
    ) -> Result<AppendOutcome> {
        if phys_offset < 0 || size <= 0 {
            return Err(StoreError::InvalidArgument(format!(
                "consume queue entry ({phys_offset}, {size}) for {}/{}: offset must be >= 0 and size > 0",
                self.topic, self.queue_id
            )));
        }
        let Some(expect) = queue_offset.checked_mul(ENTRY) else {
            return Err(StoreError::InvalidArgument(format!(
                "queue offset {queue_offset} out of range"
            )));
        };
        let _w = self.writer.lock();
        let end = phys_offset as u64 + size as u64;
        if end <= self.max_phys_end.load(Ordering::Relaxed) {
            return Ok(AppendOutcome::Duplicate);
        }
        let write = self.write_pos.load(Ordering::Relaxed);
        let min = self.min_pos.load(Ordering::Relaxed);
        if expect < write {
            tracing::warn!(
                "consume queue {}/{}: entry for queue offset {queue_offset} is behind the write position {}; ignored",
                self.topic,
                self.queue_id,
                write / ENTRY
            );
            return Ok(AppendOutcome::Behind);
        }
        let mut placeholders = 0;
        if expect > write {
            let gap = (expect - write) / ENTRY;
            let empty = write == min;
            let no_files = self.files.read().is_empty();
            if no_files || (empty && gap > self.entries_per_file()) {
                // First entry of an empty queue: start afresh at the file containing it.
                self.drop_all_files_locked()?;
                let start = expect - expect % self.file_size;
                let f = self.create_file_locked(start)?;
                for rel in (0..expect - start).step_by(ENTRY as usize) {
                    f.put_entry(rel, CqEntry::PLACEHOLDER);
                }
                placeholders = (expect - start) / ENTRY;
                {
                    let _f = self.flush_lock.lock();
                    self.flushed_pos.store(start, Ordering::Release);
                }
                self.write_pos.store(expect, Ordering::Release);
                self.min_pos.store(expect, Ordering::Release);
            } else if gap > self.entries_per_file() {
                return Err(StoreError::InvalidArgument(format!(
                    "consume queue {}/{}: queue offset {queue_offset} is {gap} entries past the write position {}; refusing to pad more than one file",
                    self.topic,
                    self.queue_id,
                    write / ENTRY
                )));
            } else {
                if !empty {
                    tracing::warn!(
                        "consume queue {}/{}: queue offsets {}..{queue_offset} missing; padded with placeholders",
                        self.topic,
                        self.queue_id,
                        write / ENTRY
                    );
                }
                let mut pos = write;
                while pos < expect {
                    let f = self.file_for_write_locked(pos)?;
                    f.put_entry(pos - f.start, CqEntry::PLACEHOLDER);
                    pos += ENTRY;
                }
                placeholders = gap;
                self.write_pos.store(expect, Ordering::Release);
                if empty {
                    self.min_pos.store(expect, Ordering::Release);
                }
            }
        }
        let f = self.file_for_write_locked(expect)?;
        f.put_entry(
            expect - f.start,
            CqEntry {
                phys_offset,
                size,
                tags_code,
            },
        );
        self.write_pos.store(expect + ENTRY, Ordering::Release);
        self.max_phys_end.store(end, Ordering::Release);
        Ok(if placeholders == 0 {
            AppendOutcome::Appended
        } else {
            AppendOutcome::AppendedAfterPadding { placeholders }
        })
    }

    /// The file that holds `pos`, creating the next file if `pos` is its start.
    fn file_for_write_locked(&self, pos: u64) -> Result<Arc<CqFile>> {
        {
            let files = self.files.read();
            if let Some(last) = files.last() {
                if pos >= last.start && pos < last.start + self.file_size {
                    return Ok(last.clone());
                }
                if pos != last.start + self.file_size {
                    return Err(StoreError::InvalidArgument(format!(
                        "consume queue {}/{}: position {pos} is not in or right after the last file",
                        self.topic, self.queue_id
                    )));
                }
            }
        }
        self.create_file_locked(pos - pos % self.file_size)
    }

    fn create_file_locked(&self, start: u64) -> Result<Arc<CqFile>> {
        if self.retired.load(Ordering::Acquire) {
            return Err(StoreError::InvalidArgument(format!(
                "consume queue {}/{} was removed",
                self.topic, self.queue_id
            )));
        }
        if !valid_dir_component(&self.topic) {
            return Err(StoreError::InvalidArgument(format!(
                "topic `{}` cannot be a directory name",
                self.topic
            )));
        }
        crate::dir::create_dir_durable(&self.dir)?;
        let path = self.dir.join(file_name(start));
        if path.exists() {
            // Not in our list, so not ours: left by an interrupted deletion.
            tracing::warn!("replacing stale consume queue file {}", path.display());
            std::fs::remove_file(&path).map_err(|e| StoreError::io(&path, e))?;
        }
        let f = Arc::new(CqFile {
            start,
            // Whole: every entry is written through the mapping.
            map: WordMap::create(&path, self.file_size, self.file_size)?,
        });
        self.files.write().push(f.clone());
        Ok(f)
    }

    /// Deletes the queue's files and refuses further appends (topic deletion).
    /// Readers keep whatever they already mapped; the queue then reads as empty
    /// at its old max offset.
    pub(crate) fn retire(&self) -> Result<()> {
        let _w = self.writer.lock();
        self.retired.store(true, Ordering::Release);
        let write = self.write_pos.load(Ordering::Relaxed);
        self.min_pos.store(write, Ordering::Release);
        self.drop_all_files_locked()
    }

    fn drop_all_files_locked(&self) -> Result<()> {
        let old = std::mem::take(&mut *self.files.write());
        for f in old {
            remove_file(f.map.path())?;
        }
        Ok(())
    }

    // ---- flushing ------------------------------------------------------

    /// `msync`s written entries (store.md §11.6), file by file from the
    /// flushed position: a file is flushed when it is full, or when at least
    /// `least_pages` 4 KiB pages of it are dirty (any dirty byte when
    /// `least_pages` is 0); flushing stops at the first file that does not
    /// qualify. Returns whether everything written is now flushed.
    pub fn flush(&self, least_pages: u64) -> Result<bool> {
        let _f = self.flush_lock.lock();
        let write = self.write_pos.load(Ordering::Acquire);
        let mut flushed = self.flushed_pos.load(Ordering::Acquire).min(write);
        let files: Vec<Arc<CqFile>> = self.files.read().clone();
        for f in files.iter() {
            let end = f.start + self.file_size;
            if end <= flushed || f.start >= write {
                continue;
            }
            let wrote = write.min(end) - f.start;
            let done = flushed.max(f.start) - f.start;
            let able = wrote == self.file_size
                || if least_pages == 0 {
                    wrote > done
                } else {
                    wrote / PAGE_SIZE - done / PAGE_SIZE >= least_pages
                };
            if !able {
                break;
            }
            if wrote > done {
                f.map.flush_range(done as usize, (wrote - done) as usize)?;
            }
            flushed = f.start + wrote;
        }
        // Truncation lowers `flushed_pos` only while holding `flush_lock`, so
        // this store cannot undo its clamp.
        self.flushed_pos.store(flushed, Ordering::Release);
        Ok(flushed >= write)
    }

    // ---- recovery, truncation, deletion ---------------------------------

    fn load_and_recover(&self) -> Result<()> {
        let _w = self.writer.lock();
        let mut names = Vec::new();
        match std::fs::read_dir(&self.dir) {
            Ok(rd) => {
                for ent in rd {
                    let ent = ent.map_err(|e| StoreError::io(&self.dir, e))?;
                    let name = ent.file_name();
                    let name = name.to_string_lossy();
                    match parse_file_name(&name) {
                        Some(start) => names.push(start),
                        None => tracing::warn!(
                            "ignoring {} in consume queue directory",
                            ent.path().display()
                        ),
                    }
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(StoreError::io(&self.dir, e)),
        }
        names.sort_unstable();
        let mut files = Vec::with_capacity(names.len());
        for (i, start) in names.iter().copied().enumerate() {
            let path = self.dir.join(file_name(start));
            if start % self.file_size != 0 {
                return Err(StoreError::corruption(
                    &path,
                    format!("name is not a multiple of the file size {}", self.file_size),
                ));
            }
            if i > 0 && start != names[i - 1] + self.file_size {
                return Err(StoreError::corruption(
                    &path,
                    format!(
                        "consume queue files are not contiguous: previous file starts at {}",
                        names[i - 1]
                    ),
                ));
            }
            files.push(Arc::new(CqFile {
                start,
                map: WordMap::open(&path, self.file_size)?,
            }));
        }
        if files.is_empty() {
            return Ok(());
        }

        // Scan from the third-last file; stop at the first invalid entry.
        let scanned = files.len().saturating_sub(3);
        let mut write = files[scanned].start;
        'scan: for f in files.iter().skip(scanned) {
            let mut rel = 0;
            while rel < self.file_size {
                if !f.entry_at(rel).is_valid() {
                    write = f.start + rel;
                    break 'scan;
                }
                rel += ENTRY;
            }
            write = f.start + self.file_size;
        }
        // A torn tail is an invalid entry with nothing valid after it; a
        // valid entry further on means damage, and the entries cut with it
        // must come back from the commit log.
        let lost = files.iter().skip(scanned).any(|f| {
            (0..self.file_size)
                .step_by(ENTRY as usize)
                .any(|rel| f.start + rel > write && f.entry_at(rel).is_valid())
        });
        if lost {
            tracing::warn!(
                "consume queue {} has valid entries after an invalid one at queue offset {}: cut there, and re-dispatched from the commit log",
                self.dir.display(),
                write / ENTRY
            );
            self.lost_entries.store(true, Ordering::Release);
        }
        *self.files.write() = files;
        self.cut_after_locked(write)?;
        let first = self.first_file_start().unwrap_or(write);
        self.min_pos
            .store(self.first_message_pos(first, write), Ordering::Release);
        self.max_phys_end
            .store(self.last_message_end(first, write), Ordering::Release);
        self.flushed_pos.store(write, Ordering::Release);
        Ok(())
    }

    fn first_file_start(&self) -> Option<u64> {
        self.files.read().first().map(|f| f.start)
    }

    /// Makes `write` the write position: deletes files starting after it
    /// (keeping at least one file), zeroes every non-zero byte between it and
    /// the end of its file (flushing them), and clamps min/flushed.
    fn cut_after_locked(&self, write: u64) -> Result<()> {
        self.write_pos.store(write, Ordering::Release);
        if self.min_pos.load(Ordering::Relaxed) > write {
            self.min_pos.store(write, Ordering::Release);
        }
        {
            let _f = self.flush_lock.lock();
            if self.flushed_pos.load(Ordering::Relaxed) > write {
                self.flushed_pos.store(write, Ordering::Release);
            }
        }
        let removed: Vec<Arc<CqFile>> = {
            let mut files = self.files.write();
            let keep = files
                .iter()
                .position(|f| f.start > write)
                .unwrap_or(files.len())
                .max(1);
            let keep = keep.min(files.len());
            files.split_off(keep)
        };
        for f in removed.iter().rev() {
            tracing::info!(
                "deleting consume queue file {} after recovery point",
                f.map.path().display()
            );
            remove_file(f.map.path())?;
        }
        let files = self.files.read().clone();
        for f in files.iter().rev() {
            if f.start + self.file_size <= write {
                break;
            }
            let from = write.max(f.start) - f.start;
            let mut dirty = false;
            for p in (from..self.file_size).step_by(4) {
                if f.map.get_u32(p as usize) != 0 {
                    f.map.put_u32(p as usize, 0);
                    dirty = true;
                }
            }
            if dirty {
                f.map
                    .flush_range(from as usize, (self.file_size - from) as usize)?;
            }
        }
        Ok(())
    }

    /// Position of the first message entry (not a placeholder) in `[from, to)`; `to` if none.
    fn first_message_pos(&self, from: u64, to: u64) -> u64 {
        self.first_pos_where(from, to, |e| e.is_message())
    }

    fn first_pos_where(&self, from: u64, to: u64, pred: impl Fn(&CqEntry) -> bool) -> u64 {
        let mut pos = from;
        while pos < to {
            let Some(f) = self.file_containing(pos) else {
                return to;
            };
            let file_end = (f.start + self.file_size).min(to);
            while pos < file_end {
                if pred(&f.entry_at(pos - f.start)) {
                    return pos;
                }
                pos += ENTRY;
            }
        }
        to
    }

    /// `phys_end` of the last message entry in `[from, to)`; 0 if none.
    fn last_message_end(&self, from: u64, to: u64) -> u64 {
        let mut pos = to;
        while pos > from {
            let Some(f) = self.file_containing(pos - ENTRY) else {
                return 0;
            };
            let file_start = f.start.max(from);
            while pos > file_start {
                pos -= ENTRY;
                let e = f.entry_at(pos - f.start);
                if e.is_message() {
                    return e.phys_end();
                }
            }
        }
        0
    }

    /// Drops every entry pointing at or beyond commit log offset `phys_offset`
    /// (store.md §11.7 step 4), after the commit log was truncated there.
    /// Entries are in commit log order, so this cuts a tail (with any gap
    /// padding left at its end, down to the min offset): files whose
    /// first entry is beyond are deleted (except the first remaining file,
    /// which is kept empty so the queue keeps its offsets), the rest of the
    /// last file is zeroed, and the max physical end recomputed.
    pub fn truncate_dirty(&self, phys_offset: u64) -> Result<()> {
        let _w = self.writer.lock();
        let old_write = self.write_pos.load(Ordering::Relaxed);
        let min = self.min_pos.load(Ordering::Relaxed);
        let mut pos = old_write;
        while pos > 0 {
            let Some(f) = self.file_containing(pos - ENTRY) else {
                break;
            };
            let e = f.entry_at(pos - ENTRY - f.start);
            // Keep entries below the cut, except gap padding that would
            // become the tail (it only existed to place a dropped entry).
            let padding_tail = e.is_placeholder() && pos - ENTRY >= min;
            if e.is_valid() && (e.phys_offset as u64) < phys_offset && !padding_tail {
                break;
            }
            pos -= ENTRY;
        }
        if pos == old_write {
            return Ok(());
        }
        tracing::info!(
            "consume queue {}/{}: truncating offsets {}..{} (commit log truncated at {phys_offset})",
            self.topic,
            self.queue_id,
            pos / ENTRY,
            old_write / ENTRY
        );
        self.cut_after_locked(pos)?;
        let first = self.first_file_start().unwrap_or(pos);
        self.max_phys_end
            .store(self.last_message_end(first, pos), Ordering::Release);
        Ok(())
    }

    /// Deletes files (never the last) whose last entry points below the commit
    /// log's min offset, then recomputes the min offset and the max physical
    /// end from the files kept, as reopening would (store.md §11.8).
    /// Padding entries are ignored when finding a file's last entry.
    /// Returns the number of files deleted.
    pub fn delete_expired(&self, commit_log_min_offset: u64) -> Result<usize> {
        let _w = self.writer.lock();
        let mut deleted = 0;
        loop {
            let victim = {
                let files = self.files.read();
                if files.len() <= 1 {
                    break;
                }
                let first = &files[0];
                // The file's last *message* entry decides (its last slot may
                // be gap padding); a file of padding only goes too.
                let last = (0..self.file_size / ENTRY)
                    .rev()
                    .map(|i| first.entry_at(i * ENTRY))
                    .find(CqEntry::is_message);
                if last.is_some_and(|e| e.phys_offset as u64 >= commit_log_min_offset) {
                    break;
                }
                first.clone()
            };
            self.files.write().remove(0);
            tracing::info!(
                "deleting expired consume queue file {}",
                victim.map.path().display()
            );
            remove_file(victim.map.path())?;
            deleted += 1;
        }
        if deleted > 0 {
            // The kept files decide, as on reopen: if only padding is left,
            // the queue no longer knows a record end (the scan is short
            // unless the tail is all padding).
            let write = self.write_pos.load(Ordering::Relaxed);
            let first = self.first_file_start().unwrap_or(write);
            self.max_phys_end
                .store(self.last_message_end(first, write), Ordering::Release);
        }
        self.correct_min_offset_locked(commit_log_min_offset);
        Ok(deleted)
    }

    /// Moves the min offset up to the first entry whose record is at or above
    /// `commit_log_min_offset` (store.md §7.3, §11.7 step 5). Never moves it
    /// down; if no entry qualifies the queue becomes empty (`min == max`).
    pub fn correct_min_offset(&self, commit_log_min_offset: u64) {
        let _w = self.writer.lock();
        self.correct_min_offset_locked(commit_log_min_offset);
    }

    fn correct_min_offset_locked(&self, commit_log_min_offset: u64) {
        let write = self.write_pos.load(Ordering::Relaxed);
        let from = self
            .min_pos
            .load(Ordering::Relaxed)
            .max(self.first_file_start().unwrap_or(write))
            .min(write);
        let min = self.first_pos_where(from, write, |e| {
            e.is_message() && e.phys_offset as u64 >= commit_log_min_offset
        });
        self.min_pos.store(min, Ordering::Release);
    }

    // ---- search by time -----------------------------------------------

    /// The queue offset of the message stored closest to `timestamp` (ms)
    /// (store.md §7.4): picks the first file modified at or after `timestamp`
    /// (else the last), binary-searches its readable entries by the store time
    /// `store_time(phys_offset, size)` of the referenced records. Entries
    /// below `commit_log_min_offset`, placeholders, and entries whose record
    /// `store_time` cannot read (`None`) count as "earlier than the target".
    /// An exact hit wins; otherwise the closer neighbour (the later one if
    /// there is no earlier one, the earlier one on a tie or if there is no
    /// later one). `None` if no entry is usable (RocketMQ answers 0).
    pub fn search_offset_by_time(
        &self,
        timestamp: i64,
        commit_log_min_offset: u64,
        store_time: impl Fn(i64, i32) -> Option<i64>,
    ) -> Option<u64> {
        let files: Vec<Arc<CqFile>> = self.files.read().clone();
        let write = self.write_pos.load(Ordering::Acquire);
        let min = self.min_pos.load(Ordering::Acquire);
        let file = files
            .iter()
            .find(|f| modified_ms(f.map.path()).is_some_and(|m| m >= timestamp))
            .or(files.last())?;
        let low_pos = min.max(file.start);
        let high_end = write.min(file.start + self.file_size);
        if high_end <= low_pos {
            return None;
        }
        // Binary search over entry indexes relative to the file.
        let (mut lo, mut hi) = (
            (low_pos - file.start) / ENTRY,
            (high_end - file.start) / ENTRY,
        );
        let mut left: Option<(u64, i64)> = None;
        let mut right: Option<(u64, i64)> = None;
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            let e = file.entry_at(mid * ENTRY);
            let t = if e.is_message() && e.phys_offset as u64 >= commit_log_min_offset {
                store_time(e.phys_offset, e.size)
            } else {
                None
            };
            match t {
                Some(t) if t == timestamp => return Some(file.start / ENTRY + mid),
                Some(t) if t > timestamp => {
                    right = Some((mid, t));
                    hi = mid;
                }
                Some(t) => {
                    left = Some((mid, t));
                    lo = mid + 1;
                }
                None => lo = mid + 1,
            }
        }
        let rel = match (left, right) {
            (None, None) => return None,
            (Some((l, _)), None) => l,
            (None, Some((r, _))) => r,
            (Some((l, lt)), Some((r, rt))) => {
                if timestamp.abs_diff(lt) > timestamp.abs_diff(rt) {
                    r
                } else {
                    l
                }
            }
        };
        Some(file.start / ENTRY + rel)
    }
}

/// A run of entries from one file, produced by [`ConsumeQueue::batch`].
/// Iterates `(queue_offset, entry)`.
pub struct CqBatch {
    file: Arc<CqFile>,
    pos: u64,
    end: u64,
}

impl CqBatch {
    /// Queue offset of the next entry the iterator yields.
    pub fn next_offset(&self) -> u64 {
        self.pos / ENTRY
    }

    /// One past the queue offset of the batch's last entry.
    pub fn end_offset(&self) -> u64 {
        self.end / ENTRY
    }

    /// Entries not yet yielded.
    pub fn remaining(&self) -> usize {
        ((self.end - self.pos) / ENTRY) as usize
    }
}

impl Iterator for CqBatch {
    type Item = (u64, CqEntry);

    fn next(&mut self) -> Option<Self::Item> {
        if self.pos >= self.end {
            return None;
        }
        let e = self.file.entry_at(self.pos - self.file.start);
        let index = self.pos / ENTRY;
        self.pos += ENTRY;
        Some((index, e))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.remaining(), Some(self.remaining()))
    }
}

impl ExactSizeIterator for CqBatch {}

/// A topic or queue directory name we are willing to create.
pub(crate) fn valid_dir_component(s: &str) -> bool {
    !s.is_empty() && s != "." && s != ".." && !s.contains(['/', '\0'])
}

fn parse_file_name(name: &str) -> Option<u64> {
    (name.len() == 20 && name.bytes().all(|b| b.is_ascii_digit()))
        .then(|| name.parse().ok())
        .flatten()
}

fn remove_file(path: &Path) -> Result<()> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(StoreError::io(path, e)),
    }
}

fn modified_ms(path: &Path) -> Option<i64> {
    let m = std::fs::metadata(path).ok()?.modified().ok()?;
    let d = m.duration_since(std::time::UNIX_EPOCH).ok()?;
    i64::try_from(d.as_millis()).ok()
}

#[cfg(test)]
mod tests;
