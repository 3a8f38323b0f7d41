use super::*;
use std::sync::atomic::{AtomicI64, Ordering};

const LAYOUT: IndexLayout = IndexLayout {
    hash_slot_num: 4,
    index_num: 8,
};

/// A service with a fixed clock so file names are predictable.
fn service(dir: &Path, layout: IndexLayout) -> IndexService {
    IndexService::with_dir(dir, layout, 64).with_clock(|| 1_700_000_000_000)
}

fn put(s: &IndexService, key: &str, phy: u64, ts: i64) -> IndexPutOutcome {
    s.put_message("T", None, Some(key), phy, ts).unwrap()
}

fn q(s: &IndexService, key: &str) -> Vec<u64> {
    s.query("T", key, 64, 0, i64::MAX).phys_offsets
}

#[test]
fn key_hash_matches_java() {
    // "T#a".hashCode() = (84*31 + 35)*31 + 97
    assert_eq!(key_hash("T#a"), 81906);
    assert_eq!(key_hash("hello"), 99162322);
    // "polygenelubricants".hashCode() == Integer.MIN_VALUE: abs stays negative → 0.
    assert_eq!(
        crate::record::java_string_hash("polygenelubricants"),
        i32::MIN
    );
    assert_eq!(key_hash("polygenelubricants"), 0);
    // Negative hashes are made positive.
    let neg = "negative-hash-key-000";
    let h = crate::record::java_string_hash(neg);
    assert_eq!(key_hash(neg), h.wrapping_abs().max(0));
    assert_eq!(build_key("TopicA", "k1"), "TopicA#k1");
    assert_eq!(IndexLayout::DEFAULT.file_size(), 420_000_040);
    assert_eq!(LAYOUT.slot_of(81906), 2);
}

fn be32(v: i32) -> [u8; 4] {
    v.to_be_bytes()
}
fn be64(v: i64) -> [u8; 8] {
    v.to_be_bytes()
}

#[test]
fn golden_header_and_entries() {
    // Hand-built from store.md §8.
    let mut header = Vec::new();
    header.extend(be64(5000)); // beginTimestamp
    header.extend(be64(9000)); // endTimestamp
    header.extend(be64(100)); // beginPhyOffset
    header.extend(be64(300)); // endPhyOffset
    header.extend(be32(2)); // hashSlotCount
    header.extend(be32(4)); // indexCount
    let h = IndexHeader {
        begin_timestamp: 5000,
        end_timestamp: 9000,
        begin_phy_offset: 100,
        end_phy_offset: 300,
        hash_slot_count: 2,
        index_count: 4,
    };
    assert_eq!(h.encode().as_slice(), header.as_slice());
    assert_eq!(IndexHeader::parse(&header), Some(h));
    assert_eq!(IndexHeader::parse(&header[..39]), None);

    let entry = |hash: i32, phy: i64, diff: i32, prev: i32| {
        let mut b = Vec::new();
        b.extend(be32(hash));
        b.extend(be64(phy));
        b.extend(be32(diff));
        b.extend(be32(prev));
        b
    };
    let e3 = IndexEntry {
        key_hash: 81906,
        phy_offset: 300,
        time_diff: 4,
        prev_index: 1,
    };
    assert_eq!(e3.encode().as_slice(), entry(81906, 300, 4, 1).as_slice());
    assert_eq!(IndexEntry::parse(&entry(81906, 300, 4, 1)), Some(e3));

    // The whole file the service writes for: "a"@100/5000, "b"@200/7500, "a"@300/9000.
    let mut golden = header.clone();
    for slot in [0, 0, 3, 2] {
        golden.extend(be32(slot)); // "T#a" → slot 2, "T#b" (81907) → slot 3
    }
    golden.extend([0u8; 20]); // entry 0 is never used
    golden.extend(entry(81906, 100, 0, 0));
    golden.extend(entry(81907, 200, 2, 0));
    golden.extend(entry(81906, 300, 4, 1));
    golden.resize(LAYOUT.file_size() as usize, 0);

    let dir = tempfile::tempdir().unwrap();
    let s = service(dir.path(), LAYOUT);
    put(&s, "a", 100, 5000);
    put(&s, "b", 200, 7500);
    put(&s, "a", 300, 9000);
    s.flush().unwrap();
    let names = s.file_names();
    assert_eq!(names.len(), 1);
    let bytes = std::fs::read(dir.path().join(&names[0])).unwrap();
    assert_eq!(bytes, golden);

    // The offline parser reads it back.
    let view = IndexFileView::new(&bytes, LAYOUT).unwrap();
    assert_eq!(view.header(), h);
    assert_eq!(view.slot(2), Some(3));
    assert_eq!(view.slot(4), None);
    assert_eq!(
        view.entries()
            .map(|(n, e)| (n, e.phy_offset))
            .collect::<Vec<_>>(),
        vec![(1, 100), (2, 200), (3, 300)]
    );
    assert_eq!(
        view.chain(2).map(|(n, _)| n).collect::<Vec<_>>(),
        vec![3, 1]
    );
    assert_eq!(view.chain(0).count(), 0);
    assert_eq!(e3.timestamp(5000), 9000);
    assert!(matches!(
        IndexFileView::new(&bytes[1..], LAYOUT),
        Err(IndexFormatError::WrongSize { .. })
    ));
}

