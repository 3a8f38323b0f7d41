use super::*;
use tempfile::TempDir;

/// Tiny files: 5 entries each.
const FS: u64 = 5 * 20;

fn open(dir: &TempDir) -> ConsumeQueue {
    ConsumeQueue::open(dir.path(), "TopicTest", 3, FS).unwrap()
}

fn file_path(dir: &TempDir, start: u64) -> PathBuf {
    dir.path()
        .join("TopicTest")
        .join("3")
        .join(file_name(start))
}

/// Entry i references phys offset i*100, size 100.
fn fill(q: &ConsumeQueue, range: std::ops::Range<u64>) {
    for i in range {
        let out = q.append_entry(i, i as i64 * 100, 100, i as i64).unwrap();
        assert_eq!(out, AppendOutcome::Appended, "entry {i}");
    }
}

#[test]
fn golden_entry_bytes() {
    // Spec §7.1: phys offset i64, size i32, tagsCode i64, all big-endian.
    let e = CqEntry {
        phys_offset: 0x0000_0001_0203_0405,
        size: 0x0000_0123,
        tags_code: -2,
    };
    let golden: [u8; 20] = [
        0x00, 0x00, 0x00, 0x01, 0x02, 0x03, 0x04, 0x05, // phys offset
        0x00, 0x00, 0x01, 0x23, // size
        0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFE, // tags code
    ];
    assert_eq!(e.encode(), golden);
    assert_eq!(CqEntry::decode(&golden), Some(e));
    assert_eq!(CqEntry::decode(&golden[..19]), None);
    let ph: [u8; 20] = [
        0, 0, 0, 0, 0, 0, 0, 0, 0x7F, 0xFF, 0xFF, 0xFF, 0, 0, 0, 0, 0, 0, 0, 0,
    ];
    assert_eq!(CqEntry::PLACEHOLDER.encode(), ph);

    // And on disk, at entry 6 = file 00000000000000000100, position 20.
    let dir = tempfile::tempdir().unwrap();
    let q = open(&dir);
    for i in 0..6 {
        q.append_entry(i, i as i64 * 1000, 1, 0).unwrap();
    }
    q.append_entry(6, e.phys_offset, e.size, e.tags_code)
        .unwrap();
    q.flush(0).unwrap();
    let bytes = std::fs::read(file_path(&dir, 100)).unwrap();
    assert_eq!(bytes.len(), FS as usize);
    assert_eq!(&bytes[20..40], &golden);
    assert_eq!(&bytes[40..], &[0u8; 60]);
}

#[test]
fn tags_code_ext_address_rule() {
    let mut e = CqEntry::PLACEHOLDER;
    e.tags_code = i32::MIN as i64;
    assert!(!e.tags_code_is_ext_address());
    e.tags_code = i32::MIN as i64 - 1;
    assert!(e.tags_code_is_ext_address());
}

#[test]
fn round_trip_and_file_rolls() {
    let dir = tempfile::tempdir().unwrap();
    let q = open(&dir);
    assert_eq!(
        (q.min_offset(), q.max_offset(), q.max_phys_end()),
        (0, 0, 0)
    );
    assert!(q.entry(0).is_none());
    fill(&q, 0..23);
    assert_eq!((q.min_offset(), q.max_offset()), (0, 23));
    assert_eq!(q.max_phys_end(), 2300);
    assert_eq!(q.file_start_offsets(), vec![0, 5, 10, 15, 20]);
    for s in [0, 100, 200, 300, 400] {
        assert!(file_path(&dir, s).exists());
        assert_eq!(std::fs::metadata(file_path(&dir, s)).unwrap().len(), FS);
    }
    for i in 0..23 {
        let e = q.entry(i).unwrap();
        assert_eq!(
            (e.phys_offset, e.size, e.tags_code),
            (i as i64 * 100, 100, i as i64)
        );
        assert!(e.is_message());
    }
    assert!(q.entry(23).is_none());

    // Batches stop at the end of the file containing the start.
    let b = q.batch(3, 100).unwrap();
    assert_eq!((b.next_offset(), b.end_offset(), b.len()), (3, 5, 2));
    assert_eq!(b.map(|(i, _)| i).collect::<Vec<_>>(), vec![3, 4]);
    let b: Vec<_> = q.batch(5, 3).unwrap().collect();
    assert_eq!(
        b.iter()
            .map(|(i, e)| (*i, e.phys_offset))
            .collect::<Vec<_>>(),
        vec![(5, 500), (6, 600), (7, 700)]
    );
    assert_eq!(
        q.batch(20, 100).unwrap().len(),
        3,
        "stops at the write position"
    );
    assert!(q.batch(23, 10).is_none());
    assert_eq!(q.next_file_start(7), 10);

    // Reopen: same content.
    q.flush(0).unwrap();
    drop(q);
    let q = open(&dir);
    assert_eq!(
        (q.min_offset(), q.max_offset(), q.max_phys_end()),
        (0, 23, 2300)
    );
    assert_eq!(q.entry(17).unwrap().phys_offset, 1700);
    fill(&q, 23..26);
    assert_eq!(q.file_start_offsets(), vec![0, 5, 10, 15, 20, 25]);
}

