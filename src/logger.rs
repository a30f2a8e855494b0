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
/// After the sink has stopped (shutdown, or a fatal database error) every call
/// returns [`Closed`] with the record, so the caller can see it was not taken.
///
/// ```no_run
/// # async fn demo(logger: pglogsink::Logger) -> Result<(), pglogsink::Closed> {
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

/// The sink no longer takes records (it was shut down, or stopped on a fatal
/// error). Holds the record that was not taken.
#[derive(Debug)]
pub struct Closed(pub Record);

impl fmt::Display for Closed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the log sink has stopped; the record was not queued")
    }
}

impl std::error::Error for Closed {}

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
    pub fn log(&self, level: Level, message: impl Into<Cow<'static, str>>) -> Result<(), Closed> {
        self.send(Record::new(level, message))
    }

    /// Queue a record built with [`Record::new`] (for fields or a target).
    #[inline]
    pub fn send(&self, mut record: Record) -> Result<(), Closed> {
        if self.shared.closed.load(Ordering::Acquire) {
            return Err(Closed(record));
        }
        record.stamp();
        if record.target.is_none() {
            record.target = Some(self.target.clone());
        }
        self.tx.send(record).map_err(|e| Closed(e.into_inner()))
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
