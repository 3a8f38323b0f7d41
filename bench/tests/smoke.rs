//! Runs `rmq-bench flush` briefly and checks its JSON output.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[test]
fn flush_smoke_writes_json_with_counts() {
    let dir = tempfile::Builder::new()
        .prefix("rmq-bench-smoke-")
        .tempdir_in(env!("CARGO_MANIFEST_DIR"))
        .expect("temp dir");
    let json = dir.path().join("out.json");
    let plot = dir.path().join("out.svg");
    let mut child = Command::new(env!("CARGO_BIN_EXE_rmq-bench"))
        .args([
            "flush",
            "--seconds",
            "0.3",
            "--size",
            "1024",
            "--writers",
            "1,4",
        ])
        .args([
            "--mechanism",
            "FDATASYNC",
            "--warm",
            "off",
            "--file-size",
            "8MiB",
        ])
        .args([
            "--roll-file-size",
            "1MiB",
            "--disk-samples",
            "30",
            "--seq-mib",
            "4",
            "--quiet",
        ])
        .arg("--dir")
        .arg(dir.path())
        .arg("--json")
        .arg(&json)
        .arg("--plot")
        .arg(&plot)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn rmq-bench");
    let deadline = Instant::now() + Duration::from_secs(180);
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait") {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("rmq-bench flush did not finish within 180 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let out = child.wait_with_output().expect("output");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        status.success(),
        "exit {status}\nstdout:\n{stdout}\nstderr:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("msg/s"), "no table printed:\n{stdout}");

    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).expect("json file"))
            .expect("valid JSON");
    let runs = v["runs"].as_array().expect("runs array");
    // ASYNC_FLUSH/FDATASYNC and SYNC_FLUSH/FDATASYNC, allocator on and off, W = 1 and 4.
    assert_eq!(runs.len(), 8, "{v:#}");
    for r in runs {
        assert!(r["messages"].as_u64().unwrap() > 0, "{r:#}");
        assert!(r["msgs_per_sec"].as_f64().unwrap() > 0.0, "{r:#}");
        assert!(r["latency"]["p50_us"].as_f64().unwrap() > 0.0, "{r:#}");
        assert_eq!(r["errors"].as_u64(), Some(0), "{r:#}");
    }
    let rolls = v["roll_runs"].as_array().expect("roll_runs array");
    assert_eq!(rolls.len(), 2);
    assert!(rolls.iter().all(|r| r["messages"].as_u64().unwrap() > 0));
    assert!(v["disk"]["append_fdatasync"]["count"].as_u64().unwrap() > 0);
    assert!(std::fs::read_to_string(&plot)
        .expect("svg")
        .starts_with("<svg"));
    // Throughput over time: beside the latency plot, one series per run.
    let runs_n = runs.len() + rolls.len();
    assert!(runs.iter().all(|r| r["timeline"].is_array()), "{v:#}");
    let tp =
        std::fs::read_to_string(dir.path().join("out-throughput.svg")).expect("throughput svg");
    assert!(tp.starts_with("<svg"));
    assert_eq!(tp.matches("<polyline").count(), runs_n);
}

#[test]
fn read_smoke_writes_json_with_counts() {
    let dir = tempfile::Builder::new()
        .prefix("rmq-bench-smoke-read-")
        .tempdir_in(env!("CARGO_MANIFEST_DIR"))
        .expect("temp dir");
    let json = dir.path().join("read.json");
    let mut child = Command::new(env!("CARGO_BIN_EXE_rmq-bench"))
        .args(["read", "--messages", "3000", "--queues", "3"])
        .args(["--random-reads", "2000", "--lag-seconds", "0.2"])
        .args(["--writers", "2", "--file-size", "1MiB", "--quiet"])
        .arg("--dir")
        .arg(dir.path())
        .arg("--json")
        .arg(&json)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn rmq-bench");
    let deadline = Instant::now() + Duration::from_secs(120);
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait") {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("rmq-bench read did not finish within 120 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let out = child.wait_with_output().expect("output");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        status.success(),
        "exit {status}\nstdout:\n{stdout}\nstderr:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("sequential get_messages(32)"), "{stdout}");
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).expect("json file"))
            .expect("valid JSON");
    assert_eq!(v["messages"].as_u64(), Some(3000), "{v:#}");
    // Every stored message is read back once, in 32-message batches.
    assert_eq!(
        v["sequential"]["throughput"]["messages"].as_u64(),
        Some(3000)
    );
    assert!(
        v["sequential"]["throughput"]["mb_per_sec"]
            .as_f64()
            .unwrap()
            > 0.0
    );
    assert_eq!(v["random"]["reads"].as_u64(), Some(2000));
    assert_eq!(v["random"]["misses"].as_u64(), Some(0));
    assert!(v["random"]["latency"]["p50_us"].as_f64().unwrap() > 0.0);
    assert!(v["dispatch_lag"]["appends"]["messages"].as_u64().unwrap() > 0);
    assert!(v["dispatch_lag"]["samples"].as_u64().unwrap() > 0);
}
