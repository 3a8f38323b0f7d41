//! The binaries' command lines (as `mqbroker` / `mqnamesrv` 4.9 take them)
//! and start-up conditions that must be clear errors, not panics.

mod common;

use std::process::{Command, Output};

use frontends::broker::{Broker, StartError};

/// Runs a binary that is expected to exit on its own (printing or refusing),
/// with no name server in the environment.
fn run(bin: &str, args: &[&str]) -> Output {
    Command::new(bin)
        .args(args)
        .env_remove("NAMESRV_ADDR")
        .output()
        .expect("run binary")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

const BROKER: &str = env!("CARGO_BIN_EXE_rmq-broker");
const NAMESRV: &str = env!("CARGO_BIN_EXE_rmq-namesrv");

#[test]
fn broker_m_prints_only_the_important_keys() {
    let out = run(BROKER, &["-n", "127.0.0.1:9876", "-m"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    let keys: Vec<&str> = text
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, _)| k)
        .collect();
    for k in [
        "namesrvAddr",
        "brokerName",
        "brokerId",
        "storePathRootDir",
        "brokerRole",
        "flushDiskType",
        "deleteWhen",
    ] {
        assert!(keys.contains(&k), "{k} missing from -m: {text}");
    }
    assert!(!keys.contains(&"serverWorkerThreads"), "{text}");
    assert!(text.contains("namesrvAddr=127.0.0.1:9876\n"), "{text}");
    // -p prints everything.
    let all = stdout(&run(BROKER, &["-n", "127.0.0.1:9876", "-p"]));
    assert!(all.lines().count() > keys.len(), "{all}");
}

#[test]
fn broker_takes_mqbrokers_long_options() {
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("broker.conf");
    std::fs::write(&conf, "brokerName=from-file\n").unwrap();
    let conf = conf.display().to_string();
    let out = run(
        BROKER,
        &[
            "--configFile",
            &conf,
            "--namesrvAddr",
            "127.0.0.1:9876",
            "--printConfigItem",
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.contains("brokerName=from-file\n"), "{text}");
    let out = run(BROKER, &["--configFile", &conf, "--printImportantConfig"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("brokerName=from-file\n"));
}

#[test]
fn namesrv_takes_mqnamesrvs_options() {
    // mqnamesrv accepts -n (and ignores it: the name server has no use for
    // a name server address) as well as --configFile / --printConfigItem.
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("namesrv.conf");
    std::fs::write(
        &conf,
        "listenPort=19876\nserverWorkerThreads=8\nrocketmqHome=/opt/rocketmq\n",
    )
    .unwrap();
    let conf = conf.display().to_string();
    let out = run(
        NAMESRV,
        &[
            "-n",
            "127.0.0.1:9876",
            "--configFile",
            &conf,
            "--printConfigItem",
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("listenPort=19876\n"),
        "{}",
        stdout(&out)
    );
    // RocketMQ's NamesrvConfig / NettyServerConfig keys are not unknown.
    assert!(
        !stderr(&out).contains("unknown config key"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn the_conf_files_load_without_warnings() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../conf");
    let mut files = vec![root.join("broker.conf")];
    for layout in ["2m-noslave", "2m-2s-async", "2m-2s-sync"] {
        for entry in std::fs::read_dir(root.join(layout)).unwrap() {
            files.push(entry.unwrap().path());
        }
    }
    assert!(files.len() >= 11, "{files:?}");
    for f in &files {
        let out = run(BROKER, &["-c", &f.display().to_string(), "-p"]);
        assert!(out.status.success(), "{}: {}", f.display(), stderr(&out));
        assert!(
            !stderr(&out).contains("WARN"),
            "{}: {}",
            f.display(),
            stderr(&out)
        );
        let name = f.file_stem().unwrap().to_string_lossy().into_owned();
        let text = stdout(&out);
        if name.ends_with("-s") {
            assert!(
                text.contains("brokerRole=SLAVE\n") && text.contains("brokerId=1\n"),
                "{name}"
            );
        } else {
            assert!(text.contains("brokerId=0\n"), "{name}");
        }
    }
    let out = run(
        NAMESRV,
        &["-c", &root.join("namesrv.conf").display().to_string(), "-p"],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(!stderr(&out).contains("WARN"), "{}", stderr(&out));
}

#[test]
fn bad_start_up_conditions_exit_non_zero_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.conf").display().to_string();
    let cases: Vec<(Vec<String>, &str)> = vec![
        (vec!["-c".into(), missing.clone()], "missing.conf"),
        (
            vec!["-c".into(), dir.path().display().to_string()],
            "Is a directory",
        ),
        (
            vec!["brokerRole=SLAVE".into(), "brokerId=0".into()],
            "brokerId",
        ),
        (vec!["-n".into(), "127.0.0.1".into()], "namesrvAddr"),
        (vec!["listenPort=65535".into()], "listenPort"),
    ];
    for (args, says) in cases {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = run(BROKER, &args);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
        assert!(
            err.contains(says) && !err.contains("panicked"),
            "{args:?}: {err}"
        );
    }
}

/// A store root that is a file is named as the problem (it used to surface
/// as "consumerOffset.json holds no readable JSON ... remove it").
#[test]
fn a_store_root_that_is_not_a_directory_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("store");
    std::fs::write(&file, b"not a directory").unwrap();
    let port = common::free_port_pair();
    let ns: std::net::SocketAddr = "127.0.0.1:1".parse().unwrap();
    for root in [file.clone(), file.join("below")] {
        let settings = common::settings(&root, ns, port, &[]);
        let err = match Broker::open(settings) {
            Err(e) => e,
            Ok(_) => panic!("a broker opened on {}", root.display()),
        };
        assert!(matches!(err, StartError::StoreRoot { .. }), "{err}");
        let text = err.to_string();
        assert!(
            text.contains("storePathRootDir") && text.contains(&root.display().to_string()),
            "{text}"
        );
    }
    assert_eq!(std::fs::read(&file).unwrap(), b"not a directory");
    // A directory nothing can be created in (even by root).
    let root = std::path::Path::new("/proc/self");
    let err = match Broker::open(common::settings(root, ns, port, &[])) {
        Err(e) => e.to_string(),
        Ok(_) => panic!("a broker opened on /proc/self"),
    };
    assert!(err.contains("storePathRootDir /proc/self"), "{err}");
}

#[test]
fn namesrv_names_the_address_it_cannot_listen_on() {
    let held = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = held.local_addr().unwrap().port();
    let out = run(
        NAMESRV,
        &["listenAddr=127.0.0.1", &format!("listenPort={port}")],
    );
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains(&format!("127.0.0.1:{port}")), "{err}");
    let out = run(
        NAMESRV,
        &["listenAddr=no-such-host.invalid", "listenPort=0"],
    );
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("no-such-host.invalid"), "{err}");
}
