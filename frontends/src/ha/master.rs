//! The master's HA listener (Java's HAService accept loop + HAConnection).
//!
//! One task per slave connection runs two halves side by side:
//! * **reports** — every 8-byte value the slave sends is its max offset; the
//!   first one says where streaming starts, each one is an acknowledgement
//!   fed to the store ([`engine::Replication::record_ack`]) so SYNC_MASTER
//!   puts waiting for it return. Nothing read for `haHousekeepingInterval`
//!   closes the connection. So does a report of bytes the slave cannot
//!   hold: a first report past the master's log end (a diverged slave) or a
//!   later one past what this connection sent (Java closes when a report
//!   passes its max offset). Counted, either would answer SYNC_MASTER puts
//!   SEND_OK for messages no slave has.
//! * **transfer** — from the start offset, send the readable bytes of the
//!   current commit log file in frames of at most `haTransferBatchSize`,
//!   straight from the mapping; when there is nothing new, park until an
//!   append (at most 100 ms) and send a header-only heartbeat after
//!   `haSendHeartbeatInterval` of silence. A slave that needs bytes from
//!   before the first file still stored can never catch up: it is dropped
//!   (Java keeps it, idle, for good).
//!
//! The connection counts as a live slave (the SYNC_MASTER slave-OK rule)
//! from accept to close.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Buf;
use engine::MessageStore;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Notify};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::protocol::{self, ReportReader};

/// How long a sender with nothing to send parks before looking again.
const IDLE_WAIT: Duration = Duration::from_millis(100);

/// Why a slave connection ended.
#[derive(Debug, thiserror::Error)]
enum ConnectionEnd {
    #[error("slave closed the connection")]
    Closed,
    #[error("nothing read from the slave for {0:?}")]
    Silent(Duration),
    #[error("slave reported negative offset {0}")]
    Negative(i64),
    #[error("slave reported offset {reported}, past the end of our commit log ({end}): its log diverged from ours")]
    Ahead { reported: u64, end: u64 },
    #[error("slave acknowledged offset {reported}, but it holds at most {sent}")]
    AckBeyondSent { reported: u64, sent: u64 },
    #[error(
        "slave needs offset {needs}, but our commit log starts at {first}: it cannot catch up"
    )]
    Behind { needs: u64, first: u64 },
    #[error("network: {0}")]
    Io(#[from] std::io::Error),
    #[error("broker stopping")]
    Stopping,
}

