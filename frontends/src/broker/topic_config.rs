//! The topic table (`config/topics.json`): every topic this broker serves,
//! with queue counts and permissions, and the DataVersion that tells name
//! servers whether anything changed (semantics.md §1, store.md §10).
//!
//! System topics are created at start (§1.3); unknown topics are created on
//! first send from the `TBW102` template (§1.4). Every change is persisted
//! at once and bumps the DataVersion; `changed` wakes the registration task.

use std::collections::BTreeMap;
use std::path::PathBuf;

use parking_lot::{Mutex, RwLock};
use serde_json::{json, Value};
use tokio::sync::Notify;

use super::config::BrokerConfig;
use crate::namesrv::route_table::DataVersion;
use fastjson::config_file;
use fastjson::{as_bool, as_i64, as_string};

/// Permission bits (semantics.md §1.1).
pub mod perm {
    pub const PRIORITY: i32 = 8;
    pub const READ: i32 = 4;
    pub const WRITE: i32 = 2;
    pub const INHERIT: i32 = 1;

    pub fn is_readable(p: i32) -> bool {
        p & READ != 0
    }
    pub fn is_writeable(p: i32) -> bool {
        p & WRITE != 0
    }
    pub fn is_inherited(p: i32) -> bool {
        p & INHERIT != 0
    }
}

pub const AUTO_CREATE_TOPIC_KEY_TOPIC: &str = "TBW102";
pub const SELF_TEST_TOPIC: &str = "SELF_TEST_TOPIC";
pub const BENCHMARK_TOPIC: &str = "BenchmarkTest";
pub const OFFSET_MOVED_EVENT: &str = "OFFSET_MOVED_EVENT";
pub const SCHEDULE_TOPIC: &str = "SCHEDULE_TOPIC_XXXX";
pub const TRANS_HALF_TOPIC: &str = "RMQ_SYS_TRANS_HALF_TOPIC";
pub const TRANS_OP_HALF_TOPIC: &str = "RMQ_SYS_TRANS_OP_HALF_TOPIC";
pub const TRANS_CHECK_MAX_TIME_TOPIC: &str = "TRANS_CHECK_MAX_TIME_TOPIC";
pub const RETRY_GROUP_TOPIC_PREFIX: &str = "%RETRY%";
pub const DLQ_GROUP_TOPIC_PREFIX: &str = "%DLQ%";
pub const SYSTEM_TOPIC_PREFIX: &str = "rmq_sys_";

/// Topics producers may not send to (semantics.md §1.2).
pub fn is_send_forbidden(topic: &str) -> bool {
    matches!(
        topic,
        SCHEDULE_TOPIC
            | TRANS_HALF_TOPIC
            | TRANS_OP_HALF_TOPIC
            | TRANS_CHECK_MAX_TIME_TOPIC
            | SELF_TEST_TOPIC
            | OFFSET_MOVED_EVENT
    )
}

/// Topics admin requests may not create or delete.
pub fn is_system_topic(topic: &str, cfg: &BrokerConfig) -> bool {
    is_send_forbidden(topic)
        || topic == AUTO_CREATE_TOPIC_KEY_TOPIC
        || topic == BENCHMARK_TOPIC
        || topic == cfg.broker_cluster_name
        || topic == cfg.broker_name
        || topic == cfg.msg_trace_topic_name
        || topic == format!("{}_REPLY_TOPIC", cfg.broker_cluster_name)
        || topic.starts_with(SYSTEM_TOPIC_PREFIX)
}

/// Topic name rule: 1..=127 chars of `[%|a-zA-Z0-9_-]`.
pub fn validate_topic_name(topic: &str) -> Result<(), String> {
    if topic.trim().is_empty() {
        return Err("The specified topic is blank.".to_string());
    }
    if topic.len() > 127 {
        return Err("The specified topic is longer than topic max length 127.".to_string());
    }
    if !topic
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'%' | b'|' | b'-' | b'_'))
    {
        return Err(format!(
            "The specified topic[{topic}] contains illegal characters, allowing only ^[%|a-zA-Z0-9_-]+$"
        ));
    }
    Ok(())
}

/// One topic's configuration (Java `TopicConfig`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicConfig {
    pub topic_name: String,
    pub read_queue_nums: i32,
    pub write_queue_nums: i32,
    pub perm: i32,
    /// `SINGLE_TAG` or `MULTI_TAG`.
    pub topic_filter_type: String,
    pub topic_sys_flag: i32,
    pub order: bool,
}

