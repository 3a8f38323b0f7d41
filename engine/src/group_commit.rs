//! Group commit: many writers wait, one flush serves them all.
//!
//! A writer that needs durability registers the commit log offset it needs
//! (the end of its record) and waits; the flusher thread flushes everything
//! written so far in one call and publishes the new durable offset, which
//! releases every waiter whose record lies below it. Waiting works from plain
//! threads (condition variable) and from async tasks (a `Notify`), so a
//! tokio connection task never blocks its runtime while waiting.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::OnceLock;
use std::thread::Thread;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};
use tokio::sync::Notify;

/// Why a wait for durability ended without success.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NotDurable {
    /// `syncFlushTimeout` passed: the record is stored but not known durable.
    Timeout,
    /// A flush failed; the store is read-only.
    Failed(String),
}

/// Counters of the flushes so far (compare two snapshots).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FlushStats {
    /// Flushes that made new bytes durable.
    pub flushes: u64,
    /// Their summed duration in nanoseconds.
    pub flush_nanos: u64,
}

/// No thread spins in [`GroupCommit::spin_while_flushing`].
const SPIN_NONE: u8 = 0;
/// A thread spins and will take over the async wake-ups of a publish.
const SPIN_WAITING: u8 = 1;
/// The flusher published and left the async wake-ups to the spinner.
const SPIN_HANDED: u8 = 2;

/// The durable offset of the commit log and everyone waiting on it.
pub struct GroupCommit {
    durable: AtomicU64,
    /// Highest offset any writer asked for.
    requested: AtomicU64,
    /// Waits started so far (the flusher counts a group's writers by it).
    arrivals: AtomicU64,
    failure: OnceLock<String>,
    /// No flush will come any more (the flusher stopped).
    closed: AtomicBool,
    /// Ticks of the flusher's watchdog so far, and how long one lasts (set
    /// when the watchdog starts): async waits measure their timeout in
    /// ticks, which costs no clock read and no timer per wait.
    ticks: AtomicU64,
    tick: OnceLock<Duration>,
    /// Rounds of wake-ups sent so far (see [`GroupCommit::spin_while_flushing`]).
    wake_rounds: AtomicU64,
    /// Whether a thread is in [`GroupCommit::spin_while_flushing`], and
    /// whether the flusher left the async wake-ups of a publish to it
    /// (`SPIN_*`).
    spinner: AtomicU8,
    lock: Mutex<()>,
    cond: Condvar,
    notify: Notify,
    flusher: OnceLock<Thread>,
    /// The flusher is (about to be) parked and needs an unpark to see a
    /// request. While it polls, writers skip the unpark: it is a write to
    /// memory the flusher's thread owns, one more cache-line transfer
    /// between CPUs on every append.
    flusher_parked: AtomicBool,
    flushes: AtomicU64,
    flush_nanos: AtomicU64,
}

impl GroupCommit {
    pub fn new(durable: u64) -> Self {
        GroupCommit {
            durable: AtomicU64::new(durable),
            requested: AtomicU64::new(durable),
            arrivals: AtomicU64::new(0),
            failure: OnceLock::new(),
            closed: AtomicBool::new(false),
            ticks: AtomicU64::new(0),
            wake_rounds: AtomicU64::new(0),
            spinner: AtomicU8::new(SPIN_NONE),
            tick: OnceLock::new(),
            lock: Mutex::new(()),
            cond: Condvar::new(),
            notify: Notify::new(),
            flusher: OnceLock::new(),
            flusher_parked: AtomicBool::new(false),
            flushes: AtomicU64::new(0),
            flush_nanos: AtomicU64::new(0),
        }
    }

    /// Registers the thread that flushes, so requests can wake it.
    pub(crate) fn set_flusher(&self, t: Thread) {
        let _ = self.flusher.set(t);
    }

    /// Offset below which every byte is durable.
    pub fn durable(&self) -> u64 {
        self.durable.load(Ordering::Acquire)
    }

