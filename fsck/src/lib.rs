//! `rmq-fsck`: checks and repairs a RocketMQ 4.x-format store offline.
//!
//! `check` reads every file without changing a byte and reports each problem
//! with its file and offset; `repair` fixes what check finds. fsck uses only
//! the engine crate's public API (record decoding, file naming, formats, and
//! `MessageStore::open` to rebuild derived files) plus plain file reading.
//!
//! # Damaged records between valid ones
//!
//! A torn tail (garbage after the last whole record, no valid record after
//! it) is what a crash leaves; repair zeroes it, as the engine's recovery
//! would. A broken record with whole records *after* it is corruption (a
//! flipped bit, a bad sector), and the engine refuses to start on it rather
//! than drop what follows. Repair must neither drop the following records nor
//! invent data, so it replaces exactly the damaged bytes — from the broken
//! record's start to the next whole record, which the scan finds by its magic
//! code, PHYSICALOFFSET field and body CRC — with one *quarantine record* of
//! the same length:
//! * a well-formed message record (valid CRC) at the same offset, so recovery
//!   and dispatch walk past it and every later record stays where it was
//!   (its offsetMsgId, consume-queue entry and index entries stay valid);
//! * transaction type ROLLBACK, so the dispatcher gives it no consume-queue
//!   entry and no index keys: no consumer ever receives it, and its original
//!   queue simply has a gap at that queue offset (readers skip the padding);
//! * topic `FSCK_DAMAGED`, property `FSCK=1`, body = the first bytes of the
//!   damaged data; the exact original bytes are saved in the backup
//!   directory (`<file>.at-<offset>`).
//!
//! A damaged region with no whole record after it in its file, while later
//! files hold records, becomes an end-of-file blank record (the format's
//! "rest of this file is unused"). A wrong PHYSICALOFFSET field on an
//! otherwise whole record (CRC intact) is rewritten to the record's position.
//!
//! # Damaged header fields the body CRC does not cover
//!
//! A flipped bit in a whole record's QUEUEOFFSET, QUEUEID or topic leaves
//! the record valid, and its consume-queue entry still serves the message.
//! Rebuilding that queue from the commit log would then drop the message
//! (or move it to the queue the damaged header names), so when the entry
//! and the record agree in everything else (size, tag code, and queue
//! offset or the entry's place in the queue's commit log order) repair
//! rewrites the field in place from the entry and keeps the queue. A topic
//! or queue id is rewritten only when nothing else in the store has the
//! queue the header names (no consume queue, no other record, for a topic
//! no topics.json entry); otherwise fsck cannot tell which side is damaged,
//! and repair leaves the record and both queues as they are and reports it
//! ("cannot repair"), while still repairing everything else.

pub mod check;
pub mod commitlog;
pub mod error;
pub mod indexfiles;
pub mod meta;
pub mod progress;
pub mod queues;
pub mod repair;
pub mod report;
pub mod store;

pub use check::{check, Checked};
pub use error::Error;
pub use repair::{repair, RepairOptions, RepairOutcome};
pub use report::{Kind, Problem, Report};
pub use store::Settings;
