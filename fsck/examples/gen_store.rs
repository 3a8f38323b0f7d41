//! Writes a store of about `SIZE_MIB` MiB with the engine (ASYNC_FLUSH,
//! 256 KiB bodies, default 1 GiB commit log files) for the speed report.
//!
//! `cargo run --release -p fsck --example gen_store -- /work/fsck-bench/store 2048`

use engine::{MessageStore, MessageToStore, StoreConfig};

fn main() {
    let mut args = std::env::args().skip(1);
    let root = std::path::PathBuf::from(args.next().expect("STORE_DIR"));
    let mib: u64 = args
        .next()
        .map(|s| s.parse().expect("SIZE_MIB"))
        .unwrap_or(2048);
    let config = StoreConfig {
        store_path_root_dir: root,
        ..Default::default()
    };
    let store = MessageStore::open(config).expect("open");
    let body_len = 256 * 1024;
    let n = mib * 1024 * 1024 / body_len as u64;
    let t0 = std::time::Instant::now();
    for i in 0..n {
        let body: Vec<u8> = (0..body_len)
            .map(|j| (i as usize * 7 + j * 13) as u8)
            .collect();
        let props = format!(
            "KEYS\u{1}k{i}\u{2}TAGS\u{1}t{}\u{2}UNIQ_KEY\u{1}U{i:010}",
            i % 8
        );
        let m = MessageToStore::new(&format!("Bench{}", i % 4), (i % 4) as i32, &body, &props);
        store.put_message(&m).expect("put");
    }
    store.shutdown().expect("shutdown");
    eprintln!("wrote {n} messages in {:.1} s", t0.elapsed().as_secs_f64());
}
