//! The single consumer: wait for a record, take what else is already queued
//! (up to the batch size, no timer), write it in one COPY, retry transient
//! failures, stop the application on fatal ones.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use deadpool_postgres::Pool;
use tokio_util::sync::CancellationToken;

use crate::backoff::Backoff;
use crate::classify::{classify, fatal_error, Class, WriteError};
use crate::copy::copy_batch;
use crate::encode::CopyEncoder;
use crate::record::Record;
use crate::report::Report;
use crate::stats::Shared;

pub(crate) struct Consumer {
    pub(crate) rx: flume::Receiver<Record>,
    pub(crate) pool: Pool,
    pub(crate) table: String,
    pub(crate) copy_statement: String,
    pub(crate) batch_size: usize,
    pub(crate) backoff: Backoff,
    pub(crate) shared: Arc<Shared>,
    /// Cancelled on a fatal error: the host application stops on it.
    pub(crate) app_token: CancellationToken,
    /// Cancelled by shutdown: drain what is queued, then finish.
    pub(crate) stop: CancellationToken,
    /// Cancelled when the shutdown deadline passes: give up at once.
    pub(crate) abort: CancellationToken,
}

/// How writing one batch ended.
enum Outcome {
    Written,
    /// The deadline passed before the COPY began: the batch is not written.
    AbortedBefore,
    /// The deadline passed while the COPY was in flight.
    AbortedDuring,
    Fatal,
}

impl Consumer {
    pub(crate) async fn run(mut self) -> Report {
        let mut batch = Vec::with_capacity(self.batch_size);
        let mut encoder = CopyEncoder::default();
        let mut report = Report::default();
        while self.next_batch(&mut batch).await {
            Shared::add(&self.shared.received, batch.len() as u64);
            let outcome = self.write(&mut encoder, &batch).await;
            let n = batch.len() as u64;
            batch.clear();
            match outcome {
                Outcome::Written => continue,
                Outcome::AbortedBefore | Outcome::Fatal => report.not_written += n,
                Outcome::AbortedDuring => report.in_doubt += n,
            }
            break;
        }
        // Whatever is still queued will not be written; later sends fail.
        self.shared.closed.store(true, Ordering::Release);
        let left = self.rx.drain().count() as u64;
        Shared::add(&self.shared.received, left);
        report.not_written += left;
        drop(self.rx);

        let stats = self.shared.snapshot(0);
        report.written = stats.written;
        report.batches = stats.batches;
        report.retries = stats.retries;
        report.nul_replaced = stats.nul_replaced;
        report.timed_out = self.abort.is_cancelled();
        report.fatal = self.shared.fatal.lock().map(|f| f.clone()).unwrap_or(None);
        report
    }

    /// Fill `batch` with the next records: wait for the first, then take what
    /// is already queued. False when there is nothing more to do.
    async fn next_batch(&self, batch: &mut Vec<Record>) -> bool {
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
        batch.push(first);
        while batch.len() < self.batch_size {
            match self.rx.try_recv() {
                Ok(record) => batch.push(record),
                Err(_) => break,
            }
        }
        true
    }

    /// Write one batch, retrying transient errors until they clear or the
    /// shutdown deadline passes.
    async fn write(&mut self, encoder: &mut CopyEncoder, batch: &[Record]) -> Outcome {
        let encoded = encoder.encode(batch);
        let rows = batch.len() as u64;
        self.backoff.reset();
        loop {
            let client = tokio::select! {
                biased;
                _ = self.abort.cancelled() => return Outcome::AbortedBefore,
                client = self.pool.get() => client.map_err(WriteError::from),
            };
            let result = match client {
                Ok(client) => tokio::select! {
                    biased;
                    _ = self.abort.cancelled() => return Outcome::AbortedDuring,
                    result = copy_batch(&client, &self.copy_statement, &encoded.data, rows) => result,
                },
                Err(e) => Err(e),
            };
            let error = match result {
                Ok(()) => {
                    Shared::add(&self.shared.written, rows);
                    Shared::add(&self.shared.batches, 1);
                    Shared::add(&self.shared.nul_replaced, encoded.nul_replaced);
                    tracing::trace!(target: "pglogsink", rows, "batch written");
                    return Outcome::Written;
                }
                Err(e) => e,
            };
            match classify(&error) {
                Class::Transient(reason) => {
                    Shared::add(&self.shared.retries, 1);
                    let delay = self.backoff.next_delay();
                    tracing::warn!(
                        target: "pglogsink",
                        reason,
                        error = %error,
                        rows,
                        retry_in_ms = delay.as_millis() as u64,
                        "transient database error; the batch will be retried"
                    );
                    tokio::select! {
                        biased;
                        _ = self.abort.cancelled() => return Outcome::AbortedBefore,
                        _ = tokio::time::sleep(delay) => {}
                    }
                }
                Class::Fatal => {
                    let fatal = fatal_error(&error, &self.table);
                    tracing::error!(target: "pglogsink", error = %fatal, "fatal database error; stopping");
                    if let Ok(mut slot) = self.shared.fatal.lock() {
                        *slot = Some(fatal);
                    }
                    self.shared.closed.store(true, Ordering::Release);
                    self.app_token.cancel();
                    return Outcome::Fatal;
                }
            }
        }
    }
}
