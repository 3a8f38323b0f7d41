//! Runs `rmq-bench produce` and `rmq-bench consume` against an in-process
//! name server and broker (frontends), and checks that consume finds every
//! produced message exactly once; then the latency mode, and `--spawn-broker`
//! when the server binaries have been built next to rmq-bench.

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use frontends::broker::{Broker, BrokerSettings};
use frontends::namesrv::NameServer;

const BIN: &str = env!("CARGO_BIN_EXE_rmq-bench");

fn settings(store: &Path, namesrv: SocketAddr, port: u16) -> BrokerSettings {
    let mut s = BrokerSettings::default();
    let args = vec![
        format!("listenPort={port}"),
        "brokerIP1=127.0.0.1".to_string(),
        "brokerName=bench-smoke".to_string(),
        format!("namesrvAddr={namesrv}"),
        format!("storePathRootDir={}", store.display()),
        "mappedFileSizeCommitLog=67108864".to_string(),
        "mappedFileSizeConsumeQueue=600000".to_string(),
    ];
    let props = engine::Properties::from_args(args).unwrap();
    let unknown = s.apply(&props).unwrap();
    assert!(unknown.is_empty(), "{unknown:?}");
    s
}

/// Runs rmq-bench with `args`, bounded in time.
fn run(args: &[&str], limit: Duration) -> Output {
    let mut child = Command::new(BIN)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn rmq-bench");
    let deadline = Instant::now() + limit;
    loop {
        if child.try_wait().expect("wait").is_some() {
            break;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!(
                "rmq-bench {args:?} did not finish within {limit:?}\nstdout:\n{}\nstderr:\n{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().expect("output")
}

fn ok(out: &Output, what: &str) -> String {
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "{what}: exit {}\nstdout:\n{stdout}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

fn json(path: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).expect("json file")).expect("valid JSON")
}

#[test]
fn produce_then_consume_finds_every_message_once() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::Builder::new()
        .prefix("rmq-bench-produce-smoke-")
        .tempdir_in(env!("CARGO_MANIFEST_DIR"))
        .expect("temp dir");
    let store = dir.path().join("store");
    let (ns, broker) = rt.block_on(async {
        let ns = NameServer::start("127.0.0.1:0").await.unwrap();
        let port = frontends::ports::free_port_pair().expect("free broker ports");
        let broker = Broker::start(settings(&store, ns.local_addr(), port))
            .await
            .unwrap();
        (ns, broker)
    });
    let nsaddr = ns.local_addr().to_string();
    let pj = dir.path().join("produce.json");
    let cj = dir.path().join("consume.json");
    let plot = dir.path().join("produce.svg");
    let common = [
        "--namesrv",
        nsaddr.as_str(),
        "--topic",
        "SmokeTopic",
        "--quiet",
    ];

    // Async, pipelined, two producers over a created 4-queue topic.
    let mut args: Vec<&str> = vec!["produce"];
    args.extend(common);
    args.extend([
        "--create-topic",
        "--queues",
        "4",
        "--seconds",
        "1",
        "--producers",
        "2",
    ]);
    args.extend(["--inflight", "16", "--size", "256"]);
    args.extend([
        "--json",
        pj.to_str().unwrap(),
        "--plot",
        plot.to_str().unwrap(),
    ]);
    let out = ok(&run(&args, Duration::from_secs(60)), "produce");
    assert!(out.contains("msg/s"), "{out}");
    let p = json(&pj);
    let r = &p["result"];
    assert!(r["messages"].as_u64().unwrap() > 0, "{p:#}");
    assert!(r["msgs_per_sec"].as_f64().unwrap() > 0.0, "{p:#}");
    assert!(r["latency"]["p99_us"].as_f64().unwrap() > 0.0, "{p:#}");
    assert_eq!(r["errors"].as_object().unwrap().len(), 0, "{p:#}");
    assert_eq!(p["write_queues"].as_array().unwrap().len(), 4);
    let sent: u64 = p["producer_reports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["sent"].as_u64().unwrap())
        .sum();
    assert_eq!(sent, r["ok_total"].as_u64().unwrap());
    assert!(std::fs::read_to_string(&plot).unwrap().starts_with("<svg"));
    assert!(r["timeline"].is_array(), "{r:#}");
    let tp = std::fs::read_to_string(dir.path().join("produce-throughput.svg")).unwrap();
    assert!(tp.starts_with("<svg") && tp.contains("<polyline"));

    // Consume everything and check it against the produce JSON.
    let mut args: Vec<&str> = vec!["consume"];
    args.extend(common);
    args.extend(["--idle-ms", "500", "--expect", pj.to_str().unwrap()]);
    args.extend(["--json", cj.to_str().unwrap()]);
    let out = ok(&run(&args, Duration::from_secs(60)), "consume");
    assert!(out.contains("exactly-once check"), "{out}");
    let c = json(&cj);
    let check = &c["checks"][0];
    assert_eq!(check["ok"], true, "{c:#}");
    assert_eq!(check["missing"], 0, "{c:#}");
    assert_eq!(check["duplicates"], 0, "{c:#}");
    assert_eq!(check["expected"].as_u64().unwrap(), sent, "{c:#}");
    assert_eq!(check["found"].as_u64().unwrap(), sent, "{c:#}");
    assert_eq!(c["bench_messages"].as_u64().unwrap(), sent, "{c:#}");

    // A sync run and a oneway run, then the inferred check over all runs.
    let mut args: Vec<&str> = vec!["produce"];
    args.extend(common);
    args.extend(["--mode", "sync", "--messages", "200", "--seconds", "5"]);
    let out = ok(&run(&args, Duration::from_secs(60)), "produce sync");
    assert!(out.contains("sync"), "{out}");
    let mut args: Vec<&str> = vec!["produce"];
    args.extend(common);
    args.extend(["--mode", "oneway", "--messages", "300", "--inflight", "8"]);
    ok(&run(&args, Duration::from_secs(60)), "produce oneway");
    let mut args: Vec<&str> = vec!["consume"];
    args.extend(common);
    args.extend(["--idle-ms", "500", "--json", cj.to_str().unwrap()]);
    ok(&run(&args, Duration::from_secs(60)), "consume all runs");
    let c = json(&cj);
    let checks = c["checks"].as_array().unwrap();
    assert_eq!(checks.len(), 3, "{c:#}");
    assert!(checks.iter().all(|x| x["ok"] == true), "{c:#}");
    // 200 sync + 300 oneway + the oneway run's final answered request.
    assert_eq!(c["bench_messages"].as_u64().unwrap(), sent + 501, "{c:#}");

    // Latency mode: long-polling consumers, a light producer.
    let mut args: Vec<&str> = vec!["consume"];
    args.extend(common);
    args.extend([
        "--latency",
        "--rate",
        "200",
        "--seconds",
        "1",
        "--json",
        cj.to_str().unwrap(),
    ]);
    let out = ok(&run(&args, Duration::from_secs(60)), "consume --latency");
    assert!(out.contains("p99"), "{out}");
    let c = json(&cj);
    let l = &c["latency"];
    assert!(l["received"].as_u64().unwrap() > 0, "{c:#}");
    assert_eq!(l["received"], l["sent"], "{c:#}");
    assert!(l["latency"]["p50_us"].as_f64().unwrap() > 0.0, "{c:#}");

    rt.block_on(async {
        tokio::time::timeout(Duration::from_secs(15), broker.shutdown())
            .await
            .expect("broker stops");
        tokio::time::timeout(Duration::from_secs(15), ns.shutdown())
            .await
            .expect("namesrv stops");
    });
}

#[test]
fn spawn_broker_when_binaries_are_built() {
    let dir = Path::new(BIN).parent().unwrap();
    if !dir.join("rmq-broker").is_file() || !dir.join("rmq-namesrv").is_file() {
        eprintln!(
            "skipped: rmq-broker/rmq-namesrv not built in {} (cargo build --release --bins)",
            dir.display()
        );
        return;
    }
    let out = run(
        &["produce", "--spawn-broker", "--seconds", "0.5", "--quiet"],
        Duration::from_secs(90),
    );
    let stdout = ok(&out, "produce --spawn-broker");
    assert!(stdout.contains("msg/s"), "{stdout}");
    assert!(stdout.contains("RssAnon"), "{stdout}");

    // A SYNC_MASTER with a spawned slave: every send acknowledged, lag reported.
    let out = run(
        &[
            "produce",
            "--spawn-broker",
            "brokerRole=SYNC_MASTER",
            "--spawn-slave",
            "--seconds",
            "0.5",
            "--quiet",
        ],
        Duration::from_secs(90),
    );
    let stdout = ok(&out, "produce --spawn-slave");
    assert!(stdout.contains("slave: "), "{stdout}");
    assert!(!stdout.contains("errors by response code"), "{stdout}");
}
