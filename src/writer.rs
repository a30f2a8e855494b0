//! The seam between the consumer's decisions and the database: a [`Writer`]
//! writes one batch, stores one refused row, prunes the ledger. [`PgWriter`]
//! does it through the connection pool; the consumer's unit tests use a fake.

use std::future::Future;
use std::time::Duration;

use deadpool_postgres::{Object, Pool};

use crate::batch::EncodedBatch;
use crate::classify::{needs_fresh_connection, WriteError};
use crate::copy::{write_batch, Committed, CopyStatements};
use crate::rejected::{RejectedRow, RejectedTable};
use crate::table::TableName;

/// What the consumer needs from the database.
///
/// A future dropped before it completes (the shutdown deadline passed) must
/// leave nothing behind that a later write could meet: [`PgWriter`] discards
/// the connection it was using.
pub(crate) trait Writer: Send + Sync {
    /// Write one batch with its ledger row, in one transaction.
    fn write(
        &self,
        batch: &EncodedBatch,
    ) -> impl Future<Output = Result<Committed, WriteError>> + Send;

    /// Keep one refused row in the rejected-rows table.
    fn store_rejected(
        &self,
        row: &RejectedRow,
    ) -> impl Future<Output = Result<(), WriteError>> + Send;

    /// Delete ledger rows older than `retention`; returns how many.
    fn prune_ledger(
        &self,
        retention: Duration,
    ) -> impl Future<Output = Result<u64, WriteError>> + Send;
}

/// How long [`PgWriter`] waits on the database for one operation, at most.
#[derive(Debug, Clone, Copy)]
pub(crate) struct WriteTimeouts {
    /// `SET LOCAL lock_timeout` of every batch's transaction.
    pub(crate) lock: Duration,
    /// `SET LOCAL statement_timeout` of every batch's transaction, and (with
    /// a margin for the network) the client's own bound on a whole write.
    pub(crate) statement: Duration,
}

impl WriteTimeouts {
    /// The client-side bound: the server's statement timeout fires first
    /// when the server is there to fire it.
    fn client(&self) -> Duration {
        self.statement + Duration::from_secs(5)
    }
}

/// The real writer: pooled connections, binary COPY, the ledger.
pub(crate) struct PgWriter {
    pool: Pool,
    statements: CopyStatements,
    rejected: RejectedTable,
    timeouts: WriteTimeouts,
}

impl PgWriter {
    pub(crate) fn new(pool: Pool, table: &TableName, timeouts: WriteTimeouts) -> PgWriter {
        PgWriter {
            pool,
            statements: CopyStatements::new(table, timeouts.lock, timeouts.statement),
            rejected: RejectedTable::new(table),
            timeouts,
        }
    }

    async fn checkout(&self) -> Result<Checkout, WriteError> {
        Ok(Checkout(Some(self.pool.get().await?)))
    }
}

impl Writer for PgWriter {
    async fn write(&self, batch: &EncodedBatch) -> Result<Committed, WriteError> {
        let attempt = async {
            let mut conn = self.checkout().await?;
            let result = write_batch(conn.client(), &self.statements, batch).await;
            conn.settle(&result);
            result
        };
        bounded(self.timeouts.client(), attempt).await
    }

    async fn store_rejected(&self, row: &RejectedRow) -> Result<(), WriteError> {
        let attempt = async {
            let mut conn = self.checkout().await?;
            let result = self.rejected.store(conn.client(), row).await;
            conn.settle(&result);
            result
        };
        bounded(self.timeouts.client(), attempt).await
    }

    async fn prune_ledger(&self, retention: Duration) -> Result<u64, WriteError> {
        let attempt = async {
            let mut conn = self.checkout().await?;
            let result = self.statements.ledger.prune(conn.client(), retention).await;
            conn.settle(&result);
            result
        };
        bounded(self.timeouts.client(), attempt).await
    }
}

/// `attempt`, given up after `limit`. Dropping it drops its [`Checkout`],
/// which discards the connection (its state is unknown).
async fn bounded<T>(
    limit: Duration,
    attempt: impl Future<Output = Result<T, WriteError>>,
) -> Result<T, WriteError> {
    tokio::time::timeout(limit, attempt)
        .await
        .unwrap_or(Err(WriteError::TimedOut(limit)))
}

/// A pooled connection that goes back to the pool only when released: one
/// dropped mid-transaction (the deadline, the timeout) or after a
/// connection-level failure is discarded instead, so nobody else meets its
/// state.
struct Checkout(Option<Object>);

impl Checkout {
    fn client(&mut self) -> &mut deadpool_postgres::Client {
        self.0.as_mut().expect("taken only by release or drop")
    }

    /// Back to the pool, unless `result` says the connection is broken or
    /// holds state the next user must not meet.
    fn settle<T>(mut self, result: &Result<T, WriteError>) {
        if !matches!(result, Err(e) if needs_fresh_connection(e)) {
            drop(self.0.take());
        }
    }
}

impl Drop for Checkout {
    fn drop(&mut self) {
        if let Some(client) = self.0.take() {
            drop(Object::take(client));
        }
    }
}
