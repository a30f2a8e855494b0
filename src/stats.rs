//! What the sink has done so far, as [`Logger::stats`](crate::Logger::stats)
//! shows it: its counters ([`Stats`]) and the records that did not reach
//! the table, by reason ([`Lost`]). The live counters behind them are the
//! sink's state (`crate::sink_state`).

use std::time::Duration;

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
