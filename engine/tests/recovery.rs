//! Recovery after a clean stop and after a crash, with damaged files: the
//! store keeps every whole record, drops only garbage, rebuilds consume
//! queues and the key index to match the commit log, and continues the
//! queue offsets without gaps or repeats.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use engine::checkpoint::Checkpoint;
use engine::config::StoreConfig;
use engine::record::{self, Decoded, MessageToStore};
use engine::{AcceptAll, GetMessageStatus, MessageStore, StoreError};

const FILE: u64 = 4096;

fn config(dir: &Path) -> StoreConfig {
    StoreConfig {
        store_path_root_dir: dir.to_path_buf(),
        mapped_file_size_commit_log: FILE,
        mapped_file_size_consume_queue: 20 * 8,
        max_hash_slot_num: 64,
        max_index_num: 400,
        // Short sleeps: the services stop (and the test ends) sooner.
        flush_interval_commit_log: 10,
        ..StoreConfig::default()
    }
}

/// One record written by [`write_store`].
#[derive(Debug, Clone)]
struct Written {
    phys: u64,
    size: u64,
    queue: i32,
    queue_offset: i64,
    body: Vec<u8>,
}

const QUEUES: i32 = 3;

fn body(i: usize) -> Vec<u8> {
    let mut b = format!("m{i}-").into_bytes();
    b.resize(40 + (i * 37) % 300, (i % 251) as u8);
    b
}

fn wait_dispatched(store: &MessageStore) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while store.dispatched_offset() < store.max_offset() {
        assert!(Instant::now() < deadline, "dispatch did not catch up");
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Writes `n` keyed records over topic "R" queues 0..3, then stops cleanly
/// or as if the process died.
fn write_store(dir: &Path, n: usize, clean: bool) -> Vec<Written> {
    let store = MessageStore::open(config(dir)).unwrap();
    let out = put_records(&store, 0..n);
    if clean {
        store.shutdown().unwrap();
    } else {
        store.abandon();
    }
    out
}

/// Puts record `i` (key `key<i>`, queue `i % 3`) for each `i` in `range`
/// and waits until they are dispatched.
fn put_records(store: &MessageStore, range: std::ops::Range<usize>) -> Vec<Written> {
    let mut out = Vec::new();
    for i in range {
        let q = (i as i32) % QUEUES;
        let props = format!("KEYS\u{1}key{i}");
        let r = store
            .put_message(&MessageToStore::new("R", q, &body(i), &props))
            .unwrap();
        let m = &r.messages[0];
        out.push(Written {
            phys: m.physical_offset,
            size: m.size as u64,
            queue: q,
            queue_offset: m.queue_offset,
            body: body(i),
        });
    }
    wait_dispatched(store);
    out
}

fn log_path(dir: &Path, start: u64) -> PathBuf {
    dir.join("commitlog").join(format!("{start:020}"))
}

fn body_of(m: &engine::commit_log::MappedSlice) -> Vec<u8> {
    match record::decode(m.as_bytes(), true) {
        Decoded::Message(v) => v.body.to_vec(),
        other => panic!("not a message: {other:?}"),
    }
}

/// Everything about `kept` (the records that must survive, in order) holds
/// in `store`, and none of `dropped` is visible; new puts continue each
/// queue's offsets.
fn assert_exactly(store: &MessageStore, kept: &[Written], dropped: &[Written], ctx: &str) {
    wait_dispatched(store);
    // The end of the last kept record, or the start of the next file when
    // that record's file ends in the blank record.
    let end = kept.last().map(|w| w.phys + w.size).unwrap_or(0);
    let max = store.max_offset();
    assert!(
        max == end || (max.is_multiple_of(FILE) && max > end && max - end < FILE),
        "{ctx}: recovered end {max}, last kept record ends at {end}"
    );
    for q in 0..QUEUES {
        let want: Vec<&Written> = kept.iter().filter(|w| w.queue == q).collect();
        for (i, w) in want.iter().enumerate() {
            assert_eq!(w.queue_offset, i as i64, "{ctx}: test setup");
        }
        assert_eq!(
            store.max_queue_offset("R", q),
            want.len() as u64,
            "{ctx}: max queue offset of queue {q}"
        );
        let mut got = Vec::new();
        let mut next = 0;
        while next < want.len() as u64 {
            let r = store.get_messages("R", q, next, 32, &AcceptAll);
            assert_eq!(r.status, GetMessageStatus::Found, "{ctx}: q{q} at {next}");
            got.extend(r.messages.iter().map(body_of));
            next = r.next_begin_offset;
        }
        let want_bodies: Vec<Vec<u8>> = want.iter().map(|w| w.body.clone()).collect();
        assert_eq!(got, want_bodies, "{ctx}: queue {q} bodies");
    }
    assert_keys_found(store, kept.iter().step_by(7), ctx);
    for w in dropped {
        let key = key_of(w);
        let hits = store.query_by_key("R", &key, 8, 0, i64::MAX);
        assert!(hits.is_empty(), "{ctx}: dropped {key} still indexed");
    }
    for q in 0..QUEUES {
        let want = kept.iter().filter(|w| w.queue == q).count() as i64;
        let r = store
            .put_message(&MessageToStore::new("R", q, b"after", ""))
            .unwrap();
        assert_eq!(r.messages[0].queue_offset, want, "{ctx}: next offset q{q}");
    }
}

/// The key a record was written with (its body starts `m<i>-`).
fn key_of(w: &Written) -> String {
    let s = String::from_utf8_lossy(&w.body);
    let i = &s[1..s.find('-').unwrap()];
    format!("key{i}")
}

/// A crash tears the log at a byte anywhere in its last file or zeroes
/// everything from there: the whole records before it survive, and the
/// queues and index entries of the dropped records are gone.
#[test]
fn a_torn_tail_is_dropped_from_log_queues_and_index() {
    for clean in [false, true] {
        let original = tempfile::tempdir().unwrap();
        let written = write_store(original.path(), 60, clean);
        let last = written.last().unwrap();
        let last_file = last.phys / FILE * FILE;
        let used = last.phys + last.size - last_file;
        for step in 0..12u64 {
            let dir = tempfile::tempdir().unwrap();
            copy_dir(original.path(), dir.path());
            let cut = last_file + used * step / 11;
            let path = log_path(dir.path(), last_file);
            let mut data = std::fs::read(&path).unwrap();
            data[(cut - last_file) as usize..].fill(0);
            std::fs::write(&path, &data).unwrap();
            let (kept, dropped): (Vec<Written>, Vec<Written>) = written
                .iter()
                .cloned()
                .partition(|w| w.phys + w.size <= cut);
            let store = MessageStore::open(config(dir.path())).unwrap();
            assert_exactly(&store, &kept, &dropped, &format!("clean {clean} cut {cut}"));
        }
    }
}

/// Copies a stopped store's directory tree.
fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let target = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), target).unwrap();
        }
    }
}

