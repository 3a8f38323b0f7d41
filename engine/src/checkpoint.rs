//! The `checkpoint`, `abort` and `lock` files (store.md §9).
//!
//! `checkpoint` is 4 KiB: physicMsgTimestamp, logicsMsgTimestamp and
//! indexMsgTimestamp as big-endian i64 at 0, 8 and 16. RocketMQ ignores the
//! rest, so we keep one extension there: at 24 a magic word and at 32 the
//! commit log offset below which every consume-queue and index entry is
//! durable ("dispatched and flushed"). Recovery re-dispatches from it instead
//! of guessing from timestamps, which is how Apache RocketMQ loses messages
//! after an abnormal recovery. A store written by Apache RocketMQ lacks the
//! magic word and is recovered by the timestamp rule.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};

use crate::dir::sync_dir;
use crate::error::{Result, StoreError};

pub const CHECKPOINT_SIZE: usize = 4096;
const EXTENSION_MAGIC: u64 = 0x524D_5144_4953_5031; // "RMQDISP1"

/// The three RocketMQ timestamps plus our dispatch offset.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Checkpoint {
    pub physic_msg_timestamp: i64,
    pub logics_msg_timestamp: i64,
    pub index_msg_timestamp: i64,
    /// Every derived entry for records below this offset is durable.
    pub dispatched_offset: Option<u64>,
}

impl Checkpoint {
    pub fn encode(&self) -> [u8; CHECKPOINT_SIZE] {
        let mut b = [0u8; CHECKPOINT_SIZE];
        b[0..8].copy_from_slice(&self.physic_msg_timestamp.to_be_bytes());
        b[8..16].copy_from_slice(&self.logics_msg_timestamp.to_be_bytes());
        b[16..24].copy_from_slice(&self.index_msg_timestamp.to_be_bytes());
        if let Some(d) = self.dispatched_offset {
            b[24..32].copy_from_slice(&EXTENSION_MAGIC.to_be_bytes());
            b[32..40].copy_from_slice(&d.to_be_bytes());
        }
        b
    }

    pub fn decode(b: &[u8]) -> Option<Self> {
        if b.len() < 24 {
            return None;
        }
        let i = |at: usize| i64::from_be_bytes(b[at..at + 8].try_into().unwrap_or([0; 8]));
        let dispatched_offset = (b.len() >= 40
            && u64::from_be_bytes(b[24..32].try_into().unwrap_or([0; 8])) == EXTENSION_MAGIC)
            .then(|| i(32) as u64);
        Some(Checkpoint {
            physic_msg_timestamp: i(0),
            logics_msg_timestamp: i(8),
            index_msg_timestamp: i(16),
            dispatched_offset,
        })
    }

    /// Reads the checkpoint file; a missing file is an all-zero checkpoint,
    /// and so is one shorter than its three timestamps: a crash right after
    /// the file was created leaves it empty, and it then records nothing
    /// (RocketMQ maps the file at 4 KiB and reads zeros too).
    pub fn load(path: &Path) -> Result<Self> {
        match std::fs::read(path) {
            Ok(b) => Ok(Checkpoint::decode(&b).unwrap_or_else(|| {
                tracing::warn!(
                    "{} holds {} bytes, fewer than its three timestamps; recovering without it",
                    path.display(),
                    b.len()
                );
                Checkpoint::default()
            })),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Checkpoint::default()),
            Err(e) => Err(StoreError::io(path, e)),
        }
    }

    /// Writes the whole 4 KiB in place and syncs it.
    pub fn store(&self, path: &Path) -> Result<()> {
        let f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map_err(|e| StoreError::io(path, e))?;
        f.write_all_at(&self.encode(), 0)
            .and_then(|_| f.sync_data())
            .map_err(|e| StoreError::io(path, e))
    }
}

/// The exclusive `lock` file, held for the store's lifetime (a POSIX record
/// lock on byte 0, as Java's `FileChannel.tryLock(0, 1, false)` takes).
pub struct StoreLock {
    _file: File,
}

impl StoreLock {
    pub fn acquire(path: &Path) -> Result<Self> {
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map_err(|e| StoreError::io(path, e))?;
        let mut fl = Self::byte_zero();
        // SAFETY: fcntl on our own open fd with a filled-in flock.
        let rc = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_SETLK, &mut fl) };
        if rc != 0 {
            let dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
            return Err(StoreError::Locked(dir));
        }
        file.write_all_at(b"lock", 0)
            .and_then(|_| file.flush())
            .map_err(|e| StoreError::io(path, e))?;
        Ok(StoreLock { _file: file })
    }

    /// Whether another process holds the lock at `path` (a running broker,
    /// RocketMQ's or ours). Only tests it: creates and changes nothing. A
    /// lock file that cannot be opened tells nothing, so `false`. This
    /// process's own lock does not count.
    pub fn held_elsewhere(path: &Path) -> bool {
        let Ok(file) = File::open(path) else {
            return false;
        };
        let mut fl = Self::byte_zero();
        // SAFETY: fcntl on our own open fd with a filled-in flock.
        let rc = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_GETLK, &mut fl) };
        rc == 0 && fl.l_type != libc::F_UNLCK as libc::c_short
    }

    /// A write lock of byte 0, the range Java's `tryLock(0, 1, false)` takes.
    fn byte_zero() -> libc::flock {
        // SAFETY: flock is plain data; all-zero is a valid value.
        let mut fl: libc::flock = unsafe { std::mem::zeroed() };
        fl.l_type = libc::F_WRLCK as libc::c_short;
        fl.l_whence = libc::SEEK_SET as libc::c_short;
        fl.l_start = 0;
        fl.l_len = 1;
        fl
    }
}

/// The `abort` marker: present while the store runs; found at start-up it
/// means the last run did not stop cleanly.
pub struct AbortFile {
    path: PathBuf,
}

impl AbortFile {
    pub fn new(path: PathBuf) -> Self {
        AbortFile { path }
    }
    pub fn exists(&self) -> bool {
        self.path.exists()
    }
    pub fn create(&self) -> Result<()> {
        File::create(&self.path)
            .and_then(|f| f.sync_all())
            .map_err(|e| StoreError::io(&self.path, e))?;
        sync_dir(self.path.parent())
    }
    pub fn remove(&self) -> Result<()> {
        match std::fs::remove_file(&self.path) {
            Ok(()) => sync_dir(self.path.parent()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(StoreError::io(&self.path, e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_is_rocketmqs() {
        let c = Checkpoint {
            physic_msg_timestamp: 1,
            logics_msg_timestamp: 2,
            index_msg_timestamp: 3,
            dispatched_offset: Some(77),
        };
        let b = c.encode();
        assert_eq!(&b[0..8], &1i64.to_be_bytes());
        assert_eq!(&b[8..16], &2i64.to_be_bytes());
        assert_eq!(&b[16..24], &3i64.to_be_bytes());
        assert_eq!(Checkpoint::decode(&b), Some(c));
        // An Apache RocketMQ checkpoint: no extension.
        let mut java = [0u8; CHECKPOINT_SIZE];
        java[0..8].copy_from_slice(&5i64.to_be_bytes());
        let d = Checkpoint::decode(&java).unwrap();
        assert_eq!(d.physic_msg_timestamp, 5);
        assert_eq!(d.dispatched_offset, None);
    }
}
