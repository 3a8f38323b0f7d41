//! A tiny store built by hand from the spec's byte layouts (store.md §3, §7,
//! §8, §9), as Apache RocketMQ 4.x writes it: check must read it clean, and
//! the engine must serve its message.

use engine::{AcceptAll, MessageStore, StoreConfig};
use fsck::Settings;

fn hex(s: &str) -> Vec<u8> {
    let s: String = s.split_whitespace().collect();
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

fn config(root: &std::path::Path) -> StoreConfig {
    StoreConfig {
        store_path_root_dir: root.to_path_buf(),
        mapped_file_size_commit_log: 4096,
        mapped_file_size_consume_queue: 200,
        max_hash_slot_num: 4,
        max_index_num: 4,
        allocate_next_file: false,
        ..Default::default()
    }
}

fn write_sized(path: &std::path::Path, bytes: &[u8], size: usize) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let mut b = bytes.to_vec();
    b.resize(size, 0);
    std::fs::write(path, b).unwrap();
}

#[test]
fn hand_built_rocketmq_store_reads_clean() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("store");
    // Commit log record (§3.1), IPv4 hosts; total = 91 + 2 + 1 + 14 = 108.
    let record = hex(concat!(
        "0000006C",                            // TOTALSIZE 108
        "DAA320A7",                            // MAGICCODE
        "58932AAC",                            // BODYCRC = CRC32("hi") & 0x7FFFFFFF
        "00000000",                            // QUEUEID 0
        "00000000",                            // FLAG
        "0000000000000000",                    // QUEUEOFFSET 0
        "0000000000000000",                    // PHYSICALOFFSET 0
        "00000000",                            // SYSFLAG
        "0000018BCFE56800",                    // BORNTIMESTAMP
        "7F000001 0000D431",                   // BORNHOST 127.0.0.1:54321
        "0000018BCFE56801",                    // STORETIMESTAMP 1700000000001
        "C0A8010A 00002A9F",                   // STOREHOST 192.168.1.10:10911
        "00000000",                            // RECONSUMETIMES
        "0000000000000000",                    // PREPARED TRANSACTION OFFSET
        "00000002 6869",                       // BODY "hi"
        "01 54",                               // TOPIC "T"
        "000E 4B455953016B3102 5441475301 41", // "KEYS\x01k1\x02TAGS\x01A"
    ));
    assert_eq!(record.len(), 108);
    assert_eq!(engine::record::body_crc(b"hi"), 0x58932AAC);
    write_sized(&root.join("commitlog/00000000000000000000"), &record, 4096);
    // Consume-queue entry (§7.1): offset 0, size 108, tagsCode "A".hashCode() = 65.
    let cq = hex("0000000000000000 0000006C 0000000000000041");
    write_sized(
        &root.join("consumequeue/T/0/00000000000000000000"),
        &cq,
        200,
    );
    // Index file (§8) with 4 slots and 4 entries: key "T#k1", Java hashCode
    // 2539445 = 0x0026BFB5, slot 2539445 % 4 = 1, entry 1.
    let mut index = hex(concat!(
        "0000018BCFE56801 0000018BCFE56801",   // begin/end timestamp
        "0000000000000000 0000000000000000",   // begin/end phy offset
        "00000001 00000002",                   // hashSlotCount 1, indexCount 2
        "00000000 00000001 00000000 00000000", // slots: slot 1 -> entry 1
        "00000000 0000000000000000 00000000 00000000", // entry 0 (unused)
        "0026BFB5 0000000000000000 00000000 00000000", // entry 1
    ));
    index.resize(40 + 4 * 4 + 4 * 20, 0);
    write_sized(&root.join("index/20231114221320001"), &index, index.len());
    // Checkpoint (§9): three timestamps, no extension (an Apache RocketMQ store).
    let cp = hex("0000018BCFE56801 0000018BCFE56801 0000018BCFE56801");
    write_sized(&root.join("checkpoint"), &cp, 4096);
    std::fs::create_dir_all(root.join("config")).unwrap();
    std::fs::write(
        root.join("config/consumerOffset.json"),
        "{\n\t\"offsetTable\":{\n\t\t\"T@CG\":{0:1}\n\t}\n}",
    )
    .unwrap();
    std::fs::write(
        root.join("config/topics.json"),
        "{\"dataVersion\":{\"counter\":1,\"timestamp\":1700000000000},\"topicConfigTable\":{\"T\":{\"order\":false,\"perm\":6,\"readQueueNums\":1,\"topicFilterType\":\"SINGLE_TAG\",\"topicName\":\"T\",\"topicSysFlag\":0,\"writeQueueNums\":1}}}",
    )
    .unwrap();

    let report = fsck::check(&Settings::explicit(config(&root)), false)
        .unwrap()
        .report;
    assert!(report.is_clean(), "{:#?}", report.problems);
    assert_eq!(report.totals.records, 1);
    assert_eq!(report.totals.consume_queue_entries, 1);
    assert_eq!(report.totals.index_entries, 1);
    assert_eq!(report.totals.commitlog_end, 108);

    // Sizes inferred from the files when not given.
    let mut inferred = Settings::new(&root);
    inferred.config.max_hash_slot_num = 4;
    inferred.config.max_index_num = 4;
    let r = fsck::check(&inferred, false).unwrap().report;
    assert!(r.is_clean(), "{:#?}", r.problems);

    let store = MessageStore::open(config(&root)).unwrap();
    let got = store.get_messages("T", 0, 0, 8, &AcceptAll);
    assert_eq!(got.messages.len(), 1);
    assert_eq!(got.messages[0].as_bytes(), &record[..]);
    let found = store.query_by_key("T", "k1", 4, 0, i64::MAX);
    assert_eq!(found.len(), 1);
    store.shutdown().unwrap();
    drop(store);
    let r = fsck::check(&Settings::explicit(config(&root)), false)
        .unwrap()
        .report;
    assert!(r.is_clean(), "after the engine ran: {:#?}", r.problems);
}
