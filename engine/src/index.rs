//! The message key index (RocketMQ's IndexFile/IndexService, store.md §8):
//! hash-chained `TOPIC#key → commit log offset` entries in fixed-size files
//! named by their creation time (`yyyyMMddHHmmssSSS`, local time) in
//! `<root>/index/`.
//!
//! The dispatcher calls [`IndexService::put_message`] for every record in
//! commit log order; QUERY_MESSAGE / VIEW-by-key call [`IndexService::query`].
//! This module knows nothing about the commit log: callers pass offsets and
//! timestamps.
//!
//! # Concurrency contract
//!
//! One writer (the dispatcher; mutations serialise on an internal mutex) and
//! any number of concurrent queries. A query takes the file list's read lock
//! only to clone `Arc`s, then walks chains lock-free: the writer publishes each
//! entry by storing its slot with `Release` (see `file.rs`); a query may miss
//! entries added while it runs, never sees a half-written one. Deleted files
//! stay mapped while a query holds them.
//!
//! # Crash recovery: keep, truncate, re-dispatch
//!
//! RocketMQ's abnormal recovery deletes every index file whose endTimestamp is
//! newer than the checkpoint's `indexMsgTimestamp`, and re-dispatch (which
//! starts from the consume-queue checkpoint unless `messageIndexSafe`) does not
//! rebuild what those files held — users lose key lookups after a crash. Here
//! files are kept ([`IndexLoad::KeepAll`]) and made consistent instead:
//! 1. [`IndexService::rebuild_point`]`(indexMsgTimestamp)` gives the commit log
//!    offset from which entries may be missing or torn (the first entry of the
//!    oldest file written after the last durable roll);
//! 2. [`IndexService::truncate_after`]`(p)` removes every entry at or beyond
//!    `p` (whole files when their first entry is), restoring the hash chains,
//!    and lowers endPhyOffset so that
//! 3. re-dispatching records from `p` (put is idempotent: a message below the
//!    last file's endPhyOffset is skipped) rebuilds exactly what was removed.
//!
//! The recovery code should re-dispatch from `min(commit-log start point, p)`
//! (consume-queue appends are idempotent too) and call `truncate_after` with
//! `min(p, recovered commit log end)`. After a process crash (page cache
//! intact) even `p = recovered end` loses nothing. [`IndexLoad::DeleteNewerThan`]
//! is RocketMQ's behaviour, kept for parity.

mod file;
mod format;

pub use format::{
    build_key, key_hash, time_diff, IndexEntry, IndexFileView, IndexFormatError, IndexHeader,
    IndexLayout, HASH_SLOT_SIZE, INDEX_ENTRY_SIZE, INDEX_HEADER_SIZE,
};

use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::{Mutex, RwLock};

use crate::config::StoreConfig;
use crate::error::{Result, StoreError};
use file::IndexFile;

/// Most candidate offsets one [`IndexService::query_checked`] offers to its
/// check (matches and colliding keys together).
pub const MAX_CHECKED_CANDIDATES: usize = 4096;

/// What to do with existing files at load.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IndexLoad {
    /// Keep every file (see "Crash recovery" in the module docs).
    KeepAll,
    /// RocketMQ's abnormal recovery: delete files whose endTimestamp is newer
    /// than this checkpoint `indexMsgTimestamp`. Loses lookups unless the
    /// caller re-dispatches from before those files' first entries.
    DeleteNewerThan(i64),
}

/// What [`IndexService::put_message`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct IndexPutOutcome {
    /// Keys written.
    pub keys_indexed: usize,
    /// The message was below the last file's endPhyOffset and was skipped.
    pub skipped: bool,
    /// A full file was closed and a new one started; the caller should have
    /// the flusher call [`IndexService::flush`] and persist the checkpoint.
    pub rolled: bool,
}

