//! Commit log write path, flush and recovery through the public API.

use std::path::Path;

use engine::config::{FlushDiskType, FlushMechanism, StoreConfig};
use engine::record::{self, Decoded, MessageToStore};
use engine::{MessageStore, PutStatus, StoreError};
use proptest::prelude::*;

fn config(dir: &Path, file_size: u64) -> StoreConfig {
    StoreConfig {
        store_path_root_dir: dir.to_path_buf(),
        mapped_file_size_commit_log: file_size,
        ..StoreConfig::default()
    }
}

fn msg(topic: &str, queue: i32, body: &[u8]) -> MessageToStore {
    MessageToStore::new(
        topic,
        queue,
        body,
        &format!("TAGS\u{1}t{queue}\u{2}KEYS\u{1}k{}", body.len()),
    )
}

fn decode_all(store: &MessageStore) -> Vec<(u64, Vec<u8>)> {
    let mut out = Vec::new();
    for f in store.commit_log().files() {
        let data = f.whole();
        let mut pos = 0usize;
        while pos < data.len() {
            match record::decode(&data[pos..], true) {
                Decoded::Message(v) => {
                    out.push((v.physical_offset as u64, v.body.to_vec()));
                    pos += v.total_size();
                }
                _ => break,
            }
        }
    }
    out
}

#[test]
fn append_read_roll_and_queue_offsets() {
    let dir = tempfile::tempdir().unwrap();
    let store = MessageStore::open(config(dir.path(), 4096)).unwrap();
    let mut offsets = Vec::new();
    for i in 0..100u32 {
        let body = vec![i as u8; 100 + (i as usize % 50)];
        let r = store.put_message(&msg("T", (i % 3) as i32, &body)).unwrap();
        assert_eq!(r.status, PutStatus::PutOk);
        let m = &r.messages[0];
        assert_eq!(m.queue_offset, (i / 3) as i64);
        offsets.push((m.physical_offset, body));
    }
    // Records never straddle files; every file but the last ends with a blank.
    let files = store.commit_log().files();
    assert!(files.len() > 3, "small files must roll");
    for (off, body) in &offsets {
        let rec = store.read_record(*off).unwrap();
        let Decoded::Message(v) = record::decode(rec.as_bytes(), true) else {
            panic!("record at {off} must decode")
        };
        assert_eq!(v.body, &body[..]);
        assert_eq!(v.physical_offset as u64, *off);
        assert_eq!(off / 4096, (off + rec.as_bytes().len() as u64 - 1) / 4096);
    }
    for f in &files[..files.len() - 1] {
        let data = f.whole();
        let mut pos = 0;
        loop {
            match record::decode(&data[pos..], true) {
                Decoded::Message(v) => pos += v.total_size(),
                Decoded::Blank(n) => {
                    assert_eq!(pos + n as usize, data.len());
                    break;
                }
                other => panic!("file must end with a blank record, got {other:?}"),
            }
        }
    }
    // Batches get consecutive queue offsets and sit in one file.
    let batch: Vec<_> = (0..5).map(|i| msg("B", 0, &[i; 300])).collect();
    let r = store.put_batch(&batch).unwrap();
    let q: Vec<i64> = r.messages.iter().map(|m| m.queue_offset).collect();
    assert_eq!(q, vec![0, 1, 2, 3, 4]);
    let first = r.messages[0].physical_offset / 4096;
    assert!(r.messages.iter().all(|m| m.physical_offset / 4096 == first));
    store.shutdown().unwrap();
}

#[test]
fn bad_input_is_refused_and_nothing_written() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = config(dir.path(), 64 * 1024);
    c.max_message_size = 1000;
    let store = MessageStore::open(c).unwrap();
    let before = store.max_offset();
    assert!(matches!(
        store.put_message(&msg("T", 0, &[0; 1001])),
        Err(StoreError::InvalidArgument(_))
    ));
    let long_topic = "x".repeat(128);
    assert!(matches!(
        store.put_message(&msg(&long_topic, 0, b"a")),
        Err(StoreError::InvalidArgument(_))
    ));
    assert!(store.put_batch(&[]).is_err());
    assert_eq!(store.max_offset(), before);
}

