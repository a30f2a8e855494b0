//! The single consumer: wait for a record, take what else is already queued
//! (up to the batch size, no timer), encode it, and hand it to delivery,
//! with up to `copies_in_flight` batches being written at once (each its
//! own transaction on a connection of its own, all polled by this one task),
//! keeping the queue within its memory budget all the while, also while a
//! write hangs on a lock or a dead network path.
//!
//! Delivery (retry, bisection, fatal stops) is in [`crate::delivery`]; the
//! budget's decisions, the spool and replay are in [`crate::overflow`]; the
//! queue's byte count in [`crate::queue_budget`].

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use futures_util::stream::{FuturesUnordered, StreamExt};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::batch::{BatchEncoder, EncodedBatch};
use crate::config::SinkConfig;
use crate::copy_format::CopyEncoder;
use crate::delivery::{Delivery, Source, Stop};
use crate::ledger::{random_instance, KeySource};
use crate::micros::unix_micros;
use crate::overflow::Overflow;
use crate::queue_budget::QueueReader;
use crate::record::Record;
use crate::rejected::DeadLetter;
use crate::report::Report;
use crate::sink_state::SinkState;
use crate::spool::Spool;
use crate::writer::Writer;

/// How often the queue's budget is looked at while a batch is being
/// delivered (written, retried, or waiting to be), besides when the queue
/// passes it.
const BUDGET_CHECK: Duration = Duration::from_millis(50);
/// How long a batch may be in flight with none ending before the database
/// counts as not keeping up, and the queue may move to the spool: at least
/// this, and [`STALLED_FACTOR`] times a typical write (a write of a full
/// batch takes tens of milliseconds here; a busy server takes longer
/// without being stuck).
const STALLED_AFTER: Duration = Duration::from_secs(1);
const STALLED_FACTOR: u32 = 8;
/// The same before any write has ended, when there is nothing typical to
/// go by (the first writes of a process are slower: statements prepared,
/// connections opened, a busy machine).
const FIRST_WRITE_PATIENCE: Duration = Duration::from_secs(5);
/// How long the last drain waits for a record whose producer was admitted
/// just before the queue closed (it is enqueuing; this never runs out in
/// practice).
const LAST_DRAIN_PATIENCE: Duration = Duration::from_secs(5);
/// How often old ledger rows are deleted.
const PRUNE_EVERY: Duration = Duration::from_secs(600);

/// The cancellation tokens a consumer answers to.
pub(crate) struct Tokens {
    /// Cancelled on a fatal error: the host application stops on it.
    pub(crate) app: CancellationToken,
    /// Cancelled by shutdown: drain what is queued, then finish.
    pub(crate) stop: CancellationToken,
    /// Cancelled when the shutdown deadline passes: give up at once.
    pub(crate) abort: CancellationToken,
}

pub(crate) struct Consumer<W> {
    queue_side: QueueSide,
    delivery: Delivery<W>,
    /// Most batches being written at once, each on a connection of its own.
    copies: usize,
    ledger_retention: Duration,
    last_prune: Option<Instant>,
}

/// The queue's side: taking records, encoding them, keeping the budget.
struct QueueSide {
    reader: QueueReader,
    stop: CancellationToken,
    encoder: BatchEncoder,
    overflow: Overflow,
    progress: Progress,
    state: Arc<SinkState>,
}

/// Why writing from the queue ended.
enum WritingEnded {
    /// Shutdown was asked for and the queue is empty.
    Drained,
    /// Delivery stopped (fatal error, deadline).
    Stopped,
    /// The spool holds batches: replay them before new records.
    Replay,
}

impl<W: Writer> Consumer<W> {
    pub(crate) fn new(
        writer: W,
        rx: flume::Receiver<Record>,
        config: &SinkConfig,
        spool: Option<Spool>,
        state: Arc<SinkState>,
        tokens: Tokens,
    ) -> Consumer<W> {
        let keys = KeySource::new(random_instance());
        let delivery = Delivery {
            writer,
            retry: (config.retry_initial, config.retry_max),
            state: state.clone(),
            table: config
                .table_name()
                .map_or_else(|_| config.table.clone(), |t| t.to_string()),
            instance: keys.instance(),
            app_token: tokens.app,
            abort: tokens.abort,
            dead_letter: spool.as_ref().map(|s| DeadLetter::in_dir(s.dir())),
        };
        let queue_side = QueueSide {
            reader: QueueReader::new(
                rx,
                state.queue.clone(),
                config.batch_size,
                config.max_record_bytes,
            ),
            stop: tokens.stop,
            encoder: BatchEncoder::new(
                CopyEncoder::new(config.max_record_bytes),
                keys,
                state.clone(),
            ),
            overflow: Overflow::new(spool, state.clone()),
            progress: Progress::default(),
            state,
        };
        Consumer {
            queue_side,
            delivery,
            copies: config.copies_in_flight,
            ledger_retention: config.ledger_retention,
            last_prune: None,
        }
    }

