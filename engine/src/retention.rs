//! Retention: deleting old commit log files, and the consume-queue and index
//! files whose data went with them (store.md §11.8); and the disk guard that
//! refuses appends while the disk is nearly full.
//!
//! # The rules (RocketMQ's `CleanCommitLogService` / `CleanConsumeQueueService`)
//!
//! One thread runs a *round* every `cleanResourceInterval` ms (the first one
//! after [`StoreHooks::retention_first_delay`], 60 s like RocketMQ). A round
//! deletes commit log files when a trigger holds:
//! * **time**: the local hour is listed in `deleteWhen` (`"04"`, `"04;05"`);
//! * **space**: the commit log's or consume queues' filesystem is more than
//!   `diskMaxUsedSpaceRatio` % used (clamped to 10..95), or more than
//!   [`StoreHooks::clean_forcibly_ratio`] (85 %);
//! * **manual**: [`crate::MessageStore::trigger_delete_files`] (admin
//!   TRIGGER_DELETE_FILES) makes the next 20 rounds triggered.
//!
//! A file is *eligible* when its mtime + `fileReservedTime` hours ≤ now, or
//! regardless of age when `cleanFileForciblyEnable` and usage is above the
//! forcible ratio. Files go oldest first; a round stops at the first
//! ineligible file (the commit log never gets a hole), never deletes the last
//! (current) file, deletes at most [`MAX_FILES_PER_ROUND`] and sleeps
//! `deleteCommitLogFilesInterval` ms between files. When the commit log min
//! offset moved, each consume queue drops the files whose entries all point
//! below it and moves its min offset up (sleeping
//! `deleteConsumeQueueFilesInterval` after each queue that lost files), and
//! the index drops files whose endPhyOffset is below it.
//!
//! # Readers of deleted files
//!
//! Deleting unlinks the file; its mapping lives as long as an `Arc` to it,
//! and every [`crate::commit_log::MappedSlice`] holds one. A pull that is
//! sending a deleted file's bytes keeps reading them; the memory goes back
//! with the last slice. This replaces RocketMQ's reference counting, so
//! `destroyMapedFileIntervalForcibly` and `redeleteHangedFileInterval` have
//! nothing to do here.
//!
//! # Disk full
//!
//! Every interval (from start-up, not only after the first delay) and after
//! each round the usage is probed; above [`StoreHooks::disk_full_ratio`]
//! (90 %) appends fail with [`StoreError::DiskFull`] (the broker answers
//! SERVICE_NOT_AVAILABLE). While the flag is set each refused append probes
//! again, so appends are accepted as soon as space is freed.
//!
//! # Tests
//!
//! Time and disk usage come from [`StoreHooks`] passed to
//! [`crate::MessageStore::open_with`]: a [`ManualClock`] and any
//! `Fn(&Path) -> Option<f64>` make every rule testable without waiting for
//! 4 a.m. or filling a disk. [`crate::MessageStore::run_retention_round`]
//! runs one round synchronously.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

use crate::commit_log::CommitLog;
use crate::config::StoreConfig;
use crate::dispatch::Derived;
use crate::error::{Result, StoreError};
use crate::mapped_file::MappedFile;

/// Most commit log files one round deletes (RocketMQ's DELETE_FILES_BATCH_MAX).
pub const MAX_FILES_PER_ROUND: usize = 10;
/// Rounds made triggered by one manual trigger (admin TRIGGER_DELETE_FILES).
pub const MANUAL_DELETE_ROUNDS: u32 = 20;

/// Wall-clock time for retention decisions.
pub trait Clock: Send + Sync {
    /// Milliseconds since the Unix epoch.
    fn now_ms(&self) -> i64;
    /// The local hour (0..=23) now, for `deleteWhen`.
    fn local_hour(&self) -> u32;
}

/// The system clock and the local time zone (`localtime_r`).
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> i64 {
        crate::commit_log::now_ms()
    }
    fn local_hour(&self) -> u32 {
        let t = (self.now_ms() / 1000) as libc::time_t;
        // SAFETY: `localtime_r` writes only into `tm`, which we own.
        let mut tm: libc::tm = unsafe { std::mem::zeroed() };
        let ok = unsafe { !libc::localtime_r(&t, &mut tm).is_null() };
        if ok {
            tm.tm_hour as u32
        } else {
            ((t / 3600) % 24) as u32
        }
    }
}

/// A clock the test sets: `now_ms` and the local hour are independent.
#[derive(Debug)]
pub struct ManualClock {
    now_ms: AtomicI64,
    hour: AtomicU32,
}

