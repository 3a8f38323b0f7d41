//! Queue locks for ordered consumption (semantics.md §9): a consumer holds
//! a queue while it keeps re-locking it; a lock not refreshed for 60 s
//! expires and may be taken over. Memory only; advisory (the broker never
//! checks locks on pull or commit).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

/// Java `MessageQueue`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MessageQueue {
    pub topic: String,
    pub broker_name: String,
    pub queue_id: i32,
}

struct Holder {
    client_id: String,
    last_update: Instant,
}

/// The lock table: group → queue → holder.
pub struct RebalanceLocks {
    table: Mutex<HashMap<String, HashMap<MessageQueue, Holder>>>,
    max_live: Duration,
}

impl RebalanceLocks {
    /// `max_live`: REBALANCE_LOCK_MAX_LIVE_TIME (60 s).
    pub fn new(max_live: Duration) -> Self {
        RebalanceLocks {
            table: Mutex::default(),
            max_live,
        }
    }

    /// Locks what it can of `mqs` for `client_id`; returns the granted queues.
    pub fn try_lock_batch(
        &self,
        group: &str,
        mqs: &[MessageQueue],
        client_id: &str,
    ) -> Vec<MessageQueue> {
        let now = Instant::now();
        let mut table = self.table.lock();
        let g = table.entry(group.to_string()).or_default();
        let mut granted = Vec::new();
        for mq in mqs {
            match g.get_mut(mq) {
                Some(h) if h.client_id == client_id => {
                    h.last_update = now;
                    granted.push(mq.clone());
                }
                Some(h) if now.duration_since(h.last_update) > self.max_live => {
                    tracing::info!(group, ?mq, old = %h.client_id, new = client_id, "queue lock expired, taken over");
                    h.client_id = client_id.to_string();
                    h.last_update = now;
                    granted.push(mq.clone());
                }
                Some(_) => {}
                None => {
                    g.insert(
                        mq.clone(),
                        Holder {
                            client_id: client_id.to_string(),
                            last_update: now,
                        },
                    );
                    granted.push(mq.clone());
                }
            }
        }
        granted
    }

    /// Releases the queues of `mqs` held by `client_id`.
    pub fn unlock_batch(&self, group: &str, mqs: &[MessageQueue], client_id: &str) {
        let mut table = self.table.lock();
        if let Some(g) = table.get_mut(group) {
            for mq in mqs {
                if g.get(mq).is_some_and(|h| h.client_id == client_id) {
                    g.remove(mq);
                }
            }
            if g.is_empty() {
                table.remove(group);
            }
        }
    }

    /// Whether `client_id` holds an unexpired lock on `mq`.
    pub fn is_locked_by(&self, group: &str, mq: &MessageQueue, client_id: &str) -> bool {
        let table = self.table.lock();
        table
            .get(group)
            .and_then(|g| g.get(mq))
            .is_some_and(|h| h.client_id == client_id && h.last_update.elapsed() <= self.max_live)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mq(q: i32) -> MessageQueue {
        MessageQueue {
            topic: "T".into(),
            broker_name: "b".into(),
            queue_id: q,
        }
    }

    #[test]
    fn lock_exclusive_until_expiry() {
        let l = RebalanceLocks::new(Duration::from_millis(50));
        assert_eq!(l.try_lock_batch("G", &[mq(0), mq(1)], "c1").len(), 2);
        assert!(l.try_lock_batch("G", &[mq(0)], "c2").is_empty());
        assert_eq!(l.try_lock_batch("G", &[mq(0)], "c1").len(), 1);
        std::thread::sleep(Duration::from_millis(80));
        assert_eq!(l.try_lock_batch("G", &[mq(0)], "c2"), vec![mq(0)]);
        l.unlock_batch("G", &[mq(0)], "c2");
        assert_eq!(l.try_lock_batch("G", &[mq(0)], "c3").len(), 1);
    }
}
