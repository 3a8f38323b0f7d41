//! One live, memory-mapped index file: the writer's insert, the readers'
//! chain walk, and recovery-time truncation.
//!
//! The header lives twice: in the mapping (for persistence) and in atomics
//! (for readers, so an 8-byte field is never read torn). The writer fills an
//! entry, then stores the slot with `Release`, then updates the header
//! atomics; a reader loads the slot with `Acquire` and therefore sees the
//! entry and every older entry of the chain complete.

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicI64, AtomicU64, Ordering};

use super::format::{time_diff, IndexEntry, IndexHeader, IndexLayout, INDEX_ENTRY_SIZE};
use crate::error::Result;
use crate::word_map::WordMap;

/// One key query's state across the files it walks (see [`IndexFile::select`]).
pub(crate) struct Select<'a> {
    pub(crate) key_hash: i32,
    pub(crate) max_num: usize,
    pub(crate) begin: i64,
    pub(crate) end: i64,
    /// Offers left to `accept`.
    pub(crate) budget: usize,
    /// Whether an offset really is the key's message.
    pub(crate) accept: &'a mut dyn FnMut(u64) -> bool,
}

pub(crate) struct IndexFile {
    pub(crate) name: String,
    map: WordMap,
    layout: IndexLayout,
    begin_timestamp: AtomicI64,
    end_timestamp: AtomicI64,
    begin_phy_offset: AtomicI64,
    end_phy_offset: AtomicI64,
    hash_slot_count: AtomicI32,
    index_count: AtomicI32,
    /// Set after every change, cleared by a flush that will cover it.
    dirty: AtomicBool,
    /// Bytes from the start known to have their blocks (writer only).
    allocated: AtomicU64,
}

/// How far ahead of the next entry an index file's blocks are allocated:
/// a default file is 420 MB, nearly all entries, and a sparse page written
/// through the mapping on a full disk is a SIGBUS.
const ENTRY_ALLOCATION_STEP: u64 = 1 << 20;

impl IndexFile {
    /// Creates a new file whose header begin/end values are pre-set to `prev`'s
    /// end values (or zeros for the first file).
    pub(crate) fn create(
        dir: &Path,
        name: &str,
        layout: IndexLayout,
        prev_end: Option<(i64, i64)>,
    ) -> Result<Self> {
        // The header and hash slots (written anywhere) now; the entries,
        // written in order, a step at a time ahead of the writer (`put`).
        let allocated = layout.entry_pos(0) as u64 + ENTRY_ALLOCATION_STEP;
        let map = WordMap::create(&dir.join(name), layout.file_size(), allocated)?;
        let (ts, phy) = prev_end.unwrap_or((0, 0));
        let f = Self::with_header(
            name,
            map,
            layout,
            allocated,
            IndexHeader {
                begin_timestamp: ts,
                end_timestamp: ts,
                begin_phy_offset: phy,
                end_phy_offset: phy,
                hash_slot_count: 0,
                index_count: 1,
            },
        );
        f.write_header();
        f.dirty.store(true, Ordering::Release);
        Ok(f)
    }

    /// Opens an existing file; an index count ≤ 0 is read as 1 and one beyond
    /// the layout is clamped (with a warning).
    pub(crate) fn open(dir: &Path, name: &str, layout: IndexLayout) -> Result<Self> {
        let map = WordMap::open(&dir.join(name), layout.file_size())?;
        let mut raw = [0u8; IndexHeader::SIZE];
        map.read_into(0, &mut raw);
        let mut h = IndexHeader::parse(&raw).unwrap_or_default();
        h.index_count = h.effective_index_count();
        if h.index_count as u32 > layout.index_num {
            tracing::warn!(
                "index file {name}: index count {} exceeds maxIndexNum {}; clamped",
                h.index_count,
                layout.index_num
            );
            h.index_count = layout.index_num as i32;
        }
        // Blocks of a file from before a restart (or from Java) are not
        // known: the first put allocates from the start.
        Ok(Self::with_header(name, map, layout, 0, h))
    }

    fn with_header(
        name: &str,
        map: WordMap,
        layout: IndexLayout,
        allocated: u64,
        h: IndexHeader,
    ) -> Self {
        IndexFile {
            name: name.to_string(),
            map,
            layout,
            allocated: AtomicU64::new(allocated),
            begin_timestamp: AtomicI64::new(h.begin_timestamp),
            end_timestamp: AtomicI64::new(h.end_timestamp),
            begin_phy_offset: AtomicI64::new(h.begin_phy_offset),
            end_phy_offset: AtomicI64::new(h.end_phy_offset),
            hash_slot_count: AtomicI32::new(h.hash_slot_count),
            index_count: AtomicI32::new(h.index_count),
            dirty: AtomicBool::new(false),
        }
    }

    pub(crate) fn path(&self) -> &Path {
        self.map.path()
    }

