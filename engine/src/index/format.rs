//! The IndexFile byte format (store.md §8) and a read-only parser over a
//! file's bytes, for the engine and for offline tools (fsck).
//!
//! ```text
//! [ header 40 B ][ hash slots: slotNum × 4 B ][ entries: indexNum × 20 B ]
//! ```
//! Slot value = number of the newest entry of that slot's chain (0 = empty);
//! entry 0 is never used; each entry links to the previous (older) one.

use crate::config::StoreConfig;
use crate::record::java_string_hash;

pub const INDEX_HEADER_SIZE: usize = 40;
pub const HASH_SLOT_SIZE: usize = 4;
pub const INDEX_ENTRY_SIZE: usize = 20;

/// Why a byte buffer is not an index file of the expected layout.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IndexFormatError {
    #[error("index file is {actual} bytes; {slots} slots and {entries} entries need {expected}")]
    WrongSize {
        actual: u64,
        expected: u64,
        slots: u32,
        entries: u32,
    },
    #[error("maxHashSlotNum {slots} / maxIndexNum {entries} must be in 1..=2147483647 (maxIndexNum >= 2)")]
    BadLayout { slots: u64, entries: u64 },
}

/// The index file header (store.md §8), field types as on disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct IndexHeader {
    /// Store time of the first entry (ms).
    pub begin_timestamp: i64,
    /// Store time of the last entry (ms).
    pub end_timestamp: i64,
    /// Commit log offset of the first entry's message.
    pub begin_phy_offset: i64,
    /// Commit log offset of the last entry's message.
    pub end_phy_offset: i64,
    /// Number of non-empty hash slots.
    pub hash_slot_count: i32,
    /// Next entry number; starts at 1 (entry 0 is unused).
    pub index_count: i32,
}

impl IndexHeader {
    pub const SIZE: usize = INDEX_HEADER_SIZE;

    /// Decodes the first 40 bytes of `b`; `None` if fewer are given. Values
    /// are returned verbatim (see [`effective_index_count`](Self::effective_index_count)).
    pub fn parse(b: &[u8]) -> Option<IndexHeader> {
        let b = b.get(..INDEX_HEADER_SIZE)?;
        let i64_at = |p: usize| i64::from_be_bytes(b[p..p + 8].try_into().unwrap_or([0; 8]));
        let i32_at = |p: usize| i32::from_be_bytes(b[p..p + 4].try_into().unwrap_or([0; 4]));
        Some(IndexHeader {
            begin_timestamp: i64_at(0),
            end_timestamp: i64_at(8),
            begin_phy_offset: i64_at(16),
            end_phy_offset: i64_at(24),
            hash_slot_count: i32_at(32),
            index_count: i32_at(36),
        })
    }

    pub fn encode(&self) -> [u8; INDEX_HEADER_SIZE] {
        let mut b = [0u8; INDEX_HEADER_SIZE];
        b[0..8].copy_from_slice(&self.begin_timestamp.to_be_bytes());
        b[8..16].copy_from_slice(&self.end_timestamp.to_be_bytes());
        b[16..24].copy_from_slice(&self.begin_phy_offset.to_be_bytes());
        b[24..32].copy_from_slice(&self.end_phy_offset.to_be_bytes());
        b[32..36].copy_from_slice(&self.hash_slot_count.to_be_bytes());
        b[36..40].copy_from_slice(&self.index_count.to_be_bytes());
        b
    }

    /// `index_count`, with a value ≤ 0 read as 1, as RocketMQ loads it.
    pub fn effective_index_count(&self) -> i32 {
        self.index_count.max(1)
    }

    /// RocketMQ's `isTimeMatched`: whether `[begin, end]` overlaps the file's range.
    pub fn time_matched(&self, begin: i64, end: i64) -> bool {
        time_matched(self.begin_timestamp, self.end_timestamp, begin, end)
    }
}

pub(crate) fn time_matched(file_begin: i64, file_end: i64, begin: i64, end: i64) -> bool {
    (begin < file_begin && end > file_end)
        || (begin >= file_begin && begin <= file_end)
        || (end >= file_begin && end <= file_end)
}

