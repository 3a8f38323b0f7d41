//! Long polling of PULL_MESSAGE (semantics.md §6.3). Placeholder: owned and
//! implemented by the engine owner.

/// Parked pull requests, keyed by `topic@queueId`.
#[derive(Debug, Default)]
pub struct LongPolling {}

impl LongPolling {
    pub fn new() -> Self {
        LongPolling {}
    }
}
