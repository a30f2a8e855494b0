//! The producer handle: a cheap, cloneable [`Logger`] whose `log()` only
//! stamps the record and pushes it onto an unbounded channel.
//!
//! Nothing here touches the network or awaits; the `use` lines below are the
//! proof.

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;

use crate::queue_budget::{bytes_in, bytes_out, Refusal};
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

/// Why [`Logger::send`] (or [`Logger::log`], [`Logger::send_all`]) did not
/// take a record; holds what was not taken (a [`Record`], or for
/// `send_all` the whole `Vec`), so the caller can keep it or say so to its
/// own client (an HTTP endpoint answers 503 with `Retry-After`).
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
pub enum SendError<T = Record> {
    /// The sink no longer takes records: it was shut down, or stopped on a
    /// fatal error.
    Closed(T),
    /// The queue is at its memory budget: the database takes records more
    /// slowly than they arrive, or it is away and the spool can take no
    /// more. Records are taken again as soon as the queue drains.
    Full(T),
    /// The records need more memory than the queue's whole budget
    /// (`max_queue_bytes`): they can never be taken at once. Send fewer.
    TooLarge(T),
}

impl<T> SendError<T> {
    /// What was not taken.
    pub fn into_inner(self) -> T {
        match self {
            SendError::Closed(t) | SendError::Full(t) | SendError::TooLarge(t) => t,
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

    /// True when what was sent can never fit in the queue's budget.
    pub fn is_too_large(&self) -> bool {
        matches!(self, SendError::TooLarge(_))
    }

    fn new(refusal: Refusal, refused: T) -> SendError<T> {
        match refusal {
            Refusal::Closed => SendError::Closed(refused),
            Refusal::Full => SendError::Full(refused),
            Refusal::TooLarge => SendError::TooLarge(refused),
        }
    }
}

impl SendError<Record> {
    /// The record that was not taken.
    pub fn into_record(self) -> Record {
        self.into_inner()
    }
}

impl<T> fmt::Display for SendError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SendError::Closed(_) => f.write_str("the log sink has stopped; nothing was queued"),
            SendError::Full(_) => f.write_str(
                "the log sink is full: its queue is at its memory budget (the database takes \
                 records more slowly than they arrive, or is away and the spool can take no \
                 more); nothing was queued",
            ),
            SendError::TooLarge(_) => f.write_str(
                "the records need more memory than the log sink's whole queue budget \
                 (max_queue_bytes) and can never be queued at once; nothing was queued",
            ),
        }
    }
}

impl<T: fmt::Debug> std::error::Error for SendError<T> {}

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
        self.stamp(&mut record);
        let queue = &self.shared.queue;
        if let Err(refusal) = queue.admit(bytes_in(&record)) {
            queue.taken(bytes_out(&record));
            self.shared.count_refused(refusal, 1);
            return Err(SendError::new(refusal, record));
        }
        self.tx.send(record).map_err(|e| {
            // The consumer task ended without draining (it panicked).
            let record = e.into_inner();
            queue.taken(bytes_out(&record));
            self.shared.count_refused(Refusal::Closed, 1);
            SendError::Closed(record)
        })
    }

    /// Queue all of `records`, or none: room for every one of them is
    /// taken in the queue's memory budget before the first is queued, so
    /// a refusal means that nothing was queued. For a batch received from
    /// elsewhere (an HTTP request's records), so that a client retrying a
    /// refused request duplicates nothing.
    ///
    /// ```no_run
    /// # fn demo(logger: pglogsink::Logger) {
    /// use pglogsink::{Level, Record};
    ///
    /// let batch = vec![Record::new(Level::Info, "a"), Record::new(Level::Warn, "b")];
    /// match logger.send_all(batch) {
    ///     Ok(()) => {}
    ///     Err(refused) => eprintln!("{refused}: {} records to retry later", refused.into_inner().len()),
    /// }
    /// # }
    /// ```
    pub fn send_all(&self, mut records: Vec<Record>) -> Result<(), SendError<Vec<Record>>> {
        for record in &mut records {
            self.stamp(record);
        }
        let queue = &self.shared.queue;
        if let Err(refusal) = queue.admit(records.iter().map(bytes_in).sum()) {
            queue.taken(records.iter().map(bytes_out).sum());
            self.shared.count_refused(refusal, records.len() as u64);
            return Err(SendError::new(refusal, records));
        }
        #[cfg(test)]
        tests::pause_after_admission();
        let mut records = records.into_iter();
        while let Some(record) = records.next() {
            if let Err(e) = self.tx.send(record) {
                // The consumer task ended without draining (it panicked):
                // hand back what was not queued.
                let rest: Vec<Record> = std::iter::once(e.into_inner()).chain(records).collect();
                queue.taken(rest.iter().map(bytes_out).sum());
                self.shared
                    .count_refused(Refusal::Closed, rest.len() as u64);
                return Err(SendError::Closed(rest));
            }
        }
        Ok(())
    }

    /// The thread that sends it, and this logger's target unless it has one.
    #[inline]
    fn stamp(&self, record: &mut Record) {
        record.stamp();
        if record.target.is_none() {
            record.target = Some(self.target.clone());
        }
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
        self.shared.queue.is_closed()
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

#[cfg(test)]
pub(crate) mod tests {
    use std::cell::Cell;
    use std::time::Duration;

    thread_local! {
        static PAUSE: Cell<Duration> = const { Cell::new(Duration::ZERO) };
    }

    /// Make this thread's `send_all` calls stop for `pause` between taking
    /// room in the queue and queuing their records, as a producer
    /// preempted there would.
    pub(crate) fn pause_after_admission_on_this_thread(pause: Duration) {
        PAUSE.with(|p| p.set(pause));
    }

    pub(super) fn pause_after_admission() {
        let pause = PAUSE.with(Cell::get);
        if !pause.is_zero() {
            std::thread::sleep(pause);
        }
    }
}