impl TopicConfig {
    pub fn new(name: &str, read: i32, write: i32, perm: i32) -> Self {
        TopicConfig {
            topic_name: name.to_string(),
            read_queue_nums: read,
            write_queue_nums: write,
            perm,
            topic_filter_type: "SINGLE_TAG".to_string(),
            topic_sys_flag: 0,
            order: false,
        }
    }

    /// From fastjson bean JSON; missing fields take Java's defaults.
    pub fn from_value(name: &str, v: &Value) -> Self {
        TopicConfig {
            topic_name: as_string(v.get("topicName"))
                .filter(|s| !s.is_empty())
                .unwrap_or_else(|| name.to_string()),
            read_queue_nums: as_i64(v.get("readQueueNums")).unwrap_or(16) as i32,
            write_queue_nums: as_i64(v.get("writeQueueNums")).unwrap_or(16) as i32,
            perm: as_i64(v.get("perm")).unwrap_or(6) as i32,
            topic_filter_type: as_string(v.get("topicFilterType"))
                .unwrap_or_else(|| "SINGLE_TAG".to_string()),
            topic_sys_flag: as_i64(v.get("topicSysFlag")).unwrap_or(0) as i32,
            order: as_bool(v.get("order")).unwrap_or(false),
        }
    }

    /// fastjson bean JSON (keys sorted).
    pub fn to_value(&self) -> Value {
        json!({
            "order": self.order,
            "perm": self.perm,
            "readQueueNums": self.read_queue_nums,
            "topicFilterType": self.topic_filter_type,
            "topicName": self.topic_name,
            "topicSysFlag": self.topic_sys_flag,
            "writeQueueNums": self.write_queue_nums,
        })
    }

    pub fn is_multi_tag(&self) -> bool {
        self.topic_filter_type == "MULTI_TAG"
    }
}

/// Why a topic could not be auto-created.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CreateError {
    /// Neither the template nor a retry topic: TOPIC_NOT_EXIST.
    NotExist(String),
}

struct Inner {
    topics: BTreeMap<String, TopicConfig>,
    data_version: DataVersion,
}

/// The topic table, shared by every connection.
pub struct TopicConfigTable {
    path: PathBuf,
    inner: RwLock<Inner>,
    /// Serialises file writes so a newer state is never overwritten by an older one.
    persist_lock: Mutex<()>,
    /// Notified after every change (the registration task listens).
    pub changed: Notify,
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// `DataVersion.nextVersion()`: timestamp = now, counter + 1.
pub fn next_version(v: &mut DataVersion) {
    v.timestamp = now_ms();
    v.counter += 1;
}

impl TopicConfigTable {
    /// Loads `topics.json` from `config_dir` and adds the system topics.
    pub fn load(config_dir: PathBuf, cfg: &BrokerConfig) -> Self {
        let path = config_dir.join("topics.json");
        let mut topics = BTreeMap::new();
        let mut data_version = DataVersion {
            timestamp: now_ms(),
            counter: 0,
        };
        if let Some(v) = config_file::load(&path) {
            if let Some(dv) = v.get("dataVersion") {
                data_version = DataVersion::from_value(dv);
            }
            if let Some(Value::Object(table)) = v.get("topicConfigTable") {
                for (name, tc) in table {
                    let tc = TopicConfig::from_value(name, tc);
                    topics.insert(tc.topic_name.clone(), tc);
                }
            }
        }
        let table = TopicConfigTable {
            path,
            inner: RwLock::new(Inner {
                topics,
                data_version,
            }),
            persist_lock: Mutex::new(()),
            changed: Notify::new(),
        };
        table.add_system_topics(cfg);
        table
    }

