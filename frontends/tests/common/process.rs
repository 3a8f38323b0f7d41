//! A real `rmq-broker` process on run-time loopback ports, killed when
//! dropped (also when the test fails).

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

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
            .stdout(Stdio::piped());
        // Its log, shown if it never gets ready.
        let log = tempfile::NamedTempFile::new().expect("broker log file");
        match log.reopen() {
            Ok(f) => cmd.stderr(Stdio::from(f)),
            Err(_) => cmd.stderr(Stdio::null()),
        };
        let mut child = cmd.spawn().expect("spawn rmq-broker");
        let line = ready_line(&mut child, "rmq-broker ready", T);
        // Owned from here on, so a failed wait still kills the child.
        let mut proc = BrokerProcess {
            child,
            addr: String::new(),
        };
        let Some(line) = line else {
            let said = std::fs::read_to_string(log.path()).unwrap_or_default();
            let tail: Vec<&str> = said.lines().rev().take(20).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            panic!(
                "no rmq-broker ready banner within {T:?}; its stderr ends:\n{}",
                tail.join("\n")
            );
        };
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

/// Waits (bounded by `within`) for the first stdout line of `child` that
/// contains `marker` and returns it; `None` if none came in time. Takes the
/// child's piped stdout and keeps draining it on a thread, so the child never
/// blocks on a full pipe.
pub fn ready_line(child: &mut Child, marker: &'static str, within: Duration) -> Option<String> {
    let stdout = child.stdout.take()?;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if line.contains(marker) {
                let _ = tx.send(line);
            }
        }
    });
    rx.recv_timeout(within).ok()
}

impl Drop for BrokerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
