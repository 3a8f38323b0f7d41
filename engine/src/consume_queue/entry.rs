//! The 20-byte consume-queue entry (store.md §7.1), as it is on disk.

/// Size of one consume-queue entry in bytes.
pub const CQ_ENTRY_SIZE: u64 = 20;

/// `size` of the placeholder entries that pad a queue's first file up to its
/// min offset (store.md §7.3): `(0, 0x7FFFFFFF, 0)`.
pub const PLACEHOLDER_SIZE: i32 = i32::MAX;

/// One consume-queue entry with its on-disk field types (big-endian on disk).
///
/// Values come straight from the file, so an entry may be a placeholder
/// ([`is_placeholder`](Self::is_placeholder)) or invalid (zeros past the end of
/// written data, garbage after a crash); the read path must only fetch
/// messages for entries where [`is_message`](Self::is_message) holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CqEntry {
    /// Commit log offset of the record's first byte.
    pub phys_offset: i64,
    /// The record's TOTALSIZE.
    pub size: i32,
    /// Java `String.hashCode()` of TAGS sign-extended (store.md §7.2), the
    /// delivery time for `SCHEDULE_TOPIC_XXXX`, or a consume-queue-ext address.
    pub tags_code: i64,
}

impl CqEntry {
    /// The padding entry written before a queue's min offset.
    pub const PLACEHOLDER: CqEntry = CqEntry {
        phys_offset: 0,
        size: PLACEHOLDER_SIZE,
        tags_code: 0,
    };

    /// The on-disk bytes: phys offset (i64 BE), size (i32 BE), tags code (i64 BE).
    pub fn encode(&self) -> [u8; CQ_ENTRY_SIZE as usize] {
        let mut b = [0u8; CQ_ENTRY_SIZE as usize];
        b[0..8].copy_from_slice(&self.phys_offset.to_be_bytes());
        b[8..12].copy_from_slice(&self.size.to_be_bytes());
        b[12..20].copy_from_slice(&self.tags_code.to_be_bytes());
        b
    }

    /// Decodes the first 20 bytes of `b`; `None` if fewer are given.
    pub fn decode(b: &[u8]) -> Option<CqEntry> {
        let b: &[u8; 20] = b.get(..20)?.try_into().ok()?;
        Some(CqEntry {
            phys_offset: i64::from_be_bytes(b[0..8].try_into().ok()?),
            size: i32::from_be_bytes(b[8..12].try_into().ok()?),
            tags_code: i64::from_be_bytes(b[12..20].try_into().ok()?),
        })
    }

    /// Recovery's validity rule (store.md §11.7 step 2): phys offset ≥ 0 and size > 0.
    /// Placeholders are valid.
    pub fn is_valid(&self) -> bool {
        self.phys_offset >= 0 && self.size > 0
    }

    /// A padding entry `(0, 0x7FFFFFFF, 0)`; it references no message.
    pub fn is_placeholder(&self) -> bool {
        self.phys_offset == 0 && self.size == PLACEHOLDER_SIZE
    }

    /// Valid and not a placeholder: references a commit log record.
    pub fn is_message(&self) -> bool {
        self.is_valid() && !self.is_placeholder()
    }

    /// First commit log byte after the referenced record (`offset + size`).
    /// Meaningful only for [`is_message`](Self::is_message) entries.
    pub fn phys_end(&self) -> u64 {
        (self.phys_offset as u64).saturating_add(self.size as u64)
    }

    /// Whether `tags_code` is an address into `consumequeue_ext` rather than a
    /// tag hash (any value ≤ `i32::MIN - 1`, store.md §7.2).
    pub fn tags_code_is_ext_address(&self) -> bool {
        self.tags_code < i32::MIN as i64
    }
}