    pub(crate) async fn run(mut self) -> Report {
        loop {
            if let Some(segment) = self.queue_side.overflow.next_segment() {
                match self.replay(segment).await {
                    Ok(()) => continue,
                    Err(_stopped) => break,
                }
            }
            match self.write_from_queue().await {
                WritingEnded::Replay => continue,
                WritingEnded::Drained | WritingEnded::Stopped => break,
            }
        }
        // Drained, or stopped (fatal error, deadline): the queue closes, and
        // whatever is still in it, or on its way in, goes to the spool or
        // is counted lost.
        let queue_side = &mut self.queue_side;
        let mut spilled = 0;
        queue_side
            .reader
            .drain_closed(LAST_DRAIN_PATIENCE, |records| {
                spilled += records.len() as u64;
                queue_side
                    .overflow
                    .spill_batch(&records, &mut queue_side.encoder);
            })
            .await;
        queue_side.overflow.spilled_at_the_end(spilled);
        queue_side.state.retrying.store(false, Ordering::Relaxed);
        queue_side.state.report(
            queue_side.overflow.spool_dir().map(ToOwned::to_owned),
            self.delivery.abort.is_cancelled(),
        )
    }

    /// Take batches from the queue and write them, up to `copies` at once,
    /// keeping the queue within its budget all the while. Ends when the
    /// queue is drained after a shutdown request, when delivery stops, or
    /// when the spool holds batches to replay first; in each case only once
    /// every batch in flight has ended.
    async fn write_from_queue(&mut self) -> WritingEnded {
        let Consumer {
            queue_side,
            delivery,
            copies,
            ledger_retention,
            last_prune,
        } = self;
        let delivery = &*delivery;
        let queue = queue_side.state.queue.clone();
        let mut in_flight = FuturesUnordered::new();
        // Ledger pruning runs beside the writes, never instead of polling
        // them: behind a pooler with few server connections, a prune
        // waiting for one held by an unpolled write would wait forever.
        let mut upkeep = FuturesUnordered::new();
        // When the first record of each batch in flight was logged.
        let mut firsts: Vec<i64> = Vec::with_capacity(*copies);
        let mut check = budget_check();
        let (mut drained, mut stopped) = (false, false);
        loop {
            let may_take = !drained
                && !stopped
                && in_flight.len() < *copies
                && !queue_side.overflow.has_spooled();
            if !may_take && in_flight.is_empty() && upkeep.is_empty() {
                break;
            }
            tokio::select! {
                biased;
                Some((first, started, outcome)) = in_flight.next() => {
                    if let Some(at) = firsts.iter().position(|&f| f == first) {
                        firsts.swap_remove(at);
                    }
                    queue_side.progress.ended(started);
                    queue_side.note_oldest(&firsts);
                    // Also as the queue drains: a full sink takes records again.
                    queue_side.keep_budget();
                    if let Err(left) = outcome {
                        stopped = true;
                        queue_side.overflow.park_stopped(left, Source::Queue);
                    } else if last_prune.map_or(true, |t| t.elapsed() >= PRUNE_EVERY) {
                        *last_prune = Some(Instant::now());
                        upkeep.push(delivery.prune_ledger(*ledger_retention));
                    }
                }
                Some(()) = upkeep.next() => {}
                () = queue.passed_budget() => queue_side.keep_budget(),
                _ = check.tick() => queue_side.keep_budget(),
                batch = queue_side.next_batch(), if may_take => {
                    let Some((first, batch)) = batch else {
                        drained = true;
                        continue;
                    };
                    firsts.push(first);
                    let started = queue_side.progress.started();
                    queue_side.note_oldest(&firsts);
                    in_flight.push(async move {
                        (first, started, delivery.deliver(batch, Source::Queue).await)
                    });
                }
            }
        }
        match (stopped, drained) {
            (true, _) => WritingEnded::Stopped,
            (false, true) => WritingEnded::Drained,
            (false, false) => WritingEnded::Replay,
        }
    }

    /// Replay a spooled segment batch by batch, one at a time (the segment
    /// goes once all are delivered), keeping the queue within its budget.
    async fn replay(&mut self, mut segment: crate::spool::Segment) -> Result<(), Stop> {
        let queue = self.queue_side.state.queue.clone();
        let mut check = budget_check();
        for batch in std::mem::take(&mut segment.batches) {
            let started = self.queue_side.progress.started();
            let outcome = {
                let delivery = self.delivery.deliver(batch, Source::Spool);
                tokio::pin!(delivery);
                loop {
                    tokio::select! {
                        biased;
                        outcome = &mut delivery => break outcome,
                        () = queue.passed_budget() => self.queue_side.keep_budget(),
                        _ = check.tick() => self.queue_side.keep_budget(),
                    }
                }
            };
            self.queue_side.progress.ended(started);
            // A spooled batch that was not written is still on disk.
            outcome.map_err(|left| left.why)?;
        }
        self.queue_side.overflow.replayed(&segment);
        Ok(())
    }
}

