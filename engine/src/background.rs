//! CPU priority of the store's background threads.
//!
//! On a machine with few cores the appending threads (a frontend's request
//! handlers) share the CPUs with the store's own background work: warming
//! the next commit log file, ASYNC_FLUSH writeback, consume-queue flushes,
//! retention. With equal priority the scheduler gives an appender only its
//! fair share, and an append can wait tens of milliseconds behind a warm-up.
//! Background threads therefore lower their own priority (a higher nice
//! value) and become `SCHED_BATCH`, so their wake-ups never preempt an
//! appender; neither needs privileges. Work that a caller waits for (the
//! SYNC_FLUSH flusher, dispatch) keeps the default; the reput thread, which
//! wakes every 200 µs while following a fast log, is `SCHED_BATCH` too.

/// How much a background thread yields to the appenders.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Priority {
    /// Work that must keep pace with the appenders: ASYNC_FLUSH writeback,
    /// prefaulting ahead of the writer, preparing the next commit log file
    /// (a writer at a roll may wait for that one, so not lower than this:
    /// at nice 15 a roll once waited 244 ms for the starved allocator).
    Behind,
    /// Work that only has to finish eventually: consume-queue flushes,
    /// retention.
    Idle,
}

impl Priority {
    fn nice(self) -> libc::c_int {
        match self {
            Priority::Behind => 5,
            Priority::Idle => 15,
        }
    }
}

/// Lowers the calling thread's CPU priority and makes it batch work (see
/// [`batch_this_thread`]): a background thread woken by a writer (the
/// allocator at a roll, the prefaulter) would otherwise preempt that writer
/// on its own CPU and hold it off for a scheduler slice. Best effort: a
/// refusal is logged at debug level and changes nothing else.
pub fn lower_this_thread(priority: Priority) {
    batch_this_thread();
    // SAFETY: gettid has no preconditions.
    let tid = unsafe { libc::gettid() };
    // SAFETY: setpriority on our own thread id only changes its nice value.
    let rc = unsafe { libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, priority.nice()) };
    if rc != 0 {
        tracing::debug!(
            "cannot lower thread priority: {}",
            std::io::Error::last_os_error()
        );
    }
}

/// Marks the calling thread as batch work (`SCHED_BATCH`): its wake-ups
/// never preempt a running thread, they wait for a free CPU or the running
/// thread's slice to end. For threads that wake often to do work nobody is
/// waiting on at that instant. Best effort, like [`lower_this_thread`].
pub fn batch_this_thread() {
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: changes only the calling thread's policy (pid 0 = this thread).
    let rc = unsafe { libc::sched_setscheduler(0, libc::SCHED_BATCH, &param) };
    if rc != 0 {
        tracing::debug!(
            "cannot set SCHED_BATCH: {}",
            std::io::Error::last_os_error()
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lowered_thread_has_the_nice_value_and_others_keep_theirs() {
        // SAFETY: getpriority reads our own nice values.
        let before = unsafe { libc::getpriority(libc::PRIO_PROCESS, 0) };
        let lowered = std::thread::spawn(|| {
            lower_this_thread(Priority::Idle);
            // SAFETY: as above; 0 is the calling thread.
            let nice = unsafe { libc::getpriority(libc::PRIO_PROCESS, 0) };
            // SAFETY: reads the calling thread's policy.
            (nice, unsafe { libc::sched_getscheduler(0) })
        })
        .join()
        .expect("thread");
        // SAFETY: as above.
        let after = unsafe { libc::getpriority(libc::PRIO_PROCESS, 0) };
        assert_eq!(
            lowered,
            (Priority::Idle.nice().max(before), libc::SCHED_BATCH)
        );
        assert_eq!(after, before);
    }

    #[test]
    fn a_batch_thread_has_the_batch_policy() {
        let policy = std::thread::spawn(|| {
            batch_this_thread();
            // SAFETY: reads the calling thread's policy.
            unsafe { libc::sched_getscheduler(0) }
        })
        .join()
        .expect("thread");
        assert_eq!(policy, libc::SCHED_BATCH);
    }
}
