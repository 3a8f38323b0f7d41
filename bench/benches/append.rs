//! `MessageStore::put_message` of 1 KiB records under ASYNC_FLUSH (the
//! append path alone: encode, lock, copy into the mapping, build the result).

use std::time::Duration;

use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use engine::{FlushDiskType, MessageStore, MessageToStore, StoreConfig};

fn append(c: &mut Criterion) {
    let tmp = tempfile::Builder::new()
        .prefix("rmq-bench-criterion-")
        .tempdir_in(
            std::env::var_os("RMQ_BENCH_DIR")
                .unwrap_or_else(|| std::env::temp_dir().into_os_string()),
        )
        .expect("temp dir");
    let config = StoreConfig {
        store_path_root_dir: tmp.path().to_path_buf(),
        flush_disk_type: FlushDiskType::AsyncFlush,
        warm_maped_file_enable: false,
        allocate_next_file: true,
        mapped_file_size_commit_log: 1 << 30,
        ..StoreConfig::default()
    };
    let store = MessageStore::open(config).expect("open store");
    let msg = MessageToStore::new("BenchTopic", 0, &vec![7u8; 1024], "");
    store.put_message(&msg).expect("first put");
    let mut g = c.benchmark_group("put_message");
    g.throughput(Throughput::Elements(1));
    g.measurement_time(Duration::from_secs(3));
    g.bench_function("async_flush_1KiB", |b| {
        b.iter(|| black_box(store.put_message(black_box(&msg)).expect("put")))
    });
    g.finish();
    store.shutdown().expect("shutdown");
}

criterion_group!(benches, append);
criterion_main!(benches);
