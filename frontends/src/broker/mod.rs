//! The broker: RocketMQ 4.x's broker protocol over the engine's store.
//!
//! * [`config`] — `broker.conf` keys (BrokerConfig) next to the store's;
//! * [`topic_config`], [`subscription_group`], [`consumer_offset`] — the
//!   persisted tables (`config/*.json`);
//! * [`client_registry`] — connected producers/consumers, subscriptions;
//! * [`rebalance_lock`] — ordered-consumption queue locks;
//! * [`register`] — registration with the name servers;
//! * [`slave_sync`] — a slave's periodic copy of its master's metadata;
//! * [`processor`] — one file per request family;
//! * [`long_polling`] — parked pulls;
//! * [`filter`] — SQL92 property filtering (selector language, registered
//!   consumer filters);
//! * [`schedule_service`] — delayed messages: the schedule-topic rewrite
//!   and delivery when due (`delayOffset.json`);
//! * [`transaction`] — transactional messages: half messages, op records,
//!   the check-back service.
//!
//! [`Broker`] is the shared state; [`Broker::start`] binds the main port
//! (`listenPort`) and the fast/VIP port (`listenPort − 2`, same processors
//! except PULL_MESSAGE) and starts the background tasks (registration,
//! offset persistence, client expiry) and replication ([`crate::ha`]: the
//! HA listener on `haListenPort` for masters, the HA client for slaves).
//! Requests are processed on their connection's task, dispatched by code in
//! [`Broker::dispatch`].

pub mod client_registry;
pub mod config;
pub mod consumer_offset;
pub mod filter;
pub mod long_polling;
pub mod processor;
pub mod rebalance_lock;
pub mod register;
pub mod schedule_service;
pub mod slave_sync;
pub mod subscription_group;
pub mod topic_config;
pub mod transaction;

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use engine::MessageStore;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::ha::HaService;
use crate::remoting::codes::{request, response};
use crate::remoting::{ConnectionContext, RemotingCommand, RequestHandler, Server, ServerHandle};

pub use client_registry::{ClientRegistry, SubscriptionData};
pub use config::{BrokerConfig, BrokerSettings};
pub use consumer_offset::ConsumerOffsetTable;
pub use long_polling::LongPolling;
pub use rebalance_lock::RebalanceLocks;
pub use register::{MasterInfo, Registrar};
pub use schedule_service::{SavedDelayOffsets, Schedule};
pub use subscription_group::SubscriptionGroupTable;
pub use topic_config::{TopicConfig, TopicConfigTable};
pub use transaction::Transactions;

/// Errors starting a broker.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Store(#[from] engine::StoreError),
    #[error("cannot bind {addr}: {source}")]
    Bind {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error("brokerIP1 `{0}` is not an IP address")]
    BadAddress(String),
    #[error(transparent)]
    Config(#[from] fastjson::config_file::UnreadableConfig),
    #[error("storePathRootDir {path}: {why}")]
    StoreRoot { path: PathBuf, why: String },
}

/// Makes sure `storePathRootDir` is a directory we can write in, creating
/// it (and its `config/`) if missing.
fn prepare_store_root(root: &std::path::Path) -> Result<(), StartError> {
    let bad = |why: String| StartError::StoreRoot {
        path: root.to_path_buf(),
        why,
    };
    match std::fs::metadata(root) {
        Ok(m) if !m.is_dir() => return Err(bad("exists and is not a directory".to_string())),
        Ok(_) => {}
        Err(_) => {
            std::fs::create_dir_all(root).map_err(|e| bad(format!("cannot create it: {e}")))?
        }
    }
    std::fs::create_dir_all(root.join("config"))
        .map_err(|e| bad(format!("cannot create config/ in it: {e}")))
}

