//! Subscription groups (`config/subscriptionGroup.json`): per consumer group
//! settings — retry queue count, max reconsume times, whether it may
//! consume (store.md §10, semantics.md §4.1). Groups are created on first
//! reference when `autoCreateSubscriptionGroup=true` or the name starts with
//! `CID_RMQ_SYS_`.

use std::collections::BTreeMap;
use std::path::PathBuf;

use parking_lot::{Mutex, RwLock};
use serde_json::{json, Value};

use super::topic_config::next_version;
use crate::namesrv::route_table::DataVersion;
use fastjson::config_file;
use fastjson::{as_bool, as_i64};

/// Groups every broker has from the start.
pub const PRECREATED_GROUPS: &[&str] = &[
    "TOOLS_CONSUMER",
    "FILTERSRV_CONSUMER",
    "SELF_TEST_C_GROUP",
    "CID_ONS-HTTP-PROXY",
    "CID_ONSAPI_PULL",
    "CID_ONSAPI_PERMISSION",
    "CID_ONSAPI_OWNER",
];

/// Java `SubscriptionGroupConfig`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscriptionGroupConfig {
    pub group_name: String,
    pub consume_enable: bool,
    pub consume_from_min_enable: bool,
    pub consume_broadcast_enable: bool,
    pub retry_queue_nums: i32,
    pub retry_max_times: i32,
    pub broker_id: i64,
    pub which_broker_when_consume_slowly: i64,
    pub notify_consumer_ids_changed_enable: bool,
}

impl SubscriptionGroupConfig {
    pub fn new(group: &str) -> Self {
        SubscriptionGroupConfig {
            group_name: group.to_string(),
            consume_enable: true,
            consume_from_min_enable: true,
            consume_broadcast_enable: true,
            retry_queue_nums: 1,
            retry_max_times: 16,
            broker_id: 0,
            which_broker_when_consume_slowly: 1,
            notify_consumer_ids_changed_enable: true,
        }
    }

    pub fn from_value(name: &str, v: &Value) -> Self {
        let d = SubscriptionGroupConfig::new(name);
        SubscriptionGroupConfig {
            group_name: v
                .get("groupName")
                .and_then(Value::as_str)
                .unwrap_or(name)
                .to_string(),
            consume_enable: as_bool(v.get("consumeEnable")).unwrap_or(d.consume_enable),
            consume_from_min_enable: as_bool(v.get("consumeFromMinEnable"))
                .unwrap_or(d.consume_from_min_enable),
            consume_broadcast_enable: as_bool(v.get("consumeBroadcastEnable"))
                .unwrap_or(d.consume_broadcast_enable),
            retry_queue_nums: as_i64(v.get("retryQueueNums")).unwrap_or(1) as i32,
            retry_max_times: as_i64(v.get("retryMaxTimes")).unwrap_or(16) as i32,
            broker_id: as_i64(v.get("brokerId")).unwrap_or(0),
            which_broker_when_consume_slowly: as_i64(v.get("whichBrokerWhenConsumeSlowly"))
                .unwrap_or(1),
            notify_consumer_ids_changed_enable: as_bool(v.get("notifyConsumerIdsChangedEnable"))
                .unwrap_or(true),
        }
    }

    pub fn to_value(&self) -> Value {
        json!({
            "brokerId": self.broker_id,
            "consumeBroadcastEnable": self.consume_broadcast_enable,
            "consumeEnable": self.consume_enable,
            "consumeFromMinEnable": self.consume_from_min_enable,
            "groupName": self.group_name,
            "notifyConsumerIdsChangedEnable": self.notify_consumer_ids_changed_enable,
            "retryMaxTimes": self.retry_max_times,
            "retryQueueNums": self.retry_queue_nums,
            "whichBrokerWhenConsumeSlowly": self.which_broker_when_consume_slowly,
        })
    }
}

struct Inner {
    groups: BTreeMap<String, SubscriptionGroupConfig>,
    data_version: DataVersion,
}

/// The subscription group table.
pub struct SubscriptionGroupTable {
    path: PathBuf,
    auto_create: bool,
    inner: RwLock<Inner>,
    persist_lock: Mutex<()>,
}