    /// Highest offset a writer is waiting for.
    pub fn requested(&self) -> u64 {
        self.requested.load(Ordering::Acquire)
    }

    /// Number of waits started so far. Not the number waiting now: a
    /// writer a flush released still waits until its task runs, and the
    /// flusher must not count it in the next group.
    pub fn arrivals(&self) -> u64 {
        self.arrivals.load(Ordering::Acquire)
    }

    /// The failure that made the store read-only, if any.
    pub fn failure(&self) -> Option<&str> {
        self.failure.get().map(|s| s.as_str())
    }

    /// Asks the flusher to make `offset` durable soon (without waiting).
    pub fn request(&self, offset: u64) {
        // SeqCst pairs with `park_flusher`: either the flusher sees this
        // request before it parks, or this sees it parked and unparks it.
        if self.requested.fetch_max(offset, Ordering::SeqCst) < offset
            && self.flusher_parked.load(Ordering::SeqCst)
        {
            if let Some(t) = self.flusher.get() {
                t.unpark();
            }
        }
    }

    /// The flusher's idle wait: parks for up to `timeout` unless a request
    /// is already pending; [`GroupCommit::request`] unparks it.
    pub(crate) fn park_flusher(&self, timeout: Duration) {
        self.flusher_parked.store(true, Ordering::SeqCst);
        if self.requested.load(Ordering::SeqCst) <= self.durable() {
            std::thread::park_timeout(timeout);
        }
        self.flusher_parked.store(false, Ordering::SeqCst);
    }

    /// Flush counters so far.
    pub fn stats(&self) -> FlushStats {
        FlushStats {
            flushes: self.flushes.load(Ordering::Relaxed),
            flush_nanos: self.flush_nanos.load(Ordering::Relaxed),
        }
    }

    /// Counts one flush that made new bytes durable.
    pub(crate) fn record_flush(&self, took: Duration) {
        self.flushes.fetch_add(1, Ordering::Relaxed);
        self.flush_nanos
            .fetch_add(took.as_nanos() as u64, Ordering::Relaxed);
    }

    /// Called by the flusher after a successful flush. Thread waiters are
    /// woken here; async waiters too, unless a runtime thread spins in
    /// [`GroupCommit::spin_while_flushing`]: it then wakes them itself.
    pub(crate) fn publish(&self, durable: u64) {
        self.durable.fetch_max(durable, Ordering::AcqRel);
        self.wake_threads();
        // Exactly one side wakes: the spinner, when this hand-over lands
        // before it gives up, or else the flusher.
        let handed = self
            .spinner
            .compare_exchange(
                SPIN_WAITING,
                SPIN_HANDED,
                Ordering::AcqRel,
                Ordering::Acquire,
            )
            .is_ok();
        if !handed {
            self.wake_tasks();
        }
    }

    /// Called by the flusher when a flush failed: nothing waiting now or later succeeds.
    pub(crate) fn fail(&self, why: String) {
        let _ = self.failure.set(why);
        self.wake_all();
    }

    /// Announces the watchdog that will call [`GroupCommit::watchdog_tick`]
    /// every `tick`. Until then async waits have no timeout of their own.
    pub(crate) fn set_watchdog(&self, tick: Duration) {
        let _ = self.tick.set(tick.max(Duration::from_micros(1)));
    }

    /// One watchdog tick: counts it, and while a flush is pending wakes
    /// every waiter so that each checks its deadline. Async waits keep no
    /// timer of their own: registering one per append cost a timer-wheel
    /// insertion, a removal and clock reads on every put.
    pub(crate) fn watchdog_tick(&self) {
        self.ticks.fetch_add(1, Ordering::AcqRel);
        if self.requested() > self.durable() {
            self.wake_all();
        }
    }

