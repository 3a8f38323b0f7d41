//! Master/slave replication, the store's part (cluster.md §4–§6). No network
//! here: the frontend's HA service moves bytes between these calls.
//!
//! * **Master** — [`MessageStore::transfer_start`] says where streaming to a
//!   slave begins, [`MessageStore::read_for_transfer`] lends the raw commit
//!   log bytes to send (a slice of the mapping, never crossing a file),
//!   [`Replication::wait_for_append`] parks a sender until new bytes are
//!   published, and the sender feeds every offset a slave reports into
//!   [`Replication::record_ack`].
//! * **SYNC_MASTER** — a put whose `WAIT` is absent or true is answered only
//!   once some slave acknowledged its end offset: the store asks
//!   [`Replication::is_slave_ok`] right after the append (no slave connected,
//!   or the slave more than `haSlaveFallbehindMax` behind ⇒
//!   `SLAVE_NOT_AVAILABLE`), then waits on the acknowledged offset like a
//!   group commit waits on the flushed one: many waiters, one atomic, all
//!   woken when an ack advances it, each bounded by `slaveTimeout`
//!   (⇒ `FLUSH_SLAVE_TIMEOUT`).
//! * **Slave** — [`MessageStore::append_replicated`] copies bytes received
//!   from the master into its own commit log at exactly its max offset. The
//!   bytes are already-encoded records, cut wherever the master's batch
//!   ended (mid-record is normal); the slave's own dispatcher builds consume
//!   queues and the index from whole records only and leaves a partial tail
//!   for the next frame. After a crash, recovery zeroes a partial tail like
//!   any torn write, so the slave resumes from its last whole record.
//!
//! [`MessageStore::transfer_start`]: crate::MessageStore::transfer_start
//! [`MessageStore::read_for_transfer`]: crate::MessageStore::read_for_transfer
//! [`MessageStore::append_replicated`]: crate::MessageStore::append_replicated

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};
use tokio::sync::Notify;

/// The master's view of its slaves: how far they acknowledged, how many are
/// connected, and who waits for either acknowledgements or new appends.
#[derive(Default)]
pub struct Replication {
    /// Highest offset any slave reported (Java's push2SlaveMaxOffset).
    acked: AtomicU64,
    /// Live HA connections.
    slaves: AtomicUsize,
    ack_notify: Notify,
    ack_lock: Mutex<()>,
    ack_cond: Condvar,
    /// Senders parked in [`Replication::wait_for_append`]; appends only pay
    /// for a wake-up when someone waits.
    append_waiters: AtomicUsize,
    append_notify: Notify,
}

/// One connected slave, counted for the slave-OK rule until dropped.
pub struct SlaveSession {
    replication: Arc<Replication>,
}