    pub(crate) fn header(&self) -> IndexHeader {
        IndexHeader {
            begin_timestamp: self.begin_timestamp.load(Ordering::Acquire),
            end_timestamp: self.end_timestamp.load(Ordering::Acquire),
            begin_phy_offset: self.begin_phy_offset.load(Ordering::Acquire),
            end_phy_offset: self.end_phy_offset.load(Ordering::Acquire),
            hash_slot_count: self.hash_slot_count.load(Ordering::Acquire),
            index_count: self.index_count.load(Ordering::Acquire),
        }
    }

    pub(crate) fn end_phy_offset(&self) -> i64 {
        self.end_phy_offset.load(Ordering::Acquire)
    }

    pub(crate) fn end_timestamp(&self) -> i64 {
        self.end_timestamp.load(Ordering::Acquire)
    }

    pub(crate) fn begin_timestamp(&self) -> i64 {
        self.begin_timestamp.load(Ordering::Acquire)
    }

    pub(crate) fn index_count(&self) -> i32 {
        self.index_count.load(Ordering::Acquire)
    }

    /// No room for another entry (`indexCount ≥ maxIndexNum`).
    pub(crate) fn is_full(&self) -> bool {
        self.index_count() as u32 >= self.layout.index_num
    }

    pub(crate) fn is_dirty(&self) -> bool {
        self.dirty.load(Ordering::Acquire)
    }

    fn write_header(&self) {
        let h = self.header();
        self.map.put_i64(0, h.begin_timestamp);
        self.map.put_i64(8, h.end_timestamp);
        self.map.put_i64(16, h.begin_phy_offset);
        self.map.put_i64(24, h.end_phy_offset);
        self.map.put_i32(32, h.hash_slot_count);
        self.map.put_i32(36, h.index_count);
    }

    fn entry(&self, n: u32) -> IndexEntry {
        let p = self.layout.entry_pos(n);
        IndexEntry {
            key_hash: self.map.get_i32(p),
            phy_offset: self.map.get_i64(p + 4),
            time_diff: self.map.get_i32(p + 12),
            prev_index: self.map.get_i32(p + 16),
        }
    }

    fn put_entry(&self, n: u32, e: IndexEntry) {
        let p = self.layout.entry_pos(n);
        self.map.put_i32(p, e.key_hash);
        self.map.put_i64(p + 4, e.phy_offset);
        self.map.put_i32(p + 12, e.time_diff);
        self.map.put_i32(p + 16, e.prev_index);
    }

    fn slot_value(&self, slot: u32) -> i32 {
        self.map.get_u32_acquire(self.layout.slot_pos(slot)) as i32
    }

    /// Inserts one key (store.md §8 "Insert"); `false` if the file is full.
    /// Writer only. Unlike Java, the first entry's begin values are set
    /// *before* its timeDiff is computed, so its reconstructed time is exact
    /// (Java computes it against the pre-set begin of a rolled file).
    pub(crate) fn put(&self, key_hash: i32, phy_offset: i64, store_timestamp: i64) -> Result<bool> {
        let count = self.index_count.load(Ordering::Relaxed);
        if count as u32 >= self.layout.index_num {
            return Ok(false);
        }
        let entry_end = (self.layout.entry_pos(count as u32) + INDEX_ENTRY_SIZE) as u64;
        let allocated = self.allocated.load(Ordering::Relaxed);
        if entry_end > allocated {
            let to = entry_end + ENTRY_ALLOCATION_STEP;
            self.map.allocate(allocated, to)?;
            self.allocated.store(to, Ordering::Relaxed);
        }
        let slot = self.layout.slot_of(key_hash);
        let mut s = self.slot_value(slot);
        if s <= 0 || s >= count {
            s = 0;
        }
        if count <= 1 {
            self.begin_phy_offset.store(phy_offset, Ordering::Release);
            self.begin_timestamp
                .store(store_timestamp, Ordering::Release);
        }
        let diff = time_diff(
            store_timestamp,
            self.begin_timestamp.load(Ordering::Relaxed),
        );
        self.put_entry(
            count as u32,
            IndexEntry {
                key_hash,
                phy_offset,
                time_diff: diff,
                prev_index: s,
            },
        );
        self.map
            .put_u32_release(self.layout.slot_pos(slot), count as u32);
        if s == 0 {
            self.hash_slot_count.fetch_add(1, Ordering::AcqRel);
        }
        self.end_phy_offset.store(phy_offset, Ordering::Release);
        self.end_timestamp.store(store_timestamp, Ordering::Release);
        self.index_count.store(count + 1, Ordering::Release);
        self.write_header();
        self.dirty.store(true, Ordering::Release);
        Ok(true)
    }