/// The broker's shared state. Everything a processor needs is a public
/// field; all of it is safe to use from any connection task.
pub struct Broker {
    /// Both configurations as loaded.
    pub settings: BrokerSettings,
    /// `settings.broker`, for short access.
    pub config: BrokerConfig,
    /// The message store.
    pub store: Arc<MessageStore>,
    /// topics.json.
    pub topics: TopicConfigTable,
    /// subscriptionGroup.json.
    pub groups: SubscriptionGroupTable,
    /// consumerOffset.json.
    pub offsets: ConsumerOffsetTable,
    /// Delay levels and delayOffset.json.
    pub schedule: Schedule,
    /// Connected clients and consumer subscriptions.
    pub clients: ClientRegistry,
    /// SQL92 filters registered by heartbeats, compiled-selector cache.
    pub consumer_filters: filter::ConsumerFilters,
    /// Ordered-consumption locks.
    pub locks: RebalanceLocks,
    /// Parked pulls (owned by the pull processor).
    pub long_polling: LongPolling,
    /// Transaction state outside the store (commits in flight, check-back
    /// channel rotation).
    pub transactions: Transactions,
    /// Name server registration.
    pub registrar: Registrar,
    /// `brokerIP1:listenPort`: STOREHOST of our records, our address in routes.
    pub store_host: SocketAddr,
    /// The same as text.
    pub broker_addr: String,
    /// Epoch ms of start-up.
    pub boot_timestamp: i64,
}

impl Broker {
    /// Opens the store and loads the tables (no network yet).
    pub fn open(settings: BrokerSettings) -> Result<Arc<Broker>, StartError> {
        // Checked first: otherwise the first symptom is an unreadable
        // config/*.json, and its advice (remove the file) is wrong.
        prepare_store_root(&settings.store.store_path_root_dir)?;
        let cfg = settings.broker.clone();
        let ip1 = cfg.broker_ip1();
        let ip: IpAddr = ip1
            .parse()
            .map_err(|_| StartError::BadAddress(ip1.clone()))?;
        let store_host = SocketAddr::new(ip, cfg.listen_port);
        let broker_addr = format!("{ip1}:{}", cfg.listen_port);
        let ha_addr = format!("{}:{}", cfg.broker_ip2(), settings.store.ha_listen_port);
        let config_dir = settings.store.config_dir();
        // Before the store opens: refusing to start leaves it untouched.
        let offsets = ConsumerOffsetTable::load(config_dir.clone())?;
        let delay_offsets = SavedDelayOffsets::load(&config_dir)?;
        let store = MessageStore::open(settings.store.clone())?;
        let broker = Broker {
            topics: TopicConfigTable::load(config_dir.clone(), &cfg),
            groups: SubscriptionGroupTable::load(
                config_dir.clone(),
                cfg.auto_create_subscription_group,
            ),
            offsets,
            schedule: Schedule::new(delay_offsets, &store),
            clients: ClientRegistry::new(cfg.notify_consumer_ids_changed_enable),
            consumer_filters: filter::ConsumerFilters::new(),
            locks: RebalanceLocks::new(Duration::from_secs(60)),
            long_polling: LongPolling::new(),
            transactions: Transactions::default(),
            registrar: Registrar::new(&cfg, broker_addr.clone(), ha_addr),
            store_host,
            broker_addr,
            boot_timestamp: processor::now_ms(),
            store,
            config: cfg,
            settings,
        };
        if let Err(e) = broker.topics.persist() {
            tracing::warn!("cannot write topics.json: {e}");
        }
        let broker = Arc::new(broker);
        processor::pull::install_arrival_listener(&broker);
        Ok(broker)
    }

    /// Registers with every name server now (after topic admin changes).
    pub async fn register_now(&self) {
        self.registrar.register_all(&self.topics).await;
    }

    /// Whether this broker is a SLAVE (read-only replica, cluster.md §1).
    pub fn is_slave(&self) -> bool {
        self.settings.store.broker_role == engine::BrokerRole::Slave
    }