#[test]
fn parser_survives_cycles_and_garbage() {
    let mut bytes = vec![0u8; LAYOUT.file_size() as usize];
    let h = IndexHeader {
        index_count: 3,
        ..Default::default()
    };
    bytes[..40].copy_from_slice(&h.encode());
    // slot 0 → entry 2 → prev 2 (self loop); slot 1 → 7 (beyond count).
    bytes[40..44].copy_from_slice(&be32(2));
    bytes[44..48].copy_from_slice(&be32(7));
    let p2 = LAYOUT.entry_pos(2);
    bytes[p2..p2 + 20].copy_from_slice(
        &IndexEntry {
            prev_index: 2,
            ..Default::default()
        }
        .encode(),
    );
    let view = IndexFileView::new(&bytes, LAYOUT).unwrap();
    assert_eq!(view.chain(0).count(), 1);
    assert_eq!(view.chain(1).count(), 0);
    assert_eq!(view.entry(8), None);
}

#[test]
fn put_message_keys_and_uniq_key() {
    let dir = tempfile::tempdir().unwrap();
    let s = service(dir.path(), IndexLayout::new(16, 64).unwrap());
    let out = s
        .put_message("T", Some("UNIQ1"), Some("k1 k2  k3 "), 100, 1000)
        .unwrap();
    assert_eq!(out.keys_indexed, 4, "uniq + k1 k2 k3; empty words skipped");
    for k in ["UNIQ1", "k1", "k2", "k3"] {
        assert_eq!(q(&s, k), vec![100], "{k}");
    }
    assert!(q(&s, "").is_empty());
    assert!(s
        .query("Other", "k1", 64, 0, i64::MAX)
        .phys_offsets
        .is_empty());
    // No keys at all: nothing written, no file needed.
    let dir2 = tempfile::tempdir().unwrap();
    let s2 = service(dir2.path(), LAYOUT);
    assert_eq!(
        s2.put_message("T", None, None, 1, 1).unwrap().keys_indexed,
        0
    );
    assert!(s2.file_names().is_empty());
}

#[test]
fn redispatch_is_skipped_and_duplicates_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let s = service(dir.path(), IndexLayout::new(16, 64).unwrap());
    put(&s, "a", 100, 1000);
    put(&s, "a", 200, 2000);
    assert!(put(&s, "a", 100, 1000).skipped);
    // The last message is indexed again (RocketMQ's rule) but reported once.
    assert!(!put(&s, "a", 200, 2000).skipped);
    assert_eq!(q(&s, "a"), vec![200, 100]);
    assert_eq!(s.headers()[0].index_count, 4);
}

#[test]
fn chains_with_forced_collisions() {
    let dir = tempfile::tempdir().unwrap();
    // One slot: every key shares one chain.
    let s = service(dir.path(), IndexLayout::new(1, 100).unwrap());
    for i in 0..30u64 {
        put(&s, &format!("key{}", i % 3), i * 10, 1000 + i as i64);
    }
    let h = s.headers()[0];
    assert_eq!((h.hash_slot_count, h.index_count), (1, 31));
    let expect = |r: u64| {
        (0..30u64)
            .rev()
            .filter(|i| i % 3 == r)
            .map(|i| i * 10)
            .collect::<Vec<_>>()
    };
    assert_eq!(q(&s, "key0"), expect(0));
    assert_eq!(q(&s, "key1"), expect(1));
    assert_eq!(q(&s, "key2"), expect(2));
    assert_eq!(
        s.query("T", "key1", 3, 0, i64::MAX).phys_offsets,
        expect(1)[..3].to_vec()
    );
    // Keys with the same Java hash ("Aa" and "BB") are not told apart.
    assert_eq!(key_hash("T#Aa"), key_hash("T#BB"));
    put(&s, "Aa", 1000, 5000);
    assert_eq!(q(&s, "BB"), vec![1000]);
}

