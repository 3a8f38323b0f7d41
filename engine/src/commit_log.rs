//! The commit log: every topic's records in one append-only stream of
//! fixed-size mapped files (store.md §2–§4).
//!
//! Appends are serialised by one lock that does only what needs the lock:
//! assign queue offsets, the physical offset and the store timestamp, and copy
//! the already-encoded bytes into the mapping. Durability is the flusher's job
//! ([`crate::flusher`]); reading needs no lock at all.

use rustc_hash::FxHashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use crossbeam_utils::CachePadded;
use parking_lot::{Mutex, RwLock};

use crate::allocator::{FileAllocator, FileSpec};
use crate::config::FlushMechanism;
use crate::error::{Result, StoreError};
use crate::mapped_file::{parse_file_name, MappedFile};
use crate::record::{self, Decoded, BLANK_HEADER_LEN};

/// Where one appended record landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppendedRecord {
    pub physical_offset: u64,
    pub size: u32,
    /// Logical offset in its consume queue (0 for prepared/rollback records).
    pub queue_offset: i64,
}

/// The outcome of one append call (a single message or a whole batch).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Appended {
    pub records: Vec<AppendedRecord>,
    pub store_timestamp: i64,
    /// Commit log offset just past the last record: durable once the
    /// flushed offset reaches it.
    pub end_offset: u64,
}

/// A readable byte range of the commit log. Holds its file alive, so a file
/// deleted by retention stays mapped until the last reader drops its slices.
#[derive(Clone)]
pub struct MappedSlice {
    file: Arc<MappedFile>,
    pos: u64,
    len: u64,
}

impl MappedSlice {
    pub fn as_bytes(&self) -> &[u8] {
        // `read` checked the range when the slice was made; it stays valid.
        self.file.read(self.pos, self.len).unwrap_or(&[])
    }
    /// Absolute commit log offset of the first byte.
    pub fn offset(&self) -> u64 {
        self.file.start_offset() + self.pos
    }
    /// Number of bytes.
    pub fn len(&self) -> u64 {
        self.len
    }
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
    /// The first `max_len` bytes (all of them if shorter).
    pub fn prefix(mut self, max_len: u64) -> MappedSlice {
        self.len = self.len.min(max_len);
        self
    }
}

impl std::fmt::Debug for MappedSlice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "MappedSlice({}+{})", self.offset(), self.len)
    }
}

impl AsRef<[u8]> for MappedSlice {
    fn as_ref(&self) -> &[u8] {
        self.as_bytes()
    }
}

/// Next queue offset by queue id, for one topic.
pub type QueueOffsets = FxHashMap<i32, i64>;

struct AppendState {
    /// Absolute offset of the next byte to write.
    write_offset: u64,
    current: Option<Arc<MappedFile>>,
    last_store_timestamp: i64,
    /// Next queue offset per topic and queue id. A map, not a vector by
    /// queue id: a topic may be created with any queue count, and an append
    /// to queue 250,000,000 must cost one entry, not 2 GB.
    /// (FxHash: this lookup is on every append, and topic names are not
    /// attacker-chosen keys in a way that matters for a per-broker table.)
    queue_offsets: FxHashMap<String, QueueOffsets>,
    /// Staged appends (see [`CommitLog::stage_appends`]), not yet written
    /// to any file: runs of contiguous bytes, where each starts, and whether
    /// it ends in an end-of-file blank (whose header is all that is written
    /// of it; the log goes on in the next file, in a new run).
    staging: Vec<StagedRun>,
    /// Emptied run buffers the last commit handed back, reused by the next
    /// runs: a fresh buffer would grow by doubling under the append lock,
    /// copying a group's bytes about once more and returning the memory
    /// to the system (munmap) after every commit.
    spare: Vec<Vec<u8>>,
    /// Bytes in `staging`.
    staged_bytes: usize,
    /// Staged bytes at which an early commit is due (0: never).
    early_commit_bytes: usize,
}

/// Spare staging buffers kept between commits, and the largest capacity
/// kept (a burst's huge buffer is let go).
const SPARE_BUFFERS: usize = 4;
const SPARE_CAPACITY: usize = 4 << 20;

struct StagedRun {
    at: u64,
    bytes: Vec<u8>,
    ends_file: bool,
}

/// Staged bytes past which an appender commits them itself rather than
/// letting them pile up behind a slow flush.
const STAGE_LIMIT: usize = 16 << 20;

/// How recovery found the commit log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recovered {
    /// Offset just past the last whole record.
    pub end_offset: u64,
    /// Bytes of torn or garbage tail that were zeroed.
    pub zeroed_bytes: u64,
    /// Files deleted: those after the end, and a slave's files when they
    /// hold no record ([`CommitLog::follow_master`]).
    pub deleted_files: usize,
    /// Store timestamp of the last valid record (0 if none).
    pub last_store_timestamp: i64,
}

/// The commit log.
pub struct CommitLog {
    dir: PathBuf,
    file_size: u64,
    spec: FileSpec,
    mechanism: FlushMechanism,
    files: RwLock<Vec<Arc<MappedFile>>>,
    append: Mutex<AppendState>,
    allocator: Option<FileAllocator>,
    /// Populates pages ahead of the writer (files that were not warmed).
    prefaulter: Option<crate::prefault::Prefaulter>,
    /// Readable end (absolute), published after the bytes are copied; with
    /// staged appends, once they are durable ([`CommitLog::expose_durable`]).
    max_offset: AtomicU64,
    /// With staged appends: the end of the bytes written to the files.
    committed: AtomicU64,
    /// With staged appends: an append set this when the staged bytes
    /// reached the early-commit size, the next commit clears it. The
    /// flusher polls it while a group gathers; a byte count that every
    /// append changed made each append wait for that cache line to come
    /// back from the flusher's CPU.
    early_commit_due: CachePadded<AtomicBool>,
    /// Written by every append and rarely read by other threads, so kept
    /// off the cache lines the flusher polls (see `early_commit_due`).
    append_marks: CachePadded<AppendMarks>,
    /// Appends are staged in memory and written by [`CommitLog::commit_staged`].
    staged: AtomicBool,
    /// A slave's log ([`CommitLog::follow_master`]): while empty, its first
    /// file is wherever the master's stream starts.
    follows_master: AtomicBool,
    /// One commit at a time, so staged bytes reach the files in order.
    commit_lock: Mutex<()>,
    /// The first failed commit. Its staged bytes are gone from staging but
    /// not (all) in the files, so no later commit may go on past that hole:
    /// every one fails, and the flusher fails the store.
    commit_failure: std::sync::OnceLock<String>,
}