    /// RocketMQ's `selectPhyOffset`: walks `q.key_hash`'s chain newest →
    /// oldest, offering the phys offsets of entries with that hash whose
    /// reconstructed time is in `[begin, end]` to `q.accept` and keeping the
    /// accepted ones, until `out` holds `max_num` or the budget of offers is
    /// spent; stops at a prev of 0, an out-of-range or non-decreasing prev,
    /// or a time < begin. Phys offsets already in `out` are not offered again.
    pub(crate) fn select(&self, q: &mut Select<'_>, out: &mut Vec<u64>) {
        let slot = self.layout.slot_of(q.key_hash);
        let mut next = self.slot_value(slot);
        let file_begin = self.begin_timestamp();
        while next > 0 && (next as u32) < self.layout.index_num {
            if out.len() >= q.max_num || q.budget == 0 {
                break;
            }
            let e = self.entry(next as u32);
            if e.time_diff < 0 {
                break;
            }
            let t = e.timestamp(file_begin);
            if e.key_hash == q.key_hash && t >= q.begin && t <= q.end && e.phy_offset >= 0 {
                let phy = e.phy_offset as u64;
                if !out.contains(&phy) {
                    q.budget -= 1;
                    if (q.accept)(phy) {
                        out.push(phy);
                    }
                }
            }
            if e.prev_index <= 0 || e.prev_index >= next || t < q.begin {
                break;
            }
            next = e.prev_index;
        }
    }

    /// Commit log offset of the first entry, if the file has any.
    pub(crate) fn first_entry_phy(&self) -> Option<i64> {
        (self.index_count() > 1).then(|| self.entry(1).phy_offset)
    }

    /// Removes every entry whose phys offset is ≥ `phy` (entries are in commit
    /// log order), and all-zero (lost) entries at the end, and makes the hash
    /// slots consistent again. Writer only; recovery time. The first entry
    /// must be kept (delete the file otherwise).
    ///
    /// Every slot is checked (one pass over the slot region, writing only
    /// slots that change): a slot pointing into the removed range is walked
    /// down its chain to the newest kept entry; a slot holding garbage (out of
    /// range, or naming an entry of another slot — a torn page after a power
    /// loss) is re-pointed at the newest kept entry that hashes to it, found by
    /// scanning entries backwards. Returns the number of entries removed.
    pub(crate) fn truncate_from(&self, phy: i64) -> u32 {
        let old = self.index_count() as u32;
        let mut keep = old;
        // All-zero entries at the end are entries lost in a power loss
        // (the header written back, their page not): dropped too, so that
        // re-dispatch writes them again.
        while keep > 2 && {
            let e = self.entry(keep - 1);
            e.phy_offset >= phy || e == IndexEntry::default()
        } {
            keep -= 1;
        }
        let mut used = 0;
        let mut changed = false;
        let mut bad = std::collections::HashSet::new();
        for slot in 0..self.layout.hash_slot_num {
            let pos = self.layout.slot_pos(slot);
            let orig = self.map.get_u32(pos) as i32;
            let mut v = orig;
            if v < 0 || v as u32 >= old {
                bad.insert(slot);
                v = 0;
            }
            let mut steps = 0;
            while v as u32 >= keep && v > 0 && steps < old {
                let e = self.entry(v as u32);
                if self.layout.slot_of(e.key_hash) != slot || e == IndexEntry::default() {
                    // A lost (zeroed) or foreign entry: its link to the
                    // older entries of this slot is gone; find them below.
                    bad.insert(slot);
                    v = 0;
                    break;
                }
                v = if e.prev_index < v { e.prev_index } else { 0 };
                steps += 1;
            }
            if v > 0 && self.layout.slot_of(self.entry(v as u32).key_hash) != slot {
                bad.insert(slot);
                v = 0;
            }
            if v != orig {
                self.map.put_u32(pos, v as u32);
                changed = true;
            }
            if v != 0 {
                used += 1;
            }
        }
        let mut n = keep;
        while !bad.is_empty() && n > 1 {
            n -= 1;
            let slot = self.layout.slot_of(self.entry(n).key_hash);
            if bad.remove(&slot) {
                tracing::warn!("index file {}: repaired torn hash slot {slot}", self.name);
                self.map.put_u32(self.layout.slot_pos(slot), n);
                used += 1;
                changed = true;
            }
        }
        if keep == old {
            if changed || used != self.hash_slot_count.load(Ordering::Acquire) {
                self.hash_slot_count.store(used, Ordering::Release);
                self.write_header();
                self.dirty.store(true, Ordering::Release);
            }
            return 0;
        }
        for n in keep..old {
            self.put_entry(n, IndexEntry::default());
        }
        let last = self.entry(keep - 1);
        self.hash_slot_count.store(used, Ordering::Release);
        self.end_phy_offset
            .store(last.phy_offset, Ordering::Release);
        self.end_timestamp
            .store(last.timestamp(self.begin_timestamp()), Ordering::Release);
        self.index_count.store(keep as i32, Ordering::Release);
        self.write_header();
        self.dirty.store(true, Ordering::Release);
        old - keep
    }

    /// `msync`s the file if it changed since the last flush.
    pub(crate) fn flush(&self) -> Result<()> {
        if self.dirty.swap(false, Ordering::AcqRel) {
            if let Err(e) = self.map.flush() {
                self.dirty.store(true, Ordering::Release);
                return Err(e);
            }
        }
        Ok(())
    }
}
