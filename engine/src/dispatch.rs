//! Reput: turns new commit log records into consume-queue entries and index
//! keys (store.md §11.5), and tells the frontend about each new message.
//!
//! Who dispatches depends on the load. At low rates the appender dispatches
//! its own record right after publishing it ([`Reput::after_append`]), so a
//! waiting long-poll pull hears of a message without a thread hand-off. When
//! the log grows fast, the background thread starts *following* it (a short
//! nap, then everything published meanwhile) and appenders leave dispatch to
//! it: on a multi-core machine the decode and consume-queue writes then run
//! beside the appends instead of after each one. Dispatch is idempotent
//! (consume queues ignore entries they have, the index skips offsets below
//! its end), so recovery may replay any range safely.

use std::sync::atomic::{fence, AtomicBool, AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use parking_lot::RwLock;

use crate::commit_log::CommitLog;
use crate::consume_queue::ConsumeQueueSet;
use crate::error::{Result, StoreError};
use crate::index::IndexService;
use crate::record::{self, property, sysflag, Decoded};
use crate::schedule::{DelayLevels, SCHEDULE_TOPIC};

/// A message that just became visible in its consume queue.
#[derive(Debug, Clone)]
pub struct Arrival<'a> {
    pub topic: &'a str,
    pub queue_id: i32,
    /// The message's queue offset; the queue's max offset is now this + 1.
    pub queue_offset: i64,
    pub tags_code: i64,
    pub store_timestamp: i64,
    pub properties: &'a str,
}