#[test]
fn query_time_window() {
    let dir = tempfile::tempdir().unwrap();
    let s = service(dir.path(), IndexLayout::new(8, 100).unwrap());
    // Stored every 10 s from t0.
    let t0 = 1_700_000_000_000i64;
    for i in 0..10u64 {
        put(&s, "k", i * 100, t0 + i as i64 * 10_000);
    }
    let window = |b: i64, e: i64| s.query("T", "k", 64, t0 + b, t0 + e).phys_offsets;
    assert_eq!(
        window(0, 90_000),
        (0..10u64).rev().map(|i| i * 100).collect::<Vec<_>>()
    );
    assert_eq!(window(20_000, 40_000), vec![400, 300, 200]);
    assert_eq!(window(25_000, 39_999), vec![300]);
    assert!(window(100_000, 200_000).is_empty());
    assert!(window(-10_000, -1).is_empty());
    let r = s.query("T", "k", 64, 0, i64::MAX);
    assert_eq!(r.last_update_phy_offset, 900);
    assert_eq!(r.last_update_timestamp, t0 + 90_000);
    // maxNum is capped by maxMsgsNumBatch.
    let capped = IndexService::with_dir(dir.path(), IndexLayout::new(8, 100).unwrap(), 2);
    capped.load_files(IndexLoad::KeepAll).unwrap();
    assert_eq!(
        capped.query("T", "k", 64, 0, i64::MAX).phys_offsets,
        vec![900, 800]
    );
}

#[test]
fn rolls_when_full_and_queries_across_files() {
    let dir = tempfile::tempdir().unwrap();
    // 3 entries per file (entry 0 unused).
    let s = service(dir.path(), IndexLayout::new(2, 4).unwrap());
    let mut rolls = 0;
    for i in 0..10u64 {
        let out = put(
            &s,
            if i % 2 == 0 { "even" } else { "odd" },
            i * 100,
            1000 * (i as i64 + 1),
        );
        rolls += out.rolled as usize;
    }
    // 10 entries: files with 3,3,3,1 entries.
    let names = s.file_names();
    assert_eq!(names.len(), 4);
    assert_eq!(rolls, 3);
    // Same clock for all: names are made unique and increasing.
    assert_eq!(names[0], index_file_name(1_700_000_000_000));
    assert!(names.windows(2).all(|w| w[0] < w[1]), "{names:?}");
    let hs = s.headers();
    // A rolled file's header starts from the previous end, then its first entry sets begin.
    assert_eq!((hs[1].begin_phy_offset, hs[1].begin_timestamp), (300, 4000));
    assert_eq!((hs[0].end_phy_offset, hs[0].end_timestamp), (200, 3000));
    assert_eq!(hs[3].index_count, 2);
    assert_eq!(q(&s, "even"), vec![800, 600, 400, 200, 0]);
    assert_eq!(q(&s, "odd"), vec![900, 700, 500, 300, 100]);
    // Windows skip whole files.
    assert_eq!(
        s.query("T", "odd", 64, 4000, 6500).phys_offsets,
        vec![500, 300]
    );
    // Reload.
    drop(s);
    let s = service(dir.path(), IndexLayout::new(2, 4).unwrap());
    s.load_files(IndexLoad::KeepAll).unwrap();
    assert_eq!(s.file_names(), names);
    assert_eq!(q(&s, "odd"), vec![900, 700, 500, 300, 100]);
    put(&s, "odd", 1100, 12_000);
    assert_eq!(q(&s, "odd")[0], 1100);
}

