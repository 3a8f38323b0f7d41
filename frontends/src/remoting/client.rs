//! [`RemotingClient`]: requests to remote servers by address, answers matched
//! by opaque, one shared connection per address (many requests in flight on
//! it), reconnecting on demand when a connection has closed.
//!
//! The broker uses it to talk to name servers; tests and tools use it as a
//! minimal RocketMQ client.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::net::TcpStream;

use super::command::RemotingCommand;
use super::connection::{self, ConnectionConfig, ConnectionContext, NoHandler, RequestHandler};
use super::error::RemotingError;

/// Client settings.
#[derive(Debug, Clone, Copy)]
pub struct ClientConfig {
    pub connection: ConnectionConfig,
    /// Connect timeout (Java's `connectTimeoutMillis`, 3 s).
    pub connect_timeout: Duration,
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            connection: ConnectionConfig::default(),
            connect_timeout: Duration::from_secs(3),
        }
    }
}

/// A client keeping one connection per server address.
#[derive(Clone, Default)]
pub struct RemotingClient {
    config: ClientConfig,
    connections: Arc<Mutex<HashMap<String, ConnectionContext>>>,
}

impl RemotingClient {
    pub fn new(config: ClientConfig) -> Self {
        RemotingClient {
            config,
            connections: Arc::default(),
        }
    }

    /// Sends `request` to `addr` (`host:port`) and waits up to `timeout` for
    /// its answer. Connects (or reconnects) first if needed; the connect
    /// time is bounded separately by the connect timeout.
    pub async fn invoke(
        &self,
        addr: &str,
        request: RemotingCommand,
        timeout: Duration,
    ) -> Result<RemotingCommand, RemotingError> {
        let conn = self.connection(addr).await?;
        conn.request(request, timeout).await
    }

    /// Sends `request` to `addr` oneway.
    pub async fn invoke_oneway(
        &self,
        addr: &str,
        request: RemotingCommand,
    ) -> Result<(), RemotingError> {
        let conn = self.connection(addr).await?;
        conn.send_oneway(request)
    }

    /// The live connection to `addr`, connecting if there is none.
    pub async fn connection(&self, addr: &str) -> Result<ConnectionContext, RemotingError> {
        if let Some(c) = self.connections.lock().get(addr) {
            if !c.is_closed() {
                return Ok(c.clone());
            }
        }
        let fresh = Self::connect_with(addr, self.config, Arc::new(NoHandler)).await?;
        let mut map = self.connections.lock();
        // Another caller may have connected meanwhile: keep theirs.
        if let Some(c) = map.get(addr) {
            if !c.is_closed() {
                fresh.close();
                return Ok(c.clone());
            }
        }
        map.insert(addr.to_string(), fresh.clone());
        Ok(fresh)
    }

    /// Closes the connection to `addr`, if any.
    pub fn close(&self, addr: &str) {
        if let Some(c) = self.connections.lock().remove(addr) {
            c.close();
        }
    }

    /// Closes every connection.
    pub fn close_all(&self) {
        for (_, c) in self.connections.lock().drain() {
            c.close();
        }
    }

    /// Opens a dedicated connection to `addr` whose incoming requests (server
    /// → client calls such as NOTIFY_CONSUMER_IDS_CHANGED) go to `handler`.
    pub async fn connect_with<H: RequestHandler>(
        addr: &str,
        config: ClientConfig,
        handler: Arc<H>,
    ) -> Result<ConnectionContext, RemotingError> {
        let stream =
            match tokio::time::timeout(config.connect_timeout, TcpStream::connect(addr)).await {
                Ok(Ok(s)) => s,
                Ok(Err(source)) => {
                    return Err(RemotingError::Connect {
                        addr: addr.to_string(),
                        source,
                    })
                }
                Err(_) => {
                    return Err(RemotingError::ConnectTimeout {
                        addr: addr.to_string(),
                        timeout: config.connect_timeout,
                    })
                }
            };
        let (ctx, _join) =
            connection::spawn(stream, handler, config.connection, None).map_err(|source| {
                RemotingError::Connect {
                    addr: addr.to_string(),
                    source,
                }
            })?;
        Ok(ctx)
    }

    /// Opens a dedicated connection to `addr` that ignores incoming requests.
    pub async fn connect(addr: &str) -> Result<ConnectionContext, RemotingError> {
        Self::connect_with(addr, ClientConfig::default(), Arc::new(NoHandler)).await
    }
}