/// Called on the dispatcher thread for every dispatched message; must be quick.
pub type ArrivalListener = Arc<dyn Fn(&Arrival<'_>) + Send + Sync>;

/// The derived structures dispatch writes into.
pub struct Derived {
    pub queues: Arc<ConsumeQueueSet>,
    pub index: Option<Arc<IndexService>>,
    pub listener: RwLock<Option<ArrivalListener>>,
    /// Store timestamp of the last dispatched record (checkpoint logicsMsgTimestamp).
    pub last_timestamp: AtomicI64,
    /// Scheduled messages' tag code is their due time.
    pub delay_levels: DelayLevels,
}

impl Derived {
    /// Dispatches every record in `[from, to)`; returns the offset reached
    /// (`to` unless an unreadable record stopped it).
    pub fn dispatch_range(&self, log: &CommitLog, from: u64, to: u64) -> Result<u64> {
        let file_size = log.file_size();
        let mut pos = from.max(log.min_offset());
        while pos < to {
            let file_end = (pos / file_size + 1) * file_size;
            let Some(slice) = log.slice_to_file_end(pos) else {
                break;
            };
            let data = slice.as_bytes();
            let more_may_come = pos + (data.len() as u64) < file_end;
            let mut at = 0usize;
            let mut next = None;
            while at < data.len() {
                if more_may_come && is_partial(&data[at..]) {
                    // A slave's log can end inside a record (the master's
                    // transfer batches ignore record boundaries): wait for
                    // the rest.
                    return Ok(pos + at as u64);
                }
                match record::decode(&data[at..], false) {
                    Decoded::Message(v) => {
                        self.dispatch_one(&v)?;
                        at += v.total_size();
                    }
                    // The end-of-file blank: continue at the next file.
                    Decoded::Blank(_) => {
                        next = Some(file_end);
                        break;
                    }
                    Decoded::End => {
                        return Ok(pos + at as u64);
                    }
                    Decoded::Invalid(why) => {
                        return Err(StoreError::corruption(
                            log.dir(),
                            format!("dispatch: unreadable record at {}: {why}", pos + at as u64),
                        ));
                    }
                }
            }
            pos = next.unwrap_or(pos + at as u64);
        }
        Ok(pos)
    }

    fn dispatch_one(&self, v: &record::RecordView<'_>) -> Result<()> {
        let phys = v.physical_offset;
        if v.is_consumable() {
            let tags_code = if v.topic == SCHEDULE_TOPIC {
                self.delay_levels.due_time(v.store_timestamp, v.queue_id)
            } else {
                v.tags_code()
            };
            let q = self.queues.get_or_create(v.topic, v.queue_id);
            match q.append_entry(
                v.queue_offset as u64,
                phys,
                v.total_size() as i32,
                tags_code,
            ) {
                Ok(_) => {}
                // A record whose queue offset cannot be placed: skip it
                // rather than stall every queue behind it.
                Err(e @ StoreError::InvalidArgument(_)) => tracing::error!(
                    "consume queue {}/{}: {e}; record at {phys} skipped",
                    v.topic,
                    v.queue_id
                ),
                // Anything else (ENOSPC creating a queue file): stop here and
                // try this record again later, as RocketMQ retries; skipping
                // would lose the entry of an acknowledged message for good.
                Err(e) => return Err(e),
            }
            if let Some(l) = self.listener.read().as_ref() {
                l(&Arrival {
                    topic: v.topic,
                    queue_id: v.queue_id,
                    queue_offset: v.queue_offset,
                    tags_code,
                    store_timestamp: v.store_timestamp,
                    properties: v.properties,
                });
            }
        }
        if let Some(index) = &self.index {
            if v.transaction_type() != sysflag::TRANSACTION_ROLLBACK {
                index.put_message(
                    v.topic,
                    v.property(property::UNIQ_KEY),
                    v.property(property::KEYS),
                    phys as u64,
                    v.store_timestamp,
                )?;
            }
        }
        self.last_timestamp
            .store(v.store_timestamp, Ordering::Release);
        Ok(())
    }
}

/// Whether `rest` (the readable bytes from a record start to the current
/// end of the log) holds only the beginning of a record.
fn is_partial(rest: &[u8]) -> bool {
    if rest.len() < 8 {
        return rest.iter().any(|b| *b != 0);
    }
    let total = i32::from_be_bytes([rest[0], rest[1], rest[2], rest[3]]);
    let magic = i32::from_be_bytes([rest[4], rest[5], rest[6], rest[7]]);
    (magic == record::MESSAGE_MAGIC || magic == record::BLANK_MAGIC)
        && total > 0
        && total as usize > rest.len()
}

/// Reput progress, shared by the appenders and the background thread.
///
/// An appender dispatches what it just wrote itself, right after publishing
/// it (`catch_up`), so a new message reaches its consume queue and any held
/// long-poll pull without a thread hand-off (tens of microseconds on this
/// machine). Whoever holds `busy` dispatches everything published; a writer
/// that finds it taken leaves its record to the holder, who re-checks the
/// end after releasing. The background thread is the safety net (recovery
/// replays, a failed round).
pub struct Reput {
    log: Arc<CommitLog>,
    derived: Arc<Derived>,
    reached: AtomicU64,
    busy: parking_lot::Mutex<()>,
    last_error_ms: AtomicI64,
    /// The last failed round's error, until a round succeeds; the flag is
    /// what every append reads.
    stalled: parking_lot::Mutex<Option<String>>,
    is_stalled: AtomicBool,
    /// Set while the background thread follows the log (see the module doc).
    following: AtomicBool,
    /// Wakes [`Reput::wait_reached`] callers. Notified only while someone
    /// waits (`waiters`), so a dispatch round otherwise pays one load.
    progress: tokio::sync::Notify,
    waiters: AtomicUsize,
}

/// The background thread's poll period when idle.
const IDLE_POLL: Duration = Duration::from_millis(5);
/// Its nap between rounds while following: the longest a new record waits
/// for dispatch under load.
const FOLLOW_NAP: Duration = Duration::from_micros(200);
/// Log growth per idle poll above which the thread starts following:
/// 512 KiB per 5 ms, about 100 MB/s (100,000 1 KiB messages a second).
const FOLLOW_GROWTH: u64 = 512 * 1024;

impl Reput {
    pub fn new(log: Arc<CommitLog>, derived: Arc<Derived>, from: u64) -> Self {
        Reput {
            log,
            derived,
            reached: AtomicU64::new(from),
            busy: parking_lot::Mutex::new(()),
            last_error_ms: AtomicI64::new(0),
            stalled: parking_lot::Mutex::new(None),
            is_stalled: AtomicBool::new(false),
            following: AtomicBool::new(false),
            progress: tokio::sync::Notify::new(),
            waiters: AtomicUsize::new(0),
        }
    }

    /// Moves `reached` to `p` and wakes whoever waits for it. SeqCst on both
    /// sides (here: store, then load `waiters`; in `wait_reached`: count
    /// up, then load `reached`) so a waiter either sees `p` or is woken.
    fn advance(&self, p: u64) {
        self.reached.store(p, Ordering::SeqCst);
        if self.waiters.load(Ordering::SeqCst) > 0 {
            self.progress.notify_waiters();
        }
    }

    /// Waits until everything below `offset` is dispatched or `within`
    /// passes; returns whether it was. Needs a tokio runtime with time.
    pub async fn wait_reached(&self, offset: u64, within: Duration) -> bool {
        struct Waiting<'a>(&'a AtomicUsize);
        impl Drop for Waiting<'_> {
            fn drop(&mut self) {
                self.0.fetch_sub(1, Ordering::SeqCst);
            }
        }
        let deadline = tokio::time::Instant::now() + within;
        self.waiters.fetch_add(1, Ordering::SeqCst);
        let _waiting = Waiting(&self.waiters);
        loop {
            let notified = self.progress.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.reached.load(Ordering::SeqCst) >= offset {
                return true;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return self.reached() >= offset;
            }
        }
    }

    /// Called by an appender after publishing its records: dispatches them
    /// now, unless the background thread is following the log (it then
    /// dispatches them within its 200 µs nap).
    pub fn after_append(&self) {
        // Pairs with the fence in `stop_following`: either this appender
        // sees `following` cleared, or the thread sees the new bytes.
        fence(Ordering::SeqCst);
        if !self.following.load(Ordering::Relaxed) {
            self.catch_up();
        }
    }

    /// Whether the background thread is following the log.
    pub fn is_following(&self) -> bool {
        self.following.load(Ordering::Relaxed)
    }

    fn start_following(&self) {
        self.following.store(true, Ordering::Relaxed);
    }

    /// Hands dispatch back to the appenders, then dispatches anything an
    /// appender published while it still saw `following` set.
    fn stop_following(&self) -> bool {
        self.following.store(false, Ordering::Relaxed);
        fence(Ordering::SeqCst);
        self.catch_up()
    }

    /// Commit log offset below which everything has been dispatched.
    pub fn reached(&self) -> u64 {
        self.reached.load(Ordering::Acquire)
    }

    /// Why dispatch is failing, while it is (cleared by the next round
    /// that succeeds; the reput thread retries every 100 ms).
    pub fn stalled(&self) -> Option<String> {
        if !self.is_stalled.load(Ordering::Acquire) {
            return None;
        }
        self.stalled.lock().clone()
    }

    /// Dispatches everything published so far, unless another thread is
    /// already doing so (it will see this thread's records too).
    /// Returns false if a round failed.
    pub fn catch_up(&self) -> bool {
        loop {
            let Some(guard) = self.busy.try_lock() else {
                return true;
            };
            let pos = self.reached();
            let end = self.log.max_offset();
            if pos < end {
                match self.derived.dispatch_range(&self.log, pos, end) {
                    Ok(p) => {
                        self.advance(p);
                        // Read first: a swap on every round would pull the
                        // flag's line away from the appenders that read it.
                        if self.is_stalled.load(Ordering::Relaxed)
                            && self.is_stalled.swap(false, Ordering::AcqRel)
                        {
                            self.stalled.lock().take();
                            tracing::info!("dispatch resumed at {pos}");
                        }
                    }
                    Err(e) => {
                        let now = crate::commit_log::now_ms();
                        if now - self.last_error_ms.swap(now, Ordering::Relaxed) > 5000 {
                            tracing::error!("dispatch stopped at {pos}: {e}");
                        }
                        *self.stalled.lock() = Some(e.to_string());
                        self.is_stalled.store(true, Ordering::Release);
                        return false;
                    }
                }
            }
            drop(guard);
            // Go again only for bytes published during this round (a
            // partial record at the end stays until more bytes arrive).
            if self.log.max_offset() <= end {
                return true;
            }
        }
    }
}

