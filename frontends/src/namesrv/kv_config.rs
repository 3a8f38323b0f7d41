//! The name server's KV config (namespace → key → value), the only state it
//! persists (`kvConfig.json`, `{"configTable":{ns:{k:v}}}` as Java writes it).
//! Namespace `ORDER_TOPIC_CONFIG` feeds `orderTopicConf` in routes.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use parking_lot::RwLock;

/// Namespace holding per-topic order configuration.
pub const NAMESPACE_ORDER_TOPIC_CONFIG: &str = "ORDER_TOPIC_CONFIG";

type Table = BTreeMap<String, BTreeMap<String, String>>;

/// KV store; writes are persisted when a path is set.
#[derive(Default)]
pub struct KvConfig {
    table: RwLock<Table>,
    path: Option<PathBuf>,
}

impl KvConfig {
    /// An in-memory store.
    pub fn in_memory() -> Self {
        Self::default()
    }

    /// Loads `path` (or its `.bak`) if it exists; an unreadable or malformed
    /// file is logged and ignored, as Java does. Writes go back to it.
    pub fn load(path: &Path) -> Self {
        let mut table = Table::new();
        if let Some(serde_json::Value::Object(ns)) = fastjson::config_file::load(path)
            .and_then(|mut v| v.get_mut("configTable").map(serde_json::Value::take))
        {
            for (name, kv) in ns {
                if let serde_json::Value::Object(kv) = kv {
                    let entry = table.entry(name).or_default();
                    for (k, v) in kv {
                        if let Some(s) = v.as_str() {
                            entry.insert(k, s.to_string());
                        }
                    }
                }
            }
        }
        KvConfig {
            table: RwLock::new(table),
            path: Some(path.to_path_buf()),
        }
    }

    pub fn get(&self, namespace: &str, key: &str) -> Option<String> {
        self.table.read().get(namespace)?.get(key).cloned()
    }

    /// All entries of `namespace` (empty map if none).
    pub fn namespace(&self, namespace: &str) -> BTreeMap<String, String> {
        self.table
            .read()
            .get(namespace)
            .cloned()
            .unwrap_or_default()
    }

    pub fn put(&self, namespace: &str, key: &str, value: &str) {
        let mut t = self.table.write();
        t.entry(namespace.to_string())
            .or_default()
            .insert(key.to_string(), value.to_string());
        self.persist(&t);
    }

    pub fn delete(&self, namespace: &str, key: &str) {
        let mut t = self.table.write();
        if let Some(ns) = t.get_mut(namespace) {
            ns.remove(key);
            if ns.is_empty() {
                t.remove(namespace);
            }
        }
        self.persist(&t);
    }

    /// Writes the table as Java does (`.tmp`, `.bak`, rename; see
    /// [`fastjson::config_file::persist`]). Failures are logged, the
    /// in-memory state stays authoritative.
    fn persist(&self, t: &Table) {
        let Some(path) = &self.path else { return };
        let text = serde_json::json!({ "configTable": t }).to_string();
        if let Err(e) = fastjson::config_file::persist(path, &text) {
            tracing::error!(path = %path.display(), "cannot persist KV config: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_survive_a_reload_and_keep_a_backup() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kvConfig.json");
        let kv = KvConfig::load(&path);
        kv.put(NAMESPACE_ORDER_TOPIC_CONFIG, "T", "broker-a:4");
        kv.put(NAMESPACE_ORDER_TOPIC_CONFIG, "U", "broker-b:2");
        assert!(
            dir.path().join("kvConfig.json.bak").exists(),
            "Java keeps a .bak"
        );
        let again = KvConfig::load(&path);
        assert_eq!(
            again.get(NAMESPACE_ORDER_TOPIC_CONFIG, "T").as_deref(),
            Some("broker-a:4")
        );
        // A damaged file falls back to the backup (one write behind).
        std::fs::write(&path, "{\"configTable\":").unwrap();
        let from_bak = KvConfig::load(&path);
        assert_eq!(
            from_bak.get(NAMESPACE_ORDER_TOPIC_CONFIG, "T").as_deref(),
            Some("broker-a:4")
        );
        assert_eq!(from_bak.get(NAMESPACE_ORDER_TOPIC_CONFIG, "U"), None);
    }
}
