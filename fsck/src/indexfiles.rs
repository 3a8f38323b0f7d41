//! Checking index files: size, a header consistent with the entries, hash
//! chains that reach every entry, and every entry resolving to a record
//! whose key it indexes. Coverage (every key of every record is indexed) is
//! checked from the commit log side with [`IndexSet::contains`].

use std::collections::HashMap;

use engine::index::{build_key, key_hash, IndexFileView};
use engine::record::{property, sysflag, RecordView};

use crate::queues::record_at;
use crate::report::{Kind, Problem};
use crate::store::Store;

/// The keys the dispatcher indexes for a record (none for ROLLBACK records).
pub fn record_keys(v: &RecordView<'_>) -> Vec<String> {
    if v.sys_flag & sysflag::TRANSACTION_MASK == sysflag::TRANSACTION_ROLLBACK {
        return Vec::new();
    }
    v.property(property::UNIQ_KEY)
        .into_iter()
        .chain(
            v.property(property::KEYS)
                .into_iter()
                .flat_map(|k| k.split(' ')),
        )
        .filter(|k| !k.is_empty())
        .map(|k| build_key(v.topic, k))
        .collect()
}

/// The readable index files, for coverage lookups.
pub struct IndexSet<'a> {
    pub enabled: bool,
    views: Vec<IndexFileView<'a>>,
}

impl<'a> IndexSet<'a> {
    pub fn new(store: &'a Store) -> Self {
        let views = store
            .index
            .iter()
            .filter_map(|m| IndexFileView::new(m.bytes(), store.index_layout).ok())
            .collect();
        IndexSet {
            enabled: store.config.message_index_enable,
            views,
        }
    }

    /// Whether every key of the record at `phys` is indexed.
    pub fn contains(&self, v: &RecordView<'_>, phys: u64) -> bool {
        if !self.enabled {
            return true;
        }
        let keys = record_keys(v);
        keys.iter().all(|k| {
            let h = key_hash(k);
            self.views.iter().any(|view| {
                let hd = view.header();
                if hd.effective_index_count() <= 1
                    || (phys as i64) < hd.begin_phy_offset
                    || (phys as i64) > hd.end_phy_offset
                {
                    return false;
                }
                let slot = view.layout().slot_of(h);
                view.chain(slot)
                    .any(|(_, e)| e.key_hash == h && e.phy_offset == phys as i64)
            })
        })
    }
}

/// How the index entries of a record whose header disagrees with its
/// consume-queue entry are judged (see `check`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Judge {
    /// As if the record's topic were this: repair rewrites it so.
    AsTopic(String),
    /// Not at all: repair leaves the record, and so its index entries.
    Skip,
}

/// What checking one index file found.
#[derive(Debug, Default)]
pub struct IndexResult {
    pub problems: Vec<Problem>,
    pub entries: u64,
}

