//! [`MessageStore`]: the engine's public API.
//!
//! # Contract
//! * `put_*` return once the record is in the commit log and readable. Under
//!   `SYNC_FLUSH` (and the message's `WAIT` property absent or `true`) they
//!   return [`PutStatus::PutOk`] only once the record is durable on disk;
//!   past `syncFlushTimeout` they return [`PutStatus::FlushDiskTimeout`] (the
//!   record is stored, but durability was not confirmed). Under `ASYNC_FLUSH`
//!   they return at once; the record becomes durable within
//!   `flushIntervalCommitLog` ms (or on clean shutdown).
//! * After a failed flush every put fails with [`StoreError::ReadOnly`]:
//!   nothing is acknowledged that may not be durable.
//! * Thread-safe: share an `Arc<MessageStore>`. From async code use the
//!   `*_async` variants: the append itself is a short memcpy done on the
//!   caller's task, and waiting for the flush is an `.await`, never a
//!   blocking call on the runtime's threads.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;

use crate::allocator::FileSpec;
use crate::checkpoint::{AbortFile, Checkpoint, StoreLock};
use crate::commit_log::{AppendedRecord, CommitLog, MappedSlice, Recovered};
use crate::config::{FlushDiskType, StoreConfig};
use crate::error::{Result, StoreError};
use crate::flusher::{FlushPolicy, Flusher};
use crate::group_commit::{GroupCommit, NotDurable};
use crate::record::{self, MessageToStore};

/// RocketMQ's PutMessageStatus values that a successful append can carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PutStatus {
    PutOk,
    /// Stored, but not confirmed durable within `syncFlushTimeout`.
    FlushDiskTimeout,
    /// Stored, but no slave confirmed it in time (SYNC_MASTER).
    FlushSlaveTimeout,
    /// Stored, but no slave is connected (SYNC_MASTER).
    SlaveNotAvailable,
}

/// One stored message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredMessage {
    pub physical_offset: u64,
    pub size: u32,
    pub queue_offset: i64,
    /// The broker-generated offsetMsgId.
    pub msg_id: String,
}

/// What a put returns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PutResult {
    pub status: PutStatus,
    pub messages: Vec<StoredMessage>,
    pub store_timestamp: i64,
}

/// The message store.
pub struct MessageStore {
    config: StoreConfig,
    commit_log: Arc<CommitLog>,
    group: Arc<GroupCommit>,
    flusher: Mutex<Option<Flusher>>,
    abort: AbortFile,
    recovered: Recovered,
    was_clean: bool,
    shut_down: AtomicBool,
    _lock: StoreLock,
}

impl MessageStore {
    /// Opens (creating if needed) the store at `config.store_path_root_dir`,
    /// recovers it and starts the background services.
    pub fn open(config: StoreConfig) -> Result<Arc<Self>> {
        config.validate()?;
        let root = config.store_path_root_dir.clone();
        std::fs::create_dir_all(&root).map_err(|e| StoreError::io(&root, e))?;
        std::fs::create_dir_all(config.config_dir())
            .map_err(|e| StoreError::io(config.config_dir(), e))?;
        let lock = StoreLock::acquire(&config.lock_path())?;
        let abort = AbortFile::new(config.abort_path());
        let was_clean = !abort.exists();
        let checkpoint = Checkpoint::load(&config.checkpoint_path())?;

        let spec = FileSpec {
            dir: config.commit_log_dir(),
            size: config.mapped_file_size_commit_log,
            preallocate: true,
            warm: config.warm_maped_file_enable,
            warm_flush_pages: config.flush_least_pages_when_warm_maped_file,
        };
        let commit_log = Arc::new(CommitLog::open(
            spec,
            config.flush_mechanism,
            config.allocate_next_file,
        )?);
        let start = if was_clean {
            commit_log.file_count().saturating_sub(3)
        } else {
            abnormal_start_file(&commit_log, &checkpoint, &config)
        };
        let recovered = commit_log.recover(start, config.check_crc_on_recover)?;
        if !was_clean {
            tracing::warn!(
                "store {} was not shut down cleanly; recovered to offset {} ({} bytes of torn tail zeroed)",
                root.display(),
                recovered.end_offset,
                recovered.zeroed_bytes
            );
        }
        let group = Arc::new(GroupCommit::new(recovered.end_offset));
        let log = commit_log.clone();
        let flusher = Flusher::start(
            commit_log.clone(),
            group.clone(),
            FlushPolicy::from_config(&config),
            move || log.last_store_timestamp(),
        )?;
        abort.create()?;
        Ok(Arc::new(MessageStore {
            config,
            commit_log,
            group,
            flusher: Mutex::new(Some(flusher)),
            abort,
            recovered,
            was_clean,
            shut_down: AtomicBool::new(false),
            _lock: lock,
        }))
    }