#[test]
fn full_file_is_rolled_eagerly_and_checkpointed_by_flush() {
    let dir = tempfile::tempdir().unwrap();
    let s = service(dir.path(), IndexLayout::new(2, 3).unwrap());
    assert_eq!(s.flush().unwrap(), None);
    put(&s, "a", 0, 1000);
    assert!(
        put(&s, "a", 100, 2000).rolled,
        "second entry fills the file"
    );
    assert_eq!(s.file_names().len(), 2);
    let h1 = s.headers()[1];
    assert_eq!(
        (
            h1.begin_phy_offset,
            h1.end_phy_offset,
            h1.begin_timestamp,
            h1.index_count
        ),
        (100, 100, 2000, 1)
    );
    assert_eq!(s.flush().unwrap(), Some(2000));
    // Multi-key message spanning a roll.
    let out = s
        .put_message("T", Some("u"), Some("x y"), 200, 3000)
        .unwrap();
    assert_eq!((out.keys_indexed, out.rolled), (3, true));
    assert_eq!(s.flush().unwrap(), Some(3000));
    for k in ["u", "x", "y"] {
        assert_eq!(q(&s, k), vec![200]);
    }
}

#[test]
fn delete_newer_than_checkpoint_on_load() {
    let dir = tempfile::tempdir().unwrap();
    {
        let s = service(dir.path(), IndexLayout::new(2, 4).unwrap());
        for i in 0..7u64 {
            put(&s, "k", i * 100, 1000 * (i as i64 + 1));
        }
        assert_eq!(s.file_names().len(), 3);
    }
    let s = service(dir.path(), IndexLayout::new(2, 4).unwrap());
    s.load_files(IndexLoad::DeleteNewerThan(3000)).unwrap();
    assert_eq!(s.file_names().len(), 1);
    assert_eq!(q(&s, "k"), vec![200, 100, 0]);
    // Wrong layout is refused.
    let other = service(dir.path(), IndexLayout::new(3, 4).unwrap());
    assert!(matches!(
        other.load_files(IndexLoad::KeepAll),
        Err(StoreError::Corruption { .. })
    ));
}

#[test]
fn delete_expired_never_the_last() {
    let dir = tempfile::tempdir().unwrap();
    let s = service(dir.path(), IndexLayout::new(2, 4).unwrap());
    for i in 0..9u64 {
        put(&s, "k", i * 100, 1000 * (i as i64 + 1));
    }
    // Files end at 200, 500, 800, plus the eagerly rolled empty one (end 800).
    assert_eq!(s.file_names().len(), 4);
    assert_eq!(s.delete_expired(201).unwrap(), 1);
    assert_eq!(s.delete_expired(201).unwrap(), 0);
    assert_eq!(s.delete_expired(u64::MAX).unwrap(), 2);
    assert_eq!(s.file_names().len(), 1);
    assert!(q(&s, "k").is_empty());
}

/// Builds a fresh index of `n` messages (keys cycling over 5, 2 slots so
/// chains interleave) into `s`, from message `from`.
fn build(s: &IndexService, from: u64, n: u64) {
    for i in from..n {
        s.put_message(
            "T",
            Some(&format!("u{i}")),
            Some(&format!("k{}", i % 5)),
            i * 100,
            1000 + i as i64 * 1000,
        )
        .unwrap();
    }
}

#[test]
fn truncate_after_then_redispatch_rebuilds_identical_files() {
    let layout = IndexLayout::new(2, 64).unwrap();
    let d1 = tempfile::tempdir().unwrap();
    let d2 = tempfile::tempdir().unwrap();
    let a = service(d1.path(), layout);
    let b = service(d2.path(), layout);
    build(&a, 0, 20);
    build(&b, 0, 12);
    // Commit log recovered to 1150: messages 12.. are gone.
    assert_eq!(a.truncate_after(1150).unwrap(), 16, "8 messages × 2 keys");
    assert_eq!(a.end_phy_offset(), Some(1100));
    assert_eq!(q(&a, "k1"), vec![1100, 600, 100]);
    assert!(q(&a, "u13").is_empty());
    a.flush().unwrap();
    b.flush().unwrap();
    let fa = std::fs::read(d1.path().join(&a.file_names()[0])).unwrap();
    let fb = std::fs::read(d2.path().join(&b.file_names()[0])).unwrap();
    assert!(
        fa == fb,
        "truncated file equals a file built without the removed messages"
    );
    // Re-dispatch from 1200 rebuilds what was removed.
    build(&a, 12, 20);
    build(&b, 12, 20);
    a.flush().unwrap();
    b.flush().unwrap();
    let fa = std::fs::read(d1.path().join(&a.file_names()[0])).unwrap();
    let fb = std::fs::read(d2.path().join(&b.file_names()[0])).unwrap();
    assert!(fa == fb);
    assert_eq!(q(&a, "u13"), vec![1300]);
}