    /// Routes one request to its processor. `fast_port`: the VIP port,
    /// which does not serve PULL_MESSAGE.
    pub async fn dispatch(
        self: &Arc<Self>,
        ctx: &ConnectionContext,
        req: RemotingCommand,
        fast_port: bool,
    ) -> Option<RemotingCommand> {
        use processor::*;
        if self.is_slave() {
            if let Some(refusal) = slave_refusal(req.code) {
                return Some(refusal);
            }
        }
        let reply = match req.code {
            request::SEND_MESSAGE | request::SEND_MESSAGE_V2 | request::SEND_BATCH_MESSAGE => {
                send::handle(self, ctx, &req).await
            }
            request::PULL_MESSAGE if !fast_port => return pull::handle(self, ctx, req).await,
            request::QUERY_MESSAGE | request::VIEW_MESSAGE_BY_ID => query::handle(self, &req),
            request::QUERY_CONSUMER_OFFSET
            | request::UPDATE_CONSUMER_OFFSET
            | request::SEARCH_OFFSET_BY_TIMESTAMP
            | request::GET_MAX_OFFSET
            | request::GET_MIN_OFFSET
            | request::GET_EARLIEST_MSG_STORETIME => offset::handle(self, &req),
            request::HEART_BEAT
            | request::UNREGISTER_CLIENT
            | request::GET_CONSUMER_LIST_BY_GROUP => heartbeat::handle(self, ctx, &req),
            request::LOCK_BATCH_MQ | request::UNLOCK_BATCH_MQ => lock::handle(self, &req),
            request::CONSUMER_SEND_MSG_BACK => consumer_send_back::handle(self, ctx, &req).await,
            request::END_TRANSACTION => return end_transaction::handle(self, &req).await,
            request::UPDATE_AND_CREATE_TOPIC
            | request::DELETE_TOPIC_IN_BROKER
            | request::GET_ALL_TOPIC_CONFIG
            | request::GET_BROKER_RUNTIME_INFO
            | request::GET_BROKER_CONFIG
            | request::GET_ALL_CONSUMER_OFFSET
            | request::GET_ALL_DELAY_OFFSET
            | request::GET_ALL_SUBSCRIPTIONGROUP_CONFIG
            | request::UPDATE_AND_CREATE_SUBSCRIPTIONGROUP
            | request::DELETE_SUBSCRIPTIONGROUP
            | request::CHECK_CLIENT_CONFIG => topic_admin::handle(self, &req).await,
            other => Err(processor::error(
                response::REQUEST_CODE_NOT_SUPPORTED,
                format!(" request type {other} not supported"),
            )),
        };
        Some(reply.unwrap_or_else(|e| e))
    }

    /// Persists the consumer offsets if they changed.
    pub fn persist_offsets(&self) {
        if let Err(e) = self.offsets.persist_if_dirty() {
            tracing::error!("cannot persist consumer offsets: {e}");
        }
    }

    /// Starts a broker: opens the store, binds both ports, registers with
    /// the name servers and starts the background tasks.
    pub async fn start(settings: BrokerSettings) -> Result<BrokerHandle, StartError> {
        let broker = Broker::open(settings)?;
        let bind_ip = broker.config.bind_address.clone();
        let main_addr = format!("{bind_ip}:{}", broker.config.listen_port);
        let fast_addr = format!("{bind_ip}:{}", broker.config.fast_listen_port());
        let server_config = broker.config.server_config();
        let main = Server::start(
            main_addr.as_str(),
            server_config,
            Arc::new(BrokerPort {
                broker: broker.clone(),
                fast: false,
            }),
        )
        .await
        .map_err(|source| StartError::Bind {
            addr: main_addr.clone(),
            source,
        })?;
        let fast = match Server::start(
            fast_addr.as_str(),
            server_config,
            Arc::new(BrokerPort {
                broker: broker.clone(),
                fast: true,
            }),
        )
        .await
        {
            Ok(f) => f,
            Err(source) => {
                main.shutdown().await;
                shutdown_store(&broker).await;
                return Err(StartError::Bind {
                    addr: fast_addr,
                    source,
                });
            }
        };
        let ha =
            match HaService::start(broker.store.clone(), &bind_ip, master_ha_addr(&broker)).await {
                Ok(ha) => ha,
                Err(source) => {
                    fast.shutdown().await;
                    main.shutdown().await;
                    shutdown_store(&broker).await;
                    return Err(StartError::Bind {
                        addr: format!("{bind_ip}:{}", broker.settings.store.ha_listen_port),
                        source,
                    });
                }
            };
        let registered = broker.registrar.register_all(&broker.topics).await;
        tracing::info!(
            broker = %broker.config.broker_name,
            addr = %broker.broker_addr,
            namesrvs = broker.registrar.namesrv_addrs().len(),
            registered,
            "broker started"
        );
        let (stop_tx, stop_rx) = watch::channel(false);
        let mut tasks = vec![
            tokio::spawn(register_loop(broker.clone(), stop_rx.clone())),
            tokio::spawn(offset_flush_loop(broker.clone(), stop_rx.clone())),
            tokio::spawn(client_scan_loop(broker.clone(), stop_rx.clone())),
        ];
        // Scheduled messages are delivered, and transactions checked back,
        // by masters only; slaves copy their master's metadata instead.
        if broker.is_slave() {
            tasks.push(tokio::spawn(slave_sync::run(broker.clone(), stop_rx)));
        } else {
            tasks.push(transaction::check::spawn(&broker, stop_rx.clone()));
            tasks.extend(Schedule::spawn(&broker, stop_rx));
        }
        Ok(BrokerHandle {
            broker,
            main,
            fast,
            ha,
            stop_tx,
            tasks,
        })
    }
}

