//! Writing one encoded batch with one binary COPY.

use bytes::Bytes;
use futures_util::SinkExt;

use crate::classify::WriteError;
use crate::encode::COLUMNS;
use crate::table::TableName;

/// Size of the CopyData messages the batch is sent in, so that the server can
/// parse the start of a large batch while the rest is still on the wire.
const CHUNK: usize = 256 * 1024;

/// The COPY statement for a table.
pub(crate) fn copy_statement(table: &TableName) -> String {
    format!(
        "COPY {} ({COLUMNS}) FROM STDIN (FORMAT binary)",
        table.quoted()
    )
}

/// Send `data` (a complete binary COPY stream of `rows` rows) in one COPY,
/// committed on its own. Either every row is committed or none is.
pub(crate) async fn copy_batch(
    client: &deadpool_postgres::Client,
    statement: &str,
    data: &Bytes,
    rows: u64,
) -> Result<(), WriteError> {
    let statement = client.prepare_cached(statement).await?;
    let sink = client.copy_in::<_, Bytes>(&statement).await?;
    futures_util::pin_mut!(sink);
    let mut offset = 0;
    while offset < data.len() {
        let end = (offset + CHUNK).min(data.len());
        sink.feed(data.slice(offset..end)).await?;
        offset = end;
    }
    let committed = sink.as_mut().finish().await?;
    if committed != rows {
        return Err(WriteError::RowCount {
            sent: rows,
            committed,
        });
    }
    Ok(())
}