/// Zero-filled files after the end (preallocated, never written) are
/// removed; the log continues in them.
#[test]
fn empty_files_after_the_end_are_dropped() {
    for clean in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let written = write_store(dir.path(), 30, clean);
        let last = written.last().unwrap();
        let next = (last.phys / FILE + 1) * FILE;
        for k in 0..3 {
            let p = log_path(dir.path(), next + k * FILE);
            if !p.exists() {
                std::fs::write(&p, vec![0u8; FILE as usize]).unwrap();
            }
        }
        let store = MessageStore::open(config(dir.path())).unwrap();
        assert_exactly(&store, &written, &[], &format!("clean {clean}"));
    }
}

fn set_checkpoint(dir: &Path, f: impl FnOnce(&mut Checkpoint)) {
    let path = dir.join("checkpoint");
    let mut cp = Checkpoint::load(&path).unwrap();
    f(&mut cp);
    cp.store(&path).unwrap();
}

/// A checkpoint whose dispatch offset is past the data (the log lost its
/// tail) or far behind it: recovery is the same.
#[test]
fn a_checkpoint_ahead_or_behind_the_data_recovers_the_same() {
    for (name, value) in [("ahead", u64::MAX / 2), ("behind", 0), ("zero ts", 1)] {
        for clean in [false, true] {
            let dir = tempfile::tempdir().unwrap();
            let written = write_store(dir.path(), 60, clean);
            set_checkpoint(dir.path(), |cp| {
                cp.dispatched_offset = Some(value);
                if name == "zero ts" {
                    *cp = Checkpoint::default();
                }
            });
            let store = MessageStore::open(config(dir.path())).unwrap();
            assert_exactly(&store, &written, &[], &format!("{name} clean {clean}"));
        }
    }
}

