//! The slave's HA client (Java's HAService.HAClient).
//!
//! Connects to the master's HA address — `haMasterAddress` when configured,
//! else the `haServerAddr` the name servers returned at registration — and
//! then, on one task:
//! * reports its commit log max offset at once (Java waits one
//!   `haSendHeartbeatInterval` after connecting before its first report,
//!   which is also when the master starts streaming; reporting at once
//!   changes nothing on the wire but those 5 s), again after every append
//!   that moved it, and at least every `haSendHeartbeatInterval`;
//! * appends every data frame at exactly its max offset
//!   ([`MessageStore::append_replicated`]); a frame for any other offset is
//!   a protocol error that drops the connection, and the next connection
//!   re-reports where the slave really is;
//! * closes the connection when no report could be written for
//!   `haHousekeepingInterval`, and after any failure reconnects every 5 s.

use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, BytesMut};
use engine::{MessageStore, StoreError};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::protocol::{self, FrameHeader, ProtocolError, HEADER_LEN};

/// Where the master's HA service is, asked before each connection attempt.
pub type MasterHaAddr = Arc<dyn Fn() -> Option<String> + Send + Sync>;

/// Pause after a failed or lost connection (Java: 5 s).
const RECONNECT_PAUSE: Duration = Duration::from_secs(5);
/// Pause while no master address is known (a local check, so shorter).
const NO_ADDRESS_PAUSE: Duration = Duration::from_secs(1);
/// Bound on connecting.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// Largest frame body we accept (Java's slave reads into a 4 MiB buffer).
const MAX_BODY: usize = 4 * 1024 * 1024;

/// Why a connection to the master ended.
#[derive(Debug, thiserror::Error)]
enum ConnectionEnd {
    #[error("master closed the connection")]
    Closed,
    #[error("network: {0}")]
    Io(#[from] std::io::Error),
    #[error("no report could be written for {0:?}")]
    ReportTimeout(Duration),
    #[error(transparent)]
    Protocol(#[from] ProtocolError),
    #[error("master sent offset {sent}, our commit log ends at {ours}")]
    WrongOffset { sent: u64, ours: u64 },
    #[error("store: {0}")]
    Store(#[from] StoreError),
    #[error("broker stopping")]
    Stopping,
}

/// The running HA client.
pub struct HaClient {
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl HaClient {
    /// Starts following the master whose address `master` gives.
    pub fn start(store: Arc<MessageStore>, master: MasterHaAddr) -> HaClient {
        let (stop, stop_rx) = watch::channel(false);
        let task = tokio::spawn(follow(store, master, stop_rx));
        HaClient { stop, task }
    }

    /// Closes the connection and stops reconnecting.
    pub async fn shutdown(self) {
        self.stop.send_replace(true);
        let _ = self.task.await;
    }
}

async fn follow(store: Arc<MessageStore>, master: MasterHaAddr, mut stop: watch::Receiver<bool>) {
    loop {
        let pause = match master() {
            None => NO_ADDRESS_PAUSE,
            Some(addr) => {
                let end = tokio::select! {
                    end = session(&store, &addr) => end,
                    _ = super::stopped(&mut stop) => ConnectionEnd::Stopping,
                };
                if let ConnectionEnd::Stopping = end {
                    return;
                }
                tracing::warn!(master = %addr, max_offset = store.max_offset(), "HA connection to master ended: {end}");
                RECONNECT_PAUSE
            }
        };
        tokio::select! {
            _ = tokio::time::sleep(pause) => {}
            _ = super::stopped(&mut stop) => return,
        }
    }
}

/// One connection to the master, from connect to failure.
async fn session(store: &MessageStore, addr: &str) -> ConnectionEnd {
    let stream = match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr)).await {
        Err(_) => {
            return ConnectionEnd::Io(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("connect to {addr} timed out"),
            ))
        }
        Ok(Err(e)) => return e.into(),
        Ok(Ok(s)) => s,
    };
    let _ = stream.set_nodelay(true);
    tracing::info!(master = %addr, max_offset = store.max_offset(), "connected to master");
    let cfg = store.config();
    let heartbeat = Duration::from_millis(cfg.ha_send_heartbeat_interval.max(1));
    let housekeeping = Duration::from_millis(cfg.ha_housekeeping_interval.max(1));
    let (mut rd, mut wr) = stream.into_split();
    let mut reported = store.max_offset();
    if let Err(e) = report(&mut wr, reported, housekeeping).await {
        return e;
    }
    let mut last_report = Instant::now();
    let mut buf = BytesMut::with_capacity(256 * 1024);
    loop {
        let until_heartbeat = heartbeat.saturating_sub(last_report.elapsed());
        tokio::select! {
            read = rd.read_buf(&mut buf) => match read {
                Ok(0) => return ConnectionEnd::Closed,
                Ok(_) => {}
                Err(e) => return e.into(),
            },
            _ = tokio::time::sleep(until_heartbeat) => {
                if let Err(e) = report(&mut wr, store.max_offset(), housekeeping).await {
                    return e;
                }
                last_report = Instant::now();
                continue;
            }
        }
        if let Err(e) = apply_frames(store, &mut buf) {
            return e;
        }
        let max = store.max_offset();
        if max > reported {
            if let Err(e) = report(&mut wr, max, housekeeping).await {
                return e;
            }
            reported = max;
            last_report = Instant::now();
        }
        if buf.capacity() - buf.len() < 64 * 1024 {
            buf.reserve(256 * 1024);
        }
    }
}

/// Appends every complete frame in `buf` and removes it.
fn apply_frames(store: &MessageStore, buf: &mut BytesMut) -> Result<(), ConnectionEnd> {
    while buf.len() >= HEADER_LEN {
        let mut h = [0u8; HEADER_LEN];
        h.copy_from_slice(&buf[..HEADER_LEN]);
        let FrameHeader { offset, body_len } = protocol::parse_header(&h, MAX_BODY)?;
        if buf.len() < HEADER_LEN + body_len {
            buf.reserve(HEADER_LEN + body_len - buf.len());
            return Ok(());
        }
        let ours = store.max_offset();
        let empty = store.commit_log().file_count() == 0;
        if body_len == 0 {
            // Heartbeat: only checks that we agree where the log ends.
            if !empty && offset != ours {
                return Err(ConnectionEnd::WrongOffset { sent: offset, ours });
            }
        } else {
            let body = &buf[HEADER_LEN..HEADER_LEN + body_len];
            match store.append_replicated(offset, body) {
                Ok(_) => {}
                Err(StoreError::InvalidArgument(_)) => {
                    return Err(ConnectionEnd::WrongOffset { sent: offset, ours })
                }
                Err(e) => return Err(e.into()),
            }
        }
        buf.advance(HEADER_LEN + body_len);
    }
    Ok(())
}

async fn report(
    wr: &mut tokio::net::tcp::OwnedWriteHalf,
    offset: u64,
    within: Duration,
) -> Result<(), ConnectionEnd> {
    match tokio::time::timeout(within, wr.write_all(&protocol::report(offset))).await {
        Err(_) => Err(ConnectionEnd::ReportTimeout(within)),
        Ok(r) => Ok(r?),
    }
}