/// The running HA listener.
pub struct HaServer {
    local_addr: SocketAddr,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl HaServer {
    /// Binds `addr` and serves slaves of `store`'s commit log.
    pub async fn start(addr: &str, store: Arc<MessageStore>) -> std::io::Result<HaServer> {
        let listener = TcpListener::bind(addr).await?;
        let local_addr = listener.local_addr()?;
        let (stop, stop_rx) = watch::channel(false);
        let task = tokio::spawn(accept_loop(listener, store, stop_rx));
        tracing::info!(%local_addr, "HA service listening");
        Ok(HaServer {
            local_addr,
            stop,
            task,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Stops accepting and closes every slave connection.
    pub async fn shutdown(self) {
        self.stop.send_replace(true);
        let _ = self.task.await;
    }
}

async fn accept_loop(
    listener: TcpListener,
    store: Arc<MessageStore>,
    mut stop: watch::Receiver<bool>,
) {
    let mut connections = tokio::task::JoinSet::new();
    let for_connections = stop.clone();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let store = store.clone();
                    let stop = for_connections.clone();
                    connections.spawn(async move {
                        tracing::info!(%peer, "slave connected");
                        match serve_slave(stream, &store, stop).await {
                            ConnectionEnd::Stopping => {}
                            why => tracing::warn!(%peer, "slave connection closed: {why}"),
                        }
                    });
                }
                Err(e) => {
                    tracing::warn!("HA accept: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            _ = super::stopped(&mut stop) => break,
        }
    }
    while connections.join_next().await.is_some() {}
}

/// Serves one slave until it leaves, misbehaves, or the broker stops.
async fn serve_slave(
    stream: TcpStream,
    store: &Arc<MessageStore>,
    mut stop: watch::Receiver<bool>,
) -> ConnectionEnd {
    let _ = stream.set_nodelay(true);
    let _session = store.replication().slave_connected();
    let (rd, wr) = stream.into_split();
    // The slave's first report (-1 until it arrives).
    let requested = AtomicI64::new(-1);
    let first_report = Notify::new();
    // End of the bytes sent (or being sent) on this connection.
    let sent = AtomicU64::new(0);
    let reports = read_reports(rd, store, &requested, &first_report, &sent);
    let transfer = transfer(wr, store, &requested, &first_report, &sent);
    tokio::select! {
        end = reports => end,
        end = transfer => end,
        _ = super::stopped(&mut stop) => ConnectionEnd::Stopping,
    }
}

async fn read_reports(
    mut rd: OwnedReadHalf,
    store: &MessageStore,
    requested: &AtomicI64,
    first_report: &Notify,
    sent: &AtomicU64,
) -> ConnectionEnd {
    let housekeeping = Duration::from_millis(store.config().ha_housekeeping_interval.max(1));
    let mut reader = ReportReader::default();
    let mut buf = [0u8; 1024];
    loop {
        let n = match tokio::time::timeout(housekeeping, rd.read(&mut buf)).await {
            Err(_) => return ConnectionEnd::Silent(housekeeping),
            Ok(Err(e)) => return e.into(),
            Ok(Ok(0)) => return ConnectionEnd::Closed,
            Ok(Ok(n)) => n,
        };
        let Some(v) = reader.feed(&buf[..n]) else {
            continue;
        };
        if v < 0 {
            return ConnectionEnd::Negative(v);
        }
        let reported = v as u64;
        let first = requested.load(Ordering::Acquire);
        if first < 0 {
            // Bytes may be sent (and so held by the slave) a little before
            // the commit log's max offset moves past them: the bound is
            // what is written, not what is readable.
            let end = store.transfer_end();
            if reported > end {
                return ConnectionEnd::Ahead { reported, end };
            }
            requested.store(v, Ordering::Release);
            first_report.notify_one();
        } else {
            let holds = (first as u64).max(sent.load(Ordering::Acquire));
            if reported > holds {
                return ConnectionEnd::AckBeyondSent {
                    reported,
                    sent: holds,
                };
            }
        }
        store.replication().record_ack(reported);
    }
}

async fn transfer(
    mut wr: OwnedWriteHalf,
    store: &MessageStore,
    requested: &AtomicI64,
    first_report: &Notify,
    sent: &AtomicU64,
) -> ConnectionEnd {
    let cfg = store.config();
    let heartbeat = Duration::from_millis(cfg.ha_send_heartbeat_interval.max(1));
    let batch = cfg.ha_transfer_batch_size.max(1);
    // Nothing is sent before the slave says where it stands.
    let slave_offset = loop {
        let notified = first_report.notified();
        let v = requested.load(Ordering::Acquire);
        if v >= 0 {
            break v as u64;
        }
        notified.await;
    };
    let mut next = store.transfer_start(slave_offset);
    tracing::info!(slave_offset, start = next, "streaming to slave");
    let mut last_write = Instant::now();
    loop {
        if let Some(slice) = store.read_for_transfer(next, batch) {
            let header = protocol::header(next, slice.len() as usize);
            // Before the write: the slave may acknowledge these bytes as
            // soon as they leave.
            sent.store(next + slice.len(), Ordering::Release);
            let mut frame = Buf::chain(&header[..], slice.as_bytes());
            if let Err(e) = wr.write_all_buf(&mut frame).await {
                return e.into();
            }
            next += slice.len();
            last_write = Instant::now();
            continue;
        }
        // Nothing to send. If that is because the bytes the slave needs
        // were deleted (retention, or a log that starts later), nothing
        // ever will be, and waiting for an append would return at once.
        let first = store.min_offset();
        if next < first {
            return ConnectionEnd::Behind { needs: next, first };
        }
        if last_write.elapsed() >= heartbeat {
            if let Err(e) = wr.write_all(&protocol::header(next, 0)).await {
                return e.into();
            }
            last_write = Instant::now();
        }
        store.wait_for_append(next, IDLE_WAIT).await;
    }
}
