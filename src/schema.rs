//! Creating the Log table: runs `sql/schema.sql`, the same file operators can
//! apply with psql, then makes its first partitions.

use deadpool_postgres::{Object, Pool};
use tokio_postgres::types::Type;

use crate::database::connection;
use crate::maintain::Maintenance;
use crate::partitions::{self, Shape};
use crate::table::TableName;
use crate::Error;

/// The schema script, as shipped in `sql/schema.sql`.
pub const SCHEMA_SQL: &str = include_str!("../sql/schema.sql");

/// Create the Log table (partitioned by day), its level type, indexes,
/// ledger and rejected-rows tables if they do not exist, and the partitions
/// from today to three days ahead. Safe to run again and from several
/// processes at once; when everything exists it changes nothing and needs
/// no privilege beyond connecting, so a role that may only insert can call
/// it at start.
///
/// A table of pglogsink's earlier, unpartitioned shape is left as it is
/// (and keeps working): [`upgrade`](crate::upgrade) turns it into the new
/// shape. Partitions ahead are made by [`Maintenance::run`], which should
/// run periodically (`pglogsink serve` does); until a partition exists for
/// a time range, its rows go to the DEFAULT partition.
///
/// ```no_run
/// # async fn demo(pool: deadpool_postgres::Pool) -> Result<(), pglogsink::Error> {
/// let table = pglogsink::TableName::parse("log")?;
/// pglogsink::migrate(&pool, &table).await?;
/// # Ok(()) }
/// ```
pub async fn migrate(pool: &Pool, table: &TableName) -> Result<(), Error> {
    migrate_with(pool, table, &Maintenance::default()).await
}

/// [`migrate`], making partitions with `maintenance`'s interval and premake
/// (its retention is not applied: migrating never drops anything). When the
/// role may not create partitions, that is logged as a warning and the
/// table is used as it is.
pub async fn migrate_with(
    pool: &Pool,
    table: &TableName,
    maintenance: &Maintenance,
) -> Result<(), Error> {
    create_missing(pool, table).await?;
    let premake_only = maintenance.premake_only();
    if table_shape(pool, table).await? != Shape::Partitioned {
        return Ok(());
    }
    // Each partition created is logged as it is made.
    match premake_only.run(pool, table).await {
        Ok(_) => Ok(()),
        Err(e) if e.is_permission_denied() => {
            tracing::warn!(
                target: "pglogsink::maintain",
                "cannot create partitions of {table} ({e}); rows go to its DEFAULT partition \
                 until its owner runs `pglogsink maintain`"
            );
            Ok(())
        }
        Err(e) => Err(e),
    }
}

/// Run `sql/schema.sql` for `table`: creates only what is missing.
pub(crate) async fn create_missing(pool: &Pool, table: &TableName) -> Result<(), Error> {
    match run_schema(pool, table).await {
        // Another process created the same objects at the same moment: the
        // script's existence checks can miss that within one transaction
        // (they read a catalog snapshot older than the advisory lock), so
        // run it again, in a new one that sees them.
        Err(e) if matches!(e.sqlstate(), Some("42710" | "42P07" | "23505")) => {
            run_schema(pool, table).await
        }
        done => done,
    }
}

async fn run_schema(pool: &Pool, table: &TableName) -> Result<(), Error> {
    let context = format!("creating table {table}");
    let mut client = connection(pool, &context).await?;
    let tx = client
        .transaction()
        .await
        .map_err(|e| Error::database(context.as_str(), e))?;
    tx.batch_execute(&schema_script(table))
        .await
        .map_err(|e| Error::database(context.as_str(), e))?;
    tx.commit()
        .await
        .map_err(|e| Error::database(context.as_str(), e))
}

/// `sql/schema.sql` for `table`, to run inside a transaction: the setting it
/// reads is set for that transaction only.
pub(crate) fn schema_script(table: &TableName) -> String {
    // A validated name holds only [a-z0-9_.]: safe in a literal.
    format!(
        "SELECT set_config('pglogsink.table', '{}', true);\n{SCHEMA_SQL}",
        table.to_string().replace('\'', "''")
    )
}

pub(crate) async fn table_shape(pool: &Pool, table: &TableName) -> Result<Shape, Error> {
    let context = format!("reading table {table}");
    let client = connection(pool, &context).await?;
    partitions::shape(&client, table)
        .await
        .map_err(|e| Error::database(context.as_str(), e))
}

/// An index left invalid by an interrupted `CREATE INDEX CONCURRENTLY` is
/// dropped so that it is built again.
pub(crate) async fn drop_if_invalid(
    client: &Object,
    index: &TableName,
) -> Result<(), tokio_postgres::Error> {
    let invalid = client
        .query_typed(
            "SELECT 1 FROM pg_index WHERE indexrelid = to_regclass($1) AND NOT indisvalid",
            &[(&index.quoted(), Type::TEXT)],
        )
        .await?;
    if !invalid.is_empty() {
        client
            .batch_execute(&format!("DROP INDEX CONCURRENTLY {}", index.quoted()))
            .await?;
    }
    Ok(())
}
