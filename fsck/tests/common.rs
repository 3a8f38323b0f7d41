//! Builds real stores with the engine and reads them back through its read path.

#![allow(dead_code)]

use std::path::{Path, PathBuf};

use engine::record::{self, Decoded};
use engine::{AcceptAll, MessageStore, MessageToStore, StoreConfig};
use fsck::{RepairOptions, Settings};

pub const CL_SIZE: u64 = 64 * 1024;
pub const CQ_SIZE: u64 = 20 * 64;

#[derive(Debug, Clone)]
pub struct Sent {
    pub topic: String,
    pub queue_id: i32,
    pub body: Vec<u8>,
    pub key: String,
    pub phys: u64,
    pub size: u32,
}

pub fn config(root: &Path) -> StoreConfig {
    StoreConfig {
        store_path_root_dir: root.to_path_buf(),
        mapped_file_size_commit_log: CL_SIZE,
        mapped_file_size_consume_queue: CQ_SIZE,
        max_hash_slot_num: 64,
        max_index_num: 1024,
        allocate_next_file: false,
        ..Default::default()
    }
}

pub fn settings(root: &Path) -> Settings {
    Settings::explicit(config(root))
}

fn body(i: usize) -> Vec<u8> {
    let len = 150 + (i * 379) % 900;
    (0..len).map(|j| ((i * 31 + j * 7) % 251) as u8).collect()
}

/// Appends `n` messages (numbered from `from`) to an open store.
pub fn put(store: &MessageStore, from: usize, n: usize) -> Vec<Sent> {
    let mut out = Vec::new();
    for i in from..from + n {
        let topic = if i % 3 == 0 { "TopicB" } else { "TopicA" };
        let qid = (i % 2) as i32;
        let key = format!("key{i}");
        let props = format!(
            "KEYS\u{1}{key}\u{2}TAGS\u{1}tag{}\u{2}UNIQ_KEY\u{1}U{i:08}",
            i % 4
        );
        let mut m = MessageToStore::new(topic, qid, &body(i), &props);
        m.born_timestamp = 1_700_000_000_000 + i as i64;
        let r = store.put_message(&m).expect("put");
        let s = &r.messages[0];
        out.push(Sent {
            topic: topic.into(),
            queue_id: qid,
            body: body(i),
            key,
            phys: s.physical_offset,
            size: s.size,
        });
    }
    out
}

/// A store of `n` messages over two commit log files, shut down cleanly.
pub fn build(n: usize) -> (tempfile::TempDir, PathBuf, Vec<Sent>) {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join("store");
    let store = MessageStore::open(config(&root)).expect("open");
    let sent = put(&store, 0, n);
    store.shutdown().expect("shutdown");
    drop(store);
    (dir, root, sent)
}

/// Every message of `expected` is served by the engine's read path, byte
/// for byte, in queue order, and found by key; nothing else is served.
pub fn assert_readable(root: &Path, expected: &[Sent]) {
    let store = MessageStore::open(config(root)).expect("the broker starts after repair");
    let mut queues: Vec<(String, i32)> = expected
        .iter()
        .map(|s| (s.topic.clone(), s.queue_id))
        .collect();
    queues.sort();
    queues.dedup();
    for (topic, qid) in queues {
        let want: Vec<&Sent> = expected
            .iter()
            .filter(|s| s.topic == topic && s.queue_id == qid)
            .collect();
        let mut got = Vec::new();
        let mut off = 0;
        loop {
            let r = store.get_messages(&topic, qid, off, 32, &AcceptAll);
            for m in &r.messages {
                let Decoded::Message(v) = record::decode(m.as_bytes(), true) else {
                    panic!("served record does not decode")
                };
                got.push((m.offset(), v.body.to_vec()));
            }
            if r.next_begin_offset <= off
                || r.next_begin_offset >= r.max_offset && r.messages.is_empty()
            {
                break;
            }
            off = r.next_begin_offset;
        }
        let want_pairs: Vec<(u64, Vec<u8>)> =
            want.iter().map(|s| (s.phys, s.body.clone())).collect();
        assert_eq!(got.len(), want_pairs.len(), "{topic}/{qid}: message count");
        assert!(got == want_pairs, "{topic}/{qid}: bodies differ");
    }
    for s in expected {
        let found = store.query_by_key(&s.topic, &s.key, 4, 0, i64::MAX);
        assert!(
            found
                .iter()
                .any(|m| m.offset() == s.phys && m.as_bytes().len() == s.size as usize),
            "key {} not found by query_by_key",
            s.key
        );
    }
    store.shutdown().expect("shutdown");
}

/// Runs repair (with backups, or as a dry run); its outcome and the lines
/// it printed.
pub fn repair_printing(root: &Path, dry_run: bool) -> (fsck::RepairOutcome, Vec<String>) {
    let mut lines = Vec::new();
    let o = fsck::repair(
        &settings(root),
        RepairOptions {
            dry_run,
            backup: true,
            show_progress: false,
        },
        &mut |l: &str| lines.push(l.to_string()),
    )
    .expect("repair runs");
    (o, lines)
}

pub fn repair_quiet(root: &Path) -> fsck::RepairOutcome {
    let (o, lines) = repair_printing(root, false);
    assert!(!lines.is_empty());
    o
}

pub fn check(root: &Path) -> fsck::Report {
    fsck::check(&settings(root), false)
        .expect("check runs")
        .report
}

pub fn commitlog_file(root: &Path, start: u64) -> PathBuf {
    root.join("commitlog").join(format!("{start:020}"))
}

pub fn flip(path: &Path, at: u64, mask: u8) {
    use std::os::unix::fs::FileExt;
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap();
    let mut b = [0u8];
    f.read_exact_at(&mut b, at).unwrap();
    b[0] ^= mask;
    f.write_all_at(&b, at).unwrap();
}

/// Check finds `kind`, repair fixes everything, check is clean afterwards and
/// `expected` is readable through the broker's read path.
pub fn find_fix_read(root: &Path, kind: fsck::Kind, expected: &[Sent]) {
    let before = check(root);
    assert!(
        before.count(kind) > 0,
        "check should report {kind}; got {:#?}",
        before.problems
    );
    let o = repair_quiet(root);
    let after = o.after.expect("repair ran");
    assert!(after.is_clean(), "after repair: {:#?}", after.problems);
    assert!(check(root).is_clean());
    assert_readable(root, expected);
}