/// What each append records outside the append lock's data.
#[derive(Default)]
struct AppendMarks {
    /// When the append lock was taken (ms), 0 when free: page-cache-busy check.
    lock_since_ms: AtomicI64,
    /// Store timestamp of the last appended record.
    last_store_timestamp: AtomicI64,
}

pub(crate) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Errors if a genuine record follows the invalid one at `pos` in the same
/// file: then the rest of the file is not a torn tail but damaged data with
/// acknowledged records after it, and zeroing it would destroy them.
fn ensure_torn_tail(file: &MappedFile, pos: usize, why: &str) -> Result<()> {
    let start = file.start_offset();
    match genuine_record_after(file.whole(), start, pos) {
        Some(next) => Err(StoreError::corruption(
            file.path(),
            format!(
                "valid records follow an invalid one in {} (invalid at offset {}: {why}; next valid record at offset {}); refusing to drop them — run `rmq-fsck check`",
                file.path().display(),
                start + pos as u64,
                start + next as u64
            ),
        )),
        None => Ok(()),
    }
}

/// The first position after `bad` in `data` (a file starting at commit log
/// offset `file_start`) where a genuine record starts: one that decodes
/// whole, whose body CRC matches and whose PHYSICALOFFSET field names that
/// very position. Every record the appender wrote passes; a torn record or
/// garbage essentially never passes all three.
///
/// Only candidates whose MAGICCODE matches are decoded, found with `memmem`
/// (SIMD): the rest of a file after a crash is mostly zeros, and this runs
/// on every recovery that meets an invalid record. Over 1 GiB of zeros
/// (a preallocated file) it took 110 ms with the pages not yet mapped and
/// 40 ms mapped, on the 2-core dev box; the non-zero scan recovery makes
/// over the same tail anyway took 300 ms (test `genuine_record_scan_cost`).
/// Only the v1 MAGICCODE is searched for: it is the only one
/// [`record::decode`] accepts (RocketMQ 4.x writes no v2 records).
fn genuine_record_after(data: &[u8], file_start: u64, bad: usize) -> Option<usize> {
    let first = bad + 1;
    let haystack = data.get(first + record::pos::MAGIC..)?;
    let magic = record::MESSAGE_MAGIC.to_be_bytes();
    memchr::memmem::find_iter(haystack, &magic)
        .map(|hit| first + hit)
        .find(|&p| match record::decode(&data[p..], true) {
            Decoded::Message(v) => v.physical_offset == (file_start + p as u64) as i64,
            _ => false,
        })
}

