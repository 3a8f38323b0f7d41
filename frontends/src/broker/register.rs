//! Registration with the name servers (cluster.md §2.2): REGISTER_BROKER to
//! every name server in `namesrvAddr`, in parallel, at start, every
//! `registerNameServerPeriod` and after each topic change; UNREGISTER_BROKER
//! on a clean stop. The body is what a Java 4.9.8 broker sends with
//! `compressedRegister=false`: `{"filterServerList":[],
//! "topicConfigSerializeWrapper":{"dataVersion":…,"topicConfigTable":…}}`.

use std::time::Duration;

use parking_lot::Mutex;
use serde_json::{json, Value};

use super::config::BrokerConfig;
use super::topic_config::{perm, TopicConfigTable};
use crate::namesrv::route_table::DataVersion;
use crate::remoting::codes::{request, response};
use crate::remoting::{RemotingClient, RemotingCommand};

/// Who we are to the name servers, and how to reach them.
pub struct Registrar {
    client: RemotingClient,
    namesrv_addrs: Vec<String>,
    cluster_name: String,
    broker_name: String,
    broker_id: i64,
    broker_addr: String,
    ha_server_addr: String,
    broker_permission: i32,
    timeout: Duration,
    /// What the last registration told a slave about its master.
    master: Mutex<MasterInfo>,
}

/// A slave's master as the name servers report it in the REGISTER_BROKER
/// response (cluster.md §2.2 step 5): both absent while the master is not
/// registered (or for a master).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MasterInfo {
    /// The master's remoting address (`masterAddr`), used by slave sync.
    pub master_addr: Option<String>,
    /// The master's HA address (`haServerAddr`), used by replication.
    pub ha_server_addr: Option<String>,
}

/// CRC32 of the body masked to 31 bits (store.md §5).
pub fn body_crc32(body: &[u8]) -> i32 {
    (crc32fast::hash(body) & 0x7FFF_FFFF) as i32
}

impl Registrar {
    pub fn new(cfg: &BrokerConfig, broker_addr: String, ha_server_addr: String) -> Self {
        Registrar {
            client: RemotingClient::default(),
            namesrv_addrs: cfg.namesrv_addrs(),
            cluster_name: cfg.broker_cluster_name.clone(),
            broker_name: cfg.broker_name.clone(),
            broker_id: cfg.broker_id,
            broker_addr,
            ha_server_addr,
            broker_permission: cfg.broker_permission,
            timeout: Duration::from_millis(cfg.register_broker_timeout_mills.max(1)),
            master: Mutex::new(MasterInfo::default()),
        }
    }

    pub fn namesrv_addrs(&self) -> &[String] {
        &self.namesrv_addrs
    }

    /// The master as learned from the last registration round.
    pub fn master(&self) -> MasterInfo {
        self.master.lock().clone()
    }

    /// The RegisterBrokerBody JSON for the current topic table.
    pub fn body(&self, topics: &TopicConfigTable) -> String {
        let mut wrapper = topics.wrapper_value();
        // A broker lacking R or W registers every topic with its own perm.
        let restricted = !perm::is_readable(self.broker_permission)
            || !perm::is_writeable(self.broker_permission);
        if restricted {
            if let Some(Value::Object(table)) = wrapper.get_mut("topicConfigTable") {
                for tc in table.values_mut() {
                    tc["perm"] = Value::from(self.broker_permission);
                }
            }
        }
        let body = json!({
            "filterServerList": [],
            "topicConfigSerializeWrapper": wrapper,
        });
        fastjson::to_compact(&body, &|_| false)
    }

    fn header(&self, code: i32) -> RemotingCommand {
        RemotingCommand::request(code)
            .with_ext("brokerName", &self.broker_name)
            .with_ext("brokerAddr", &self.broker_addr)
            .with_ext("clusterName", &self.cluster_name)
            .with_ext("brokerId", self.broker_id)
    }

