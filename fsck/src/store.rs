//! Finding a store's files and mapping them read-only.
//!
//! File sizes come from the configuration when given (`--commitlog-size`,
//! `--cq-size`, `-c broker.conf`); otherwise the commit log and consume-queue
//! sizes are inferred from the files present (the most common size), and
//! RocketMQ's defaults apply to an empty store. An inferred size no broker
//! can be configured with (a commit log size that is not a whole number of
//! OS pages, a consume-queue size that is not whole entries) means the files
//! it came from are damaged: fsck then stops and asks for the size rather
//! than check the store against a wrong one. The index layout
//! (`maxHashSlotNum`, `maxIndexNum`) cannot be inferred: when it is not given
//! and no index file has its size, fsck stops and asks for it likewise.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::path::{Path, PathBuf};

use engine::consume_queue::CQ_ENTRY_SIZE;
use engine::index::IndexLayout;
use engine::mapped_file::{parse_file_name, OS_PAGE_SIZE};
use engine::StoreConfig;
use memmap2::Mmap;

use crate::error::{AtPath, Error, Result};

/// Directory names (at the store root) fsck writes backups into; never checked.
pub const BACKUP_PREFIX: &str = "fsck-backup-";

/// How to read the store: its configuration and which sizes were given.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The store's configuration; `store_path_root_dir` is the store.
    pub config: StoreConfig,
    /// `mappedFileSizeCommitLog` was given explicitly (else inferred from files).
    pub commitlog_size_given: bool,
    /// `mappedFileSizeConsumeQueue` was given explicitly.
    pub cq_size_given: bool,
    /// `maxHashSlotNum` or `maxIndexNum` was given explicitly (the files
    /// cannot tell them; see [`Store::open`]).
    pub index_layout_given: bool,
}

impl Settings {
    /// Defaults for the store at `root`; sizes inferred from the files.
    pub fn new(root: &Path) -> Self {
        let config = StoreConfig {
            store_path_root_dir: root.to_path_buf(),
            ..Default::default()
        };
        Settings {
            config,
            commitlog_size_given: false,
            cq_size_given: false,
            index_layout_given: false,
        }
    }

    /// Settings with every size taken from `config` as given.
    pub fn explicit(config: StoreConfig) -> Self {
        Settings {
            config,
            commitlog_size_given: true,
            cq_size_given: true,
            index_layout_given: true,
        }
    }
}

/// A read-only mapped file (empty files are not mapped).
pub struct Mapped {
    pub path: PathBuf,
    pub len: u64,
    map: Option<Mmap>,
}

impl Mapped {
    pub fn open(path: &Path) -> Result<Self> {
        let f = File::open(path).at(path)?;
        let len = f.metadata().at(path)?.len();
        let map = if len == 0 {
            None
        } else {
            // SAFETY: read-only mapping; fsck refuses a store whose lock a
            // broker holds (and repair holds it), so the file does not change.
            let m = unsafe { Mmap::map(&f).at(path)? };
            Some(m)
        };
        Ok(Mapped {
            path: path.to_path_buf(),
            len,
            map,
        })
    }

    pub fn bytes(&self) -> &[u8] {
        self.map.as_deref().unwrap_or(&[])
    }

    /// Asks the kernel to read `[offset, offset+len)` ahead (asynchronously);
    /// unlike `MADV_SEQUENTIAL` the pages stay cached for the later random
    /// lookups of the consume-queue and index checks.
    pub fn will_need(&self, offset: u64, len: u64) {
        if let Some(m) = &self.map {
            let end = (offset + len).min(self.len);
            if offset < end {
                let _ = m.advise_range(
                    memmap2::Advice::WillNeed,
                    offset as usize,
                    (end - offset) as usize,
                );
            }
        }
    }

    /// Reads the file's first `limit` bytes (its configured size: a longer
    /// file is damaged and only that much is checked) once, sequentially,
    /// into the page cache, so later random lookups hit memory.
    pub fn preload(&self, limit: u64) {
        use std::io::Read;
        if let Ok(f) = File::open(&self.path) {
            let mut f = f.take(limit);
            let mut buf = vec![0u8; 8 << 20];
            while matches!(f.read(&mut buf), Ok(n) if n > 0) {}
        }
    }

    /// The file's first `limit` bytes (all of a shorter file).
    pub fn bytes_within(&self, limit: u64) -> &[u8] {
        let b = self.bytes();
        &b[..b.len().min(usize::try_from(limit).unwrap_or(usize::MAX))]
    }
}

/// A file whose name is a 20-digit offset.
pub struct NamedFile {
    pub start: u64,
    pub file: Mapped,
}

/// One consume queue directory.
pub struct QueueDir {
    pub topic: String,
    pub queue_id: i32,
    pub dir: PathBuf,
    /// Files with valid names, sorted by start.
    pub files: Vec<NamedFile>,
    /// Entries in the directory that are not 20-digit file names.
    pub strays: Vec<PathBuf>,
}

