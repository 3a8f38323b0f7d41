//! Replication through the engine's API, without a network: a master store
//! lends raw commit log bytes, a slave store appends them in frames cut at
//! arbitrary sizes, and its own dispatcher builds readable queues.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use engine::config::{BrokerRole, FlushDiskType, StoreConfig};
use engine::record::{self, Decoded, MessageToStore};
use engine::{AcceptAll, GetMessageStatus, MessageStore, PutStatus, StoreError};

const FILE: u64 = 64 * 1024;

fn config(dir: &Path, role: BrokerRole) -> StoreConfig {
    StoreConfig {
        store_path_root_dir: dir.to_path_buf(),
        mapped_file_size_commit_log: FILE,
        mapped_file_size_consume_queue: 20 * 50,
        max_hash_slot_num: 64,
        max_index_num: 400,
        broker_role: role,
        ..StoreConfig::default()
    }
}

/// A message whose body identifies it; sizes vary so records straddle frames.
fn message(i: u32) -> MessageToStore {
    let body = format!("m{i}-{}", "x".repeat((i as usize * 37) % 900));
    MessageToStore::new(
        &format!("T{}", i % 3),
        (i % 2) as i32,
        body.as_bytes(),
        &format!("KEYS\u{1}k{i}"),
    )
}

/// Moves everything the master has past the slave's end, `frame` bytes at a
/// time (never crossing a master file), as the HA service does.
fn pump(master: &MessageStore, slave: &MessageStore, frame: u64) -> u64 {
    let mut at = master.transfer_start(slave.max_offset());
    while let Some(slice) = master.read_for_transfer(at, frame) {
        let end = slave.append_replicated(at, slice.as_bytes()).unwrap();
        assert_eq!(end, at + slice.len());
        at = end;
        if at >= master.max_offset() {
            break;
        }
    }
    at
}

/// Bytes `[from, to)` of a store's commit log, file by file.
fn log_bytes(store: &MessageStore, from: u64, to: u64) -> Vec<u8> {
    let mut out = Vec::new();
    let mut at = from;
    while at < to {
        let s = store
            .read_for_transfer(at, to - at)
            .unwrap_or_else(|| panic!("nothing readable at {at}"));
        out.extend_from_slice(s.as_bytes());
        at += s.len();
    }
    out
}

