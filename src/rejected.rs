//! Rows PostgreSQL refused (a data exception, a constraint, a limit): the
//! batch is split until the row is found, and the row is set aside in
//! `<table>_rejected`, or else in the spool's `dead-letter.ndjson`, or else
//! counted lost. Never retried, never silently dropped.

use std::fs::OpenOptions;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use tokio_postgres::types::{ToSql, Type};

use crate::classify::WriteError;
use crate::copy_format::row_to_json;
use crate::table::TableName;

const DEAD_LETTER: &str = "dead-letter.ndjson";

/// One refused row, as it is kept.
#[derive(Debug, Clone)]
pub(crate) struct RejectedRow {
    pub(crate) sqlstate: Option<String>,
    pub(crate) error: String,
    /// The row as JSON (see [`row_to_json`]).
    pub(crate) record: serde_json::Value,
}

impl RejectedRow {
    /// `row` is one row of a COPY stream; `error` what PostgreSQL said.
    pub(crate) fn new(row: &[u8], error: &WriteError) -> RejectedRow {
        RejectedRow {
            sqlstate: error.sqlstate().map(str::to_owned),
            error: error.to_string(),
            record: row_to_json(row),
        }
    }
}

/// The rejected-rows table's INSERT for one Log table (the unnamed
/// statement: pooler-safe).
pub(crate) struct RejectedTable {
    insert: String,
}

impl RejectedTable {
    pub(crate) fn new(table: &TableName) -> RejectedTable {
        RejectedTable {
            insert: format!(
                "INSERT INTO {} (sqlstate, error, record) VALUES ($1, $2, $3)",
                table.rejected_table().quoted()
            ),
        }
    }

    pub(crate) async fn store(
        &self,
        client: &deadpool_postgres::Client,
        row: &RejectedRow,
    ) -> Result<(), WriteError> {
        client
            .execute_typed(
                &self.insert,
                &[
                    (&row.sqlstate as &(dyn ToSql + Sync), Type::TEXT),
                    (&row.error, Type::TEXT),
                    (&row.record, Type::JSONB),
                ],
            )
            .await?;
        Ok(())
    }
}

/// The last resort for a refused row: a line in `dead-letter.ndjson` in the
/// spool directory.
pub(crate) struct DeadLetter {
    path: PathBuf,
}

impl DeadLetter {
    pub(crate) fn in_dir(dir: &Path) -> DeadLetter {
        DeadLetter {
            path: dir.join(DEAD_LETTER),
        }
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Append one row (with why the table could not take it), synced.
    pub(crate) fn append(
        &self,
        table: &str,
        row: &RejectedRow,
        store_error: &WriteError,
    ) -> io::Result<()> {
        let entry = dead_letter_entry(table, row, store_error);
        let mut file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)?;
        let mut line = serde_json::to_vec(&entry)?;
        line.push(b'\n');
        file.write_all(&line)?;
        file.sync_data()
    }
}

/// The JSON kept for a row with no home in the database.
pub(crate) fn dead_letter_entry(
    table: &str,
    row: &RejectedRow,
    store_error: &WriteError,
) -> serde_json::Value {
    serde_json::json!({
        "table": table,
        "sqlstate": row.sqlstate,
        "error": row.error,
        "rejected_table_error": store_error.to_string(),
        "record": row.record,
    })
}
