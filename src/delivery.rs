//! Delivering one batch: write it, retry transient errors with backoff,
//! split it around rows PostgreSQL refuses, stop the application on fatal
//! errors, give up when the shutdown deadline passes.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use crate::backoff::Backoff;
use crate::batch::EncodedBatch;
use crate::classify::{classify, fatal_error, Class, WriteError};
use crate::copy::Committed;
use crate::rejected::{DeadLetter, RejectedRow};
use crate::sink_state::SinkState;
use crate::writer::Writer;

/// Where a batch came from: a batch from the spool is still on disk when
/// its delivery is abandoned, one from the queue is not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Source {
    Queue,
    Spool,
}

/// Why delivery stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stop {
    /// The shutdown deadline passed.
    Deadline,
    /// A fatal error; the application token is cancelled.
    Fatal,
}

/// What is left of a batch whose delivery stopped.
#[derive(Debug)]
pub(crate) struct Stopped {
    pub(crate) why: Stop,
    /// The piece whose write was cut off by the deadline: maybe committed.
    pub(crate) in_flight: Option<EncodedBatch>,
    /// Pieces not written, in order.
    pub(crate) unsent: Vec<EncodedBatch>,
}

/// How one piece's attempts ended.
enum PieceOutcome {
    Committed,
    /// A row of the piece was refused; the piece was not written.
    Poison(WriteError),
    Stopped {
        why: Stop,
        in_flight: bool,
    },
}

/// Delivers batches through a [`Writer`].
pub(crate) struct Delivery<W> {
    pub(crate) writer: W,
    /// First and longest retry delay.
    pub(crate) retry: (Duration, Duration),
    pub(crate) state: Arc<SinkState>,
    /// The Log table, for messages.
    pub(crate) table: String,
    /// This sink's instance id: replayed batches with it are its own.
    pub(crate) instance: i64,
    /// Cancelled on a fatal error: the host application stops on it.
    pub(crate) app_token: CancellationToken,
    /// Cancelled when the shutdown deadline passes: give up at once.
    pub(crate) abort: CancellationToken,
    /// Where refused rows go when the rejected-rows table fails.
    pub(crate) dead_letter: Option<DeadLetter>,
}

impl<W: Writer> Delivery<W> {
    /// Write `batch`, splitting it around refused rows (each is set aside),
    /// until every row is written or set aside, or delivery stops.
    pub(crate) async fn deliver(&self, batch: EncodedBatch, source: Source) -> Result<(), Stopped> {
        // Depth-first over halves, left first, so rows keep their order.
        let mut pending = vec![batch];
        while let Some(piece) = pending.pop() {
            let poison = match self.attempt(&piece, source).await {
                PieceOutcome::Committed => continue,
                PieceOutcome::Poison(error) => error,
                PieceOutcome::Stopped { why, in_flight } => {
                    let mut unsent: Vec<EncodedBatch> = pending.into_iter().rev().collect();
                    let in_flight = if in_flight {
                        Some(piece)
                    } else {
                        unsent.insert(0, piece);
                        None
                    };
                    return Err(Stopped {
                        why,
                        in_flight,
                        unsent,
                    });
                }
            };
            if piece.rows() == 1 {
                self.set_aside(&piece, &poison).await;
                continue;
            }
            let mid = piece.rows() / 2;
            pending.push(piece.sub_batch(mid..piece.rows()));
            pending.push(piece.sub_batch(0..mid));
        }
        Ok(())
    }

    /// Write one piece, retrying transient errors until they clear or the
    /// shutdown deadline passes.
    async fn attempt(&self, piece: &EncodedBatch, source: Source) -> PieceOutcome {
        let mut backoff = Backoff::new(self.retry.0, self.retry.1);
        loop {
            let started = Instant::now();
            let result = tokio::select! {
                biased;
                _ = self.abort.cancelled() => {
                    return PieceOutcome::Stopped { why: Stop::Deadline, in_flight: true };
                }
                result = self.writer.write(piece) => result,
            };
            let error = match result {
                Ok(committed) => {
                    self.committed(piece, committed, source, started);
                    return PieceOutcome::Committed;
                }
                Err(error) => error,
            };
            match classify(&error) {
                Class::Transient(reason) => {
                    let delay = backoff.next_delay();
                    self.note_transient(reason, &error, piece.rows(), delay);
                    tokio::select! {
                        biased;
                        _ = self.abort.cancelled() => {
                            return PieceOutcome::Stopped { why: Stop::Deadline, in_flight: false };
                        }
                        _ = tokio::time::sleep(delay) => {}
                    }
                }
                Class::Poison => return PieceOutcome::Poison(error),
                Class::Fatal => {
                    self.stop_on_fatal(&error);
                    return PieceOutcome::Stopped {
                        why: Stop::Fatal,
                        in_flight: false,
                    };
                }
            }
        }
    }

