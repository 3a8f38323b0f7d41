//! Long polling of PULL_MESSAGE (semantics.md §6.3).
//!
//! A pull that finds nothing is not answered at once: its future waits here,
//! on the connection's own task, until the store's dispatcher reports a new
//! message for that queue which passes the pull's filter (tag codes, then
//! SQL92 over the message's properties), or until the client's suspend
//! timeout. The dispatcher's notification is a lock and a
//! hash probe when someone waits, and one atomic load when nobody does.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use engine::MessageFilter;
use parking_lot::Mutex;
use tokio::sync::oneshot;

/// A pull's filter, shared with the parked waiter.
pub type SharedFilter = Arc<dyn MessageFilter + Send + Sync>;

/// One parked pull.
struct Waiter {
    /// The pull's offset: a message at or beyond it wakes the pull.
    offset: u64,
    /// The pull's filter.
    filter: SharedFilter,
    wake: oneshot::Sender<()>,
}

/// Parked pull requests, by topic and queue id.
#[derive(Default)]
pub struct LongPolling {
    waiting: Mutex<HashMap<String, HashMap<i32, Vec<Waiter>>>>,
    count: AtomicUsize,
}

impl std::fmt::Debug for LongPolling {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "LongPolling({} parked)",
            self.count.load(Ordering::Relaxed)
        )
    }
}

impl LongPolling {
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of parked pulls.
    pub fn parked(&self) -> usize {
        self.count.load(Ordering::Relaxed)
    }

    /// Parks a pull until a matching message reaches the queue or `deadline`.
    /// `max_offset` re-checks the queue after parking, so a message dispatched
    /// between the failed read and the parking is not missed.
    pub async fn wait(
        &self,
        topic: &str,
        queue_id: i32,
        offset: u64,
        filter: SharedFilter,
        deadline: Instant,
        max_offset: impl Fn() -> u64,
    ) {
        let (tx, rx) = oneshot::channel();
        {
            let mut map = self.waiting.lock();
            let list = map
                .entry(topic.to_string())
                .or_default()
                .entry(queue_id)
                .or_default();
            let before = list.len();
            list.retain(|w| !w.wake.is_closed());
            self.count.fetch_sub(before - list.len(), Ordering::Relaxed);
            list.push(Waiter {
                offset,
                filter,
                wake: tx,
            });
            self.count.fetch_add(1, Ordering::Relaxed);
        }
        if max_offset() > offset {
            return; // arrived meanwhile; the stale waiter is pruned later
        }
        let _ = tokio::time::timeout_at(deadline.into(), rx).await;
    }

    /// Called by the store's dispatcher for each new message: wakes the
    /// pulls on that queue whose offset it reaches and whose filter it
    /// passes (consume-queue stage on `tags_code`, then `properties`).
    pub fn notify(
        &self,
        topic: &str,
        queue_id: i32,
        queue_offset: i64,
        tags_code: i64,
        properties: &str,
    ) {
        if self.count.load(Ordering::Relaxed) == 0 {
            return;
        }
        let mut map = self.waiting.lock();
        let Some(list) = map.get_mut(topic).and_then(|q| q.get_mut(&queue_id)) else {
            return;
        };
        let before = list.len();
        let mut kept = Vec::with_capacity(list.len());
        for w in list.drain(..) {
            let reaches = queue_offset as u64 >= w.offset;
            if w.wake.is_closed() {
                continue;
            }
            if reaches
                && w.filter.matches_tags_code(tags_code)
                && w.filter.matches_properties(properties)
            {
                let _ = w.wake.send(());
            } else {
                kept.push(w);
            }
        }
        self.count.fetch_sub(before - kept.len(), Ordering::Relaxed);
        *list = kept;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use engine::{AcceptAll, TagCodes};
    use std::time::Duration;

    /// Accepts messages whose property `p` is `yes`.
    struct PropertyIsYes;
    impl MessageFilter for PropertyIsYes {
        fn matches_tags_code(&self, _: i64) -> bool {
            true
        }
        fn matches_properties(&self, properties: &str) -> bool {
            properties == "p\u{1}yes"
        }
    }

    #[tokio::test]
    async fn wakes_on_matching_message_only() {
        let lp = Arc::new(LongPolling::new());
        let l = lp.clone();
        let start = Instant::now();
        let waiter = tokio::spawn(async move {
            l.wait(
                "T",
                1,
                5,
                Arc::new(TagCodes(vec![7])),
                Instant::now() + Duration::from_secs(10),
                || 5,
            )
            .await;
        });
        while lp.parked() == 0 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        lp.notify("T", 1, 5, 8, ""); // wrong tag
        lp.notify("T", 2, 5, 7, ""); // wrong queue
        lp.notify("T", 1, 4, 7, ""); // below the offset
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!waiter.is_finished());
        lp.notify("T", 1, 5, 7, "");
        tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .unwrap()
            .unwrap();
        assert!(start.elapsed() < Duration::from_secs(5));
        assert_eq!(lp.parked(), 0);
    }

    #[tokio::test]
    async fn times_out_at_deadline() {
        let lp = LongPolling::new();
        let start = Instant::now();
        lp.wait(
            "T",
            0,
            0,
            Arc::new(AcceptAll),
            Instant::now() + Duration::from_millis(50),
            || 0,
        )
        .await;
        assert!(start.elapsed() >= Duration::from_millis(45));
    }

    #[tokio::test]
    async fn wakes_on_matching_properties_only() {
        let lp = Arc::new(LongPolling::new());
        let l = lp.clone();
        let waiter = tokio::spawn(async move {
            l.wait(
                "T",
                0,
                0,
                Arc::new(PropertyIsYes),
                Instant::now() + Duration::from_secs(10),
                || 0,
            )
            .await;
        });
        while lp.parked() == 0 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        lp.notify("T", 0, 0, 0, "p\u{1}no");
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!waiter.is_finished());
        lp.notify("T", 0, 1, 0, "p\u{1}yes");
        tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(lp.parked(), 0);
    }
}
