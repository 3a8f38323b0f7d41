//! The corruption corpus: real stores written by the engine, damaged in every
//! way the issue lists; check finds each, repair fixes each, and afterwards
//! every valid message is readable through the engine's read path.

mod common;

use common::*;
use fsck::Kind;

#[test]
fn clean_store_checks_clean() {
    let (_d, root, sent) = build(120);
    assert!(sent.last().unwrap().phys >= CL_SIZE, "spans two files");
    let r = check(&root);
    assert!(r.is_clean(), "{:#?}", r.problems);
    assert_eq!(r.totals.records, 120);
    assert_eq!(r.totals.consume_queue_entries, 120);
    assert_eq!(r.totals.index_entries, 240);
    assert_readable(&root, &sent);
}

/// A crash while writing the last record: only its first `k` bytes landed.
#[test]
fn torn_tail_at_every_kind_of_position() {
    // k = bytes of the record that reached the disk; 0 means all but 3.
    for k in [2usize, 3, 6, 30, 100, 0] {
        let (_d, root, sent) = build(100);
        let last = sent.last().unwrap().clone();
        let file = commitlog_file(&root, last.phys / CL_SIZE * CL_SIZE);
        let rel = last.phys % CL_SIZE;
        let cut = if k == 0 { last.size as usize - 3 } else { k };
        let f = std::fs::OpenOptions::new().write(true).open(&file).unwrap();
        use std::os::unix::fs::FileExt;
        f.write_all_at(&vec![0u8; last.size as usize - cut], rel + cut as u64)
            .unwrap();
        std::fs::write(root.join("abort"), b"").unwrap();
        let before = check(&root);
        if cut == 2 {
            // Only the two high (zero) bytes of TOTALSIZE landed: the tail is
            // all zeros, so the record is simply absent; its derived entries
            // point past the end.
            assert_eq!(before.count(Kind::TornTail), 0);
            find_fix_read(&root, Kind::CqPastEnd, &sent[..sent.len() - 1]);
            continue;
        }
        assert!(
            before.count(Kind::TornTail) == 1,
            "cut {cut}: {:#?}",
            before.problems
        );
        let torn = before
            .problems
            .iter()
            .find(|p| p.kind == Kind::TornTail)
            .unwrap();
        assert_eq!(torn.offset, Some(rel));
        find_fix_read(&root, Kind::TornTail, &sent[..sent.len() - 1]);
    }
}

/// Garbage (not zeros) after the last record.
#[test]
fn garbage_tail() {
    let (_d, root, sent) = build(100);
    let last = sent.last().unwrap();
    let file = commitlog_file(&root, last.phys / CL_SIZE * CL_SIZE);
    let end = last.phys % CL_SIZE + last.size as u64;
    for i in 0..50 {
        flip(&file, end + 7 + i, 0x5A);
    }
    find_fix_read(&root, Kind::TornTail, &sent);
}

#[test]
fn flipped_bit_in_body_is_quarantined_not_truncated() {
    let (_d, root, sent) = build(120);
    let victim = sent[10].clone();
    let file = commitlog_file(&root, 0);
    flip(&file, victim.phys + 100, 0x01);
    let before = check(&root);
    let p = before
        .problems
        .iter()
        .find(|p| p.kind == Kind::BadCrc)
        .expect("bad crc found");
    assert_eq!(p.offset, Some(victim.phys));
    let expected: Vec<Sent> = sent
        .iter()
        .filter(|s| s.phys != victim.phys)
        .cloned()
        .collect();
    find_fix_read(&root, Kind::BadCrc, &expected);
    let r = check(&root);
    assert_eq!(r.totals.quarantined_records, 1);
    assert_eq!(r.totals.records, 120);
    // The original bytes are in the backup.
    let backups: Vec<_> = std::fs::read_dir(&root)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("fsck-backup-"))
        .collect();
    assert_eq!(backups.len(), 1);
}

