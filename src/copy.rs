//! Writing one batch: one transaction that claims the batch's key in the
//! ledger and COPYs its rows. Either both are committed or neither is.

use std::time::Duration;

use bytes::Bytes;
use futures_util::SinkExt;

use crate::batch::EncodedBatch;
use crate::classify::WriteError;
use crate::copy_format::COLUMNS;
use crate::ledger::Ledger;
use crate::table::TableName;

/// Size of the CopyData messages a batch is sent in, so that the server can
/// parse the start of a large batch while the rest is still on the wire.
const CHUNK: usize = 256 * 1024;

/// One connection per worker for a batch's COPY through a Citus
/// coordinator, not one per shard.
///
/// By default Citus opens up to 16 connections to each worker for a COPY
/// (`citus.max_adaptive_executor_pool_size`), one per shard it writes, and
/// keeps one per worker when the transaction ends
/// (`citus.max_cached_conns_per_worker`): every batch opened the others
/// again (TLS and authentication included) and prepared and committed a
/// two-phase transaction on each. Measured on a coordinator and two workers
/// with 32 shards: 20 transactions of 16,384 rows took 11.0 s that way and
/// 2.65 s with one connection per worker, which Citus keeps from batch to
/// batch; one `\copy` of the same 327,680 rows took 1.74 s. The sink went
/// from 0.19 to 0.88 times one COPY through the coordinator (`cargo bench
/// --bench pipeline -- --citus`; README, "When one PostgreSQL is not
/// enough").
///
/// On a server without Citus this sets a placeholder nobody reads:
/// PostgreSQL accepts any setting whose name has a dot in it.
const CITUS_COPY: &str = "SET LOCAL citus.max_adaptive_executor_pool_size = 1";

/// The SQL the writer uses for one table.
pub(crate) struct CopyStatements {
    copy: String,
    /// `SET LOCAL` of the transaction's lock and statement timeouts, and
    /// of how a Citus coordinator spreads the COPY (see [`CITUS_COPY`]).
    settings: String,
    pub(crate) ledger: Ledger,
}

impl CopyStatements {
    /// `lock_timeout` bounds the wait for a lock on the table (held by a
    /// migration, `VACUUM FULL`, a partition being dropped);
    /// `statement_timeout` bounds each statement of the transaction.
    pub(crate) fn new(
        table: &TableName,
        lock_timeout: Duration,
        statement_timeout: Duration,
    ) -> CopyStatements {
        CopyStatements {
            copy: format!(
                "COPY {} ({COLUMNS}) FROM STDIN (FORMAT binary)",
                table.quoted()
            ),
            settings: format!(
                "SET LOCAL lock_timeout = {}; SET LOCAL statement_timeout = {}; {CITUS_COPY}",
                lock_timeout.as_millis().max(1),
                statement_timeout.as_millis().max(1)
            ),
            ledger: Ledger::new(table),
        }
    }
}

/// How a write ended when it did not fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Committed {
    /// The rows are in the table now.
    Written,
    /// The ledger already held the batch's key: an earlier attempt whose
    /// outcome we did not hear, or an earlier replay, committed it.
    AlreadyWritten,
}

/// Write `batch` in one transaction with its ledger row.
///
/// Pooler-safe: nothing is left on the server connection when the
/// transaction ends, so this works through PgBouncer in transaction mode
/// (which hands each transaction to any server connection). The timeouts are
/// `SET LOCAL` and the ledger row goes through the unnamed statement, the
/// two pipelined in one round trip; the COPY needs a named statement, which
/// is prepared inside the transaction and closed before it ends, also when
/// it fails.
pub(crate) async fn write_batch(
    client: &mut deadpool_postgres::Client,
    statements: &CopyStatements,
    batch: &EncodedBatch,
) -> Result<Committed, WriteError> {
    let rows = batch.rows() as u64;
    let tx = client.transaction().await?;
    let set_timeouts = async {
        tx.batch_execute(&statements.settings)
            .await
            .map_err(WriteError::from)
    };
    let claim = statements.ledger.claim(&tx, batch.key, batch.rows());
    let ((), claimed) = tokio::try_join!(set_timeouts, claim)?;
    if !claimed {
        tx.rollback().await?;
        return Ok(Committed::AlreadyWritten);
    }
    let copied = copy_rows(&tx, statements, batch).await?;
    if copied != rows {
        return Err(WriteError::RowCount {
            sent: rows,
            committed: copied,
        });
    }
    tx.commit().await?;
    Ok(Committed::Written)
}

/// COPY the batch's rows. The statement is dropped when this returns, on
/// every path: its Close (and Sync) is queued on the connection before the
/// caller's COMMIT or ROLLBACK, so it reaches the same server connection
/// while the transaction still holds it. (A Close is accepted in an aborted
/// transaction too.)
async fn copy_rows(
    tx: &deadpool_postgres::Transaction<'_>,
    statements: &CopyStatements,
    batch: &EncodedBatch,
) -> Result<u64, WriteError> {
    let copy = tx.prepare(&statements.copy).await?;
    let sink = tx.copy_in::<_, Bytes>(&copy).await?;
    futures_util::pin_mut!(sink);
    let data = &batch.data;
    let mut offset = 0;
    while offset < data.len() {
        let end = (offset + CHUNK).min(data.len());
        sink.feed(data.slice(offset..end)).await?;
        offset = end;
    }
    Ok(sink.as_mut().finish().await?)
}