    /// The tick count at which a wait starting now has waited `timeout`:
    /// the current tick may be nearly over, so one more than the ticks in
    /// `timeout`. `None` without a watchdog.
    fn deadline_tick(&self, timeout: Duration) -> Option<u64> {
        // In u64 nanoseconds (584 years): a u128 division is a libcall that
        // showed up in the profile of every put.
        let tick = u64::try_from(self.tick.get()?.as_nanos()).unwrap_or(u64::MAX);
        let n = u64::try_from(timeout.as_nanos())
            .unwrap_or(u64::MAX)
            .div_ceil(tick.max(1));
        Some(
            self.ticks
                .load(Ordering::Acquire)
                .saturating_add(n)
                .saturating_add(1),
        )
    }

    /// No flush will come any more: every wait not yet satisfied ends now
    /// with [`NotDurable::Timeout`] (stored, not known durable).
    pub(crate) fn close(&self) {
        self.closed.store(true, Ordering::Release);
        self.wake_all();
    }

    fn wake_all(&self) {
        self.wake_threads();
        self.wake_tasks();
    }

    fn wake_threads(&self) {
        drop(self.lock.lock());
        self.cond.notify_all();
    }

    fn wake_tasks(&self) {
        self.notify.notify_waiters();
        self.wake_rounds.fetch_add(1, Ordering::Release);
    }

    /// For an async runtime thread about to sleep (tokio's
    /// `on_thread_park`): while writers wait for a flush, spins until the
    /// flush is published, or `max` passes, and returns; the runtime then
    /// finds its tasks woken instead of sleeping. A sleeping vCPU takes
    /// about 20 µs to wake here (measured: the first writer came back 19-23
    /// µs after the flusher woke it, 8-13 µs when its thread spun), a tenth
    /// of a SYNC_FLUSH group commit at 64 writers; the thread spins only
    /// while the flusher's thread is mostly blocked in the disk, so it
    /// takes little CPU anyone else wants.
    ///
    /// While it spins, the flusher leaves the async waiters' wake-ups of
    /// its publish to this thread: they touch the waiters' memory, which
    /// lives on this thread, and from the flusher's CPU they cost ~17 µs
    /// per 64 writers on the critical path of every group commit.
    pub fn spin_while_flushing(&self, max: Duration) {
        let round = self.wake_rounds.load(Ordering::Acquire);
        if self.requested() <= self.durable() {
            return;
        }
        // One spinner at a time: the flusher needs a CPU when its flush
        // returns, and on a small machine a second spinner would take it.
        if self
            .spinner
            .compare_exchange(SPIN_NONE, SPIN_WAITING, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
        {
            return;
        }
        let start = Instant::now();
        while self.spinner.load(Ordering::Acquire) == SPIN_WAITING
            && self.wake_rounds.load(Ordering::Acquire) == round
            && start.elapsed() < max
        {
            // A few hundred nanoseconds between clock reads.
            for _ in 0..64 {
                std::hint::spin_loop();
            }
        }
        if self.spinner.swap(SPIN_NONE, Ordering::AcqRel) == SPIN_HANDED {
            self.wake_tasks();
        }
    }

    fn check(&self, offset: u64) -> Option<Result<(), NotDurable>> {
        if let Some(f) = self.failure.get() {
            return Some(Err(NotDurable::Failed(f.clone())));
        }
        (self.durable() >= offset).then_some(Ok(()))
    }

    /// Blocks the calling thread until `offset` is durable, the timeout
    /// passes, or the store fails.
    pub fn wait(&self, offset: u64, timeout: Duration) -> Result<(), NotDurable> {
        self.arrivals.fetch_add(1, Ordering::AcqRel);
        self.request(offset);
        let deadline = Instant::now() + timeout;
        let mut guard = self.lock.lock();
        loop {
            if let Some(r) = self.check(offset) {
                return r;
            }
            if self.closed.load(Ordering::Acquire) {
                return Err(NotDurable::Timeout);
            }
            if self.cond.wait_until(&mut guard, deadline).timed_out() {
                return self.check(offset).unwrap_or(Err(NotDurable::Timeout));
            }
        }
    }

    /// Waits in an async task until `offset` is durable, the timeout passes,
    /// or the store fails. The timeout is counted in ticks of the flusher's
    /// watchdog ([`GroupCommit::watchdog_tick`], a tenth of the store's
    /// `syncFlushTimeout`), so it ends up to one tick late; needs no
    /// runtime timer.
    pub async fn wait_async(&self, offset: u64, timeout: Duration) -> Result<(), NotDurable> {
        self.arrivals.fetch_add(1, Ordering::AcqRel);
        self.request(offset);
        let deadline = self.deadline_tick(timeout);
        loop {
            let notified = self.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if let Some(r) = self.check(offset) {
                return r;
            }
            let expired = deadline.is_some_and(|d| self.ticks.load(Ordering::Acquire) >= d);
            if expired || self.closed.load(Ordering::Acquire) {
                return Err(NotDurable::Timeout);
            }
            notified.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A runtime thread about to park spins only while writers wait for a
    /// flush, until the flusher's wake-ups for it went out, never past its
    /// limit, and only one thread at a time.
    #[test]
    fn a_parking_thread_spins_until_the_flushed_group_is_woken() {
        let g = std::sync::Arc::new(GroupCommit::new(0));
        let start = Instant::now();
        g.spin_while_flushing(Duration::from_secs(600));
        assert!(start.elapsed() < Duration::from_secs(10), "nothing pending");

        g.request(100);
        let start = Instant::now();
        g.spin_while_flushing(Duration::from_millis(30));
        let spun = start.elapsed();
        assert!(spun >= Duration::from_millis(30), "{spun:?}");
        assert!(spun < Duration::from_secs(10), "{spun:?}");

        let flusher = {
            let g = g.clone();
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(50));
                // One spinner at a time: a second thread parks at once.
                let start = Instant::now();
                g.spin_while_flushing(Duration::from_secs(5));
                let second = start.elapsed();
                g.publish(100);
                second
            })
        };
        let start = Instant::now();
        g.spin_while_flushing(Duration::from_secs(600));
        let (spun, durable) = (start.elapsed(), g.durable());
        let second = flusher.join().expect("flusher");
        assert_eq!(durable, 100, "returned only after the publish");
        assert!(spun < Duration::from_secs(10), "{spun:?}");
        assert!(second < Duration::from_secs(2), "{second:?}");
    }