#[test]
fn flipped_bits_in_headers() {
    // TOTALSIZE, MAGICCODE, TOPICLENGTH-reaching BODYLENGTH, PHYSICALOFFSET.
    for (at, kind) in [
        (1u64, Kind::BadSize),
        (5, Kind::BadMagic),
        (84, Kind::BadFields),
        (33, Kind::PhysOffsetMismatch),
    ] {
        let (_d, root, sent) = build(80);
        let victim = sent[5].clone();
        flip(&commitlog_file(&root, 0), victim.phys + at, 0x10);
        let keep: Vec<Sent> = if kind == Kind::PhysOffsetMismatch {
            sent.clone()
        } else {
            sent.iter()
                .filter(|s| s.phys != victim.phys)
                .cloned()
                .collect()
        };
        find_fix_read(&root, kind, &keep);
    }
}

/// A commit log file that is not the last one lost its end: one repair
/// extends it and ends its data with a blank record reaching the configured
/// size (not the old length), so check is clean right after.
#[test]
fn truncated_middle_commit_log_file_needs_one_repair() {
    for cut_at_record_end in [false, true] {
        let (_d, root, sent) = build(120);
        let first = commitlog_file(&root, 0);
        let in_first: Vec<&Sent> = sent.iter().filter(|s| s.phys < CL_SIZE).collect();
        let cut = if cut_at_record_end {
            let r = in_first[in_first.len() / 2];
            r.phys + r.size as u64
        } else {
            // Inside a record, as `truncate -s` usually cuts.
            let r = in_first[in_first.len() / 2];
            r.phys + 10
        };
        std::fs::OpenOptions::new()
            .write(true)
            .open(&first)
            .unwrap()
            .set_len(cut)
            .unwrap();
        let kept: Vec<Sent> = sent
            .iter()
            .filter(|s| s.phys + s.size as u64 <= cut || s.phys >= CL_SIZE)
            .cloned()
            .collect();
        find_fix_read(&root, Kind::CommitlogFileSize, &kept);
        assert_eq!(std::fs::metadata(&first).unwrap().len(), CL_SIZE);
        let data_end = kept
            .iter()
            .filter(|s| s.phys < CL_SIZE)
            .map(|s| s.phys + s.size as u64)
            .max()
            .unwrap();
        let bytes = std::fs::read(&first).unwrap();
        let at = data_end as usize;
        let blank_size = u32::from_be_bytes(bytes[at..at + 4].try_into().unwrap());
        assert_eq!(blank_size as u64, CL_SIZE - data_end, "cut at {cut}");
    }
}

#[test]
fn truncated_consume_queue_file() {
    let (_d, root, sent) = build(120);
    let f = root.join("consumequeue/TopicA/1/00000000000000000000");
    let len = std::fs::metadata(&f).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&f)
        .unwrap()
        .set_len(len / 2 + 3)
        .unwrap();
    find_fix_read(&root, Kind::CqFileSize, &sent);
}

#[test]
fn deleted_consume_queue_file() {
    let (_d, root, sent) = build(120);
    std::fs::remove_file(root.join("consumequeue/TopicB/0/00000000000000000000")).unwrap();
    find_fix_read(&root, Kind::CqMissingEntry, &sent);
}

#[test]
fn consume_queue_entries_past_commit_log_end() {
    use engine::consume_queue::CqEntry;
    use std::os::unix::fs::FileExt;
    let (_d, root, sent) = build(120);
    let n = sent
        .iter()
        .filter(|s| s.topic == "TopicA" && s.queue_id == 0)
        .count() as u64;
    let end = sent.last().map(|s| s.phys + s.size as u64).unwrap();
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(root.join("consumequeue/TopicA/0/00000000000000000000"))
        .unwrap();
    let e = CqEntry {
        phys_offset: end as i64 + 64,
        size: 300,
        tags_code: 0,
    };
    f.write_all_at(&e.encode(), n * 20).unwrap();
    find_fix_read(&root, Kind::CqPastEnd, &sent);
}

#[test]
fn stale_index() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("store");
    let store = engine::MessageStore::open(config(&root)).unwrap();
    let mut sent = put(&store, 0, 60);
    store.shutdown().unwrap();
    drop(store);
    let old = dir.path().join("old-index");
    std::fs::create_dir_all(&old).unwrap();
    for e in std::fs::read_dir(root.join("index")).unwrap().flatten() {
        std::fs::copy(e.path(), old.join(e.file_name())).unwrap();
    }
    let store = engine::MessageStore::open(config(&root)).unwrap();
    sent.extend(put(&store, 60, 60));
    store.shutdown().unwrap();
    drop(store);
    std::fs::remove_dir_all(root.join("index")).unwrap();
    std::fs::rename(&old, root.join("index")).unwrap();
    find_fix_read(&root, Kind::IndexMissingEntry, &sent);
}

