//! Record encoding and body CRC micro-benchmarks.
//!
//! Consume-queue read benchmarks are not here yet: the consume queue is being
//! written by another engineer; add `benches/consume_queue.rs` once its API
//! settles.

use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use engine::MessageToStore;

const SIZES: &[usize] = &[128, 1024, 4096, 65536];

fn body(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i % 251) as u8).collect()
}

fn encode(c: &mut Criterion) {
    let mut g = c.benchmark_group("record_encode");
    for &n in SIZES {
        let msg = MessageToStore::new("BenchTopic", 3, &body(n), "TAGS\u{1}tagA\u{2}KEYS\u{1}k1");
        g.throughput(Throughput::Bytes(msg.encoded_len() as u64));
        let mut buf = Vec::with_capacity(msg.encoded_len());
        g.bench_with_input(BenchmarkId::from_parameter(n), &msg, |b, m| {
            b.iter(|| {
                buf.clear();
                black_box(m).encode_into(&mut buf);
                black_box(buf.len())
            })
        });
    }
    g.finish();
}

fn crc(c: &mut Criterion) {
    let mut g = c.benchmark_group("body_crc");
    for &n in SIZES {
        let data = body(n);
        g.throughput(Throughput::Bytes(n as u64));
        g.bench_with_input(BenchmarkId::new("crc32fast", n), &data, |b, d| {
            b.iter(|| crc32fast::hash(black_box(d)))
        });
        g.bench_with_input(
            BenchmarkId::new("engine::record::body_crc", n),
            &data,
            |b, d| b.iter(|| engine::record::body_crc(black_box(d))),
        );
    }
    g.finish();
}

criterion_group!(benches, encode, crc);
criterion_main!(benches);
