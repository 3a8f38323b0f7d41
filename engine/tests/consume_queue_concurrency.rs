//! Consume queue under a concurrent writer and readers, and against a model.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use engine::consume_queue::{AppendOutcome, ConsumeQueue, CqEntry};
use proptest::prelude::*;

/// Entry i references phys i*64, size 64, tags code i.
fn expected(i: u64) -> CqEntry {
    CqEntry {
        phys_offset: i as i64 * 64,
        size: 64,
        tags_code: i as i64,
    }
}

#[test]
fn readers_never_see_unpublished_entries() {
    let dir = tempfile::tempdir().unwrap();
    // 7 entries per file: lots of rolls.
    let q = Arc::new(ConsumeQueue::open(dir.path(), "T", 0, 7 * 20).unwrap());
    let stop = Arc::new(AtomicBool::new(false));
    let readers: Vec<_> = (0..4)
        .map(|r| {
            let q = q.clone();
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut seen = 0u64;
                let mut next = 0u64;
                while !stop.load(Ordering::Acquire) || next < q.max_offset() {
                    let max = q.max_offset();
                    // Every published entry is complete.
                    if max > 0 {
                        let i = (seen * 7919 + r) % max;
                        assert_eq!(q.entry(i), Some(expected(i)), "reader {r} entry {i}");
                    }
                    // A pull-like scan continuing batch after batch.
                    if let Some(batch) = q.batch(next, 5) {
                        assert!(batch.len() <= 5);
                        let end = batch.end_offset();
                        assert!(end <= max.max(q.max_offset()));
                        for (i, e) in batch {
                            assert_eq!(e, expected(i), "reader {r} batch entry {i}");
                        }
                        // Never crosses a file.
                        assert_eq!((next / 7), (end - 1) / 7);
                        next = end;
                    }
                    seen += 1;
                }
                assert_eq!(next, q.max_offset());
            })
        })
        .collect();
    for i in 0..5000u64 {
        let e = expected(i);
        assert_eq!(
            q.append_entry(i, e.phys_offset, e.size, e.tags_code)
                .unwrap(),
            AppendOutcome::Appended
        );
        if i % 500 == 0 {
            q.flush(1).unwrap();
        }
    }
    stop.store(true, Ordering::Release);
    for r in readers {
        r.join().unwrap();
    }
    q.flush(0).unwrap();
    assert_eq!(q.flushed_offset(), 5000);
}

#[derive(Debug, Clone)]
enum Op {
    /// Append the next record with queue offset = max + skip (skip 0 normally).
    Append {
        skip: u8,
    },
    /// Re-dispatch an already appended record.
    Redispatch {
        back: u8,
    },
    /// Commit log truncated `back` records before its end.
    Truncate {
        back: u8,
    },
    /// Commit log min offset moved up to the record `n` records after the first.
    Expire {
        n: u8,
    },
    Reopen,
    Flush,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        8 => (0u8..3).prop_map(|s| Op::Append { skip: if s == 2 { 2 } else { 0 } }),
        1 => any::<u8>().prop_map(|back| Op::Redispatch { back }),
        1 => (0u8..6).prop_map(|back| Op::Truncate { back }),
        1 => (0u8..10).prop_map(|n| Op::Expire { n }),
        1 => Just(Op::Reopen),
        1 => Just(Op::Flush),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    /// The queue agrees with a simple map model through appends, gaps,
    /// re-dispatch, truncation, expiry and reopening.
    #[test]
    fn behaves_like_a_model(ops in proptest::collection::vec(op(), 1..80)) {
        let dir = tempfile::tempdir().unwrap();
        const FS: u64 = 4 * 20;
        let mut q = ConsumeQueue::open(dir.path(), "T", 1, FS).unwrap();
        // Model: queue offset -> (phys, size); records are 10 bytes, consecutive.
        let mut model: BTreeMap<u64, (i64, i32)> = BTreeMap::new();
        let mut next_phys = 0i64;
        let mut max = 0u64;
        let mut min_phys = 0u64;
        for op in ops {
            match op {
                Op::Append { skip } => {
                    let off = max + skip as u64;
                    let out = q.append_entry(off, next_phys, 10, 7).unwrap();
                    if skip == 0 {
                        prop_assert_eq!(out, AppendOutcome::Appended);
                    } else {
                        let is_padded = matches!(out, AppendOutcome::AppendedAfterPadding { .. });
                        prop_assert!(is_padded);
                    }
                    model.insert(off, (next_phys, 10));
                    next_phys += 10;
                    max = off + 1;
                }
                Op::Redispatch { back } => {
                    if let Some((&off, &(p, s))) = model.iter().rev().nth(back as usize % model.len().max(1)) {
                        // Ignored: a duplicate, or (if its file is gone) behind.
                        let out = q.append_entry(off, p, s, 7).unwrap();
                        prop_assert!(
                            matches!(out, AppendOutcome::Duplicate | AppendOutcome::Behind),
                            "{:?}",
                            out
                        );
                    }
                }
                Op::Truncate { back } => {
                    let cut = (next_phys - back as i64 * 10).max(min_phys as i64).max(0);
                    let min_before = q.min_offset();
                    q.truncate_dirty(cut as u64).unwrap();
                    model.retain(|_, (p, _)| *p < cut);
                    next_phys = cut;
                    // Offsets restart after the last kept entry (trailing gap
                    // padding goes too, but never below the min offset); if
                    // none is kept the queue keeps the start of its first file.
                    max = q.max_offset();
                    if let Some((&last, _)) = model.iter().next_back() {
                        prop_assert_eq!(max, (last + 1).max(min_before));
                    }
                }
                Op::Expire { n } => {
                    if let Some((_, &(p, _))) = model.iter().nth(n as usize) {
                        min_phys = min_phys.max(p as u64);
                        q.delete_expired(min_phys).unwrap();
                    }
                }
                Op::Reopen => {
                    drop(q);
                    q = ConsumeQueue::open(dir.path(), "T", 1, FS).unwrap();
                    q.correct_min_offset(min_phys);
                }
                Op::Flush => {
                    q.flush(0).unwrap();
                }
            }
            prop_assert_eq!(q.max_offset(), max);
            let live: Vec<_> = model.iter().filter(|(_, (p, _))| *p as u64 >= min_phys).collect();
            let expect_min = live.first().map(|(o, _)| **o).unwrap_or(max);
            prop_assert_eq!(q.min_offset(), expect_min);
            // Entries whose file was deleted are forgotten by the queue.
            let first_file = q.file_start_offsets().first().copied().unwrap_or(0);
            let end = model
                .range(first_file..)
                .next_back()
                .map(|(_, (p, s))| (*p + *s as i64) as u64)
                .unwrap_or(0);
            prop_assert_eq!(q.max_phys_end(), end);
            for (o, (p, s)) in live {
                let e = q.entry(*o).unwrap();
                prop_assert_eq!((e.phys_offset, e.size, e.tags_code), (*p, *s, 7));
            }
            // Offsets between min and max that the model lacks are padding.
            for o in q.min_offset()..q.max_offset() {
                if !model.contains_key(&o) {
                    let is_msg = q.entry(o).map(|e| e.is_message()).unwrap_or(false);
                    prop_assert!(!is_msg, "offset {} should be padding", o);
                }
            }
        }
    }
}