/// What a slave answers to requests that would write to its store
/// (cluster.md §1): Java's store refuses every put on a slave with
/// SERVICE_NOT_AVAILABLE, which the send processor reports as code 14 with
/// this remark; a send-back reports the put status' name under
/// SYSTEM_ERROR; END_TRANSACTION answers SLAVE_NOT_AVAILABLE; group admin
/// answers SYSTEM_ERROR (topic admin does so in its processor).
fn slave_refusal(code: i32) -> Option<RemotingCommand> {
    match code {
        request::SEND_MESSAGE | request::SEND_MESSAGE_V2 | request::SEND_BATCH_MESSAGE => {
            Some(processor::error(
                response::SERVICE_NOT_AVAILABLE,
                "service not available now. It may be caused by one of the following reasons: \
                 the broker's disk is full, messages are put to the slave, message store has been shut down, etc.",
            ))
        }
        request::CONSUMER_SEND_MSG_BACK => Some(processor::error(
            response::SYSTEM_ERROR,
            "SERVICE_NOT_AVAILABLE",
        )),
        request::END_TRANSACTION => Some(RemotingCommand::response(response::SLAVE_NOT_AVAILABLE)),
        // A slave's groups are its master's copy (slave sync replaces them).
        request::UPDATE_AND_CREATE_SUBSCRIPTIONGROUP | request::DELETE_SUBSCRIPTIONGROUP => {
            Some(processor::error(
                response::SYSTEM_ERROR,
                "slave broker cannot change subscription groups",
            ))
        }
        _ => None,
    }
}

/// Where a slave finds its master's HA service: `haMasterAddress` when set
/// (Java: at least 6 characters), which then never changes; otherwise the
/// `haServerAddr` the name servers returned at the last registration.
fn master_ha_addr(broker: &Arc<Broker>) -> crate::ha::MasterHaAddr {
    let configured = broker
        .settings
        .store
        .ha_master_address
        .clone()
        .filter(|a| a.trim().len() >= 6);
    let b = broker.clone();
    Arc::new(move || {
        configured
            .clone()
            .or_else(|| b.registrar.master().ha_server_addr)
    })
}

async fn shutdown_store(broker: &Arc<Broker>) {
    let b = broker.clone();
    let r = tokio::task::spawn_blocking(move || b.store.shutdown()).await;
    match r {
        Ok(Ok(())) => tracing::info!("store shut down cleanly"),
        Ok(Err(e)) => tracing::error!("store shutdown failed: {e}"),
        Err(e) => tracing::error!("store shutdown task failed: {e}"),
    }
}

/// One listening port's request handler.
struct BrokerPort {
    broker: Arc<Broker>,
    fast: bool,
}

