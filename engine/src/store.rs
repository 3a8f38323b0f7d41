//! [`MessageStore`]: the engine's public API.
//!
//! # Contract
//! * `put_*` return once the record is in the commit log (readable: see below). Under
//!   `SYNC_FLUSH` (and the message's `WAIT` property absent or `true`) they
//!   return [`PutStatus::PutOk`] only once the record is durable on disk;
//!   past `syncFlushTimeout` they return [`PutStatus::FlushDiskTimeout`] (the
//!   record is stored, but durability was not confirmed). Under `ASYNC_FLUSH`
//!   they return at once; every `flushIntervalCommitLog` ms the flusher
//!   writes out the whole pages written since its last round once there are
//!   `flushCommitLogLeastPages` of them, and everything (the page being
//!   written too) every `flushCommitLogThoroughInterval` ms and on clean
//!   shutdown.
//! * Under `SYNC_FLUSH` with `WRITE_FDATASYNC` (the default mechanism there),
//!   except on a slave, appends are staged in memory and written at the next flush
//!   ([`CommitLog::stage_appends`]): a record becomes readable and pullable
//!   when it becomes durable, so consumers never see a message a crash
//!   could still take back. Otherwise a record is readable when `put_*`
//!   returns.
//! * A readable record reaches its consume queue and the index (becomes
//!   pullable) when `put_*` returns at low rates; when the log grows faster
//!   than about 100 MB/s, within a fraction of a millisecond, dispatched by
//!   the background reput thread (see [`crate::dispatch`]).
//! * After a failed flush every put fails with [`StoreError::ReadOnly`]:
//!   nothing is acknowledged that may not be durable.
//! * `SYNC_MASTER` (and `WAIT` absent or `true`): additionally returned only
//!   once a slave acknowledged the record, else [`PutStatus::SlaveNotAvailable`]
//!   (no slave, or one more than `haSlaveFallbehindMax` behind) or, after
//!   `slaveTimeout`, [`PutStatus::FlushSlaveTimeout`]; the record is stored
//!   either way (see [`crate::replication`]). A `SLAVE` store refuses puts
//!   ([`StoreError::SlaveMode`]) and takes its records from
//!   [`MessageStore::append_replicated`].
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
use crate::config::{BrokerRole, FlushDiskType, FlushMechanism, StoreConfig};
use crate::consume_queue::ConsumeQueueSet;
use crate::dispatch::{ArrivalListener, Derived, Dispatcher};
use crate::error::{Result, StoreError};
use crate::flusher::{FlushPolicy, Flusher};
use crate::group_commit::{FlushStats, GroupCommit, NotDurable};
use crate::index::{IndexLoad, IndexService};
use crate::mapped_file::WarmPages;
use crate::read::{self, GetMessageResult, MessageFilter, ReadLimits};
use crate::record::{self, MessageToStore};
use crate::replication::Replication;
use crate::retention::{Retention, RetentionRound, StoreHooks};

/// Longest spin of [`MessageStore::park_hook`] per park: above this
/// machine's fdatasync p99 (about 420 µs), so a slow flush still finds the
/// thread awake, but a stalled disk does not keep it spinning.
pub const PARK_SPIN_MAX: Duration = Duration::from_micros(500);

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
    /// STOREHOST of the record (half of its offsetMsgId).
    pub store_host: std::net::SocketAddr,
}

