//! Retention (store.md §11.8) through the public API: 64 KiB commit log
//! files, a manual clock and a fake disk-usage probe. Most tests run rounds
//! synchronously (`run_retention_round`) with the background thread's first
//! round an hour away; the last ones use the thread itself. Every wait is bounded.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use engine::config::StoreConfig;
use engine::{
    AcceptAll, Clock, GetMessageStatus, ManualClock, MessageStore, MessageToStore, StoreError,
    StoreHooks,
};

const HOUR: i64 = 3_600_000;
const FILE: u64 = 64 * 1024;
const TOPIC: &str = "RetentionTopic";

fn config(dir: &Path) -> StoreConfig {
    StoreConfig {
        store_path_root_dir: dir.to_path_buf(),
        mapped_file_size_commit_log: FILE,
        mapped_file_size_consume_queue: 20 * 50,
        max_hash_slot_num: 64,
        max_index_num: 100,
        allocate_next_file: false,
        delete_when: "04;05".into(),
        file_reserved_time: 48,
        disk_max_used_space_ratio: 75,
        clean_resource_interval: 20,
        delete_commit_log_files_interval: 1,
        delete_consume_queue_files_interval: 1,
        ..StoreConfig::default()
    }
}

/// Disk usage in per mille, shared with the probe.
#[derive(Clone)]
struct Usage(Arc<AtomicU64>);

impl Usage {
    fn new(permille: u64) -> Self {
        Usage(Arc::new(AtomicU64::new(permille)))
    }
    fn set(&self, permille: u64) {
        self.0.store(permille, Ordering::Release);
    }
}

fn real_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

struct Env {
    _dir: tempfile::TempDir,
    root: PathBuf,
    store: Arc<MessageStore>,
    clock: Arc<ManualClock>,
    usage: Usage,
}

fn open_env(cfg: impl FnOnce(&mut StoreConfig), first_delay: Duration) -> Env {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_path_buf();
    let mut c = config(&root);
    cfg(&mut c);
    let clock = ManualClock::new(real_now(), 12);
    let usage = Usage::new(300);
    let u = usage.clone();
    let hooks = StoreHooks {
        clock: clock.clone(),
        disk_usage: Arc::new(move |_: &Path| Some(u.0.load(Ordering::Acquire) as f64 / 1000.0)),
        retention_first_delay: first_delay,
        ..StoreHooks::default()
    };
    let store = MessageStore::open_with(c, hooks).unwrap();
    Env {
        _dir: dir,
        root,
        store,
        clock,
        usage,
    }
}

/// Rounds only when the test runs them.
fn env() -> Env {
    open_env(|_| {}, Duration::from_secs(3600))
}

fn put(store: &MessageStore, queue: i32, i: u64) -> Result<engine::PutResult, StoreError> {
    let props = format!("KEYS\u{1}key-{queue}-{i}");
    store.put_message(&MessageToStore::new(TOPIC, queue, &[b'x'; 1000], &props))
}

/// Appends to queues 0 and 1 (alternating) until the commit log has `files`
/// files; returns messages written per queue.
fn fill(store: &MessageStore, files: usize) -> [u64; 2] {
    let mut n = [0u64; 2];
    let mut i = 0u64;
    while store.commit_log().files().len() < files {
        let q = (i % 2) as usize;
        put(store, q as i32, n[q]).unwrap();
        n[q] += 1;
        i += 1;
    }
    wait_dispatched(store);
    n
}

fn wait_dispatched(store: &MessageStore) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while store.dispatched_offset() < store.max_offset() {
        assert!(Instant::now() < deadline, "dispatch did not catch up");
        std::thread::sleep(Duration::from_millis(1));
    }
}

fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn set_mtime(path: &Path, ms: i64) {
    let f = std::fs::File::options().write(true).open(path).unwrap();
    f.set_modified(UNIX_EPOCH + Duration::from_millis(ms as u64))
        .unwrap();
}

/// Sets commit log file i's mtime to `mtimes[i]` (ms).
fn set_mtimes(store: &MessageStore, mtimes: &[i64]) {
    let files = store.commit_log().files();
    assert_eq!(files.len(), mtimes.len());
    for (f, ms) in files.iter().zip(mtimes) {
        set_mtime(f.path(), *ms);
    }
}

fn file_starts(store: &MessageStore) -> Vec<u64> {
    store
        .commit_log()
        .files()
        .iter()
        .map(|f| f.start_offset())
        .collect()
}

fn count_files(dir: &Path) -> usize {
    std::fs::read_dir(dir).map(|d| d.count()).unwrap_or(0)
}

