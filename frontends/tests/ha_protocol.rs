//! The HA wire protocol byte by byte (cluster.md §4), each side against a
//! hand-written peer: a fake slave talks to a real master's HA port, a fake
//! master feeds a real slave.

mod common;

use std::time::{Duration, Instant};

use engine::config::StoreConfig;
use engine::record::MessageToStore;
use engine::{AcceptAll, BrokerRole, GetMessageStatus, MessageStore};
use frontends::remoting::codes::response;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::timeout;

use common::T;

async fn read_header(s: &mut TcpStream) -> (u64, usize) {
    let mut h = [0u8; 12];
    timeout(T, s.read_exact(&mut h))
        .await
        .expect("bounded")
        .expect("frame header");
    let offset = i64::from_be_bytes(h[..8].try_into().unwrap());
    let size = i32::from_be_bytes(h[8..].try_into().unwrap());
    assert!(offset >= 0 && size >= 0, "header {h:?}");
    (offset as u64, size as usize)
}

async fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + T;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn master_streams_frames_heartbeats_and_drops_a_silent_slave() {
    let dir = tempfile::tempdir().unwrap();
    let env = common::start(
        dir.path(),
        &["haSendHeartbeatInterval=300", "haHousekeepingInterval=1500"],
    )
    .await;
    for i in 0..200 {
        let body = vec![b'a' + (i % 26) as u8; 100 + i * 7];
        let r = env
            .call(common::send_v2("HaWire", 0, &body, "WAIT\u{1}true"))
            .await;
        assert_eq!(r.code, response::SUCCESS);
    }
    let store = env.broker.broker().store.clone();
    let max = store.max_offset();
    assert!(max > 64 * 1024, "more than two batches: {max}");
    let ha = env.broker.ha_addr().expect("a master listens for slaves");
    let mut slave = TcpStream::connect(("127.0.0.1", ha.port())).await.unwrap();
    eventually("the connection counted", || {
        store.replication().connected_slaves() == 1
    })
    .await;

    // An empty slave reports 0; the master streams from its last file's
    // start (here 0) in frames of at most haTransferBatchSize (32 KiB).
    slave.write_all(&0i64.to_be_bytes()).await.unwrap();
    let mut next = 0u64;
    let mut frames = 0;
    while next < max {
        let (offset, size) = read_header(&mut slave).await;
        if size == 0 {
            continue; // a heartbeat
        }
        assert_eq!(offset, next, "frames are contiguous");
        assert!(size <= 32 * 1024, "frame of {size} bytes");
        let mut body = vec![0u8; size];
        slave.read_exact(&mut body).await.unwrap();
        let ours = store.read_for_transfer(offset, size as u64).unwrap();
        assert_eq!(body, ours.as_bytes(), "frame at {offset}");
        next += size as u64;
        frames += 1;
    }
    assert_eq!(next, max);
    assert!(frames >= 3);

    // Idle: a header-only heartbeat carrying the next offset.
    let t = Instant::now();
    let (offset, size) = read_header(&mut slave).await;
    assert_eq!((offset, size), (max, 0));
    assert!(t.elapsed() < Duration::from_secs(2));

    // A report is an acknowledgement.
    assert!(store.replication().acked_offset() < max);
    slave.write_all(&(max as i64).to_be_bytes()).await.unwrap();
    eventually("the ack recorded", || {
        store.replication().acked_offset() == max
    })
    .await;

    // Silent for haHousekeepingInterval: the master hangs up.
    let t = Instant::now();
    let mut sink = vec![0u8; 4096];
    loop {
        match timeout(T, slave.read(&mut sink)).await.expect("bounded") {
            Ok(0) | Err(_) => break,
            Ok(_) => {} // heartbeats meanwhile
        }
    }
    assert!(
        t.elapsed() >= Duration::from_millis(1000),
        "closed too early"
    );
    eventually("the connection uncounted", || {
        store.replication().connected_slaves() == 0
    })
    .await;
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slave_appends_frames_reports_and_rejects_a_wrong_offset() {
    // The bytes a master would send: another store's commit log.
    let src_dir = tempfile::tempdir().unwrap();
    let source = MessageStore::open(StoreConfig {
        store_path_root_dir: src_dir.path().to_path_buf(),
        mapped_file_size_commit_log: 16 * 1024 * 1024,
        ..StoreConfig::default()
    })
    .unwrap();
    for i in 0..100u32 {
        let body = format!("m{i}");
        source
            .put_message(&MessageToStore::new("Fed", 0, body.as_bytes(), ""))
            .unwrap();
    }
    let max = source.max_offset();
    let all = source.read_for_transfer(0, max).unwrap();
    let all = all.as_bytes();

    let master = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let master_addr = master.local_addr().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let ha_master = format!("haMasterAddress={master_addr}");
    let env = common::start(
        dir.path(),
        &[
            "brokerRole=SLAVE",
            "brokerId=1",
            &ha_master,
            "haSendHeartbeatInterval=300",
        ],
    )
    .await;
    let store = env.broker.broker().store.clone();
    let (mut conn, _) = timeout(T, master.accept()).await.unwrap().unwrap();

    // The first report comes at once: the slave's (empty) max offset.
    let mut report = [0u8; 8];
    let t = Instant::now();
    timeout(T, conn.read_exact(&mut report))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(i64::from_be_bytes(report), 0);
    assert!(t.elapsed() < Duration::from_secs(2));

    // Frames cut at arbitrary sizes (mid-record); each append is reported.
    let mut at = 0usize;
    while at < all.len() {
        let n = 777.min(all.len() - at);
        let mut frame = Vec::with_capacity(12 + n);
        frame.extend_from_slice(&(at as i64).to_be_bytes());
        frame.extend_from_slice(&(n as i32).to_be_bytes());
        frame.extend_from_slice(&all[at..at + n]);
        conn.write_all(&frame).await.unwrap();
        at += n;
        loop {
            timeout(T, conn.read_exact(&mut report))
                .await
                .unwrap()
                .unwrap();
            if i64::from_be_bytes(report) == at as i64 {
                break;
            }
        }
    }
    assert_eq!(store.max_offset(), max);
    let bytes = store.read_for_transfer(0, max).unwrap();
    assert_eq!(bytes.as_bytes(), all);
    eventually("dispatch", || store.dispatched_offset() >= max).await;
    assert_eq!(store.max_queue_offset("Fed", 0), 100);
    let got = store.get_messages("Fed", 0, 99, 8, &AcceptAll);
    assert_eq!(got.status, GetMessageStatus::Found);
    assert_eq!(got.messages.len(), 1);

    // With nothing new the slave still reports every haSendHeartbeatInterval.
    let t = Instant::now();
    timeout(T, conn.read_exact(&mut report))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(i64::from_be_bytes(report), max as i64);
    assert!(t.elapsed() < Duration::from_secs(2));

    // A frame for any other offset than its end: the slave hangs up.
    let mut frame = Vec::new();
    frame.extend_from_slice(&((max + 8) as i64).to_be_bytes());
    frame.extend_from_slice(&4i32.to_be_bytes());
    frame.extend_from_slice(&[1, 2, 3, 4]);
    conn.write_all(&frame).await.unwrap();
    let mut sink = [0u8; 64];
    loop {
        match timeout(T, conn.read(&mut sink)).await.expect("bounded") {
            Ok(0) | Err(_) => break,
            Ok(_) => {} // reports sent before it read the frame
        }
    }
    assert_eq!(store.max_offset(), max, "nothing appended");
    env.stop().await;
    source.shutdown().unwrap();
}

/// Reads (heartbeats, frames) until the master hangs up; false if it is
/// still talking after `within`.
async fn hung_up_within(s: &mut TcpStream, within: Duration) -> bool {
    let deadline = tokio::time::Instant::now() + within;
    let mut sink = vec![0u8; 64 * 1024];
    loop {
        match tokio::time::timeout_at(deadline, s.read(&mut sink)).await {
            Err(_) => return false,
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => {}
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn master_never_counts_an_ack_for_bytes_it_does_not_have() {
    let dir = tempfile::tempdir().unwrap();
    let env = common::start(
        dir.path(),
        &[
            "brokerRole=SYNC_MASTER",
            "slaveTimeout=300",
            "haSendHeartbeatInterval=200",
        ],
    )
    .await;
    for i in 0..20 {
        let r = env
            .call(common::send_v2(
                "HaAck",
                0,
                format!("m{i}").as_bytes(),
                "WAIT\u{1}false",
            ))
            .await;
        assert_eq!(r.code, response::SUCCESS);
    }
    let store = env.broker.broker().store.clone();
    let max = store.max_offset();
    let ha = env.broker.ha_addr().expect("a master listens for slaves");

    // A slave whose log is ahead of the master's (diverged, or lying): its
    // first report is no acknowledgement of anything the master holds.
    let mut ahead = TcpStream::connect(("127.0.0.1", ha.port())).await.unwrap();
    ahead
        .write_all(&((max + (1 << 20)) as i64).to_be_bytes())
        .await
        .unwrap();
    eventually("the report handled", || {
        store.replication().acked_offset() > max || store.replication().connected_slaves() == 0
    })
    .await;
    assert!(
        store.replication().acked_offset() <= max,
        "acknowledged {} of a log that ends at {max}",
        store.replication().acked_offset()
    );
    assert!(
        hung_up_within(&mut ahead, T).await,
        "a slave ahead of the master is dropped"
    );

    // A slave at the master's end that then acknowledges bytes it was never sent.
    let mut liar = TcpStream::connect(("127.0.0.1", ha.port())).await.unwrap();
    liar.write_all(&(max as i64).to_be_bytes()).await.unwrap();
    eventually("the first report recorded", || {
        store.replication().acked_offset() == max
    })
    .await;
    liar.write_all(&i64::MAX.to_be_bytes()).await.unwrap();
    eventually("the report handled", || {
        store.replication().acked_offset() > max || store.replication().connected_slaves() == 0
    })
    .await;
    assert_eq!(
        store.replication().acked_offset(),
        max,
        "an acknowledgement beyond what was sent counts"
    );
    assert!(
        hung_up_within(&mut liar, T).await,
        "a lying slave is dropped"
    );

    // No slave holds the next message: it is never SEND_OK.
    let r = env
        .call(common::send_v2(
            "HaAck",
            0,
            b"unreplicated",
            "WAIT\u{1}true",
        ))
        .await;
    assert_eq!(r.code, response::SLAVE_NOT_AVAILABLE);
    env.stop().await;
}

/// Commit log file size of the tests that need a log of several files.
const FILE: u64 = 64 * 1024;

/// A store in `dir` with `FILE`-sized commit log files, holding messages of
/// `topic` until its log is 1000 bytes into its third file.
fn log_into_third_file(dir: &std::path::Path, topic: &str) -> std::sync::Arc<MessageStore> {
    let store = MessageStore::open(StoreConfig {
        store_path_root_dir: dir.to_path_buf(),
        mapped_file_size_commit_log: FILE,
        ..StoreConfig::default()
    })
    .unwrap();
    while store.max_offset() < 2 * FILE + 1000 {
        store
            .put_message(&MessageToStore::new(topic, 0, &[b'm'; 500], ""))
            .unwrap();
    }
    store
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn master_drops_a_slave_behind_its_first_file() {
    // A log that reaches its third file.
    let src_dir = tempfile::tempdir().unwrap();
    let source = log_into_third_file(src_dir.path(), "Old");
    // A store holding that log from its second file on (as a slave that
    // started empty holds its master's last files), then run as a master:
    // its commit log starts at FILE.
    let dir = tempfile::tempdir().unwrap();
    let copy = MessageStore::open(StoreConfig {
        store_path_root_dir: dir.path().to_path_buf(),
        mapped_file_size_commit_log: FILE,
        mapped_file_size_consume_queue: 60_000,
        broker_role: BrokerRole::Slave,
        ..StoreConfig::default()
    })
    .unwrap();
    let mut at = FILE;
    while at < source.max_offset() {
        let s = source.read_for_transfer(at, 1 << 20).unwrap();
        copy.append_replicated(at, s.as_bytes()).unwrap();
        at += s.len();
    }
    copy.shutdown().unwrap();
    drop(copy);
    source.shutdown().unwrap();
    let env = common::start(
        dir.path(),
        &[
            "mappedFileSizeCommitLog=65536",
            "haSendHeartbeatInterval=200",
        ],
    )
    .await;
    let store = env.broker.broker().store.clone();
    assert_eq!(store.min_offset(), FILE);

    // A slave that needs bytes the master no longer has can never catch up:
    // the master says so by hanging up (it used to spin, heartbeating).
    let ha = env.broker.ha_addr().expect("a master listens for slaves");
    let mut slave = TcpStream::connect(("127.0.0.1", ha.port())).await.unwrap();
    slave.write_all(&100i64.to_be_bytes()).await.unwrap();
    assert!(
        hung_up_within(&mut slave, Duration::from_secs(3)).await,
        "the master keeps a slave it cannot serve"
    );
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slave_whose_log_holds_no_record_starts_where_the_master_streams() {
    // The master's log reaches its third file.
    let src_dir = tempfile::tempdir().unwrap();
    let source = log_into_third_file(src_dir.path(), "Late");
    let start = 2 * FILE;
    let tail = source.read_for_transfer(start, FILE).unwrap();
    let tail = tail.as_bytes().to_vec();

    // The slave's commit log is one file of zeros (prepared, never
    // written, left by a kill -9): its max offset is 0, it holds nothing.
    let dir = tempfile::tempdir().unwrap();
    let log_dir = dir.path().join("commitlog");
    std::fs::create_dir_all(&log_dir).unwrap();
    std::fs::File::create(log_dir.join("00000000000000000000"))
        .unwrap()
        .set_len(FILE)
        .unwrap();
    let master = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let ha_master = format!("haMasterAddress={}", master.local_addr().unwrap());
    let env = common::start(
        dir.path(),
        &[
            "brokerRole=SLAVE",
            "brokerId=1",
            &ha_master,
            "mappedFileSizeCommitLog=65536",
        ],
    )
    .await;
    let store = env.broker.broker().store.clone();
    let (mut conn, _) = timeout(T, master.accept()).await.unwrap().unwrap();
    let mut report = [0u8; 8];
    timeout(T, conn.read_exact(&mut report))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(i64::from_be_bytes(report), 0);

    // So the master streams from its last file, and the slave takes it.
    let mut frame = Vec::new();
    frame.extend_from_slice(&(start as i64).to_be_bytes());
    frame.extend_from_slice(&(tail.len() as i32).to_be_bytes());
    frame.extend_from_slice(&tail);
    conn.write_all(&frame).await.unwrap();
    let want = start + tail.len() as u64;
    loop {
        let read = timeout(T, conn.read_exact(&mut report)).await.unwrap();
        assert!(
            read.is_ok(),
            "the slave hung up instead of taking the frame at {start}"
        );
        if i64::from_be_bytes(report) == want as i64 {
            break;
        }
    }
    assert_eq!((store.min_offset(), store.max_offset()), (start, want));
    env.stop().await;
    source.shutdown().unwrap();
}
