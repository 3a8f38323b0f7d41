//! The name server's routing state (cluster.md §2.1): which brokers exist,
//! which topics they serve, and when each last checked in.
//!
//! One `RwLock` guards all tables so every operation sees and leaves them
//! consistent; registrations (every 30 s per broker) take the write lock,
//! route lookups (clients, every 30 s per topic) the read lock.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::{Duration, Instant};

use parking_lot::RwLock;

use super::wire::TopicConfigWrapper;
use crate::remoting::ConnectionContext;

/// Permission bits (semantics.md §1).
pub const PERM_READ: i32 = 4;
pub const PERM_WRITE: i32 = 2;

/// The master's broker id.
pub const MASTER_ID: i64 = 0;

/// A broker's topic-config version: registrations with an unchanged version
/// do not rewrite queue data.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DataVersion {
    pub timestamp: i64,
    pub counter: i64,
}

/// One broker group's queues of one topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueData {
    pub broker_name: String,
    pub read_queue_nums: i32,
    pub write_queue_nums: i32,
    pub perm: i32,
    pub topic_sys_flag: i32,
}

/// One broker group: its cluster and the address of each member by id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerData {
    pub cluster: String,
    pub broker_name: String,
    pub broker_addrs: BTreeMap<i64, String>,
}

/// The route of one topic.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TopicRouteData {
    pub order_topic_conf: Option<String>,
    pub queue_datas: Vec<QueueData>,
    pub broker_datas: Vec<BrokerData>,
    pub filter_server_table: BTreeMap<String, Vec<String>>,
}

struct BrokerLive {
    last_update: Instant,
    data_version: DataVersion,
    /// The connection the broker registered over; closing it unregisters.
    conn: Option<ConnectionContext>,
    ha_server_addr: String,
}

/// A REGISTER_BROKER request, decoded.
#[derive(Debug, Clone)]
pub struct Registration {
    pub cluster_name: String,
    pub broker_addr: String,
    pub broker_name: String,
    pub broker_id: i64,
    pub ha_server_addr: String,
    pub topic_config: TopicConfigWrapper,
    pub filter_server_list: Vec<String>,
}

/// What a registering slave learns about its master.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RegisterResult {
    pub master_addr: Option<String>,
    pub ha_server_addr: Option<String>,
}

#[derive(Default)]
struct Tables {
    topic_queue: BTreeMap<String, BTreeMap<String, QueueData>>,
    broker_addr: BTreeMap<String, BrokerData>,
    cluster_addr: BTreeMap<String, BTreeSet<String>>,
    broker_live: HashMap<String, BrokerLive>,
    filter_server: HashMap<String, Vec<String>>,
}

/// All routing state of one name server.
#[derive(Default)]
pub struct RouteTable {
    tables: RwLock<Tables>,
}

impl RouteTable {
    pub fn new() -> Self {
        Self::default()
    }