/// The timer of the queue's budget checks (a late tick waits, never bursts).
fn budget_check() -> tokio::time::Interval {
    let mut check = tokio::time::interval(BUDGET_CHECK);
    check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    check
}

/// Whether the database keeps up: batches in flight, when one last
/// started on an idle sink or ended, and how long a write typically takes.
#[derive(Debug)]
struct Progress {
    in_flight: usize,
    since: Instant,
    /// Moving average of how long a batch took to deliver; `None` before
    /// the first ended.
    typical: Option<Duration>,
}

impl Default for Progress {
    fn default() -> Progress {
        Progress {
            in_flight: 0,
            since: Instant::now(),
            typical: None,
        }
    }
}

impl Progress {
    /// A batch starts; returns when, for [`Progress::ended`].
    fn started(&mut self) -> Instant {
        let now = Instant::now();
        if self.in_flight == 0 {
            self.since = now;
        }
        self.in_flight += 1;
        now
    }

    /// A batch that started at `started` ended.
    fn ended(&mut self, started: Instant) {
        self.in_flight = self.in_flight.saturating_sub(1);
        self.since = Instant::now();
        let took = started.elapsed();
        self.typical = Some(
            self.typical
                .map_or(took, |typical| (typical * 7 + took) / 8),
        );
    }

    /// The consumer was busy for `busy` (moving the queue to the spool)
    /// rather than waiting on the database: that time does not count
    /// against it.
    fn was_busy(&mut self, busy: Duration) {
        self.since += busy;
    }

    /// True when an error is being retried, or batches are in flight and
    /// none has ended for [`STALLED_AFTER`] or [`STALLED_FACTOR`] typical
    /// writes, whichever is longer ([`FIRST_WRITE_PATIENCE`] before the
    /// first write ended).
    fn stalled(&self, retrying: bool) -> bool {
        let patience = self.typical.map_or(FIRST_WRITE_PATIENCE, |typical| {
            STALLED_AFTER.max(typical * STALLED_FACTOR)
        });
        retrying || (self.in_flight > 0 && self.since.elapsed() >= patience)
    }
}

impl QueueSide {
    /// The next batch: wait for a record, then take what is already queued;
    /// counted, encoded, with when its first record was logged. `None`
    /// when there is nothing more to do.
    async fn next_batch(&mut self) -> Option<(i64, EncodedBatch)> {
        let first = self.reader.first(&self.stop).await?;
        let mut records = vec![first];
        self.reader.take_batch(&mut records);
        SinkState::add(&self.state.received, records.len() as u64);
        let first = unix_micros(records[0].timestamp);
        Some((first, self.encoder.encode(&records)))
    }

    /// The age gauge follows the oldest batch still in flight.
    fn note_oldest(&self, firsts: &[i64]) {
        let oldest = firsts.iter().copied().min().unwrap_or(0);
        self.state
            .oldest_unwritten_micros
            .store(oldest, Ordering::Relaxed);
    }

    fn keep_budget(&mut self) {
        let stalled = self
            .progress
            .stalled(self.state.retrying.load(Ordering::Relaxed));
        let started = Instant::now();
        if self
            .overflow
            .keep_budget(&self.reader, &mut self.encoder, stalled)
        {
            self.progress.was_busy(started.elapsed());
        }
    }
}

/// The consumer's decisions against a fake database, in paused time: fast
/// and deterministic. (The real thing is in `tests/integration`.)
#[cfg(test)]
mod tests {
    use std::collections::{HashSet, VecDeque};
    use std::path::PathBuf;
    use std::sync::Mutex;

    use super::*;
    use crate::classify::WriteError;
    use crate::copy::Committed;
    use crate::copy_format::row_to_json;
    use crate::ledger::BatchKey;
    use crate::level::Level;
    use crate::rejected::RejectedRow;
    use crate::sink::spawn_with;
    use crate::{Logger, SendError, Worker};

    /// What the fake answers to the next write (after that, it writes).
    #[derive(Debug, Clone, Copy)]
    enum Answer {
        Transient,
        Fatal,
        /// Wait until the test opens the gate, then write.
        Hang,
    }

    #[derive(Default)]
    struct Db {
        answers: VecDeque<Answer>,
        /// How long each write takes (a slow but healthy database).
        write_time: Option<Duration>,
        /// Storing a refused row, and pruning the ledger, never end.
        rejected_hangs: bool,
        prune_hangs: bool,
        /// Messages whose rows the fake refuses (SQLSTATE 22P02).
        poison: HashSet<String>,
        rejected_table_fails: bool,
        ledger: HashSet<BatchKey>,
        rows: Vec<String>,
        rejected: Vec<String>,
    }

    #[derive(Clone, Default)]
    struct Fake {
        db: Arc<Mutex<Db>>,
        gate: Arc<tokio::sync::RwLock<()>>,
    }