#[test]
fn redispatch_is_idempotent() {
    let dir = tempfile::tempdir().unwrap();
    let q = open(&dir);
    fill(&q, 0..4);
    // Same records again: duplicates (offset + size <= max phys end).
    for i in 0..4 {
        assert_eq!(
            q.append_entry(i, i as i64 * 100, 100, 0).unwrap(),
            AppendOutcome::Duplicate
        );
    }
    // A new record whose queue offset is behind.
    assert_eq!(
        q.append_entry(2, 10_000, 10, 0).unwrap(),
        AppendOutcome::Behind
    );
    assert_eq!(q.max_offset(), 4);
    assert!(q.append_entry(4, -1, 10, 0).is_err());
    assert!(q.append_entry(4, 10, 0, 0).is_err());
}

#[test]
fn first_file_at_nonzero_offset_is_padded() {
    let dir = tempfile::tempdir().unwrap();
    let q = open(&dir);
    let out = q.append_entry(7, 5000, 50, 9).unwrap();
    assert_eq!(out, AppendOutcome::AppendedAfterPadding { placeholders: 2 });
    assert_eq!((q.min_offset(), q.max_offset()), (7, 8));
    assert_eq!(q.file_start_offsets(), vec![5]);
    assert!(q.entry(6).is_none(), "below min");
    assert_eq!(q.entry(7).unwrap().phys_offset, 5000);
    q.flush(0).unwrap();
    let bytes = std::fs::read(file_path(&dir, 100)).unwrap();
    assert_eq!(&bytes[0..20], &CqEntry::PLACEHOLDER.encode());
    assert_eq!(&bytes[20..40], &CqEntry::PLACEHOLDER.encode());
    assert_eq!(CqEntry::decode(&bytes[40..]).unwrap().phys_offset, 5000);

    // Recovery keeps min past the placeholders and the max phys end.
    drop(q);
    let q = open(&dir);
    assert_eq!(
        (q.min_offset(), q.max_offset(), q.max_phys_end()),
        (7, 8, 5050)
    );
}

#[test]
fn gaps_are_padded_or_refused() {
    let dir = tempfile::tempdir().unwrap();
    let q = open(&dir);
    fill(&q, 0..2);
    let out = q.append_entry(4, 1000, 10, 0).unwrap();
    assert_eq!(out, AppendOutcome::AppendedAfterPadding { placeholders: 2 });
    assert_eq!(q.max_offset(), 5);
    assert!(q.entry(2).unwrap().is_placeholder());
    assert!(!q.entry(3).unwrap().is_message());
    assert_eq!(q.entry(4).unwrap().phys_offset, 1000);
    // Crossing a file boundary while padding.
    assert_eq!(
        q.append_entry(8, 2000, 10, 0).unwrap(),
        AppendOutcome::AppendedAfterPadding { placeholders: 3 }
    );
    assert_eq!(q.file_start_offsets(), vec![0, 5]);
    // More than one file of gap: refused, nothing changes.
    let err = q.append_entry(15, 3000, 10, 0).unwrap_err();
    assert!(matches!(err, StoreError::InvalidArgument(_)), "{err}");
    assert_eq!(q.max_offset(), 9);
    assert_eq!(q.max_phys_end(), 2010);
}

