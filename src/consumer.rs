//! The single consumer: wait for a record, take what else is already queued
//! (up to the batch size, no timer), write it in one COPY, retry transient
//! failures, isolate refused rows, stop the application on fatal errors.
//!
//! With a spool it also keeps memory bounded (past the budget the queue is
//! moved to disk), replays spooled batches before new ones, and spools what
//! it cannot write when it stops.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use deadpool_postgres::Pool;
use tokio_util::sync::CancellationToken;

use crate::backoff::Backoff;
use crate::batch::{EncodedBatch, KeySource};
use crate::classify::{classify, fatal_error, needs_fresh_connection, Class, WriteError};
use crate::copy::{prune_ledger, store_rejected, write_batch, Committed, Statements};
use crate::copy_format::{approx_record_size, row_to_json, CopyEncoder};
use crate::record::{unix_micros, Record};
use crate::report::Report;
use crate::spool::Spool;
use crate::stats::Shared;

/// How often the backoff wait looks at the queue's size.
const BUDGET_CHECK: Duration = Duration::from_millis(50);
/// How often old ledger rows are deleted.
const PRUNE_EVERY: Duration = Duration::from_secs(600);

pub(crate) struct Consumer {
    pub(crate) rx: flume::Receiver<Record>,
    pub(crate) pool: Pool,
    pub(crate) table: String,
    pub(crate) statements: Statements,
    pub(crate) batch_size: usize,
    pub(crate) backoff: Backoff,
    pub(crate) shared: Arc<Shared>,
    /// Cancelled on a fatal error: the host application stops on it.
    pub(crate) app_token: CancellationToken,
    /// Cancelled by shutdown: drain what is queued, then finish.
    pub(crate) stop: CancellationToken,
    /// Cancelled when the shutdown deadline passes: give up at once.
    pub(crate) abort: CancellationToken,
    pub(crate) encoder: CopyEncoder,
    pub(crate) keys: KeySource,
    pub(crate) spool: Option<Spool>,
    pub(crate) max_queue_bytes: usize,
    pub(crate) ledger_retention: Duration,
}

/// Where a batch came from: a batch from the spool is still on disk when
/// its write is abandoned, one from the queue is not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Source {
    Queue,
    Spool,
}

/// Why the consumer stopped writing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stop {
    /// The shutdown deadline passed.
    Deadline,
    /// A fatal error; the application token is cancelled.
    Fatal,
}

/// How delivering one batch (with retries) ended.
enum Delivery {
    Committed,
    /// A row of the batch was refused; the batch was not written.
    Poison(WriteError),
    /// Given up before its COPY began: not written.
    StoppedBefore(Stop),
    /// Given up while its COPY was in flight: outcome unknown.
    StoppedDuring,
}

/// The consumer's private tallies that do not live in [`Shared`].
#[derive(Default)]
struct Tally {
    not_written: u64,
    in_doubt: u64,
    /// Of the spooled records, those this run replayed itself.
    own_replayed: u64,
    /// Running average of queued record size, for the memory budget.
    avg_record_bytes: f64,
    last_prune: Option<Instant>,
}

impl Consumer {
    pub(crate) async fn run(mut self) -> Report {
        let mut records = Vec::with_capacity(self.batch_size);
        let mut tally = Tally {
            // A first guess, replaced by measurement as batches go by.
            avg_record_bytes: 256.0,
            ..Tally::default()
        };
        loop {
            if self.spool.as_ref().is_some_and(|s| !s.is_empty()) {
                match self.replay_oldest_segment(&mut tally).await {
                    Ok(()) => continue,
                    Err(_stopped) => break,
                }
            }
            if !self.next_batch(&mut records).await {
                break;
            }
            Shared::add(&self.shared.received, records.len() as u64);
            self.shared
                .oldest_unwritten_micros
                .store(unix_micros(records[0].timestamp), Ordering::Relaxed);
            let batch = self.encode(&records, &mut tally);
            records.clear();
            self.spill_if_over_budget(&mut tally);
            let delivered = self.deliver_all(batch, Source::Queue, &mut tally).await;
            self.shared
                .oldest_unwritten_micros
                .store(0, Ordering::Relaxed);
            if delivered.is_err() {
                break;
            }
            self.prune_ledger_now_and_then(&mut tally).await;
        }
        // Drained, or stopped (fatal error, deadline): whatever is still
        // queued goes to the spool or is counted lost, and later sends fail.
        self.spill_everything(&mut tally);
        self.finish(tally)
    }