    /// semantics.md §1.3: the topics a broker always has.
    fn add_system_topics(&self, cfg: &BrokerConfig) {
        let mut sys = vec![
            TopicConfig::new(SELF_TEST_TOPIC, 1, 1, 6),
            TopicConfig::new(BENCHMARK_TOPIC, 1024, 1024, 6),
            TopicConfig::new(OFFSET_MOVED_EVENT, 1, 1, 6),
            TopicConfig::new(SCHEDULE_TOPIC, 18, 18, 6),
            TopicConfig::new(&format!("{}_REPLY_TOPIC", cfg.broker_cluster_name), 1, 1, 6),
        ];
        if cfg.auto_create_topic_enable {
            let n = cfg.default_topic_queue_nums;
            sys.push(TopicConfig::new(AUTO_CREATE_TOPIC_KEY_TOPIC, n, n, 7));
        }
        let mut cluster_perm = perm::INHERIT;
        if cfg.cluster_topic_enable {
            cluster_perm |= perm::READ | perm::WRITE;
        }
        sys.push(TopicConfig::new(
            &cfg.broker_cluster_name,
            16,
            16,
            cluster_perm,
        ));
        let mut broker_perm = perm::INHERIT;
        if cfg.broker_topic_enable {
            broker_perm |= perm::READ | perm::WRITE;
        }
        sys.push(TopicConfig::new(&cfg.broker_name, 1, 1, broker_perm));
        if cfg.trace_topic_enable {
            sys.push(TopicConfig::new(&cfg.msg_trace_topic_name, 1, 1, 6));
        }
        let mut inner = self.inner.write();
        for tc in sys {
            inner.topics.insert(tc.topic_name.clone(), tc);
        }
        // Java: the template loses INHERIT when auto-creation is off.
        if !cfg.auto_create_topic_enable {
            if let Some(t) = inner.topics.get_mut(AUTO_CREATE_TOPIC_KEY_TOPIC) {
                t.perm = 6;
            }
        }
    }

    pub fn get(&self, topic: &str) -> Option<TopicConfig> {
        self.inner.read().topics.get(topic).cloned()
    }

    pub fn contains(&self, topic: &str) -> bool {
        self.inner.read().topics.contains_key(topic)
    }

    pub fn data_version(&self) -> DataVersion {
        self.inner.read().data_version
    }

    /// Every topic and the current version, consistently.
    pub fn snapshot(&self) -> (DataVersion, Vec<TopicConfig>) {
        let inner = self.inner.read();
        (inner.data_version, inner.topics.values().cloned().collect())
    }

    pub fn topic_names(&self) -> Vec<String> {
        self.inner.read().topics.keys().cloned().collect()
    }

    /// Creates or replaces a topic (UPDATE_AND_CREATE_TOPIC), persists.
    pub fn upsert(&self, tc: TopicConfig) {
        {
            let mut inner = self.inner.write();
            tracing::info!(topic = %tc.topic_name, read = tc.read_queue_nums, write = tc.write_queue_nums, perm = tc.perm, "topic config updated");
            inner.topics.insert(tc.topic_name.clone(), tc);
            next_version(&mut inner.data_version);
        }
        self.after_change();
    }

    /// Removes a topic; true if it existed.
    pub fn delete(&self, topic: &str) -> bool {
        let existed = {
            let mut inner = self.inner.write();
            let existed = inner.topics.remove(topic).is_some();
            if existed {
                next_version(&mut inner.data_version);
            }
            existed
        };
        if existed {
            tracing::info!(topic, "topic deleted");
            self.after_change();
        }
        existed
    }

    /// The send path's lookup with auto-creation (semantics.md §1.4).
    /// Returns the topic and whether it was just created.
    pub fn get_or_create_for_send(
        &self,
        topic: &str,
        default_topic: &str,
        requested_queue_nums: i32,
        topic_sys_flag: i32,
    ) -> Result<(TopicConfig, bool), CreateError> {
        if let Some(tc) = self.get(topic) {
            return Ok((tc, false));
        }
        let created = {
            let mut inner = self.inner.write();
            if let Some(tc) = inner.topics.get(topic) {
                return Ok((tc.clone(), false));
            }
            let template = inner.topics.get(default_topic).cloned();
            let tc = match template {
                Some(t) if perm::is_inherited(t.perm) => {
                    let n = requested_queue_nums.min(t.write_queue_nums).max(1);
                    TopicConfig {
                        topic_name: topic.to_string(),
                        read_queue_nums: n,
                        write_queue_nums: n,
                        perm: t.perm & !perm::INHERIT,
                        topic_filter_type: t.topic_filter_type.clone(),
                        topic_sys_flag,
                        order: false,
                    }
                }
                _ if topic.starts_with(RETRY_GROUP_TOPIC_PREFIX) => {
                    TopicConfig::new(topic, 1, 1, perm::READ | perm::WRITE)
                }
                _ => {
                    return Err(CreateError::NotExist(format!(
                        "topic[{topic}] not exist, apply first please! https://rocketmq.apache.org/docs/bestPractice/06FAQ"
                    )))
                }
            };
            tracing::info!(
                topic,
                template = default_topic,
                queues = tc.write_queue_nums,
                "auto-created topic"
            );
            inner.topics.insert(topic.to_string(), tc.clone());
            next_version(&mut inner.data_version);
            tc
        };
        self.after_change();
        Ok((created, true))
    }