#[test]
fn empty_queue_restarts_at_far_offset() {
    let dir = tempfile::tempdir().unwrap();
    let q = open(&dir);
    // An empty queue (after a truncation) that then sees a far offset.
    fill(&q, 0..3);
    q.truncate_dirty(0).unwrap();
    assert_eq!((q.min_offset(), q.max_offset()), (0, 0));
    let out = q.append_entry(42, 100, 10, 0).unwrap();
    assert_eq!(out, AppendOutcome::AppendedAfterPadding { placeholders: 2 });
    assert_eq!(q.file_start_offsets(), vec![40]);
    assert!(!file_path(&dir, 0).exists());
    assert_eq!((q.min_offset(), q.max_offset()), (42, 43));
}

#[test]
fn recovery_stops_at_torn_tail_and_zeroes_it() {
    let dir = tempfile::tempdir().unwrap();
    {
        let q = open(&dir);
        fill(&q, 0..12);
        q.flush(0).unwrap();
    }
    // Entry 12 torn (size 0), entry 13 garbage that looks valid, and a stray
    // file after the last one.
    let p = file_path(&dir, 200);
    let mut bytes = std::fs::read(&p).unwrap();
    bytes[40..60].copy_from_slice(
        &CqEntry {
            phys_offset: 1200,
            size: 0,
            tags_code: 0,
        }
        .encode(),
    );
    bytes[60..80].copy_from_slice(
        &CqEntry {
            phys_offset: 77,
            size: 5,
            tags_code: 1,
        }
        .encode(),
    );
    std::fs::write(&p, &bytes).unwrap();
    std::fs::write(file_path(&dir, 300), vec![0xABu8; FS as usize]).unwrap();

    let q = open(&dir);
    assert_eq!(
        (q.min_offset(), q.max_offset(), q.max_phys_end()),
        (0, 12, 1200)
    );
    assert_eq!(q.file_start_offsets(), vec![0, 5, 10]);
    assert!(!file_path(&dir, 300).exists());
    let bytes = std::fs::read(&p).unwrap();
    assert_eq!(
        &bytes[40..],
        &[0u8; 60],
        "stale bytes after the write position are zeroed"
    );
    // Appending after recovery and crashing again cannot resurrect the garbage.
    fill(&q, 12..13);
    drop(q);
    let q = open(&dir);
    assert_eq!(q.max_offset(), 13);
}

#[test]
fn recovery_refuses_wrong_sizes_and_holes() {
    let dir = tempfile::tempdir().unwrap();
    {
        let q = open(&dir);
        fill(&q, 0..12);
    }
    std::fs::write(file_path(&dir, 500), vec![0u8; 7]).unwrap();
    assert!(matches!(
        ConsumeQueue::open(dir.path(), "TopicTest", 3, FS),
        Err(StoreError::Corruption { .. })
    ));
    std::fs::write(file_path(&dir, 500), vec![0u8; FS as usize]).unwrap();
    let err = ConsumeQueue::open(dir.path(), "TopicTest", 3, FS).unwrap_err();
    assert!(err.to_string().contains("contiguous"), "{err}");
    std::fs::remove_file(file_path(&dir, 500)).unwrap();
    std::fs::write(file_path(&dir, 0).with_file_name("junk.tmp"), b"x").unwrap();
    assert_eq!(open(&dir).max_offset(), 12);
}

#[test]
fn recovery_after_full_last_file() {
    let dir = tempfile::tempdir().unwrap();
    {
        let q = open(&dir);
        fill(&q, 0..10);
    }
    let q = open(&dir);
    assert_eq!((q.max_offset(), q.max_phys_end()), (10, 1000));
    fill(&q, 10..11);
    assert_eq!(q.file_start_offsets(), vec![0, 5, 10]);
}

