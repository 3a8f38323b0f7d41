//! Reput dispatch and the read path through the public API.

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use engine::config::StoreConfig;
use engine::record::{self, Decoded, MessageToStore};
use engine::{AcceptAll, GetMessageStatus, MessageStore, TagCodes};

fn config(dir: &Path) -> StoreConfig {
    StoreConfig {
        store_path_root_dir: dir.to_path_buf(),
        mapped_file_size_commit_log: 64 * 1024,
        mapped_file_size_consume_queue: 20 * 50,
        max_hash_slot_num: 64,
        max_index_num: 400,
        ..StoreConfig::default()
    }
}

fn wait_dispatched(store: &MessageStore) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while store.dispatched_offset() < store.max_offset() {
        assert!(Instant::now() < deadline, "dispatch did not catch up");
        std::thread::sleep(Duration::from_millis(1));
    }
}

fn body_of(m: &engine::commit_log::MappedSlice) -> Vec<u8> {
    match record::decode(m.as_bytes(), true) {
        Decoded::Message(v) => v.body.to_vec(),
        other => panic!("not a message: {other:?}"),
    }
}

#[test]
fn concurrent_writers_every_record_once_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let store = MessageStore::open(config(dir.path())).unwrap();
    let arrivals = Arc::new(AtomicUsize::new(0));
    let a = arrivals.clone();
    store.set_arrival_listener(Arc::new(move |_| {
        a.fetch_add(1, Ordering::Relaxed);
    }));
    let writers: Vec<_> = (0..4)
        .map(|w| {
            let s = store.clone();
            std::thread::spawn(move || {
                for i in 0..300u32 {
                    let topic = format!("T{}", i % 5);
                    let queue = ((i / 5) % 4) as i32;
                    let tag = if i % 2 == 0 { "TagA" } else { "TagB" };
                    let props = format!("TAGS\u{1}{tag}\u{2}KEYS\u{1}w{w}i{i} shared{w}");
                    let body = format!("w{w}-i{i}");
                    s.put_message(&MessageToStore::new(&topic, queue, body.as_bytes(), &props))
                        .unwrap();
                }
            })
        })
        .collect();
    for w in writers {
        w.join().unwrap();
    }
    wait_dispatched(&store);
    assert_eq!(arrivals.load(Ordering::Relaxed), 1200);
    let mut seen = std::collections::HashSet::new();
    for t in 0..5 {
        for q in 0..4 {
            let topic = format!("T{t}");
            let max = store.max_queue_offset(&topic, q);
            let mut off = 0;
            let mut last_per_writer = [-1i64; 4];
            while off < max {
                let r = store.get_messages(&topic, q, off, 32, &AcceptAll);
                assert_eq!(r.status, GetMessageStatus::Found);
                for m in &r.messages {
                    let b = String::from_utf8(body_of(m)).unwrap();
                    assert!(seen.insert(b.clone()), "duplicate {b}");
                    let (w, i) = b[1..].split_once("-i").unwrap();
                    let (w, i): (usize, i64) = (w.parse().unwrap(), i.parse().unwrap());
                    assert!(i > last_per_writer[w], "out of order in {topic}/{q}");
                    last_per_writer[w] = i;
                }
                off = r.next_begin_offset;
            }
            let r = store.get_messages(&topic, q, max, 32, &AcceptAll);
            assert_eq!(r.status, GetMessageStatus::OffsetOverflowOne);
        }
    }
    assert_eq!(seen.len(), 1200);

    // Tag filter: only TagA (even i), but next offset covers the scanned range.
    let code = record::java_string_hash("TagA");
    let r = store.get_messages("T0", 0, 0, 1000, &TagCodes(vec![code]));
    assert!(!r.messages.is_empty());
    for m in &r.messages {
        let Decoded::Message(v) = record::decode(m.as_bytes(), false) else {
            panic!()
        };
        assert_eq!(v.property("TAGS"), Some("TagA"));
    }

    // Index: unique keys and shared keys.
    let got = store.query_by_key("T3", "w2i3", 10, 0, i64::MAX);
    assert_eq!(got.len(), 1);
    assert_eq!(body_of(&got[0]), b"w2-i3");
    let shared = store.query_by_key("T1", "shared1", 1000, 0, i64::MAX);
    assert_eq!(shared.len(), 60);
    assert!(store.query_by_key("T1", "nope", 10, 0, i64::MAX).is_empty());
}