impl ManualClock {
    pub fn new(now_ms: i64, local_hour: u32) -> Arc<Self> {
        Arc::new(ManualClock {
            now_ms: AtomicI64::new(now_ms),
            hour: AtomicU32::new(local_hour),
        })
    }
    pub fn set_now_ms(&self, ms: i64) {
        self.now_ms.store(ms, Ordering::Release);
    }
    pub fn set_local_hour(&self, hour: u32) {
        self.hour.store(hour, Ordering::Release);
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> i64 {
        self.now_ms.load(Ordering::Acquire)
    }
    fn local_hour(&self) -> u32 {
        self.hour.load(Ordering::Acquire)
    }
}

/// How full the filesystem holding a path is.
pub trait DiskUsage: Send + Sync {
    /// Used fraction (0.0..=1.0) of the filesystem holding `path`; `None`
    /// if it cannot be found out (then no space rule applies).
    fn used_ratio(&self, path: &Path) -> Option<f64>;
}

/// `statvfs(2)`: (blocks − free blocks) / blocks, as Java's
/// `getTotalSpace`/`getFreeSpace` that RocketMQ uses.
#[derive(Debug, Default, Clone, Copy)]
pub struct StatvfsUsage;

impl DiskUsage for StatvfsUsage {
    fn used_ratio(&self, path: &Path) -> Option<f64> {
        use std::os::unix::ffi::OsStrExt;
        let c = std::ffi::CString::new(path.as_os_str().as_bytes()).ok()?;
        // SAFETY: valid C string and an out-pointer we own.
        let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
        if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 || st.f_blocks == 0 {
            return None;
        }
        let total = st.f_blocks as f64;
        Some((total - st.f_bfree as f64) / total)
    }
}

impl<F: Fn(&Path) -> Option<f64> + Send + Sync> DiskUsage for F {
    fn used_ratio(&self, path: &Path) -> Option<f64> {
        self(path)
    }
}

/// What the store takes from its surroundings, replaceable for tests.
/// `StoreHooks::default()` is the real thing.
#[derive(Clone)]
pub struct StoreHooks {
    pub clock: Arc<dyn Clock>,
    pub disk_usage: Arc<dyn DiskUsage>,
    /// Delay before the first deletion round (RocketMQ: 60 s). The disk
    /// guard runs from start-up regardless.
    pub retention_first_delay: Duration,
    /// Usage above which rounds are triggered and, with
    /// `cleanFileForciblyEnable`, files are deleted regardless of age
    /// (RocketMQ's `-Drocketmq.broker.diskSpaceCleanForciblyRatio`, 0.85).
    pub clean_forcibly_ratio: f64,
    /// Usage above which appends are refused with [`StoreError::DiskFull`]
    /// (RocketMQ's `-Drocketmq.broker.diskSpaceWarningLevelRatio`, 0.90).
    pub disk_full_ratio: f64,
}

impl Default for StoreHooks {
    fn default() -> Self {
        StoreHooks {
            clock: Arc::new(SystemClock),
            disk_usage: Arc::new(StatvfsUsage),
            retention_first_delay: Duration::from_secs(60),
            clean_forcibly_ratio: 0.85,
            disk_full_ratio: 0.90,
        }
    }
}

impl std::fmt::Debug for StoreHooks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreHooks")
            .field("retention_first_delay", &self.retention_first_delay)
            .field("clean_forcibly_ratio", &self.clean_forcibly_ratio)
            .field("disk_full_ratio", &self.disk_full_ratio)
            .finish_non_exhaustive()
    }
}

/// What one round decided and did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RetentionRound {
    /// The local hour is in `deleteWhen`.
    pub time_trigger: bool,
    /// Usage above `diskMaxUsedSpaceRatio` or the forcible ratio.
    pub space_trigger: bool,
    /// A manual trigger was pending.
    pub manual_trigger: bool,
    /// Files were eligible regardless of age.
    pub forced: bool,
    /// Highest usage of the commit log and consume queue filesystems.
    pub used_ratio: Option<f64>,
    pub deleted_commit_log_files: usize,
    pub deleted_consume_queue_files: usize,
    pub deleted_index_files: usize,
}

/// The settings a round needs, from [`StoreConfig`].
struct Settings {
    delete_hours: Vec<u32>,
    reserved_ms: i64,
    /// `diskMaxUsedSpaceRatio` clamped to 10..95, as a fraction.
    max_used_ratio: f64,
    interval: Duration,
    commit_log_file_interval: Duration,
    consume_queue_file_interval: Duration,
    clean_forcibly: bool,
    watched: Vec<PathBuf>,
}