impl StoredMessage {
    /// The broker-generated offsetMsgId (computed on demand: engine users
    /// that do not answer a client should not pay for the hex formatting).
    pub fn msg_id(&self) -> String {
        record::offset_msg_id(self.store_host, self.physical_offset as i64)
    }
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
    derived: Arc<Derived>,
    dispatcher: Mutex<Option<Dispatcher>>,
    reput: Arc<crate::dispatch::Reput>,
    replication: Arc<Replication>,
    checkpointer: Mutex<Option<Checkpointer>>,
    retention: Retention,
    read_limits: ReadLimits,
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
        Self::open_with(config, StoreHooks::default())
    }

    /// [`MessageStore::open`] with another clock and disk-usage probe
    /// (tests; see [`crate::retention`]).
    pub fn open_with(config: StoreConfig, hooks: StoreHooks) -> Result<Arc<Self>> {
        config.validate()?;
        let root = config.store_path_root_dir.clone();
        std::fs::create_dir_all(&root).map_err(|e| StoreError::io(&root, e))?;
        std::fs::create_dir_all(config.config_dir())
            .map_err(|e| StoreError::io(config.config_dir(), e))?;
        let lock = StoreLock::acquire(&config.lock_path())?;
        let abort = AbortFile::new(config.abort_path());
        let was_clean = !abort.exists();
        let checkpoint = Checkpoint::load(&config.checkpoint_path())?;

        let warm = warm_pages(&config);
        let spec = FileSpec {
            dir: config.commit_log_dir(),
            size: config.mapped_file_size_commit_log,
            preallocate: true,
            warm,
            // Read-warmed files appended to through the mapping: the
            // prefaulter's window, ready before the roll.
            writable_head: match (warm, config.effective_flush_mechanism()) {
                (Some(WarmPages::Read), m) if m != FlushMechanism::WriteFdatasync => {
                    crate::prefault::WINDOW
                }
                _ => 0,
            },
            // Appends written with write(2) then always overwrite written
            // blocks, and no group commit waits for an extent conversion.
            zero_fill: config.effective_flush_mechanism() == FlushMechanism::WriteFdatasync,
        };
        let commit_log = Arc::new(CommitLog::open(
            spec,
            config.effective_flush_mechanism(),
            config.allocate_next_file,
        )?);
        let start = if was_clean {
            commit_log.file_count().saturating_sub(3)
        } else {
            abnormal_start_file(&commit_log, &checkpoint, &config)
        };
        if config.broker_role == BrokerRole::Slave {
            commit_log.follow_master();
        }
        let recovered = commit_log.recover(start, config.check_crc_on_recover)?;
        if !was_clean {
            tracing::warn!(
                "store {} was not shut down cleanly; recovered to offset {} ({} bytes of torn tail zeroed)",
                root.display(),
                recovered.end_offset,
                recovered.zeroed_bytes
            );
        }
        let end = recovered.end_offset;

        // Derived files: drop what points past the recovered end, then
        // re-dispatch from a point where everything before is known durable.
        let queues = Arc::new(ConsumeQueueSet::load(&config)?);
        queues.truncate_dirty_all(end)?;
        let index = if config.message_index_enable {
            let index = IndexService::load(&config, IndexLoad::KeepAll)?;
            Some(Arc::new(index))
        } else {
            None
        };
        let mut replay_from = match checkpoint.dispatched_offset {
            Some(d) if d >= end || starts_record(&commit_log, d) => d,
            // Not where a record starts (a damaged checkpoint, or one left
            // by an earlier run over a log another broker has rewritten
            // since): replay its whole file, whose start is a record's.
            Some(d) => {
                let from = d - d % commit_log.file_size();
                tracing::warn!(
                    "checkpoint dispatch offset {d} is not the start of a record; re-dispatching from {from}"
                );
                from
            }
            None if was_clean => queues.max_phys_end(),
            None => commit_log.file_start(start).unwrap_or(0),
        };
        if let (Some(index), false) = (&index, was_clean) {
            if let Some(p) = index.rebuild_point(checkpoint.index_msg_timestamp) {
                if checkpoint.dispatched_offset.is_none() {
                    replay_from = replay_from.min(p);
                }
            }
        }
        // As RocketMQ does, never start past what the queues hold: with the
        // consume queues deleted (how users ask for a rebuild) or cut short,
        // everything after their end is dispatched again. Records already in
        // a queue are skipped there.
        replay_from = replay_from.min(queues.max_phys_end());
        if let Some(damaged) = queues.lowest_end_of_damaged() {
            replay_from = replay_from.min(damaged);
        }
        let replay_from = replay_from.min(end).max(commit_log.min_offset());
        if let Some(index) = &index {
            // Index entries from the replay point on may be torn or missing
            // (after a power loss the header can be ahead of its entries),
            // and a put below the header's end is skipped: remove them all,
            // so that the replay indexes every record from there exactly once.
            index.truncate_after(replay_from)?;
        }
        if replay_from < end {
            tracing::info!("re-dispatching the commit log from offset {replay_from} to {end}");
        }
        let derived = Arc::new(Derived {
            queues: queues.clone(),
            index: index.clone(),
            listener: parking_lot::RwLock::new(None),
            last_timestamp: std::sync::atomic::AtomicI64::new(checkpoint.logics_msg_timestamp),
            delay_levels: crate::schedule::DelayLevels::parse(&config.message_delay_level)?,
        });
        let reached = derived.dispatch_range(&commit_log, replay_from, end)?;
        if reached < end {
            return Err(StoreError::corruption(
                commit_log.dir(),
                format!("dispatch stopped at {reached} before the recovered end {end}"),
            ));
        }
        queues.correct_min_offsets(commit_log.min_offset());
        commit_log.set_queue_offsets(queue_offset_table(&queues));

        let group = Arc::new(GroupCommit::new(end));
        let dispatcher = Dispatcher::start(commit_log.clone(), derived.clone(), end)?;
        let reput = dispatcher.reput();
        let staged = config.flush_disk_type == FlushDiskType::SyncFlush
            && config.effective_flush_mechanism() == FlushMechanism::WriteFdatasync
            && config.broker_role != BrokerRole::Slave;
        if staged {
            commit_log.stage_appends(crate::flusher::EARLY_COMMIT_BYTES);
        }
        let log = commit_log.clone();
        let dispatch = reput.clone();
        let replication = Arc::new(Replication::new());
        let readable = replication.clone();
        let flusher = Flusher::start(
            commit_log.clone(),
            group.clone(),
            FlushPolicy::from_config(&config),
            move || log.last_store_timestamp(),
            // Staged records become readable at the flush: dispatch them and
            // tell slave senders (after their writers were released).
            move || {
                if staged {
                    dispatch.after_append();
                    readable.on_append();
                }
            },
        )?;
        let checkpointer = Checkpointer::start(
            config.checkpoint_path(),
            std::time::Duration::from_millis(config.flush_interval_consume_queue.max(10)),
            derived.clone(),
            reput.clone(),
            flusher.last_flush_timestamp.clone(),
        )?;
        let retention = Retention::start(commit_log.clone(), derived.clone(), &config, hooks)?;
        abort.create()?;
        let read_limits = ReadLimits::from_config(&config);
        Ok(Arc::new(MessageStore {
            config,
            commit_log,
            group,
            flusher: Mutex::new(Some(flusher)),
            derived,
            dispatcher: Mutex::new(Some(dispatcher)),
            reput,
            replication,
            checkpointer: Mutex::new(Some(checkpointer)),
            retention,
            read_limits,
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
        if self.config.broker_role == BrokerRole::Slave {
            return Err(StoreError::SlaveMode);
        }
        if self.shut_down.load(Ordering::Acquire) {
            return Err(StoreError::ShutDown);
        }
        if let Some(f) = self.group.failure() {
            return Err(StoreError::ReadOnly(f.to_string()));
        }
        if let Some(why) = self.reput.stalled() {
            return Err(StoreError::DispatchStalled(why));
        }
        self.retention.check_disk()
    }

    /// Validates and encodes a batch into `buf` (cleared first).
    fn encode(&self, msgs: &[MessageToStore], buf: &mut Vec<u8>) -> Result<()> {
        let first = msgs
            .first()
            .ok_or_else(|| StoreError::InvalidArgument("empty batch".into()))?;
        buf.clear();
        buf.reserve(msgs.iter().map(|m| m.encoded_len()).sum());
        for m in msgs {
            if m.topic != first.topic || m.queue_id != first.queue_id {
                return Err(StoreError::InvalidArgument(
                    "a batch must be one topic and queue".into(),
                ));
            }
            m.validate(self.config.max_message_size as usize)
                .map_err(StoreError::InvalidArgument)?;
            m.encode_into(buf);
        }
        Ok(())
    }

    /// Appends; returns the result (status `SlaveNotAvailable` if the
    /// slave-OK rule fails) and what to wait for.
    fn append(&self, msgs: &[MessageToStore]) -> Result<(PutResult, Waits)> {
        self.check_writable()?;
        // Records are encoded into a per-thread buffer that is reused, so
        // an append allocates nothing for the record itself; a buffer grown
        // by a huge message is dropped rather than kept.
        thread_local! {
            static ENCODE_BUFFER: std::cell::Cell<Vec<u8>> = const { std::cell::Cell::new(Vec::new()) };
        }
        const KEEP_BUFFER_BYTES: usize = 256 * 1024;
        let appended = ENCODE_BUFFER.with(|cell| {
            let mut buf = cell.take();
            let r = self.encode(msgs, &mut buf).and_then(|()| {
                let first = &msgs[0];
                self.commit_log
                    .append(&first.topic, first.queue_id, &mut buf)
            });
            if buf.capacity() <= KEEP_BUFFER_BYTES {
                cell.set(buf);
            }
            r
        })?;
        let first = &msgs[0];
        // A staged record becomes readable at its flush, and the flusher
        // dispatches it then: here there would be nothing new to dispatch
        // but the group before, on the path of this writer's whole group.
        if !self.commit_log.is_staged() {
            self.reput.after_append();
            self.replication.on_append();
        }
        let store_host = first.store_host;
        let messages = appended
            .records
            .iter()
            .map(|r: &AppendedRecord| StoredMessage {
                physical_offset: r.physical_offset,
                size: r.size,
                queue_offset: r.queue_offset,
                store_host,
            })
            .collect();
        let mut result = PutResult {
            status: PutStatus::PutOk,
            messages,
            store_timestamp: appended.store_timestamp,
        };
        let flush = match self.config.flush_disk_type {
            FlushDiskType::SyncFlush => {
                if first.wait_for_flush {
                    Some(appended.end_offset)
                } else {
                    self.group.request(appended.end_offset);
                    None
                }
            }
            FlushDiskType::AsyncFlush => None,
        };
        let mut replica = None;
        if self.config.broker_role == BrokerRole::SyncMaster && first.wait_for_flush {
            if self
                .replication
                .is_slave_ok(appended.end_offset, self.config.ha_slave_fallbehind_max)
            {
                replica = Some(appended.end_offset);
            } else {
                result.status = PutStatus::SlaveNotAvailable;
            }
        }
        Ok((result, Waits { flush, replica }))
    }

    /// Combines the waits' outcomes as Java does: a flush problem, then a
    /// replication problem, the latter winning.
    fn settle(
        mut result: PutResult,
        flushed: Option<std::result::Result<(), NotDurable>>,
        replicated: Option<bool>,
    ) -> Result<PutResult> {
        match flushed {
            None | Some(Ok(())) => {}
            Some(Err(NotDurable::Timeout)) => {
                if result.status == PutStatus::PutOk {
                    result.status = PutStatus::FlushDiskTimeout;
                }
            }
            Some(Err(NotDurable::Failed(why))) => return Err(StoreError::ReadOnly(why)),
        }
        if replicated == Some(false) {
            result.status = PutStatus::FlushSlaveTimeout;
        }
        Ok(result)
    }

    fn slave_timeout(&self) -> Duration {
        Duration::from_millis(self.config.slave_timeout)
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
        let (result, waits) = self.append(msgs)?;
        let flushed = waits
            .flush
            .map(|offset| self.group.wait(offset, self.flush_timeout()));
        let replicated = waits.replica.map(|offset| {
            self.replication
                .wait_for_ack_blocking(offset, self.slave_timeout())
        });
        Self::settle(result, flushed, replicated)
    }

    /// [`MessageStore::put_message`] for async callers.
    pub async fn put_message_async(&self, msg: &MessageToStore) -> Result<PutResult> {
        self.put_batch_async(std::slice::from_ref(msg)).await
    }

    /// [`MessageStore::put_batch`] for async callers.
    pub async fn put_batch_async(&self, msgs: &[MessageToStore]) -> Result<PutResult> {
        let (result, waits) = self.append(msgs)?;
        let flush = async {
            match waits.flush {
                Some(offset) => Some(self.group.wait_async(offset, self.flush_timeout()).await),
                None => None,
            }
        };
        // Join only when there is a replica to wait for as well: the common
        // case awaits its flush (or nothing) directly.
        let (flushed, replicated) = match waits.replica {
            None => (flush.await, None),
            Some(offset) => {
                let replica = self.replication.wait_for_ack(offset, self.slave_timeout());
                let (flushed, replicated) = tokio::join!(flush, replica);
                (flushed, Some(replicated))
            }
        };
        Self::settle(result, flushed, replicated)
    }

    /// The master's replication state: slave connections and acknowledgements.
    pub fn replication(&self) -> &Arc<Replication> {
        &self.replication
    }

    /// Where to start streaming to a slave that reported `slave_offset`
    /// (see [`crate::replication::transfer_start`]).
    pub fn transfer_start(&self, slave_offset: u64) -> u64 {
        crate::replication::transfer_start(
            slave_offset,
            self.commit_log.max_offset(),
            self.commit_log.file_size(),
        )
    }

    /// Up to `max_len` readable commit log bytes from `offset`, within one
    /// file: what the master sends a slave next. `None` when nothing is
    /// readable there yet (or `offset` is no longer stored).
    pub fn read_for_transfer(&self, offset: u64, max_len: u64) -> Option<MappedSlice> {
        if offset < self.commit_log.min_offset() {
            return None;
        }
        self.commit_log
            .slice_to_file_end(offset)
            .map(|s| s.prefix(max_len))
    }

    /// End of the commit log bytes a slave can have been sent (see
    /// [`CommitLog::written_end`]): no honest slave reports more.
    pub fn transfer_end(&self) -> u64 {
        self.commit_log.written_end()
    }

    /// Waits until the commit log grows past `offset` or `timeout` passes.
    pub async fn wait_for_append(&self, offset: u64, timeout: Duration) {
        self.replication
            .wait_for_append(|| self.commit_log.max_offset(), offset, timeout)
            .await
    }

    /// Slave: appends raw commit log bytes received from the master at
    /// `offset` (see [`CommitLog::append_replicated`]), dispatches the whole
    /// records among them and asks for a flush under SYNC_FLUSH (ASYNC_FLUSH
    /// flushes on its timer). Returns the new max offset, which the slave
    /// reports to its master. Does not wait for the flush, as in Java: the
    /// master's acknowledgement means "in the slave's commit log".
    pub fn append_replicated(&self, offset: u64, data: &[u8]) -> Result<u64> {
        if self.shut_down.load(Ordering::Acquire) {
            return Err(StoreError::ShutDown);
        }
        if let Some(f) = self.group.failure() {
            return Err(StoreError::ReadOnly(f.to_string()));
        }
        let end = self.commit_log.append_replicated(offset, data)?;
        self.reput.catch_up();
        self.commit_log
            .note_store_timestamp(self.derived.last_timestamp.load(Ordering::Acquire));
        if self.config.flush_disk_type == FlushDiskType::SyncFlush {
            self.group.request(end);
        }
        Ok(end)
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

    /// A hook for a tokio runtime's `on_thread_park` whose tasks await
    /// SYNC_FLUSH puts: the thread spins through a group commit instead of
    /// sleeping, so it is awake when the flusher wakes its writers (see
    /// [`GroupCommit::spin_while_flushing`]; at most [`PARK_SPIN_MAX`] per
    /// park); the flusher then leaves the wake-ups of the runtime's tasks
    /// to it. Does nothing under ASYNC_FLUSH.
    pub fn park_hook(&self) -> impl Fn() + Send + Sync + 'static {
        let group = self.group.clone();
        move || group.spin_while_flushing(PARK_SPIN_MAX)
    }

    /// Commit log flush counters (benchmarks compare two snapshots).
    pub fn flush_stats(&self) -> FlushStats {
        self.group.stats()
    }

    /// Registers the function told about every newly dispatched message
    /// (topic, queue, queue offset, tag code, properties), on the dispatcher
    /// thread: long-polling pulls use it to wake up without polling.
    pub fn set_arrival_listener(&self, listener: ArrivalListener) {
        *self.derived.listener.write() = Some(listener);
    }

    /// Reads up to `max_count` messages of a queue from `offset` that pass
    /// `filter` (RocketMQ's getMessage). Never blocks.
    pub fn get_messages(
        &self,
        topic: &str,
        queue_id: i32,
        offset: u64,
        max_count: usize,
        filter: &dyn MessageFilter,
    ) -> GetMessageResult {
        let cq = self.derived.queues.get_or_create(topic, queue_id);
        read::get_messages(
            &self.commit_log,
            &cq,
            &self.read_limits,
            offset,
            max_count,
            filter,
        )
    }

    /// The first valid queue offset of a queue (0 for unknown queues).
    ///
    /// Lookups never create a queue (nor do the other offset lookups
    /// below): clients may name any topic and queue id, and each created
    /// queue would stay in the table for good.
    pub fn min_queue_offset(&self, topic: &str, queue_id: i32) -> u64 {
        self.derived
            .queues
            .get(topic, queue_id)
            .map_or(0, |q| q.min_offset())
    }

    /// The next queue offset to be written (0 for unknown queues).
    pub fn max_queue_offset(&self, topic: &str, queue_id: i32) -> u64 {
        self.derived
            .queues
            .get(topic, queue_id)
            .map_or(0, |q| q.max_offset())
    }

    /// Queue ids that exist for `topic`.
    pub fn queue_ids(&self, topic: &str) -> Vec<i32> {
        self.derived
            .queues
            .topic_queues(topic)
            .into_keys()
            .collect()
    }

    /// The queue offset of the message stored closest to `timestamp` ms (0 if none).
    pub fn queue_offset_by_time(&self, topic: &str, queue_id: i32, timestamp: i64) -> u64 {
        let Some(cq) = self.derived.queues.get(topic, queue_id) else {
            return 0;
        };
        cq.search_offset_by_time(timestamp, self.commit_log.min_offset(), |phys, size| {
            let slice = self.commit_log.slice(phys as u64, size as u64)?;
            match record::decode(slice.as_bytes(), false) {
                record::Decoded::Message(v) => Some(v.store_timestamp),
                _ => None,
            }
        })
        .unwrap_or(0)
    }

    /// Store time of the first message still in the queue.
    pub fn earliest_message_time(&self, topic: &str, queue_id: i32) -> Option<i64> {
        let cq = self.derived.queues.get(topic, queue_id)?;
        let e = cq.entry(cq.min_offset())?;
        let slice = self.commit_log.slice(e.phys_offset as u64, e.size as u64)?;
        match record::decode(slice.as_bytes(), false) {
            record::Decoded::Message(v) => Some(v.store_timestamp),
            _ => None,
        }
    }

    /// Messages of `topic` whose KEYS or UNIQ_KEY contain `key`, stored in
    /// `[begin_ms, end_ms]`, newest first, at most `max_num`. Keys are
    /// re-checked here while the index is walked, so a key whose Java hash
    /// collides with another's never returns the other's messages, and the
    /// other's newer messages do not use up `max_num` (up to
    /// [`crate::index::MAX_CHECKED_CANDIDATES`] records are read per query).
    pub fn query_by_key(
        &self,
        topic: &str,
        key: &str,
        max_num: usize,
        begin_ms: i64,
        end_ms: i64,
    ) -> Vec<MappedSlice> {
        let Some(index) = &self.derived.index else {
            return Vec::new();
        };
        if max_num == 0 {
            return Vec::new();
        }
        let mut out = Vec::new();
        index.query_checked(topic, key, max_num, begin_ms, end_ms, &mut |phys| {
            let Some(slice) = self.commit_log.read_record(phys) else {
                return false;
            };
            let record::Decoded::Message(v) = record::decode(slice.as_bytes(), false) else {
                return false;
            };
            let matches = v.topic == topic
                && (v.property(record::property::UNIQ_KEY) == Some(key)
                    || v.property(record::property::KEYS)
                        .is_some_and(|k| k.split(' ').any(|w| w == key)));
            if matches {
                out.push(slice);
            }
            matches
        });
        out
    }

    /// Store time and commit log offset of the last indexed message
    /// (QUERY_MESSAGE's `indexLastUpdateTimestamp` /
    /// `indexLastUpdatePhyoffset`); zeros without an index.
    pub fn index_last_update(&self) -> (i64, i64) {
        self.derived
            .index
            .as_ref()
            .map(|i| i.last_update())
            .unwrap_or((0, 0))
    }

    /// Forgets a topic: its consume queues are deleted from disk and its
    /// queue offsets restart at 0. Commit log records stay until retention.
    /// Waits (at most 2 s) for dispatch to pass what is already written;
    /// the files are then removed on the calling thread.
    pub async fn delete_topic(&self, topic: &str) -> Result<()> {
        // Let dispatch pass what is already written, so it does not recreate
        // the queues right after they are removed.
        let target = self.commit_log.max_offset();
        self.wait_dispatched(target, Duration::from_secs(2)).await;
        self.derived.queues.remove_topic(topic)?;
        self.commit_log.remove_topic(topic);
        Ok(())
    }

    /// Whether the background reput thread is following a fast-growing log
    /// (appenders then leave dispatch to it; see [`crate::dispatch`]).
    pub fn dispatch_is_following(&self) -> bool {
        self.reput.is_following()
    }

    /// Waits until every record below `offset` has been dispatched (is in
    /// its consume queue and the key index) or `within` passes; returns
    /// whether it was. Woken by dispatch, not polling. Needs a tokio
    /// runtime with time enabled.
    pub async fn wait_dispatched(&self, offset: u64, within: Duration) -> bool {
        self.dispatched_offset() >= offset || self.reput.wait_reached(offset, within).await
    }

    /// Commit log offset below which every record has been dispatched.
    pub fn dispatched_offset(&self) -> u64 {
        self.dispatcher
            .lock()
            .as_ref()
            .map(|d| d.reached())
            .unwrap_or_else(|| self.commit_log.max_offset())
    }

    /// Whether the append lock is held longer than `osPageCacheBusyTimeOutMills`.
    pub fn is_os_page_cache_busy(&self) -> bool {
        self.commit_log
            .is_busy(self.config.os_page_cache_busy_time_out_mills)
    }

    /// Admin TRIGGER_DELETE_FILES: the next 20 retention rounds delete
    /// expired files even outside the `deleteWhen` hours (the reserved time
    /// still applies).
    pub fn trigger_delete_files(&self) {
        self.retention.trigger();
    }

    /// Runs one retention round now on the calling thread (what the
    /// retention thread does every `cleanResourceInterval`).
    pub fn run_retention_round(&self) -> Result<RetentionRound> {
        self.retention.run_round()
    }

    /// Whether appends are refused because the disk is nearly full.
    pub fn is_disk_full(&self) -> bool {
        self.retention.is_disk_full()
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
        self.stop_background(true);
        if let Some(why) = self.group.failure() {
            // Leave the abort file: the next start must recover.
            return Err(StoreError::ReadOnly(why.to_string()));
        }
        // Captured before flushing: everything dispatched below it is in the
        // files flushed next. (A slave's log may end in a partial record,
        // never dispatched, so this is not always the max offset.)
        let dispatched = self.reput.reached();
        self.derived.queues.flush_all(0)?;
        if let Some(index) = &self.derived.index {
            index.flush()?;
        }
        let ts = self.commit_log.last_store_timestamp();
        let cp = Checkpoint {
            physic_msg_timestamp: ts,
            logics_msg_timestamp: ts,
            index_msg_timestamp: ts,
            dispatched_offset: Some(dispatched),
        };
        cp.store(&self.config.checkpoint_path())?;
        self.abort.remove()
    }

    /// Stops the background threads without a checkpoint, leaving the abort
    /// file: the on-disk state is as if the process died after its last
    /// flush. For crash tests and tools; the store is unusable afterwards.
    pub fn abandon(&self) {
        self.shut_down.store(true, Ordering::Release);
        self.stop_background(false);
    }

    /// Stops retention, the flusher (after its final flush), the allocator,
    /// the dispatcher and the checkpointer, in that order: each stage's
    /// input is final before it stops. The checkpointer writes a last
    /// checkpoint only with `final_checkpoint`.
    fn stop_background(&self, final_checkpoint: bool) {
        self.retention.stop();
        if let Some(mut f) = self.flusher.lock().take() {
            f.shutdown();
        }
        self.commit_log.shutdown();
        if let Some(mut d) = self.dispatcher.lock().take() {
            d.shutdown();
        }
        if let Some(mut c) = self.checkpointer.lock().take() {
            if final_checkpoint {
                c.shutdown();
            } else {
                c.stop_without_final_checkpoint();
            }
        }
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

/// What a put waits for after its append.
struct Waits {
    /// The group commit, up to this offset.
    flush: Option<u64>,
    /// A slave's acknowledgement of this offset (SYNC_MASTER).
    replica: Option<u64>,
}

/// Abnormal recovery's first file (store.md §11.7): the newest file whose
/// first record is older than the checkpoint's minimum timestamp − 3 s.
fn abnormal_start_file(log: &CommitLog, cp: &Checkpoint, config: &StoreConfig) -> usize {
    let mut min = cp.physic_msg_timestamp.min(cp.logics_msg_timestamp);
    if config.message_index_enable && config.message_index_safe {
        min = min.min(cp.index_msg_timestamp);
    }
    // Saturating: a garbage checkpoint near i64::MIN must not wrap around
    // to "every file is old enough".
    let min = min.saturating_sub(3000);
    (0..log.file_count())
        .rev()
        .find(|&i| {
            log.first_store_timestamp_of(i)
                .map(|ts| ts != 0 && ts <= min)
                .unwrap_or(false)
        })
        .unwrap_or(0)
}

/// Whether a record (or the end-of-file blank) starts at `offset`, which
/// must be below the recovered end: a file start, or a record there whose
/// PHYSICALOFFSET field names that very offset.
fn starts_record(log: &CommitLog, offset: u64) -> bool {
    if offset.is_multiple_of(log.file_size()) {
        return true;
    }
    let Some(rest) = log.slice_to_file_end(offset) else {
        return false;
    };
    match record::decode(rest.as_bytes(), false) {
        record::Decoded::Message(v) => v.physical_offset == offset as i64,
        record::Decoded::Blank(_) => true,
        _ => false,
    }
}

/// The next-queue-offset table for the append path, from the consume queues.
fn queue_offset_table(
    queues: &ConsumeQueueSet,
) -> rustc_hash::FxHashMap<String, crate::commit_log::QueueOffsets> {
    let mut table: rustc_hash::FxHashMap<String, crate::commit_log::QueueOffsets> =
        Default::default();
    for ((topic, queue_id), max) in queues.next_offset_table() {
        if queue_id >= 0 {
            table.entry(topic).or_default().insert(queue_id, max as i64);
        }
    }
    table
}

/// Flushes consume queues and the index every `flushIntervalConsumeQueue`
/// and then records in the checkpoint how far dispatch is durable.
struct Checkpointer {
    stop: Arc<AtomicBool>,
    final_checkpoint: Arc<AtomicBool>,
    handle: Option<std::thread::JoinHandle<()>>,
}

impl Checkpointer {
    fn start(
        path: std::path::PathBuf,
        interval: Duration,
        derived: Arc<Derived>,
        reached: Arc<crate::dispatch::Reput>,
        physic_ts: Arc<std::sync::atomic::AtomicI64>,
    ) -> Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let final_checkpoint = Arc::new(AtomicBool::new(true));
        let (s, fc) = (stop.clone(), final_checkpoint.clone());
        let handle = std::thread::Builder::new()
            .name("cq-flusher".into())
            .spawn(move || {
                crate::background::lower_this_thread(crate::background::Priority::Idle);
                let mut index_ts = 0i64;
                loop {
                    let stopping = s.load(Ordering::Acquire);
                    if !stopping {
                        std::thread::park_timeout(interval);
                    } else if !fc.load(Ordering::Acquire) {
                        return;
                    }
                    // Capture before flushing: all entries below it get flushed now.
                    let dispatched = reached.reached();
                    let logics_ts = derived.last_timestamp.load(Ordering::Acquire);
                    let mut ok = derived.queues.flush_all(0).is_ok();
                    if let Some(index) = &derived.index {
                        match index.flush() {
                            Ok(Some(ts)) => index_ts = ts,
                            Ok(None) => {}
                            Err(e) => {
                                tracing::error!("index flush: {e}");
                                ok = false;
                            }
                        }
                    }
                    if ok {
                        let cp = Checkpoint {
                            physic_msg_timestamp: physic_ts.load(Ordering::Acquire),
                            logics_msg_timestamp: logics_ts,
                            index_msg_timestamp: index_ts,
                            dispatched_offset: Some(dispatched),
                        };
                        if let Err(e) = cp.store(&path) {
                            tracing::error!("checkpoint: {e}");
                        }
                    }
                    if stopping {
                        return;
                    }
                }
            })
            .map_err(|e| StoreError::io("cq-flusher thread", e))?;
        Ok(Checkpointer {
            stop,
            final_checkpoint,
            handle: Some(handle),
        })
    }

    fn shutdown(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(h) = self.handle.take() {
            h.thread().unpark();
            let _ = h.join();
        }
    }

    fn stop_without_final_checkpoint(&mut self) {
        self.final_checkpoint.store(false, Ordering::Release);
        self.shutdown();
    }
}

/// How the commit log's files are warmed (`warmMapedFileEnable`), by how
/// appends reach them and how they are flushed.
fn warm_pages(config: &StoreConfig) -> Option<WarmPages> {
    if !config.warm_maped_file_enable {
        return None;
    }
    Some(
        match (config.effective_flush_mechanism(), config.flush_disk_type) {
            // Pages read in and locked, nothing dirtied. Zeros dirtied a whole
            // file ahead would be written back by the kernel (after 30 s, or
            // once dirty memory passes its background threshold): the disk
            // writes every file twice, and the write-back write-protects the
            // pages again, undoing the warm-up. Under ASYNC_FLUSH the
            // prefaulter keeps a 32 MiB window ahead of the writer writable
            // instead; WRITE_FDATASYNC appends with write(2) and never faults
            // on the mapping.
            (FlushMechanism::WriteFdatasync, _) | (_, FlushDiskType::AsyncFlush) => WarmPages::Read,
            // RocketMQ's way: zeros written through, so later syncs overwrite
            // written blocks.
            (_, FlushDiskType::SyncFlush) => WarmPages::Write {
                flush_pages: config.flush_least_pages_when_warm_maped_file,
            },
        },
    )
}

#[cfg(test)]
mod warm_tests {
    use super::*;

    fn with(disk: FlushDiskType, mechanism: FlushMechanism, warm: bool) -> Option<WarmPages> {
        warm_pages(&StoreConfig {
            flush_disk_type: disk,
            flush_mechanism: mechanism,
            warm_maped_file_enable: warm,
            ..StoreConfig::default()
        })
    }

    #[test]
    fn only_sync_flush_through_the_mapping_writes_zeros_ahead() {
        use FlushDiskType::*;
        use FlushMechanism::*;
        assert_eq!(with(AsyncFlush, Msync, false), None);
        assert_eq!(with(AsyncFlush, Msync, true), Some(WarmPages::Read));
        assert_eq!(with(AsyncFlush, Fdatasync, true), Some(WarmPages::Read));
        assert_eq!(with(SyncFlush, WriteFdatasync, true), Some(WarmPages::Read));
        assert!(matches!(
            with(SyncFlush, Msync, true),
            Some(WarmPages::Write { flush_pages }) if flush_pages > 0
        ));
    }
}

#[cfg(test)]
mod sync_timeout_tests {
    use super::*;
    use std::time::Instant;

    /// A SYNC_FLUSH put whose flush does not come within
    /// `syncFlushTimeout` is stored but reported `FlushDiskTimeout`, never
    /// `PutOk`, from async callers (counted in watchdog ticks) and blocking
    /// ones alike; once the disk moves again, puts succeed.
    #[test]
    fn a_put_whose_flush_stalls_past_the_timeout_reports_flush_disk_timeout() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = MessageStore::open(StoreConfig {
            store_path_root_dir: dir.path().to_path_buf(),
            mapped_file_size_commit_log: 1 << 20,
            flush_disk_type: FlushDiskType::SyncFlush,
            flush_mechanism: FlushMechanism::WriteFdatasync,
            sync_flush_timeout: 200,
            ..StoreConfig::default()
        })
        .expect("open");
        let msg = MessageToStore::new("T", 0, b"body", "");
        // The runtime's timer only bounds the test's own wait.
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .expect("runtime");
        let ok = rt.block_on(store.put_message_async(&msg)).expect("put");
        assert_eq!(ok.status, PutStatus::PutOk);
        {
            let _stalled = store.commit_log.hold_commits();
            let start = Instant::now();
            let late = rt
                .block_on(async {
                    tokio::time::timeout(Duration::from_secs(10), store.put_message_async(&msg))
                        .await
                })
                .expect("the put ends on its own")
                .expect("stored");
            let waited = start.elapsed();
            assert_eq!(late.status, PutStatus::FlushDiskTimeout);
            assert!(waited >= Duration::from_millis(200), "{waited:?}");
            assert!(waited < Duration::from_secs(10), "{waited:?}");
            let blocking = store.put_message(&msg).expect("stored");
            assert_eq!(blocking.status, PutStatus::FlushDiskTimeout);
        }
        let after = rt.block_on(store.put_message_async(&msg)).expect("put");
        assert_eq!(after.status, PutStatus::PutOk);
        assert_eq!(
            store.put_message(&msg).expect("put").status,
            PutStatus::PutOk
        );
        store.shutdown().expect("shutdown");
    }
}
