//! Writing one batch: one transaction that claims the batch's key in the
//! ledger and COPYs its rows. Either both are committed or neither is.

use bytes::Bytes;
use futures_util::SinkExt;
use tokio_postgres::types::{ToSql, Type};

use crate::batch::EncodedBatch;
use crate::classify::WriteError;
use crate::copy_format::COLUMNS;
use crate::table::TableName;

/// Size of the CopyData messages a batch is sent in, so that the server can
/// parse the start of a large batch while the rest is still on the wire.
const CHUNK: usize = 256 * 1024;

/// The SQL the writer uses for one table.
pub(crate) struct Statements {
    copy: String,
    claim: String,
    prune: String,
    reject: String,
}

impl Statements {
    pub(crate) fn new(table: &TableName) -> Statements {
        let ledger = table.ledger_table().quoted();
        Statements {
            copy: format!(
                "COPY {} ({COLUMNS}) FROM STDIN (FORMAT binary)",
                table.quoted()
            ),
            claim: format!(
                "INSERT INTO {ledger} (instance, seq, part, rows) VALUES ($1, $2, $3, $4) \
                 ON CONFLICT DO NOTHING"
            ),
            prune: format!(
                "DELETE FROM {ledger} WHERE committed_at < now() - make_interval(secs => $1)"
            ),
            reject: format!(
                "INSERT INTO {} (sqlstate, error, record) VALUES ($1, $2, $3)",
                table.rejected_table().quoted()
            ),
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
/// (which hands each transaction to any server connection). The ledger row
/// goes through the unnamed statement (Parse, Bind, Execute and Sync in one
/// round trip); the COPY needs a named statement, which is prepared inside
/// the transaction and closed before it ends, also when it fails.
pub(crate) async fn write_batch(
    client: &mut deadpool_postgres::Client,
    statements: &Statements,
    batch: &EncodedBatch,
) -> Result<Committed, WriteError> {
    let rows = batch.rows() as u64;
    let key = batch.key;
    let tx = client.transaction().await?;
    let claimed = tx
        .execute_typed(
            &statements.claim,
            &[
                (&key.instance, Type::INT8),
                (&key.seq, Type::INT8),
                (&key.part, Type::INT4),
                (&(rows as i32), Type::INT4),
            ],
        )
        .await?;
    if claimed == 0 {
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
    statements: &Statements,
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

/// Store a row PostgreSQL refused in the rejected-rows table (one unnamed
/// statement: pooler-safe).
pub(crate) async fn store_rejected(
    client: &deadpool_postgres::Client,
    statements: &Statements,
    sqlstate: Option<&str>,
    error: &str,
    record: &serde_json::Value,
) -> Result<(), WriteError> {
    client
        .execute_typed(
            &statements.reject,
            &[
                (&sqlstate as &(dyn ToSql + Sync), Type::TEXT),
                (&error, Type::TEXT),
                (record, Type::JSONB),
            ],
        )
        .await?;
    Ok(())
}

/// Delete ledger rows older than `retention`; returns how many (one unnamed
/// statement: pooler-safe).
pub(crate) async fn prune_ledger(
    client: &deadpool_postgres::Client,
    statements: &Statements,
    retention: std::time::Duration,
) -> Result<u64, WriteError> {
    Ok(client
        .execute_typed(
            &statements.prune,
            &[(&retention.as_secs_f64(), Type::FLOAT8)],
        )
        .await?)
}
