//! Citus columnar storage for closed partitions: whether the server can
//! store it, and what a columnar partition needs that a heap one does not.
//!
//! What a server needs, found on Citus 13.2 with PostgreSQL 15: the
//! `citus_columnar` extension (shipped with Citus 11.1 and later; `CREATE
//! EXTENSION citus` no longer creates it since 13.2), and its library in
//! `shared_preload_libraries` (`citus_columnar`, or `citus`, which loads
//! it). Without the preload, PostgreSQL loads the library only in a session
//! that touches a columnar table, and a session that has not yet skips
//! columnar's hooks: there, `DROP TABLE` of a columnar partition (retention)
//! leaves its storage metadata behind, and a `CREATE INDEX` columnar
//! refuses goes through.
//!
//! A columnar partition carries the Log table's BRIN index like every
//! partition (the partitioned index requires it), cloned by PostgreSQL when
//! the partition is attached: columnar checks only `CREATE INDEX`, and
//! builds the whole index fine. It is never read (columnar has no bitmap
//! scans; the min/max of its chunk groups skip by time instead), and its
//! `autosummarize` is off: columnar cannot summarise one block range, so
//! the summary autovacuum would be asked for fails.

use deadpool_postgres::Object;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::Type;

use crate::table::TableName;
use crate::Error;

/// The extension that provides the `columnar` access method.
const EXTENSION: &str = "citus_columnar";

/// How to get columnar storage onto a server, for the error messages.
const HOW: &str = "install Citus 11.1 or later (Citus's packages, or built from source), add \
     'citus_columnar' (or 'citus', which loads it) to shared_preload_libraries, restart \
     PostgreSQL, and run CREATE EXTENSION citus_columnar as a superuser";

/// Make sure partitions can be stored `USING columnar` here: the library
/// preloaded and the extension created (by us when we may). The error says
/// what is missing and how to get it.
pub(super) async fn ensure_available(client: &Object) -> Result<(), Error> {
    let context = "checking for columnar storage";
    let db = |e| Error::database(context, e);
    let row = client
        .query_typed_one(
            "SELECT EXISTS (SELECT 1 FROM pg_available_extensions WHERE name = $1), \
                    EXISTS (SELECT 1 FROM pg_am WHERE amname = 'columnar'), \
                    (SELECT setting FROM pg_settings WHERE name = 'shared_preload_libraries'), \
                    current_setting('columnar.compression', true) IS NOT NULL, \
                    current_database()::text, \
                    current_setting('server_version_num')::int >= 140000",
            &[(&EXTENSION, Type::TEXT)],
        )
        .await
        .map_err(db)?;
    let (available, created): (bool, bool) = (row.get(0), row.get(1));
    let (preload, loaded): (Option<String>, bool) = (row.get(2), row.get(3));
    let (database, recent): (String, bool) = (row.get(4), row.get(5));
    if !recent {
        // Columnar partitions are read through statistics on expressions.
        return Err(missing("PostgreSQL 14 or later is needed".to_owned()));
    }
    if !available && !created {
        return Err(missing(format!(
            "this server has no {EXTENSION} extension: {HOW}"
        )));
    }
    // A role that may not read shared_preload_libraries sees no row: then
    // the library's settings, defined by a preloaded library in every
    // session, are the sign.
    let preloaded = preload.as_deref().map_or(loaded, preloads_columnar);
    if !preloaded {
        return Err(missing(format!(
            "{EXTENSION} is not in shared_preload_libraries: add 'citus_columnar' (or 'citus', \
             which loads it) and restart PostgreSQL. Loaded on demand instead, it is missing from \
             the sessions that have not touched a columnar table yet, which then drop columnar \
             partitions without their storage metadata"
        )));
    }
    if created {
        return Ok(());
    }
    let made = client
        .batch_execute(&format!(
            "SET client_min_messages = warning; CREATE EXTENSION IF NOT EXISTS {EXTENSION}; \
             RESET client_min_messages"
        ))
        .await;
    match made {
        Ok(()) => {
            tracing::info!(target: "pglogsink::maintain", "created extension {EXTENSION}");
            Ok(())
        }
        Err(e) if e.code() == Some(&SqlState::INSUFFICIENT_PRIVILEGE) => Err(missing(format!(
            "the {EXTENSION} extension is not created in database {database:?}, and creating \
             it needs a superuser: have one run CREATE EXTENSION {EXTENSION} there"
        ))),
        Err(e) => Err(db(e)),
    }
}