/// A whole record zeroed in the middle of the last file, valid records
/// after it: damage, not a torn tail; refused like a flipped byte is.
#[test]
fn a_zeroed_record_mid_file_refuses_and_changes_nothing() {
    for clean in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let written = write_store(dir.path(), 60, clean);
        let last = written.last().unwrap();
        let last_file = last.phys / FILE * FILE;
        let victim = written
            .iter()
            .find(|w| w.phys > last_file + 200)
            .unwrap()
            .clone();
        assert!(victim.phys + victim.size < last.phys);
        let path = log_path(dir.path(), last_file);
        let mut data = std::fs::read(&path).unwrap();
        let at = (victim.phys - last_file) as usize;
        data[at..at + victim.size as usize].fill(0);
        std::fs::write(&path, &data).unwrap();
        match MessageStore::open(config(dir.path())) {
            Ok(_) => panic!("clean {clean}: opened over a zeroed record mid-file"),
            Err(StoreError::Corruption { path: p, detail }) => {
                assert_eq!(p, path);
                assert!(detail.contains("refusing to drop them"), "{detail}");
            }
            Err(e) => panic!("clean {clean}: {e}"),
        }
        assert_eq!(std::fs::read(&path).unwrap(), data, "clean {clean}");
    }
}

/// Odd things in the store's directories.
#[test]
fn odd_directory_entries_give_clear_errors_or_are_ignored() {
    // A stray name in the commit log, queue and index directories: ignored.
    let dir = tempfile::tempdir().unwrap();
    let written = write_store(dir.path(), 30, false);
    std::fs::write(dir.path().join("commitlog/notes.txt"), b"x").unwrap();
    std::fs::write(dir.path().join("commitlog/123"), b"x").unwrap();
    std::fs::write(dir.path().join("consumequeue/R/0/123"), b"x").unwrap();
    std::fs::write(dir.path().join("consumequeue/R/x"), b"x").unwrap();
    std::fs::write(dir.path().join("index/readme"), b"x").unwrap();
    let store = MessageStore::open(config(dir.path())).unwrap();
    assert_exactly(&store, &written, &[], "stray names");
    drop(store);

    // A directory named like a commit log, queue or index file, a
    // zero-length one, a short one: refused (RocketMQ refuses files of the
    // wrong size too), with an error naming the path.
    for place in ["commitlog", "consumequeue", "index"] {
        for what in ["dir", "empty", "short"] {
            let dir = tempfile::tempdir().unwrap();
            let written = write_store(dir.path(), 30, false);
            let last = written.last().unwrap();
            let odd = match place {
                "commitlog" => log_path(dir.path(), (last.phys / FILE + 1) * FILE),
                "consumequeue" => dir.path().join(format!("consumequeue/R/1/{:020}", 3 * 160)),
                _ => dir.path().join("index/29991231235959999"),
            };
            let _ = std::fs::remove_file(&odd);
            match what {
                "dir" => std::fs::create_dir(&odd).unwrap(),
                "empty" => std::fs::write(&odd, b"").unwrap(),
                _ => std::fs::write(&odd, vec![0u8; 100]).unwrap(),
            }
            match MessageStore::open(config(dir.path())) {
                Ok(_) => panic!("{place} {what}: opened"),
                Err(e) => {
                    let text = e.to_string();
                    assert!(
                        matches!(e, StoreError::Io { .. } | StoreError::Corruption { .. }),
                        "{place} {what}: {text}"
                    );
                    assert!(
                        text.contains(&odd.display().to_string()),
                        "{place} {what}: {text}"
                    );
                }
            }
        }
    }
}

/// After a power loss the index file's header (written back) can be ahead
/// of its entries (lost): entries past the checkpoint's dispatch offset are
/// zeros while the header still claims them. Recovery must index those
/// records again rather than trust the header.
#[test]
fn index_entries_lost_after_the_checkpoint_are_rebuilt() {
    use engine::index::IndexLayout;
    let dir = tempfile::tempdir().unwrap();
    let written = write_store(dir.path(), 60, false);
    // The checkpointer's last word: everything below record 40 was durable.
    let durable = written[40].phys;
    set_checkpoint(dir.path(), |cp| cp.dispatched_offset = Some(durable));
    let index_file = only_index_file(dir.path());
    let layout = IndexLayout {
        hash_slot_num: 64,
        index_num: 400,
    };
    let mut data = std::fs::read(&index_file).unwrap();
    // One key per record: record i is entry i + 1. Lose records 40.. .
    let from = layout.entry_pos(41);
    let to = layout.entry_pos(61);
    assert!(data[from..to].iter().any(|b| *b != 0));
    data[from..to].fill(0);
    std::fs::write(&index_file, &data).unwrap();
    let store = MessageStore::open(config(dir.path())).unwrap();
    assert_keys_found(&store, &written, "after recovery");
}