impl Reput {
    /// Shutdown (appends have stopped): waits for a dispatch in progress on
    /// another thread, then dispatches everything still published. A
    /// slave's partial last record stays undispatched.
    fn finish(&self) {
        let _busy = self.busy.lock();
        let (pos, end) = (self.reached(), self.log.max_offset());
        if pos < end {
            match self.derived.dispatch_range(&self.log, pos, end) {
                Ok(p) => self.advance(p),
                Err(e) => tracing::error!("dispatch stopped at {pos}: {e}"),
            }
        }
    }
}

/// The background reput thread (safety net behind [`Reput::catch_up`]).
pub struct Dispatcher {
    reput: Arc<Reput>,
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<()>>,
}

impl Dispatcher {
    pub fn start(log: Arc<CommitLog>, derived: Arc<Derived>, from: u64) -> Result<Self> {
        let reput = Arc::new(Reput::new(log, derived, from));
        let stop = Arc::new(AtomicBool::new(false));
        let (r, s) = (reput.clone(), stop.clone());
        let handle = std::thread::Builder::new()
            .name("reput".into())
            .spawn(move || {
                // Its 200 µs naps while following must not preempt the
                // appender they serve.
                crate::background::batch_this_thread();
                // Log end at the last idle poll, to measure growth.
                let mut seen = r.log.max_offset();
                loop {
                    let before = r.reached();
                    let mut ok = r.catch_up();
                    if s.load(Ordering::Acquire) {
                        r.finish();
                        return;
                    }
                    let nap = if r.is_following() {
                        if r.reached() == before {
                            // Nothing new for a whole nap: the burst is over.
                            ok &= r.stop_following();
                            seen = r.log.max_offset();
                            IDLE_POLL
                        } else {
                            FOLLOW_NAP
                        }
                    } else {
                        let end = r.log.max_offset();
                        let grown = end.saturating_sub(seen);
                        seen = end;
                        if ok && grown >= FOLLOW_GROWTH {
                            r.start_following();
                            FOLLOW_NAP
                        } else {
                            IDLE_POLL
                        }
                    };
                    std::thread::park_timeout(if ok { nap } else { Duration::from_millis(100) });
                }
            })
            .map_err(|e| StoreError::io("reput thread", e))?;
        Ok(Dispatcher {
            reput,
            stop,
            handle: Some(handle),
        })
    }

    /// The shared progress, for appenders to call [`Reput::catch_up`].
    pub fn reput(&self) -> Arc<Reput> {
        self.reput.clone()
    }

    /// Commit log offset below which everything has been dispatched.
    pub fn reached(&self) -> u64 {
        self.reput.reached()
    }

    /// Stops after dispatching everything already published.
    pub fn shutdown(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(h) = self.handle.take() {
            h.thread().unpark();
            let _ = h.join();
        }
    }
}

impl Drop for Dispatcher {
    fn drop(&mut self) {
        self.shutdown();
    }
}