    /// Fill `records` with the next records: wait for the first, then take
    /// what is already queued. False when there is nothing more to do.
    async fn next_batch(&self, records: &mut Vec<Record>) -> bool {
        let first = if self.stop.is_cancelled() {
            self.rx.try_recv().ok()
        } else {
            tokio::select! {
                biased;
                received = self.rx.recv_async() => received.ok(),
                _ = self.stop.cancelled() => self.rx.try_recv().ok(),
            }
        };
        let Some(first) = first else {
            return false;
        };
        records.push(first);
        while records.len() < self.batch_size {
            match self.rx.try_recv() {
                Ok(record) => records.push(record),
                Err(_) => break,
            }
        }
        true
    }

    fn encode(&mut self, records: &[Record], tally: &mut Tally) -> EncodedBatch {
        let (batch, stats) = self.encoder.encode(self.keys.next(), records);
        Shared::add(&self.shared.nul_replaced, stats.nul_replaced);
        Shared::add(&self.shared.truncated, stats.truncated);
        if self.spool.is_some() {
            let bytes: usize = records.iter().map(approx_record_size).sum();
            let avg = bytes as f64 / records.len().max(1) as f64;
            tally.avg_record_bytes = 0.9 * tally.avg_record_bytes + 0.1 * avg;
        }
        batch
    }

    /// Deliver a batch, splitting it around refused rows. On a stop, what
    /// was not written is spooled (queue batches) or left in the spool.
    async fn deliver_all(
        &mut self,
        batch: EncodedBatch,
        source: Source,
        tally: &mut Tally,
    ) -> Result<(), Stop> {
        // Depth-first over halves, left first, so rows keep their order.
        let mut pending = vec![(batch, None::<WriteError>)];
        while let Some((batch, known_poison)) = pending.pop() {
            let poison = match known_poison {
                Some(error) => error,
                None => match self.deliver(&batch, source, tally).await {
                    Delivery::Committed => continue,
                    Delivery::Poison(error) => error,
                    Delivery::StoppedBefore(stop) => {
                        self.park(&batch, source, false, tally);
                        for (rest, _) in pending {
                            self.park(&rest, source, false, tally);
                        }
                        return Err(stop);
                    }
                    Delivery::StoppedDuring => {
                        self.park(&batch, source, true, tally);
                        for (rest, _) in pending {
                            self.park(&rest, source, false, tally);
                        }
                        return Err(Stop::Deadline);
                    }
                },
            };
            if batch.rows() == 1 {
                self.reject(&batch, &poison, tally).await;
                continue;
            }
            let mid = batch.rows() / 2;
            pending.push((batch.sub_batch(mid..batch.rows()), None));
            pending.push((batch.sub_batch(0..mid), None));
        }
        Ok(())
    }

