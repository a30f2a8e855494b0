//! The producer handle: a cheap, cloneable [`Logger`] whose `log()` only
//! stamps the record and pushes it onto an unbounded channel.
//!
//! Nothing here touches the network or awaits; the `use` lines below are the
//! proof.

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;

use crate::level::Level;
use crate::queue_budget::{bytes_in, bytes_out, Refusal};
use crate::record::Record;
use crate::sink_state::SinkState;
use crate::stats::Stats;

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
    state: Arc<SinkState>,
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

    /// The same refusal, holding `f` of what it held.
    pub fn map<U>(self, f: impl FnOnce(T) -> U) -> SendError<U> {
        match self {
            SendError::Closed(t) => SendError::Closed(f(t)),
            SendError::Full(t) => SendError::Full(f(t)),
            SendError::TooLarge(t) => SendError::TooLarge(f(t)),
        }
    }

    fn refusal(&self) -> Refusal {
        match self {
            SendError::Closed(_) => Refusal::Closed,
            SendError::Full(_) => Refusal::Full,
            SendError::TooLarge(_) => Refusal::TooLarge,
        }
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
        state: Arc<SinkState>,
        target: Cow<'static, str>,
    ) -> Logger {
        Logger { tx, state, target }
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
        let queue = &self.state.queue;
        if let Err(refusal) = queue.admit(bytes_in(&mut record), 0) {
            queue.release(bytes_out(&record));
            self.state.count_refused(refusal, 1);
            return Err(SendError::new(refusal, record));
        }
        self.tx.send(record).map_err(|e| {
            // The consumer task ended without draining (it panicked).
            let record = e.into_inner();
            queue.release(bytes_out(&record));
            self.state.count_refused(Refusal::Closed, 1);
            SendError::Closed(record)
        })
    }

    /// Start a [`Batch`]: records queued together, all or none.
    pub fn batch(&self) -> Batch<'_> {
        Batch {
            logger: self,
            records: Vec::new(),
            bytes: 0,
            held: 0,
        }
    }

    /// Queue all of `records`, or none: room for every one of them is
    /// taken in the queue's memory budget before the first is queued, so
    /// a refusal means that nothing was queued (see [`Batch`]).
    ///
    /// ```no_run
    /// # fn demo(logger: pglogsink::Logger) {
    /// use pglogsink::{Level, Record};
    ///
    /// let records = vec![Record::new(Level::Info, "a"), Record::new(Level::Warn, "b")];
    /// if let Err(refused) = logger.send_all(records) {
    ///     let why = refused.to_string();
    ///     eprintln!("{why}: {} records to retry later", refused.into_inner().len());
    /// }
    /// # }
    /// ```
    pub fn send_all(&self, records: Vec<Record>) -> Result<(), SendError<Vec<Record>>> {
        let mut batch = self.batch();
        let mut records = records.into_iter();
        while let Some(record) = records.next() {
            if let Err(refused) = batch.push(record) {
                // The records not offered yet are handed back too.
                let rest: Vec<Record> = records.collect();
                self.state
                    .count_refused(refused.refusal(), rest.len() as u64);
                return Err(refused.map(|mut handed_back| {
                    handed_back.extend(rest);
                    handed_back
                }));
            }
        }
        batch.send()
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
        self.state.queue.is_closed()
    }

    /// A snapshot of the sink's counters.
    pub fn stats(&self) -> Stats {
        self.state.snapshot(self.tx.len())
    }

    /// Why the sink hands records back, while it is full (see
    /// [`SendError::Full`]).
    pub fn full_reason(&self) -> Option<String> {
        self.state.full_reason()
    }

    /// The last database error, while the sink is retrying it; or the fatal
    /// error it stopped on.
    pub fn last_error(&self) -> Option<String> {
        if let Some(fatal) = self.state.fatal.lock().ok().and_then(|f| f.clone()) {
            return Some(fatal.to_string());
        }
        self.state.last_error.lock().ok().and_then(|e| e.clone())
    }
}