#[test]
fn time_trigger_only_at_delete_when_hours() {
    let e = env();
    fill(&e.store, 4);
    let now = e.clock.now_ms();
    set_mtimes(&e.store, &[now - 100 * HOUR; 4]);
    for hour in [0, 3, 6, 12, 23] {
        e.clock.set_local_hour(hour);
        let r = e.store.run_retention_round().unwrap();
        assert!(
            !r.time_trigger && !r.space_trigger && !r.manual_trigger,
            "{r:?}"
        );
        assert_eq!(r.deleted_commit_log_files, 0, "hour {hour}");
    }
    assert_eq!(e.store.commit_log().files().len(), 4);
    e.clock.set_local_hour(5);
    let r = e.store.run_retention_round().unwrap();
    assert!(r.time_trigger && !r.forced, "{r:?}");
    // Everything but the current file, which is never deleted.
    assert_eq!(r.deleted_commit_log_files, 3);
    assert_eq!(file_starts(&e.store), vec![3 * FILE]);
    assert_eq!(e.store.min_offset(), 3 * FILE);
    let r = e.store.run_retention_round().unwrap();
    assert_eq!(r.deleted_commit_log_files, 0);
    put(&e.store, 0, 10_000).unwrap();
}

#[test]
fn reserved_time_oldest_first_no_holes() {
    let e = env();
    fill(&e.store, 5);
    let t = e.clock.now_ms();
    e.clock.set_local_hour(4);
    // File 1 is younger than its neighbours: it blocks 2 and 3.
    set_mtimes(
        &e.store,
        &[t, t + 10 * HOUR, t + HOUR, t + 2 * HOUR, t + 3 * HOUR],
    );
    e.clock.set_now_ms(t + 48 * HOUR - 1);
    assert_eq!(
        e.store
            .run_retention_round()
            .unwrap()
            .deleted_commit_log_files,
        0
    );
    e.clock.set_now_ms(t + 48 * HOUR);
    let r = e.store.run_retention_round().unwrap();
    assert_eq!(r.deleted_commit_log_files, 1, "{r:?}");
    assert_eq!(
        file_starts(&e.store),
        vec![FILE, 2 * FILE, 3 * FILE, 4 * FILE]
    );
    // Files 2 and 3 are expired, but the older file 1 is not: no hole.
    e.clock.set_now_ms(t + 55 * HOUR);
    assert_eq!(
        e.store
            .run_retention_round()
            .unwrap()
            .deleted_commit_log_files,
        0
    );
    assert_eq!(e.store.commit_log().files().len(), 4);
    // Once file 1 expires, it and 2, 3 go; the current file 4 stays although expired.
    e.clock.set_now_ms(t + 100 * HOUR);
    let r = e.store.run_retention_round().unwrap();
    assert_eq!(r.deleted_commit_log_files, 3, "{r:?}");
    assert_eq!(file_starts(&e.store), vec![4 * FILE]);
}

#[test]
fn a_huge_reserved_time_keeps_every_file() {
    // 2^64 - 1 hours: "keep forever", not a negative reserved time that
    // makes every file expired.
    let e = open_env(
        |c| c.file_reserved_time = u64::MAX,
        Duration::from_secs(3600),
    );
    fill(&e.store, 3);
    e.clock.set_local_hour(4);
    let r = e.store.run_retention_round().unwrap();
    assert!(r.time_trigger, "{r:?}");
    assert_eq!(r.deleted_commit_log_files, 0, "{r:?}");
    assert_eq!(e.store.commit_log().files().len(), 3);
}

#[test]
fn at_most_ten_files_per_round() {
    let e = env();
    fill(&e.store, 13);
    let now = e.clock.now_ms();
    set_mtimes(&e.store, &[now - 100 * HOUR; 13]);
    e.store.trigger_delete_files();
    let r = e.store.run_retention_round().unwrap();
    assert!(r.manual_trigger, "{r:?}");
    assert_eq!(r.deleted_commit_log_files, 10);
    let r = e.store.run_retention_round().unwrap();
    assert_eq!(r.deleted_commit_log_files, 2);
    assert_eq!(file_starts(&e.store), vec![12 * FILE]);
}

#[test]
fn manual_trigger_still_respects_reserved_time() {
    let e = env();
    fill(&e.store, 3);
    let now = e.clock.now_ms();
    set_mtimes(&e.store, &[now - 100 * HOUR, now - HOUR, now]);
    assert_eq!(
        e.store
            .run_retention_round()
            .unwrap()
            .deleted_commit_log_files,
        0
    );
    e.store.trigger_delete_files();
    let r = e.store.run_retention_round().unwrap();
    assert!(r.manual_trigger);
    assert_eq!(r.deleted_commit_log_files, 1);
    assert_eq!(e.store.min_offset(), FILE);
}