/// After a power loss the index's hash slots can be older than its
/// entries (the slot page lost, the entry pages written back): entries
/// added after the checkpoint's dispatch offset are then unreachable.
/// Recovery must index them again.
#[test]
fn index_slots_lost_after_the_checkpoint_are_rebuilt() {
    use engine::index::IndexLayout;
    let dir = tempfile::tempdir().unwrap();
    let mut written = write_store(dir.path(), 40, true);
    let durable = written.last().map(|w| w.phys + w.size).unwrap();
    let index_file = || only_index_file(dir.path());
    let layout = IndexLayout {
        hash_slot_num: 64,
        index_num: 400,
    };
    let slots = layout.slot_pos(0)..layout.entry_pos(0);
    let old_slots = std::fs::read(index_file()).unwrap()[slots.clone()].to_vec();
    {
        let store = MessageStore::open(config(dir.path())).unwrap();
        written.extend(put_records(&store, 40..60));
        store.abandon();
    }
    // The checkpointer's last word was at record 40; the slots written
    // since then never reached the disk.
    set_checkpoint(dir.path(), |cp| cp.dispatched_offset = Some(durable));
    let path = index_file();
    let mut data = std::fs::read(&path).unwrap();
    assert_ne!(&data[slots.clone()], &old_slots[..]);
    data[slots].copy_from_slice(&old_slots);
    std::fs::write(&path, &data).unwrap();
    let store = MessageStore::open(config(dir.path())).unwrap();
    assert_keys_found(&store, &written, "after recovery");
}

/// A checkpoint holding garbage timestamps (here the lowest i64) after a
/// crash: recovery starts at the first file rather than overflowing.
#[test]
fn garbage_checkpoint_timestamps_recover_from_the_first_file() {
    for ts in [i64::MIN, i64::MIN + 1, -1, i64::MAX] {
        let dir = tempfile::tempdir().unwrap();
        let written = write_store(dir.path(), 60, false);
        set_checkpoint(dir.path(), |cp| {
            *cp = Checkpoint {
                physic_msg_timestamp: ts,
                logics_msg_timestamp: ts,
                index_msg_timestamp: ts,
                dispatched_offset: None,
            }
        });
        std::fs::remove_dir_all(dir.path().join("consumequeue")).unwrap();
        let store = MessageStore::open(config(dir.path())).unwrap();
        assert_exactly(&store, &written, &[], &format!("timestamps {ts}"));
    }
}

/// A crash (or power loss) right after the checkpoint file was created
/// leaves it empty or short. It holds nothing then, like a missing one:
/// the store opens and recovers from the data.
#[test]
fn an_empty_or_short_checkpoint_is_read_as_none() {
    for len in [0usize, 10, 23] {
        for clean in [false, true] {
            let dir = tempfile::tempdir().unwrap();
            let written = write_store(dir.path(), 60, clean);
            let path = dir.path().join("checkpoint");
            let bytes = std::fs::read(&path).unwrap_or_default();
            std::fs::write(&path, &bytes[..len.min(bytes.len())]).unwrap();
            let store = match MessageStore::open(config(dir.path())) {
                Ok(s) => s,
                Err(e) => panic!("{len} bytes, clean {clean}: {e}"),
            };
            assert_exactly(
                &store,
                &written,
                &[],
                &format!("{len} bytes, clean {clean}"),
            );
        }
    }
}

/// A dispatch offset that is not a record boundary (a damaged or stale
/// checkpoint) with intact queues.
#[test]
fn a_checkpoint_inside_a_record_recovers() {
    for clean in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let written = write_store(dir.path(), 60, clean);
        let mid = written[30].phys + 5;
        set_checkpoint(dir.path(), |cp| cp.dispatched_offset = Some(mid));
        let store = MessageStore::open(config(dir.path()));
        let store = match store {
            Ok(s) => s,
            Err(e) => panic!("clean {clean}: {e}"),
        };
        assert_exactly(&store, &written, &[], &format!("clean {clean}"));
    }
}

/// No commit log at all (store.md §11.7: write positions 0, queues
/// emptied): the queues and the index forget everything.
#[test]
fn without_a_commit_log_the_queues_and_index_are_emptied() {
    for clean in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let written = write_store(dir.path(), 60, clean);
        std::fs::remove_dir_all(dir.path().join("commitlog")).unwrap();
        let store = MessageStore::open(config(dir.path())).unwrap();
        assert_exactly(&store, &[], &written, &format!("clean {clean}"));
    }
}