#[test]
fn truncate_after_deletes_newer_files() {
    let layout = IndexLayout::new(2, 4).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let s = service(dir.path(), layout);
    for i in 0..10u64 {
        put(&s, "k", i * 100, 1000 * (i as i64 + 1));
    }
    assert_eq!(s.file_names().len(), 4);
    // Rebuild point after a crash with checkpoint = end of the first file.
    assert_eq!(s.rebuild_point(3000), Some(300));
    assert_eq!(s.rebuild_point(i64::MAX), None);
    s.truncate_after(300).unwrap();
    assert_eq!(s.file_names().len(), 1);
    assert_eq!(s.end_phy_offset(), Some(200));
    assert_eq!(q(&s, "k"), vec![200, 100, 0]);
    for i in 3..10u64 {
        put(&s, "k", i * 100, 1000 * (i as i64 + 1));
    }
    assert_eq!(
        q(&s, "k"),
        (0..10u64).rev().map(|i| i * 100).collect::<Vec<_>>()
    );
    // Everything: the service starts from scratch.
    s.truncate_after(0).unwrap();
    assert!(s.file_names().is_empty());
    put(&s, "k", 0, 1000);
    assert_eq!(q(&s, "k"), vec![0]);
}

#[test]
fn truncate_after_survives_torn_slots() {
    let layout = IndexLayout::new(4, 64).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let name = ten_entries_flushed(dir.path(), layout);
    // Crash image: header says 10 entries' worth, but slot 1 points past it.
    let mut bytes = std::fs::read(&name).unwrap();
    let p = layout.slot_pos(1);
    bytes[p..p + 4].copy_from_slice(&be32(50));
    std::fs::write(&name, &bytes).unwrap();
    let s = service(dir.path(), layout);
    s.load_files(IndexLoad::KeepAll).unwrap();
    s.truncate_after(500).unwrap();
    let view_bytes = std::fs::read(&name).unwrap();
    let view = IndexFileView::new(&view_bytes, layout).unwrap();
    for slot in 0..4 {
        let v = view.slot(slot).unwrap();
        assert!(v >= 0 && v < view.header().index_count, "slot {slot} = {v}");
    }
    build(&s, 5, 10);
    for i in 0..10u64 {
        assert_eq!(q(&s, &format!("u{i}")), vec![i * 100]);
    }
}

#[test]
fn file_names_are_local_time() {
    let n = index_file_name(1_700_000_000_123);
    assert_eq!(n.len(), 17);
    assert!(n.starts_with("2023111"), "{n}");
    assert!(n.ends_with("123"));
    let month: u32 = n[4..6].parse().unwrap();
    let hour: u32 = n[8..10].parse().unwrap();
    assert!((1..=12).contains(&month) && hour < 24);
}

#[test]
fn concurrent_queries_while_writing() {
    let dir = tempfile::tempdir().unwrap();
    let s = Arc::new(service(dir.path(), IndexLayout::new(7, 50).unwrap()));
    let done = Arc::new(AtomicI64::new(-1));
    let readers: Vec<_> = (0..4)
        .map(|r| {
            let s = s.clone();
            let done = done.clone();
            std::thread::spawn(move || {
                let mut checks = 0u64;
                while done.load(Ordering::Acquire) < 0 || checks < 100 {
                    let key = format!("k{}", checks % 11);
                    let res = s.query("T", &key, 64, 0, i64::MAX).phys_offsets;
                    // Every result belongs to the key and is newest first.
                    for w in res.windows(2) {
                        assert!(w[0] > w[1]);
                    }
                    for p in &res {
                        assert_eq!((p / 100) % 11, checks % 11, "reader {r}: {p} not for {key}");
                    }
                    checks += 1;
                }
            })
        })
        .collect();
    struct SetOnDrop(Arc<AtomicI64>);
    impl Drop for SetOnDrop {
        fn drop(&mut self) {
            self.0.store(1, Ordering::Release);
        }
    }
    let guard = SetOnDrop(done.clone());
    for i in 0..2000u64 {
        s.put_message(
            "T",
            None,
            Some(&format!("k{}", i % 11)),
            i * 100,
            1000 + i as i64,
        )
        .unwrap();
    }
    drop(guard);
    for r in readers {
        r.join().unwrap();
    }
    assert_eq!(q(&s, "k3").len(), 64);
}