#[test]
fn offset_corrections_and_lookups() {
    let dir = tempfile::tempdir().unwrap();
    let store = MessageStore::open(config(dir.path())).unwrap();
    let r = store.get_messages("EMPTY", 0, 5, 32, &AcceptAll);
    assert_eq!(r.status, GetMessageStatus::NoMessageInQueue);
    assert_eq!(store.max_queue_offset("EMPTY", 0), 0);
    let mut times = Vec::new();
    for i in 0..10u8 {
        let r = store
            .put_message(&MessageToStore::new("Q", 1, &[i], ""))
            .unwrap();
        times.push(r.store_timestamp);
        std::thread::sleep(Duration::from_millis(3));
    }
    wait_dispatched(&store);
    assert_eq!(
        store.get_messages("Q", 1, 11, 32, &AcceptAll).status,
        GetMessageStatus::OffsetOverflowBadly
    );
    assert_eq!(
        store
            .get_messages("Q", 1, 11, 32, &AcceptAll)
            .next_begin_offset,
        10
    );
    assert_eq!(store.min_queue_offset("Q", 1), 0);
    assert_eq!(store.earliest_message_time("Q", 1), Some(times[0]));
    assert_eq!(store.queue_offset_by_time("Q", 1, times[4]), 4);
    // Reads honour max count and limits.
    let r = store.get_messages("Q", 1, 2, 3, &AcceptAll);
    assert_eq!(r.messages.len(), 3);
    assert_eq!(r.next_begin_offset, 5);
    // Clean restart keeps consume queues and the index; offsets continue.
    store.shutdown().unwrap();
    drop(store);
    let store = MessageStore::open(config(dir.path())).unwrap();
    assert_eq!(store.max_queue_offset("Q", 1), 10);
    let r = store
        .put_message(&MessageToStore::new("Q", 1, b"x", ""))
        .unwrap();
    assert_eq!(r.messages[0].queue_offset, 10);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    rt.block_on(store.delete_topic("Q")).unwrap();
    assert_eq!(store.max_queue_offset("Q", 1), 0);
}

#[test]
fn derived_files_rebuilt_after_crash_and_loss() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = MessageStore::open(config(dir.path())).unwrap();
        for i in 0..200u32 {
            let props = format!("KEYS\u{1}key{i}");
            store
                .put_message(&MessageToStore::new(
                    "C",
                    (i % 3) as i32,
                    &i.to_be_bytes(),
                    &props,
                ))
                .unwrap();
        }
        wait_dispatched(&store);
        store.abandon();
    }
    // Lose the consume queues and index entirely: recovery rebuilds them.
    std::fs::remove_dir_all(dir.path().join("consumequeue")).unwrap();
    std::fs::remove_dir_all(dir.path().join("index")).unwrap();
    std::fs::remove_file(dir.path().join("checkpoint")).ok();
    let store = MessageStore::open(config(dir.path())).unwrap();
    let total: u64 = (0..3).map(|q| store.max_queue_offset("C", q)).sum();
    assert_eq!(total, 200);
    for i in [0u32, 77, 199] {
        let got = store.query_by_key("C", &format!("key{i}"), 4, 0, i64::MAX);
        assert_eq!(got.len(), 1, "key{i}");
        assert_eq!(body_of(&got[0]), i.to_be_bytes());
    }
}

/// Puts `n` one-byte-body messages to queue 0 of topic "R", stops cleanly.
fn stopped_store_with(dir: &Path, n: u8) {
    let store = MessageStore::open(config(dir)).unwrap();
    for i in 0..n {
        store
            .put_message(&MessageToStore::new("R", 0, &[i], ""))
            .unwrap();
    }
    wait_dispatched(&store);
    store.shutdown().unwrap();
}

/// Every message of queue R/0 is served at its own queue offset.
fn assert_queue_whole(store: &MessageStore, n: u8) {
    assert_eq!(store.max_queue_offset("R", 0), n as u64);
    let mut bodies = Vec::new();
    let mut next = 0;
    while next < n as u64 {
        let r = store.get_messages("R", 0, next, 32, &AcceptAll);
        assert_eq!(r.status, GetMessageStatus::Found, "at {next}");
        bodies.extend(r.messages.iter().map(body_of));
        next = r.next_begin_offset;
    }
    let want: Vec<Vec<u8>> = (0..n).map(|i| vec![i]).collect();
    assert_eq!(bodies, want);
    // New sends continue after the acknowledged offsets, never reuse them.
    let put = store
        .put_message(&MessageToStore::new("R", 0, b"next", ""))
        .unwrap();
    assert_eq!(put.messages[0].queue_offset, n as i64);
}

