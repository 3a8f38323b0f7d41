//! Prepares the next commit log files in the background.
//!
//! Creating, preallocating and warming a 1 GiB file takes seconds; doing it
//! when the current file fills would stall every writer. When the writer asks
//! for the file at offset X, the allocator hands over X (normally ready long
//! ago) and starts preparing X + fileSize, so the next roll is free too.

use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

use crate::error::{Result, StoreError};
use crate::mapped_file::MappedFile;

/// How new files are prepared.
#[derive(Debug, Clone)]
pub struct FileSpec {
    pub dir: PathBuf,
    pub size: u64,
    pub preallocate: bool,
    /// Touch, write through, mlock, madvise (`warmMapedFileEnable`).
    pub warm: bool,
    /// Pages between msyncs that write the warmed zeros to disk (SYNC_FLUSH
    /// only, as RocketMQ); 0 = leave them in memory.
    pub warm_flush_pages: u64,
}

impl FileSpec {
    /// Creates and prepares one file synchronously.
    pub fn prepare(&self, offset: u64) -> Result<MappedFile> {
        let f = MappedFile::create(&self.dir, offset, self.size, self.preallocate)?;
        if self.warm {
            f.warm(self.warm_flush_pages)?;
        }
        Ok(f)
    }
}

struct State {
    /// Every offset ever requested: a file is prepared at most once.
    requested: BTreeSet<u64>,
    pending: BTreeSet<u64>,
    ready: HashMap<u64, std::result::Result<Arc<MappedFile>, String>>,
    stop: bool,
}

struct Shared {
    spec: FileSpec,
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
            state: Mutex::new(State {
                requested: BTreeSet::new(),
                pending: BTreeSet::new(),
                ready: HashMap::new(),
                stop: false,
            }),
            wake_worker: Condvar::new(),
            wake_waiter: Condvar::new(),
        });
        let s = shared.clone();
        let worker = std::thread::Builder::new()
            .name("commitlog-allocator".into())
            .spawn(move || run(s))
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
    /// (up to 5 s, then preparing it here), and queues the one after it.
    pub fn take(&self, offset: u64) -> Result<Arc<MappedFile>> {
        self.prefetch(offset);
        self.prefetch(offset + self.shared.spec.size);
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut st = self.shared.state.lock();
        loop {
            if let Some(r) = st.ready.remove(&offset) {
                return r.map_err(|e| {
                    StoreError::io(self.shared.spec.dir.clone(), std::io::Error::other(e))
                });
            }
            if st.stop {
                return Err(StoreError::ShutDown);
            }
            if self
                .shared
                .wake_waiter
                .wait_until(&mut st, deadline)
                .timed_out()
            {
                st.pending.remove(&offset);
                drop(st);
                tracing::warn!("file allocator slow; creating file {offset} inline");
                return Ok(Arc::new(self.shared.spec.prepare(offset)?));
            }
        }
    }

    /// Stops the worker and deletes prepared files nobody took (they would
    /// otherwise look like empty commit log files after the current one).
    pub fn shutdown(&self) {
        {
            let mut st = self.shared.state.lock();
            st.stop = true;
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

fn run(shared: Arc<Shared>) {
    loop {
        let offset = {
            let mut st = shared.state.lock();
            loop {
                if st.stop {
                    return;
                }
                if let Some(o) = st.pending.pop_first() {
                    break o;
                }
                shared.wake_worker.wait(&mut st);
            }
        };
        let result = shared
            .spec
            .prepare(offset)
            .map(Arc::new)
            .map_err(|e| e.to_string());
        if let Err(e) = &result {
            tracing::error!("preparing commit log file {offset} failed: {e}");
        }
        let mut st = shared.state.lock();
        st.ready.insert(offset, result);
        shared.wake_waiter.notify_all();
    }
}