fn wait_dispatched(store: &MessageStore, to: u64) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while store.dispatched_offset() < to {
        assert!(Instant::now() < deadline, "dispatch did not reach {to}");
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Every message of every queue, as (topic, queue, queue offset, body).
fn all_messages(store: &MessageStore) -> Vec<(String, i32, u64, Vec<u8>)> {
    let mut out = Vec::new();
    for t in 0..3 {
        let topic = format!("T{t}");
        for q in 0..2 {
            let mut off = store.min_queue_offset(&topic, q);
            let max = store.max_queue_offset(&topic, q);
            while off < max {
                let r = store.get_messages(&topic, q, off, 32, &AcceptAll);
                assert_eq!(r.status, GetMessageStatus::Found, "{topic}/{q}@{off}");
                for (i, m) in r.messages.iter().enumerate() {
                    let Decoded::Message(v) = record::decode(m.as_bytes(), true) else {
                        panic!("not a message at {topic}/{q}@{off}")
                    };
                    assert_eq!(v.queue_offset as u64, off + i as u64);
                    out.push((topic.clone(), q, off + i as u64, v.body.to_vec()));
                }
                off = r.next_begin_offset;
            }
        }
    }
    out.sort();
    out
}

#[test]
fn slave_copies_byte_identical_log_and_builds_its_own_queues() {
    let (md, sd) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let master = MessageStore::open(config(md.path(), BrokerRole::AsyncMaster)).unwrap();
    let slave = MessageStore::open(config(sd.path(), BrokerRole::Slave)).unwrap();
    // The slave starts while the master is still in its first file, so it
    // gets everything; then both grow over several files (blank
    // end-of-file records included), replicated in odd-sized frames.
    for i in 0..10 {
        master.put_message(&message(i)).unwrap();
    }
    pump(&master, &slave, 100);
    assert_eq!(slave.min_offset(), 0);
    for (round, frame) in [(0u32, 1000u64), (1, 32 * 1024), (2, 7)] {
        for i in 0..150 {
            master.put_message(&message(10 + round * 150 + i)).unwrap();
        }
        pump(&master, &slave, frame);
    }
    let end = master.max_offset();
    assert!(end > 3 * FILE, "spans several files: {end}");
    assert_eq!(slave.max_offset(), end);
    assert_eq!(slave.min_offset(), 0);
    assert_eq!(log_bytes(&slave, 0, end), log_bytes(&master, 0, end));
    wait_dispatched(&slave, end);
    let on_master = all_messages(&master);
    assert_eq!(on_master.len(), 460);
    assert_eq!(all_messages(&slave), on_master);
    // The slave's index works on replicated records.
    assert_eq!(slave.query_by_key("T1", "k7", 4, 0, i64::MAX).len(), 1);

    // Restart the slave cleanly: it resumes from its max offset.
    slave.shutdown().unwrap();
    drop(slave);
    let slave = MessageStore::open(config(sd.path(), BrokerRole::Slave)).unwrap();
    assert_eq!(slave.max_offset(), end);
    for i in 0..20 {
        master.put_message(&message(1000 + i)).unwrap();
    }
    pump(&master, &slave, 4096);
    let end = master.max_offset();
    assert_eq!(log_bytes(&slave, 0, end), log_bytes(&master, 0, end));
    wait_dispatched(&slave, end);
    assert_eq!(all_messages(&slave), all_messages(&master));
}

#[test]
fn empty_slave_starts_at_the_masters_last_file() {
    let (md, sd) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let master = MessageStore::open(config(md.path(), BrokerRole::AsyncMaster)).unwrap();
    for i in 0..300 {
        master.put_message(&message(i)).unwrap();
    }
    let last_file = master.max_offset() / FILE * FILE;
    assert!(last_file > 0);
    assert_eq!(master.transfer_start(0), last_file);
    let slave = MessageStore::open(config(sd.path(), BrokerRole::Slave)).unwrap();
    pump(&master, &slave, 32 * 1024);
    let end = master.max_offset();
    assert_eq!(slave.min_offset(), last_file);
    assert_eq!(slave.max_offset(), end);
    assert_eq!(
        log_bytes(&slave, last_file, end),
        log_bytes(&master, last_file, end)
    );
    wait_dispatched(&slave, end);
    // Every message of that file is readable on the slave at the master's
    // queue offsets; queues start where the file's first entries are.
    let on_slave = all_messages(&slave);
    let on_master: Vec<_> = all_messages(&master)
        .into_iter()
        .filter(|m| {
            on_slave
                .iter()
                .any(|s| s.0 == m.0 && s.1 == m.1 && s.2 == m.2)
        })
        .collect();
    assert!(!on_slave.is_empty());
    assert_eq!(on_slave, on_master);
    for (topic, q, off, _) in &on_slave {
        assert!(*off >= slave.min_queue_offset(topic, *q));
    }
}

#[test]
fn wrong_offsets_are_refused() {
    let (md, sd) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let master = MessageStore::open(config(md.path(), BrokerRole::AsyncMaster)).unwrap();
    for i in 0..5 {
        master.put_message(&message(i)).unwrap();
    }
    let slave = MessageStore::open(config(sd.path(), BrokerRole::Slave)).unwrap();
    let bytes = log_bytes(&master, 0, master.max_offset());
    // An empty log starts only at a file boundary.
    assert!(matches!(
        slave.append_replicated(100, &bytes[100..]),
        Err(StoreError::InvalidArgument(_))
    ));
    slave.append_replicated(0, &bytes[..50]).unwrap();
    // Not the end: a gap or an overlap.
    for bad in [0u64, 49, 51] {
        assert!(matches!(
            slave.append_replicated(bad, &bytes[bad as usize..]),
            Err(StoreError::InvalidArgument(_))
        ));
    }
    assert_eq!(
        slave.append_replicated(50, &bytes[50..]).unwrap(),
        master.max_offset()
    );
    // A slave store takes no puts.
    assert!(matches!(
        slave.put_message(&message(9)),
        Err(StoreError::SlaveMode)
    ));
}

#[test]
fn crashed_slave_truncates_a_partial_record_and_resumes() {
    let (md, sd) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let master = MessageStore::open(config(md.path(), BrokerRole::AsyncMaster)).unwrap();
    let mut ends = Vec::new();
    for i in 0..40 {
        let r = master.put_message(&message(i)).unwrap();
        let m = &r.messages[0];
        ends.push(m.physical_offset + m.size as u64);
    }
    let slave_cfg = StoreConfig {
        flush_disk_type: FlushDiskType::SyncFlush,
        ..config(sd.path(), BrokerRole::Slave)
    };
    let cut = ends[30] + 17; // inside record 31
    {
        let slave = MessageStore::open(slave_cfg.clone()).unwrap();
        let bytes = log_bytes(&master, 0, cut);
        slave.append_replicated(0, &bytes).unwrap();
        assert_eq!(slave.max_offset(), cut);
        // Whole records are dispatched; the partial one waits.
        wait_dispatched(&slave, ends[30]);
        std::thread::sleep(Duration::from_millis(20));
        assert_eq!(slave.dispatched_offset(), ends[30]);
        // Durable per SYNC_FLUSH without anyone waiting for it.
        let deadline = Instant::now() + Duration::from_secs(5);
        while slave.durable_offset() < cut {
            assert!(Instant::now() < deadline, "slave never flushed");
            std::thread::sleep(Duration::from_millis(2));
        }
        slave.abandon();
    }
    let slave = MessageStore::open(slave_cfg).unwrap();
    assert!(!slave.was_clean_shutdown());
    assert_eq!(slave.max_offset(), ends[30], "partial record dropped");
    pump(&master, &slave, 333);
    let end = master.max_offset();
    assert_eq!(log_bytes(&slave, 0, end), log_bytes(&master, 0, end));
    wait_dispatched(&slave, end);
    assert_eq!(all_messages(&slave), all_messages(&master));
}

#[test]
fn sync_master_waits_for_a_slave() {
    let md = tempfile::tempdir().unwrap();
    let master = MessageStore::open(StoreConfig {
        slave_timeout: 200,
        ha_slave_fallbehind_max: 100_000,
        ..config(md.path(), BrokerRole::SyncMaster)
    })
    .unwrap();
    // No slave connected: stored, but SLAVE_NOT_AVAILABLE, at once.
    let t = Instant::now();
    let r = master.put_message(&message(0)).unwrap();
    assert_eq!(r.status, PutStatus::SlaveNotAvailable);
    assert!(t.elapsed() < Duration::from_millis(150));
    assert_eq!(master.max_queue_offset("T0", 0), 1);

    // A connected slave that never acknowledges: FLUSH_SLAVE_TIMEOUT.
    let session = master.replication().slave_connected();
    let t = Instant::now();
    let r = master.put_message(&message(3)).unwrap();
    assert_eq!(r.status, PutStatus::FlushSlaveTimeout);
    assert!(t.elapsed() >= Duration::from_millis(200));

    // A slave acknowledging what it is sent: PUT_OK, for many concurrent puts.
    let acker = {
        let m = master.clone();
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let s = stop.clone();
        let h = std::thread::spawn(move || {
            while !s.load(std::sync::atomic::Ordering::Acquire) {
                m.replication().record_ack(m.max_offset());
                std::thread::sleep(Duration::from_millis(1));
            }
        });
        (h, stop)
    };
    let writers: Vec<_> = (0..8)
        .map(|w| {
            let m = master.clone();
            std::thread::spawn(move || {
                (0..20)
                    .map(|i| m.put_message(&message(100 + w * 20 + i)).unwrap().status)
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    for w in writers {
        assert!(w.join().unwrap().iter().all(|s| *s == PutStatus::PutOk));
    }
    acker.1.store(true, std::sync::atomic::Ordering::Release);
    acker.0.join().unwrap();
    // WAIT=false: no waiting for the slave at all.
    let mut m = message(500);
    m.wait_for_flush = false;
    assert_eq!(master.put_message(&m).unwrap().status, PutStatus::PutOk);

    // A slave too far behind counts as no slave.
    let filler = MessageToStore::new("T0", 0, &[7u8; 60_000], "");
    master.put_message(&filler).unwrap();
    master.put_message(&filler).unwrap();
    let r = master.put_message(&message(501)).unwrap();
    assert_eq!(r.status, PutStatus::SlaveNotAvailable);
    drop(session);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_master_async_puts_wake_on_ack() {
    let md = tempfile::tempdir().unwrap();
    let master = MessageStore::open(StoreConfig {
        slave_timeout: 3000,
        ..config(md.path(), BrokerRole::SyncMaster)
    })
    .unwrap();
    let _session = master.replication().slave_connected();
    let mut tasks = Vec::new();
    for i in 0..32 {
        let m = master.clone();
        tasks.push(tokio::spawn(async move {
            m.put_message_async(&message(i)).await.unwrap()
        }));
    }
    // Acks arrive in steps; every put is released by the first ack covering it.
    let deadline = Instant::now() + Duration::from_secs(5);
    while master.max_queue_offset("T0", 0) + master.max_queue_offset("T0", 1) < 11 {
        assert!(Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let t = Instant::now();
    while !tasks.iter().all(|t| t.is_finished()) {
        master.replication().record_ack(master.max_offset());
        assert!(t.elapsed() < Duration::from_secs(2), "puts not released");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    for t in tasks {
        assert_eq!(t.await.unwrap().status, PutStatus::PutOk);
    }
}

/// A SYNC_FLUSH master stages appends (written at the flush): its records
/// become readable at the flush, and that is when a slave sender waiting
/// for new bytes must wake — not at its own timeout, and not only at some
/// later append.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiting_sender_wakes_when_a_staged_put_becomes_readable() {
    let md = tempfile::tempdir().unwrap();
    let master = MessageStore::open(StoreConfig {
        flush_disk_type: FlushDiskType::SyncFlush,
        flush_mechanism: engine::config::FlushMechanism::WriteFdatasync,
        ..config(md.path(), BrokerRole::AsyncMaster)
    })
    .unwrap();
    let before = master.max_offset();
    let waiter = {
        let m = master.clone();
        tokio::spawn(async move {
            let start = Instant::now();
            let r = m.replication().clone();
            r.wait_for_append(|| m.max_offset(), before, Duration::from_secs(60))
                .await;
            start.elapsed()
        })
    };
    tokio::time::sleep(Duration::from_millis(50)).await;
    let put = master.put_message_async(&message(1)).await.unwrap();
    assert_eq!(put.status, PutStatus::PutOk);
    let waited = tokio::time::timeout(Duration::from_secs(20), waiter)
        .await
        .expect("the sender woke")
        .unwrap();
    assert!(master.max_offset() > before);
    assert!(waited < Duration::from_secs(20), "{waited:?}");
}