/// RocketMQ users delete `consumequeue/` to have it rebuilt: re-dispatch
/// starts where the queues end, not at the checkpoint.
#[test]
fn deleted_consume_queues_are_rebuilt_after_a_clean_stop() {
    let dir = tempfile::tempdir().unwrap();
    stopped_store_with(dir.path(), 120);
    std::fs::remove_dir_all(dir.path().join("consumequeue")).unwrap();
    let store = MessageStore::open(config(dir.path())).unwrap();
    assert_queue_whole(&store, 120);
}

/// Entries zeroed in the middle of a queue's last file: the queue is cut
/// there at load, and the cut entries come back from the commit log.
#[test]
fn a_damaged_consume_queue_is_refilled_from_the_commit_log() {
    let dir = tempfile::tempdir().unwrap();
    stopped_store_with(dir.path(), 120);
    // 50 entries per file: file 100 holds queue offsets 100..149.
    let cq = dir
        .path()
        .join("consumequeue/R/0")
        .join(format!("{:020}", 100 * 20));
    let mut bytes = std::fs::read(&cq).unwrap();
    bytes[5 * 20..8 * 20].fill(0);
    std::fs::write(&cq, bytes).unwrap();
    let store = MessageStore::open(config(dir.path())).unwrap();
    assert_queue_whole(&store, 120);
}

/// A queue file that cannot be created (here a file sits where the queue's
/// directory goes; in life, a full disk): dispatch stops at that record
/// instead of skipping it, appends are refused meanwhile, and once the
/// obstacle is gone the record gets its entry and appends resume.
#[test]
fn a_failing_queue_stalls_dispatch_and_refuses_appends_until_it_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let store = MessageStore::open(config(dir.path())).unwrap();
    let blocker = dir.path().join("consumequeue/S/0");
    std::fs::create_dir_all(blocker.parent().unwrap()).unwrap();
    std::fs::write(&blocker, b"not a directory").unwrap();
    let first = store
        .put_message(&MessageToStore::new("S", 0, b"first", ""))
        .unwrap();
    assert_eq!(first.messages[0].queue_offset, 0);
    let refused = store.put_message(&MessageToStore::new("S", 0, b"second", ""));
    assert!(
        matches!(refused, Err(engine::StoreError::DispatchStalled(_))),
        "{refused:?}"
    );
    std::fs::remove_file(&blocker).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match store.put_message(&MessageToStore::new("S", 0, b"second", "")) {
            Ok(r) => {
                assert_eq!(r.messages[0].queue_offset, 1);
                break;
            }
            Err(engine::StoreError::DispatchStalled(_)) => {
                assert!(Instant::now() < deadline, "dispatch did not resume");
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => panic!("{e}"),
        }
    }
    wait_dispatched(&store);
    let r = store.get_messages("S", 0, 0, 32, &AcceptAll);
    assert_eq!(r.status, GetMessageStatus::Found);
    let bodies: Vec<Vec<u8>> = r.messages.iter().map(body_of).collect();
    assert_eq!(bodies, vec![b"first".to_vec(), b"second".to_vec()]);
}

