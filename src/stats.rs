//! Counters shared by the producer handles, the consumer and the host.

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use crate::record::unix_micros;
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
    pub(crate) truncated: AtomicU64,
    pub(crate) spooled: AtomicU64,
    pub(crate) replayed: AtomicU64,
    pub(crate) rejected: AtomicU64,
    pub(crate) dead_lettered: AtomicU64,
    pub(crate) already_written: AtomicU64,
    pub(crate) spool_corrupt_bytes: AtomicU64,
    /// Unix micros of the oldest record taken off the queue and not yet
    /// written (the first of the batch in flight); 0 when none.
    pub(crate) oldest_unwritten_micros: AtomicI64,
    /// Set while the consumer is retrying a transient error.
    pub(crate) retrying: AtomicBool,
    pub(crate) last_error: Mutex<Option<String>>,
    pub(crate) fatal: Mutex<Option<FatalError>>,
}

impl Shared {
    pub(crate) fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    pub(crate) fn snapshot(&self, queued: usize) -> Stats {
        let oldest = self.oldest_unwritten_micros.load(Ordering::Relaxed);
        let oldest_unwritten = (oldest > 0).then(|| {
            let age = unix_micros(SystemTime::now()).saturating_sub(oldest);
            Duration::from_micros(age.max(0) as u64)
        });
        Stats {
            oldest_unwritten,
            retrying: self.retrying.load(Ordering::Relaxed),
            received: self.received.load(Ordering::Relaxed),
            written: self.written.load(Ordering::Relaxed),
            batches: self.batches.load(Ordering::Relaxed),
            retries: self.retries.load(Ordering::Relaxed),
            nul_replaced: self.nul_replaced.load(Ordering::Relaxed),
            truncated: self.truncated.load(Ordering::Relaxed),
            spooled: self.spooled.load(Ordering::Relaxed),
            replayed: self.replayed.load(Ordering::Relaxed),
            rejected: self.rejected.load(Ordering::Relaxed),
            dead_lettered: self.dead_lettered.load(Ordering::Relaxed),
            already_written: self.already_written.load(Ordering::Relaxed),
            spool_corrupt_bytes: self.spool_corrupt_bytes.load(Ordering::Relaxed),
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
    /// Records cut down to the maximum record size.
    pub truncated: u64,
    /// Records moved to the on-disk spool.
    pub spooled: u64,
    /// Records written from the spool (this run's or an earlier one's).
    pub replayed: u64,
    /// Records PostgreSQL refused, stored in the rejected-rows table.
    pub rejected: u64,
    /// Refused records that went to the dead-letter file instead.
    pub dead_lettered: u64,
    /// Records of batches found already committed when retried or replayed.
    pub already_written: u64,
    /// Bytes of corrupt or torn spool entries skipped.
    pub spool_corrupt_bytes: u64,
    /// Records waiting in the queue.
    pub queued: u64,
    /// Age of the oldest record taken by `log()` and not yet written (the
    /// first of the batch in flight), if any.
    pub oldest_unwritten: Option<Duration>,
    /// True while the sink is retrying a transient database error.
    pub retrying: bool,
    /// True once the sink no longer takes records.
    pub closed: bool,
}
