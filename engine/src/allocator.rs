//! Prepares the next commit log files in the background.
//!
//! Creating, preallocating and warming a 1 GiB file takes seconds; doing it
//! when the current file fills would stall every writer. When the writer asks
//! for the file at offset X, the allocator hands over X (normally ready long
//! ago); once its roll is done the commit log queues X + fileSize, so the
//! next roll is free too. A fresh log queues its first two files at open.

use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

use crate::error::{Result, StoreError};
use crate::mapped_file::{MappedFile, WarmPages};

/// How new files are prepared.
#[derive(Debug, Clone)]
pub struct FileSpec {
    pub dir: PathBuf,
    pub size: u64,
    pub preallocate: bool,
    /// Populate every page, mlock, madvise (`warmMapedFileEnable`), and how.
    pub warm: Option<WarmPages>,
    /// Bytes at the start of each file populated writable after warming:
    /// appends through the mapping into a read-warmed file then start
    /// without faults, instead of racing the prefaulter for the first pages
    /// (each such fault waited 0.1 ms on a page lock there).
    pub writable_head: u64,
    /// Background preparation writes zeros through the file descriptor over
    /// the whole file first (appends written with write(2): see
    /// [`crate::zero_ahead::fill_file`]). Not done by [`FileSpec::prepare`],
    /// which a writer waits for.
    pub zero_fill: bool,
}

impl FileSpec {
    /// Creates and prepares one file synchronously.
    pub fn prepare(&self, offset: u64) -> Result<MappedFile> {
        let f = MappedFile::create(&self.dir, offset, self.size, self.preallocate)?;
        self.warm(&f, &AtomicBool::new(false))?;
        Ok(f)
    }

    /// Warms `f` as this spec says; stops early once `abort` is set (the
    /// file is then usable, only partly warmed).
    fn warm(&self, f: &MappedFile, abort: &AtomicBool) -> Result<()> {
        let warmed = match self.warm {
            Some(how) => f.warm(how, abort)?,
            None => true,
        };
        if warmed && self.writable_head > 0 {
            f.populate(0, self.writable_head);
        }
        if !warmed {
            tracing::info!(
                "commit log file {} needed before its warming finished; handed over part-warmed",
                f.start_offset()
            );
        }
        Ok(())
    }

    /// Whether a writer may append to a file while it is still being warmed:
    /// true unless warming writes zeros into it.
    fn writable_while_warming(&self) -> bool {
        !matches!(self.warm, Some(WarmPages::Write { .. }))
    }
}

struct State {
    /// Every offset ever requested: a file is prepared at most once.
    requested: BTreeSet<u64>,
    pending: BTreeSet<u64>,
    ready: HashMap<u64, std::result::Result<Arc<MappedFile>, String>>,
    /// The file the worker is preparing now, and the flag that cuts its
    /// warming short when a writer is already waiting for it.
    preparing: Option<(u64, Arc<AtomicBool>)>,
    /// The file being warmed, when a writer may take it before warming ends
    /// ([`FileSpec::writable_while_warming`]): a roll then never waits for a
    /// warm-up that the CPU-starved allocator is slow to cut short.
    warming: Option<Arc<MappedFile>>,
    /// Offsets handed over while warming; not to be put into `ready`.
    taken_early: BTreeSet<u64>,
    /// Files the writer has left, to unlock at the given time.
    unlock_at: Vec<(Instant, Arc<MappedFile>)>,
    stop: bool,
}

struct Shared {
    spec: FileSpec,
    /// The zero-fill of the file being prepared, which staged commits share.
    next_fill: crate::zero_ahead::NextFileFill,
    state: Mutex<State>,
    wake_worker: Condvar,
    wake_waiter: Condvar,
}

/// The background file allocator (RocketMQ's AllocateMappedFileService).
pub struct FileAllocator {
    shared: Arc<Shared>,
    worker: Mutex<Option<JoinHandle<()>>>,
}

impl FileAllocator {
    pub fn start(spec: FileSpec) -> Result<Self> {
        let shared = Arc::new(Shared {
            spec,
            next_fill: crate::zero_ahead::NextFileFill::default(),
            state: Mutex::new(State {
                requested: BTreeSet::new(),
                pending: BTreeSet::new(),
                ready: HashMap::new(),
                preparing: None,
                warming: None,
                taken_early: BTreeSet::new(),
                unlock_at: Vec::new(),
                stop: false,
            }),
            wake_worker: Condvar::new(),
            wake_waiter: Condvar::new(),
        });
        let s = shared.clone();
        let worker = std::thread::Builder::new()
            .name("commitlog-allocator".into())
            .spawn(move || {
                crate::background::lower_this_thread(crate::background::Priority::Behind);
                run(s)
            })
            .map_err(|e| StoreError::io("commitlog-allocator thread", e))?;
        Ok(FileAllocator {
            shared,
            worker: Mutex::new(Some(worker)),
        })
    }