/// Under a fast burst the reput thread takes dispatch over from the
/// appenders, nothing is lost in the hand-overs, and once the burst ends a
/// put is dispatched again before it returns.
#[test]
fn a_burst_is_dispatched_by_the_reput_thread_and_a_lone_put_inline() {
    let dir = tempfile::tempdir().unwrap();
    let store = MessageStore::open(StoreConfig {
        mapped_file_size_commit_log: 256 << 20,
        mapped_file_size_consume_queue: 20 * 300_000,
        ..config(dir.path())
    })
    .unwrap();
    let body = vec![7u8; 4096];
    let batch: Vec<_> = (0..16)
        .map(|_| MessageToStore::new("Burst", 0, &body, ""))
        .collect();
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut put = 0u64;
    // Keep the log growing well past 100 MB/s until the thread follows it,
    // then a little longer so records are dispatched in that mode.
    let mut after = 0;
    while after < 200 {
        assert!(Instant::now() < deadline, "the reput thread never followed");
        store.put_batch(&batch).unwrap();
        put += batch.len() as u64;
        if store.dispatch_is_following() {
            after += 1;
        }
    }
    wait_dispatched(&store);
    assert_eq!(store.max_queue_offset("Burst", 0), put);
    let deadline = Instant::now() + Duration::from_secs(5);
    while store.dispatch_is_following() {
        assert!(
            Instant::now() < deadline,
            "following did not end after the burst"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    store
        .put_message(&MessageToStore::new("Lone", 1, b"x", ""))
        .unwrap();
    assert_eq!(
        store.max_queue_offset("Lone", 1),
        1,
        "not dispatched inline"
    );
    store.shutdown().unwrap();
}

/// A crash while a consume queue or index file was being created leaves a
/// temporary file behind (`<name>.alloc`, still empty). It must not stop
/// the store from opening, and the file created later under that name has
/// its full size.
#[test]
fn leftover_temporary_files_do_not_stop_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let put = |store: &MessageStore, from: u32, to: u32| {
        for i in from..to {
            store
                .put_message(&MessageToStore::new("L", 0, &i.to_be_bytes(), ""))
                .unwrap();
        }
        wait_dispatched(store);
    };
    {
        let store = MessageStore::open(config(dir.path())).unwrap();
        put(&store, 0, 10);
        store.abandon();
    }
    // 50 entries per consume queue file: the next two files start at
    // queue offsets 50 and 100 (byte names 1000 and 2000).
    let queue_dir = dir.path().join("consumequeue").join("L").join("0");
    for start in [1000u64, 2000] {
        std::fs::write(queue_dir.join(format!("{start:020}.alloc")), b"").unwrap();
    }
    let index_dir = dir.path().join("index");
    std::fs::create_dir_all(&index_dir).unwrap();
    std::fs::write(index_dir.join("20240101000000000.alloc"), b"").unwrap();

    let store = MessageStore::open(config(dir.path())).unwrap();
    assert_eq!(store.max_queue_offset("L", 0), 10);
    put(&store, 10, 120);
    for start in [0u64, 1000, 2000] {
        let len = std::fs::metadata(queue_dir.join(format!("{start:020}")))
            .unwrap()
            .len();
        assert_eq!(len, 1000, "consume queue file {start}");
    }
    assert!(!queue_dir.join(format!("{:020}.alloc", 1000)).exists());
    store.shutdown().unwrap();
    drop(store);

    let store = MessageStore::open(config(dir.path())).unwrap();
    let mut off = 0;
    while off < 120 {
        let r = store.get_messages("L", 0, off, 32, &AcceptAll);
        assert_eq!(r.status, GetMessageStatus::Found, "at {off}");
        for (i, m) in r.messages.iter().enumerate() {
            assert_eq!(body_of(m), (off as u32 + i as u32).to_be_bytes());
        }
        off = r.next_begin_offset;
    }
    assert_eq!(off, 120);
}

/// A damaged consume queue entry (pointing 4 bytes off its record, or
/// giving the wrong size) is never served: a pull returns what precedes it
/// and its next offset is the damaged entry, where a pull finds nothing
/// (OFFSET_FOUND_NULL, which the broker answers by holding the pull).
#[test]
fn a_damaged_consume_queue_entry_is_not_served() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = MessageStore::open(config(dir.path())).unwrap();
        for i in 0..6u32 {
            store
                .put_message(&MessageToStore::new("D", 0, &i.to_be_bytes(), ""))
                .unwrap();
        }
        wait_dispatched(&store);
        store.shutdown().unwrap();
    }
    // Entries are PHYSICALOFFSET (8 bytes), SIZE (4), tag code (8).
    let path = dir
        .path()
        .join("consumequeue")
        .join("D")
        .join("0")
        .join(format!("{:020}", 0));
    let mut cq = std::fs::read(&path).unwrap();
    let field = |cq: &[u8], at: usize, n: usize| -> i64 {
        cq[at..at + n]
            .iter()
            .fold(0i64, |acc, b| (acc << 8) | *b as i64)
    };
    let phys2 = field(&cq, 2 * 20, 8) + 4;
    cq[2 * 20..2 * 20 + 8].copy_from_slice(&phys2.to_be_bytes());
    let size4 = field(&cq, 4 * 20 + 8, 4) as i32 + 4;
    cq[4 * 20 + 8..4 * 20 + 12].copy_from_slice(&size4.to_be_bytes());
    std::fs::write(&path, &cq).unwrap();

    let store = MessageStore::open(config(dir.path())).unwrap();
    assert_eq!(store.max_queue_offset("D", 0), 6);
    let r = store.get_messages("D", 0, 0, 32, &AcceptAll);
    assert_eq!(r.status, GetMessageStatus::Found);
    assert_eq!(r.messages.len(), 2);
    assert_eq!(body_of(&r.messages[1]), 1u32.to_be_bytes());
    assert_eq!(r.next_begin_offset, 2);
    for damaged in [2, 4] {
        let r = store.get_messages("D", 0, damaged, 32, &AcceptAll);
        assert_eq!(r.status, GetMessageStatus::OffsetFoundNull, "at {damaged}");
        assert!(r.messages.is_empty());
        assert_eq!(r.next_begin_offset, damaged);
    }
    let r = store.get_messages("D", 0, 3, 32, &AcceptAll);
    assert_eq!(r.status, GetMessageStatus::Found);
    assert_eq!(r.messages.len(), 1);
    assert_eq!(body_of(&r.messages[0]), 3u32.to_be_bytes());
    assert_eq!(r.next_begin_offset, 4);
}