#[test]
fn truncate_dirty_drops_tail_across_files() {
    let dir = tempfile::tempdir().unwrap();
    let q = open(&dir);
    fill(&q, 0..13);
    // Commit log truncated at 750: entries 8.. (phys 800..) go; 7 (700..800) stays.
    q.truncate_dirty(750).unwrap();
    assert_eq!((q.max_offset(), q.max_phys_end()), (8, 800));
    assert_eq!(q.file_start_offsets(), vec![0, 5]);
    assert!(!file_path(&dir, 200).exists());
    assert!(q.entry(8).is_none());
    let bytes = std::fs::read(file_path(&dir, 100)).unwrap();
    assert_eq!(&bytes[60..], &[0u8; 40]);
    // Truncating at a file boundary keeps the (now empty) file.
    q.truncate_dirty(500).unwrap();
    assert_eq!((q.max_offset(), q.max_phys_end()), (5, 500));
    assert_eq!(q.file_start_offsets(), vec![0, 5]);
    // Re-dispatch refills.
    for i in 5..9 {
        assert_eq!(
            q.append_entry(i, i as i64 * 100, 100, 0).unwrap(),
            AppendOutcome::Appended
        );
    }
    drop(q);
    let q = open(&dir);
    assert_eq!((q.max_offset(), q.max_phys_end()), (9, 900));
    // Nothing to do.
    q.truncate_dirty(5000).unwrap();
    assert_eq!(q.max_offset(), 9);
}

#[test]
fn truncate_everything_keeps_offsets() {
    let dir = tempfile::tempdir().unwrap();
    let q = open(&dir);
    fill(&q, 0..12);
    assert_eq!(q.delete_expired(1000).unwrap(), 2);
    assert_eq!((q.min_offset(), q.max_offset()), (10, 12));
    q.truncate_dirty(0).unwrap();
    assert_eq!(
        (q.min_offset(), q.max_offset(), q.max_phys_end()),
        (10, 10, 0)
    );
    assert_eq!(q.file_start_offsets(), vec![10]);
    fill(&q, 10..11);
    assert_eq!((q.min_offset(), q.max_offset()), (10, 11));
}

#[test]
fn delete_expired_and_min_offset() {
    let dir = tempfile::tempdir().unwrap();
    let q = open(&dir);
    fill(&q, 0..17);
    // Commit log min 730: file 0 (last entry 400) and 5 (last entry 900 >= 730) ...
    assert_eq!(q.delete_expired(730).unwrap(), 1);
    assert_eq!(q.file_start_offsets(), vec![5, 10, 15]);
    assert!(!file_path(&dir, 0).exists());
    assert_eq!(q.min_offset(), 8, "first entry at or above 730 is 800");
    assert!(q.entry(7).is_none());
    assert!(q.batch(7, 10).is_none());
    // Never the last file, even if everything is gone.
    assert_eq!(q.delete_expired(1_000_000).unwrap(), 2);
    assert_eq!(q.file_start_offsets(), vec![15]);
    assert_eq!((q.min_offset(), q.max_offset()), (17, 17));
    // min never moves backwards.
    q.correct_min_offset(0);
    assert_eq!(q.min_offset(), 17);
}

/// Found by `consume_queue_concurrency::behaves_like_a_model`: when expiry
/// leaves only gap padding, the max physical end is what a reopen computes
/// from the files kept (nothing), not the end of a deleted file's record.
#[test]
fn delete_expired_down_to_padding_forgets_the_max_phys_end() {
    let dir = tempfile::tempdir().unwrap();
    let q = open(&dir);
    fill(&q, 0..5);
    // Offsets 5..7 are gap padding in file 5; offset 7 is a message.
    q.append_entry(7, 500, 100, 7).unwrap();
    q.truncate_dirty(500).unwrap();
    assert_eq!(q.file_start_offsets(), vec![0, 5]);
    assert_eq!(q.max_phys_end(), 500);
    assert_eq!(q.delete_expired(500).unwrap(), 1);
    assert_eq!(q.file_start_offsets(), vec![5]);
    let live = q.max_phys_end();
    drop(q);
    let q = open(&dir);
    assert_eq!((live, q.max_phys_end()), (0, 0));
}

