//! Slave metadata synchronisation (cluster.md §3, RocketMQ's
//! SlaveSynchronize): a SLAVE copies its master's topic configs, consumer
//! offsets, delay offsets and subscription groups every 10 s (first run 3 s
//! after start), so that consumers reading from the slave — and the slave
//! itself, should it be restarted as a master — see the same metadata.
//!
//! The master's address is the `masterAddr` the name servers return to the
//! slave's registration ([`Registrar::master`](super::Registrar::master));
//! while it is unknown (master not registered) a round is skipped. The
//! commit log is not copied here: that is replication's job.
//!
//! Each of the four steps is independent: a failure is logged and the
//! others still run, as in Java.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use super::Broker;
use crate::remoting::codes::{request, response};
use crate::remoting::{RemotingClient, RemotingCommand};

/// Java's period and first delay.
const PERIOD: Duration = Duration::from_secs(10);
const FIRST_RUN: Duration = Duration::from_secs(3);
/// Each request's bound (Java: 3 s).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(3);

/// Why one sync step failed.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error("request to master {addr} failed: {source}")]
    Request {
        addr: String,
        #[source]
        source: crate::remoting::RemotingError,
    },
    #[error("master {addr} answered code {code}: {remark}")]
    Refused {
        addr: String,
        code: i32,
        remark: String,
    },
    #[error("master {addr} sent a body that is not valid JSON")]
    BadBody { addr: String },
    #[error("cannot persist: {0}")]
    Persist(#[from] std::io::Error),
}

/// Runs the periodic sync until `stop` turns true. Started for slaves only.
pub async fn run(broker: Arc<Broker>, mut stop: watch::Receiver<bool>) {
    let client = RemotingClient::default();
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + FIRST_RUN, PERIOD);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.wait_for(|v| *v) => break,
        }
        let Some(master) = broker.registrar.master().master_addr else {
            tracing::debug!("slave sync skipped: master address unknown");
            continue;
        };
        // As Java: never sync from ourselves (a stale route after a role swap).
        if master == broker.broker_addr {
            continue;
        }
        sync_once(&broker, &client, &master).await;
    }
    client.close_all();
}

/// One round of the four steps against `master`.
pub async fn sync_once(broker: &Broker, client: &RemotingClient, master: &str) {
    if let Err(e) = sync_topic_config(broker, client, master).await {
        tracing::warn!("slave sync of topic configs failed: {e}");
    }
    if let Err(e) = sync_consumer_offsets(broker, client, master).await {
        tracing::warn!("slave sync of consumer offsets failed: {e}");
    }
    if let Err(e) = sync_delay_offsets(broker, client, master).await {
        tracing::warn!("slave sync of delay offsets failed: {e}");
    }
    if let Err(e) = sync_subscription_groups(broker, client, master).await {
        tracing::warn!("slave sync of subscription groups failed: {e}");
    }
}

/// One request to the master; the body of a SUCCESS answer.
async fn fetch(client: &RemotingClient, addr: &str, code: i32) -> Result<bytes::Bytes, SyncError> {
    let resp = client
        .invoke(addr, RemotingCommand::request(code), REQUEST_TIMEOUT)
        .await
        .map_err(|source| {
            client.close(addr);
            SyncError::Request {
                addr: addr.to_string(),
                source,
            }
        })?;
    if resp.code != response::SUCCESS {
        return Err(SyncError::Refused {
            addr: addr.to_string(),
            code: resp.code,
            remark: resp.remark.unwrap_or_default(),
        });
    }
    Ok(resp.body)
}

async fn fetch_json(
    client: &RemotingClient,
    addr: &str,
    code: i32,
) -> Result<serde_json::Value, SyncError> {
    let body = fetch(client, addr, code).await?;
    fastjson::parse(&body).map_err(|_| SyncError::BadBody {
        addr: addr.to_string(),
    })
}

async fn sync_topic_config(
    broker: &Broker,
    client: &RemotingClient,
    master: &str,
) -> Result<(), SyncError> {
    let v = fetch_json(client, master, request::GET_ALL_TOPIC_CONFIG).await?;
    if broker.topics.adopt_master(&v)? {
        tracing::info!(master, "topic configs synchronised from master");
    }
    Ok(())
}

async fn sync_consumer_offsets(
    broker: &Broker,
    client: &RemotingClient,
    master: &str,
) -> Result<(), SyncError> {
    let v = fetch_json(client, master, request::GET_ALL_CONSUMER_OFFSET).await?;
    let n = broker.offsets.merge_from_master(&v)?;
    tracing::debug!(
        master,
        entries = n,
        "consumer offsets synchronised from master"
    );
    Ok(())
}

async fn sync_delay_offsets(
    broker: &Broker,
    client: &RemotingClient,
    master: &str,
) -> Result<(), SyncError> {
    let body = fetch(client, master, request::GET_ALL_DELAY_OFFSET).await?;
    let text = std::str::from_utf8(&body).map_err(|_| SyncError::BadBody {
        addr: master.to_string(),
    })?;
    if text.is_empty() {
        return Ok(());
    }
    broker.schedule.adopt_master(text)?;
    Ok(())
}

async fn sync_subscription_groups(
    broker: &Broker,
    client: &RemotingClient,
    master: &str,
) -> Result<(), SyncError> {
    let v = fetch_json(client, master, request::GET_ALL_SUBSCRIPTIONGROUP_CONFIG).await?;
    if broker.groups.adopt_master(&v)? {
        tracing::info!(master, "subscription groups synchronised from master");
    }
    Ok(())
}
