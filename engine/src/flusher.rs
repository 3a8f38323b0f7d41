//! The commit log flusher: one thread that makes appended bytes durable.
//!
//! SYNC_FLUSH: the thread waits until a writer requests an offset, gives the
//! group a moment to fill while that pays ([`GatherPolicy`]), then flushes
//! everything written so far, so one flush serves every writer that arrived
//! meanwhile (see [`crate::group_commit`]). Right after a flush that served
//! writers it polls for them (they come back within tens of microseconds);
//! otherwise it parks for up to 10 ms.
//! ASYNC_FLUSH: RocketMQ's FlushRealTimeService — every
//! `flushIntervalCommitLog` ms flush if at least `flushCommitLogLeastPages`
//! dirty pages accumulated, and unconditionally every
//! `flushCommitLogThoroughInterval` ms.
//!
//! The mechanism is msync of the mapping, fdatasync of the file, or an
//! io_uring `fsync(DATASYNC)` submission. A failed flush is final: the store
//! turns read-only and no later append is acknowledged.

use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::commit_log::CommitLog;
use crate::config::{FlushDiskType, FlushMechanism, StoreConfig};
use crate::error::{Result, StoreError};
use crate::group_commit::GroupCommit;
use crate::mapped_file::{MappedFile, OS_PAGE_SIZE};

/// Flush timing, from the store config.
#[derive(Debug, Clone)]
pub struct FlushPolicy {
    pub disk_type: FlushDiskType,
    pub interval: Duration,
    pub timed: bool,
    pub least_pages: u64,
    pub thorough_interval: Duration,
    /// `syncFlushTimeout`: how long a SYNC_FLUSH writer waits for its flush.
    pub sync_timeout: Duration,
}

impl FlushPolicy {
    pub fn from_config(c: &StoreConfig) -> Self {
        FlushPolicy {
            disk_type: c.flush_disk_type,
            interval: Duration::from_millis(c.flush_interval_commit_log.max(1)),
            timed: c.flush_commit_log_timed,
            least_pages: c.flush_commit_log_least_pages,
            thorough_interval: Duration::from_millis(c.flush_commit_log_thorough_interval),
            sync_timeout: Duration::from_millis(c.sync_flush_timeout),
        }
    }

    /// How often the SYNC_FLUSH watchdog wakes waiters to check their
    /// deadlines: a tenth of the timeout, within 1..=100 ms.
    pub fn watchdog_tick(&self) -> Duration {
        (self.sync_timeout / 10).clamp(Duration::from_millis(1), Duration::from_millis(100))
    }
}

/// Performs one flush of a file range with the configured mechanism.
pub struct FlushDevice {
    mechanism: FlushMechanism,
    ring: Option<io_uring::IoUring>,
}

impl FlushDevice {
    pub fn new(mechanism: FlushMechanism) -> Result<Self> {
        let ring = match mechanism {
            FlushMechanism::IoUring => {
                Some(io_uring::IoUring::new(8).map_err(|e| StoreError::io("io_uring setup", e))?)
            }
            _ => None,
        };
        Ok(FlushDevice { mechanism, ring })
    }

    /// Makes `[from, to)` of `file` durable.
    pub fn flush(&mut self, file: &MappedFile, from: u64, to: u64) -> Result<()> {
        match self.mechanism {
            // AUTO is resolved when the store opens; msync is its safe reading.
            FlushMechanism::Msync | FlushMechanism::Auto => file.msync(from, to),
            FlushMechanism::Fdatasync | FlushMechanism::WriteFdatasync => file.fdatasync(),
            FlushMechanism::IoUring => {
                let ring = self.ring.as_mut().ok_or(StoreError::ShutDown)?;
                let op = io_uring::opcode::Fsync::new(io_uring::types::Fd(file.raw_fd()))
                    .flags(io_uring::types::FsyncFlags::DATASYNC)
                    .build()
                    .user_data(1);
                // SAFETY: the fd outlives the submission (we wait for it below).
                unsafe {
                    ring.submission().push(&op).map_err(|_| {
                        StoreError::io(file.path(), std::io::Error::other("io_uring queue full"))
                    })?;
                }
                ring.submit_and_wait(1)
                    .map_err(|e| StoreError::io(file.path(), e))?;
                let cqe = ring.completion().next().ok_or_else(|| {
                    StoreError::io(file.path(), std::io::Error::other("no io_uring completion"))
                })?;
                if cqe.result() < 0 {
                    return Err(StoreError::io(
                        file.path(),
                        std::io::Error::from_raw_os_error(-cqe.result()),
                    ));
                }
                Ok(())
            }
        }
    }
}