    /// Asks for `offset` to be prepared in the background (no waiting).
    pub fn prefetch(&self, offset: u64) {
        let mut st = self.shared.state.lock();
        if st.requested.insert(offset) {
            st.pending.insert(offset);
            self.shared.wake_worker.notify_one();
        }
    }

    /// Returns the file at `offset`, waiting for the background preparation
    /// (up to 5 s, then preparing it here). If it was not ready, the one
    /// after it is queued too; otherwise the caller queues it with
    /// [`FileAllocator::prefetch`] once its roll is done. A preparation that
    /// fails (ENOSPC) is reported at once, and tried afresh by the next call.
    pub fn take(&self, offset: u64) -> Result<Arc<MappedFile>> {
        // The common case in one short critical section: the file is ready.
        // The caller queues the next file when its roll is done
        // ([`FileAllocator::prefetch`]): the worker that wakes for it would
        // otherwise contend for this lock with the writer mid-roll.
        let ready = self.shared.state.lock().ready.remove(&offset);
        match ready {
            Some(Ok(f)) => return self.handed_over(Ok(f)),
            // A failure from an earlier try (a full disk, say) is stale:
            // try again now rather than report it.
            Some(Err(e)) => tracing::info!("retrying commit log file {offset} (earlier: {e})"),
            None => {}
        }
        self.prefetch(offset);
        self.prefetch(offset + self.shared.spec.size);
        let mut deadline = Instant::now() + Duration::from_secs(5);
        let mut st = self.shared.state.lock();
        loop {
            if let Some(r) = st.ready.remove(&offset) {
                return self.handed_over(r);
            }
            if st.stop {
                return Err(StoreError::ShutDown);
            }
            // A writer waits for a file still warming: a roll must not stall
            // for the rest of a 1 GiB warm-up, so take it as it is.
            if let Some((o, abort)) = &st.preparing {
                if *o == offset {
                    abort.store(true, Ordering::Release);
                }
            }
            if let Some(f) = st.warming.clone() {
                if f.start_offset() == offset {
                    st.taken_early.insert(offset);
                    return Ok(f);
                }
            }
            if self
                .shared
                .wake_waiter
                .wait_until(&mut st, deadline)
                .timed_out()
            {
                // The worker picked it up while we waited: its preparation
                // is told to stop (above) and hands the file over within a
                // step. Creating it here as well would reopen that same
                // file, and the worker's zero-fill could then land on
                // appended records.
                if st.preparing.as_ref().is_some_and(|(o, _)| *o == offset) {
                    tracing::warn!("file allocator slow; still waiting for file {offset}");
                    deadline = Instant::now() + Duration::from_secs(5);
                    continue;
                }
                st.pending.remove(&offset);
                drop(st);
                tracing::warn!("file allocator slow; creating file {offset} inline");
                return Ok(Arc::new(self.shared.spec.prepare(offset)?));
            }
        }
    }

    /// A staged commit wrote `bytes` ending at `committed_end`: it takes
    /// a share of the next file's zero-fill (see
    /// [`crate::zero_ahead::NextFileFill::after_commit`]). Call under the
    /// commit lock, after the commit's records are written.
    pub fn fill_after_commit(&self, committed_end: u64, bytes: u64) {
        if self.shared.spec.zero_fill {
            self.shared
                .next_fill
                .after_commit(committed_end, bytes, self.shared.spec.size);
        }
    }

    /// A prepared file as `take` returns it (a preparation failure becomes
    /// an I/O error on the directory).
    fn handed_over(
        &self,
        prepared: std::result::Result<Arc<MappedFile>, String>,
    ) -> Result<Arc<MappedFile>> {
        prepared.map_err(|e| StoreError::io(self.shared.spec.dir.clone(), std::io::Error::other(e)))
    }

    /// Unlocks `file`'s pages (`munlock`) after `delay`, on the allocator's
    /// thread. A writer leaving a file at a roll calls this instead of
    /// unlocking or spawning a thread itself: both take the process's mmap
    /// lock for writing, which waits for every populate in progress.
    pub fn unlock_later(&self, file: Arc<MappedFile>, delay: Duration) {
        // No wake-up: the worker looks at least every second
        // ([`MAX_IDLE`]), and a roll wakes it for the next file anyway.
        self.shared
            .state
            .lock()
            .unlock_at
            .push((Instant::now() + delay, file));
    }

