//! A real `rmq-broker` process on run-time loopback ports, killed when
//! dropped (also when the test fails).

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

use super::T;

pub struct BrokerProcess {
    child: Child,
    /// `127.0.0.1:listenPort`, from the ready banner.
    pub addr: String,
}

impl BrokerProcess {
    /// Starts the binary on `store` with the test file sizes of
    /// [`super::settings`] plus `extra` `key=value` overrides, and waits
    /// (bounded) for its ready banner.
    pub fn start(store: &Path, namesrv: &str, port: u16, extra: &[&str]) -> BrokerProcess {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_rmq-broker"));
        cmd.arg("-n")
            .arg(namesrv)
            .arg(format!("listenPort={port}"))
            .arg("brokerIP1=127.0.0.1")
            .arg("bindAddress=127.0.0.1")
            .arg("brokerName=broker-test")
            .arg(format!("storePathRootDir={}", store.display()))
            .arg("mappedFileSizeCommitLog=16777216")
            .arg("mappedFileSizeConsumeQueue=60000")
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        let mut child = cmd.spawn().expect("spawn rmq-broker");
        let stdout = child.stdout.take().expect("piped stdout");
        let mut proc = BrokerProcess {
            child,
            addr: String::new(),
        };
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if line.contains("rmq-broker ready") {
                    let _ = tx.send(line);
                }
            }
        });
        let line = rx.recv_timeout(T).expect("rmq-broker ready banner");
        let addr = line
            .split("listening on ")
            .nth(1)
            .and_then(|s| s.split_whitespace().next())
            .expect("address in banner");
        proc.addr = addr.to_string();
        proc
    }

    /// SIGKILL, and wait for the process to be gone.
    pub fn kill9(mut self) {
        self.child.kill().expect("SIGKILL");
        self.child.wait().expect("reaped");
    }
}

impl Drop for BrokerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