impl Settings {
    fn from_config(c: &StoreConfig) -> Self {
        Settings {
            delete_hours: c
                .delete_when
                .split(';')
                .filter_map(|h| h.trim().parse().ok())
                .collect(),
            // Beyond i64 hours is "forever", never a negative (all expired) time.
            reserved_ms: i64::try_from(c.file_reserved_time)
                .unwrap_or(i64::MAX)
                .saturating_mul(3_600_000),
            max_used_ratio: c.disk_max_used_space_ratio.clamp(10, 95) as f64 / 100.0,
            interval: Duration::from_millis(c.clean_resource_interval.max(1)),
            commit_log_file_interval: Duration::from_millis(c.delete_commit_log_files_interval),
            consume_queue_file_interval: Duration::from_millis(
                c.delete_consume_queue_files_interval,
            ),
            clean_forcibly: c.clean_file_forcibly_enable,
            watched: vec![c.commit_log_dir(), c.consume_queue_dir()],
        }
    }
}

struct Shared {
    log: Arc<CommitLog>,
    derived: Arc<Derived>,
    settings: Settings,
    hooks: StoreHooks,
    disk_full: AtomicBool,
    manual_rounds: AtomicU32,
    /// Commit log min offset the derived files were last cleaned for.
    cleaned_for: AtomicU64,
    /// Serialises rounds (background and manual).
    round: Mutex<()>,
    stopped: Mutex<bool>,
    wake: Condvar,
}

/// The running retention service.
pub struct Retention {
    shared: Arc<Shared>,
    handle: Mutex<Option<JoinHandle<()>>>,
}

impl Retention {
    /// Probes the disk once and starts the thread.
    pub(crate) fn start(
        log: Arc<CommitLog>,
        derived: Arc<Derived>,
        config: &StoreConfig,
        hooks: StoreHooks,
    ) -> Result<Self> {
        let shared = Arc::new(Shared {
            // 0: the first round also cleans what an interrupted earlier run left.
            cleaned_for: AtomicU64::new(0),
            log,
            derived,
            settings: Settings::from_config(config),
            hooks,
            disk_full: AtomicBool::new(false),
            manual_rounds: AtomicU32::new(0),
            round: Mutex::new(()),
            stopped: Mutex::new(false),
            wake: Condvar::new(),
        });
        shared.update_disk_full(shared.used_ratio());
        let s = shared.clone();
        let handle = std::thread::Builder::new()
            .name("retention".into())
            .spawn(move || {
                crate::background::lower_this_thread(crate::background::Priority::Idle);
                s.run()
            })
            .map_err(|e| StoreError::io("retention thread", e))?;
        Ok(Retention {
            shared,
            handle: Mutex::new(Some(handle)),
        })
    }

    /// `Err(DiskFull)` while the disk is too full for appends. When the flag
    /// is set the disk is probed again, so freed space is noticed at once.
    pub(crate) fn check_disk(&self) -> Result<()> {
        if !self.shared.disk_full.load(Ordering::Acquire) {
            return Ok(());
        }
        let used = self.shared.used_ratio();
        if self.shared.update_disk_full(used) {
            return Err(StoreError::DiskFull(format!(
                "disk {:.1}% used, above {:.1}%; appends resume once retention frees space",
                used.unwrap_or(1.0) * 100.0,
                self.shared.hooks.disk_full_ratio * 100.0
            )));
        }
        Ok(())
    }

    pub fn is_disk_full(&self) -> bool {
        self.shared.disk_full.load(Ordering::Acquire)
    }

    /// Makes the next [`MANUAL_DELETE_ROUNDS`] rounds triggered.
    pub fn trigger(&self) {
        self.shared
            .manual_rounds
            .store(MANUAL_DELETE_ROUNDS, Ordering::Release);
    }

    /// One round now, on the calling thread.
    pub fn run_round(&self) -> Result<RetentionRound> {
        self.shared.round()
    }

    /// Stops the thread, interrupting its sleeps. Idempotent.
    pub fn stop(&self) {
        *self.shared.stopped.lock() = true;
        self.shared.wake.notify_all();
        if let Some(h) = self.handle.lock().take() {
            let _ = h.join();
        }
    }
}

impl Drop for Retention {
    fn drop(&mut self) {
        self.stop();
    }
}

impl Shared {
    fn run(&self) {
        let started = Instant::now();
        while self.sleep(self.settings.interval) {
            if started.elapsed() < self.hooks.retention_first_delay {
                self.update_disk_full(self.used_ratio());
                continue;
            }
            if let Err(e) = self.round() {
                tracing::error!("retention round: {e}");
            }
        }
    }

    /// Sleeps unless stopped; false once stopped.
    fn sleep(&self, d: Duration) -> bool {
        let deadline = Instant::now() + d;
        let mut stopped = self.stopped.lock();
        while !*stopped {
            if self.wake.wait_until(&mut stopped, deadline).timed_out() {
                return !*stopped;
            }
        }
        false
    }

    fn is_stopped(&self) -> bool {
        *self.stopped.lock()
    }