    impl Fake {
        fn answering(answers: &[Answer]) -> Fake {
            let fake = Fake::default();
            fake.db.lock().unwrap().answers = answers.iter().copied().collect();
            fake
        }

        fn rows(&self) -> Vec<String> {
            self.db.lock().unwrap().rows.clone()
        }
    }

    impl Writer for Fake {
        async fn write(&self, batch: &EncodedBatch) -> Result<Committed, WriteError> {
            let (answer, write_time) = {
                let mut db = self.db.lock().unwrap();
                (db.answers.pop_front(), db.write_time)
            };
            if let Some(time) = write_time {
                tokio::time::sleep(time).await;
            }
            match answer {
                Some(Answer::Transient) => {
                    return Err(WriteError::TimedOut(Duration::from_secs(1)))
                }
                Some(Answer::Fatal) => return Err(WriteError::Server("42P01")),
                Some(Answer::Hang) => drop(self.gate.read().await),
                None => {}
            }
            let messages: Vec<String> = (0..batch.rows())
                .map(|i| {
                    row_to_json(batch.row(i))["message"]
                        .as_str()
                        .unwrap()
                        .to_owned()
                })
                .collect();
            let mut db = self.db.lock().unwrap();
            if messages.iter().any(|m| db.poison.contains(m)) {
                return Err(WriteError::Server("22P02"));
            }
            if !db.ledger.insert(batch.key) {
                return Ok(Committed::AlreadyWritten);
            }
            db.rows.extend(messages);
            Ok(Committed::Written)
        }

        async fn store_rejected(&self, row: &RejectedRow) -> Result<(), WriteError> {
            if self.db.lock().unwrap().rejected_hangs {
                std::future::pending::<()>().await;
            }
            let mut db = self.db.lock().unwrap();
            if db.rejected_table_fails {
                return Err(WriteError::Server("42P01"));
            }
            let message = row.record["message"].as_str().unwrap_or_default();
            db.rejected.push(message.to_owned());
            Ok(())
        }

        async fn prune_ledger(&self, _retention: Duration) -> Result<u64, WriteError> {
            if self.db.lock().unwrap().prune_hangs {
                std::future::pending::<()>().await;
            }
            Ok(0)
        }
    }

    fn config(spool: Option<PathBuf>) -> SinkConfig {
        SinkConfig {
            batch_size: 100,
            retry_initial: Duration::from_millis(100),
            retry_max: Duration::from_secs(1),
            spool_dir: spool,
            max_queue_bytes: 1024 * 1024,
            spool_min_free_bytes: 0,
            ..SinkConfig::default()
        }
    }