    /// Write one batch, retrying transient errors until they clear or the
    /// shutdown deadline passes.
    async fn deliver(
        &mut self,
        batch: &EncodedBatch,
        source: Source,
        tally: &mut Tally,
    ) -> Delivery {
        let rows = batch.rows() as u64;
        self.backoff.reset();
        loop {
            let client = tokio::select! {
                biased;
                _ = self.abort.cancelled() => return Delivery::StoppedBefore(Stop::Deadline),
                client = self.pool.get() => client.map_err(WriteError::from),
            };
            let started = Instant::now();
            let result = match client {
                Ok(mut client) => {
                    let outcome = tokio::select! {
                        biased;
                        _ = self.abort.cancelled() => None,
                        result = write_batch(&mut client, &self.statements, batch) => Some(result),
                    };
                    match outcome {
                        None => {
                            // Cut off mid-transaction: the connection must
                            // not go back to the pool for someone else.
                            drop(deadpool_postgres::Object::take(client));
                            return Delivery::StoppedDuring;
                        }
                        Some(Err(e)) if needs_fresh_connection(&e) => {
                            drop(deadpool_postgres::Object::take(client));
                            Err(e)
                        }
                        Some(result) => result,
                    }
                }
                Err(e) => Err(e),
            };
            let error = match result {
                Ok(committed) => {
                    metrics::histogram!("pglogsink_copy_duration_seconds")
                        .record(started.elapsed().as_secs_f64());
                    metrics::histogram!("pglogsink_batch_rows").record(rows as f64);
                    if self.shared.retrying.swap(false, Ordering::Relaxed) {
                        if let Ok(mut last) = self.shared.last_error.lock() {
                            *last = None;
                        }
                        tracing::info!(target: "pglogsink", "the database accepts writes again");
                    }
                    match committed {
                        Committed::Written => {
                            Shared::add(&self.shared.written, rows);
                            Shared::add(&self.shared.batches, 1);
                        }
                        Committed::AlreadyWritten => {
                            Shared::add(&self.shared.already_written, rows);
                            tracing::info!(
                                target: "pglogsink",
                                rows,
                                "batch was already committed (its earlier attempt's outcome was lost); not writing it twice"
                            );
                        }
                    }
                    if source == Source::Spool {
                        Shared::add(&self.shared.replayed, rows);
                        if batch.key.instance == self.keys.instance() {
                            tally.own_replayed += rows;
                        }
                    }
                    return Delivery::Committed;
                }
                Err(e) => e,
            };
            match classify(&error) {
                Class::Transient(reason) => {
                    Shared::add(&self.shared.retries, 1);
                    metrics::counter!("pglogsink_retries_total", "reason" => reason).increment(1);
                    self.shared.retrying.store(true, Ordering::Relaxed);
                    if let Ok(mut last) = self.shared.last_error.lock() {
                        *last = Some(format!("{reason}: {error}"));
                    }
                    let delay = self.backoff.next_delay();
                    tracing::warn!(
                        target: "pglogsink",
                        reason,
                        error = %error,
                        rows,
                        retry_in_ms = delay.as_millis() as u64,
                        "transient database error; the batch will be retried"
                    );
                    if self.wait_keeping_budget(delay, tally).await.is_err() {
                        return Delivery::StoppedBefore(Stop::Deadline);
                    }
                }
                Class::Poison => return Delivery::Poison(error),
                Class::Fatal => {
                    let fatal = fatal_error(&error, &self.table);
                    tracing::error!(target: "pglogsink", error = %fatal, "fatal database error; stopping");
                    if let Ok(mut slot) = self.shared.fatal.lock() {
                        *slot = Some(fatal);
                    }
                    self.shared.closed.store(true, Ordering::Release);
                    self.app_token.cancel();
                    return Delivery::StoppedBefore(Stop::Fatal);
                }
            }
        }
    }

    /// Sleep `delay`, moving the queue to the spool whenever it grows past
    /// the memory budget. Err when the shutdown deadline passes.
    async fn wait_keeping_budget(&mut self, delay: Duration, tally: &mut Tally) -> Result<(), ()> {
        let until = tokio::time::Instant::now() + delay;
        loop {
            self.spill_if_over_budget(tally);
            let now = tokio::time::Instant::now();
            if now >= until {
                return Ok(());
            }
            let step = (until - now).min(BUDGET_CHECK);
            tokio::select! {
                biased;
                _ = self.abort.cancelled() => return Err(()),
                _ = tokio::time::sleep(step) => {}
            }
        }
    }