    /// Applies a registration (cluster.md §2.2, steps 1–5).
    pub fn register(&self, reg: Registration, conn: Option<ConnectionContext>) -> RegisterResult {
        let mut t = self.tables.write();
        t.cluster_addr
            .entry(reg.cluster_name.clone())
            .or_default()
            .insert(reg.broker_name.clone());

        let mut first = false;
        let bd = t
            .broker_addr
            .entry(reg.broker_name.clone())
            .or_insert_with(|| {
                first = true;
                BrokerData {
                    cluster: reg.cluster_name.clone(),
                    broker_name: reg.broker_name.clone(),
                    broker_addrs: BTreeMap::new(),
                }
            });
        // Slave promoted to master (or the reverse): same address, new id.
        bd.broker_addrs
            .retain(|id, addr| *id == reg.broker_id || *addr != reg.broker_addr);
        let old = bd
            .broker_addrs
            .insert(reg.broker_id, reg.broker_addr.clone());
        first |= old.is_none();

        if reg.broker_id == MASTER_ID {
            let changed = t
                .broker_live
                .get(&reg.broker_addr)
                .is_none_or(|l| l.data_version != reg.topic_config.data_version);
            if changed || first {
                for tc in &reg.topic_config.topics {
                    t.topic_queue
                        .entry(tc.topic_name.clone())
                        .or_default()
                        .insert(
                            reg.broker_name.clone(),
                            QueueData {
                                broker_name: reg.broker_name.clone(),
                                read_queue_nums: tc.read_queue_nums,
                                write_queue_nums: tc.write_queue_nums,
                                perm: tc.perm,
                                topic_sys_flag: tc.topic_sys_flag,
                            },
                        );
                }
            }
        }

        let previous = t.broker_live.insert(
            reg.broker_addr.clone(),
            BrokerLive {
                last_update: Instant::now(),
                data_version: reg.topic_config.data_version,
                conn,
                ha_server_addr: reg.ha_server_addr.clone(),
            },
        );
        if previous.is_none() {
            tracing::info!(
                broker = %reg.broker_name, id = reg.broker_id, addr = %reg.broker_addr,
                cluster = %reg.cluster_name, "new broker registered"
            );
        }
        if reg.filter_server_list.is_empty() {
            t.filter_server.remove(&reg.broker_addr);
        } else {
            t.filter_server
                .insert(reg.broker_addr.clone(), reg.filter_server_list.clone());
        }

        let mut result = RegisterResult::default();
        if reg.broker_id != MASTER_ID {
            let master = t
                .broker_addr
                .get(&reg.broker_name)
                .and_then(|b| b.broker_addrs.get(&MASTER_ID))
                .cloned();
            if let Some(master) = master {
                if let Some(live) = t.broker_live.get(&master) {
                    result.ha_server_addr = Some(live.ha_server_addr.clone());
                    result.master_addr = Some(master);
                }
            }
        }
        result
    }

    /// UNREGISTER_BROKER: removes one member of a broker group.
    pub fn unregister(
        &self,
        cluster_name: &str,
        broker_addr: &str,
        broker_name: &str,
        broker_id: i64,
    ) {
        let mut t = self.tables.write();
        t.broker_live.remove(broker_addr);
        t.filter_server.remove(broker_addr);
        let mut group_gone = false;
        if let Some(bd) = t.broker_addr.get_mut(broker_name) {
            if bd
                .broker_addrs
                .get(&broker_id)
                .is_some_and(|a| a == broker_addr)
            {
                bd.broker_addrs.remove(&broker_id);
            }
            group_gone = bd.broker_addrs.is_empty();
        }
        tracing::info!(
            broker = broker_name,
            id = broker_id,
            addr = broker_addr,
            "broker unregistered"
        );
        if group_gone {
            t.remove_group(broker_name, Some(cluster_name));
        }
    }

    /// Removes the broker at `broker_addr` (connection lost or expired).
    pub fn remove_broker_addr(&self, broker_addr: &str) {
        let mut t = self.tables.write();
        t.remove_addr(broker_addr);
    }

    /// Removes every broker registered over connection `conn_id`.
    pub fn on_connection_closed(&self, conn_id: u64) {
        let mut t = self.tables.write();
        let addrs: Vec<String> = t
            .broker_live
            .iter()
            .filter(|(_, l)| l.conn.as_ref().is_some_and(|c| c.id() == conn_id))
            .map(|(a, _)| a.clone())
            .collect();
        for addr in addrs {
            tracing::info!(addr = %addr, "broker connection closed, removing its routes");
            t.remove_addr(&addr);
        }
    }

    /// Removes brokers silent for longer than `expiry`; closes their
    /// connections. Returns the addresses removed.
    pub fn scan_not_active(&self, expiry: Duration) -> Vec<String> {
        let mut t = self.tables.write();
        let now = Instant::now();
        let expired: Vec<String> = t
            .broker_live
            .iter()
            .filter(|(_, l)| now.duration_since(l.last_update) > expiry)
            .map(|(a, _)| a.clone())
            .collect();
        for addr in &expired {
            tracing::warn!(addr = %addr, "broker expired after {expiry:?} without registration");
            if let Some(conn) = t.broker_live.get(addr).and_then(|l| l.conn.clone()) {
                conn.close();
            }
            t.remove_addr(addr);
        }
        expired
    }

