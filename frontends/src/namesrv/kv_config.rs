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

    /// Loads `path` if it exists (an unreadable or malformed file is logged
    /// and ignored, as Java does); writes go back to it.
    pub fn load(path: &Path) -> Self {
        let mut table = Table::new();
        match std::fs::read(path) {
            Ok(bytes) => match super::wire::parse_lenient(&bytes) {
                Ok(v) => {
                    if let Some(serde_json::Value::Object(ns)) = v.get("configTable") {
                        for (name, kv) in ns {
                            if let serde_json::Value::Object(kv) = kv {
                                let entry = table.entry(name.clone()).or_default();
                                for (k, v) in kv {
                                    if let Some(s) = v.as_str() {
                                        entry.insert(k.clone(), s.to_string());
                                    }
                                }
                            }
                        }
                    }
                }
                Err(e) => {
                    tracing::warn!(path = %path.display(), "ignoring malformed KV config: {e}")
                }
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => tracing::warn!(path = %path.display(), "cannot read KV config: {e}"),
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

    /// Writes the table (temp file + rename); failures are logged, the
    /// in-memory state stays authoritative.
    fn persist(&self, t: &Table) {
        let Some(path) = &self.path else { return };
        let text = serde_json::json!({ "configTable": t }).to_string();
        let tmp = path.with_extension("json.tmp");
        let result = path
            .parent()
            .map_or(Ok(()), std::fs::create_dir_all)
            .and_then(|_| std::fs::write(&tmp, text))
            .and_then(|_| std::fs::rename(&tmp, path));
        if let Err(e) = result {
            tracing::error!(path = %path.display(), "cannot persist KV config: {e}");
        }
    }
}