#[test]
fn correct_min_offset_after_reload() {
    let dir = tempfile::tempdir().unwrap();
    {
        let q = open(&dir);
        fill(&q, 0..8);
    }
    let q = open(&dir);
    assert_eq!(q.min_offset(), 0);
    q.correct_min_offset(250);
    assert_eq!(q.min_offset(), 3);
}

#[test]
fn search_by_time() {
    let dir = tempfile::tempdir().unwrap();
    let q = ConsumeQueue::open(dir.path(), "T", 0, 20 * 100).unwrap();
    // Entry i: phys i*100, stored at 1000 + 10*i.
    for i in 0..50u64 {
        q.append_entry(i, i as i64 * 100, 100, 0).unwrap();
    }
    let st = |phys: i64, _size: i32| Some(1000 + phys / 10);
    assert_eq!(q.search_offset_by_time(1000, 0, st), Some(0));
    assert_eq!(q.search_offset_by_time(1250, 0, st), Some(25));
    assert_eq!(
        q.search_offset_by_time(1254, 0, st),
        Some(25),
        "closer to the left"
    );
    assert_eq!(
        q.search_offset_by_time(1256, 0, st),
        Some(26),
        "closer to the right"
    );
    assert_eq!(
        q.search_offset_by_time(1255, 0, st),
        Some(25),
        "tie goes left"
    );
    assert_eq!(
        q.search_offset_by_time(5, 0, st),
        Some(0),
        "before everything"
    );
    assert_eq!(
        q.search_offset_by_time(999_999, 0, st),
        Some(49),
        "after everything"
    );
    // Entries below the commit log min offset are skipped.
    assert_eq!(q.search_offset_by_time(1000, 2000, st), Some(20));
    // Unreadable records count as earlier.
    let partial = |phys: i64, _: i32| (phys >= 3000).then_some(1000 + phys / 10);
    assert_eq!(q.search_offset_by_time(1100, 0, partial), Some(30));
    assert_eq!(q.search_offset_by_time(1100, 0, |_, _| None), None);
    let empty = ConsumeQueue::new(dir.path(), "U", 0, 100);
    assert_eq!(empty.search_offset_by_time(1, 0, st), None);
}

#[test]
fn search_by_time_picks_file_by_mtime() {
    let dir = tempfile::tempdir().unwrap();
    let q = open(&dir);
    fill(&q, 0..12);
    // All files were modified "now"; a timestamp in the past selects the first
    // file, so a later target is clamped to that file's last entry.
    let st = |phys: i64, _: i32| Some(phys);
    assert_eq!(q.search_offset_by_time(700, 0, st), Some(4));
    // A timestamp in the future selects the last file.
    let future = super::modified_ms(&file_path(&dir, 0)).unwrap() + 3_600_000;
    assert_eq!(q.search_offset_by_time(future, 0, st), Some(11));
}

#[test]
fn flush_least_pages() {
    let dir = tempfile::tempdir().unwrap();
    // 1000 entries per file = 20000 bytes, ~5 pages.
    let q = ConsumeQueue::open(dir.path(), "T", 0, 20_000).unwrap();
    for i in 0..100 {
        q.append_entry(i, i as i64 * 10, 10, 0).unwrap();
    }
    assert!(!q.flush(1).unwrap(), "2000 bytes: no whole page dirty yet");
    assert_eq!(q.flushed_offset(), 0);
    for i in 100..210 {
        q.append_entry(i, i as i64 * 10, 10, 0).unwrap();
    }
    assert!(q.flush(1).unwrap());
    assert_eq!(q.flushed_offset(), 210);
    q.append_entry(210, 2100, 10, 0).unwrap();
    assert!(!q.flush(2).unwrap());
    assert!(q.flush(0).unwrap());
    assert_eq!(q.flushed_offset(), 211);
}