    fn spool_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "pglogsink-consumer-test-{name}-{}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    fn start(fake: &Fake, config: &SinkConfig) -> (Logger, Worker, CancellationToken) {
        let app = CancellationToken::new();
        let (logger, worker) = spawn_with(fake.clone(), config, app.clone()).unwrap();
        (logger, worker, app)
    }

    /// Log `m{from}`..`m{to}`; how many were taken.
    fn log_numbered(logger: &Logger, range: std::ops::Range<u32>) -> u64 {
        range
            .filter(|i| logger.log(Level::Info, format!("m{i}")).is_ok())
            .count() as u64
    }

    fn numbered(range: std::ops::Range<u32>) -> Vec<String> {
        range.map(|i| format!("m{i}")).collect()
    }

    /// Let the consumer run for `ms` milliseconds of (paused) time.
    async fn run_for(ms: u64) {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }

    #[tokio::test(start_paused = true)]
    async fn transient_errors_are_retried_with_growing_delays() {
        let fake = Fake::answering(&[Answer::Transient; 3]);
        let (logger, worker, _) = start(&fake, &config(None));
        let started = tokio::time::Instant::now();
        log_numbered(&logger, 0..10);
        while logger.stats().written < 10 {
            run_for(1).await;
        }
        let waited = started.elapsed();
        // Equal jitter: each delay is within [d/2, d] of 100, 200, 400 ms.
        assert!(
            waited >= Duration::from_millis(350) && waited <= Duration::from_millis(710),
            "{waited:?}"
        );
        let report = worker.shutdown(Duration::from_secs(1)).await;
        assert_eq!((report.written, report.retries), (10, 3));
        assert!(report.is_complete(), "{report}");
        assert_eq!(fake.rows(), numbered(0..10));
    }

    #[tokio::test(start_paused = true)]
    async fn refused_rows_are_isolated_and_the_rest_written_in_order() {
        let fake = Fake::default();
        fake.db.lock().unwrap().poison = ["m3", "m7"].map(String::from).into();
        let (logger, worker, _) = start(&fake, &config(None));
        log_numbered(&logger, 0..10);
        let report = worker.shutdown(Duration::from_secs(1)).await;
        assert_eq!((report.written, report.rejected), (8, 2), "{report}");
        let mut expected = numbered(0..10);
        expected.retain(|m| m != "m3" && m != "m7");
        assert_eq!(fake.rows(), expected);
        assert_eq!(fake.db.lock().unwrap().rejected, ["m3", "m7"]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_refused_row_the_table_cannot_keep_goes_to_the_dead_letter_file_or_is_counted() {
        for with_spool in [true, false] {
            let fake = Fake::default();
            {
                let mut db = fake.db.lock().unwrap();
                db.poison = ["m1".to_owned()].into();
                db.rejected_table_fails = true;
            }
            let dir = spool_dir(&format!("dead-letter-{with_spool}"));
            let config = config(with_spool.then(|| dir.clone()));
            let (logger, worker, _) = start(&fake, &config);
            log_numbered(&logger, 0..3);
            let report = worker.shutdown(Duration::from_secs(1)).await;
            assert_eq!(report.written, 2);
            if with_spool {
                assert_eq!((report.dead_lettered, report.not_written), (1, 0));
                let file = std::fs::read_to_string(dir.join("dead-letter.ndjson")).unwrap();
                assert_eq!(file.lines().count(), 1);
                assert!(file.contains(r#""message":"m1""#), "{file}");
            } else {
                assert_eq!((report.dead_lettered, report.lost.refused_row), (0, 1));
                assert_eq!(report.not_written, 1);
            }
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_fatal_error_stops_the_application_and_spools_what_is_left() {
        let fake = Fake::answering(&[Answer::Fatal]);
        let dir = spool_dir("fatal");
        let (logger, worker, app) = start(&fake, &config(Some(dir)));
        log_numbered(&logger, 0..10);
        app.cancelled().await;
        assert!(matches!(
            logger.log(Level::Info, "late"),
            Err(SendError::Closed(_))
        ));
        let report = worker.shutdown(Duration::from_secs(1)).await;
        assert!(report.fatal.is_some(), "{report}");
        assert_eq!((report.written, report.spooled), (0, 10));
        assert_eq!(report.left_in_spool(), 10);
        assert_eq!(report.lost.stopped, 1);
        assert!(fake.rows().is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn at_the_deadline_a_hung_write_is_in_doubt_or_spooled() {
        for with_spool in [false, true] {
            let fake = Fake::answering(&[Answer::Hang; 2]);
            let _closed = fake.gate.clone().write_owned().await;
            let dir = spool_dir(&format!("deadline-{with_spool}"));
            let config = config(with_spool.then_some(dir));
            let (logger, worker, _) = start(&fake, &config);
            log_numbered(&logger, 0..10);
            run_for(10).await;
            log_numbered(&logger, 10..15);
            let report = worker.shutdown(Duration::from_secs(2)).await;
            assert!(report.timed_out, "{report}");
            assert_eq!(report.written, 0);
            if with_spool {
                assert_eq!((report.spooled, report.in_doubt), (15, 0), "{report}");
            } else {
                // Both copies were in flight: the first batch and the second.
                assert_eq!((report.in_doubt, report.lost.no_spool), (15, 0), "{report}");
            }
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_second_copy_keeps_writing_while_the_first_hangs() {
        let fake = Fake::answering(&[Answer::Hang]);
        let closed = fake.gate.clone().write_owned().await;
        let (logger, worker, _) = start(&fake, &config(None));
        log_numbered(&logger, 0..10);
        run_for(10).await;
        log_numbered(&logger, 10..20);
        run_for(10).await;
        assert_eq!(fake.rows(), numbered(10..20), "the second batch is in");
        assert_eq!(logger.stats().written, 10);
        drop(closed);
        let report = worker.shutdown(Duration::from_secs(1)).await;
        assert!(report.is_complete(), "{report}");
        assert_eq!((report.written, report.batches), (20, 2));
        let mut rows = fake.rows();
        rows.sort();
        let mut expected = numbered(0..20);
        expected.sort();
        assert_eq!(rows, expected);
    }

    #[tokio::test(start_paused = true)]
    async fn one_copy_in_flight_writes_batches_in_order() {
        let fake = Fake::answering(&[Answer::Hang]);
        let closed = fake.gate.clone().write_owned().await;
        let config = SinkConfig {
            copies_in_flight: 1,
            ..config(None)
        };
        let (logger, worker, _) = start(&fake, &config);
        log_numbered(&logger, 0..10);
        run_for(10).await;
        log_numbered(&logger, 10..20);
        run_for(10).await;
        assert!(fake.rows().is_empty(), "nothing overtakes the hung batch");
        drop(closed);
        let report = worker.shutdown(Duration::from_secs(1)).await;
        assert_eq!(report.written, 20);
        assert_eq!(fake.rows(), numbered(0..20));
    }

    /// Log `m{from}`..`m{to}` in chunks of `chunk`, letting the consumer
    /// run a millisecond between chunks (as it would beside real producer
    /// threads); how many were taken.
    async fn log_in_chunks(logger: &Logger, range: std::ops::Range<u32>, chunk: u32) -> u64 {
        let mut taken = 0;
        let mut at = range.start;
        while at < range.end {
            let end = (at + chunk).min(range.end);
            taken += log_numbered(logger, at..end);
            run_for(1).await;
            at = end;
        }
        taken
    }

    /// Let a hung first write become a stall: the database is not keeping up.
    async fn stall(logger: &Logger) {
        log_numbered(logger, 0..1);
        run_for(FIRST_WRITE_PATIENCE.as_millis() as u64 + 100).await;
    }

    #[tokio::test(start_paused = true)]
    async fn the_queue_moves_to_the_spool_while_a_write_hangs() {
        let fake = Fake::answering(&[Answer::Hang; 2]);
        let closed = fake.gate.clone().write_owned().await;
        let dir = spool_dir("spill-while-hung");
        let (logger, worker, _) = start(&fake, &config(Some(dir)));
        stall(&logger).await;
        // 50,000 records are several budgets' worth.
        assert_eq!(log_in_chunks(&logger, 1..50_001, 250).await, 50_000);
        run_for(200).await;
        let stats = logger.stats();
        assert!(stats.spooled >= 40_000, "{stats:?}");
        assert!(stats.queued < 10_000, "{stats:?}");
        assert!(!stats.full, "the spool had room");
        drop(closed);
        while logger.stats().written < 50_001 {
            run_for(10).await;
        }
        let report = worker.shutdown(Duration::from_secs(1)).await;
        assert!(report.is_complete(), "{report}");
        assert_eq!(report.written, 50_001);
        let mut rows = fake.rows();
        rows.sort();
        let mut expected = numbered(0..50_001);
        expected.sort();
        assert_eq!(rows, expected, "every record exactly once");
    }

    #[tokio::test(start_paused = true)]
    async fn a_database_slower_than_the_producers_gets_backpressure_not_the_spool() {
        let fake = Fake::default();
        fake.db.lock().unwrap().write_time = Some(Duration::from_millis(20));
        let dir = spool_dir("backpressure");
        let (logger, worker, _) = start(&fake, &config(Some(dir)));
        let budget = config(None).max_queue_bytes as u64;
        let mut taken = 0;
        for round in 0..50 {
            let range = round * 2000..(round + 1) * 2000;
            taken += log_numbered(&logger, range);
            let stats = logger.stats();
            assert!(stats.queued_bytes <= budget, "{stats:?}");
            run_for(5).await;
        }
        let stats = logger.stats();
        assert!(taken < 100_000, "some records were handed back: {stats:?}");
        assert_eq!(stats.lost.sink_full, 100_000 - taken);
        assert_eq!(stats.spooled, 0, "the spool is not the way out: {stats:?}");
        assert!(!stats.full, "backpressure is not a full sink: {stats:?}");
        let report = worker.shutdown(Duration::from_secs(60)).await;
        assert!(report.is_complete(), "{report}");
        assert_eq!((report.written, report.spooled), (taken, 0));
    }

    #[tokio::test(start_paused = true)]
    async fn the_budget_counts_what_records_hold_when_their_sizes_change() {
        let fake = Fake::answering(&[Answer::Hang; 2]);
        let _closed = fake.gate.clone().write_owned().await;
        let dir = spool_dir("sizes-change");
        let config = config(Some(dir));
        let (logger, worker, _) = start(&fake, &config);
        stall(&logger).await;
        // The budget, and while the queue moves to the spool its margin (at
        // least 4 MiB).
        let ceiling = (config.max_queue_bytes + (4 << 20)) as u64;
        assert_eq!(log_in_chunks(&logger, 1..2001, 500).await, 2000);
        // Then records a thousand times larger: 256 KiB messages.
        let big = "x".repeat(256 * 1024);
        let mut taken = 0;
        for _ in 0..40 {
            // One that does not fit under the ceiling is handed back, and
            // the queue moves to the spool to make room for the next.
            taken += u64::from(logger.log(Level::Info, big.clone()).is_ok());
            assert!(
                logger.stats().queued_bytes <= ceiling,
                "{:?}",
                logger.stats()
            );
            run_for(1).await;
        }
        let stats = logger.stats();
        assert!(taken >= 35, "{taken} of 40: {stats:?}");
        // Every record taken is in one of the two hung batches (1 + 100
        // records), in the spool, or still queued.
        assert_eq!(
            stats.spooled + 101 + stats.queued,
            2001 + taken,
            "{stats:?}"
        );
        let report = worker.shutdown(Duration::from_millis(100)).await;
        assert_eq!(report.spooled + report.in_doubt, 2001 + taken, "{report}");
    }

    #[tokio::test(start_paused = true)]
    async fn without_room_send_hands_records_back_until_the_queue_drains() {
        let fake = Fake::answering(&[Answer::Hang; 2]);
        let closed = fake.gate.clone().write_owned().await;
        let (logger, worker, _) = start(&fake, &config(None));
        stall(&logger).await;
        let taken = log_numbered(&logger, 1..50_001);
        assert!((1000..50_000).contains(&taken), "{taken}");
        run_for(100).await;
        assert!(logger.stats().full);
        let reason = logger.full_reason().unwrap();
        assert!(reason.contains("no spool"), "{reason}");
        // The room the second batch made is taken again, then no more.
        let later = log_numbered(&logger, 50_001..52_001);
        assert!(later < 2000, "{later}");
        let refused = logger.log(Level::Info, "refused");
        assert!(matches!(refused, Err(SendError::Full(r)) if r.message() == "refused"));
        let stats = logger.stats();
        assert_eq!(stats.lost.sink_full, 50_000 - taken + 2001 - later);
        drop(closed);
        let taken = taken + later;
        while logger.stats().written < taken + 1 {
            run_for(10).await;
        }
        assert!(!logger.stats().full);
        assert_eq!(logger.full_reason(), None);
        assert_eq!(log_numbered(&logger, 60_000..60_001), 1);
        let report = worker.shutdown(Duration::from_secs(1)).await;
        assert_eq!(
            (report.written, report.handed_back),
            (taken + 2, 52_001 - taken),
            "{report}"
        );
        assert_eq!(report.not_written, 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_full_spool_hands_records_back_and_every_record_is_accounted_for() {
        let fake = Fake::answering(&[Answer::Hang; 2]);
        let _closed = fake.gate.clone().write_owned().await;
        let dir = spool_dir("spool-cap");
        let config = SinkConfig {
            max_spool_bytes: 1024 * 1024,
            ..config(Some(dir))
        };
        let (logger, worker, _) = start(&fake, &config);
        stall(&logger).await;
        let mut offered = 1;
        let mut taken = 1;
        for round in 0..10 {
            let range = 1 + round * 20_000..1 + (round + 1) * 20_000;
            offered += range.len() as u64;
            taken += log_in_chunks(&logger, range, 250).await;
            run_for(100).await;
        }
        let stats = logger.stats();
        assert!(stats.full, "{stats:?}");
        assert!(logger.full_reason().unwrap().contains("size cap"));
        assert!(stats.spool_bytes >= 1024 * 1024, "{stats:?}");
        assert!(taken < offered);
        let report = worker.shutdown(Duration::from_secs(2)).await;
        assert_eq!(report.written, 0);
        assert_eq!(report.lost.sink_full, offered - taken);
        assert_eq!(
            report.written + report.spooled + report.lost.total() + report.in_doubt,
            offered,
            "{report}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn send_all_takes_every_record_or_none() {
        let fake = Fake::answering(&[Answer::Hang; 2]);
        let closed = fake.gate.clone().write_owned().await;
        let (logger, worker, _) = start(&fake, &config(None));
        let batch = |n: u32| -> Vec<Record> {
            (0..n)
                .map(|i| Record::new(Level::Info, format!("b{i}")))
                .collect()
        };
        // More than the whole budget: never (the queue is empty).
        let too_large = logger.send_all(batch(10_000)).unwrap_err();
        assert!(too_large.is_too_large(), "{too_large}");
        assert_eq!(logger.stats().lost.too_large, 10_000);
        assert_eq!(logger.stats().queued_bytes, 0);
        assert!(logger.send_all(batch(1000)).is_ok());
        let queued = logger.stats().queued_bytes;
        // More than the room left: refused whole, the queue unchanged.
        let refused = logger.send_all(batch(4000)).unwrap_err();
        assert!(refused.is_full(), "{refused}");
        assert_eq!(refused.into_inner().len(), 4000);
        assert_eq!(logger.stats().queued_bytes, queued);
        drop(closed);
        let report = worker.shutdown(Duration::from_secs(1)).await;
        assert_eq!((report.written, report.handed_back), (1000, 14_000));
    }

    #[tokio::test(start_paused = true)]
    async fn a_batch_holds_room_for_its_producer_until_sent_or_dropped() {
        let fake = Fake::answering(&[Answer::Hang; 2]);
        let closed = fake.gate.clone().write_owned().await;
        let (logger, worker, _) = start(&fake, &config(None));
        let budget = config(None).max_queue_bytes;
        {
            let mut batch = logger.batch();
            batch.hold(100_000).unwrap();
            batch.push(Record::new(Level::Info, "kept")).unwrap();
            assert_eq!(logger.stats().queued_bytes, batch.bytes());
            // Another producer meets the room this one holds.
            let other = logger.send_all(vec![Record::new(Level::Info, "x"); 1]);
            assert!(other.is_ok());
            let mut big = logger.batch();
            let refused = big.hold(budget - 100_000).unwrap_err();
            assert!(refused.is_full(), "{refused}");
            batch.send().unwrap();
        }
        let queued = logger.stats().queued_bytes;
        assert!(
            queued > 0 && queued < 1000,
            "the held room is given back: {queued}"
        );
        {
            let mut dropped = logger.batch();
            dropped.hold(1000).unwrap();
            dropped.push(Record::new(Level::Info, "never")).unwrap();
        }
        assert_eq!(logger.stats().queued_bytes, queued);
        let refused = logger.batch().hold(budget + 1).unwrap_err();
        assert!(refused.is_too_large(), "{refused}");
        drop(closed);
        let report = worker.shutdown(Duration::from_secs(1)).await;
        assert_eq!(report.written, 2, "{report}");
    }

    #[tokio::test(start_paused = true)]
    async fn the_deadline_holds_while_the_rejected_table_and_the_ledger_hang() {
        let fake = Fake::default();
        {
            let mut db = fake.db.lock().unwrap();
            db.poison = ["m1".to_owned()].into();
            db.rejected_hangs = true;
            db.prune_hangs = true;
        }
        let _closed = fake.gate.clone().write_owned().await;
        let dir = spool_dir("deadline-set-aside");
        let (logger, worker, _) = start(&fake, &config(Some(dir.clone())));
        log_numbered(&logger, 0..3);
        run_for(100).await;
        let started = tokio::time::Instant::now();
        let report = worker.shutdown(Duration::from_secs(2)).await;
        let took = started.elapsed();
        assert!(took <= Duration::from_millis(2100), "{took:?}");
        assert!(report.timed_out, "{report}");
        // m0 is written; m1 is refused and goes to the dead-letter file when
        // the deadline cuts off storing it; m2, after it, is spooled.
        assert_eq!(
            (report.written, report.dead_lettered, report.left_in_spool()),
            (1, 1, 1),
            "{report}"
        );
        let file = std::fs::read_to_string(dir.join("dead-letter.ndjson")).unwrap();
        assert!(file.contains(r#""message":"m1""#), "{file}");
    }

    /// Many threads send while the sink stops: every record whose `send`
    /// (or `send_all`) returned `Ok` is in the report (written, or counted
    /// not written), and every refused one is counted as handed back.
    /// `send_all` of 100 records widens the window between a producer's
    /// admission and its last record reaching the queue.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn every_record_taken_while_the_sink_stops_is_accounted_for() {
        for round in 0..20 {
            let fake = Fake::default();
            let (logger, worker, _) = start(&fake, &config(None));
            let threads: Vec<_> = (0..8)
                .map(|t| {
                    let logger = logger.clone();
                    std::thread::spawn(move || send_until_closed(&logger, t))
                })
                .collect();
            tokio::time::sleep(Duration::from_millis(5 + round)).await;
            let report = worker.shutdown(Duration::from_secs(5)).await;
            let (mut ok, mut refused) = (0, 0);
            for thread in threads {
                let (o, r) = thread.join().unwrap();
                ok += o;
                refused += r;
            }
            let after = logger.stats();
            assert_eq!(
                report.written + report.not_written + report.in_doubt,
                ok,
                "round {round}: {report} {after:?}"
            );
            assert_eq!(fake.rows().len() as u64, report.written);
            assert_eq!(after.lost.handed_back(), refused, "round {round}");
            assert_eq!(after.queued_bytes, 0, "round {round}");
        }
    }

    /// A producer admitted just before the stop, and preempted before its
    /// records reached the queue: the last drain waits for them, so that
    /// what `send_all` took is accounted for.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_last_drain_waits_for_a_producer_admitted_before_the_stop() {
        let fake = Fake::default();
        let (logger, worker, _) = start(&fake, &config(None));
        let producer = {
            let logger = logger.clone();
            std::thread::spawn(move || {
                crate::logger::tests::pause_after_admission_on_this_thread(Duration::from_millis(
                    300,
                ));
                let batch = (0..10).map(|i| Record::new(Level::Info, format!("p{i}")));
                logger.send_all(batch.collect())
            })
        };
        while logger.stats().queued_bytes == 0 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let report = worker.shutdown(Duration::from_secs(5)).await;
        assert!(producer.join().unwrap().is_ok());
        // No spool: counted as not written, but counted.
        assert_eq!(report.written + report.not_written, 10, "{report}");
        assert_eq!(logger.stats().queued_bytes, 0);
    }

    /// Send records one by one and 100 at a time, alternately, until the
    /// sink says it has stopped; how many were taken and refused.
    fn send_until_closed(logger: &Logger, thread: u32) -> (u64, u64) {
        let (mut ok, mut refused) = (0u64, 0u64);
        for i in 0.. {
            let (n, sent) = if i % 2 == 0 {
                let sent = logger.log(Level::Info, format!("t{thread}-{i}"));
                (1, sent.map_err(|e| e.is_closed()))
            } else {
                let batch = (0..100)
                    .map(|j| Record::new(Level::Info, format!("t{thread}-{i}-{j}")))
                    .collect();
                (100, logger.send_all(batch).map_err(|e| e.is_closed()))
            };
            match sent {
                Ok(()) => ok += n,
                Err(closed) => {
                    refused += n;
                    if closed {
                        return (ok, refused);
                    }
                }
            }
        }
        unreachable!()
    }
}
