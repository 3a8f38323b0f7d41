//! Consumer offsets of clustering consumers (`config/consumerOffset.json`,
//! semantics.md §10): `"<topic>@<group>"` → queueId → next offset to
//! consume. Updated by UPDATE_CONSUMER_OFFSET and by pulls with the
//! COMMIT_OFFSET bit; a lower value simply overwrites. Persisted every
//! `flushConsumerOffsetInterval` ms when changed, and at shutdown.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};

use parking_lot::{Mutex, RwLock};
use serde_json::Value;

use fastjson::as_i64;
use fastjson::config_file;

/// The offset table.
pub struct ConsumerOffsetTable {
    path: PathBuf,
    table: RwLock<HashMap<String, BTreeMap<i32, i64>>>,
    dirty: AtomicBool,
    persist_lock: Mutex<()>,
}

fn key(topic: &str, group: &str) -> String {
    format!("{topic}@{group}")
}

impl ConsumerOffsetTable {
    /// Loads `consumerOffset.json` (or its backup). A file that exists but
    /// neither it nor its backup parses is an error: starting with no
    /// offsets would send every consumer group to its consumeFromWhere
    /// (by default the queues' ends), skipping what it had not consumed.
    pub fn load(config_dir: PathBuf) -> Result<Self, config_file::UnreadableConfig> {
        let path = config_dir.join("consumerOffset.json");
        let mut table = HashMap::new();
        if let Some(v) = config_file::load_or_refuse(&path)? {
            table = parse_offset_table(&v);
        }
        Ok(ConsumerOffsetTable {
            path,
            table: RwLock::new(table),
            dirty: AtomicBool::new(false),
            persist_lock: Mutex::new(()),
        })
    }

    /// Stores `offset` for (group, topic, queue).
    pub fn commit(&self, group: &str, topic: &str, queue_id: i32, offset: i64) {
        let k = key(topic, group);
        {
            let mut t = self.table.write();
            let queues = t.entry(k).or_default();
            if let Some(prev) = queues.insert(queue_id, offset) {
                if offset < prev {
                    tracing::debug!(
                        group,
                        topic,
                        queue_id,
                        prev,
                        offset,
                        "consumer offset moved backwards"
                    );
                }
            }
        }
        self.dirty.store(true, Ordering::Release);
    }

    /// The stored offset, if any.
    pub fn query(&self, group: &str, topic: &str, queue_id: i32) -> Option<i64> {
        self.table
            .read()
            .get(&key(topic, group))
            .and_then(|q| q.get(&queue_id).copied())
    }

    /// Every queue's offset of (group, topic).
    pub fn query_all(&self, group: &str, topic: &str) -> BTreeMap<i32, i64> {
        self.table
            .read()
            .get(&key(topic, group))
            .cloned()
            .unwrap_or_default()
    }

    /// Drops every group's offsets of `topic` (topic deleted).
    pub fn remove_topic(&self, topic: &str) {
        let prefix = format!("{topic}@");
        let mut t = self.table.write();
        let before = t.len();
        t.retain(|k, _| !k.starts_with(&prefix));
        if t.len() != before {
            self.dirty.store(true, Ordering::Release);
        }
    }

    /// Slave sync (cluster.md §3): puts every `topic@group` entry of the
    /// master's `{"offsetTable":…}` into ours (Java's `putAll`: an entry
    /// replaces ours whole, entries only we have stay), then persists.
    /// Returns the number of entries taken.
    pub fn merge_from_master(&self, v: &Value) -> std::io::Result<usize> {
        let incoming = parse_offset_table(v);
        let n = incoming.len();
        self.table.write().extend(incoming);
        self.persist()?;
        Ok(n)
    }

    /// `{"offsetTable":{...}}` as fastjson writes it (compact, for GET_ALL_CONSUMER_OFFSET).
    pub fn to_json(&self, pretty: bool) -> String {
        let v = self.to_value();
        if pretty {
            fastjson::to_pretty(&v, &fastjson::consumer_offset_int_keys)
        } else {
            fastjson::to_compact(&v, &fastjson::consumer_offset_int_keys)
        }
    }

    fn to_value(&self) -> Value {
        let t = self.table.read();
        let mut outer = serde_json::Map::new();
        for (k, queues) in t.iter() {
            let mut inner = serde_json::Map::new();
            for (q, off) in queues {
                inner.insert(q.to_string(), Value::from(*off));
            }
            outer.insert(k.clone(), Value::Object(inner));
        }
        serde_json::json!({ "offsetTable": outer })
    }

    /// Writes the file if anything changed since the last write.
    pub fn persist_if_dirty(&self) -> std::io::Result<()> {
        if self.dirty.swap(false, Ordering::AcqRel) {
            if let Err(e) = self.persist() {
                self.dirty.store(true, Ordering::Release);
                return Err(e);
            }
        }
        Ok(())
    }

    pub fn persist(&self) -> std::io::Result<()> {
        let _guard = self.persist_lock.lock();
        config_file::persist(&self.path, &self.to_json(true))
    }
}

/// Parses `{"offsetTable":{"t@g":{0:1}}}`.
pub fn parse_offset_table(v: &Value) -> HashMap<String, BTreeMap<i32, i64>> {
    let mut table = HashMap::new();
    if let Some(Value::Object(outer)) = v.get("offsetTable") {
        for (k, queues) in outer {
            let mut m = BTreeMap::new();
            if let Value::Object(qs) = queues {
                for (q, off) in qs {
                    if let (Ok(q), Some(off)) = (q.trim().parse::<i32>(), as_i64(Some(off))) {
                        m.insert(q, off);
                    }
                }
            }
            table.insert(k.clone(), m);
        }
    }
    table
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn persist_and_reload_with_unquoted_keys() {
        let dir = tempfile::tempdir().unwrap();
        let t = ConsumerOffsetTable::load(dir.path().to_path_buf()).unwrap();
        t.commit("CG", "TopicTest", 0, 250);
        t.commit("CG", "TopicTest", 1, 248);
        t.persist_if_dirty().unwrap();
        let text = std::fs::read_to_string(dir.path().join("consumerOffset.json")).unwrap();
        assert!(text.contains("0:250"), "{text}");
        let t2 = ConsumerOffsetTable::load(dir.path().to_path_buf()).unwrap();
        assert_eq!(t2.query("CG", "TopicTest", 1), Some(248));
        assert_eq!(t2.query("CG", "TopicTest", 2), None);
    }
}
