//! The remoting server: accept connections, one task per connection, and a
//! graceful shutdown.
//!
//! Shutdown (mini-redis style): stop accepting, broadcast to every
//! connection, each stops reading, lets its in-flight requests finish (at
//! most [`ConnectionConfig::shutdown_grace`]), writes their answers and
//! closes; [`ServerHandle::shutdown`] returns once every connection task has
//! ended.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, ToSocketAddrs};
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;

use super::connection::{self, ConnectionConfig, RequestHandler};

/// Java's `NettyServerConfig.serverChannelMaxIdleTimeSeconds`.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(120);

/// Default for [`ServerConfig::max_connections`].
pub const DEFAULT_MAX_CONNECTIONS: usize = 10_000;

/// Server settings.
#[derive(Debug, Clone, Copy)]
pub struct ServerConfig {
    /// Settings of every accepted connection. The default closes a
    /// connection after [`DEFAULT_IDLE_TIMEOUT`] without traffic.
    pub connection: ConnectionConfig,
    /// Connections beyond this many are not accepted: they wait in the
    /// listen backlog until a served one closes (idle ones are closed after
    /// the idle timeout). Java has no such cap, only the process's file
    /// descriptor limit; ours keeps a flood of connections from taking the
    /// descriptors the store needs. Default [`DEFAULT_MAX_CONNECTIONS`].
    pub max_connections: usize,
}

impl ServerConfig {
    /// The defaults with the `serverChannelMaxIdleTimeSeconds` (0: never,
    /// as for Netty's IdleStateHandler) and `serverMaxConnections` settings
    /// that the broker and the name server both take.
    pub fn with_limits(idle_seconds: u64, max_connections: usize) -> Self {
        let mut config = ServerConfig::default();
        config.connection.idle_timeout =
            (idle_seconds > 0).then(|| Duration::from_secs(idle_seconds));
        config.max_connections = max_connections;
        config
    }
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            connection: ConnectionConfig {
                idle_timeout: Some(DEFAULT_IDLE_TIMEOUT),
                ..ConnectionConfig::default()
            },
            max_connections: DEFAULT_MAX_CONNECTIONS,
        }
    }
}

/// A listening server.
pub struct Server;

impl Server {
    /// Binds `addr` and serves every connection with `handler`.
    ///
    /// Returns once listening; the returned handle stops the server.
    /// Dropping the handle without calling [`ServerHandle::shutdown`] leaves
    /// the server running until the runtime ends.
    pub async fn start<H: RequestHandler>(
        addr: impl ToSocketAddrs,
        config: ServerConfig,
        handler: Arc<H>,
    ) -> std::io::Result<ServerHandle> {
        let listener = TcpListener::bind(addr).await?;
        let local_addr = listener.local_addr()?;
        let (shutdown_tx, shutdown_rx) = watch::channel(false);
        let task = tokio::spawn(accept_loop(listener, config, handler, shutdown_rx));
        tracing::info!(%local_addr, "remoting server listening");
        Ok(ServerHandle {
            local_addr,
            shutdown_tx,
            task,
        })
    }
}

/// Controls a running server.
pub struct ServerHandle {
    local_addr: SocketAddr,
    shutdown_tx: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl ServerHandle {
    /// The bound address (useful after binding port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Stops accepting, lets connections finish their in-flight requests,
    /// and waits until every connection has closed.
    pub async fn shutdown(self) {
        self.shutdown_tx.send_replace(true);
        if let Err(e) = self.task.await {
            tracing::error!("server accept task failed: {e}");
        }
    }
}

async fn accept_loop<H: RequestHandler>(
    listener: TcpListener,
    config: ServerConfig,
    handler: Arc<H>,
    mut shutdown: watch::Receiver<bool>,
) {
    let max_connections = config.max_connections.max(1);
    let limit = Arc::new(Semaphore::new(max_connections));
    let mut connections = JoinSet::new();
    let mut last_limit_warning: Option<tokio::time::Instant> = None;
    loop {
        if limit.available_permits() == 0
            && last_limit_warning.is_none_or(|t| t.elapsed() >= Duration::from_secs(60))
        {
            // Clients now hang in the backlog: say why (at most once a minute).
            tracing::warn!(
                max_connections,
                "connection limit reached: new connections wait until one closes"
            );
            last_limit_warning = Some(tokio::time::Instant::now());
        }
        let permit = tokio::select! {
            p = limit.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break, // semaphore closed: cannot happen
            },
            _ = shutdown.wait_for(|v| *v) => break,
        };
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = shutdown.wait_for(|v| *v) => break,
            // Reap finished connection tasks so the set does not grow.
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(e) => {
                // Typically EMFILE: back off briefly instead of spinning.
                tracing::warn!("accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        match connection::spawn(
            stream,
            handler.clone(),
            config.connection,
            Some(shutdown.clone()),
        ) {
            Ok((ctx, join)) => {
                tracing::debug!(conn = ctx.id(), peer = %ctx.peer_addr(), "accepted connection");
                connections.spawn(async move {
                    let _ = join.await;
                    drop(permit);
                });
            }
            Err(e) => tracing::warn!("cannot set up accepted connection: {e}"),
        }
    }
    drop(listener);
    tracing::info!(connections = connections.len(), "server shutting down");
    while connections.join_next().await.is_some() {}
}