impl RequestHandler for BrokerPort {
    async fn handle(
        &self,
        ctx: &ConnectionContext,
        request: RemotingCommand,
    ) -> Option<RemotingCommand> {
        self.broker.dispatch(ctx, request, self.fast).await
    }

    fn on_closed(&self, ctx: &ConnectionContext) {
        self.broker.clients.on_channel_closed(ctx.id());
    }
}

async fn register_loop(broker: Arc<Broker>, mut stop: watch::Receiver<bool>) {
    let period = Duration::from_millis(broker.config.register_period_ms());
    // Java: first periodic run 10 s after start.
    let first = tokio::time::Instant::now() + Duration::from_secs(10).min(period);
    let mut tick = tokio::time::interval_at(first, period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        // Topic changes always register; the periodic round first asks the
        // name servers whether anything changed unless forceRegister.
        let forced = tokio::select! {
            _ = tick.tick() => broker.config.force_register,
            _ = broker.topics.changed.notified() => true,
            _ = stop.wait_for(|v| *v) => return,
        };
        if forced
            || broker
                .registrar
                .needs_register(broker.topics.data_version())
                .await
        {
            broker.register_now().await;
        }
    }
}

async fn offset_flush_loop(broker: Arc<Broker>, mut stop: watch::Receiver<bool>) {
    let period = Duration::from_millis(broker.config.flush_consumer_offset_interval.max(100));
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.wait_for(|v| *v) => return,
        }
        let b = broker.clone();
        let _ = tokio::task::spawn_blocking(move || b.persist_offsets()).await;
    }
}

async fn client_scan_loop(broker: Arc<Broker>, mut stop: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(Duration::from_secs(10));
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.wait_for(|v| *v) => return,
        }
        broker.clients.scan_expired();
    }
}

/// A running broker.
pub struct BrokerHandle {
    broker: Arc<Broker>,
    main: ServerHandle,
    fast: ServerHandle,
    ha: HaService,
    stop_tx: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl BrokerHandle {
    /// The shared state.
    pub fn broker(&self) -> &Arc<Broker> {
        &self.broker
    }

    /// The main port's bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.main.local_addr()
    }

    /// The HA listener's bound address (masters only).
    pub fn ha_addr(&self) -> Option<SocketAddr> {
        match &self.ha {
            HaService::Master(m) => Some(m.local_addr()),
            HaService::Slave(_) => None,
        }
    }

    /// The fast (VIP) port's bound address.
    pub fn fast_addr(&self) -> SocketAddr {
        self.fast.local_addr()
    }

    /// Clean stop: unregister from the name servers, stop serving, persist
    /// offsets and tables, shut the store down (flush, checkpoint, abort
    /// file removed), then persist the delay offsets.
    pub async fn shutdown(self) {
        self.stop_tx.send_replace(true);
        for t in self.tasks {
            let _ = t.await;
        }
        self.broker.registrar.unregister_all().await;
        self.fast.shutdown().await;
        self.main.shutdown().await;
        self.ha.shutdown().await;
        let b = self.broker.clone();
        let _ = tokio::task::spawn_blocking(move || {
            if let Err(e) = b.offsets.persist() {
                tracing::error!("cannot persist consumer offsets: {e}");
            }
            if let Err(e) = b.topics.persist() {
                tracing::error!("cannot persist topics: {e}");
            }
            if let Err(e) = b.groups.persist() {
                tracing::error!("cannot persist subscription groups: {e}");
            }
        })
        .await;
        shutdown_store(&self.broker).await;
        // After the store's final flush every delivery is durable. A slave
        // delivers nothing: its delayOffset.json is the master's copy.
        let b = self.broker.clone();
        if b.is_slave() {
            tracing::info!("broker stopped");
            return;
        }
        let _ = tokio::task::spawn_blocking(move || {
            if let Err(e) = b.schedule.persist(&b.store) {
                tracing::error!("cannot persist delay offsets: {e}");
            }
        })
        .await;
        tracing::info!("broker stopped");
    }
}