/// One index entry (store.md §8), field types as on disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct IndexEntry {
    /// [`key_hash`] of the indexed key.
    pub key_hash: i32,
    /// Commit log offset of the message.
    pub phy_offset: i64,
    /// `(storeTimestamp − header.beginTimestamp) / 1000`, clamped to `[0, i32::MAX]`.
    pub time_diff: i32,
    /// Number of the previous (older) entry in the same slot; 0 ends the chain.
    pub prev_index: i32,
}

impl IndexEntry {
    pub const SIZE: usize = INDEX_ENTRY_SIZE;

    pub fn parse(b: &[u8]) -> Option<IndexEntry> {
        let b = b.get(..INDEX_ENTRY_SIZE)?;
        Some(IndexEntry {
            key_hash: i32::from_be_bytes(b[0..4].try_into().ok()?),
            phy_offset: i64::from_be_bytes(b[4..12].try_into().ok()?),
            time_diff: i32::from_be_bytes(b[12..16].try_into().ok()?),
            prev_index: i32::from_be_bytes(b[16..20].try_into().ok()?),
        })
    }

    pub fn encode(&self) -> [u8; INDEX_ENTRY_SIZE] {
        let mut b = [0u8; INDEX_ENTRY_SIZE];
        b[0..4].copy_from_slice(&self.key_hash.to_be_bytes());
        b[4..12].copy_from_slice(&self.phy_offset.to_be_bytes());
        b[12..16].copy_from_slice(&self.time_diff.to_be_bytes());
        b[16..20].copy_from_slice(&self.prev_index.to_be_bytes());
        b
    }

    /// The store time the query path reconstructs: `begin + time_diff × 1000`.
    pub fn timestamp(&self, header_begin_timestamp: i64) -> i64 {
        // Saturating: a damaged header must not overflow (the product fits).
        header_begin_timestamp.saturating_add(self.time_diff as i64 * 1000)
    }
}

/// `timeDiff` for a message stored at `store_timestamp` in a file whose
/// header begins at `begin_timestamp` (0 when the header has no begin yet).
pub fn time_diff(store_timestamp: i64, begin_timestamp: i64) -> i32 {
    if begin_timestamp <= 0 {
        return 0;
    }
    (store_timestamp.saturating_sub(begin_timestamp) / 1000).clamp(0, i32::MAX as i64) as i32
}

/// The index key of `key` in `topic`: `TOPIC#key`.
pub fn build_key(topic: &str, key: &str) -> String {
    let mut s = String::with_capacity(topic.len() + 1 + key.len());
    s.push_str(topic);
    s.push('#');
    s.push_str(key);
    s
}

/// `abs(String.hashCode(key))`, 0 for `Integer.MIN_VALUE` (whose abs is itself).
pub fn key_hash(key: &str) -> i32 {
    let h = java_string_hash(key).wrapping_abs();
    if h < 0 {
        0
    } else {
        h
    }
}

/// Sizes of an index file's regions: `maxHashSlotNum` and `maxIndexNum`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IndexLayout {
    pub hash_slot_num: u32,
    pub index_num: u32,
}

impl IndexLayout {
    /// RocketMQ's default: 5,000,000 slots, 20,000,000 entries (420,000,040 bytes).
    pub const DEFAULT: IndexLayout = IndexLayout {
        hash_slot_num: 5_000_000,
        index_num: 20_000_000,
    };

    /// A layout with both counts in `1..=i32::MAX` (`index_num` ≥ 2, since
    /// entry 0 is unused).
    pub fn new(hash_slot_num: u64, index_num: u64) -> Result<Self, IndexFormatError> {
        let ok = (1..=i32::MAX as u64).contains(&hash_slot_num)
            && (2..=i32::MAX as u64).contains(&index_num);
        if !ok {
            return Err(IndexFormatError::BadLayout {
                slots: hash_slot_num,
                entries: index_num,
            });
        }
        Ok(IndexLayout {
            hash_slot_num: hash_slot_num as u32,
            index_num: index_num as u32,
        })
    }