    /// Retry/DLQ topics: created with `queues` queues and `perm` if missing.
    pub fn get_or_create_internal(&self, topic: &str, queues: i32, perm: i32) -> TopicConfig {
        if let Some(tc) = self.get(topic) {
            return tc;
        }
        let wanted = TopicConfig::new(topic, queues, queues, perm);
        self.create_internal_all(vec![wanted.clone()])
            .pop()
            .unwrap_or(wanted)
    }

    /// Creates those of `wanted` (retry topics of one heartbeat's groups)
    /// that do not exist, and writes the table once for all of them rather
    /// than once per topic: each write is the whole table and three fsyncs.
    /// Returns each topic's config, existing or created, in order.
    pub fn create_internal_all(&self, wanted: Vec<TopicConfig>) -> Vec<TopicConfig> {
        let mut created = false;
        let found = {
            let mut inner = self.inner.write();
            wanted
                .into_iter()
                .map(|tc| {
                    if let Some(existing) = inner.topics.get(&tc.topic_name) {
                        return existing.clone();
                    }
                    tracing::info!(topic = %tc.topic_name, queues = tc.write_queue_nums, "created internal topic");
                    inner.topics.insert(tc.topic_name.clone(), tc.clone());
                    next_version(&mut inner.data_version);
                    created = true;
                    tc
                })
                .collect()
        };
        if created {
            self.after_change();
        }
        found
    }

    fn after_change(&self) {
        if let Err(e) = self.persist() {
            tracing::error!(path = %self.path.display(), "cannot persist topics: {e}");
        }
        self.changed.notify_one();
    }

    /// Slave sync (cluster.md §3): adopts the master's table — a
    /// TopicConfigSerializeWrapper value — when its DataVersion differs from
    /// ours, replacing every topic and taking the master's version, then
    /// persists. Returns whether anything was replaced. Does not wake the
    /// registration task: a slave's topics never reach the routes.
    pub fn adopt_master(&self, wrapper: &Value) -> std::io::Result<bool> {
        let Some(dv) = wrapper.get("dataVersion") else {
            return Ok(false);
        };
        let version = DataVersion::from_value(dv);
        let mut topics = BTreeMap::new();
        if let Some(Value::Object(table)) = wrapper.get("topicConfigTable") {
            for (name, tc) in table {
                let tc = TopicConfig::from_value(name, tc);
                topics.insert(tc.topic_name.clone(), tc);
            }
        }
        {
            let mut inner = self.inner.write();
            if inner.data_version == version {
                return Ok(false);
            }
            inner.topics = topics;
            inner.data_version = version;
        }
        self.persist()?;
        Ok(true)
    }

    /// TopicConfigSerializeWrapper JSON (keys sorted; standard JSON).
    pub fn wrapper_value(&self) -> Value {
        let (dv, topics) = self.snapshot();
        let mut table = serde_json::Map::new();
        for t in topics {
            table.insert(t.topic_name.clone(), t.to_value());
        }
        json!({
            "dataVersion": {"counter": dv.counter, "timestamp": dv.timestamp},
            "topicConfigTable": table,
        })
    }

    /// Writes topics.json now.
    pub fn persist(&self) -> std::io::Result<()> {
        let _guard = self.persist_lock.lock();
        let text = fastjson::to_pretty(&self.wrapper_value(), &|_| false);
        config_file::persist(&self.path, &text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_names() {
        assert!(validate_topic_name("TopicTest").is_ok());
        assert!(validate_topic_name("%RETRY%G-1|x_y").is_ok());
        assert!(validate_topic_name("").is_err());
        assert!(validate_topic_name("a b").is_err());
        assert!(validate_topic_name(&"x".repeat(128)).is_err());
    }

    #[test]
    fn auto_create_from_template_and_reload() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = BrokerConfig::default();
        let t = TopicConfigTable::load(dir.path().to_path_buf(), &cfg);
        let v0 = t.data_version();
        let (tc, created) = t
            .get_or_create_for_send("NewTopic", "TBW102", 4, 0)
            .unwrap();
        assert!(created);
        assert_eq!(
            (tc.read_queue_nums, tc.write_queue_nums, tc.perm),
            (4, 4, 6)
        );
        assert!(t.data_version().counter > v0.counter);
        assert!(t.get_or_create_for_send("X", "NoSuch", 4, 0).is_err());
        let t2 = TopicConfigTable::load(dir.path().to_path_buf(), &cfg);
        assert_eq!(t2.get("NewTopic"), Some(tc));
        assert_eq!(t2.get("TBW102").unwrap().perm, 7);
    }
}