#[test]
fn missing_checkpoint() {
    let (_d, root, sent) = build(80);
    std::fs::remove_file(root.join("checkpoint")).unwrap();
    find_fix_read(&root, Kind::CheckpointMissing, &sent);
}

#[test]
fn crash_leaves_records_beyond_checkpoint() {
    let (_d, root, sent) = build(80);
    let cp = engine::checkpoint::Checkpoint::load(&root.join("checkpoint")).unwrap();
    let mut old = cp;
    old.dispatched_offset = Some(sent[40].phys);
    old.store(&root.join("checkpoint")).unwrap();
    std::fs::write(root.join("abort"), b"").unwrap();
    let r = check(&root);
    assert_eq!(r.count(Kind::UncleanShutdown), 1);
    find_fix_read(&root, Kind::BeyondCheckpoint, &sent);
}

#[test]
fn broken_json_config() {
    let (_d, root, sent) = build(40);
    let cfg = root.join("config");
    let good = "{\n\t\"dataVersion\":{\"counter\":1,\"timestamp\":1700000000000},\n\t\"topicConfigTable\":{\n\t\t\"TopicA\":{\"perm\":6,\"readQueueNums\":2,\"topicName\":\"TopicA\",\"writeQueueNums\":2},\n\t\t\"TopicB\":{\"perm\":6,\"readQueueNums\":2,\"topicName\":\"TopicB\",\"writeQueueNums\":2}\n\t}\n}";
    std::fs::write(cfg.join("topics.json"), good).unwrap();
    std::fs::write(
        cfg.join("consumerOffset.json"),
        "{\"offsetTable\":{\"TopicA@G\":{0:3,1:2}}}",
    )
    .unwrap();
    assert!(check(&root).is_clean(), "{:#?}", check(&root).problems);
    // Broken with a good .bak: restored from it.
    std::fs::write(cfg.join("topics.json.bak"), good).unwrap();
    std::fs::write(
        cfg.join("topics.json"),
        "{\"topicConfigTable\":{\"TopicA\":{",
    )
    .unwrap();
    find_fix_read(&root, Kind::ConfigUnparseable, &sent);
    let restored = fastjson::parse(&std::fs::read(cfg.join("topics.json")).unwrap()).unwrap();
    assert!(restored["topicConfigTable"].get("TopicB").is_some());
    // Broken without .bak: moved aside.
    std::fs::write(
        cfg.join("consumerOffset.json"),
        "{\"offsetTable\":{\"TopicA@G\":{0:",
    )
    .unwrap();
    find_fix_read(&root, Kind::ConfigUnparseable, &sent);
    assert!(!cfg.join("consumerOffset.json").exists());
    // Consistency: a topic with queues but no topics.json entry; an offset past the end.
    std::fs::write(
        cfg.join("consumerOffset.json"),
        "{\"offsetTable\":{\"TopicA@G\":{0:9999}}}",
    )
    .unwrap();
    let r = check(&root);
    assert_eq!(r.count(Kind::ConfigInconsistent), 1, "{:#?}", r.problems);
    let o = repair_quiet(&root);
    assert!(o.after.unwrap().is_clean());
}

#[test]
fn dry_run_changes_nothing() {
    let (_d, root, _sent) = build(80);
    flip(&commitlog_file(&root, 0), 500, 0x01);
    std::fs::remove_file(root.join("checkpoint")).unwrap();
    let snapshot = |root: &std::path::Path| {
        let mut v = Vec::new();
        for e in walk(root) {
            v.push((e.clone(), std::fs::read(&e).unwrap()));
        }
        v
    };
    let before = snapshot(&root);
    let lines = dry_run_lines(&root);
    assert!(lines.iter().any(|l| l.starts_with("would ")), "{lines:#?}");
    assert!(before == snapshot(&root), "dry run changed files");
}