    /// Registers with every name server; returns how many accepted.
    ///
    /// After a round in which at least one name server answered, the
    /// master address is updated from the answers: Java takes the first
    /// answer of the round; we take the first (in `namesrvAddr` order) that
    /// names a master, so a name server that has not yet seen the master
    /// does not make a slave forget it while another one knows it.
    pub async fn register_all(&self, topics: &TopicConfigTable) -> usize {
        if self.namesrv_addrs.is_empty() {
            return 0;
        }
        let body = self.body(topics).into_bytes();
        let crc = body_crc32(&body);
        let body = bytes::Bytes::from(body);
        let calls = self.namesrv_addrs.iter().map(|addr| {
            let req = self
                .header(request::REGISTER_BROKER)
                .with_ext("haServerAddr", &self.ha_server_addr)
                .with_ext("compressed", "false")
                .with_ext("bodyCrc32", crc)
                .with_body(body.clone());
            async move {
                match self.client.invoke(addr, req, self.timeout).await {
                    Ok(resp) if resp.code == response::SUCCESS => {
                        tracing::debug!(namesrv = %addr, "registered broker");
                        Some(MasterInfo {
                            master_addr: resp.ext("masterAddr").filter(|a| !a.is_empty()).map(str::to_string),
                            ha_server_addr: resp.ext("haServerAddr").filter(|a| !a.is_empty()).map(str::to_string),
                        })
                    }
                    Ok(resp) => {
                        tracing::warn!(namesrv = %addr, code = resp.code, remark = ?resp.remark, "name server refused registration");
                        None
                    }
                    Err(e) => {
                        tracing::warn!(namesrv = %addr, "cannot register broker: {e}");
                        self.client.close(addr);
                        None
                    }
                }
            }
        });
        let answers: Vec<MasterInfo> = futures_util::future::join_all(calls)
            .await
            .into_iter()
            .flatten()
            .collect();
        if self.broker_id != 0 && !answers.is_empty() {
            let learned = answers
                .iter()
                .find(|m| m.master_addr.is_some())
                .cloned()
                .unwrap_or_default();
            let mut master = self.master.lock();
            if *master != learned {
                tracing::info!(master = ?learned.master_addr, ha = ?learned.ha_server_addr, "master address changed");
                *master = learned;
            }
        }
        answers.len()
    }

    /// Whether a periodic registration is needed when `forceRegister=false`
    /// (cluster.md §2.2): asks every name server QUERY_DATA_VERSION with our
    /// topic table's DataVersion, in parallel. True if any of them reports
    /// `changed=true` or cannot be asked (as Java counts a failure as a
    /// change). A name server that finds the version unchanged refreshes
    /// our liveness, so skipping the registration does not expire us.
    pub async fn needs_register(&self, version: DataVersion) -> bool {
        let body = bytes::Bytes::from(version.to_json());
        let calls = self.namesrv_addrs.iter().map(|addr| {
            let req = self
                .header(request::QUERY_DATA_VERSION)
                .with_body(body.clone());
            async move {
                match self.client.invoke(addr, req, self.timeout).await {
                    Ok(resp) if resp.code == response::SUCCESS => resp
                        .ext("changed")
                        .is_some_and(|v| v.eq_ignore_ascii_case("true")),
                    Ok(resp) => {
                        tracing::warn!(namesrv = %addr, code = resp.code, "QUERY_DATA_VERSION refused");
                        true
                    }
                    Err(e) => {
                        tracing::warn!(namesrv = %addr, "cannot query data version: {e}");
                        self.client.close(addr);
                        true
                    }
                }
            }
        });
        futures_util::future::join_all(calls)
            .await
            .into_iter()
            .any(|changed| changed)
    }

    /// UNREGISTER_BROKER to every name server (clean stop).
    pub async fn unregister_all(&self) {
        let calls = self.namesrv_addrs.iter().map(|addr| {
            let req = self.header(request::UNREGISTER_BROKER);
            async move {
                match self.client.invoke(addr, req, self.timeout).await {
                    Ok(_) => tracing::info!(namesrv = %addr, "unregistered broker"),
                    Err(e) => tracing::warn!(namesrv = %addr, "cannot unregister broker: {e}"),
                }
            }
        });
        futures_util::future::join_all(calls).await;
        self.client.close_all();
    }
}