/// Everything found in the store, mapped.
pub struct Store {
    pub root: PathBuf,
    pub config: StoreConfig,
    pub commitlog_size: u64,
    pub cq_size: u64,
    pub index_layout: IndexLayout,
    pub commitlog_dir: PathBuf,
    /// Commit log files with valid names, sorted by start offset.
    pub commitlog: Vec<NamedFile>,
    pub commitlog_strays: Vec<PathBuf>,
    pub queues: Vec<QueueDir>,
    /// Paths in `consumequeue/` that are not `<topic>/<queueId>/`.
    pub cq_strays: Vec<PathBuf>,
    /// Index files (17-digit names), sorted by name.
    pub index: Vec<Mapped>,
    pub index_strays: Vec<PathBuf>,
    pub notes: Vec<String>,
}

/// The entries of `dir` (none if it does not exist), sorted by name.
fn list_dir(dir: &Path) -> Result<Vec<(String, PathBuf)>> {
    let mut out = Vec::new();
    match std::fs::read_dir(dir) {
        Ok(rd) => {
            for e in rd {
                let e = e.at(dir)?;
                out.push((e.file_name().to_string_lossy().into_owned(), e.path()));
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).at(dir),
    }
    out.sort();
    Ok(out)
}

fn most_common(sizes: impl Iterator<Item = u64>) -> Option<u64> {
    let mut counts: BTreeMap<u64, usize> = BTreeMap::new();
    for s in sizes {
        *counts.entry(s).or_insert(0) += 1;
    }
    counts
        .into_iter()
        .max_by_key(|(size, n)| (*n, *size))
        .map(|(s, _)| s)
}

/// How a file size not given in the settings is taken from the files.
struct Inferred {
    /// What the files are, for messages ("commit log").
    what: &'static str,
    /// Every configurable size is a multiple of this.
    multiple: u64,
    /// The option that gives the size instead.
    option: &'static str,
    /// The configured (default) size, used when no file has data.
    default: u64,
}

impl Inferred {
    /// The most common non-zero file length, if it can be a real setting.
    fn size(&self, lens: impl Iterator<Item = u64>, notes: &mut Vec<String>) -> Result<u64> {
        let Some(size) = most_common(lens.filter(|l| *l > 0)) else {
            return Ok(self.default);
        };
        if size % self.multiple != 0 {
            return Err(Error::SizeUnknown {
                what: self.what,
                size,
                multiple: self.multiple,
                option: self.option,
            });
        }
        if size != self.default {
            notes.push(format!(
                "{} file size {size} inferred from the files",
                self.what
            ));
        }
        Ok(size)
    }
}

/// Fails unless `config`'s store root is a directory holding a store: a
/// commit log directory, a consumequeue directory or a checkpoint (a broker
/// creates the first two when it first starts). An empty or unrelated
/// directory must not be reported clean, nor get a lock file from repair.
pub fn ensure_store(config: &StoreConfig) -> Result<()> {
    let root = &config.store_path_root_dir;
    if !root.is_dir() {
        return Err(Error::NotADirectory(root.clone()));
    }
    let found = [
        config.commit_log_dir(),
        config.consume_queue_dir(),
        config.checkpoint_path(),
    ]
    .iter()
    .any(|p| p.exists());
    if found {
        Ok(())
    } else {
        Err(Error::NoStore(root.clone()))
    }
}

/// Fails with [`Error::InUse`] when another process (a running broker)
/// holds the store's lock. Only tests the lock, so check creates and
/// changes nothing; repair's own lock does not count.
pub fn ensure_not_in_use(config: &StoreConfig) -> Result<()> {
    if engine::checkpoint::StoreLock::held_elsewhere(&config.lock_path()) {
        return Err(Error::InUse(config.store_path_root_dir.clone()));
    }
    Ok(())
}

fn open_named(dir: &Path) -> Result<(Vec<NamedFile>, Vec<PathBuf>)> {
    let mut files = Vec::new();
    let mut strays = Vec::new();
    for (name, path) in list_dir(dir)? {
        // Offsets are Java longs (RocketMQ parses the name as one; records
        // and queue entries hold them): a larger name is no store file, and
        // its offsets would overflow.
        let start = parse_file_name(&name).filter(|s| i64::try_from(*s).is_ok());
        match start {
            Some(start) if path.is_file() => files.push(NamedFile {
                start,
                file: Mapped::open(&path)?,
            }),
            _ => strays.push(path),
        }
    }
    files.sort_by_key(|f| f.start);
    Ok((files, strays))
}

impl Store {
    /// Lists and maps every store file. Fails only when the store cannot be
    /// read at all (exit code 2).
    pub fn open(settings: &Settings) -> Result<Store> {
        let config = &settings.config;
        let root = config.store_path_root_dir.clone();
        ensure_store(config)?;
        ensure_not_in_use(config)?;
        let mut notes = Vec::new();
        let commitlog_dir = config.commit_log_dir();
        let (commitlog, commitlog_strays) = open_named(&commitlog_dir)?;
        let commitlog_size = if settings.commitlog_size_given {
            config.mapped_file_size_commit_log
        } else {
            // Real settings are whole pages (RocketMQ's 1 GiB default; the
            // engine warms and flushes files page by page).
            Inferred {
                what: "commit log",
                multiple: OS_PAGE_SIZE,
                option: "--commitlog-size",
                default: config.mapped_file_size_commit_log,
            }
            .size(commitlog.iter().map(|f| f.file.len), &mut notes)?
        };

        let cq_root = config.consume_queue_dir();
        let mut queues = Vec::new();
        let mut cq_strays = Vec::new();
        for (topic, tdir) in list_dir(&cq_root)? {
            if !tdir.is_dir() {
                cq_strays.push(tdir);
                continue;
            }
            for (qname, qdir) in list_dir(&tdir)? {
                let qid = qname.parse::<i32>().ok().filter(|q| q.to_string() == qname);
                match qid {
                    Some(queue_id) if qdir.is_dir() => {
                        let (files, strays) = open_named(&qdir)?;
                        queues.push(QueueDir {
                            topic: topic.clone(),
                            queue_id,
                            dir: qdir,
                            files,
                            strays,
                        });
                    }
                    _ => cq_strays.push(qdir),
                }
            }
        }
        let cq_size = if settings.cq_size_given {
            config.consume_queue_file_size()
        } else {
            // RocketMQ rounds the setting up to whole entries.
            Inferred {
                what: "consume queue",
                multiple: CQ_ENTRY_SIZE,
                option: "--cq-size",
                default: config.consume_queue_file_size(),
            }
            .size(
                queues
                    .iter()
                    .flat_map(|q| q.files.iter().map(|f| f.file.len)),
                &mut notes,
            )?
        };

        let index_layout = IndexLayout::from_config(config)?;
        let mut index = Vec::new();
        let mut index_strays = Vec::new();
        for (name, path) in list_dir(&config.index_dir())? {
            if name.len() == 17 && name.bytes().all(|b| b.is_ascii_digit()) && path.is_file() {
                index.push(Mapped::open(&path)?);
            } else {
                index_strays.push(path);
            }
        }

        // Index files have the full layout size from creation (RocketMQ's and
        // ours): when none has the size of a layout that was not given, the
        // store was written with other settings. Checked against them, every
        // index file would be "damaged" and repair would rebuild the index
        // in a layout the broker does not use.
        let sized: Vec<&Mapped> = index.iter().filter(|m| m.len > 0).collect();
        let expected = index_layout.file_size();
        if !settings.index_layout_given
            && !sized.is_empty()
            && sized.iter().all(|m| m.len != expected)
        {
            return Err(Error::IndexLayoutUnknown {
                file: sized[0].path.clone(),
                size: sized[0].len,
                slots: index_layout.hash_slot_num,
                entries: index_layout.index_num,
                expected,
            });
        }

        let mut config = config.clone();
        config.mapped_file_size_commit_log = commitlog_size;
        config.mapped_file_size_consume_queue = cq_size;
        // The sizes divide offsets later: a zero or tiny one (given through the
        // library API) must stop here, by the engine's rules.
        config.validate()?;
        Ok(Store {
            root,
            config,
            commitlog_size,
            cq_size,
            index_layout,
            commitlog_dir,
            commitlog,
            commitlog_strays,
            queues,
            cq_strays,
            index,
            index_strays,
            notes,
        })
    }

    /// The commit log's min offset: the start of its first file. Retention
    /// deletes the oldest files but keeps a consume-queue or index file while
    /// any entry in it is still live, so entries below this are expired (as
    /// RocketMQ's `correctMinOffset` treats them), not damaged.
    pub fn commitlog_min(&self) -> Option<u64> {
        self.commitlog.first().map(|f| f.start)
    }

    /// The commit log file holding absolute offset `phys` and the position in it.
    pub fn locate(&self, phys: u64) -> Option<(&NamedFile, usize)> {
        let i = self
            .commitlog
            .partition_point(|f| f.start <= phys)
            .checked_sub(1)?;
        let f = &self.commitlog[i];
        let rel = phys - f.start;
        (rel < f.file.len).then_some((f, rel as usize))
    }

    /// Total bytes of every mapped file (for progress).
    pub fn total_bytes(&self) -> u64 {
        self.commitlog.iter().map(|f| f.file.len).sum::<u64>()
            + self
                .queues
                .iter()
                .flat_map(|q| q.files.iter().map(|f| f.file.len))
                .sum::<u64>()
            + self.index.iter().map(|f| f.len).sum::<u64>()
    }

    /// Queues by (topic, queueId).
    pub fn queue_map(&self) -> HashMap<(&str, i32), &QueueDir> {
        self.queues
            .iter()
            .map(|q| ((q.topic.as_str(), q.queue_id), q))
            .collect()
    }
}