impl Drop for SlaveSession {
    fn drop(&mut self) {
        self.replication.slaves.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Replication {
    pub fn new() -> Self {
        Self::default()
    }

    /// Highest commit log offset a slave has acknowledged.
    pub fn acked_offset(&self) -> u64 {
        self.acked.load(Ordering::Acquire)
    }

    /// A slave reported that it holds everything below `offset`; wakes the
    /// puts waiting for it.
    pub fn record_ack(&self, offset: u64) {
        if self.acked.fetch_max(offset, Ordering::AcqRel) < offset {
            drop(self.ack_lock.lock());
            self.ack_cond.notify_all();
            self.ack_notify.notify_waiters();
        }
    }

    /// Counts a slave connection for as long as the returned guard lives.
    pub fn slave_connected(self: &Arc<Self>) -> SlaveSession {
        self.slaves.fetch_add(1, Ordering::AcqRel);
        SlaveSession {
            replication: self.clone(),
        }
    }

    /// Number of live slave connections.
    pub fn connected_slaves(&self) -> usize {
        self.slaves.load(Ordering::Acquire)
    }

    /// Java's `HAService.isSlaveOK`: a slave is connected and the
    /// acknowledged offset is less than `fallbehind_max` bytes behind `end`.
    pub fn is_slave_ok(&self, end: u64, fallbehind_max: u64) -> bool {
        self.connected_slaves() > 0 && end.saturating_sub(self.acked_offset()) < fallbehind_max
    }

    /// Waits until a slave acknowledged `offset`; false after `timeout`.
    pub async fn wait_for_ack(&self, offset: u64, timeout: Duration) -> bool {
        let fut = async {
            loop {
                let notified = self.ack_notify.notified();
                tokio::pin!(notified);
                notified.as_mut().enable();
                if self.acked_offset() >= offset {
                    return;
                }
                notified.await;
            }
        };
        tokio::time::timeout(timeout, fut).await.is_ok() || self.acked_offset() >= offset
    }

    /// [`Replication::wait_for_ack`] for plain threads.
    pub fn wait_for_ack_blocking(&self, offset: u64, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut guard = self.ack_lock.lock();
        while self.acked_offset() < offset {
            if self.ack_cond.wait_until(&mut guard, deadline).timed_out() {
                return self.acked_offset() >= offset;
            }
        }
        true
    }

    /// Called after every append that published new bytes.
    pub(crate) fn on_append(&self) {
        // Orders the caller's publication of the new max offset before this
        // load; the waiter increments before it checks the max offset, so
        // one of the two sees the other (no lost wake-up).
        std::sync::atomic::fence(Ordering::SeqCst);
        if self.append_waiters.load(Ordering::Acquire) > 0 {
            self.append_notify.notify_waiters();
        }
    }

    /// Waits until `max_offset()` exceeds `after` or `timeout` passes
    /// (a sender with nothing to send; Java waits up to 100 ms).
    pub async fn wait_for_append(
        &self,
        max_offset: impl Fn() -> u64,
        after: u64,
        timeout: Duration,
    ) {
        self.append_waiters.fetch_add(1, Ordering::SeqCst);
        let _count = Decrement(&self.append_waiters);
        let fut = async {
            loop {
                let notified = self.append_notify.notified();
                tokio::pin!(notified);
                notified.as_mut().enable();
                if max_offset() > after {
                    return;
                }
                notified.await;
            }
        };
        let _ = tokio::time::timeout(timeout, fut).await;
    }
}

/// Decrements a counter when dropped (also when a future is cancelled).
struct Decrement<'a>(&'a AtomicUsize);

impl Drop for Decrement<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Where streaming to a slave that reported `slave_offset` starts (Java's
/// HAConnection.WriteSocketService): a slave with an empty commit log (0)
/// gets the beginning of the master's last file, not the whole history;
/// any other slave continues where it is.
pub fn transfer_start(slave_offset: u64, master_max: u64, file_size: u64) -> u64 {
    if slave_offset == 0 {
        master_max - master_max % file_size.max(1)
    } else {
        slave_offset
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_slave_starts_at_last_file() {
        assert_eq!(transfer_start(0, 0, 1024), 0);
        assert_eq!(transfer_start(0, 1000, 1024), 0);
        assert_eq!(transfer_start(0, 5000, 1024), 4096);
        assert_eq!(transfer_start(77, 5000, 1024), 77);
    }

    #[test]
    fn slave_ok_needs_a_connection_and_a_close_slave() {
        let r = Arc::new(Replication::new());
        assert!(!r.is_slave_ok(10, 100));
        let s = r.slave_connected();
        assert!(r.is_slave_ok(10, 100));
        assert!(!r.is_slave_ok(100, 100));
        r.record_ack(50);
        assert!(r.is_slave_ok(100, 100));
        r.record_ack(20); // never goes back
        assert_eq!(r.acked_offset(), 50);
        drop(s);
        assert!(!r.is_slave_ok(60, 100));
    }

    #[test]
    fn blocking_waiters_wake_on_ack_or_time_out() {
        let r = Arc::new(Replication::new());
        let waiters: Vec<_> = (1..=4u64)
            .map(|i| {
                let r = r.clone();
                std::thread::spawn(move || r.wait_for_ack_blocking(i * 10, Duration::from_secs(5)))
            })
            .collect();
        std::thread::sleep(Duration::from_millis(20));
        r.record_ack(40);
        for w in waiters {
            assert!(w.join().unwrap());
        }
        let t = Instant::now();
        assert!(!r.wait_for_ack_blocking(41, Duration::from_millis(30)));
        assert!(t.elapsed() >= Duration::from_millis(30));
    }

    #[tokio::test]
    async fn async_waiters_wake_on_ack_or_time_out() {
        let r = Arc::new(Replication::new());
        let mut tasks = Vec::new();
        for i in 1..=8u64 {
            let r = r.clone();
            tasks.push(tokio::spawn(async move {
                r.wait_for_ack(i * 10, Duration::from_secs(5)).await
            }));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        r.record_ack(50);
        r.record_ack(80);
        for t in tasks {
            assert!(t.await.unwrap());
        }
        assert!(!r.wait_for_ack(81, Duration::from_millis(20)).await);
    }

    #[tokio::test]
    async fn append_wakes_a_parked_sender() {
        let r = Arc::new(Replication::new());
        let max = Arc::new(AtomicU64::new(0));
        let (r2, m2) = (r.clone(), max.clone());
        let waiter = tokio::spawn(async move {
            let t = Instant::now();
            r2.wait_for_append(|| m2.load(Ordering::Acquire), 0, Duration::from_secs(5))
                .await;
            t.elapsed()
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        max.store(10, Ordering::Release);
        r.on_append();
        assert!(waiter.await.unwrap() < Duration::from_secs(4));
    }
}
