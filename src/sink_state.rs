//! The sink's state, shared by the producer handles, the consumer and the
//! worker handle: the queue and its budget, whether records are taken, and
//! the counters that [`Stats`] and the shutdown [`Report`] are read from.

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::micros::now_unix_micros;
use crate::queue_budget::{QueueBudget, Refusal};
use crate::report::{FatalError, Report};
use crate::stats::{Lost, Stats};

/// The sink's state, shared by the loggers, the consumer and the worker
/// handle: the queue's budget, whether the sink takes records (closed,
/// full and why), what it is doing (retrying, the oldest record in
/// flight, the last error, the fatal one) and its counters.
pub(crate) struct SinkState {
    /// The queue's bytes and budget; closed when intake stops (shutdown or
    /// fatal error).
    pub(crate) queue: Arc<QueueBudget>,
    // The counters behind the fields of the same names in [`Stats`].
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
    /// The last transient error, for readiness probes.
    pub(crate) last_error: Mutex<Option<String>>,
    /// The error the sink stopped on, if it did.
    pub(crate) fatal: Mutex<Option<FatalError>>,
}

impl SinkState {
    /// The state of a sink whose queue may hold `max_queue_bytes`.
    pub(crate) fn new(max_queue_bytes: usize) -> SinkState {
        SinkState {
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
        SinkState::add(counter, n);
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

    /// The account the sink gives when it stops, from its counters.
    pub(crate) fn report(&self, spool_dir: Option<std::path::PathBuf>, timed_out: bool) -> Report {
        let stats = self.snapshot(0);
        Report {
            written: stats.written,
            spooled: stats.spooled,
            replayed: stats.replayed,
            rejected: stats.rejected,
            dead_lettered: stats.dead_lettered,
            already_written: stats.already_written,
            truncated: stats.truncated,
            spool_corrupt_bytes: stats.spool_corrupt_bytes,
            not_written: stats.lost.dropped(),
            in_doubt: stats.in_doubt,
            handed_back: stats.lost.handed_back(),
            lost: stats.lost,
            spool_dir,
            batches: stats.batches,
            retries: stats.retries,
            nul_replaced: stats.nul_replaced,
            timed_out,
            fatal: self.fatal.lock().map(|f| f.clone()).unwrap_or(None),
            spooled_replayed: self.spooled_replayed.load(Ordering::Relaxed),
        }
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
