//! `MessageStore::get_messages` of 32 messages from one queue (the store call
//! behind a PULL), reading through the queue in order, records in page cache;
//! and the same read through an SQL92 filter (half the messages match), next
//! to the selector's evaluation alone.

use std::sync::Arc;
use std::time::Duration;

use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use engine::{
    AcceptAll, FlushDiskType, GetMessageStatus, MessageStore, MessageToStore, StoreConfig,
};
use frontends::broker::filter::{Selector, SqlFilter};

const MESSAGES: u64 = 100_000;

fn read(c: &mut Criterion) {
    let tmp = tempfile::Builder::new()
        .prefix("rmq-bench-criterion-read-")
        .tempdir_in(
            std::env::var_os("RMQ_BENCH_DIR")
                .unwrap_or_else(|| std::env::temp_dir().into_os_string()),
        )
        .expect("temp dir");
    let config = StoreConfig {
        store_path_root_dir: tmp.path().to_path_buf(),
        flush_disk_type: FlushDiskType::AsyncFlush,
        mapped_file_size_commit_log: 256 << 20,
        ..StoreConfig::default()
    };
    let store = MessageStore::open(config).expect("open store");
    let msg = MessageToStore::new("BenchTopic", 0, &vec![7u8; 1024], "");
    for i in 0..MESSAGES {
        store.put_message(&msg).expect("put");
        let props = format!(
            "TAGS\u{1}TagA\u{2}KEYS\u{1}k{i}\u{2}a\u{1}{}\u{2}color\u{1}red",
            i % 10
        );
        let with_props = MessageToStore::new("SqlTopic", 0, &vec![7u8; 1024], &props);
        store.put_message(&with_props).expect("put");
    }
    while store.dispatched_offset() < store.max_offset() {
        std::thread::sleep(Duration::from_millis(1));
    }
    let mut g = c.benchmark_group("get_messages");
    g.throughput(Throughput::Elements(32));
    g.measurement_time(Duration::from_secs(3));
    let mut offset = 0u64;
    g.bench_function("sequential_32x1KiB", |b| {
        b.iter(|| {
            let r = store.get_messages("BenchTopic", 0, offset, 32, &AcceptAll);
            debug_assert_eq!(r.status, GetMessageStatus::Found);
            offset = if r.next_begin_offset >= MESSAGES {
                0
            } else {
                r.next_begin_offset
            };
            black_box(r)
        })
    });
    let selector = Arc::new(
        Selector::compile("a BETWEEN 2 AND 6 AND color = 'red' OR a IN ('7')").expect("compiles"),
    );
    for (name, filter) in [
        ("sql_topic_accept_all_32x1KiB", None),
        ("sql_topic_sql92_32x1KiB", Some(SqlFilter(selector.clone()))),
    ] {
        let mut offset = 0u64;
        g.bench_function(name, |b| {
            b.iter(|| {
                let r = match &filter {
                    Some(f) => store.get_messages("SqlTopic", 0, offset, 32, f),
                    None => store.get_messages("SqlTopic", 0, offset, 32, &AcceptAll),
                };
                offset = if r.next_begin_offset >= MESSAGES {
                    0
                } else {
                    r.next_begin_offset
                };
                black_box(r)
            })
        });
    }
    g.finish();
    let mut g = c.benchmark_group("sql92");
    g.throughput(Throughput::Elements(1));
    let props = "TAGS\u{1}TagA\u{2}KEYS\u{1}k1\u{2}a\u{1}4\u{2}color\u{1}red";
    g.bench_function("evaluate_one_message", |b| {
        b.iter(|| black_box(selector.matches(black_box(props))))
    });
    g.bench_function("compile", |b| {
        b.iter(|| {
            black_box(Selector::compile(black_box(
                "a BETWEEN 2 AND 6 AND color = 'red' OR a IN ('7')",
            )))
        })
    });
    g.finish();
    store.shutdown().expect("shutdown");
}

criterion_group!(benches, read);
criterion_main!(benches);