    /// While a thread spins, a publish leaves the async wake-ups to it and
    /// it sends them; with nobody spinning the publish sends them itself.
    /// Either way the waiting task is released exactly by that publish.
    #[test]
    fn a_publish_hands_async_wake_ups_to_the_spinning_thread() {
        let g = std::sync::Arc::new(GroupCommit::new(0));
        let bounded = |what: &str, done: &dyn Fn() -> bool| {
            let start = Instant::now();
            while !done() {
                assert!(start.elapsed() < Duration::from_secs(10), "{what}");
                std::thread::yield_now();
            }
        };
        let waiter = |offset: u64| {
            let (tx, rx) = std::sync::mpsc::channel();
            let g = g.clone();
            std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .build()
                    .expect("runtime");
                let _ = tx.send(rt.block_on(g.wait_async(offset, Duration::from_secs(600))));
            });
            rx
        };

        let released = waiter(100);
        bounded("the waiter arrived", &|| g.arrivals() == 1);
        let spinner = {
            let g = g.clone();
            std::thread::spawn(move || g.spin_while_flushing(Duration::from_secs(600)))
        };
        bounded("the spinner spins", &|| {
            g.spinner.load(Ordering::Acquire) == SPIN_WAITING
        });
        g.publish(100);
        let r = released.recv_timeout(Duration::from_secs(10));
        assert_eq!(r, Ok(Ok(())), "woken by the spinner");
        bounded("the spinner returned", &|| spinner.is_finished());
        assert_eq!(g.wake_rounds.load(Ordering::Acquire), 1);
        assert_eq!(g.spinner.load(Ordering::Acquire), SPIN_NONE);

        let released = waiter(200);
        bounded("the second waiter arrived", &|| g.arrivals() == 2);
        g.publish(200);
        let r = released.recv_timeout(Duration::from_secs(10));
        assert_eq!(r, Ok(Ok(())), "woken by the publish");
        assert_eq!(g.wake_rounds.load(Ordering::Acquire), 2);
    }

    /// A parked flusher wakes at a request, long before its timeout; one
    /// with a request pending does not park at all.
    #[test]
    fn a_request_unparks_the_parked_flusher() {
        let g = std::sync::Arc::new(GroupCommit::new(0));
        let (tx, rx) = std::sync::mpsc::channel();
        let flusher = {
            let g = g.clone();
            std::thread::spawn(move || {
                g.set_flusher(std::thread::current());
                let _ = tx.send(());
                let start = Instant::now();
                while g.requested() <= g.durable() {
                    g.park_flusher(Duration::from_secs(30));
                }
                let woke = start.elapsed();
                let start = Instant::now();
                g.park_flusher(Duration::from_secs(30));
                (woke, start.elapsed())
            })
        };
        rx.recv_timeout(Duration::from_secs(10))
            .expect("flusher started");
        std::thread::sleep(Duration::from_millis(20));
        g.request(100);
        let (woke, second) = flusher.join().expect("flusher thread");
        assert!(woke < Duration::from_secs(10), "{woke:?}");
        assert!(second < Duration::from_secs(10), "{second:?}");
    }

    /// An async wait keeps no timer: it ends at the first watchdog tick
    /// past its deadline, with a timeout.
    #[tokio::test(flavor = "current_thread")]
    async fn an_async_wait_times_out_at_a_watchdog_tick() {
        let g = std::sync::Arc::new(GroupCommit::new(0));
        let stop = std::sync::Arc::new(AtomicBool::new(false));
        g.set_watchdog(Duration::from_millis(5));
        let ticker = {
            let (g, stop) = (g.clone(), stop.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Acquire) {
                    std::thread::sleep(Duration::from_millis(5));
                    g.watchdog_tick();
                }
            })
        };
        let start = Instant::now();
        let r = g.wait_async(100, Duration::from_millis(50)).await;
        let waited = start.elapsed();
        stop.store(true, Ordering::Release);
        ticker.join().expect("ticker");
        assert_eq!(r, Err(NotDurable::Timeout));
        assert!(waited >= Duration::from_millis(50), "{waited:?}");
        assert!(waited < Duration::from_secs(10), "{waited:?}");
    }

    /// Once the flusher has stopped, waits end: those satisfied by its
    /// last flush succeed, the others time out at once.
    #[tokio::test(flavor = "current_thread")]
    async fn closing_ends_every_unsatisfied_wait_with_a_timeout() {
        let g = std::sync::Arc::new(GroupCommit::new(0));
        let waiter = {
            let g = g.clone();
            tokio::spawn(async move { g.wait_async(100, Duration::from_secs(600)).await })
        };
        tokio::task::yield_now().await;
        g.publish(50);
        g.close();
        let r = tokio::time::timeout(Duration::from_secs(10), waiter)
            .await
            .expect("the wait ended")
            .expect("task");
        assert_eq!(r, Err(NotDurable::Timeout));
        assert_eq!(g.wait_async(50, Duration::from_secs(600)).await, Ok(()));
        assert_eq!(
            g.wait(100, Duration::from_secs(600)),
            Err(NotDurable::Timeout)
        );
    }

    /// Arrivals count every wait that starts, also one already satisfied
    /// and one still waiting: the flusher tells groups apart by them.
    #[test]
    fn arrivals_count_every_wait_started() {
        let g = GroupCommit::new(100);
        assert_eq!(g.arrivals(), 0);
        assert_eq!(g.wait(50, Duration::from_millis(1)), Ok(()));
        assert_eq!(
            g.wait(200, Duration::from_millis(1)),
            Err(NotDurable::Timeout)
        );
        assert_eq!(g.arrivals(), 2);
        assert_eq!(g.requested(), 200);
        g.publish(200);
        assert_eq!(g.wait(200, Duration::from_millis(1)), Ok(()));
        assert_eq!(g.arrivals(), 3);
    }
}