impl CommitLog {
    /// Opens the commit log directory, checking that files are named by
    /// contiguous offsets and sized as configured. Positions are unknown until
    /// [`CommitLog::recover`] runs.
    pub fn open(
        spec: FileSpec,
        mechanism: FlushMechanism,
        background_allocate: bool,
    ) -> Result<Self> {
        let dir = spec.dir.clone();
        crate::dir::create_dir_durable(&dir)?;
        let mut names = Vec::new();
        for entry in std::fs::read_dir(&dir).map_err(|e| StoreError::io(&dir, e))? {
            let entry = entry.map_err(|e| StoreError::io(&dir, e))?;
            let name = entry.file_name().to_string_lossy().to_string();
            match parse_file_name(&name) {
                Some(off) => names.push(off),
                None if name.ends_with(crate::mapped_file::ALLOC_SUFFIX) => {
                    // A file whose creation a crash interrupted: never used.
                    let _ = std::fs::remove_file(entry.path());
                }
                None => tracing::warn!("ignoring stray file {} in commit log dir", name),
            }
        }
        names.sort_unstable();
        let mut files = Vec::with_capacity(names.len());
        for (i, off) in names.iter().enumerate() {
            if off % spec.size != 0 || (i > 0 && *off != names[i - 1] + spec.size) {
                return Err(StoreError::corruption(
                    dir.join(crate::mapped_file::file_name(*off)),
                    "commit log file names are not contiguous multiples of the file size",
                ));
            }
            let path = dir.join(crate::mapped_file::file_name(*off));
            files.push(Arc::new(MappedFile::open(&path, *off, spec.size)?));
        }
        // Files warmed writable need no prefaulting; read-warmed or cold
        // files copied into through the mapping do.
        let warmed_writable =
            matches!(spec.warm, Some(crate::mapped_file::WarmPages::Write { .. }));
        let allocator = if background_allocate {
            Some(FileAllocator::start(spec.clone())?)
        } else {
            None
        };
        Ok(CommitLog {
            dir,
            file_size: spec.size,
            spec,
            mechanism,
            files: RwLock::new(files),
            append: Mutex::new(AppendState {
                write_offset: 0,
                current: None,
                last_store_timestamp: 0,
                queue_offsets: FxHashMap::default(),
                staging: Vec::new(),
                spare: Vec::new(),
                staged_bytes: 0,
                early_commit_bytes: 0,
            }),
            allocator,
            // Appends written with write(2) never fault on the mapping, and
            // pages populated writable through it would only make every
            // writeback write-protect them again (TLB shootdowns).
            prefaulter: if warmed_writable || mechanism == FlushMechanism::WriteFdatasync {
                None
            } else {
                Some(crate::prefault::Prefaulter::start()?)
            },
            max_offset: AtomicU64::new(0),
            committed: AtomicU64::new(0),
            early_commit_due: CachePadded::new(AtomicBool::new(false)),
            append_marks: CachePadded::new(AppendMarks::default()),
            staged: AtomicBool::new(false),
            follows_master: AtomicBool::new(false),
            commit_lock: Mutex::new(()),
            commit_failure: std::sync::OnceLock::new(),
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Marks a slave's log, before [`CommitLog::recover`]: an empty one
    /// starts where its master's stream does ([`CommitLog::append_replicated`]:
    /// the master's last file, rarely offset 0), so recovery prepares no
    /// first files for it. Files prepared at 0 would be left before a gap
    /// in the file names once the log starts further on, and a crash that
    /// leaves them on disk makes the log refuse to open. For the same
    /// reason recovery deletes the files of a slave's log that holds no
    /// record.
    pub fn follow_master(&self) {
        self.follows_master.store(true, Ordering::Release);
    }
    pub fn file_size(&self) -> u64 {
        self.file_size
    }

    /// Finds the end of valid data, zeroes the torn tail, deletes files past
    /// it and sets all positions.
    ///
    /// Validation starts at `start_file_index` (normal recovery: the
    /// third-last file). Only the last file holding data may end in garbage:
    /// an invalid record followed by valid records, later in its file or in
    /// a later file, is corruption, not a crash, and is refused (run
    /// `rmq-fsck`) rather than silently dropping everything after it.
    pub fn recover(&self, start_file_index: usize, check_crc: bool) -> Result<Recovered> {
        let mut files = self.files.write();
        let mut report = Recovered {
            end_offset: files.first().map(|f| f.start_offset()).unwrap_or(0),
            zeroed_bytes: 0,
            deleted_files: 0,
            last_store_timestamp: 0,
        };
        let mut start = start_file_index.min(files.len().saturating_sub(1));
        // Empty files (preallocated, never written) after the data would
        // put the end at the first of them, past zeros that hold no blank
        // record: begin at the last file holding data instead.
        while start > 0 && matches!(record::decode(files[start].whole(), false), Decoded::End) {
            start -= 1;
        }
        'files: for (i, file) in files.iter().enumerate().skip(start) {
            let data = file.whole();
            let mut pos = 0usize;
            loop {
                match record::decode(&data[pos..], check_crc) {
                    Decoded::Message(v) => {
                        if v.physical_offset != (file.start_offset() + pos as u64) as i64 {
                            report.end_offset = file.start_offset() + pos as u64;
                            let why = "record's physical offset field disagrees with its position";
                            self.ensure_tail_only(&files, i, why)?;
                            ensure_torn_tail(file, pos, why)?;
                            break 'files;
                        }
                        report.last_store_timestamp = v.store_timestamp;
                        pos += v.total_size();
                        report.end_offset = file.start_offset() + pos as u64;
                    }
                    Decoded::Blank(n) => {
                        let _ = n;
                        report.end_offset = file.start_offset() + file.size();
                        continue 'files;
                    }
                    Decoded::End => {
                        report.end_offset = file.start_offset() + pos as u64;
                        let why = "zeros where a record should start";
                        self.ensure_tail_only(&files, i, why)?;
                        // Zeros followed by records in this file are a
                        // lost page or a wiped record, not a torn tail.
                        ensure_torn_tail(file, pos, why)?;
                        break 'files;
                    }
                    Decoded::Invalid(why) => {
                        report.end_offset = file.start_offset() + pos as u64;
                        self.ensure_tail_only(&files, i, &why)?;
                        ensure_torn_tail(file, pos, &why)?;
                        tracing::warn!(
                            "commit log recovery: torn tail at offset {} ({why})",
                            report.end_offset
                        );
                        break 'files;
                    }
                }
                if pos + BLANK_HEADER_LEN > data.len() {
                    report.end_offset = file.start_offset() + pos as u64;
                    break;
                }
            }
        }
        // Delete files wholly past the end, zero the tail of the last one.
        let mut end = report.end_offset;
        while let Some(last) = files.last() {
            if last.start_offset() <= end {
                break;
            }
            last.delete()?;
            files.pop();
            report.deleted_files += 1;
        }
        // A slave's log holding no record (a file prepared but never
        // written, left by a crash) is empty: it reports 0 and starts where
        // its master's stream does, which is rarely this file's offset.
        if self.follows_master.load(Ordering::Acquire)
            && files.first().is_some_and(|f| f.start_offset() == end)
        {
            for f in files.drain(..) {
                f.delete()?;
                report.deleted_files += 1;
            }
            end = 0;
            report.end_offset = 0;
        }
        for f in files.iter() {
            let start = f.start_offset();
            if start + f.size() <= end {
                f.set_positions(f.size(), f.size());
            } else {
                let pos = end.saturating_sub(start);
                let before = f.whole()[pos as usize..].iter().any(|b| *b != 0);
                if before {
                    let nonzero = f.whole()[pos as usize..]
                        .iter()
                        .rposition(|b| *b != 0)
                        .map(|p| p as u64 + 1)
                        .unwrap_or(0);
                    report.zeroed_bytes += nonzero;
                    f.zero_from(pos)?;
                }
                f.set_positions(pos, pos);
            }
        }
        let mut st = self.append.lock();
        st.write_offset = end;
        st.current = files
            .last()
            .filter(|f| f.start_offset() <= end && end < f.start_offset() + f.size())
            .cloned();
        st.last_store_timestamp = report.last_store_timestamp;
        self.append_marks
            .last_store_timestamp
            .store(report.last_store_timestamp, Ordering::Release);
        self.max_offset.store(end, Ordering::Release);
        self.committed.store(end, Ordering::Release);
        // Have the files the writer needs next prepared (and warmed) now,
        // while the store is idle, not when the first append after start-up
        // or the first roll asks for them: the file after the current one,
        // or with no current file the first one and the one after it (a
        // roll queues the one after the file it takes). Warming 1 GiB costs
        // about a second of CPU that a writer on a small box would share.
        if let Some(a) = &self.allocator {
            match &st.current {
                Some(f) => a.prefetch(f.start_offset() + f.size()),
                None if files.is_empty() && self.follows_master.load(Ordering::Acquire) => {}
                None => {
                    let first = end - end % self.file_size;
                    a.prefetch(first);
                    a.prefetch(first + self.file_size);
                }
            }
        }
        Ok(report)
    }

    /// Errors unless every file after `index` is empty (starts with zeros).
    fn ensure_tail_only(&self, files: &[Arc<MappedFile>], index: usize, why: &str) -> Result<()> {
        for later in &files[index + 1..] {
            if let Decoded::Message(_) = record::decode(later.whole(), false) {
                return Err(StoreError::corruption(
                    later.path(),
                    format!(
                        "valid records follow an invalid one in {} ({why}); refusing to drop them — run `rmq-fsck check`",
                        files[index].path().display()
                    ),
                ));
            }
        }
        Ok(())
    }

    /// Number of files (for choosing where recovery starts).
    pub fn file_count(&self) -> usize {
        self.files.read().len()
    }

    /// Store timestamp of the first record of file `index`, if it starts with a message.
    pub fn first_store_timestamp_of(&self, index: usize) -> Option<i64> {
        let files = self.files.read();
        match record::decode(files.get(index)?.whole(), false) {
            Decoded::Message(v) => Some(v.store_timestamp),
            _ => None,
        }
    }

    /// Start offset of file `index`.
    pub fn file_start(&self, index: usize) -> Option<u64> {
        self.files.read().get(index).map(|f| f.start_offset())
    }

    /// Replaces the next-queue-offset table (after recovery rebuilt it).
    pub fn set_queue_offsets(&self, table: FxHashMap<String, QueueOffsets>) {
        self.append.lock().queue_offsets = table;
    }

    /// Forgets a topic's queue offsets (topic deleted).
    pub fn remove_topic(&self, topic: &str) {
        self.append.lock().queue_offsets.remove(topic);
    }

    /// Appends one or more encoded records of one topic and queue (a batch is
    /// written contiguously into one file). The records' queue offset,
    /// physical offset and store timestamp fields are filled in here.
    ///
    /// On return the bytes are in the page cache and readable, not durable.
    pub fn append(&self, topic: &str, queue_id: i32, encoded: &mut [u8]) -> Result<Appended> {
        let total = encoded.len() as u64;
        if total + BLANK_HEADER_LEN as u64 > self.file_size {
            return Err(StoreError::InvalidArgument(format!(
                "{total} bytes cannot fit in a commit log file of {} bytes",
                self.file_size
            )));
        }
        let mut st = self.append.lock();
        let now = now_ms();
        self.append_marks
            .lock_since_ms
            .store(now, Ordering::Relaxed);
        let result = self.append_locked(&mut st, topic, queue_id, encoded, now);
        self.append_marks.lock_since_ms.store(0, Ordering::Relaxed);
        let backlog = st.staged_bytes;
        drop(st);
        if backlog > STAGE_LIMIT {
            self.commit_staged()?;
        }
        result
    }

    /// Switches appends to staging (for SYNC_FLUSH with write(2)): an append
    /// copies its record into memory under the append lock, and the
    /// flusher writes everything staged with one `pwrite` per file just
    /// before its fdatasync ([`CommitLog::commit_staged`]). Appends then
    /// cost a memcpy instead of a system call, so the writers a flush
    /// releases are back in the next group sooner. Records become readable
    /// ([`CommitLog::max_offset`], and so dispatched and pullable) when the
    /// flusher reports them durable ([`CommitLog::expose_durable`]), so no
    /// reader sees a record a crash could take back. Call before the first
    /// append; not for a slave (its bytes arrive through
    /// [`CommitLog::append_replicated`]). [`CommitLog::commit_early`]
    /// commits once `early_commit_bytes` are staged (0: never).
    pub fn stage_appends(&self, early_commit_bytes: usize) {
        self.append.lock().early_commit_bytes = early_commit_bytes;
        self.staged.store(true, Ordering::Release);
    }

    /// Whether appends are staged ([`CommitLog::stage_appends`]).
    pub fn is_staged(&self) -> bool {
        self.staged.load(Ordering::Acquire)
    }

    fn stage(&self, st: &mut AppendState, at: u64, data: &[u8], ends_file: bool) {
        match st.staging.last_mut() {
            Some(run) if !run.ends_file && run.at + run.bytes.len() as u64 == at => {
                run.bytes.extend_from_slice(data);
                run.ends_file = ends_file;
            }
            _ => {
                let mut bytes = st.spare.pop().unwrap_or_default();
                bytes.extend_from_slice(data);
                st.staging.push(StagedRun {
                    at,
                    bytes,
                    ends_file,
                })
            }
        }
        let before = st.staged_bytes;
        st.staged_bytes += data.len();
        let due = st.early_commit_bytes;
        if due > 0 && before < due && st.staged_bytes >= due {
            self.early_commit_due.store(true, Ordering::Release);
        }
    }

    /// Writes staged bytes to their files; returns the end of what is
    /// written (without staging: the readable end). A no-op unless
    /// [`CommitLog::stage_appends`] was called. Durable only after a
    /// flush; readable once the flusher reports that. Once a commit has
    /// failed, every later one fails ([`StoreError::ReadOnly`]).
    pub fn commit_staged(&self) -> Result<u64> {
        // The flusher calls this every round: without staging it must not
        // take the append lock from the appenders.
        if !self.is_staged() {
            return Ok(self.max_offset());
        }
        let _one = self.commit_lock.lock();
        if let Some(why) = self.commit_failure.get() {
            return Err(StoreError::ReadOnly(why.clone()));
        }
        let runs = {
            let mut st = self.append.lock();
            st.staged_bytes = 0;
            self.early_commit_due.store(false, Ordering::Release);
            std::mem::take(&mut st.staging)
        };
        let before = self.committed.load(Ordering::Acquire);
        let end = self.write_runs(&runs).inspect_err(|e| {
            let _ = self
                .commit_failure
                .set(format!("writing staged appends failed: {e}"));
        })?;
        self.committed.store(end, Ordering::Release);
        self.keep_spares(runs);
        // Still under the commit lock: no later commit has written into the
        // next file, which the share of zeros goes to.
        if let Some(a) = &self.allocator {
            a.fill_after_commit(end, end.saturating_sub(before));
        }
        Ok(end)
    }

    /// Holds off every commit (and so every staged flush) while the guard
    /// lives: a stalled disk, for tests.
    #[cfg(test)]
    pub(crate) fn hold_commits(&self) -> parking_lot::MutexGuard<'_, ()> {
        self.commit_lock.lock()
    }

    /// With staged appends, while the flusher waits for a group to fill:
    /// once the early-commit size is staged ([`CommitLog::stage_appends`]),
    /// writes the staged bytes to their files, so the commit that ends the
    /// group has less to copy. It does not start their write-back: the
    /// fdatasync then sends the group to the disk in one go, which here is
    /// faster than a separate early write followed by the rest (W = 64,
    /// four alternating runs: flush 116-122 µs against 125-141 µs, and the
    /// flusher no longer sits 20 µs in `sync_file_range` while the group's
    /// last writers arrive). Nothing becomes durable or readable here; a
    /// failed write fails this and every later commit, as
    /// [`CommitLog::commit_staged`].
    pub fn commit_early(&self) -> Result<()> {
        if !self.early_commit_due.load(Ordering::Acquire) {
            return Ok(());
        }
        self.commit_staged().map(|_| ())
    }

    /// Hands the written runs' buffers back for reuse (see `AppendState::spare`).
    fn keep_spares(&self, runs: Vec<StagedRun>) {
        let mut keep: Vec<Vec<u8>> = runs
            .into_iter()
            .map(|r| r.bytes)
            .filter(|b| b.capacity() <= SPARE_CAPACITY)
            .take(SPARE_BUFFERS)
            .collect();
        if keep.is_empty() {
            return;
        }
        for b in &mut keep {
            b.clear();
        }
        let mut st = self.append.lock();
        let room = SPARE_BUFFERS.saturating_sub(st.spare.len());
        st.spare.extend(keep.into_iter().take(room));
    }

    /// Writes `runs` to their files and publishes them there; returns the
    /// committed end after them. Under the commit lock.
    fn write_runs(&self, runs: &[StagedRun]) -> Result<u64> {
        let mut end = self.committed.load(Ordering::Acquire);
        for run in runs {
            let file = self.file_at(run.at).ok_or_else(|| {
                StoreError::corruption(
                    &self.dir,
                    format!("staged bytes at {} have no file", run.at),
                )
            })?;
            let pos = run.at - file.start_offset();
            if pos + run.bytes.len() as u64 > file.size() {
                return Err(StoreError::corruption(
                    &self.dir,
                    format!("staged bytes at {} cross the end of their file", run.at),
                ));
            }
            file.write_through_fd(pos, &run.bytes)?;
            if run.ends_file {
                // As an unstaged append: the log goes on in the next file.
                file.publish(file.size());
                end = file.start_offset() + file.size();
            } else {
                file.publish(pos + run.bytes.len() as u64);
                end = run.at + run.bytes.len() as u64;
            }
        }
        Ok(end)
    }

    /// The flusher reports everything below `durable` durable: with staged
    /// appends that much becomes readable. Without staging records are
    /// readable from their append on, and this does nothing.
    pub fn expose_durable(&self, durable: u64) {
        if self.is_staged() {
            let committed = self.committed.load(Ordering::Acquire);
            self.max_offset
                .fetch_max(durable.min(committed), Ordering::AcqRel);
        }
    }

    /// With staged appends: writes zeros ahead of the committed end (see
    /// [`crate::zero_ahead`]). The flusher calls it after a flush, off the
    /// path of both the appenders and the flush; commits are the only other
    /// writes to the files and take the same lock, so zeros never land on
    /// committed bytes.
    pub fn zero_ahead_of_commits(&self) {
        if !self.is_staged() {
            return;
        }
        let _one = self.commit_lock.lock();
        let end = self.committed.load(Ordering::Acquire);
        if let Some(file) = self.file_at(end) {
            crate::zero_ahead::keep_ahead(&file, end - file.start_offset());
        }
    }

    fn append_locked(
        &self,
        st: &mut AppendState,
        topic: &str,
        queue_id: i32,
        encoded: &mut [u8],
        now: i64,
    ) -> Result<Appended> {
        let total = encoded.len() as u64;
        let mut file = match &st.current {
            Some(f) if st.write_offset < f.start_offset() + f.size() => f.clone(),
            _ => self.roll_to(st, st.write_offset)?,
        };
        let mut pos = st.write_offset - file.start_offset();
        if pos + total + BLANK_HEADER_LEN as u64 > file.size() {
            let remaining = file.size() - pos;
            let blank = record::blank_record(remaining as u32);
            if self.is_staged() {
                self.stage(st, file.start_offset() + pos, &blank, true);
            } else {
                self.write(&file, pos, &blank)?;
                file.publish(file.size());
            }
            let next = file.start_offset() + file.size();
            st.write_offset = next;
            file = self.roll_to(st, next)?;
            pos = 0;
        }
        let now = now.max(st.last_store_timestamp);
        st.last_store_timestamp = now;
        self.append_marks
            .last_store_timestamp
            .store(now, Ordering::Release);
        let base = file.start_offset() + pos;
        let queues = match st.queue_offsets.get_mut(topic) {
            Some(q) => q,
            None => st.queue_offsets.entry(topic.to_string()).or_default(),
        };
        let next = queues.entry(queue_id.max(0)).or_insert(0);
        let mut records = Vec::with_capacity(1);
        let mut at = 0usize;
        while at < encoded.len() {
            let rec = &mut encoded[at..];
            let size = i32::from_be_bytes([rec[0], rec[1], rec[2], rec[3]]) as usize;
            let sys_flag = i32::from_be_bytes([rec[36], rec[37], rec[38], rec[39]]);
            let consumable = matches!(
                sys_flag & record::sysflag::TRANSACTION_MASK,
                record::sysflag::TRANSACTION_NOT | record::sysflag::TRANSACTION_COMMIT
            );
            let queue_offset = if consumable {
                let q = *next;
                *next += 1;
                q
            } else {
                0
            };
            let phys = base + at as u64;
            record::patch_under_lock(&mut rec[..size], queue_offset, phys as i64, now);
            records.push(AppendedRecord {
                physical_offset: phys,
                size: size as u32,
                queue_offset,
            });
            at += size;
        }
        st.write_offset = base + total;
        if self.is_staged() {
            self.stage(st, base, encoded, false);
        } else {
            self.write(&file, pos, encoded)?;
            file.publish(pos + total);
            if let Some(p) = &self.prefaulter {
                if pos == 0
                    || pos / crate::prefault::CHUNK != (pos + total) / crate::prefault::CHUNK
                {
                    p.ahead_of(&file, pos + total);
                }
            }
            self.max_offset.store(st.write_offset, Ordering::Release);
        }
        Ok(Appended {
            records,
            store_timestamp: now,
            end_offset: st.write_offset,
        })
    }

    /// Slave side of replication: copies raw commit log bytes received from
    /// the master to `offset`, which must be this log's end; an empty log
    /// (no files) accepts any file-aligned `offset` and starts there. The
    /// bytes are written as they are (records, blank end-of-file records,
    /// a partial record at the end) and may cross file boundaries; files
    /// are created as needed. Returns the new end.
    pub fn append_replicated(&self, offset: u64, data: &[u8]) -> Result<u64> {
        let mut st = self.append.lock();
        if offset != st.write_offset {
            let empty = self.files.read().is_empty();
            if !empty || !offset.is_multiple_of(self.file_size) {
                return Err(StoreError::InvalidArgument(format!(
                    "replicated bytes for offset {offset}, but the commit log ends at {}{}",
                    st.write_offset,
                    if empty {
                        " (an empty commit log starts at a file boundary)"
                    } else {
                        ""
                    }
                )));
            }
            st.write_offset = offset;
            st.current = None;
        }
        let mut at = 0usize;
        while at < data.len() {
            let file = match &st.current {
                Some(f) if st.write_offset < f.start_offset() + f.size() => f.clone(),
                _ => {
                    let at_offset = st.write_offset;
                    self.roll_to(&mut st, at_offset)?
                }
            };
            let pos = st.write_offset - file.start_offset();
            let n = ((file.size() - pos) as usize).min(data.len() - at);
            self.write(&file, pos, &data[at..at + n])?;
            file.publish(pos + n as u64);
            if let Some(p) = &self.prefaulter {
                let end = pos + n as u64;
                if pos == 0 || pos / crate::prefault::CHUNK != end / crate::prefault::CHUNK {
                    p.ahead_of(&file, end);
                }
            }
            st.write_offset += n as u64;
            self.max_offset.store(st.write_offset, Ordering::Release);
            at += n;
        }
        Ok(st.write_offset)
    }

    /// Raises the last store timestamp (a slave learns it from the records
    /// its dispatcher saw).
    pub(crate) fn note_store_timestamp(&self, ts: i64) {
        self.append_marks
            .last_store_timestamp
            .fetch_max(ts, Ordering::AcqRel);
    }

    fn write(&self, file: &MappedFile, pos: u64, data: &[u8]) -> Result<()> {
        match self.mechanism {
            FlushMechanism::WriteFdatasync => {
                file.write_through_fd(pos, data)?;
                crate::zero_ahead::keep_ahead(file, pos + data.len() as u64);
                Ok(())
            }
            _ => {
                file.write_mapped(pos, data);
                Ok(())
            }
        }
    }

    fn roll_to(&self, st: &mut AppendState, offset: u64) -> Result<Arc<MappedFile>> {
        if let Some(f) = self.file_at(offset) {
            st.current = Some(f.clone());
            return Ok(f);
        }
        let f = match &self.allocator {
            Some(a) => a.take(offset)?,
            None => Arc::new(self.spec.prepare(offset)?),
        };
        self.files.write().push(f.clone());
        if let Some(prev) = st.current.take() {
            // Keep the old file's pages for readers (consumers just behind
            // the writer) a little longer, then let the kernel evict them.
            const UNLOCK_AFTER: std::time::Duration = std::time::Duration::from_secs(6);
            match &self.allocator {
                Some(a) => a.unlock_later(prev, UNLOCK_AFTER),
                None => {
                    std::thread::spawn(move || {
                        std::thread::sleep(UNLOCK_AFTER);
                        prev.munlock();
                    });
                }
            }
        }
        st.current = Some(f.clone());
        // Last: the allocator's worker wakes for this and takes its lock,
        // which the roll above needed.
        if let Some(a) = &self.allocator {
            a.prefetch(offset + self.file_size);
        }
        Ok(f)
    }

    fn file_at(&self, offset: u64) -> Option<Arc<MappedFile>> {
        let files = self.files.read();
        let first = files.first()?.start_offset();
        if offset < first {
            return None;
        }
        let idx = ((offset - first) / self.file_size) as usize;
        files.get(idx).cloned()
    }

    /// Store timestamp of the last appended (or recovered) record.
    pub fn last_store_timestamp(&self) -> i64 {
        self.append_marks
            .last_store_timestamp
            .load(Ordering::Acquire)
    }

    /// Readable end of the commit log.
    pub fn max_offset(&self) -> u64 {
        self.max_offset.load(Ordering::Acquire)
    }

    /// End of the bytes written to the files: [`CommitLog::max_offset`], or
    /// past it, with staged appends, what a commit wrote ahead of the flush
    /// that makes it readable. A master may have sent a slave up to here
    /// ([`CommitLog::slice_to_file_end`] reads what is written).
    pub fn written_end(&self) -> u64 {
        self.max_offset()
            .max(self.committed.load(Ordering::Acquire))
    }

    /// First offset still on disk.
    pub fn min_offset(&self) -> u64 {
        self.files
            .read()
            .first()
            .map(|f| f.start_offset())
            .unwrap_or(0)
    }

    /// Whether the append lock has been held longer than `busy_ms`.
    pub fn is_busy(&self, busy_ms: u64) -> bool {
        let since = self.append_marks.lock_since_ms.load(Ordering::Relaxed);
        since != 0 && now_ms() - since > busy_ms as i64
    }

    /// `len` readable bytes at `offset`, within one file (below
    /// [`CommitLog::max_offset`]).
    pub fn slice(&self, offset: u64, len: u64) -> Option<MappedSlice> {
        if offset.checked_add(len)? > self.max_offset() {
            return None;
        }
        let file = self.file_at(offset)?;
        let pos = offset - file.start_offset();
        file.read(pos, len)?;
        Some(MappedSlice { file, pos, len })
    }

    /// All readable bytes from `offset` to the end of its file.
    pub fn slice_to_file_end(&self, offset: u64) -> Option<MappedSlice> {
        let file = self.file_at(offset)?;
        let pos = offset - file.start_offset();
        let wrote = file.wrote();
        if pos >= wrote {
            return None;
        }
        Some(MappedSlice {
            file,
            pos,
            len: wrote - pos,
        })
    }

    /// The whole record at `offset`.
    pub fn read_record(&self, offset: u64) -> Option<MappedSlice> {
        let head = self.slice(offset, 4)?;
        let b = head.as_bytes();
        let size = i32::from_be_bytes([b[0], b[1], b[2], b[3]]);
        if size <= 0 {
            return None;
        }
        self.slice(offset, size as u64)
    }

    /// Files for the flusher, from the one containing `from` on.
    pub(crate) fn files_from(&self, from: u64) -> Vec<Arc<MappedFile>> {
        let files = self.files.read();
        files
            .iter()
            .filter(|f| f.start_offset() + f.size() > from)
            .cloned()
            .collect()
    }

    /// A snapshot of all files (retention, fsck-style scans).
    pub fn files(&self) -> Vec<Arc<MappedFile>> {
        self.files.read().clone()
    }

    /// Deletes the oldest file if `keep` says so; never the last file.
    /// Returns the removed file (still mapped for readers holding slices).
    pub fn delete_first_file_if(
        &self,
        keep: impl Fn(&MappedFile) -> bool,
    ) -> Result<Option<Arc<MappedFile>>> {
        let mut files = self.files.write();
        if files.len() <= 1 || keep(&files[0]) {
            return Ok(None);
        }
        let f = files.remove(0);
        f.delete()?;
        Ok(Some(f))
    }

    pub fn mechanism(&self) -> FlushMechanism {
        self.mechanism
    }

    /// Stops the allocator and removes preallocated files nobody used.
    pub fn shutdown(&self) {
        if let Some(a) = &self.allocator {
            a.shutdown();
        }
        if let Some(p) = &self.prefaulter {
            p.shutdown();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mapped_file::WarmPages;

    /// Opens and recovers a log of `size`-byte files in `dir/commitlog`.
    fn open_log(
        dir: &std::path::Path,
        size: u64,
        warm: Option<WarmPages>,
        mechanism: FlushMechanism,
        allocator: bool,
    ) -> CommitLog {
        let spec = FileSpec {
            dir: dir.join("commitlog"),
            size,
            preallocate: true,
            warm,
            writable_head: 0,
            zero_fill: mechanism == FlushMechanism::WriteFdatasync,
        };
        let log = CommitLog::open(spec, mechanism, allocator).expect("open");
        log.recover(0, true).expect("recover");
        log
    }

    #[test]
    fn a_huge_queue_id_costs_one_entry() {
        let dir = tempfile::tempdir().expect("temp dir");
        let log = open_log(dir.path(), 1 << 20, None, FlushMechanism::Msync, false);
        // A vector indexed by queue id would need 16 GiB here.
        let queue_id = i32::MAX - 1;
        for expected in 0..2 {
            let mut rec = Vec::new();
            crate::record::MessageToStore::new("T", queue_id, b"body", "").encode_into(&mut rec);
            let a = log.append("T", queue_id, &mut rec).expect("append");
            assert_eq!(a.records[0].queue_offset, expected);
        }
        log.shutdown();
    }

    #[test]
    fn the_first_file_is_prepared_and_warmed_when_the_log_opens() {
        let dir = tempfile::tempdir().expect("temp dir");
        let size = 16u64 << 20;
        let warm = Some(WarmPages::Write { flush_pages: 256 });
        let log = open_log(dir.path(), size, warm, FlushMechanism::Msync, true);
        // Warming 16 MiB takes well under a second here; the first append
        // then finds the file ready instead of cutting its warm-up short.
        std::thread::sleep(std::time::Duration::from_secs(2));
        let mut rec = Vec::new();
        crate::record::MessageToStore::new("T", 0, b"body", "").encode_into(&mut rec);
        log.append("T", 0, &mut rec).expect("append");
        let files = log.files_from(0);
        assert_eq!(files.len(), 1);
        assert_eq!(files[0].zeroed_to(), size, "file 0 fully warmed before use");
    }

    /// A fresh log has its first file and the one after it prepared while it
    /// is idle, and each roll queues the file after the one it takes: the
    /// writer always has a spare file, prepared off its path.
    #[test]
    fn the_allocator_keeps_a_spare_file_ahead_of_the_writer() {
        let dir = tempfile::tempdir().expect("temp dir");
        let size = 1u64 << 20;
        let log = open_log(
            dir.path(),
            size,
            Some(WarmPages::Read),
            FlushMechanism::Msync,
            true,
        );
        let files = || -> Vec<String> {
            let mut v: Vec<String> = std::fs::read_dir(dir.path().join("commitlog"))
                .expect("dir")
                .filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect();
            v.sort();
            v
        };
        let wait_for = |want: Vec<String>| {
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
            while files() != want {
                assert!(
                    std::time::Instant::now() < deadline,
                    "{:?} != {want:?}",
                    files()
                );
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
        };
        let name = |i: u64| crate::mapped_file::file_name(i * size);
        wait_for(vec![name(0), name(1)]);
        // Fill file 0 and roll into file 1: file 2 gets prepared.
        let mut rec = Vec::new();
        crate::record::MessageToStore::new("T", 0, &[7u8; 4000], "").encode_into(&mut rec);
        while log.max_offset() < size {
            let mut r = rec.clone();
            log.append("T", 0, &mut r).expect("append");
        }
        wait_for(vec![name(0), name(1), name(2)]);
        log.shutdown();
    }

    /// A log of 1 MiB files with staged appends (no allocator) whose early
    /// commit is due at five records, and one encoded record for it.
    fn staged_log(dir: &std::path::Path) -> (CommitLog, Vec<u8>) {
        let log = open_log(dir, 1 << 20, None, FlushMechanism::WriteFdatasync, false);
        let mut rec = Vec::new();
        crate::record::MessageToStore::new("T", 0, b"body", "").encode_into(&mut rec);
        log.stage_appends(5 * rec.len());
        (log, rec)
    }

    /// A staged record is readable only once the flusher reports it durable:
    /// not at the append, not at the commit (written, not yet synced).
    #[test]
    fn staged_records_become_readable_when_durable() {
        let dir = tempfile::tempdir().expect("temp dir");
        let (log, mut rec) = staged_log(dir.path());
        let end = log.append("T", 0, &mut rec).expect("append").end_offset;
        assert_eq!((log.max_offset(), log.read_record(0).is_some()), (0, false));
        assert_eq!(log.commit_staged().expect("commit"), end);
        assert_eq!(log.max_offset(), 0, "committed is not durable");
        assert!(log.read_record(0).is_none());
        log.expose_durable(end);
        assert_eq!(log.max_offset(), end);
        assert!(log.read_record(0).is_some());
    }

    /// A commit hands its buffers back and the next appends reuse them
    /// (no regrowing per group); what they stage still reaches the file.
    #[test]
    fn staging_buffers_are_reused_after_a_commit() {
        let dir = tempfile::tempdir().expect("temp dir");
        let (log, rec) = staged_log(dir.path());
        for _ in 0..8 {
            log.append("T", 0, &mut rec.clone()).expect("append");
        }
        log.commit_staged().expect("commit");
        let kept = {
            let st = log.append.lock();
            assert_eq!(st.spare.len(), 1);
            st.spare[0].capacity()
        };
        assert!(kept >= 8 * rec.len(), "capacity {kept}");
        let end = log
            .append("T", 0, &mut rec.clone())
            .expect("append")
            .end_offset;
        {
            let st = log.append.lock();
            assert!(st.spare.is_empty());
            assert_eq!(st.staging[0].bytes.capacity(), kept);
            assert_eq!(st.staging[0].bytes.len(), rec.len());
        }
        assert_eq!(log.commit_staged().expect("commit"), end);
        log.expose_durable(end);
        let last = log
            .read_record(end - rec.len() as u64)
            .expect("ninth record");
        assert_eq!(last.len(), rec.len() as u64);
    }

    /// An early commit writes what is staged once there is enough of it,
    /// and makes nothing readable: that still waits for the flush.
    #[test]
    fn an_early_commit_writes_staged_bytes_and_exposes_nothing() {
        let dir = tempfile::tempdir().expect("temp dir");
        let (log, rec) = staged_log(dir.path());
        let mut end = 0;
        while (end as usize) < 4 * rec.len() {
            end = log
                .append("T", 0, &mut rec.clone())
                .expect("append")
                .end_offset;
        }
        log.commit_early().expect("below the threshold");
        assert_eq!(
            log.committed.load(Ordering::Acquire),
            0,
            "too little staged"
        );
        log.append("T", 0, &mut rec.clone()).expect("append");
        let end = end + rec.len() as u64;
        log.commit_early().expect("commit");
        assert_eq!(log.committed.load(Ordering::Acquire), end);
        assert_eq!(log.append.lock().staged_bytes, 0);
        assert!(!log.early_commit_due.load(Ordering::Acquire));
        assert_eq!(log.max_offset(), 0, "written is not durable");
        assert_eq!(log.commit_staged().expect("nothing left"), end);
        log.expose_durable(end);
        assert_eq!(log.max_offset(), end);
        assert!(log.read_record(0).is_some());
    }

    /// A commit that fails leaves a hole where its staged bytes should be:
    /// no later commit may write past it, or a flush would report the hole
    /// durable.
    #[test]
    fn a_failed_commit_fails_every_later_one() {
        let dir = tempfile::tempdir().expect("temp dir");
        let (log, mut rec) = staged_log(dir.path());
        log.append("T", 0, &mut rec.clone()).expect("append");
        // The staged bytes' file is out of reach: the commit fails.
        let files = std::mem::take(&mut *log.files.write());
        assert!(log.commit_staged().is_err());
        *log.files.write() = files;
        log.append("T", 0, &mut rec).expect("append");
        assert!(matches!(log.commit_staged(), Err(StoreError::ReadOnly(_))));
        assert_eq!(log.committed.load(Ordering::Acquire), 0);
    }

    /// What the search for a genuine record after an invalid one costs over
    /// the rest of a 1 GiB file of zeros (see `genuine_record_after`), next
    /// to the scan for non-zero bytes recovery already makes there. Run with
    /// `cargo test --release -p engine --lib genuine_record_scan_cost -- --ignored --nocapture`.
    #[test]
    #[ignore = "needs 1 GiB of disk and page cache; prints timings"]
    fn genuine_record_scan_cost() {
        let dir = tempfile::tempdir().expect("temp dir");
        let size = 1u64 << 30;
        let f = MappedFile::create(dir.path(), 0, size, true).expect("create");
        for round in ["cold", "cached"] {
            let t = std::time::Instant::now();
            assert_eq!(genuine_record_after(f.whole(), 0, 0), None);
            let genuine = t.elapsed();
            let t = std::time::Instant::now();
            assert!(!f.whole().iter().any(|b| *b != 0));
            let nonzero = t.elapsed();
            println!("{round}: genuine-record search {genuine:?}, non-zero scan {nonzero:?}");
        }
    }
}
