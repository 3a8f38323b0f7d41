//! Filters registered by heartbeats (RocketMQ's ConsumerFilterManager),
//! and a cache of compiled selectors.
//!
//! A heartbeat's SQL92 subscriptions are compiled and kept per (topic,
//! group) with the client's subVersion. The heartbeat itself always
//! succeeds: an expression that does not compile is logged and not
//! registered (a changed expression that does not compile removes the old
//! filter), so a later pull that relies on the registration (no
//! SUBSCRIPTION flag) gets FILTER_DATA_NOT_EXIST. Clients learn of a bad
//! expression earlier through CHECK_CLIENT_CONFIG, which the Java client
//! sends when it starts.
//!
//! Not kept, unlike RocketMQ: `consumerFilter.json` (filters are rebuilt
//! from the next heartbeats after a restart), the bloom-filter data, and
//! the "dead" marks of unsubscribed topics (they only feed the bloom
//! filter and the 24 h clean-up).

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::{Mutex, RwLock};

use super::{is_sql92, Selector, SelectorError};
use crate::broker::SubscriptionData;

/// Compiled selectors kept by the cache before it starts over.
const CACHE_CAPACITY: usize = 256;
/// Longer expressions are compiled each time, not cached (bounds memory).
const CACHE_MAX_EXPRESSION_LEN: usize = 4096;

/// One registered filter.
#[derive(Debug, Clone)]
pub struct FilterData {
    pub expression: String,
    pub expression_type: String,
    /// The subVersion of the heartbeat that registered it.
    pub client_version: i64,
    pub selector: Arc<Selector>,
}

/// The registry: topic → group → filter.
#[derive(Default)]
pub struct ConsumerFilters {
    by_topic: RwLock<HashMap<String, HashMap<String, FilterData>>>,
    cache: Mutex<HashMap<String, Result<Arc<Selector>, SelectorError>>>,
}

impl std::fmt::Debug for ConsumerFilters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ConsumerFilters({} topics)", self.by_topic.read().len())
    }
}

impl ConsumerFilters {
    pub fn new() -> Self {
        Self::default()
    }

    /// Compiles an expression of `expression_type`, reusing earlier
    /// results (failures included, as RocketMQ's parse cache does).
    pub fn compile(
        &self,
        expression_type: &str,
        expression: &str,
    ) -> Result<Arc<Selector>, SelectorError> {
        if !is_sql92(expression_type) {
            return Err(SelectorError::new(format!(
                "expression type {expression_type} is not supported (only TAG and SQL92 are)"
            )));
        }
        if let Some(r) = self.cache.lock().get(expression) {
            return r.clone();
        }
        let r = Selector::compile(expression).map(Arc::new);
        if expression.len() > CACHE_MAX_EXPRESSION_LEN {
            return r;
        }
        let mut cache = self.cache.lock();
        if cache.len() >= CACHE_CAPACITY {
            cache.clear();
        }
        cache.insert(expression.to_string(), r.clone());
        r
    }

    /// Registers a group's non-TAG subscriptions from one heartbeat.
    pub fn register_all(&self, group: &str, subscriptions: &[SubscriptionData]) {
        for s in subscriptions.iter().filter(|s| !s.is_tag_type()) {
            self.register(
                &s.topic,
                group,
                &s.sub_string,
                &s.expression_type,
                s.sub_version,
            );
        }
    }

    /// Registers one filter (FilterDataMapByTopic.register): a newer
    /// version replaces the old filter (or removes it when the new
    /// expression does not compile); an older or equal version is ignored.
    /// Returns whether the registry changed.
    pub fn register(
        &self,
        topic: &str,
        group: &str,
        expression: &str,
        expression_type: &str,
        client_version: i64,
    ) -> bool {
        if expression.is_empty() {
            return false;
        }
        let mut all = self.by_topic.write();
        let groups = all.entry(topic.to_string()).or_default();
        if let Some(old) = groups.get_mut(group) {
            if client_version <= old.client_version {
                return false;
            }
            if old.expression == expression && old.expression_type == expression_type {
                old.client_version = client_version;
                return true;
            }
        }
        match self.compile(expression_type, expression) {
            Ok(selector) => {
                tracing::info!(topic, group, expression, "consumer filter registered");
                groups.insert(
                    group.to_string(),
                    FilterData {
                        expression: expression.to_string(),
                        expression_type: expression_type.to_string(),
                        client_version,
                        selector,
                    },
                );
                true
            }
            Err(e) => {
                tracing::error!(
                    topic,
                    group,
                    expression,
                    "consumer filter not registered: {e}"
                );
                groups.remove(group);
                false
            }
        }
    }

    /// The filter registered for (topic, group).
    pub fn get(&self, topic: &str, group: &str) -> Option<FilterData> {
        self.by_topic.read().get(topic)?.get(group).cloned()
    }

    /// The group's registered selectors, by topic.
    pub fn selectors_of_group(&self, group: &str) -> HashMap<String, Arc<Selector>> {
        self.by_topic
            .read()
            .iter()
            .filter_map(|(topic, groups)| {
                let f = groups.get(group)?;
                Some((topic.clone(), f.selector.clone()))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn register_follows_versions() {
        let f = ConsumerFilters::new();
        assert!(f.register("T", "G", "a = 1", "SQL92", 5));
        assert_eq!(f.get("T", "G").unwrap().client_version, 5);
        // Same or older version: ignored, even with another expression.
        assert!(!f.register("T", "G", "a = 2", "SQL92", 5));
        assert_eq!(f.get("T", "G").unwrap().expression, "a = 1");
        // Newer, same expression: version bumped.
        assert!(f.register("T", "G", "a = 1", "SQL92", 6));
        assert_eq!(f.get("T", "G").unwrap().client_version, 6);
        // Newer, new expression: replaced.
        assert!(f.register("T", "G", "a = 2", "SQL92", 7));
        assert_eq!(f.get("T", "G").unwrap().expression, "a = 2");
        // Newer but invalid: the old filter is removed.
        assert!(!f.register("T", "G", "a = ", "SQL92", 8));
        assert!(f.get("T", "G").is_none());
        // Invalid from the start: nothing registered.
        assert!(!f.register("T", "H", "a >", "SQL92", 1));
        assert!(f.get("T", "H").is_none());
        // Unknown types do not compile.
        assert!(!f.register("T", "H", "a = 1", "XPATH", 1));
        assert!(f.get("T", "H").is_none());
    }

    #[test]
    fn compile_cache_returns_the_same_results() {
        let f = ConsumerFilters::new();
        let a = f.compile("SQL92", "a = 1").unwrap();
        let b = f.compile("sql92", "a = 1").unwrap();
        assert!(Arc::ptr_eq(&a, &b));
        let e1 = f.compile("SQL92", "a = = 1").unwrap_err();
        let e2 = f.compile("SQL92", "a = = 1").unwrap_err();
        assert_eq!(e1, e2);
        for i in 0..(CACHE_CAPACITY * 2) {
            f.compile("SQL92", &format!("a = {i}")).unwrap();
        }
        assert!(f.cache.lock().len() <= CACHE_CAPACITY);
        let long = vec!["a = 1"; 1000].join(" AND ");
        assert!(f.compile("SQL92", &long).is_err());
        assert!(!f.cache.lock().contains_key(&long));
    }
}
