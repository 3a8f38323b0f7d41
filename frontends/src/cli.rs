//! What the `rmq-broker` and `rmq-namesrv` binaries share: logging set-up,
//! signal handling and the start-up banner's address.

use std::net::SocketAddr;
use std::process::ExitCode;

use tokio::signal::unix::{signal, Signal, SignalKind};

/// Logs to stderr, filtered by `RUST_LOG` (default `info`).
pub fn init_logging() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
}

/// Turns a binary's result into its exit code, printing the error.
pub fn exit_code(program: &str, result: Result<(), Box<dyn std::error::Error>>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{program}: {e}");
            ExitCode::FAILURE
        }
    }
}

/// SIGINT/SIGTERM handlers, installed before the server announces itself so
/// that a signal sent right after the banner stops it cleanly.
pub struct StopSignals {
    term: Signal,
    int: Signal,
}

impl StopSignals {
    /// Installs the handlers; call inside the tokio runtime.
    pub fn install() -> std::io::Result<Self> {
        Ok(StopSignals {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
        })
    }

    /// Waits for SIGINT or SIGTERM.
    pub async fn wait(mut self) {
        tokio::select! {
            _ = self.term.recv() => {}
            _ = self.int.recv() => {}
        }
        tracing::info!("signal received, shutting down");
    }
}

/// The address to print: a wildcard bind is shown as 127.0.0.1.
pub fn shown_addr(mut addr: SocketAddr) -> SocketAddr {
    if addr.ip().is_unspecified() {
        addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
    }
    addr
}