/// The answer to a key query.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct IndexQueryResult {
    /// Commit log offsets, newest first, without duplicates. Hash collisions
    /// are not resolved: the caller re-checks the keys of the messages.
    pub phys_offsets: Vec<u64>,
    /// endTimestamp of the newest file (QUERY_MESSAGE's `indexLastUpdateTimestamp`).
    pub last_update_timestamp: i64,
    /// endPhyOffset of the newest file (`indexLastUpdatePhyoffset`).
    pub last_update_phy_offset: i64,
}

type Clock = Arc<dyn Fn() -> i64 + Send + Sync>;

/// All index files of a store.
pub struct IndexService {
    dir: PathBuf,
    layout: IndexLayout,
    max_msgs_num_batch: usize,
    files: RwLock<Vec<Arc<IndexFile>>>,
    writer: Mutex<()>,
    clock: Clock,
}

impl std::fmt::Debug for IndexService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IndexService")
            .field("dir", &self.dir)
            .field("layout", &self.layout)
            .field("files", &self.file_names())
            .finish()
    }
}

impl IndexService {
    /// An empty service for `config.index_dir()` (no I/O).
    pub fn new(config: &StoreConfig) -> Result<Self> {
        let layout = IndexLayout::from_config(config)
            .map_err(|e| StoreError::InvalidArgument(e.to_string()))?;
        Ok(Self::with_dir(
            &config.index_dir(),
            layout,
            config.max_msgs_num_batch as usize,
        ))
    }

    /// An empty service for `dir`; queries return at most `max_msgs_num_batch`.
    pub fn with_dir(dir: &Path, layout: IndexLayout, max_msgs_num_batch: usize) -> Self {
        IndexService {
            dir: dir.to_path_buf(),
            layout,
            max_msgs_num_batch: max_msgs_num_batch.max(1),
            files: RwLock::new(Vec::new()),
            writer: Mutex::new(()),
            clock: Arc::new(now_ms),
        }
    }

    /// Replaces the wall clock used to name new files (tests).
    pub fn with_clock(mut self, clock: impl Fn() -> i64 + Send + Sync + 'static) -> Self {
        self.clock = Arc::new(clock);
        self
    }

    /// [`new`](Self::new) then [`load`](Self::load_files).
    pub fn load(config: &StoreConfig, mode: IndexLoad) -> Result<Self> {
        let s = Self::new(config)?;
        s.load_files(mode)?;
        Ok(s)
    }