#[test]
fn consume_queues_and_index_follow_the_commit_log() {
    let e = env();
    let cq0 = e.root.join("consumequeue").join(TOPIC).join("0");
    let index_dir = e.root.join("index");
    let mut written = fill(&e.store, 6);
    // Both queues get messages in the current (kept) file.
    for _ in 0..5 {
        for (q, n) in written.iter_mut().enumerate() {
            put(&e.store, q as i32, *n).unwrap();
            *n += 1;
        }
    }
    wait_dispatched(&e.store);
    let (cq_files_before, index_files_before) = (count_files(&cq0), count_files(&index_dir));
    assert!(cq_files_before >= 3, "{cq_files_before}");
    assert!(index_files_before >= 3, "{index_files_before}");
    assert!(!e
        .store
        .query_by_key(TOPIC, "key-0-0", 4, 0, i64::MAX)
        .is_empty());

    let now = e.clock.now_ms();
    set_mtimes(&e.store, &[now - 100 * HOUR; 6]);
    e.clock.set_local_hour(4);
    let r = e.store.run_retention_round().unwrap();
    assert_eq!(r.deleted_commit_log_files, 5, "{r:?}");
    assert!(r.deleted_consume_queue_files > 0, "{r:?}");
    assert!(r.deleted_index_files > 0, "{r:?}");
    assert!(count_files(&cq0) < cq_files_before);
    assert!(count_files(&index_dir) < index_files_before);

    let min_phys = e.store.min_offset();
    assert_eq!(min_phys, 5 * FILE);
    for q in 0..2 {
        let min = e.store.min_queue_offset(TOPIC, q);
        let max = e.store.max_queue_offset(TOPIC, q);
        assert_eq!(max, written[q as usize]);
        assert!(min > 0 && min < max, "queue {q}: min {min} max {max}");
        // The first remaining message is the first one in the kept file.
        let first = e.store.get_messages(TOPIC, q, min, 1, &AcceptAll);
        assert_eq!(first.status, GetMessageStatus::Found);
        assert!(first.messages[0].offset() >= min_phys);
        let old = e.store.get_messages(TOPIC, q, 0, 32, &AcceptAll);
        assert_eq!(old.status, GetMessageStatus::OffsetTooSmall);
        assert_eq!(old.next_begin_offset, min);
        assert_eq!(old.min_offset, min);
        // Keys of deleted messages find nothing, keys of kept ones still do.
        assert!(e
            .store
            .query_by_key(TOPIC, &format!("key-{q}-0"), 4, 0, i64::MAX)
            .is_empty());
        assert_eq!(
            e.store
                .query_by_key(TOPIC, &format!("key-{q}-{}", max - 1), 4, 0, i64::MAX)
                .len(),
            1
        );
    }

    // The new minimum survives a restart.
    let mins: Vec<u64> = (0..2).map(|q| e.store.min_queue_offset(TOPIC, q)).collect();
    e.store.shutdown().unwrap();
    let store = MessageStore::open(config(&e.root)).unwrap();
    assert_eq!(store.min_offset(), 5 * FILE);
    for q in 0..2 {
        assert_eq!(store.min_queue_offset(TOPIC, q), mins[q as usize]);
        let r = store.get_messages(TOPIC, q, mins[q as usize], 32, &AcceptAll);
        assert_eq!(r.status, GetMessageStatus::Found);
    }
    store.shutdown().unwrap();
}

#[test]
fn a_reader_keeps_reading_a_deleted_file() {
    let e = env();
    fill(&e.store, 3);
    let held = e.store.read_record(0).expect("first record");
    let pulled = e.store.get_messages(TOPIC, 0, 0, 32, &AcceptAll);
    assert_eq!(pulled.status, GetMessageStatus::Found);
    let (held_bytes, pulled_bytes): (Vec<u8>, Vec<Vec<u8>>) = (
        held.as_bytes().to_vec(),
        pulled
            .messages
            .iter()
            .map(|m| m.as_bytes().to_vec())
            .collect(),
    );
    let first_path = e.store.commit_log().files()[0].path().to_path_buf();

    e.usage.set(950);
    let r = e.store.run_retention_round().unwrap();
    assert!(r.forced && r.deleted_commit_log_files == 2, "{r:?}");
    assert!(!first_path.exists(), "the file is unlinked");
    assert!(e.store.read_record(0).is_none());
    // The slices still map the deleted file's pages.
    assert_eq!(held.as_bytes(), &held_bytes[..]);
    for (m, b) in pulled.messages.iter().zip(&pulled_bytes) {
        assert_eq!(m.as_bytes(), &b[..]);
    }
    assert!(matches!(
        engine::record::decode(held.as_bytes(), true),
        engine::Decoded::Message(_)
    ));
}