fn missing(message: String) -> Error {
    Error::config(
        "--columnar-after",
        format!("needs columnar storage: {message}"),
    )
}

/// Whether a `shared_preload_libraries` value loads columnar (`citus`
/// loads `citus_columnar` itself).
fn preloads_columnar(setting: &str) -> bool {
    setting
        .split(',')
        .map(|entry| entry.trim().trim_matches('"'))
        .map(|entry| entry.rsplit('/').next().unwrap_or(entry))
        .map(|entry| entry.strip_suffix(".so").unwrap_or(entry))
        .any(|library| library == "citus" || library == EXTENSION)
}

/// Settings for the columnar partition about to be created, holding about
/// `rows` rows in each of its tables (its shards, when distributed; `None`:
/// unknown): stripes of a quarter of them, between a chunk group (10,000
/// rows by default) and the server's stripe size (150,000, also when the
/// rows are unknown). They become the table's options, which Citus gives
/// its shards. Columnar costs an index lookup at one stripe read at least
/// and a scan at its stripes, with nothing per row, so on a table of one
/// stripe the planner scans every row (22 ms for 100,000 rows) rather than
/// read the request id's hash index (2 ms); from two stripes up it takes
/// the index. Smaller stripes than needed cost every scan: each stripe's
/// metadata is read (`--follow` read 200 stripes of 10,000 rows in 10 ms).
/// Chunk groups, not stripes, are the unit of compression.
pub(super) async fn before_create(
    client: &tokio_postgres::Transaction<'_>,
    rows: Option<f64>,
) -> Result<(), tokio_postgres::Error> {
    let quarter = rows.map_or(f64::INFINITY, |r| r / 4.0);
    client
        .query_typed(
            "SELECT set_config('columnar.stripe_row_limit', \
                 greatest(current_setting('columnar.chunk_group_row_limit')::int, \
                          least(current_setting('columnar.stripe_row_limit')::int, $1) \
                 )::int::text, true)",
            &[(&quarter, Type::FLOAT8)],
        )
        .await?;
    Ok(())
}

/// What the filled columnar partition needs before it is analyzed:
/// statistics on the expressions of its indexes (`fields->>'request_id'`,
/// `fields->>'trace_id'`), named `<partition>_stat<k>`. Without them the
/// planner guesses that a request id matches 0.5% of the rows, and the
/// columnar cost of fetching that many through an index makes it scan the
/// whole partition (0.6 s on 1.6 million rows) instead of reading the hash
/// index (4 ms). Returns how many it made.
pub(super) async fn after_fill(
    client: &tokio_postgres::Transaction<'_>,
    partition: &TableName,
) -> Result<usize, tokio_postgres::Error> {
    let expressions = client
        .query_typed(
            "SELECT DISTINCT pg_get_indexdef(i.indexrelid, k, true) \
             FROM pg_index i, generate_series(1, i.indnkeyatts) k \
             WHERE i.indrelid = to_regclass($1) AND i.indkey[k - 1] = 0",
            &[(&partition.quoted(), Type::TEXT)],
        )
        .await?;
    for (k, expression) in expressions.iter().enumerate() {
        let expression: String = expression.get(0);
        client
            .batch_execute(&format!(
                "CREATE STATISTICS {} ON ({expression}) FROM {}",
                statistics(partition, k + 1).quoted(),
                partition.quoted()
            ))
            .await?;
    }
    Ok(expressions.len())
}

/// The name of the `k`th statistics object of `partition`.
pub(super) fn statistics(partition: &TableName, k: usize) -> TableName {
    partition.sibling(&format!("_stat{k}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn preload_lists_that_load_columnar() {
        for yes in [
            "citus",
            "citus_columnar",
            "pg_stat_statements, citus",
            "\"$libdir/citus\"",
            "$libdir/citus_columnar.so",
        ] {
            assert!(preloads_columnar(yes), "{yes}");
        }
        for no in ["", "pg_stat_statements", "citus_wal2json", "citusx"] {
            assert!(!preloads_columnar(no), "{no}");
        }
    }
}
