//! The name server (cluster.md §2): a registry of brokers and the topics
//! they serve, filled by broker registrations and read by clients.
//!
//! * [`route_table`] — the state and its rules (register, expire, route);
//! * [`wire`] — the JSON bodies, in both of fastjson's dialects;
//! * [`kv_config`] — the persisted KV config;
//! * [`processor`] — one function per request code.
//!
//! Embedding: [`NameServer::start`] binds and serves; the broker binary can
//! run one in-process.

pub mod config;
pub mod kv_config;
pub mod processor;
pub mod route_table;
pub mod wire;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::remoting::{Server, ServerConfig, ServerHandle};

pub use config::NamesrvConfig;
pub use kv_config::KvConfig;
pub use processor::NamesrvProcessor;
pub use route_table::RouteTable;

/// A running name server.
pub struct NameServer {
    server: ServerHandle,
    routes: Arc<RouteTable>,
    stop_scan: watch::Sender<bool>,
    scan_task: tokio::task::JoinHandle<()>,
}

impl NameServer {
    /// Binds `bind_addr` (e.g. `"0.0.0.0:9876"`, or port 0 for tests) and
    /// serves with default settings and an in-memory KV config.
    pub async fn start(bind_addr: &str) -> std::io::Result<NameServer> {
        Self::start_with(bind_addr, &NamesrvConfig::default(), KvConfig::in_memory()).await
    }

    /// Binds `bind_addr` and serves with `config` (its listen address fields
    /// are ignored in favour of `bind_addr`) and the given KV store.
    pub async fn start_with(
        bind_addr: &str,
        config: &NamesrvConfig,
        kv: KvConfig,
    ) -> std::io::Result<NameServer> {
        let routes = Arc::new(RouteTable::new());
        let processor = Arc::new(NamesrvProcessor {
            routes: routes.clone(),
            kv: Arc::new(kv),
            order_message_enable: config.order_message_enable,
        });
        let mut server_config = ServerConfig::with_limits(
            config.server_channel_max_idle_time_seconds,
            config.server_max_connections,
        );
        server_config.connection.codec.max_frame_size = config.server_max_frame_size;
        let server = Server::start(bind_addr, server_config, processor).await?;

        let (stop_scan, mut stop_rx) = watch::channel(false);
        let expiry = Duration::from_millis(config.broker_channel_expired_time);
        let interval = Duration::from_millis(config.scan_not_active_broker_interval.max(1));
        let scan_routes = routes.clone();
        let scan_task = tokio::spawn(async move {
            // First scan after half an interval (Java: 5 s of 10 s).
            let mut tick =
                tokio::time::interval_at(tokio::time::Instant::now() + interval / 2, interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = tick.tick() => { scan_routes.scan_not_active(expiry); }
                    _ = stop_rx.wait_for(|v| *v) => break,
                }
            }
        });
        tracing::info!(addr = %server.local_addr(), "name server started");
        Ok(NameServer {
            server,
            routes,
            stop_scan,
            scan_task,
        })
    }

    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.server.local_addr()
    }

    /// The routing state (for embedding and tests).
    pub fn routes(&self) -> &Arc<RouteTable> {
        &self.routes
    }

    /// Stops the liveness scan and the server; returns once every
    /// connection has closed.
    pub async fn shutdown(self) {
        self.stop_scan.send_replace(true);
        let _ = self.scan_task.await;
        self.server.shutdown().await;
        tracing::info!("name server stopped");
    }
}