    /// Store a refused row in the rejected table, or else the dead-letter
    /// file, or else count it lost.
    async fn reject(&mut self, batch: &EncodedBatch, error: &WriteError, tally: &mut Tally) {
        let record = row_to_json(batch.row(0));
        let sqlstate = error.sqlstate().map(str::to_owned);
        let message = error.to_string();
        tracing::warn!(
            target: "pglogsink",
            sqlstate = sqlstate.as_deref().unwrap_or(""),
            error = %message,
            "PostgreSQL refused a row; storing it in the rejected table"
        );
        let stored = match self.pool.get().await {
            Ok(client) => {
                store_rejected(
                    &client,
                    &self.statements,
                    sqlstate.as_deref(),
                    &message,
                    &record,
                )
                .await
            }
            Err(e) => Err(WriteError::from(e)),
        };
        let store_error = match stored {
            Ok(()) => {
                Shared::add(&self.shared.rejected, 1);
                return;
            }
            Err(e) => e,
        };
        let entry = serde_json::json!({
            "table": self.table,
            "sqlstate": sqlstate,
            "error": message,
            "rejected_table_error": store_error.to_string(),
            "record": record,
        });
        match self.spool.as_mut().map(|s| s.dead_letter(&entry)) {
            Some(Ok(path)) => {
                Shared::add(&self.shared.dead_lettered, 1);
                tracing::error!(target: "pglogsink", error = %store_error, file = %path.display(),
                    "could not store a refused row in the rejected table; wrote it to the dead-letter file");
            }
            Some(Err(e)) => {
                tally.not_written += 1;
                tracing::error!(target: "pglogsink", error = %e, record = %entry, "a refused row is lost: the dead-letter file could not be written");
            }
            None => {
                tally.not_written += 1;
                tracing::error!(target: "pglogsink", error = %store_error, record = %entry,
                    "a refused row is lost: the rejected table failed and there is no spool for a dead-letter file");
            }
        }
    }

    /// A batch that will not be written now: to the spool if it came from
    /// the queue (it stays there if it came from the spool), else lost.
    fn park(&mut self, batch: &EncodedBatch, source: Source, in_flight: bool, tally: &mut Tally) {
        if source == Source::Spool {
            return;
        }
        let rows = batch.rows() as u64;
        match self.spool.as_mut().map(|s| s.append(batch)) {
            Some(Ok(())) => Shared::add(&self.shared.spooled, rows),
            Some(Err(e)) => {
                tracing::error!(target: "pglogsink", error = %e, rows, "could not write to the spool; records lost");
                tally.not_written += rows;
            }
            None if in_flight => tally.in_doubt += rows,
            None => tally.not_written += rows,
        }
    }

    /// With a spool, move the whole queue to disk when its estimated size is
    /// past the budget.
    fn spill_if_over_budget(&mut self, tally: &mut Tally) {
        if self.spool.is_none() {
            return;
        }
        let estimated = self.rx.len() as f64 * tally.avg_record_bytes;
        if estimated <= self.max_queue_bytes as f64 {
            return;
        }
        let spilled = self.spill_queue(tally);
        if let Some(spool) = self.spool.as_mut() {
            if let Err(e) = spool.flush() {
                tracing::error!(target: "pglogsink", error = %e, "could not flush the spool");
            }
        }
        tracing::warn!(
            target: "pglogsink",
            records = spilled,
            estimated_bytes = estimated as u64,
            budget = self.max_queue_bytes,
            "the queue passed its memory budget; moved it to the spool"
        );
    }

    /// Move everything queued to the spool (or count it lost). Returns how
    /// many records were taken.
    fn spill_queue(&mut self, tally: &mut Tally) -> u64 {
        if self.spool.is_none() {
            // Nowhere to keep them: count, without encoding.
            let lost = self.rx.drain().count() as u64;
            Shared::add(&self.shared.received, lost);
            tally.not_written += lost;
            return lost;
        }
        let mut records = Vec::with_capacity(self.batch_size);
        let mut taken = 0;
        loop {
            records.extend(self.rx.try_iter().take(self.batch_size));
            if records.is_empty() {
                return taken;
            }
            taken += records.len() as u64;
            Shared::add(&self.shared.received, records.len() as u64);
            let batch = self.encode(&records, tally);
            records.clear();
            self.park(&batch, Source::Queue, false, tally);
        }
    }

