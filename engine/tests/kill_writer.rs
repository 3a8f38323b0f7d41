//! kill -9 durability: a child process appends with SYNC_FLUSH from several
//! threads and reports every acknowledged record on its stdout; the parent
//! kills it with SIGKILL at a random moment, reopens the store and finds
//! every acknowledged record, byte for byte.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use engine::config::{FlushDiskType, StoreConfig};
use engine::record::{self, Decoded, MessageToStore};
use engine::{MessageStore, PutStatus};
use rand::Rng;

const FILE_SIZE: u64 = 256 * 1024;

fn config(dir: &Path) -> StoreConfig {
    StoreConfig {
        store_path_root_dir: dir.to_path_buf(),
        mapped_file_size_commit_log: FILE_SIZE,
        flush_disk_type: FlushDiskType::SyncFlush,
        ..StoreConfig::default()
    }
}

/// The body of record `seq` written by thread `t`: recognisable and sized by seq.
fn body(t: u32, seq: u64) -> Vec<u8> {
    let len = 16 + (seq as usize * 37 + t as usize * 11) % 2000;
    let mut b = format!("t{t}-s{seq}-").into_bytes();
    b.resize(len, (seq % 251) as u8);
    b
}

/// The child: runs only when the parent sets RMQ_KILL_CHILD_DIR.
#[test]
#[ignore = "run as a child process by kill_9_never_loses_acknowledged_records"]
fn child_writer() {
    let Some(dir) = std::env::var_os("RMQ_KILL_CHILD_DIR") else {
        return;
    };
    let round: u32 = std::env::var("RMQ_KILL_ROUND")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(0);
    let store = MessageStore::open(config(Path::new(&dir))).expect("open store");
    let out = Arc::new(Mutex::new(std::io::stdout()));
    let deadline = Instant::now() + Duration::from_secs(20);
    let threads: Vec<_> = (0..4u32)
        .map(|t| {
            let (store, out) = (store.clone(), out.clone());
            std::thread::spawn(move || {
                let tid = round * 4 + t;
                let mut seq = 0u64;
                while Instant::now() < deadline {
                    let props = format!("KEYS\u{1}k{tid}-{seq}\u{2}TAGS\u{1}T{t}");
                    let m = MessageToStore::new("KILL", t as i32, &body(tid, seq), &props);
                    let r = store.put_message(&m).expect("put");
                    if r.status == PutStatus::PutOk {
                        let s = &r.messages[0];
                        let mut o = out.lock().unwrap_or_else(|e| e.into_inner());
                        let _ = writeln!(
                            o,
                            "ACK {tid} {seq} {} {} {} {}",
                            s.physical_offset, s.size, t, s.queue_offset
                        );
                        let _ = o.flush();
                    }
                    seq += 1;
                }
            })
        })
        .collect();
    for t in threads {
        let _ = t.join();
    }
}

#[test]
fn kill_9_never_loses_acknowledged_records() {
    let dir = tempfile::tempdir().unwrap();
    let exe = std::env::current_exe().unwrap();
    let mut rng = rand::thread_rng();
    let mut all_acked: Vec<(u32, u64, u64, u32, i32, u64)> = Vec::new();
    let rounds = 8;
    for round in 0..rounds {
        let mut child = Command::new(&exe)
            .args([
                "--ignored",
                "--exact",
                "child_writer",
                "--nocapture",
                "--test-threads=1",
            ])
            .env("RMQ_KILL_CHILD_DIR", dir.path())
            .env("RMQ_KILL_ROUND", round.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let acked = Arc::new(Mutex::new(Vec::new()));
        let reader = {
            let acked = acked.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                    let f: Vec<&str> = line.split_whitespace().collect();
                    if f.len() == 7 && f[0] == "ACK" {
                        let p = |i: usize| f[i].parse::<u64>().unwrap();
                        acked.lock().unwrap().push((
                            p(1) as u32,
                            p(2),
                            p(3),
                            p(4) as u32,
                            p(5) as i32,
                            p(6),
                        ));
                    }
                }
            })
        };
        // Wait for the child to start acknowledging, then kill it at a random moment.
        let started = Instant::now();
        while acked.lock().unwrap().is_empty() && started.elapsed() < Duration::from_secs(15) {
            std::thread::sleep(Duration::from_millis(5));
        }
        std::thread::sleep(Duration::from_millis(rng.gen_range(20..300)));
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        reader.join().unwrap();
        let acked = std::mem::take(&mut *acked.lock().unwrap());
        assert!(
            !acked.is_empty(),
            "round {round}: child acknowledged nothing"
        );
        all_acked.extend(acked);

        let store = MessageStore::open(config(dir.path())).unwrap();
        assert!(!store.was_clean_shutdown());
        for (tid, seq, off, size, queue, qoff) in &all_acked {
            // The consume queue finds it at its queue offset.
            let got = store.get_messages("KILL", *queue, *qoff, 1, &engine::AcceptAll);
            assert_eq!(
                got.messages.len(),
                1,
                "round {round}: queue {queue} offset {qoff} missing"
            );
            assert_eq!(
                got.messages[0].offset(),
                *off,
                "round {round}: queue {queue} offset {qoff}"
            );
            let by_key = store.query_by_key("KILL", &format!("k{tid}-{seq}"), 4, 0, i64::MAX);
            assert_eq!(
                by_key.iter().map(|m| m.offset()).collect::<Vec<_>>(),
                vec![*off],
                "round {round}: index"
            );
            let rec = store
                .read_record(*off)
                .unwrap_or_else(|| panic!("round {round}: acked record at {off} missing"));
            assert_eq!(rec.as_bytes().len(), *size as usize);
            let Decoded::Message(v) = record::decode(rec.as_bytes(), true) else {
                panic!("round {round}: acked record at {off} does not decode")
            };
            assert_eq!(
                v.body,
                &body(*tid, *seq)[..],
                "round {round}: body at {off}"
            );
        }
        check_derived_against_commit_log(&store, round);
        store.shutdown().unwrap();
    }
}

/// Every record in the commit log has exactly one consume-queue entry at its
/// QUEUEOFFSET, pointing back at it, and every key is found in the index.
fn check_derived_against_commit_log(store: &MessageStore, round: u32) {
    let mut per_queue: std::collections::HashMap<i32, u64> = Default::default();
    for f in store.commit_log().files() {
        let data = f.whole();
        let mut pos = 0;
        while let Decoded::Message(v) = record::decode(&data[pos..], false) {
            let q = v.queue_id;
            let expect = per_queue.entry(q).or_insert(0);
            assert_eq!(
                v.queue_offset as u64, *expect,
                "round {round}: queue {q} offsets not contiguous"
            );
            *expect += 1;
            let got = store.get_messages(v.topic, q, v.queue_offset as u64, 1, &engine::AcceptAll);
            assert_eq!(
                got.messages.first().map(|m| m.offset()),
                Some(v.physical_offset as u64)
            );
            pos += v.total_size();
        }
    }
    for (q, n) in per_queue {
        assert_eq!(
            store.max_queue_offset("KILL", q),
            n,
            "round {round}: queue {q} has extra or missing entries"
        );
    }
}