/// How far a flush goes in the file being written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlushEnd {
    /// To the write position (SYNC_FLUSH, thorough and final flushes).
    Exact,
    /// To the last whole page before the write position when there is
    /// one: the page being written stays dirty until a later flush.
    /// Writeback locks and write-protects the pages it writes, so the
    /// appender's next write into that page would fault and wait (up to
    /// milliseconds) for the write-out; under ASYNC_FLUSH nobody waits for
    /// that page, so it is left for the next round.
    WholePages,
}

/// Flushes the commit log up to its current end (see [`FlushEnd`]), file by
/// file. Returns the new durable offset.
pub fn flush_commit_log(
    log: &CommitLog,
    device: &mut FlushDevice,
    durable: u64,
    least_pages: u64,
    upto: FlushEnd,
) -> Result<u64> {
    let mut reached = durable;
    for file in log.files_from(durable) {
        let flushed = file.flushed();
        let wrote = file.wrote();
        if wrote <= flushed {
            if wrote == file.size() {
                reached = file.start_offset() + wrote;
                continue;
            }
            break;
        }
        let dirty_pages = wrote / OS_PAGE_SIZE - flushed / OS_PAGE_SIZE;
        if least_pages > 0 && wrote < file.size() && dirty_pages < least_pages {
            break;
        }
        let end = match upto {
            FlushEnd::WholePages if wrote < file.size() => {
                let whole = wrote / OS_PAGE_SIZE * OS_PAGE_SIZE;
                if whole > flushed {
                    whole
                } else {
                    wrote
                }
            }
            _ => wrote,
        };
        device.flush(&file, flushed, end)?;
        file.set_flushed(end);
        reached = file.start_offset() + end;
        if end < file.size() {
            break;
        }
    }
    Ok(reached)
}

/// How long the SYNC_FLUSH flusher waits for more writers before it flushes.
///
/// A flush costs about the same for one writer as for sixty, so bigger groups
/// mean more throughput — but while the flusher waits the disk is idle. The
/// rule: aim for every writer that was active around the last flush, and keep
/// waiting only while writers arrive faster than the group's average cost per
/// writer so far, (time waited + one flush) / writers; a gap longer than
/// [`GatherPolicy::GAP_FACTOR`] times that means waiting no longer pays.
/// In-process writers come back within microseconds and merge into one group;
/// a broker's writers, a network round trip away, arrive spread out, and the
/// flusher then flushes what is there while the next group gathers (measured:
/// waiting a fixed flush time cost a third of `rmq-bench produce` SYNC_FLUSH
/// throughput).
///
/// Writers are counted by arrival ([`GroupCommit::arrivals`]), not by how
/// many wait: a writer the last flush released still waits until its task
/// runs, and counting it made a group that arrived during a flush look
/// complete, so 64 writers settled into two alternating groups of 32.
#[derive(Debug, Default)]
struct GatherPolicy {
    /// Writers around the last flush: the group it released plus those
    /// that arrived during it.
    active: usize,
    /// How long the last flush took.
    flush: Duration,
}

impl GatherPolicy {
    const GAP_FACTOR: u32 = 2;
    const MAX_WAIT: Duration = Duration::from_millis(2);
    const MAX_POLL: Duration = Duration::from_micros(500);