/// Records queued together, all or none, from [`Logger::batch`]: each
/// record pushed takes its room in the queue's memory budget at once, so a
/// batch built from a large request counts against the budget while it is
/// built, and [`Batch::send`] then queues every record. A refused push
/// hands back the whole batch; a batch dropped unsent gives its room back
/// and queues nothing. For records received from elsewhere (an HTTP
/// request's), so that a client retrying a refused request duplicates
/// nothing.
///
/// ```no_run
/// # fn demo(logger: pglogsink::Logger, lines: Vec<String>) -> Result<(), pglogsink::SendError<Vec<pglogsink::Record>>> {
/// use pglogsink::{Level, Record};
///
/// let mut batch = logger.batch();
/// for line in lines {
///     batch.push(Record::new(Level::Info, line))?;
/// }
/// batch.send()?;
/// # Ok(()) }
/// ```
#[must_use = "a batch queues nothing until `send` is called"]
pub struct Batch<'a> {
    logger: &'a Logger,
    records: Vec<Record>,
    /// Bytes of the queue's budget the batch holds: its records', and
    /// `held` besides.
    bytes: u64,
    /// Bytes held for memory the producer uses while it builds the batch
    /// ([`Batch::hold`]).
    held: u64,
}

impl Batch<'_> {
    /// Add a record, taking its room in the queue's budget. Refused when
    /// the sink has stopped, when the queue has no room for it, or when
    /// the batch would need more than the whole budget: then every record
    /// of the batch comes back (this one last) and the batch is empty.
    pub fn push(&mut self, mut record: Record) -> Result<(), SendError<Vec<Record>>> {
        self.logger.stamp(&mut record);
        let state = &self.logger.state;
        let cost = bytes_in(&mut record);
        match state.queue.admit(cost, self.bytes) {
            Ok(()) => {
                self.bytes += cost;
                self.records.push(record);
                Ok(())
            }
            Err(refusal) => {
                state.queue.release(bytes_out(&record));
                let mut records = std::mem::take(&mut self.records);
                self.release(&records);
                records.push(record);
                state.count_refused(refusal, records.len() as u64);
                Err(SendError::new(refusal, records))
            }
        }
    }

    /// Take `bytes` of the queue's budget for memory the producer holds
    /// while it builds the batch (a request body as read and decompressed,
    /// its decoded form), so that this memory counts too; given back when
    /// the batch is sent or dropped. Refused like [`Batch::push`].
    pub fn hold(&mut self, bytes: usize) -> Result<(), SendError<Vec<Record>>> {
        let bytes = bytes as u64;
        let queue = &self.logger.state.queue;
        match queue.admit(bytes, self.bytes) {
            Ok(()) => {
                self.bytes += bytes;
                self.held += bytes;
                Ok(())
            }
            Err(refusal) => {
                queue.release(bytes);
                let records = std::mem::take(&mut self.records);
                self.release(&records);
                self.logger
                    .state
                    .count_refused(refusal, records.len() as u64);
                Err(SendError::new(refusal, records))
            }
        }
    }

    /// Bytes of the queue's budget the batch holds (its records' and what
    /// [`Batch::hold`] took).
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Of [`Batch::bytes`], what [`Batch::hold`] took.
    pub fn held(&self) -> u64 {
        self.held
    }

    /// Records pushed so far.
    pub fn len(&self) -> usize {
        self.records.len()
    }

    /// True when nothing was pushed.
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// Queue every record pushed (and give back what [`Batch::hold`]
    /// took).
    pub fn send(mut self) -> Result<(), SendError<Vec<Record>>> {
        let records = std::mem::take(&mut self.records);
        // The records keep their room: they are being queued.
        self.release(&[]);
        #[cfg(test)]
        tests::pause_after_admission();
        let queue = &self.logger.state.queue;
        let mut records = records.into_iter();
        while let Some(record) = records.next() {
            if let Err(e) = self.logger.tx.send(record) {
                // The consumer task ended without draining (it panicked):
                // hand back what was not queued.
                let rest: Vec<Record> = std::iter::once(e.into_inner()).chain(records).collect();
                queue.release(rest.iter().map(bytes_out).sum());
                self.logger
                    .state
                    .count_refused(Refusal::Closed, rest.len() as u64);
                return Err(SendError::Closed(rest));
            }
        }
        Ok(())
    }

    /// Give back the room of `records` (taken out of the batch) and what
    /// [`Batch::hold`] took.
    fn release(&mut self, records: &[Record]) {
        let records_bytes: u64 = records.iter().map(bytes_out).sum();
        self.logger.state.queue.release(records_bytes + self.held);
        self.bytes = 0;
        self.held = 0;
    }
}

impl Drop for Batch<'_> {
    fn drop(&mut self) {
        let records = std::mem::take(&mut self.records);
        self.release(&records);
    }
}

impl fmt::Debug for Batch<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Batch")
            .field("records", &self.records.len())
            .field("bytes", &self.bytes)
            .field("held", &self.held)
            .finish()
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