#[test]
fn forced_clean_above_the_forcible_ratio() {
    let e = env();
    fill(&e.store, 4);
    // All files fresh: the reserved time alone protects them.
    e.usage.set(800); // above diskMaxUsedSpaceRatio 75 %, below 85 %
    let r = e.store.run_retention_round().unwrap();
    assert!(r.space_trigger && !r.forced, "{r:?}");
    assert_eq!(r.deleted_commit_log_files, 0);
    e.usage.set(860);
    let r = e.store.run_retention_round().unwrap();
    assert!(r.space_trigger && r.forced, "{r:?}");
    assert_eq!(r.deleted_commit_log_files, 3);
    assert_eq!(e.store.commit_log().files().len(), 1);
}

#[test]
fn no_forced_clean_when_disabled() {
    let e = open_env(
        |c| c.clean_file_forcibly_enable = false,
        Duration::from_secs(3600),
    );
    fill(&e.store, 3);
    e.usage.set(890);
    let r = e.store.run_retention_round().unwrap();
    assert!(r.space_trigger && !r.forced, "{r:?}");
    assert_eq!(r.deleted_commit_log_files, 0);
    // Expired files still go under the space trigger.
    let now = e.clock.now_ms();
    set_mtimes(&e.store, &[now - 100 * HOUR, now, now]);
    assert_eq!(
        e.store
            .run_retention_round()
            .unwrap()
            .deleted_commit_log_files,
        1
    );
}

#[test]
fn disk_full_refuses_appends_until_space_is_freed() {
    // The disk guard runs on the background thread from start-up, even
    // though the first deletion round is an hour away.
    let e = open_env(|_| {}, Duration::from_secs(3600));
    put(&e.store, 0, 0).unwrap();
    e.usage.set(950);
    let mut refused = None;
    wait_until("appends to be refused", || match put(&e.store, 0, 1) {
        Err(err) => {
            refused = Some(err);
            true
        }
        Ok(_) => false,
    });
    assert!(
        matches!(refused, Some(StoreError::DiskFull(_))),
        "{refused:?}"
    );
    assert!(e.store.is_disk_full());
    assert!(matches!(put(&e.store, 1, 0), Err(StoreError::DiskFull(_))));
    // Reads still work.
    wait_dispatched(&e.store);
    assert_eq!(
        e.store.get_messages(TOPIC, 0, 0, 32, &AcceptAll).status,
        GetMessageStatus::Found
    );
    // Freed space is noticed by the very next append.
    e.usage.set(890);
    put(&e.store, 0, 1).unwrap();
    assert!(!e.store.is_disk_full());
}

#[test]
fn background_retention_frees_a_full_disk() {
    let e = open_env(|_| {}, Duration::ZERO);
    fill(&e.store, 5);
    // Usage follows the number of commit log files: 5 files = 100 %.
    let log_dir = e.root.join("commitlog");
    let usage = e.usage.clone();
    let files_now = move || count_files(&log_dir) as u64;
    usage.set(files_now() * 200);
    wait_until("disk-full to be noticed and cleared", || {
        usage.set(files_now() * 200);
        e.store.commit_log().files().len() == 1
    });
    usage.set(files_now() * 200);
    wait_until("appends to be accepted", || {
        put(&e.store, 0, 99_999).is_ok()
    });
    assert!(!e.store.is_disk_full());
    assert_eq!(e.store.min_offset(), 4 * FILE);
}

#[test]
fn background_round_at_delete_when_hour() {
    let e = open_env(|_| {}, Duration::ZERO);
    e.clock.set_local_hour(3);
    fill(&e.store, 4);
    let now = e.clock.now_ms();
    set_mtimes(&e.store, &[now - 100 * HOUR; 4]);
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(e.store.commit_log().files().len(), 4, "not at 03:00");
    e.clock.set_local_hour(4);
    wait_until("the 04:00 round", || {
        e.store.commit_log().files().len() == 1
    });
    wait_until("the consume queue min offset to move", || {
        e.store.min_queue_offset(TOPIC, 0) > 0
    });
    e.store.shutdown().unwrap();
}

#[test]
fn shutdown_interrupts_retention_sleeps() {
    let e = open_env(
        |c| {
            c.clean_resource_interval = 3_600_000;
            c.delete_commit_log_files_interval = 3_600_000;
        },
        Duration::ZERO,
    );
    let t = Instant::now();
    e.store.shutdown().unwrap();
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
}
