//! Counters shared by the producer handles, the consumer and the host.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;

use crate::report::FatalError;

/// State shared between the loggers, the consumer and the worker handle.
#[derive(Default)]
pub(crate) struct Shared {
    /// Set when intake stops (shutdown or fatal error); `log()` checks it.
    pub(crate) closed: AtomicBool,
    pub(crate) received: AtomicU64,
    pub(crate) written: AtomicU64,
    pub(crate) batches: AtomicU64,
    pub(crate) retries: AtomicU64,
    pub(crate) nul_replaced: AtomicU64,
    pub(crate) fatal: Mutex<Option<FatalError>>,
}

impl Shared {
    pub(crate) fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    pub(crate) fn snapshot(&self, queued: usize) -> Stats {
        Stats {
            received: self.received.load(Ordering::Relaxed),
            written: self.written.load(Ordering::Relaxed),
            batches: self.batches.load(Ordering::Relaxed),
            retries: self.retries.load(Ordering::Relaxed),
            nul_replaced: self.nul_replaced.load(Ordering::Relaxed),
            queued: queued as u64,
            closed: self.closed.load(Ordering::Acquire),
        }
    }
}

/// A snapshot of the sink's counters, from [`Logger::stats`](crate::Logger::stats).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct Stats {
    /// Records the consumer has taken off the queue.
    pub received: u64,
    /// Records committed to the Log table.
    pub written: u64,
    /// COPY batches committed.
    pub batches: u64,
    /// Batch attempts that failed with a transient error and were retried.
    pub retries: u64,
    /// Records in which NUL bytes were replaced by U+FFFD.
    pub nul_replaced: u64,
    /// Records waiting in the queue.
    pub queued: u64,
    /// True once the sink no longer takes records.
    pub closed: bool,
}
