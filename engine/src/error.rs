//! The engine's one error type. Callers act on the category: bad input is the
//! caller's fault, corruption needs fsck, I/O and `ReadOnly` mean the store can
//! no longer promise durability and refuses writes until it is reopened.

use std::path::PathBuf;

/// Everything that can go wrong inside the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The request itself is invalid (too large, bad topic, ...). Nothing was written.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// A file on disk does not have the shape RocketMQ's format requires.
    #[error("corruption in {path}: {detail}")]
    Corruption { path: PathBuf, detail: String },
    /// An operating-system call failed.
    #[error("I/O error on {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A previous flush failed (or the disk is full); the store refuses writes so
    /// that nothing is acknowledged that may not be durable.
    #[error("store is read-only after an earlier failure: {0}")]
    ReadOnly(String),
    /// The disk holding the store is nearly full (store.md §11.8 disk guard):
    /// appends are refused until retention frees space. Nothing was written;
    /// the broker answers SERVICE_NOT_AVAILABLE.
    #[error("disk full: {0}")]
    DiskFull(String),
    /// Dispatch into the consume queues or the index is failing (a full
    /// disk, most likely): appends are refused until it succeeds again, so
    /// no acknowledged message waits long for its queue entry. Nothing was
    /// written; the broker answers SERVICE_NOT_AVAILABLE.
    #[error("dispatch to the consume queues is failing: {0}")]
    DispatchStalled(String),
    /// The store is a slave's (`brokerRole=SLAVE`): it takes records only
    /// from its master (replication). The broker answers SERVICE_NOT_AVAILABLE.
    #[error("message store is slave mode, so putMessage is forbidden")]
    SlaveMode,
    /// The store has been shut down.
    #[error("store is shut down")]
    ShutDown,
    /// Another process holds the store's lock file.
    #[error("store directory {0} is locked by another process")]
    Locked(PathBuf),
    /// Configuration could not be parsed.
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
}

impl StoreError {
    /// Wraps an `io::Error` with the path it happened on.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        StoreError::Io {
            path: path.into(),
            source,
        }
    }

    pub fn corruption(path: impl Into<PathBuf>, detail: impl Into<String>) -> Self {
        StoreError::Corruption {
            path: path.into(),
            detail: detail.into(),
        }
    }
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;