    /// Waits until the group is complete or waiting stops paying. `arrived`
    /// counts the writers that joined the group so far. The flusher polls
    /// rather than parks: the writers come back tens of microseconds after
    /// a flush, and waking a parked thread on the other CPU costs about that
    /// much again on every flush (see [`poll_until`]).
    ///
    /// `meanwhile` runs before each look: the flusher copies the group's
    /// bytes into the files while it waits ([`CommitLog::commit_early`]).
    ///
    /// Returns how many writers it saw join.
    fn gather(&self, arrived: impl Fn() -> usize, mut meanwhile: impl FnMut()) -> usize {
        let start = Instant::now();
        let limit = start + self.flush.min(Self::MAX_WAIT);
        let mut n = arrived();
        let mut last_arrival = start;
        while n < self.active {
            meanwhile();
            // Writers that arrived while `meanwhile` ran (an early commit
            // takes several microseconds) left no gap.
            let m = arrived();
            if m > n && Instant::now() < limit {
                n = m;
                last_arrival = Instant::now();
                continue;
            }
            let per_writer = (last_arrival - start + self.flush) / n.max(1) as u32;
            let until = (last_arrival + per_writer * Self::GAP_FACTOR).min(limit);
            if Instant::now() >= until {
                return n;
            }
            poll_until(until, || arrived() > n);
            let m = arrived();
            if m > n {
                n = m;
                last_arrival = Instant::now();
            }
        }
        n
    }

    /// How long an idle flusher polls for the next request before it parks:
    /// about one flush after a flush that served writers (they are coming
    /// back), not at all when nobody was waiting.
    fn poll_window(&self) -> Duration {
        if self.active == 0 {
            Duration::ZERO
        } else {
            self.flush.min(Self::MAX_POLL)
        }
    }

    /// Records a flush that took `took`, around which `active` writers were
    /// busy (those it released and those that arrived meanwhile).
    fn flushed(&mut self, active: usize, took: Duration) {
        self.active = active;
        self.flush = took;
    }
}

/// Staged bytes worth writing while a SYNC group gathers; below this a
/// separate write costs more than it saves (8 and 16 KiB measured slower).
pub(crate) const EARLY_COMMIT_BYTES: usize = 32 << 10;

/// Polls `done` until it holds or `until` passes, giving the CPU to any
/// other runnable thread between looks (`sched_yield`): on this kind of
/// machine a parked thread woken from the other CPU runs 30-60 µs later,
/// which a SYNC_FLUSH flusher would pay twice per group commit; a yielding
/// poll costs nobody a CPU they want.
fn poll_until(until: Instant, done: impl Fn() -> bool) {
    while !done() && Instant::now() < until {
        std::thread::yield_now();
    }
}

/// The running flusher thread.
pub struct Flusher {
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<()>>,
    /// SYNC_FLUSH: ends waits past their timeout even while a flush hangs
    /// (see [`GroupCommit::watchdog_tick`]).
    watchdog: Option<JoinHandle<()>>,
    group: Arc<GroupCommit>,
    /// Store timestamp of the last record known flushed by a full flush
    /// (checkpoint `physicMsgTimestamp`).
    pub last_flush_timestamp: Arc<AtomicI64>,
}