    fn committed(
        &self,
        piece: &EncodedBatch,
        committed: Committed,
        source: Source,
        started: Instant,
    ) {
        let rows = piece.rows() as u64;
        metrics::histogram!("pglogsink_copy_duration_seconds")
            .record(started.elapsed().as_secs_f64());
        metrics::histogram!("pglogsink_batch_rows").record(rows as f64);
        if self.state.retrying.swap(false, Ordering::Relaxed) {
            if let Ok(mut last) = self.state.last_error.lock() {
                *last = None;
            }
            tracing::info!(target: "pglogsink", "the database accepts writes again");
        }
        match committed {
            Committed::Written => {
                SinkState::add(&self.state.written, rows);
                SinkState::add(&self.state.batches, 1);
            }
            Committed::AlreadyWritten => {
                SinkState::add(&self.state.already_written, rows);
                tracing::info!(
                    target: "pglogsink",
                    rows,
                    "batch was already committed (its earlier attempt's outcome was lost); not writing it twice"
                );
            }
        }
        if source == Source::Spool {
            SinkState::add(&self.state.replayed, rows);
            if piece.key.instance == self.instance {
                SinkState::add(&self.state.spooled_replayed, rows);
            }
        }
    }

    fn note_transient(
        &self,
        reason: &'static str,
        error: &WriteError,
        rows: usize,
        delay: std::time::Duration,
    ) {
        SinkState::add(&self.state.retries, 1);
        metrics::counter!("pglogsink_retries_total", "reason" => reason).increment(1);
        self.state.retrying.store(true, Ordering::Relaxed);
        if let Ok(mut last) = self.state.last_error.lock() {
            *last = Some(format!("{reason}: {error}"));
        }
        tracing::warn!(
            target: "pglogsink",
            reason,
            error = %error,
            rows,
            retry_in_ms = delay.as_millis() as u64,
            "transient database error; the batch will be retried"
        );
    }

    fn stop_on_fatal(&self, error: &WriteError) {
        let fatal = fatal_error(error, &self.table);
        tracing::error!(target: "pglogsink", error = %fatal, "fatal database error; stopping");
        if let Ok(mut slot) = self.state.fatal.lock() {
            *slot = Some(fatal);
        }
        self.state.queue.close();
        self.app_token.cancel();
    }

    /// Keep a refused row in the rejected table, or else the dead-letter
    /// file, or else count it lost.
    async fn set_aside(&self, piece: &EncodedBatch, error: &WriteError) {
        let row = RejectedRow::new(piece.row(0), error);
        tracing::warn!(
            target: "pglogsink",
            sqlstate = row.sqlstate.as_deref().unwrap_or(""),
            error = %row.error,
            "PostgreSQL refused a row; storing it in the rejected table"
        );
        // Past the shutdown deadline the row goes to the dead-letter file at
        // once (if the cut-off insert had committed, it is in both).
        let stored = tokio::select! {
            biased;
            _ = self.abort.cancelled() => Err(WriteError::TimedOut(Duration::ZERO)),
            stored = self.writer.store_rejected(&row) => stored,
        };
        let store_error = match stored {
            Ok(()) => {
                SinkState::add(&self.state.rejected, 1);
                return;
            }
            Err(e) => e,
        };
        let Some(dead_letter) = &self.dead_letter else {
            SinkState::add(&self.state.lost.refused_row, 1);
            tracing::error!(target: "pglogsink", error = %store_error,
                record = %crate::rejected::dead_letter_entry(&self.table, &row, &store_error),
                "a refused row is lost: the rejected table failed and there is no spool for a dead-letter file");
            return;
        };
        match dead_letter.append(&self.table, &row, &store_error) {
            Ok(()) => {
                SinkState::add(&self.state.dead_lettered, 1);
                tracing::error!(target: "pglogsink", error = %store_error, file = %dead_letter.path().display(),
                    "could not store a refused row in the rejected table; wrote it to the dead-letter file");
            }
            Err(e) => {
                SinkState::add(&self.state.lost.refused_row, 1);
                tracing::error!(target: "pglogsink", error = %e,
                    record = %crate::rejected::dead_letter_entry(&self.table, &row, &store_error),
                    "a refused row is lost: the dead-letter file could not be written");
            }
        }
    }

    /// Delete old ledger rows (called now and then by the consumer); given
    /// up when the shutdown deadline passes.
    pub(crate) async fn prune_ledger(&self, retention: std::time::Duration) {
        let pruned = tokio::select! {
            biased;
            _ = self.abort.cancelled() => return,
            pruned = self.writer.prune_ledger(retention) => pruned,
        };
        match pruned {
            Ok(n) if n > 0 => {
                tracing::debug!(target: "pglogsink", rows = n, "pruned the batch ledger")
            }
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(target: "pglogsink", error = %e, "could not prune the batch ledger")
            }
        }
    }
}