    /// `maxHashSlotNum` / `maxIndexNum` from the config.
    pub fn from_config(config: &StoreConfig) -> Result<Self, IndexFormatError> {
        Self::new(config.max_hash_slot_num, config.max_index_num)
    }

    /// Total file size: `40 + slots × 4 + entries × 20`.
    pub fn file_size(&self) -> u64 {
        INDEX_HEADER_SIZE as u64
            + self.hash_slot_num as u64 * HASH_SLOT_SIZE as u64
            + self.index_num as u64 * INDEX_ENTRY_SIZE as u64
    }

    /// The slot a key hash belongs to.
    pub fn slot_of(&self, key_hash: i32) -> u32 {
        (key_hash.max(0) as u32) % self.hash_slot_num
    }

    /// Byte position of slot `slot`.
    pub fn slot_pos(&self, slot: u32) -> usize {
        INDEX_HEADER_SIZE + slot as usize * HASH_SLOT_SIZE
    }

    /// Byte position of entry number `n`.
    pub fn entry_pos(&self, n: u32) -> usize {
        INDEX_HEADER_SIZE
            + self.hash_slot_num as usize * HASH_SLOT_SIZE
            + n as usize * INDEX_ENTRY_SIZE
    }
}

/// A read-only view of a whole index file's bytes (e.g. an fsck tool's
/// read-only mapping), never panicking on bad content.
#[derive(Debug, Clone, Copy)]
pub struct IndexFileView<'a> {
    bytes: &'a [u8],
    layout: IndexLayout,
}

impl<'a> IndexFileView<'a> {
    /// Checks that `bytes` has exactly the layout's size.
    pub fn new(bytes: &'a [u8], layout: IndexLayout) -> Result<Self, IndexFormatError> {
        if bytes.len() as u64 != layout.file_size() {
            return Err(IndexFormatError::WrongSize {
                actual: bytes.len() as u64,
                expected: layout.file_size(),
                slots: layout.hash_slot_num,
                entries: layout.index_num,
            });
        }
        Ok(IndexFileView { bytes, layout })
    }

    pub fn layout(&self) -> IndexLayout {
        self.layout
    }

    pub fn header(&self) -> IndexHeader {
        IndexHeader::parse(self.bytes).unwrap_or_default()
    }

    /// Raw value of slot `slot` (`None` if out of range).
    pub fn slot(&self, slot: u32) -> Option<i32> {
        if slot >= self.layout.hash_slot_num {
            return None;
        }
        let p = self.layout.slot_pos(slot);
        Some(i32::from_be_bytes(self.bytes[p..p + 4].try_into().ok()?))
    }

    /// Entry number `n` (`None` if outside the entry region).
    pub fn entry(&self, n: u32) -> Option<IndexEntry> {
        if n >= self.layout.index_num {
            return None;
        }
        IndexEntry::parse(&self.bytes[self.layout.entry_pos(n)..])
    }

    /// Entries `1..effective_index_count()` (clamped to the layout), with their numbers.
    pub fn entries(&self) -> impl Iterator<Item = (u32, IndexEntry)> + 'a {
        let view = *self;
        let count = (view.header().effective_index_count() as u32).min(view.layout.index_num);
        (1..count).filter_map(move |n| view.entry(n).map(|e| (n, e)))
    }

    /// The chain of `slot`, newest first, as the query path walks it: stops
    /// at a prev of 0, a number outside `1..index_count`, or a number not
    /// smaller than the current one (which also rules out cycles).
    pub fn chain(&self, slot: u32) -> impl Iterator<Item = (u32, IndexEntry)> + 'a {
        let view = *self;
        let count = view.header().effective_index_count();
        let mut next = view.slot(slot).unwrap_or(0);
        std::iter::from_fn(move || {
            if next <= 0 || next >= count {
                return None;
            }
            let n = next as u32;
            let e = view.entry(n)?;
            next = if e.prev_index < next { e.prev_index } else { 0 };
            Some((n, e))
        })
    }
}
