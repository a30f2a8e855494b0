//! The producer handle: a cheap, cloneable [`Logger`] whose `log()` only
//! stamps the record and pushes it onto an unbounded channel.
//!
//! Nothing here touches the network or awaits; the `use` lines below are the
//! proof.

use std::borrow::Cow;
use std::fmt;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use crate::record::{Level, Record};
use crate::stats::{Shared, Stats};

/// Cloneable handle that producers log through.
///
/// `log()` never blocks and never touches the network: it stamps the record
/// with the current time and the producing thread, and pushes it onto an
/// unbounded in-memory queue that the sink's single consumer drains. Clone it
/// freely (into axum state, into worker threads); all clones feed one queue.
///
/// A record that is not taken is handed back in a [`SendError`]: `Closed`
/// after the sink has stopped (shutdown, or a fatal database error), `Full`
/// while the queue is past its memory budget and the spool can take no more
/// (the database has been away for long). Either way the caller sees it, and
/// the sink counts it in [`Stats::lost`](crate::Stats::lost).
///
/// ```no_run
/// # async fn demo(logger: pglogsink::Logger) -> Result<(), pglogsink::SendError> {
/// use pglogsink::{Level, Record};
///
/// logger.log(Level::Info, "cache warmed")?;
/// logger.send(Record::new(Level::Debug, "GET /recipes/7").field("status", 200))?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Logger {
    tx: flume::Sender<Record>,
    shared: Arc<Shared>,
    target: Cow<'static, str>,
}

/// Why [`Logger::send`] (or [`Logger::log`]) did not take a record; holds
/// the record, so the caller can keep it or say so to its own client (an
/// HTTP endpoint answers 503 with `Retry-After`).
///
/// ```
/// use pglogsink::{Level, Record, SendError};
///
/// let refused = SendError::Full(Record::new(Level::Info, "hello"));
/// assert!(refused.is_full());
/// assert_eq!(refused.into_record().message(), "hello");
/// ```
#[derive(Debug)]
#[non_exhaustive]
pub enum SendError {
    /// The sink no longer takes records: it was shut down, or stopped on a
    /// fatal error.
    Closed(Record),
    /// The queue is past its memory budget and the spool can take no more
    /// (at its size cap, or its disk at the free-space reserve, or there is
    /// no spool). Records are taken again once the database catches up.
    Full(Record),
}

impl SendError {
    /// The record that was not taken.
    pub fn into_record(self) -> Record {
        match self {
            SendError::Closed(record) | SendError::Full(record) => record,
        }
    }

    /// True when the sink has stopped for good.
    pub fn is_closed(&self) -> bool {
        matches!(self, SendError::Closed(_))
    }

    /// True when the sink is full for now (try again later).
    pub fn is_full(&self) -> bool {
        matches!(self, SendError::Full(_))
    }
}

impl fmt::Display for SendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SendError::Closed(_) => {
                f.write_str("the log sink has stopped; the record was not queued")
            }
            SendError::Full(_) => f.write_str(
                "the log sink is full (memory budget and spool exhausted while the database \
                 is not keeping up); the record was not queued",
            ),
        }
    }
}

impl std::error::Error for SendError {}

impl Logger {
    pub(crate) fn new(
        tx: flume::Sender<Record>,
        shared: Arc<Shared>,
        target: Cow<'static, str>,
    ) -> Logger {
        Logger { tx, shared, target }
    }

    /// Queue a record with a level and a message.
    ///
    /// Returns at once; the row is written by the sink's consumer.
    #[inline]
    pub fn log(
        &self,
        level: Level,
        message: impl Into<Cow<'static, str>>,
    ) -> Result<(), SendError> {
        self.send(Record::new(level, message))
    }

    /// Queue a record built with [`Record::new`] (for fields or a target).
    #[inline]
    pub fn send(&self, mut record: Record) -> Result<(), SendError> {
        if self.shared.closed.load(Ordering::Acquire) {
            Shared::add(&self.shared.lost.stopped, 1);
            return Err(SendError::Closed(record));
        }
        if self.shared.full.load(Ordering::Relaxed) {
            Shared::add(&self.shared.lost.sink_full, 1);
            return Err(SendError::Full(record));
        }
        record.stamp();
        if record.target.is_none() {
            record.target = Some(self.target.clone());
        }
        self.tx.send(record).map_err(|e| {
            Shared::add(&self.shared.lost.stopped, 1);
            SendError::Closed(e.into_inner())
        })
    }

    /// A logger for the same sink whose records default to another target.
    pub fn with_target(&self, target: impl Into<Cow<'static, str>>) -> Logger {
        Logger {
            target: target.into(),
            ..self.clone()
        }
    }

    /// True once the sink no longer takes records.
    pub fn is_closed(&self) -> bool {
        self.shared.closed.load(Ordering::Acquire)
    }

    /// A snapshot of the sink's counters.
    pub fn stats(&self) -> Stats {
        self.shared.snapshot(self.tx.len())
    }

    /// Why the sink hands records back, while it is full (see
    /// [`SendError::Full`]).
    pub fn full_reason(&self) -> Option<String> {
        self.shared.full_reason()
    }

    /// The last database error, while the sink is retrying it; or the fatal
    /// error it stopped on.
    pub fn last_error(&self) -> Option<String> {
        if let Some(fatal) = self.shared.fatal.lock().ok().and_then(|f| f.clone()) {
            return Some(fatal.to_string());
        }
        self.shared.last_error.lock().ok().and_then(|e| e.clone())
    }
}

impl fmt::Debug for Logger {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Logger")
            .field("target", &self.target)
            .field("queued", &self.tx.len())
            .field("closed", &self.is_closed())
            .finish()
    }
}
