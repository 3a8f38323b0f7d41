//! All consume queues of a store, keyed by (topic, queueId).

use std::collections::{BTreeMap, HashMap};
use std::hash::BuildHasher;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::RwLock;
use rustc_hash::{FxBuildHasher, FxHashMap};

use super::{valid_dir_component, ConsumeQueue, CQ_ENTRY_SIZE};
use crate::config::StoreConfig;
use crate::error::{Result, StoreError};

const SHARDS: usize = 16;

/// FxHash: a lookup happens on every dispatched record and every pull;
/// SipHash cost more than the rest of the lookup.
type Shard = RwLock<FxHashMap<String, FxHashMap<i32, Arc<ConsumeQueue>>>>;

/// The table of every consume queue of a store (RocketMQ's `consumeQueueTable`).
///
/// Lookups never fail: an unknown (topic, queue) is created empty on first
/// lookup (store.md §7.3), without touching the disk, so offset queries on it
/// answer 0. The table is sharded by topic; a lookup takes one shard's read
/// lock for a hash probe and returns an `Arc` the caller may keep (queues are
/// never removed from the table while the store runs).
pub struct ConsumeQueueSet {
    root: PathBuf,
    file_size: u64,
    shards: Box<[Shard]>,
    hasher: FxBuildHasher,
}

impl std::fmt::Debug for ConsumeQueueSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConsumeQueueSet")
            .field("root", &self.root)
            .field("file_size", &self.file_size)
            .finish_non_exhaustive()
    }
}

impl ConsumeQueueSet {
    /// An empty table for `config.consume_queue_dir()` (no I/O).
    pub fn new(config: &StoreConfig) -> Result<Self> {
        Self::with_root(
            &config.consume_queue_dir(),
            config.consume_queue_file_size(),
        )
    }

    /// An empty table rooted at `root` (the `consumequeue` directory).
    /// `file_size` must be a positive multiple of 20.
    pub fn with_root(root: &Path, file_size: u64) -> Result<Self> {
        if file_size == 0 || !file_size.is_multiple_of(CQ_ENTRY_SIZE) {
            return Err(StoreError::InvalidArgument(format!(
                "consume queue file size {file_size} must be a positive multiple of 20"
            )));
        }
        Ok(ConsumeQueueSet {
            root: root.to_path_buf(),
            file_size,
            shards: (0..SHARDS)
                .map(|_| RwLock::new(FxHashMap::default()))
                .collect(),
            hasher: Default::default(),
        })
    }

    /// Loads and recovers every queue found under `config.consume_queue_dir()`
    /// (store.md §11.7 steps 1–2). Directories that are not `<TOPIC>/<decimal
    /// queueId>` are skipped with a warning; a queue that fails to load fails
    /// the whole load (the store must not start on a corrupt queue).
    pub fn load(config: &StoreConfig) -> Result<Self> {
        Self::load_from(
            &config.consume_queue_dir(),
            config.consume_queue_file_size(),
        )
    }

    /// [`load`](Self::load) with an explicit root and file size.
    pub fn load_from(root: &Path, file_size: u64) -> Result<Self> {
        let set = Self::with_root(root, file_size)?;
        let topics = match std::fs::read_dir(root) {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(set),
            Err(e) => return Err(StoreError::io(root, e)),
        };
        for t in topics {
            let t = t.map_err(|e| StoreError::io(root, e))?;
            let tpath = t.path();
            if !tpath.is_dir() {
                continue;
            }
            let Some(topic) = t.file_name().to_str().map(str::to_string) else {
                tracing::warn!("skipping non-UTF-8 topic directory {}", tpath.display());
                continue;
            };
            for q in std::fs::read_dir(&tpath).map_err(|e| StoreError::io(&tpath, e))? {
                let q = q.map_err(|e| StoreError::io(&tpath, e))?;
                let qpath = q.path();
                let Some(queue_id) = q
                    .file_name()
                    .to_str()
                    .and_then(|s| s.parse::<i32>().ok())
                    .filter(|_| qpath.is_dir())
                else {
                    tracing::warn!("skipping {} (not a queue directory)", qpath.display());
                    continue;
                };
                let cq = ConsumeQueue::open(root, &topic, queue_id, file_size)?;
                set.shard(&topic)
                    .write()
                    .entry(topic.clone())
                    .or_default()
                    .insert(queue_id, Arc::new(cq));
            }
        }
        Ok(set)
    }

    fn shard(&self, topic: &str) -> &Shard {
        &self.shards[self.hasher.hash_one(topic) as usize % SHARDS]
    }

    /// The queue, if it has been looked up, created or loaded before.
    pub fn get(&self, topic: &str, queue_id: i32) -> Option<Arc<ConsumeQueue>> {
        self.shard(topic).read().get(topic)?.get(&queue_id).cloned()
    }

