//! CPU priority of the store's background threads.
//!
//! On a machine with few cores the appending threads (a frontend's request
//! handlers) share the CPUs with the store's own background work: warming
//! the next commit log file, ASYNC_FLUSH writeback, consume-queue flushes,
//! retention. With equal priority the scheduler gives an appender only its
//! fair share, and an append can wait tens of milliseconds behind a warm-up.
//! Background threads therefore lower their own priority (a higher nice
//! value), which needs no privileges. Work that a caller waits for (the
//! SYNC_FLUSH flusher, dispatch) keeps the default.

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

/// Lowers the calling thread's CPU priority. Best effort: a refusal is
/// logged at debug level and changes nothing else.
pub fn lower_this_thread(priority: Priority) {
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
            unsafe { libc::getpriority(libc::PRIO_PROCESS, 0) }
        })
        .join()
        .expect("thread");
        // SAFETY: as above.
        let after = unsafe { libc::getpriority(libc::PRIO_PROCESS, 0) };
        assert_eq!(lowered, Priority::Idle.nice().max(before));
        assert_eq!(after, before);
    }
}