impl Flusher {
    pub fn start(
        log: Arc<CommitLog>,
        group: Arc<GroupCommit>,
        policy: FlushPolicy,
        last_store_timestamp: impl Fn() -> i64 + Send + 'static,
        after_flush: impl Fn() + Send + 'static,
    ) -> Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let last_flush_timestamp = Arc::new(AtomicI64::new(0));
        let mut device = FlushDevice::new(log.mechanism())?;
        let (s, g, ts) = (stop.clone(), group.clone(), last_flush_timestamp.clone());
        let handle = std::thread::Builder::new()
            .name("commitlog-flusher".into())
            .spawn(move || {
                let mut last_thorough = Instant::now();
                let mut gather = GatherPolicy::default();
                // Arrivals (GroupCommit::arrivals) up to the last flush's
                // commit: the next group is everyone after it.
                let mut group_from = g.arrivals();
                // Nobody waits for an ASYNC_FLUSH flush.
                if policy.disk_type == FlushDiskType::AsyncFlush {
                    crate::background::lower_this_thread(crate::background::Priority::Behind);
                }
                loop {
                    let stopping = s.load(Ordering::Acquire);
                    let least = match policy.disk_type {
                        FlushDiskType::SyncFlush => {
                            if !stopping && g.requested() <= g.durable() {
                                let until = Instant::now() + gather.poll_window();
                                poll_until(until, || g.requested() > g.durable());
                            }
                            if !stopping && g.requested() <= g.durable() {
                                g.park_flusher(Duration::from_millis(10));
                            }
                            if !stopping {
                                let _ = gather.gather(
                                    || g.arrivals().saturating_sub(group_from) as usize,
                                    // A failed write is sticky: the commit
                                    // below reports it and fails the store.
                                    || {
                                        let _ = log.commit_early();
                                    },
                                );
                            }
                            0
                        }
                        FlushDiskType::AsyncFlush => {
                            if !stopping {
                                if policy.timed {
                                    std::thread::sleep(policy.interval);
                                } else {
                                    std::thread::park_timeout(policy.interval);
                                }
                            }
                            if last_thorough.elapsed() >= policy.thorough_interval {
                                last_thorough = Instant::now();
                                0
                            } else {
                                policy.least_pages
                            }
                        }
                    };
                    let least = if stopping { 0 } else { least };
                    // Read the timestamp before the flush: everything up to it is covered.
                    let stamp = last_store_timestamp();
                    let before = g.durable();
                    let group_to = g.arrivals();
                    let started = Instant::now();
                    if let Err(e) = log.commit_staged() {
                        tracing::error!("commit log write failed, store is now read-only: {e}");
                        g.fail(e.to_string());
                        return;
                    }
                    // Whole pages only on a routine ASYNC_FLUSH round; the
                    // thorough round (least == 0) and the last one go exact.
                    let upto = if policy.disk_type == FlushDiskType::AsyncFlush && least > 0 {
                        FlushEnd::WholePages
                    } else {
                        FlushEnd::Exact
                    };
                    match flush_commit_log(&log, &mut device, before, least, upto) {
                        Ok(reached) => {
                            if reached > before {
                                let took = started.elapsed();
                                g.record_flush(took);
                                // Released by this flush, and arrived during it.
                                let busy = g.arrivals().saturating_sub(group_from);
                                gather.flushed(busy as usize, took);
                                group_from = group_to;
                            }
                            if reached > before || least == 0 {
                                ts.store(stamp, Ordering::Release);
                            }
                            // Staged records become readable as they become durable.
                            log.expose_durable(reached);
                            g.publish(reached);
                            after_flush();
                            log.zero_ahead_of_commits();
                        }
                        Err(e) => {
                            tracing::error!("commit log flush failed, store is now read-only: {e}");
                            g.fail(e.to_string());
                            return;
                        }
                    }
                    if stopping {
                        return;
                    }
                }
            })
            .map_err(|e| StoreError::io("commitlog-flusher thread", e))?;
        group.set_flusher(handle.thread().clone());
        let watchdog = if policy.disk_type == FlushDiskType::SyncFlush {
            let (s, g, tick) = (stop.clone(), group.clone(), policy.watchdog_tick());
            group.set_watchdog(tick);
            let spawned = std::thread::Builder::new()
                .name("flush-watchdog".into())
                .spawn(move || {
                    // Ticks never come early (a park can end early): waits
                    // count on each tick meaning a whole `tick` went by.
                    let mut next = Instant::now() + tick;
                    while !s.load(Ordering::Acquire) {
                        std::thread::park_timeout(next.saturating_duration_since(Instant::now()));
                        if Instant::now() >= next {
                            g.watchdog_tick();
                            next += tick;
                        }
                    }
                });
            match spawned {
                Ok(h) => Some(h),
                Err(e) => {
                    // Without it a hung flush would hold its writers forever.
                    stop.store(true, Ordering::Release);
                    handle.thread().unpark();
                    let _ = handle.join();
                    return Err(StoreError::io("flush-watchdog thread", e));
                }
            }
        } else {
            None
        };
        Ok(Flusher {
            stop,
            handle: Some(handle),
            watchdog,
            group,
            last_flush_timestamp,
        })
    }

    /// Stops after one final unconditional flush; a wait that flush did
    /// not satisfy then ends with a timeout.
    pub fn shutdown(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(h) = self.handle.take() {
            h.thread().unpark();
            let _ = h.join();
        }
        if let Some(h) = self.watchdog.take() {
            h.thread().unpark();
            let _ = h.join();
        }
        self.group.close();
    }
}