/// Checks one index file; `judge` says how to judge entries pointing at the
/// records (by physical offset) whose header repair rewrites or leaves.
pub fn check_index_file(
    store: &Store,
    file: &crate::store::Mapped,
    damaged: &[(u64, u64)],
    end: u64,
    judge: &HashMap<u64, Judge>,
) -> IndexResult {
    let mut r = IndexResult::default();
    let path = &file.path;
    let view = match IndexFileView::new(file.bytes(), store.index_layout) {
        Ok(v) => v,
        Err(e) => {
            r.problems
                .push(Problem::new(Kind::IndexFileSize, path, None, e.to_string()));
            return r;
        }
    };
    let layout = view.layout();
    let h = view.header();
    if h.index_count < 1 || h.index_count as u32 > layout.index_num {
        r.problems.push(Problem::new(
            Kind::IndexHeader,
            path,
            Some(36),
            format!(
                "indexCount {} outside 1..={}",
                h.index_count, layout.index_num
            ),
        ));
    }
    let count = (h.effective_index_count() as u32).min(layout.index_num);
    // Slots: count the non-empty ones and walk every chain.
    let mut visited = vec![false; count as usize];
    let mut used_slots = 0i64;
    let mut chain_bad: Option<Problem> = None;
    for slot in 0..layout.hash_slot_num {
        let s = view.slot(slot).unwrap_or(0);
        if s <= 0 || s >= count as i32 {
            if s != 0 && chain_bad.is_none() {
                chain_bad = Some(Problem::new(
                    Kind::IndexChain,
                    path,
                    Some(layout.slot_pos(slot) as u64),
                    format!("slot {slot} holds {s}, outside 1..{count}"),
                ));
            }
            continue;
        }
        used_slots += 1;
        for (n, e) in view.chain(slot) {
            if visited[n as usize] {
                break;
            }
            visited[n as usize] = true;
            if layout.slot_of(e.key_hash) != slot && chain_bad.is_none() {
                chain_bad = Some(Problem::new(
                    Kind::IndexChain,
                    path,
                    Some(layout.entry_pos(n) as u64),
                    format!(
                        "entry {n} (key hash {}) is chained from slot {slot}",
                        e.key_hash
                    ),
                ));
            }
        }
    }
    if used_slots != h.hash_slot_count as i64 {
        r.problems.push(Problem::new(
            Kind::IndexHeader,
            path,
            Some(32),
            format!(
                "hashSlotCount {} but {used_slots} slots are in use",
                h.hash_slot_count
            ),
        ));
    }
    let unreachable = (1..count as usize).filter(|n| !visited[*n]).count();
    if unreachable > 0 && chain_bad.is_none() {
        chain_bad = Some(Problem::new(
            Kind::IndexChain,
            path,
            None,
            format!("{unreachable} entries are not reachable from any hash slot"),
        ));
    }
    r.problems.extend(chain_bad);
    // Entries: each resolves to a record carrying its key.
    let mut bad_first: Option<Problem> = None;
    let mut bad = 0u64;
    let (mut min_phy, mut first_phy, mut last_phy) = (i64::MAX, None, None);
    // Retention keeps an index file until all of it is below the commit
    // log's min offset: entries pointing below it are expired.
    let expired_below = store.commitlog_min().unwrap_or(0);
    for (n, e) in view.entries() {
        r.entries += 1;
        min_phy = min_phy.min(e.phy_offset);
        first_phy.get_or_insert(e.phy_offset);
        last_phy = Some(e.phy_offset);
        let why = if e.phy_offset >= 0 && (e.phy_offset as u64) < expired_below {
            None
        } else if e.phy_offset < 0 || e.phy_offset as u64 >= end {
            Some(format!(
                "entry {n} points at {} past the commit log end {end}",
                e.phy_offset
            ))
        } else {
            match record_at(store, damaged, end, e.phy_offset as u64) {
                None => Some(format!(
                    "entry {n} points at {}, where no whole record starts",
                    e.phy_offset
                )),
                Some(v) => {
                    let keys = match judge.get(&(e.phy_offset as u64)) {
                        None => record_keys(&v),
                        Some(Judge::AsTopic(topic)) => record_keys(&RecordView { topic, ..v }),
                        Some(Judge::Skip) => continue,
                    };
                    if keys.iter().any(|k| key_hash(k) == e.key_hash) {
                        None
                    } else {
                        Some(format!(
                            "entry {n}: key hash {} matches no key of the record at {}",
                            e.key_hash, e.phy_offset
                        ))
                    }
                }
            }
        };
        if let Some(why) = why {
            bad += 1;
            if bad_first.is_none() {
                bad_first = Some(Problem::new(
                    Kind::IndexBadEntry,
                    path,
                    Some(layout.entry_pos(n) as u64),
                    why,
                ));
            }
        }
    }
    if let Some(mut p) = bad_first {
        if bad > 1 {
            p.detail = format!("{} (and {} more like it)", p.detail, bad - 1);
        }
        r.problems.push(p);
    }
    if let Some(last) = last_phy {
        if h.begin_phy_offset > min_phy || h.end_phy_offset != last {
            r.problems.push(Problem::new(
                Kind::IndexHeader,
                path,
                Some(16),
                format!(
                    "header phy offsets [{}, {}] disagree with the entries [{min_phy}, {last}]",
                    h.begin_phy_offset, h.end_phy_offset
                ),
            ));
        }
        // The header's times are the store times of the first and the last
        // entry's records (IndexFile.putKey). They need not be in order: a
        // record's store time goes back with the broker's clock.
        let store_time = |phy: i64| {
            let v = record_at(store, damaged, end, u64::try_from(phy).ok()?)?;
            Some(v.store_timestamp)
        };
        for (at, name, header, which, phy) in [
            (0, "beginTimestamp", h.begin_timestamp, "first", first_phy),
            (8, "endTimestamp", h.end_timestamp, "last", Some(last)),
        ] {
            if let Some(t) = phy.and_then(store_time).filter(|t| *t != header) {
                r.problems.push(Problem::new(
                    Kind::IndexHeader,
                    path,
                    Some(at),
                    format!("{name} {header}, but the {which} entry's record was stored at {t}"),
                ));
            }
        }
    }
    r
}
