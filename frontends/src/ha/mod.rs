//! Master/slave replication of the commit log over RocketMQ 4.x's HA
//! protocol (cluster.md §4–§6): plain TCP on the master's `haListenPort`
//! (`listenPort + 1`), not remoting frames.
//!
//! * [`protocol`] — the two message shapes: the slave's 8-byte offset
//!   reports and the master's 12-byte-header data frames;
//! * [`master`] — the listener and one task per connected slave: read its
//!   reports (acknowledgements), stream commit log bytes from where it
//!   stands, heartbeat when idle, drop it when silent;
//! * [`slave`] — the client: find the master's HA address, connect, append
//!   what arrives to the local store, report progress, reconnect after any
//!   failure.
//!
//! The store does the rest ([`engine::replication`]): the slave's own
//! dispatcher builds consume queues and the index from the copied bytes,
//! and a SYNC_MASTER put waits on the acknowledged offset.

pub mod master;
pub mod protocol;
pub mod slave;

use std::sync::Arc;

use engine::{BrokerRole, MessageStore};

pub use master::HaServer;
pub use slave::{HaClient, MasterHaAddr};

/// Resolves once `stop` turns true (or its sender is gone).
async fn stopped(stop: &mut tokio::sync::watch::Receiver<bool>) {
    let _ = stop.wait_for(|v| *v).await;
}

/// The replication side a broker runs, by `brokerRole`.
pub enum HaService {
    /// ASYNC_MASTER / SYNC_MASTER: serves slaves.
    Master(HaServer),
    /// SLAVE: follows its master.
    Slave(HaClient),
}

impl HaService {
    /// Starts the listener (masters, on `bind_ip:haListenPort`) or the client
    /// (slaves, following the address `master` gives).
    pub async fn start(
        store: Arc<MessageStore>,
        bind_ip: &str,
        master: MasterHaAddr,
    ) -> std::io::Result<HaService> {
        let cfg = store.config().clone();
        Ok(match cfg.broker_role {
            BrokerRole::Slave => HaService::Slave(HaClient::start(store, master)),
            BrokerRole::AsyncMaster | BrokerRole::SyncMaster => {
                let addr = format!("{bind_ip}:{}", cfg.ha_listen_port);
                HaService::Master(HaServer::start(&addr, store).await?)
            }
        })
    }

    /// Stops serving or following; connections are closed.
    pub async fn shutdown(self) {
        match self {
            HaService::Master(m) => m.shutdown().await,
            HaService::Slave(s) => s.shutdown().await,
        }
    }
}