fn walk(p: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let mut rd: Vec<_> = std::fs::read_dir(p)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    rd.sort();
    for e in rd {
        if e.is_dir() {
            out.extend(walk(&e));
        } else {
            out.push(e);
        }
    }
    out
}

#[test]
fn cli_exit_codes_and_json() {
    let exe = env!("CARGO_BIN_EXE_rmq-fsck");
    let (_d, root, _sent) = build(40);
    let args = |extra: &[&str]| {
        let mut a = vec![
            "--set".to_string(),
            "maxHashSlotNum=64".into(),
            "--set".into(),
            "maxIndexNum=1024".into(),
        ];
        a.extend(extra.iter().map(|s| s.to_string()));
        a
    };
    let run = |sub: &str, extra: &[&str]| {
        std::process::Command::new(exe)
            .arg(sub)
            .arg(&root)
            .args(args(extra))
            .output()
            .unwrap()
    };
    let out = run("check", &[]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    flip(&commitlog_file(&root, 0), 150, 0x01);
    let out = run("check", &["--json"]);
    assert_eq!(out.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(!v["problems"].as_array().unwrap().is_empty());
    let out = run("repair", &["--dry-run"]);
    assert_eq!(out.status.code(), Some(1));
    let out = run("repair", &["--no-backup"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let out = run("check", &[]);
    assert_eq!(out.status.code(), Some(0));
    let out = std::process::Command::new(exe)
        .args(["check", "/nonexistent/store"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}

/// topics.json is broken and its .bak predates the newest topic: repair
/// restores the .bak and gives the topic it lacks an entry with Java's
/// TopicConfig defaults and as many queues as the store holds for it, so
/// one repair leaves the store clean (the broker has a route for it again).
#[test]
fn topic_missing_from_restored_topics_json_is_recreated() {
    let (_d, root, sent) = build(40);
    let cfg = root.join("config");
    std::fs::create_dir_all(&cfg).unwrap();
    let old = "{\n\t\"dataVersion\":{\"counter\":7,\"timestamp\":1700000000000},\n\t\"topicConfigTable\":{\n\t\t\"TopicA\":{\"order\":false,\"perm\":6,\"readQueueNums\":2,\"topicFilterType\":\"SINGLE_TAG\",\"topicName\":\"TopicA\",\"topicSysFlag\":0,\"writeQueueNums\":2}\n\t}\n}";
    std::fs::write(cfg.join("topics.json.bak"), old).unwrap();
    std::fs::write(cfg.join("topics.json"), "{\"topicConfigTable\":{\"Top").unwrap();
    find_fix_read(&root, Kind::ConfigUnparseable, &sent);

    let v = fastjson::parse(&std::fs::read(cfg.join("topics.json")).unwrap()).unwrap();
    let b = &v["topicConfigTable"]["TopicB"];
    assert_eq!(b["topicName"], "TopicB");
    assert_eq!(b["readQueueNums"], 2);
    assert_eq!(b["writeQueueNums"], 2);
    assert_eq!(b["perm"], 6);
    assert_eq!(b["topicFilterType"], "SINGLE_TAG");
    assert_eq!(b["topicSysFlag"], 0);
    assert_eq!(b["order"], false);
    assert_eq!(v["topicConfigTable"]["TopicA"]["readQueueNums"], 2);
    assert_eq!(v["dataVersion"]["counter"], 8);
    assert!(v["dataVersion"]["timestamp"].as_i64().unwrap() > 1_700_000_000_000);

    // Without a dataVersion (and with a queue directory beyond the others)
    // the entry is still added, and no dataVersion is invented.
    std::fs::write(
        cfg.join("topics.json"),
        "{\"topicConfigTable\":{\"TopicA\":{\"perm\":6,\"readQueueNums\":2,\"topicName\":\"TopicA\",\"writeQueueNums\":2}}}",
    )
    .unwrap();
    std::fs::create_dir_all(root.join("consumequeue/TopicB/5")).unwrap();
    let r = check(&root);
    assert_eq!(r.count(Kind::ConfigInconsistent), 1, "{:#?}", r.problems);
    let o = repair_quiet(&root);
    assert!(o.after.unwrap().is_clean());
    let v = fastjson::parse(&std::fs::read(cfg.join("topics.json")).unwrap()).unwrap();
    assert_eq!(v["topicConfigTable"]["TopicB"]["writeQueueNums"], 6);
    assert!(v.get("dataVersion").is_none());

    // No topicConfigTable at all: the dry run says what repair would add,
    // and repair adds the table with every topic.
    std::fs::write(cfg.join("topics.json"), "{}").unwrap();
    let lines = dry_run_lines(&root);
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("would add topic \"TopicA\"")),
        "{lines:#?}"
    );
    assert_eq!(std::fs::read(cfg.join("topics.json")).unwrap(), b"{}");
    let o = repair_quiet(&root);
    assert!(o.after.unwrap().is_clean());
    let v = fastjson::parse(&std::fs::read(cfg.join("topics.json")).unwrap()).unwrap();
    assert_eq!(v["topicConfigTable"]["TopicA"]["readQueueNums"], 2);
    assert_readable(&root, &sent);
}

/// The lines a dry-run repair prints; it must change nothing and report no
/// "after" check.
fn dry_run_lines(root: &std::path::Path) -> Vec<String> {
    let (o, lines) = repair_printing(root, true);
    assert!(o.after.is_none());
    lines
}

/// Retention (ours or RocketMQ's) deletes the oldest commit log files but
/// keeps a consume-queue or index file while any of its entries points at a
/// surviving record: the entries below the commit log's first offset are
/// expired, not damaged, and such a store is clean.
#[test]
fn entries_below_the_first_commit_log_file_are_expired_not_damaged() {
    let (_d, root, sent) = build(300);
    assert!(
        sent.last().unwrap().phys >= 2 * CL_SIZE,
        "spans three files"
    );
    std::fs::remove_file(commitlog_file(&root, 0)).unwrap();
    let r = check(&root);
    assert!(r.is_clean(), "{:#?}", r.problems);
    let (o, lines) = repair_printing(&root, false);
    assert!(o.after.is_none(), "{lines:#?}");
    let surviving: Vec<Sent> = sent.iter().filter(|s| s.phys >= CL_SIZE).cloned().collect();
    assert_readable(&root, &surviving);
}

/// A record's STORETIMESTAMP (not covered by the body CRC) earlier than the
/// first record's — a clock stepped back, or a flipped bit — gives the index
/// file an endTimestamp before its beginTimestamp, as RocketMQ's IndexFile
/// writes it. That agrees with the records, so after one repair the store
/// is clean, and a second repair has nothing to do.
#[test]
fn store_time_going_backwards_is_not_an_index_problem() {
    let (_d, root, sent) = build(120);
    let last = sent.last().unwrap().clone();
    let file = commitlog_file(&root, last.phys / CL_SIZE * CL_SIZE);
    // STORETIMESTAMP is bytes 56..64 of the record: one day earlier.
    use std::os::unix::fs::FileExt;
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&file)
        .unwrap();
    let at = last.phys % CL_SIZE + 56;
    let mut ts = [0u8; 8];
    f.read_exact_at(&mut ts, at).unwrap();
    let earlier = i64::from_be_bytes(ts) - 86_400_000;
    f.write_all_at(&earlier.to_be_bytes(), at).unwrap();
    let o = repair_quiet(&root);
    let after = o.after.expect("repair ran");
    assert!(after.is_clean(), "after repair: {:#?}", after.problems);
    let (o, lines) = repair_printing(&root, false);
    assert!(o.after.is_none(), "second repair: {lines:#?}");
    assert_readable(&root, &sent);
}

/// Files and directories in consumequeue/ that are no <topic>/<queueId>
/// queue (RocketMQ skips them) are reported and moved aside by repair, so a
/// single repair leaves the store clean.
#[test]
fn strays_in_the_consume_queue_directory_need_one_repair() {
    let (_d, root, sent) = build(120);
    let top = root.join("consumequeue/notes.txt");
    let in_topic = root.join("consumequeue/TopicA/x");
    std::fs::write(&top, b"x").unwrap();
    std::fs::create_dir_all(&in_topic).unwrap();
    find_fix_read(&root, Kind::CqFileName, &sent);
    assert!(!top.exists() && !in_topic.exists());
}
