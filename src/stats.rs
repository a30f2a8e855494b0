//! Counters shared by the producer handles, the consumer and the host.

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::micros::now_unix_micros;
use crate::queue_budget::{QueueBudget, Refusal};
use crate::report::FatalError;

/// State shared between the loggers, the consumer and the worker handle.
pub(crate) struct Shared {
    /// The queue's bytes and budget; closed when intake stops (shutdown or
    /// fatal error).
    pub(crate) queue: Arc<QueueBudget>,
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
    /// Records lost or handed back, by reason.
    pub(crate) lost: LostCounters,
    /// Records in a COPY that was cut off at the deadline with no spool.
    pub(crate) in_doubt: AtomicU64,
    /// Of `spooled`, the records this run replayed itself.
    pub(crate) spooled_replayed: AtomicU64,
    /// Set while neither the memory budget nor the spool can take more:
    /// `send()` hands records back until it clears.
    pub(crate) full: AtomicBool,
    /// Why the sink is full, for readiness probes.
    pub(crate) full_reason: Mutex<Option<String>>,
    /// Bytes of the spool's segments on disk.
    pub(crate) spool_bytes: AtomicU64,
    /// Unix micros of the oldest record taken off the queue and not yet
    /// written (the first of the batch in flight); 0 when none.
    pub(crate) oldest_unwritten_micros: AtomicI64,
    /// Set while the consumer is retrying a transient error.
    pub(crate) retrying: AtomicBool,
    pub(crate) last_error: Mutex<Option<String>>,
    pub(crate) fatal: Mutex<Option<FatalError>>,
}

impl Shared {
    /// The state of a sink whose queue may hold `max_queue_bytes`.
    pub(crate) fn new(max_queue_bytes: usize) -> Shared {
        Shared {
            queue: Arc::new(QueueBudget::new(max_queue_bytes)),
            received: AtomicU64::new(0),
            written: AtomicU64::new(0),
            batches: AtomicU64::new(0),
            retries: AtomicU64::new(0),
            nul_replaced: AtomicU64::new(0),
            truncated: AtomicU64::new(0),
            spooled: AtomicU64::new(0),
            replayed: AtomicU64::new(0),
            rejected: AtomicU64::new(0),
            dead_lettered: AtomicU64::new(0),
            already_written: AtomicU64::new(0),
            spool_corrupt_bytes: AtomicU64::new(0),
            lost: LostCounters::default(),
            in_doubt: AtomicU64::new(0),
            spooled_replayed: AtomicU64::new(0),
            full: AtomicBool::new(false),
            full_reason: Mutex::new(None),
            spool_bytes: AtomicU64::new(0),
            oldest_unwritten_micros: AtomicI64::new(0),
            retrying: AtomicBool::new(false),
            last_error: Mutex::new(None),
            fatal: Mutex::new(None),
        }
    }

    pub(crate) fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    /// Count `n` records handed back to their producer.
    pub(crate) fn count_refused(&self, refusal: Refusal, n: u64) {
        let counter = match refusal {
            Refusal::Closed => &self.lost.stopped,
            Refusal::Full => &self.lost.sink_full,
            Refusal::TooLarge => &self.lost.too_large,
        };
        Shared::add(counter, n);
    }