    /// Stops the worker and deletes prepared files nobody took (they would
    /// otherwise look like empty commit log files after the current one).
    pub fn shutdown(&self) {
        {
            let mut st = self.shared.state.lock();
            st.stop = true;
            if let Some((_, abort)) = &st.preparing {
                abort.store(true, Ordering::Release);
            }
            self.shared.wake_worker.notify_all();
            self.shared.wake_waiter.notify_all();
        }
        if let Some(h) = self.worker.lock().take() {
            let _ = h.join();
        }
        let mut st = self.shared.state.lock();
        for (_, f) in st.ready.drain() {
            if let Ok(f) = f {
                if let Err(e) = f.delete() {
                    tracing::warn!("cannot delete unused preallocated file: {e}");
                }
            }
        }
    }
}

impl Drop for FileAllocator {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Longest the worker sleeps without looking for delayed unlocks.
const MAX_IDLE: Duration = Duration::from_secs(1);

fn run(shared: Arc<Shared>) {
    loop {
        let (offset, abort) = {
            let mut st = shared.state.lock();
            loop {
                if st.stop {
                    return;
                }
                let now = Instant::now();
                let (due, later): (Vec<_>, Vec<_>) =
                    st.unlock_at.drain(..).partition(|(at, _)| *at <= now);
                st.unlock_at = later;
                if !due.is_empty() {
                    drop(st);
                    for (_, f) in due {
                        f.munlock();
                    }
                    st = shared.state.lock();
                    continue;
                }
                if let Some(o) = st.pending.pop_first() {
                    let abort = Arc::new(AtomicBool::new(false));
                    st.preparing = Some((o, abort.clone()));
                    break (o, abort);
                }
                let idle_until = now + MAX_IDLE;
                let at = st
                    .unlock_at
                    .iter()
                    .map(|(at, _)| *at)
                    .min()
                    .map_or(idle_until, |at| at.min(idle_until));
                shared.wake_worker.wait_until(&mut st, at);
            }
        };
        let spec = &shared.spec;
        let result = MappedFile::create(&spec.dir, offset, spec.size, spec.preallocate)
            .map(Arc::new)
            .and_then(|f| {
                // Before any writer can take the file: zeros must never
                // land on appended bytes. A writer waiting for it aborts
                // the fill within one step. A failed fill only costs the
                // optimisation: appends keep zeros ahead of themselves
                // from where it stopped.
                if spec.zero_fill {
                    shared.next_fill.begin(f.clone());
                    let filled = crate::zero_ahead::fill_file(&f, &abort, &shared.next_fill);
                    shared.next_fill.end();
                    match filled {
                        Ok(true) => {}
                        Ok(false) => tracing::info!(
                            "commit log file {offset} needed before its zero-fill finished; \
                             handed over part-filled"
                        ),
                        Err(e) => {
                            tracing::warn!("zero-filling commit log file {offset} stopped: {e}")
                        }
                    }
                }
                if spec.writable_while_warming() {
                    shared.state.lock().warming = Some(f.clone());
                    // A writer waiting already can take it now.
                    shared.wake_waiter.notify_all();
                }
                spec.warm(&f, &abort).map(|()| f)
            })
            .map_err(|e| e.to_string());
        if let Err(e) = &result {
            tracing::error!("preparing commit log file {offset} failed: {e}");
        }
        let mut st = shared.state.lock();
        st.preparing = None;
        st.warming = None;
        if result.is_err() {
            // Asking again must try again (the disk may have space by then).
            st.requested.remove(&offset);
        }
        if !st.taken_early.remove(&offset) {
            st.ready.insert(offset, result);
        }
        shared.wake_waiter.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(dir: &std::path::Path, size: u64) -> FileSpec {
        FileSpec {
            dir: dir.to_path_buf(),
            size,
            preallocate: true,
            warm: Some(WarmPages::Write { flush_pages: 0 }),
            writable_head: 0,
            zero_fill: false,
        }
    }

    /// Waits (bounded) until the worker has prepared `offset`.
    fn wait_ready(alloc: &FileAllocator, offset: u64) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while !alloc.shared.state.lock().ready.contains_key(&offset) {
            assert!(Instant::now() < deadline, "file {offset} never prepared");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// A file that cannot be created (ENOSPC in life; here a directory
    /// squats on its temporary name) fails the take at once, not after the
    /// 5 s wait, and the next take tries afresh instead of repeating it.
    #[test]
    fn a_failed_preparation_is_reported_at_once_and_retried_on_the_next_take() {
        let dir = tempfile::tempdir().expect("temp dir");
        let squatter = dir.path().join(format!(
            "{}{}",
            crate::mapped_file::file_name(0),
            crate::mapped_file::ALLOC_SUFFIX
        ));
        std::fs::create_dir(&squatter).expect("squat");
        let alloc = FileAllocator::start(FileSpec {
            warm: None,
            ..spec(dir.path(), 1 << 20)
        })
        .expect("start");
        for _ in 0..2 {
            let started = Instant::now();
            assert!(alloc.take(0).is_err());
            assert!(
                started.elapsed() < Duration::from_secs(4),
                "{:?}",
                started.elapsed()
            );
        }
        std::fs::remove_dir(&squatter).expect("unsquat");
        let f = alloc.take(0).expect("created once the obstacle is gone");
        assert_eq!(f.start_offset(), 0);
        alloc.shutdown();
    }

    #[test]
    fn a_zero_filled_file_is_handed_over_whole_and_one_taken_early_part_filled() {
        let dir = tempfile::tempdir().expect("temp dir");
        let size = 8 * crate::zero_ahead::FILL_STEP;
        let alloc = FileAllocator::start(FileSpec {
            warm: None,
            zero_fill: true,
            ..spec(dir.path(), size)
        })
        .expect("allocator");
        alloc.prefetch(0);
        wait_ready(&alloc, 0);
        let f = alloc.take(0).expect("take");
        assert_eq!(f.zeroed_to(), size);
        let on_disk = std::fs::read(f.path()).expect("read");
        assert!(on_disk.iter().all(|b| *b == 0));
        // Taken at once: the fill stops within a step and says how far it got.
        let g = alloc.take(size).expect("take");
        assert_eq!(g.zeroed_to() % crate::zero_ahead::FILL_STEP, 0);
        assert!(g.zeroed_to() <= size);
        alloc.shutdown();
    }

    #[test]
    fn a_read_warmed_file_taken_while_warming_is_kept_at_shutdown() {
        let dir = tempfile::tempdir().expect("temp dir");
        let alloc = FileAllocator::start(FileSpec {
            warm: Some(WarmPages::Read),
            writable_head: 1 << 20,
            ..spec(dir.path(), 256 << 20)
        })
        .expect("allocator");
        alloc.prefetch(0);
        let f = alloc.take(0).expect("take");
        f.write_mapped(0, b"first record");
        f.publish(12);
        // The allocator goes on with the next file.
        let next = alloc.take(256 << 20).expect("take next");
        assert_eq!(next.start_offset(), 256 << 20);
        alloc.shutdown();
        // Shutdown deletes prepared files nobody took, never taken ones.
        assert!(f.path().exists());
        assert_eq!(f.read(0, 12).expect("read"), b"first record");
    }

    #[test]
    fn a_file_left_at_a_roll_is_unlocked_by_the_allocator_after_the_delay() {
        let dir = tempfile::tempdir().expect("temp dir");
        let alloc = FileAllocator::start(FileSpec {
            warm: Some(WarmPages::Read),
            ..spec(dir.path(), 1 << 20)
        })
        .expect("allocator");
        let f = alloc.take(0).expect("take");
        if !f.is_locked() {
            // RLIMIT_MEMLOCK refused the mlock here: nothing to unlock.
            return;
        }
        let left = Instant::now();
        alloc.unlock_later(f.clone(), Duration::from_millis(50));
        let deadline = left + Duration::from_secs(10);
        while f.is_locked() {
            assert!(Instant::now() < deadline, "never unlocked");
            std::thread::sleep(Duration::from_millis(5));
        }
        assert!(
            left.elapsed() >= Duration::from_millis(50),
            "unlocked early"
        );
    }

    #[test]
    fn warm_stops_when_aborted() {
        let dir = tempfile::tempdir().expect("temp dir");
        let f = MappedFile::create(dir.path(), 0, 8 << 20, true).expect("create");
        let how = WarmPages::Write { flush_pages: 0 };
        assert!(!f.warm(how, &AtomicBool::new(true)).expect("warm"));
        assert!(f.warm(how, &AtomicBool::new(false)).expect("warm"));
    }

    #[test]
    fn a_file_taken_while_warming_is_not_written_by_the_warm_up_afterwards() {
        let dir = tempfile::tempdir().expect("temp dir");
        // Big enough that warming it takes far longer than the take below.
        let alloc = FileAllocator::start(spec(dir.path(), 512 << 20)).expect("allocator");
        alloc.prefetch(0);
        std::thread::sleep(Duration::from_millis(20));
        let f = alloc.take(0).expect("take");
        // Every page, so a warm-up still running would zero some of them.
        let page = [0xA5u8; 64];
        for p in (0..f.size()).step_by(1 << 20) {
            f.write_mapped(p, &page);
        }
        f.publish(f.size());
        std::thread::sleep(Duration::from_millis(300));
        for p in (0..f.size()).step_by(1 << 20) {
            assert_eq!(
                f.read(p, 64),
                Some(&page[..]),
                "page at {p} was overwritten"
            );
        }
        alloc.shutdown();
    }
}