    pub fn config(&self) -> &StoreConfig {
        &self.config
    }

    /// What recovery found at open.
    pub fn recovered(&self) -> &Recovered {
        &self.recovered
    }

    /// Whether the previous run stopped cleanly.
    pub fn was_clean_shutdown(&self) -> bool {
        self.was_clean
    }

    fn check_writable(&self) -> Result<()> {
        if self.shut_down.load(Ordering::Acquire) {
            return Err(StoreError::ShutDown);
        }
        if let Some(f) = self.group.failure() {
            return Err(StoreError::ReadOnly(f.to_string()));
        }
        Ok(())
    }

    fn encode(&self, msgs: &[MessageToStore]) -> Result<Vec<u8>> {
        let first = msgs
            .first()
            .ok_or_else(|| StoreError::InvalidArgument("empty batch".into()))?;
        let mut buf = Vec::with_capacity(msgs.iter().map(|m| m.encoded_len()).sum());
        for m in msgs {
            if m.topic != first.topic || m.queue_id != first.queue_id {
                return Err(StoreError::InvalidArgument(
                    "a batch must be one topic and queue".into(),
                ));
            }
            m.validate(self.config.max_message_size as usize)
                .map_err(StoreError::InvalidArgument)?;
            m.encode_into(&mut buf);
        }
        Ok(buf)
    }

    /// Appends; returns the result and the offset to wait for (if waiting is due).
    fn append(&self, msgs: &[MessageToStore]) -> Result<(PutResult, Option<u64>)> {
        self.check_writable()?;
        let mut buf = self.encode(msgs)?;
        let first = &msgs[0];
        let appended = self
            .commit_log
            .append(&first.topic, first.queue_id, &mut buf)?;
        let store_host = first.store_host;
        let messages = appended
            .records
            .iter()
            .map(|r: &AppendedRecord| StoredMessage {
                physical_offset: r.physical_offset,
                size: r.size,
                queue_offset: r.queue_offset,
                msg_id: record::offset_msg_id(store_host, r.physical_offset as i64),
            })
            .collect();
        let result = PutResult {
            status: PutStatus::PutOk,
            messages,
            store_timestamp: appended.store_timestamp,
        };
        let wait = match self.config.flush_disk_type {
            FlushDiskType::SyncFlush => {
                let wants_wait = record::find_property(&first.properties, record::property::WAIT)
                    .map(|v| v.eq_ignore_ascii_case("true"))
                    .unwrap_or(true);
                if wants_wait {
                    Some(appended.end_offset)
                } else {
                    self.group.request(appended.end_offset);
                    None
                }
            }
            FlushDiskType::AsyncFlush => None,
        };
        Ok((result, wait))
    }

    fn settle(mut result: PutResult, waited: std::result::Result<(), NotDurable>) -> Result<PutResult> {
        match waited {
            Ok(()) => Ok(result),
            Err(NotDurable::Timeout) => {
                result.status = PutStatus::FlushDiskTimeout;
                Ok(result)
            }
            Err(NotDurable::Failed(why)) => Err(StoreError::ReadOnly(why)),
        }
    }

    fn flush_timeout(&self) -> Duration {
        Duration::from_millis(self.config.sync_flush_timeout)
    }

    /// Stores one message, blocking the calling thread until it is durable
    /// under SYNC_FLUSH (see the module contract).
    pub fn put_message(&self, msg: &MessageToStore) -> Result<PutResult> {
        self.put_batch(std::slice::from_ref(msg))
    }