/// Entries get their blocks a step ahead of the writer, never all 420 MB
/// of a default file at once, and never behind it (a hole written through
/// the mapping on a full disk is a SIGBUS).
#[test]
fn entries_get_their_blocks_ahead_of_the_writer() {
    use std::os::unix::fs::MetadataExt;
    let dir = tempfile::tempdir().unwrap();
    // 16 slots, 200,000 entries: about 4 MB of entries.
    let s = service(dir.path(), IndexLayout::new(16, 200_000).unwrap());
    let blocks = || -> (u64, u64) {
        let f = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| p.is_file())
            .expect("an index file");
        let m = std::fs::metadata(f).unwrap();
        (m.blocks() * 512, m.len())
    };
    put(&s, "k0", 100, 1000);
    let (allocated, len) = blocks();
    assert!(allocated >= 1 << 20, "{allocated}");
    assert!(allocated < len, "{allocated} of {len}: not all at once");
    // Past the first step: the next one is allocated before it is written.
    for i in 1..60_000u64 {
        put(&s, &format!("k{i}"), 100 + i * 10, 1000);
    }
    let (allocated, _) = blocks();
    assert!(allocated >= 40 + 16 * 4 + 60_000 * 20, "{allocated}");
}

#[test]
fn checked_query_skips_rejected_collisions_within_a_bounded_budget() {
    let dir = tempfile::tempdir().unwrap();
    let n = MAX_CHECKED_CANDIDATES as u64 + 500;
    let s = service(dir.path(), IndexLayout::new(1, n + 10).unwrap());
    // One chain of equal hashes: "Aa" oldest, then many "BB".
    put(&s, "Aa", 0, 1000);
    for i in 1..=n {
        put(&s, "BB", i * 10, 1000 + i as i64);
    }
    let mut offered = 0;
    let r = s.query_checked("T", "Aa", 4, 0, i64::MAX, &mut |phy| {
        offered += 1;
        phy == 0
    });
    // Past the budget: the match at the far end is not reached, and no more
    // than the budget was offered.
    assert!(r.phys_offsets.is_empty());
    assert_eq!(offered, MAX_CHECKED_CANDIDATES);
    // Within the budget, rejected entries do not count against max_num.
    let mut offered = 0;
    let r = s.query_checked("T", "Aa", 4, 0, i64::MAX, &mut |phy| {
        offered += 1;
        phy == 0 || phy > (n - 100) * 10
    });
    assert_eq!(r.phys_offsets.len(), 4);
    assert_eq!(offered, 4);
    let r = s.query_checked("T", "Aa", 4, 0, i64::MAX, &mut |phy| {
        phy == 0 || phy > (n - 2) * 10
    });
    assert_eq!(r.phys_offsets, vec![n * 10, (n - 1) * 10]);
}

/// A garbage header (beginTimestamp near i64::MAX) under entries with a
/// positive timeDiff, then a record with a garbage store time: queries,
/// recovery truncation and puts compute times without overflowing.
#[test]
fn a_garbage_begin_timestamp_does_not_overflow_entry_times() {
    let layout = IndexLayout::new(4, 64).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let name = ten_entries_flushed(dir.path(), layout);
    let mut bytes = std::fs::read(&name).unwrap();
    bytes[0..8].copy_from_slice(&be64(i64::MAX - 5));
    for n in 1..11 {
        let p = layout.entry_pos(n) + 12;
        bytes[p..p + 4].copy_from_slice(&be32(1_000_000));
    }
    std::fs::write(&name, &bytes).unwrap();
    let s = service(dir.path(), layout);
    s.load_files(IndexLoad::KeepAll).unwrap();
    assert_eq!(s.query("T", "u3", 64, 0, i64::MAX).phys_offsets, vec![300]);
    s.truncate_after(500).unwrap();
    assert_eq!(s.query("T", "u3", 64, 0, i64::MAX).phys_offsets, vec![300]);
    // A record with a garbage store time indexed after such a header.
    put(&s, "late", 20_000, i64::MIN);
    assert_eq!(q(&s, "late"), vec![20_000]);
}

/// An index of 10 entries (`build`) written and flushed in `dir`; the
/// path of its one file.
fn ten_entries_flushed(dir: &Path, layout: IndexLayout) -> std::path::PathBuf {
    {
        let s = service(dir, layout);
        build(&s, 0, 10);
        s.flush().unwrap();
    }
    std::fs::read_dir(dir)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path()
}