    /// The queue, created empty (no files yet) if unknown.
    pub fn get_or_create(&self, topic: &str, queue_id: i32) -> Arc<ConsumeQueue> {
        if let Some(q) = self.get(topic, queue_id) {
            return q;
        }
        let mut shard = self.shard(topic).write();
        shard
            .entry(topic.to_string())
            .or_default()
            .entry(queue_id)
            .or_insert_with(|| {
                if !valid_dir_component(topic) {
                    tracing::warn!(
                        "topic `{topic}` cannot be stored; its queue will refuse appends"
                    );
                }
                Arc::new(ConsumeQueue::new(
                    &self.root,
                    topic,
                    queue_id,
                    self.file_size,
                ))
            })
            .clone()
    }

    /// Forgets `topic`: its queues leave the table and their directory is
    /// deleted. Holders of the old queues can still read what they mapped,
    /// but the old queues refuse further appends (a later lookup creates a
    /// fresh, empty queue whose offsets restart at 0).
    pub fn remove_topic(&self, topic: &str) -> Result<()> {
        let removed = self.shard(topic).write().remove(topic);
        for q in removed.iter().flat_map(|qs| qs.values()) {
            q.retire()?;
        }
        if valid_dir_component(topic) {
            let dir = self.root.join(topic);
            match std::fs::remove_dir_all(&dir) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(StoreError::io(&dir, e)),
            }
        }
        Ok(())
    }

    /// Every queue, in no particular order (a snapshot).
    pub fn queues(&self) -> Vec<Arc<ConsumeQueue>> {
        let mut out = Vec::new();
        for s in self.shards.iter() {
            for qs in s.read().values() {
                out.extend(qs.values().cloned());
            }
        }
        out
    }

    /// The queues of one topic, by queue id.
    pub fn topic_queues(&self, topic: &str) -> BTreeMap<i32, Arc<ConsumeQueue>> {
        self.shard(topic)
            .read()
            .get(topic)
            .map(|qs| qs.iter().map(|(k, v)| (*k, v.clone())).collect())
            .unwrap_or_default()
    }

    /// Flushes every queue with `least_pages` (store.md §11.6; 0 = everything).
    /// Every queue is attempted; the first error is returned after the others ran.
    pub fn flush_all(&self, least_pages: u64) -> Result<()> {
        let mut first_err = None;
        for q in self.queues() {
            if let Err(e) = q.flush(least_pages) {
                tracing::error!("flushing consume queue {}/{}: {e}", q.topic(), q.queue_id());
                first_err.get_or_insert(e);
            }
        }
        first_err.map_or(Ok(()), Err)
    }

    /// The largest [`ConsumeQueue::max_phys_end`] of all queues: where dispatch
    /// resumes at start-up (store.md §11.5), together with the commit log min offset.
    pub fn max_phys_end(&self) -> u64 {
        self.queues()
            .iter()
            .map(|q| q.max_phys_end())
            .max()
            .unwrap_or(0)
    }

    /// The lowest [`ConsumeQueue::max_phys_end`] of the queues that lost
    /// entries to damage at load: re-dispatch must start there at the latest.
    pub fn lowest_end_of_damaged(&self) -> Option<u64> {
        self.queues()
            .iter()
            .filter(|q| q.lost_entries())
            .map(|q| q.max_phys_end())
            .min()
    }

    /// Truncates every queue at commit log offset `phys_offset` (store.md §11.7 step 4).
    pub fn truncate_dirty_all(&self, phys_offset: u64) -> Result<()> {
        for q in self.queues() {
            q.truncate_dirty(phys_offset)?;
        }
        Ok(())
    }

    /// Deletes expired files of every queue (store.md §11.8); returns files deleted.
    pub fn delete_expired_all(&self, commit_log_min_offset: u64) -> Result<usize> {
        let mut n = 0;
        for q in self.queues() {
            n += q.delete_expired(commit_log_min_offset)?;
        }
        Ok(n)
    }

    /// Fixes every queue's min offset against the commit log min offset (store.md §11.7 step 5).
    pub fn correct_min_offsets(&self, commit_log_min_offset: u64) {
        for q in self.queues() {
            q.correct_min_offset(commit_log_min_offset);
        }
    }

    /// The next queue offset of every queue, `(topic, queueId) -> max offset`:
    /// the table the append path assigns QUEUEOFFSETs from (store.md §11.7 step 5).
    /// Empty lazily-created queues are included with 0.
    pub fn next_offset_table(&self) -> HashMap<(String, i32), u64> {
        let mut out = HashMap::new();
        for s in self.shards.iter() {
            for (topic, qs) in s.read().iter() {
                for (id, q) in qs {
                    out.insert((topic.clone(), *id), q.max_offset());
                }
            }
        }
        out
    }
}
