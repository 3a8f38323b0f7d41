//! The message store: RocketMQ 4.x's on-disk format with a faster engine.
//!
//! Data flows one way: a frontend calls [`MessageStore`]'s API, the store
//! appends records to the [`commit_log`], the flusher makes them durable, and
//! the dispatcher ("reput") derives consume queues and the key index from the
//! commit log. The engine knows nothing about the network.

pub mod allocator;
pub mod background;
pub mod checkpoint;
pub mod commit_log;
pub mod config;
pub mod consume_queue;
pub mod dir;
pub mod dispatch;
pub mod error;
pub mod flusher;
pub mod group_commit;
pub mod index;
pub mod mapped_file;
pub mod prefault;
pub mod read;
pub mod record;
pub mod replication;
pub mod retention;
pub mod schedule;
pub mod store;
mod word_map;
pub mod zero_ahead;

pub use config::{BrokerRole, FlushDiskType, FlushMechanism, Properties, StoreConfig};
pub use error::{Result, StoreError};
pub use group_commit::FlushStats;
pub use read::{AcceptAll, GetMessageResult, GetMessageStatus, MessageFilter, TagCodes};
pub use record::{Decoded, MessageToStore, RecordView};
pub use replication::{Replication, SlaveSession};
pub use retention::{Clock, DiskUsage, ManualClock, RetentionRound, StoreHooks};
pub use store::{MessageStore, PutResult, PutStatus, StoredMessage};