    fn used_ratio(&self) -> Option<f64> {
        self.settings
            .watched
            .iter()
            .filter_map(|p| self.hooks.disk_usage.used_ratio(existing_ancestor(p)))
            .reduce(f64::max)
    }

    /// Sets or clears the disk-full flag; returns it.
    fn update_disk_full(&self, used: Option<f64>) -> bool {
        let full = used.is_some_and(|u| u > self.hooks.disk_full_ratio);
        let was = self.disk_full.swap(full, Ordering::AcqRel);
        if full != was {
            if full {
                tracing::error!(
                    "disk {:.1}% used: refusing appends until space is freed",
                    used.unwrap_or(1.0) * 100.0
                );
            } else {
                tracing::info!("disk space available again: accepting appends");
            }
        }
        full
    }

    fn round(&self) -> Result<RetentionRound> {
        let _one = self.round.lock();
        let used = self.used_ratio();
        self.update_disk_full(used);
        let hooks = &self.hooks;
        let s = &self.settings;
        let above_forcible = used.is_some_and(|u| u > hooks.clean_forcibly_ratio);
        let mut r = RetentionRound {
            time_trigger: s.delete_hours.contains(&hooks.clock.local_hour()),
            space_trigger: above_forcible || used.is_some_and(|u| u > s.max_used_ratio),
            manual_trigger: self
                .manual_rounds
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1))
                .is_ok(),
            forced: s.clean_forcibly && above_forcible,
            used_ratio: used,
            ..RetentionRound::default()
        };
        if r.time_trigger || r.space_trigger || r.manual_trigger {
            r.deleted_commit_log_files = self.delete_commit_log_files(r.forced);
        }
        let min = self.log.min_offset();
        if min > self.cleaned_for.load(Ordering::Acquire) {
            r.deleted_consume_queue_files = self.delete_consume_queue_files(min)?;
            if let Some(index) = &self.derived.index {
                r.deleted_index_files = index.delete_expired(min)?;
            }
            self.cleaned_for.store(min, Ordering::Release);
        }
        if r.deleted_commit_log_files > 0 {
            self.update_disk_full(self.used_ratio());
            tracing::info!(
                "retention: deleted {} commit log, {} consume queue, {} index files; commit log now starts at {min}",
                r.deleted_commit_log_files,
                r.deleted_consume_queue_files,
                r.deleted_index_files
            );
        }
        Ok(r)
    }

    /// Oldest first, up to the first ineligible file; never the last one.
    fn delete_commit_log_files(&self, forced: bool) -> usize {
        let now = self.hooks.clock.now_ms();
        let reserved = self.settings.reserved_ms;
        let eligible =
            |f: &MappedFile| forced || modified_ms(f.path()).saturating_add(reserved) <= now;
        let mut deleted = 0;
        while deleted < MAX_FILES_PER_ROUND {
            if deleted > 0 && !self.sleep(self.settings.commit_log_file_interval) {
                break;
            }
            match self.log.delete_first_file_if(|f| !eligible(f)) {
                Ok(Some(f)) => {
                    tracing::info!(
                        "retention: deleted commit log file {}{}",
                        f.path().display(),
                        if forced {
                            " (disk space, regardless of age)"
                        } else {
                            ""
                        }
                    );
                    deleted += 1;
                }
                Ok(None) => break,
                Err(e) => {
                    tracing::error!("retention: deleting the first commit log file: {e}");
                    break;
                }
            }
        }
        deleted
    }

    /// Each queue drops files whose data is gone and moves its min offset.
    fn delete_consume_queue_files(&self, commit_log_min: u64) -> Result<usize> {
        let mut total = 0;
        for q in self.derived.queues.queues() {
            let n = q.delete_expired(commit_log_min)?;
            total += n;
            if n > 0
                && !self.settings.consume_queue_file_interval.is_zero()
                && !self.sleep(self.settings.consume_queue_file_interval)
            {
                // Stopping: the rest is done by the next start's min-offset correction.
                break;
            }
        }
        if !self.is_stopped() {
            self.derived.queues.correct_min_offsets(commit_log_min);
        }
        Ok(total)
    }
}

/// mtime in ms; a file whose mtime cannot be read counts as brand new.
fn modified_ms(path: &Path) -> i64 {
    std::fs::metadata(path)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map(|d| d.as_millis() as i64)
        .unwrap_or(i64::MAX)
}

/// `path`, or its nearest existing ancestor (the consume queue directory may
/// not exist yet).
fn existing_ancestor(path: &Path) -> &Path {
    let mut p = path;
    while !p.exists() {
        match p.parent() {
            Some(parent) if !parent.as_os_str().is_empty() => p = parent,
            _ => break,
        }
    }
    p
}