impl SubscriptionGroupTable {
    pub fn load(config_dir: PathBuf, auto_create: bool) -> Self {
        let path = config_dir.join("subscriptionGroup.json");
        let mut groups = BTreeMap::new();
        let mut data_version = DataVersion::default();
        for g in PRECREATED_GROUPS {
            groups.insert(g.to_string(), SubscriptionGroupConfig::new(g));
        }
        if let Some(v) = config_file::load(&path) {
            if let Some(dv) = v.get("dataVersion") {
                data_version = DataVersion::from_value(dv);
            }
            if let Some(Value::Object(table)) = v.get("subscriptionGroupTable") {
                for (name, g) in table {
                    let g = SubscriptionGroupConfig::from_value(name, g);
                    groups.insert(g.group_name.clone(), g);
                }
            }
        }
        SubscriptionGroupTable {
            path,
            auto_create,
            inner: RwLock::new(Inner {
                groups,
                data_version,
            }),
            persist_lock: Mutex::new(()),
        }
    }

    pub fn get(&self, group: &str) -> Option<SubscriptionGroupConfig> {
        self.inner.read().groups.get(group).cloned()
    }

    /// The group, created with defaults if allowed; `None` if unknown and
    /// auto-creation is off (SUBSCRIPTION_GROUP_NOT_EXIST).
    pub fn find_or_create(&self, group: &str) -> Option<SubscriptionGroupConfig> {
        if let Some(g) = self.get(group) {
            return Some(g);
        }
        self.find_or_create_all(&[group]).pop().flatten()
    }

    /// [`Self::find_or_create`] for several groups (one heartbeat's), with
    /// the table written once for all that were created rather than once
    /// per group: each write is the whole table and three fsyncs.
    pub fn find_or_create_all(&self, groups: &[&str]) -> Vec<Option<SubscriptionGroupConfig>> {
        let mut created = false;
        let found = {
            let mut inner = self.inner.write();
            groups
                .iter()
                .map(|&group| {
                    if let Some(g) = inner.groups.get(group) {
                        return Some(g.clone());
                    }
                    if !(self.auto_create || group.starts_with("CID_RMQ_SYS_")) {
                        return None;
                    }
                    tracing::info!(group, "auto-created subscription group");
                    let g = SubscriptionGroupConfig::new(group);
                    inner.groups.insert(group.to_string(), g.clone());
                    next_version(&mut inner.data_version);
                    created = true;
                    Some(g)
                })
                .collect()
        };
        if created {
            self.persist_logged();
        }
        found
    }

    pub fn upsert(&self, g: SubscriptionGroupConfig) {
        {
            let mut inner = self.inner.write();
            inner.groups.insert(g.group_name.clone(), g);
            next_version(&mut inner.data_version);
        }
        self.persist_logged();
    }

    pub fn delete(&self, group: &str) -> bool {
        let existed = {
            let mut inner = self.inner.write();
            let e = inner.groups.remove(group).is_some();
            if e {
                next_version(&mut inner.data_version);
            }
            e
        };
        if existed {
            self.persist_logged();
        }
        existed
    }

    /// Slave sync (cluster.md §3): adopts the master's SubscriptionGroupWrapper
    /// when its DataVersion differs from ours (replace every group, take the
    /// version), then persists. Returns whether anything was replaced.
    pub fn adopt_master(&self, wrapper: &Value) -> std::io::Result<bool> {
        let Some(dv) = wrapper.get("dataVersion") else {
            return Ok(false);
        };
        let version = DataVersion::from_value(dv);
        let mut groups = BTreeMap::new();
        if let Some(Value::Object(table)) = wrapper.get("subscriptionGroupTable") {
            for (name, g) in table {
                let g = SubscriptionGroupConfig::from_value(name, g);
                groups.insert(g.group_name.clone(), g);
            }
        }
        {
            let mut inner = self.inner.write();
            if inner.data_version == version {
                return Ok(false);
            }
            inner.groups = groups;
            inner.data_version = version;
        }
        self.persist()?;
        Ok(true)
    }

    /// SubscriptionGroupWrapper JSON.
    pub fn wrapper_value(&self) -> Value {
        let inner = self.inner.read();
        let mut table = serde_json::Map::new();
        for (k, g) in &inner.groups {
            table.insert(k.clone(), g.to_value());
        }
        json!({
            "dataVersion": {"counter": inner.data_version.counter, "timestamp": inner.data_version.timestamp},
            "subscriptionGroupTable": table,
        })
    }

    fn persist_logged(&self) {
        if let Err(e) = self.persist() {
            tracing::error!(path = %self.path.display(), "cannot persist subscription groups: {e}");
        }
    }

    pub fn persist(&self) -> std::io::Result<()> {
        let _guard = self.persist_lock.lock();
        let text = fastjson::to_pretty(&self.wrapper_value(), &|_| false);
        config_file::persist(&self.path, &text)
    }
}