#[test]
fn flush_full_files_regardless_of_pages() {
    let dir = tempfile::tempdir().unwrap();
    let q = open(&dir);
    fill(&q, 0..12);
    assert!(!q.flush(1000).unwrap());
    assert_eq!(q.flushed_offset(), 10, "the two full files are flushed");
}

#[test]
fn invalid_topic_refuses_appends() {
    let dir = tempfile::tempdir().unwrap();
    let q = ConsumeQueue::new(dir.path(), "../evil", 0, FS);
    assert!(matches!(
        q.append_entry(0, 0, 1, 0),
        Err(StoreError::InvalidArgument(_))
    ));
}

#[test]
fn set_loads_creates_and_aggregates() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("consumequeue");
    {
        let set = ConsumeQueueSet::with_root(&root, FS).unwrap();
        let a0 = set.get_or_create("A", 0);
        let a1 = set.get_or_create("A", 1);
        let b3 = set.get_or_create("%RETRY%G", 3);
        assert!(Arc::ptr_eq(&a0, &set.get_or_create("A", 0)));
        let mut phys = 0;
        for i in 0..7u64 {
            for q in [&a0, &a1, &b3] {
                if q.queue_id() == 1 && i >= 3 {
                    continue;
                }
                q.append_entry(i, phys, 10, 0).unwrap();
                phys += 10;
            }
        }
        assert_eq!(set.max_phys_end(), phys as u64);
        set.flush_all(0).unwrap();
        // Only looked up, never written: no directory.
        set.get_or_create("C", 0);
        assert!(!root.join("C").exists());
        assert_eq!(set.next_offset_table().get(&("C".to_string(), 0)), Some(&0));
    }
    let set = ConsumeQueueSet::load_from(&root, FS).unwrap();
    let table = set.next_offset_table();
    assert_eq!(table.len(), 3);
    assert_eq!(table[&("A".to_string(), 0)], 7);
    assert_eq!(table[&("A".to_string(), 1)], 3);
    assert_eq!(table[&("%RETRY%G".to_string(), 3)], 7);
    assert_eq!(
        set.topic_queues("A").keys().copied().collect::<Vec<_>>(),
        vec![0, 1]
    );
    assert_eq!(set.max_phys_end(), 170);
    set.truncate_dirty_all(100).unwrap();
    assert_eq!(set.max_phys_end(), 100);
    let table = set.next_offset_table();
    assert_eq!(table[&("A".to_string(), 0)], 4);
    assert_eq!(table[&("A".to_string(), 1)], 3);
    assert_eq!(
        table[&("%RETRY%G".to_string(), 3)],
        3,
        "its entry at 100 went"
    );
    assert!(set.get("nope", 0).is_none());
    assert_eq!(set.get_or_create("nope", 0).max_offset(), 0);
    assert_eq!(set.queues().len(), 4);
    assert_eq!(set.delete_expired_all(0).unwrap(), 0);
    set.correct_min_offsets(0);
    assert!(ConsumeQueueSet::with_root(&root, 30).is_err());
}

#[test]
fn remove_topic_deletes_files_and_retires_queues() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("consumequeue");
    let set = ConsumeQueueSet::with_root(&root, FS).unwrap();
    let a = set.get_or_create("A", 0);
    fill(&a, 0..7);
    let held = a.batch(0, 5).unwrap();
    set.remove_topic("A").unwrap();
    assert!(!root.join("A").exists());
    // A reader's batch still reads its mapping.
    assert_eq!(
        held.map(|(_, e)| e.phys_offset).collect::<Vec<_>>(),
        vec![0, 100, 200, 300, 400]
    );
    assert!(a.append_entry(7, 700, 100, 0).is_err());
    let fresh = set.get_or_create("A", 0);
    assert!(!Arc::ptr_eq(&a, &fresh));
    assert_eq!(fresh.max_offset(), 0);
    fresh.append_entry(0, 10_000, 10, 0).unwrap();
    set.remove_topic("never-existed").unwrap();
}