/// A batch torn by a crash: its whole records before the tear are kept
/// (they are separate records on disk), with their consecutive queue
/// offsets; the queue continues after the last one kept.
#[test]
fn a_torn_batch_keeps_its_whole_records() {
    let original = tempfile::tempdir().unwrap();
    let mut written = Vec::new();
    {
        let store = MessageStore::open(config(original.path())).unwrap();
        written.extend(put_records(&store, 0..20));
        let msgs: Vec<MessageToStore> = (20..26)
            .map(|i| MessageToStore::new("R", 0, &body(i), &format!("KEYS\u{1}key{i}")))
            .collect();
        let r = store.put_batch(&msgs).unwrap();
        for (i, m) in (20..26).zip(&r.messages) {
            written.push(Written {
                phys: m.physical_offset,
                size: m.size as u64,
                queue: 0,
                queue_offset: m.queue_offset,
                body: body(i),
            });
        }
        wait_dispatched(&store);
        store.abandon();
    }
    let batch_start = written[20].phys;
    let batch_end = written[25].phys + written[25].size;
    assert_eq!(batch_start / FILE, (batch_end - 1) / FILE, "one file");
    let file = batch_start / FILE * FILE;
    for cut in (batch_start..batch_end).step_by(97) {
        let dir = tempfile::tempdir().unwrap();
        copy_dir(original.path(), dir.path());
        let path = log_path(dir.path(), file);
        let mut data = std::fs::read(&path).unwrap();
        data[(cut - file) as usize..].fill(0);
        std::fs::write(&path, &data).unwrap();
        let (kept, dropped): (Vec<Written>, Vec<Written>) = written
            .iter()
            .cloned()
            .partition(|w| w.phys + w.size <= cut);
        let store = MessageStore::open(config(dir.path())).unwrap();
        assert_exactly(&store, &kept, &dropped, &format!("cut {cut}"));
    }
}

/// A damaged record (bad CRC, bad magic, impossible size) in a file that
/// is followed by files holding records: damage, not a torn tail. Opening
/// refuses and names the damage; no file is changed or deleted.
#[test]
fn a_damaged_record_in_a_middle_file_refuses_and_changes_nothing() {
    let original = tempfile::tempdir().unwrap();
    let written = write_store(original.path(), 60, false);
    let last_file = written.last().unwrap().phys / FILE * FILE;
    let middle = last_file - FILE;
    let victim = written
        .iter()
        .find(|w| w.phys >= middle + 300)
        .unwrap()
        .clone();
    type Damage = fn(&mut [u8]);
    let damages: [(&str, Damage); 3] = [
        ("crc", |r| {
            let n = r.len();
            r[n - 40] ^= 1
        }),
        ("magic", |r| r[5] ^= 0x10),
        ("size", |r| r[0..4].copy_from_slice(&i32::MAX.to_be_bytes())),
    ];
    for clean in [false, true] {
        for (name, damage) in damages {
            let dir = tempfile::tempdir().unwrap();
            copy_dir(original.path(), dir.path());
            if clean {
                // As after a clean stop.
                std::fs::remove_file(dir.path().join("abort")).unwrap();
            }
            let path = log_path(dir.path(), middle);
            let mut data = std::fs::read(&path).unwrap();
            let at = (victim.phys - middle) as usize;
            damage(&mut data[at..at + victim.size as usize]);
            std::fs::write(&path, &data).unwrap();
            let before = snapshot(&dir.path().join("commitlog"));
            match MessageStore::open(config(dir.path())) {
                Ok(_) => panic!("{name}, clean {clean}: opened over damage"),
                Err(StoreError::Corruption { detail, .. }) => {
                    assert!(detail.contains("refusing to drop them"), "{detail}");
                }
                Err(e) => panic!("{name}, clean {clean}: {e}"),
            }
            assert_eq!(
                snapshot(&dir.path().join("commitlog")),
                before,
                "{name}, clean {clean}"
            );
        }
    }
}

/// File names and contents of a directory.
fn snapshot(dir: &Path) -> Vec<(std::ffi::OsString, Vec<u8>)> {
    let mut out: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (e.file_name(), std::fs::read(e.path()).unwrap())
        })
        .collect();
    out.sort();
    out
}

/// Every record in `records` is found by its key, once, with its body.
fn assert_keys_found<'a>(
    store: &MessageStore,
    records: impl IntoIterator<Item = &'a Written>,
    ctx: &str,
) {
    for w in records {
        let key = key_of(w);
        let hits = store.query_by_key("R", &key, 8, 0, i64::MAX);
        assert_eq!(hits.len(), 1, "{ctx}: {key}");
        assert_eq!(body_of(&hits[0]), w.body, "{ctx}: {key}");
    }
}

/// The store's one index file.
fn only_index_file(root: &Path) -> PathBuf {
    let mut names: Vec<_> = std::fs::read_dir(root.join("index"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    names.sort();
    assert_eq!(names.len(), 1, "one index file: {names:?}");
    names.remove(0)
}