impl Drop for Flusher {
    fn drop(&mut self) {
        self.shutdown();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    fn policy(active: usize, flush: Duration) -> GatherPolicy {
        GatherPolicy { active, flush }
    }

    #[test]
    fn the_watchdog_ticks_at_a_tenth_of_the_timeout_within_bounds() {
        let tick = |ms| {
            FlushPolicy::from_config(&StoreConfig {
                sync_flush_timeout: ms,
                ..StoreConfig::default()
            })
            .watchdog_tick()
        };
        assert_eq!(tick(5000), Duration::from_millis(100));
        assert_eq!(tick(200), Duration::from_millis(20));
        assert_eq!(tick(0), Duration::from_millis(1));
    }

    #[test]
    fn complete_group_flushes_at_once() {
        let calls = Cell::new(0);
        policy(4, Duration::from_millis(50)).gather(
            || {
                calls.set(calls.get() + 1);
                4
            },
            || panic!("nothing to do meanwhile when the group is complete"),
        );
        assert_eq!(calls.get(), 1, "no parking when every active writer waits");
    }

    #[test]
    fn waits_while_writers_keep_arriving() {
        // One more writer at every look: the group fills before any gap.
        let n = Cell::new(1);
        let meanwhile = Cell::new(0);
        policy(8, Duration::from_millis(50)).gather(
            || {
                n.set(n.get() + 1);
                n.get()
            },
            || meanwhile.set(meanwhile.get() + 1),
        );
        assert_eq!(n.get(), 8);
        assert!(meanwhile.get() >= 1, "the flusher works while it waits");
    }

    #[test]
    fn stops_after_a_gap_longer_than_the_cost_per_writer() {
        // 5 of 10 writers wait and no one else comes: the gap rule ends the
        // wait at about 2 x 1 ms / 5 = 400 µs, well before the 1 ms cap.
        let start = Instant::now();
        policy(10, Duration::from_millis(1)).gather(|| 5, || ());
        let waited = start.elapsed();
        assert!(waited >= Duration::from_micros(400), "{waited:?}");
    }

    #[test]
    fn writers_arriving_during_slow_work_meanwhile_are_no_gap() {
        // Half the group is there; the other half arrives while the
        // flusher's early commit runs longer than the gap rule allows
        // (2 x (0 + 2 ms) / 8 = 500 µs), but within the 2 ms cap. They
        // still join the group.
        let n = Cell::new(8);
        let seen = policy(16, Duration::from_millis(2)).gather(
            || n.get(),
            || {
                if n.get() < 16 {
                    let busy = Instant::now() + Duration::from_micros(700);
                    while Instant::now() < busy {
                        std::hint::spin_loop();
                    }
                    n.set(16);
                }
            },
        );
        assert_eq!(seen, 16);
    }

    #[test]
    fn an_idle_flusher_polls_about_a_flush_only_after_serving_writers() {
        assert_eq!(
            policy(0, Duration::from_micros(300)).poll_window(),
            Duration::ZERO
        );
        assert_eq!(
            policy(16, Duration::from_micros(300)).poll_window(),
            Duration::from_micros(300)
        );
        assert_eq!(
            policy(16, Duration::from_millis(40)).poll_window(),
            GatherPolicy::MAX_POLL
        );
    }

    #[test]
    fn polling_ends_when_done_or_at_the_deadline() {
        let looks = Cell::new(0);
        poll_until(Instant::now() + Duration::from_secs(5), || {
            looks.set(looks.get() + 1);
            looks.get() == 3
        });
        assert_eq!(looks.get(), 3);
        let start = Instant::now();
        poll_until(start + Duration::from_millis(2), || false);
        let waited = start.elapsed();
        assert!(waited >= Duration::from_millis(2), "{waited:?}");
        assert!(waited < Duration::from_secs(2), "{waited:?}");
    }

    #[test]
    fn never_waits_longer_than_a_flush_or_two_ms() {
        // Nobody waiting at all (a request without a waiter): bounded by the cap.
        let start = Instant::now();
        policy(10, Duration::from_secs(5)).gather(|| 0, || ());
        let waited = start.elapsed();
        assert!(waited >= GatherPolicy::MAX_WAIT, "{waited:?}");
        assert!(waited < Duration::from_secs(5), "{waited:?}");
    }
}