#[test]
fn clean_restart_keeps_everything_and_queue_offsets_continue() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = MessageStore::open(config(dir.path(), 8192)).unwrap();
        for i in 0..50u8 {
            store.put_message(&msg("T", 0, &[i; 200])).unwrap();
        }
        store.shutdown().unwrap();
    }
    assert!(!dir.path().join("abort").exists());
    let store = MessageStore::open(config(dir.path(), 8192)).unwrap();
    assert!(store.was_clean_shutdown());
    assert_eq!(decode_all(&store).len(), 50);
}

#[test]
fn every_flush_mechanism_acknowledges_durably() {
    for mech in [
        FlushMechanism::Msync,
        FlushMechanism::Fdatasync,
        FlushMechanism::WriteFdatasync,
        FlushMechanism::IoUring,
    ] {
        let dir = tempfile::tempdir().unwrap();
        let mut c = config(dir.path(), 64 * 1024);
        c.flush_disk_type = FlushDiskType::SyncFlush;
        c.flush_mechanism = mech;
        let store = MessageStore::open(c).unwrap();
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let s = store.clone();
                std::thread::spawn(move || {
                    for i in 0..50u8 {
                        let r = s.put_message(&msg("T", t, &[i; 500])).unwrap();
                        assert_eq!(r.status, PutStatus::PutOk, "{mech}");
                        let end = r.messages[0].physical_offset + r.messages[0].size as u64;
                        assert!(s.durable_offset() >= end, "{mech}: acked before durable");
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(decode_all(&store).len(), 200, "{mech}");
        store.shutdown().unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn async_callers_wait_without_blocking() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = config(dir.path(), 1 << 20);
    c.flush_disk_type = FlushDiskType::SyncFlush;
    let store = MessageStore::open(c).unwrap();
    let mut tasks = Vec::new();
    for t in 0..32 {
        let s = store.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..20u8 {
                let r = s
                    .put_message_async(&msg("T", t % 4, &[i; 256]))
                    .await
                    .unwrap();
                assert_eq!(r.status, PutStatus::PutOk);
                assert!(
                    s.durable_offset() >= r.messages[0].physical_offset + r.messages[0].size as u64
                );
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(decode_all(&store).len(), 640);
}

/// Writes `n` records, then "crashes" (no shutdown: the abort file stays),
/// damages the last file at `cut` and reopens.
fn crash_and_damage(n: usize, sizes: &[usize], cut: usize, garbage: bool) {
    let dir = tempfile::tempdir().unwrap();
    let mut written = Vec::new();
    {
        let store = MessageStore::open(config(dir.path(), 4096)).unwrap();
        for i in 0..n {
            let body = vec![(i % 251) as u8; sizes[i % sizes.len()]];
            let r = store.put_message(&msg("T", 0, &body)).unwrap();
            written.push((r.messages[0].physical_offset, r.messages[0].size, body));
        }
        store.abandon(); // as if the process died: no checkpoint, abort file stays
    }
    // Damage the last file containing data at byte `cut`.
    let last_off = written.last().unwrap().0 / 4096 * 4096;
    let path = dir.path().join("commitlog").join(format!("{last_off:020}"));
    let mut data = std::fs::read(&path).unwrap();
    let used = written
        .iter()
        .filter(|(o, _, _)| o / 4096 * 4096 == last_off)
        .map(|(o, s, _)| (o - last_off) as usize + *s as usize)
        .max()
        .unwrap();
    let cut = cut % used.max(1);
    if garbage {
        for b in &mut data[cut..used] {
            *b ^= 0x5A;
        }
    } else {
        for b in &mut data[cut..] {
            *b = 0;
        }
    }
    std::fs::write(&path, &data).unwrap();

    let store = MessageStore::open(config(dir.path(), 4096)).unwrap();
    assert!(!store.was_clean_shutdown());
    let got = decode_all(&store);
    let expect: Vec<_> = written
        .iter()
        .filter(|(o, s, _)| *o < last_off || (o - last_off) as usize + *s as usize <= cut)
        .map(|(o, _, b)| (*o, b.clone()))
        .collect();
    if garbage {
        // The CRC covers only the body: a record whose topic or properties
        // were garbled (but whose lengths and body survived) still decodes, as
        // in RocketMQ. It must be the one record the cut went through.
        assert!(
            got.len() == expect.len() || got.len() == expect.len() + 1,
            "cut at {cut}"
        );
        assert_eq!(&got[..expect.len()], &expect[..]);
        if got.len() > expect.len() {
            return;
        }
    } else {
        assert_eq!(got.len(), expect.len(), "cut at {cut}");
        assert_eq!(got, expect);
    }
    let expected_end = written
        .iter()
        .filter(|(o, s, _)| *o >= last_off && (o - last_off) as usize + *s as usize <= cut)
        .map(|(o, s, _)| o + *s as u64)
        .max()
        .unwrap_or(last_off);
    assert_eq!(store.max_offset(), expected_end);
    // Nothing non-zero remains past the recovered end in its file.
    let end = store.max_offset();
    let f = store
        .commit_log()
        .files()
        .into_iter()
        .find(|f| f.start_offset() <= end && end < f.start_offset() + 4096);
    if let Some(f) = f {
        assert!(f.whole()[(end - f.start_offset()) as usize..]
            .iter()
            .all(|b| *b == 0));
    }
    // The store accepts appends right after recovery.
    store.put_message(&msg("T", 0, b"after")).unwrap();
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]
    #[test]
    fn crash_at_any_byte_recovers_whole_record_prefix(
        n in 1usize..60,
        sizes in proptest::collection::vec(1usize..900, 1..5),
        cut in 0usize..4096,
        garbage in any::<bool>(),
    ) {
        crash_and_damage(n, &sizes, cut, garbage);
    }
}

/// SYNC_FLUSH with write(2) stages appends and writes them at each flush:
/// an acknowledged record is readable and dispatched, one sent without
/// waiting (`WAIT=false`) becomes readable with the next flush, records
/// cross file boundaries intact, and a restart finds them all.
#[test]
fn staged_appends_are_readable_when_acknowledged_and_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = config(dir.path(), 64 * 1024);
    c.flush_disk_type = FlushDiskType::SyncFlush;
    c.flush_mechanism = FlushMechanism::WriteFdatasync;
    let store = MessageStore::open(c.clone()).unwrap();
    let mut expected = Vec::new();
    for i in 0..300u32 {
        let body = vec![(i % 251) as u8; 300 + (i as usize * 7) % 900];
        let r = store.put_message(&msg("S", (i % 3) as i32, &body)).unwrap();
        assert_eq!(
            r.status,
            PutStatus::PutOk,
            "put {i} at {} max {} durable {}",
            r.messages[0].physical_offset,
            store.max_offset(),
            store.durable_offset()
        );
        let at = r.messages[0].physical_offset;
        let rec = store.read_record(at).expect("acknowledged record readable");
        match record::decode(rec.as_bytes(), true) {
            Decoded::Message(v) => assert_eq!(v.body, &body[..]),
            other => panic!("record at {at}: {other:?}"),
        }
        expected.push((at, body));
    }
    // Without waiting: stored, readable once a flush has committed it.
    let mut nowait = msg("S", 0, b"no wait");
    nowait.wait_for_flush = false;
    let r = store.put_message(&nowait).unwrap();
    let at = r.messages[0].physical_offset;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while store.read_record(at).is_none() {
        assert!(std::time::Instant::now() < deadline, "never committed");
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    expected.push((at, b"no wait".to_vec()));
    while store.dispatched_offset() < store.max_offset() {
        assert!(std::time::Instant::now() < deadline, "never dispatched");
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    let queued: u64 = (0..3).map(|q| store.max_queue_offset("S", q)).sum();
    assert_eq!(queued, 301);
    store.shutdown().unwrap();
    drop(store);
    let store = MessageStore::open(c).unwrap();
    assert_eq!(decode_all(&store), expected);
    store.shutdown().unwrap();
}

/// Writes `n` records of 300 bytes' body into one 64 KiB commit log file
/// and stops the store, cleanly or as if the process died. Returns each
/// record's (physical offset, size, offset of its body in the file).
fn write_one_file(dir: &Path, n: u32, clean: bool) -> Vec<(u64, usize, usize)> {
    let store = MessageStore::open(config(dir, 64 * 1024)).unwrap();
    let mut written = Vec::new();
    for i in 0..n {
        let r = store
            .put_message(&msg("T", 0, &[i as u8 + 1; 300]))
            .unwrap();
        let at = r.messages[0].physical_offset;
        let rec = store.read_record(at).unwrap();
        let Decoded::Message(v) = record::decode(rec.as_bytes(), true) else {
            panic!("record at {at} must decode")
        };
        let body_at = at as usize + (v.body.as_ptr() as usize - v.raw.as_ptr() as usize);
        written.push((at, v.total_size(), body_at));
    }
    assert!(
        written.last().unwrap().0 < 64 * 1024,
        "all in the first file"
    );
    if clean {
        store.shutdown().unwrap();
    } else {
        store.abandon();
    }
    written
}

fn first_file(dir: &Path) -> std::path::PathBuf {
    dir.join("commitlog").join(format!("{:020}", 0))
}

/// A flipped body byte in the middle of the last file is damage, not a torn
/// tail: the records after it were acknowledged. Opening refuses, after a
/// clean stop and after a crash, and leaves the file as it was.
#[test]
fn a_flipped_body_byte_mid_file_refuses_and_changes_nothing() {
    for clean in [true, false] {
        let dir = tempfile::tempdir().unwrap();
        let written = write_one_file(dir.path(), 40, clean);
        let path = first_file(dir.path());
        let mut data = std::fs::read(&path).unwrap();
        let (bad_at, _, body_at) = written[20];
        data[body_at + 7] ^= 0x01;
        std::fs::write(&path, &data).unwrap();

        let err = match MessageStore::open(config(dir.path(), 64 * 1024)) {
            Ok(_) => panic!("open must refuse (clean stop: {clean})"),
            Err(e) => e,
        };
        match &err {
            StoreError::Corruption { path: p, detail } => {
                assert_eq!(p, &path);
                assert!(detail.contains("refusing to drop them"), "{detail}");
                assert!(detail.contains(&format!("offset {bad_at}")), "{detail}");
                assert!(
                    detail.contains(&format!("offset {}", written[21].0)),
                    "{detail}"
                );
            }
            other => panic!("expected corruption, got {other:?}"),
        }
        assert_eq!(
            std::fs::read(&path).unwrap(),
            data,
            "the refused file must be untouched (clean stop: {clean})"
        );
    }
}

/// A one-file store of 30 records, its file's path and bytes, and the
/// position halfway through the last record (where a test tears it).
#[allow(clippy::type_complexity)]
fn one_file_cut_in_its_last_record(
    dir: &std::path::Path,
) -> (Vec<(u64, usize, usize)>, std::path::PathBuf, Vec<u8>, usize) {
    let written = write_one_file(dir, 30, false);
    let path = first_file(dir);
    let data = std::fs::read(&path).unwrap();
    let (last_at, last_size, _) = *written.last().unwrap();
    let cut = last_at as usize + last_size / 2;
    (written, path, data, cut)
}

/// A record cut mid-way with zeros after it is a torn tail: recovered.
#[test]
fn a_record_cut_mid_way_is_still_recovered_as_a_torn_tail() {
    let dir = tempfile::tempdir().unwrap();
    let (written, path, mut data, cut) = one_file_cut_in_its_last_record(dir.path());
    let last_at = written.last().unwrap().0;
    data[cut..].fill(0);
    std::fs::write(&path, &data).unwrap();

    let store = MessageStore::open(config(dir.path(), 64 * 1024)).unwrap();
    assert_eq!(store.max_offset(), last_at);
    assert_eq!(decode_all(&store).len(), written.len() - 1);
    store.put_message(&msg("T", 0, b"after")).unwrap();
}

/// A torn record followed by random garbage, including a stale copy of an
/// earlier record (its physical offset field names another position), holds
/// no genuine record: still a torn tail, recovered and zeroed.
#[test]
fn a_torn_record_followed_by_garbage_is_still_recovered() {
    use rand::{Rng, SeedableRng};
    let dir = tempfile::tempdir().unwrap();
    let (written, path, mut data, cut) = one_file_cut_in_its_last_record(dir.path());
    let last_at = written.last().unwrap().0;
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    rng.fill(&mut data[cut..cut + 8192]);
    let (first_at, first_size, _) = written[0];
    let stale = data[first_at as usize..first_at as usize + first_size].to_vec();
    data[cut + 1000..cut + 1000 + first_size].copy_from_slice(&stale);
    std::fs::write(&path, &data).unwrap();

    let store = MessageStore::open(config(dir.path(), 64 * 1024)).unwrap();
    assert_eq!(store.max_offset(), last_at);
    assert_eq!(decode_all(&store).len(), written.len() - 1);
    let f = &store.commit_log().files()[0];
    assert!(f.whole()[last_at as usize..].iter().all(|b| *b == 0));
    store.put_message(&msg("T", 0, b"after")).unwrap();
}