    /// At the end: whatever is still queued is spooled or counted lost, and
    /// later sends fail.
    fn spill_everything(&mut self, tally: &mut Tally) {
        self.shared.closed.store(true, Ordering::Release);
        let spilled = self.spill_queue(tally);
        if let Some(spool) = self.spool.as_mut() {
            if let Err(e) = spool.flush() {
                tracing::error!(target: "pglogsink", error = %e, "could not flush the spool");
            }
            if spilled > 0 {
                tracing::warn!(target: "pglogsink", records = spilled, dir = %spool.dir().display(),
                    "spooled the records that could not be written; they will be written at the next start");
            }
        }
    }

    /// Replay the oldest spool segment, batch by batch.
    async fn replay_oldest_segment(&mut self, tally: &mut Tally) -> Result<(), Stop> {
        let Some(spool) = self.spool.as_mut() else {
            return Ok(());
        };
        let mut segment = match spool.oldest() {
            Ok(Some(segment)) => segment,
            Ok(None) => return Ok(()),
            Err(e) => {
                // Cannot read the spool: stop replaying rather than spin.
                tracing::error!(target: "pglogsink", error = %e, dir = %spool.dir().display(),
                    "cannot read the spool; replay is disabled for this run");
                self.spool = None;
                return Ok(());
            }
        };
        if let Some(corrupt) = &segment.corrupt {
            Shared::add(&self.shared.spool_corrupt_bytes, corrupt.skipped_bytes);
            tracing::warn!(
                target: "pglogsink",
                segment = %segment.path.display(),
                offset = corrupt.offset,
                skipped_bytes = corrupt.skipped_bytes,
                reason = corrupt.reason,
                "spool segment ends in a torn or corrupt entry; replaying the entries before it and skipping the rest"
            );
        }
        let rows: usize = segment.batches.iter().map(EncodedBatch::rows).sum();
        tracing::info!(target: "pglogsink", segment = %segment.path.display(), rows, "replaying spooled records");
        for batch in std::mem::take(&mut segment.batches) {
            self.deliver_all(batch, Source::Spool, tally).await?;
        }
        if let Some(spool) = self.spool.as_mut() {
            if let Err(e) = spool.remove(&segment) {
                tracing::error!(target: "pglogsink", error = %e, segment = %segment.path.display(),
                    "cannot remove a replayed spool segment; replay is disabled for this run (its batches are in the ledger and will not be written twice)");
                self.spool = None;
            }
        }
        Ok(())
    }

    async fn prune_ledger_now_and_then(&mut self, tally: &mut Tally) {
        if tally.last_prune.is_some_and(|t| t.elapsed() < PRUNE_EVERY) {
            return;
        }
        tally.last_prune = Some(Instant::now());
        let Ok(client) = self.pool.get().await else {
            return;
        };
        match prune_ledger(&client, &self.statements, self.ledger_retention).await {
            Ok(n) if n > 0 => {
                tracing::debug!(target: "pglogsink", rows = n, "pruned the batch ledger")
            }
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(target: "pglogsink", error = %e, "could not prune the batch ledger")
            }
        }
    }

    fn finish(self, tally: Tally) -> Report {
        self.shared.retrying.store(false, Ordering::Relaxed);
        let stats = self.shared.snapshot(0);
        Report {
            written: stats.written,
            spooled: stats.spooled,
            replayed: stats.replayed,
            rejected: stats.rejected,
            dead_lettered: stats.dead_lettered,
            already_written: stats.already_written,
            truncated: stats.truncated,
            spool_corrupt_bytes: stats.spool_corrupt_bytes,
            not_written: tally.not_written,
            in_doubt: tally.in_doubt,
            spool_dir: self.spool.as_ref().map(|s| s.dir().to_owned()),
            batches: stats.batches,
            retries: stats.retries,
            nul_replaced: stats.nul_replaced,
            timed_out: self.abort.is_cancelled(),
            fatal: self.shared.fatal.lock().map(|f| f.clone()).unwrap_or(None),
            spooled_replayed: tally.own_replayed,
        }
    }
}