/// Puts one message of `topic` with `KEYS` = `keys` and waits for dispatch.
fn put_keyed(store: &MessageStore, topic: &str, keys: &str, body: &str) {
    let props = format!("KEYS\u{1}{keys}");
    store
        .put_message(&MessageToStore::new(topic, 0, body.as_bytes(), &props))
        .unwrap();
}

#[test]
fn query_by_key_with_max_num_zero_returns_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store = MessageStore::open(config(dir.path())).unwrap();
    for i in 0..3 {
        put_keyed(&store, "Q", "k", &format!("m{i}"));
    }
    wait_dispatched(&store);
    assert_eq!(store.query_by_key("Q", "k", 2, 0, i64::MAX).len(), 2);
    assert!(
        store.query_by_key("Q", "k", 0, 0, i64::MAX).is_empty(),
        "at most max_num = 0 messages"
    );
}
#[test]
fn query_by_key_finds_a_key_behind_newer_hash_collisions() {
    let dir = tempfile::tempdir().unwrap();
    let store = MessageStore::open(config(dir.path())).unwrap();
    // "Aa" and "BB" have the same Java hash code, so do "Q#Aa" and "Q#BB":
    // one chain of equal hashes, the wanted key at its old end.
    assert_eq!(
        engine::index::key_hash("Q#Aa"),
        engine::index::key_hash("Q#BB")
    );
    put_keyed(&store, "Q", "Aa", "wanted");
    for i in 0..100 {
        put_keyed(&store, "Q", "BB", &format!("other{i}"));
    }
    wait_dispatched(&store);
    for max in [1, 4, 32, 64] {
        let got = store.query_by_key("Q", "Aa", max, 0, i64::MAX);
        assert_eq!(got.len(), 1, "maxNum {max}");
        assert_eq!(body_of(&got[0]), b"wanted");
        assert_eq!(store.query_by_key("Q", "BB", max, 0, i64::MAX).len(), max);
    }
}

/// `wait_dispatched` returns at once for what is dispatched, gives up after
/// its bound, and is woken by the dispatch of a record appended by another
/// thread (no polling: the wake comes well inside the bound).
#[test]
fn waiting_for_dispatch_is_woken_by_it_and_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(MessageStore::open(config(dir.path())).unwrap());
    store
        .put_message(&MessageToStore::new("W", 0, b"first", ""))
        .unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    rt.block_on(async {
        let end = store.max_offset();
        assert!(store.wait_dispatched(end, Duration::ZERO).await);
        let started = Instant::now();
        assert!(
            !store
                .wait_dispatched(end + 1, Duration::from_millis(50))
                .await
        );
        assert!(started.elapsed() >= Duration::from_millis(50));

        let writer = {
            let store = store.clone();
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(20));
                store
                    .put_message(&MessageToStore::new("W", 0, b"second", ""))
                    .unwrap()
            })
        };
        let started = Instant::now();
        assert!(
            store
                .wait_dispatched(end + 1, Duration::from_secs(30))
                .await
        );
        assert!(started.elapsed() < Duration::from_secs(5));
        let r = writer.join().unwrap();
        assert!(store.dispatched_offset() > r.messages[0].physical_offset);
    });
    assert_eq!(store.max_queue_offset("W", 0), 2);
}