    /// QUERY_DATA_VERSION: is `version` different from the one registered for
    /// `broker_addr`? If not, the broker's liveness is refreshed. Also returns
    /// the stored version.
    pub fn query_data_version(
        &self,
        broker_addr: &str,
        version: DataVersion,
    ) -> (bool, Option<DataVersion>) {
        let mut t = self.tables.write();
        match t.broker_live.get_mut(broker_addr) {
            Some(live) => {
                let changed = live.data_version != version;
                if !changed {
                    live.last_update = Instant::now();
                }
                (changed, Some(live.data_version))
            }
            None => (true, None),
        }
    }

    /// The route of `topic`, or `None` if no live broker serves it.
    pub fn route(&self, topic: &str) -> Option<TopicRouteData> {
        let t = self.tables.read();
        let queues = t.topic_queue.get(topic)?;
        let mut route = TopicRouteData::default();
        for (name, qd) in queues {
            route.queue_datas.push(qd.clone());
            if let Some(bd) = t.broker_addr.get(name) {
                for addr in bd.broker_addrs.values() {
                    if let Some(list) = t.filter_server.get(addr) {
                        route.filter_server_table.insert(addr.clone(), list.clone());
                    }
                }
                route.broker_datas.push(bd.clone());
            }
        }
        if route.queue_datas.is_empty() || route.broker_datas.is_empty() {
            return None;
        }
        Some(route)
    }

    /// (brokerAddrTable, clusterAddrTable) for GET_BROKER_CLUSTER_INFO.
    pub fn cluster_info(
        &self,
    ) -> (
        BTreeMap<String, BrokerData>,
        BTreeMap<String, BTreeSet<String>>,
    ) {
        let t = self.tables.read();
        (t.broker_addr.clone(), t.cluster_addr.clone())
    }

    /// Every topic name (including system topics).
    pub fn topics(&self) -> Vec<String> {
        self.tables.read().topic_queue.keys().cloned().collect()
    }

    /// Clears (`add == false`) or sets the W permission of `broker_name`'s
    /// queues of every topic; returns the number of topics touched.
    pub fn change_write_perm(&self, broker_name: &str, add: bool) -> usize {
        let mut t = self.tables.write();
        let mut n = 0;
        for queues in t.topic_queue.values_mut() {
            if let Some(qd) = queues.get_mut(broker_name) {
                qd.perm = if add {
                    PERM_READ | PERM_WRITE
                } else {
                    qd.perm & !PERM_WRITE
                };
                n += 1;
            }
        }
        n
    }

    /// Deletes `topic`, or only the queues of `cluster`'s brokers.
    pub fn delete_topic(&self, topic: &str, cluster: Option<&str>) {
        let mut t = self.tables.write();
        match cluster {
            None => {
                t.topic_queue.remove(topic);
            }
            Some(cluster) => {
                let names = t.cluster_addr.get(cluster).cloned().unwrap_or_default();
                if let Some(queues) = t.topic_queue.get_mut(topic) {
                    queues.retain(|name, _| !names.contains(name));
                    if queues.is_empty() {
                        t.topic_queue.remove(topic);
                    }
                }
            }
        }
    }

    /// Number of live broker addresses.
    pub fn live_broker_count(&self) -> usize {
        self.tables.read().broker_live.len()
    }
}

impl Tables {
    /// Drops `addr` everywhere (cluster.md §2.3).
    fn remove_addr(&mut self, addr: &str) {
        self.broker_live.remove(addr);
        self.filter_server.remove(addr);
        let mut emptied = Vec::new();
        for (name, bd) in self.broker_addr.iter_mut() {
            let before = bd.broker_addrs.len();
            bd.broker_addrs.retain(|_, a| a != addr);
            if before != bd.broker_addrs.len() && bd.broker_addrs.is_empty() {
                emptied.push(name.clone());
            }
        }
        for name in emptied {
            self.remove_group(&name, None);
        }
    }

    /// A broker group lost its last member: drop it from its cluster and
    /// every topic (topics left without queues disappear).
    fn remove_group(&mut self, broker_name: &str, cluster_hint: Option<&str>) {
        self.broker_addr.remove(broker_name);
        self.cluster_addr.retain(|cluster, names| {
            if cluster_hint.is_none_or(|c| c == cluster) {
                names.remove(broker_name);
            }
            !names.is_empty()
        });
        self.topic_queue.retain(|_, queues| {
            queues.remove(broker_name);
            !queues.is_empty()
        });
    }
}