    pub(crate) fn snapshot(&self, queued: usize) -> Stats {
        let oldest = self.oldest_unwritten_micros.load(Ordering::Relaxed);
        let oldest_unwritten = (oldest > 0).then(|| {
            let age = now_unix_micros().saturating_sub(oldest);
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
            queued_bytes: self.queue.bytes(),
            closed: self.queue.is_closed(),
            full: self.full.load(Ordering::Relaxed),
            lost: self.lost.snapshot(),
            in_doubt: self.in_doubt.load(Ordering::Relaxed),
            spool_bytes: self.spool_bytes.load(Ordering::Relaxed),
        }
    }

    /// Refuse records from now on (`reason` set) or take them again (`None`).
    pub(crate) fn set_full(&self, reason: Option<String>) {
        let full = reason.is_some();
        if self.full.load(Ordering::Relaxed) == full {
            return;
        }
        if let Ok(mut slot) = self.full_reason.lock() {
            *slot = reason;
        }
        self.full.store(full, Ordering::Relaxed);
    }

    pub(crate) fn full_reason(&self) -> Option<String> {
        if !self.full.load(Ordering::Relaxed) {
            return None;
        }
        self.full_reason.lock().ok().and_then(|r| r.clone())
    }
}

/// The counters behind [`Lost`].
#[derive(Default)]
pub(crate) struct LostCounters {
    pub(crate) sink_full: AtomicU64,
    pub(crate) too_large: AtomicU64,
    pub(crate) stopped: AtomicU64,
    pub(crate) spool_full: AtomicU64,
    pub(crate) spool_error: AtomicU64,
    pub(crate) no_spool: AtomicU64,
    pub(crate) refused_row: AtomicU64,
}

impl LostCounters {
    fn snapshot(&self) -> Lost {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        Lost {
            sink_full: get(&self.sink_full),
            too_large: get(&self.too_large),
            stopped: get(&self.stopped),
            spool_full: get(&self.spool_full),
            spool_error: get(&self.spool_error),
            no_spool: get(&self.no_spool),
            refused_row: get(&self.refused_row),
        }
    }
}

/// Records that did not reach the table and will not, by reason.
///
/// The first three were handed back to the caller of `send()`/`log()`
/// (which can still keep them, or answer its own client 503 or 413); the
/// others were taken and then dropped by the sink.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct Lost {
    /// Handed back with [`SendError::Full`](crate::SendError::Full): the
    /// queue was at its memory budget (the database slower than the
    /// records coming in, or away with the spool full).
    pub sink_full: u64,
    /// Handed back with [`SendError::TooLarge`](crate::SendError::TooLarge):
    /// they needed more than the queue's whole budget at once.
    pub too_large: u64,
    /// Handed back with [`SendError::Closed`](crate::SendError::Closed):
    /// the sink had stopped.
    pub stopped: u64,
    /// Taken, then dropped when the sink stopped: the spool was at its cap
    /// or its disk at the free-space reserve.
    pub spool_full: u64,
    /// Taken, then dropped: writing them to the spool failed (I/O error).
    pub spool_error: u64,
    /// Taken, then dropped when the sink stopped with no spool configured.
    pub no_spool: u64,
    /// Refused by PostgreSQL and kept nowhere (the rejected table and the
    /// dead-letter file both failed, or there was no spool for the latter).
    pub refused_row: u64,
}

impl Lost {
    /// Every record counted here.
    pub fn total(&self) -> u64 {
        self.by_reason().iter().map(|(_, n)| n).sum()
    }

    /// Records handed back to their producer rather than taken.
    pub fn handed_back(&self) -> u64 {
        self.sink_full + self.too_large + self.stopped
    }

    /// Records the sink took and then dropped (the total less what it
    /// handed back).
    pub fn dropped(&self) -> u64 {
        self.spool_full + self.spool_error + self.no_spool + self.refused_row
    }

    /// `(reason, records)` pairs, the reasons as the `reason` label of the
    /// `pglogsink_records_lost_total` metric.
    ///
    /// ```
    /// let lost = pglogsink::Lost::default();
    /// assert!(lost.by_reason().iter().all(|(_, n)| *n == 0));
    /// assert_eq!(lost.by_reason()[0].0, "sink_full");
    /// ```
    pub fn by_reason(&self) -> [(&'static str, u64); 7] {
        [
            ("sink_full", self.sink_full),
            ("too_large", self.too_large),
            ("stopped", self.stopped),
            ("spool_full", self.spool_full),
            ("spool_error", self.spool_error),
            ("no_spool", self.no_spool),
            ("refused_row", self.refused_row),
        ]
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
    /// Bytes of memory the queued records hold, as counted against the
    /// queue's budget.
    pub queued_bytes: u64,
    /// Age of the oldest record taken by `log()` and not yet written (the
    /// first of the batch in flight), if any.
    pub oldest_unwritten: Option<Duration>,
    /// True while the sink is retrying a transient database error.
    pub retrying: bool,
    /// True once the sink no longer takes records.
    pub closed: bool,
    /// True while the sink hands records back because neither its memory
    /// budget nor its spool can take more.
    pub full: bool,
    /// Records lost or handed back, by reason.
    pub lost: Lost,
    /// Records in a COPY that was in flight when the shutdown deadline
    /// passed, with no spool to keep them: maybe committed, maybe not.
    pub in_doubt: u64,
    /// Bytes the spool takes on disk.
    pub spool_bytes: u64,
}