    /// Stores messages of one topic and queue contiguously, with consecutive
    /// queue offsets; all or nothing.
    pub fn put_batch(&self, msgs: &[MessageToStore]) -> Result<PutResult> {
        let (result, wait) = self.append(msgs)?;
        match wait {
            Some(offset) => Self::settle(result, self.group.wait(offset, self.flush_timeout())),
            None => Ok(result),
        }
    }

    /// [`MessageStore::put_message`] for async callers.
    pub async fn put_message_async(&self, msg: &MessageToStore) -> Result<PutResult> {
        self.put_batch_async(std::slice::from_ref(msg)).await
    }

    /// [`MessageStore::put_batch`] for async callers.
    pub async fn put_batch_async(&self, msgs: &[MessageToStore]) -> Result<PutResult> {
        let (result, wait) = self.append(msgs)?;
        match wait {
            Some(offset) => Self::settle(
                result,
                self.group.wait_async(offset, self.flush_timeout()).await,
            ),
            None => Ok(result),
        }
    }

    /// The whole record at a physical offset (a slice of the mapping).
    pub fn read_record(&self, physical_offset: u64) -> Option<MappedSlice> {
        self.commit_log.read_record(physical_offset)
    }

    /// First commit log offset still stored.
    pub fn min_offset(&self) -> u64 {
        self.commit_log.min_offset()
    }

    /// Commit log offset just past the last record.
    pub fn max_offset(&self) -> u64 {
        self.commit_log.max_offset()
    }

    /// Offset below which everything is durable.
    pub fn durable_offset(&self) -> u64 {
        self.group.durable()
    }

    /// Whether the append lock is held longer than `osPageCacheBusyTimeOutMills`.
    pub fn is_os_page_cache_busy(&self) -> bool {
        self.commit_log
            .is_busy(self.config.os_page_cache_busy_time_out_mills)
    }

    pub fn commit_log(&self) -> &Arc<CommitLog> {
        &self.commit_log
    }

    /// Flushes everything, writes the checkpoint and removes the abort file.
    /// Appends after this fail with [`StoreError::ShutDown`].
    pub fn shutdown(&self) -> Result<()> {
        if self.shut_down.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        if let Some(mut f) = self.flusher.lock().take() {
            f.shutdown();
        }
        self.commit_log.shutdown();
        if let Some(why) = self.group.failure() {
            // Leave the abort file: the next start must recover.
            return Err(StoreError::ReadOnly(why.to_string()));
        }
        let ts = self.commit_log.last_store_timestamp();
        let cp = Checkpoint {
            physic_msg_timestamp: ts,
            logics_msg_timestamp: ts,
            index_msg_timestamp: ts,
            dispatched_offset: Some(self.commit_log.max_offset()),
        };
        cp.store(&self.config.checkpoint_path())?;
        self.abort.remove()
    }

    /// Stops the background threads without a checkpoint, leaving the abort
    /// file: the on-disk state is as if the process died after its last
    /// flush. For crash tests and tools; the store is unusable afterwards.
    pub fn abandon(&self) {
        self.shut_down.store(true, Ordering::Release);
        if let Some(mut f) = self.flusher.lock().take() {
            f.shutdown();
        }
        self.commit_log.shutdown();
    }

    /// The store root.
    pub fn root(&self) -> &Path {
        &self.config.store_path_root_dir
    }
}

impl Drop for MessageStore {
    fn drop(&mut self) {
        if !self.shut_down.load(Ordering::Acquire) {
            if let Err(e) = self.shutdown() {
                tracing::error!("store shutdown: {e}");
            }
        }
    }
}

/// Abnormal recovery's first file (store.md §11.7): the newest file whose
/// first record is older than the checkpoint's minimum timestamp − 3 s.
fn abnormal_start_file(log: &CommitLog, cp: &Checkpoint, config: &StoreConfig) -> usize {
    let mut min = cp.physic_msg_timestamp.min(cp.logics_msg_timestamp);
    if config.message_index_enable && config.message_index_safe {
        min = min.min(cp.index_msg_timestamp);
    }
    let min = min - 3000;
    (0..log.file_count())
        .rev()
        .find(|&i| {
            log.first_store_timestamp_of(i)
                .map(|ts| ts != 0 && ts <= min)
                .unwrap_or(false)
        })
        .unwrap_or(0)
}