    /// Maps every index file in the directory, oldest (smallest name) first.
    /// Each must have exactly the layout's size (a file built with another
    /// `maxHashSlotNum`/`maxIndexNum` would be misread, so it is an error).
    pub fn load_files(&self, mode: IndexLoad) -> Result<()> {
        let _w = self.writer.lock();
        let mut names = Vec::new();
        match std::fs::read_dir(&self.dir) {
            Ok(rd) => {
                for ent in rd {
                    let ent = ent.map_err(|e| StoreError::io(&self.dir, e))?;
                    let name = ent.file_name().to_string_lossy().into_owned();
                    if name.len() == 17 && name.bytes().all(|b| b.is_ascii_digit()) {
                        names.push(name);
                    } else {
                        tracing::warn!("ignoring {} in index directory", ent.path().display());
                    }
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(StoreError::io(&self.dir, e)),
        }
        names.sort();
        let mut files = Vec::new();
        for name in names {
            let f = IndexFile::open(&self.dir, &name, self.layout)?;
            if let IndexLoad::DeleteNewerThan(checkpoint) = mode {
                if f.end_timestamp() > checkpoint {
                    tracing::warn!(
                        "deleting index file {name}: endTimestamp {} is newer than checkpoint {checkpoint}",
                        f.end_timestamp()
                    );
                    remove_file(f.path())?;
                    continue;
                }
            }
            files.push(Arc::new(f));
        }
        *self.files.write() = files;
        Ok(())
    }

    /// Names of the files, oldest first.
    pub fn file_names(&self) -> Vec<String> {
        self.files.read().iter().map(|f| f.name.clone()).collect()
    }

    /// Headers of the files, oldest first (as held in memory).
    pub fn headers(&self) -> Vec<IndexHeader> {
        self.files.read().iter().map(|f| f.header()).collect()
    }

    /// The newest file's endTimestamp and endPhyOffset (store time and
    /// offset of the last indexed message; QUERY_MESSAGE's
    /// `indexLastUpdateTimestamp` / `indexLastUpdatePhyoffset`); zeros
    /// without files.
    pub fn last_update(&self) -> (i64, i64) {
        self.files
            .read()
            .last()
            .map(|f| (f.end_timestamp(), f.end_phy_offset()))
            .unwrap_or((0, 0))
    }

    /// The newest file's endPhyOffset (offset of the last indexed message), if any file exists.
    pub fn end_phy_offset(&self) -> Option<i64> {
        self.files.read().last().map(|f| f.end_phy_offset())
    }

    /// Indexes a message (store.md §8 "Keys"): `TOPIC#uniq_key` if present and
    /// `TOPIC#k` for every non-empty word of `keys` split on single spaces.
    /// Skipped when `phys_offset` is below the last file's endPhyOffset (so
    /// re-dispatch is idempotent; the last indexed message itself is indexed
    /// again, as in RocketMQ, so that a message interrupted between its keys
    /// is completed — queries drop the duplicate offsets). Rolls to a new
    /// file when the current one is full. The caller skips ROLLBACK records
    /// and honours `messageIndexEnable`.
    pub fn put_message(
        &self,
        topic: &str,
        uniq_key: Option<&str>,
        keys: Option<&str>,
        phys_offset: u64,
        store_timestamp: i64,
    ) -> Result<IndexPutOutcome> {
        let words = uniq_key
            .into_iter()
            .chain(keys.into_iter().flat_map(|k| k.split(' ')))
            .filter(|k| !k.is_empty());
        self.put_keys(topic, words, phys_offset, store_timestamp)
    }

    /// Indexes `TOPIC#k` for each given key (already split), with the same
    /// skip and roll rules as [`put_message`](Self::put_message).
    pub fn put_keys<'k>(
        &self,
        topic: &str,
        keys: impl IntoIterator<Item = &'k str>,
        phys_offset: u64,
        store_timestamp: i64,
    ) -> Result<IndexPutOutcome> {
        let phy = i64::try_from(phys_offset).map_err(|_| {
            StoreError::InvalidArgument(format!("phys offset {phys_offset} too large"))
        })?;
        let mut keys = keys.into_iter().filter(|k| !k.is_empty()).peekable();
        let mut out = IndexPutOutcome::default();
        if keys.peek().is_none() {
            return Ok(out);
        }
        let _w = self.writer.lock();
        // Bind first: a read guard alive in the match would deadlock create_file_locked.
        let last = self.files.read().last().cloned();
        let mut file = match last {
            Some(f) => f,
            None => self.create_file_locked(None)?,
        };
        if phy < file.end_phy_offset() {
            out.skipped = true;
            return Ok(out);
        }
        for key in keys {
            let hash = key_hash(&build_key(topic, key));
            if !file.put(hash, phy, store_timestamp)? {
                file = self.create_file_locked(Some(&file))?;
                out.rolled = true;
                if !file.put(hash, phy, store_timestamp)? {
                    return Err(StoreError::InvalidArgument(
                        "index layout leaves no room for an entry".into(),
                    ));
                }
            }
            out.keys_indexed += 1;
        }
        if file.is_full() {
            // Roll now so that the full file is flushable and checkpointable
            // without waiting for the next message.
            self.create_file_locked(Some(&file))?;
            out.rolled = true;
        }
        Ok(out)
    }

    fn create_file_locked(&self, prev: Option<&IndexFile>) -> Result<Arc<IndexFile>> {
        crate::dir::create_dir_durable(&self.dir)?;
        let last_name = self.files.read().last().map(|f| f.name.clone());
        let mut name = index_file_name((self.clock)());
        // Names must sort in creation order even if the wall clock stepped back
        // (or two files are created within one millisecond).
        loop {
            let clash =
                last_name.as_ref().is_some_and(|l| name <= *l) || self.dir.join(&name).exists();
            if !clash {
                break;
            }
            let base = last_name.as_ref().filter(|l| name <= **l).unwrap_or(&name);
            name = format!("{:017}", base.parse::<u64>().unwrap_or(0) + 1);
        }
        let prev_end = prev.map(|p| (p.end_timestamp(), p.end_phy_offset()));
        let f = Arc::new(IndexFile::create(&self.dir, &name, self.layout, prev_end)?);
        self.files.write().push(f.clone());
        tracing::info!("created index file {name}");
        Ok(f)
    }

    /// Commit log offsets of messages with `key` in `topic` stored in
    /// `[begin, end]` (ms), newest first, at most `min(max_num,
    /// maxMsgsNumBatch)` (store.md §8 "Query"): files newest → oldest whose
    /// time range overlaps, stopping after a file that begins before `begin`
    /// or once enough offsets are found. Hash collisions are not resolved
    /// (see [`query_checked`](Self::query_checked)).
    pub fn query(
        &self,
        topic: &str,
        key: &str,
        max_num: usize,
        begin: i64,
        end: i64,
    ) -> IndexQueryResult {
        self.query_checked(topic, key, max_num, begin, end, &mut |_| true)
    }

    /// [`query`](Self::query), keeping only the offsets `accept` says are
    /// really `key`'s messages: keys with the same Java hash share a chain,
    /// and counting their entries against `max_num` (as RocketMQ's index
    /// does) lets newer messages of a colliding key hide every older match.
    /// At most [`MAX_CHECKED_CANDIDATES`] offsets are offered to `accept`
    /// per query, so a flood of colliding keys costs a bounded number of
    /// record reads.
    pub fn query_checked(
        &self,
        topic: &str,
        key: &str,
        max_num: usize,
        begin: i64,
        end: i64,
        accept: &mut dyn FnMut(u64) -> bool,
    ) -> IndexQueryResult {
        let max_num = max_num.min(self.max_msgs_num_batch);
        let files: Vec<Arc<IndexFile>> = self.files.read().clone();
        let mut out = IndexQueryResult::default();
        let Some(last) = files.last() else {
            return out;
        };
        out.last_update_timestamp = last.end_timestamp();
        out.last_update_phy_offset = last.end_phy_offset();
        if max_num == 0 {
            return out;
        }
        let hash = key_hash(&build_key(topic, key));
        let mut select = file::Select {
            key_hash: hash,
            max_num,
            begin,
            end,
            budget: MAX_CHECKED_CANDIDATES,
            accept,
        };
        for f in files.iter().rev() {
            let h = f.header();
            if h.index_count > 1 && h.time_matched(begin, end) {
                f.select(&mut select, &mut out.phys_offsets);
            }
            if f.begin_timestamp() < begin
                || out.phys_offsets.len() >= max_num
                || select.budget == 0
            {
                break;
            }
        }
        out
    }

    /// `msync`s every file changed since its last flush. Returns the
    /// endTimestamp of the newest *full* file that is now durable — the value
    /// for the checkpoint's `indexMsgTimestamp` — if there is one.
    pub fn flush(&self) -> Result<Option<i64>> {
        let files: Vec<Arc<IndexFile>> = self.files.read().clone();
        let mut first_err = None;
        for f in &files {
            if let Err(e) = f.flush() {
                tracing::error!("flushing index file {}: {e}", f.name);
                first_err.get_or_insert(e);
            }
        }
        if let Some(e) = first_err {
            return Err(e);
        }
        Ok(files
            .iter()
            .rev()
            .find(|f| f.is_full() && !f.is_dirty())
            .map(|f| f.end_timestamp()))
    }

    /// Deletes files (never the last) whose endPhyOffset is below the commit
    /// log's min offset (store.md §11.8). Returns the number deleted.
    pub fn delete_expired(&self, commit_log_min_offset: u64) -> Result<usize> {
        let _w = self.writer.lock();
        let min = i64::try_from(commit_log_min_offset).unwrap_or(i64::MAX);
        let mut n = 0;
        loop {
            let victim = {
                let files = self.files.read();
                match files.first() {
                    Some(f) if files.len() > 1 && f.end_phy_offset() < min => f.clone(),
                    _ => break,
                }
            };
            self.files.write().remove(0);
            tracing::info!("deleting expired index file {}", victim.name);
            remove_file(victim.path())?;
            n += 1;
        }
        Ok(n)
    }

    /// Commit log offset from which the index may be incomplete after a crash:
    /// the first entry of the oldest file whose endTimestamp is newer than the
    /// checkpoint's `indexMsgTimestamp` (files up to the checkpoint were
    /// flushed when they rolled). `None` if no file is newer. See the module
    /// docs for how recovery uses it.
    pub fn rebuild_point(&self, index_checkpoint_timestamp: i64) -> Option<u64> {
        let files = self.files.read();
        let f = files
            .iter()
            .find(|f| f.end_timestamp() > index_checkpoint_timestamp)?;
        let phy = f
            .first_entry_phy()
            .unwrap_or_else(|| f.header().begin_phy_offset);
        Some(phy.max(0) as u64)
    }

    /// Removes every entry pointing at or beyond commit log offset
    /// `phys_offset`, newest file first: a file whose first entry is beyond
    /// (or an empty file whose pre-set endPhyOffset is) is deleted; in the
    /// first file with older entries the newer ones are cut off and their hash
    /// chains restored (a scan of all its slots). Afterwards the last file's
    /// endPhyOffset is below `phys_offset`, so re-dispatching from there
    /// re-indexes everything removed. Returns the number of entries removed
    /// from kept files (deleted files are not counted).
    pub fn truncate_after(&self, phys_offset: u64) -> Result<u64> {
        let _w = self.writer.lock();
        let phy = i64::try_from(phys_offset).unwrap_or(i64::MAX);
        let mut removed = 0;
        loop {
            let Some(last) = self.files.read().last().cloned() else {
                break;
            };
            let drop_whole = match last.first_entry_phy() {
                Some(first) => first >= phy,
                None => last.end_phy_offset() >= phy,
            };
            if drop_whole {
                self.files.write().pop();
                tracing::info!(
                    "deleting index file {}: it indexes only commit log data at or after {phy}",
                    last.name
                );
                remove_file(last.path())?;
                continue;
            }
            let n = last.truncate_from(phy);
            if n > 0 {
                tracing::info!(
                    "index file {}: removed {n} entries at or after {phy}",
                    last.name
                );
            }
            removed += n as u64;
            break;
        }
        Ok(removed)
    }
}

/// `yyyyMMddHHmmssSSS` of `ms` since the epoch, in local time.
pub fn index_file_name(ms: i64) -> String {
    let secs = ms.div_euclid(1000) as libc::time_t;
    let millis = ms.rem_euclid(1000);
    // SAFETY: `tm` is a plain C struct for which all-zero bytes are valid;
    // localtime_r only writes into the struct we pass and reads `secs`.
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    let ok = unsafe { !libc::localtime_r(&secs, &mut tm).is_null() };
    if !ok {
        // SAFETY: as above.
        unsafe { libc::gmtime_r(&secs, &mut tm) };
    }
    format!(
        "{:04}{:02}{:02}{:02}{:02}{:02}{:03}",
        tm.tm_year + 1900,
        tm.tm_mon + 1,
        tm.tm_mday,
        tm.tm_hour,
        tm.tm_min,
        tm.tm_sec,
        millis
    )
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

fn remove_file(path: &Path) -> Result<()> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(StoreError::io(path, e)),
    }
}

#[cfg(test)]
mod tests;
