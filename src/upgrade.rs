//! Upgrading a Log table of pglogsink's earlier, unpartitioned shape in
//! place: the old table becomes one partition of the new table, covering
//! everything up to the end of tomorrow, without copying its rows.
//!
//! 1. Without blocking writers: the old table gets the new shape's indexes
//!    (`CREATE INDEX CONCURRENTLY`, so attaching it builds none) and a
//!    validated `CHECK ("timestamp" < bound)` (so attaching it scans
//!    nothing). Rows already stamped past the bound (a skewed clock) are set
//!    aside in a holding table first.
//! 2. One short transaction: rename the old table, create the new one from
//!    `sql/schema.sql`, continue its id sequence after the old ids, attach
//!    the old table as the partition `[MINVALUE, bound)`, put the held rows
//!    back. COPYs waiting on the lock meanwhile find the new table by name
//!    when it commits, so every row written during the upgrade is kept.
//!
//! The old table's own indexes (primary key, "timestamp" btree) stay on the
//! old partition until retention drops it.

use deadpool_postgres::{Object, Pool};
use tokio_postgres::types::Type;

use crate::database::connection;
use crate::maintain::drop_if_invalid;
use crate::maintain::Maintenance;
use crate::micros::now_unix_micros;
use crate::partitions::{id_sequence, sql_timestamp, utc_text, Shape};
use crate::schema::{create_missing, schema_script, table_shape};
use crate::table::{quote_identifier, TableName};
use crate::Error;

/// What [`upgrade`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Upgrade {
    /// The table already had the partitioned shape (or did not exist and
    /// was created with it).
    AlreadyPartitioned,
    /// The old table is now the partition `partition`, holding every row up
    /// to `bound` (a timestamp in UTC).
    Upgraded {
        /// The old table's new name.
        partition: String,
        /// The end of its range.
        bound: String,
        /// Rows it held (PostgreSQL's estimate).
        rows: i64,
    },
}

/// Turn a Log table of pglogsink's earlier shape (a plain table with an
/// identity primary key) into the partitioned shape of `sql/schema.sql`,
/// in place, then make partitions ahead as [`Maintenance::run`] does.
/// Writers may keep writing meanwhile: they wait at most for one short
/// transaction. A missing table is created instead.
///
/// During the index builds and the validation scan (which take time on a
/// large table but block nobody), a row stamped past the end of tomorrow is
/// refused by the table's temporary CHECK constraint and goes to the
/// rejected-rows table.
///
/// ```no_run
/// # async fn demo(pool: deadpool_postgres::Pool) -> Result<(), pglogsink::Error> {
/// let table = pglogsink::TableName::parse("log")?;
/// let done = pglogsink::upgrade(&pool, &table, &pglogsink::Maintenance::default()).await?;
/// println!("{done:?}");
/// # Ok(()) }
/// ```
pub async fn upgrade(
    pool: &Pool,
    table: &TableName,
    maintenance: &Maintenance,
) -> Result<Upgrade, Error> {
    if table_shape(pool, table).await? != Shape::Plain {
        crate::schema::migrate_with(pool, table, maintenance).await?;
        return Ok(Upgrade::AlreadyPartitioned);
    }
    // The ledger and rejected-rows tables of an older install, if missing.
    create_missing(pool, table).await?;
    let context = format!("upgrading table {table}");
    let db = |e| Error::database(context.as_str(), e);
    let mut client = connection(pool, &context).await?;
    let legacy = table.sibling("_legacy");
    let step = maintenance.interval.micros();
    let bound = maintenance.interval.floor(now_unix_micros()) + 2 * step;
    let bound_sql = sql_timestamp(bound);

    prepare_old_table(&client, table, &legacy, &bound_sql)
        .await
        .map_err(db)?;
    let rows = match swap(&mut client, table, &legacy, &bound_sql).await {
        Ok(rows) => rows,
        Err(e) => {
            // Leave the old table as it was, so that it takes every row again.
            if let Err(undo) = undo_prepare(&client, table, &legacy).await {
                tracing::warn!(target: "pglogsink::maintain", "undoing the upgrade's preparation of {table}: {undo}");
            }
            return Err(db(e));
        }
    };
    tracing::info!(
        target: "pglogsink::maintain",
        "upgraded {table}: the old table is now partition {legacy} (rows up to {bound_sql})"
    );
    crate::schema::migrate_with(pool, table, maintenance).await?;
    Ok(Upgrade::Upgraded {
        partition: legacy.to_string(),
        bound: utc_text(bound),
        rows,
    })
}

/// Step 1: indexes and a validated CHECK on the old table, blocking nobody.
async fn prepare_old_table(
    client: &Object,
    table: &TableName,
    legacy: &TableName,
    bound: &str,
) -> Result<(), tokio_postgres::Error> {
    let old = table.quoted();
    // The same definitions as sql/schema.sql's partitioned indexes, so that
    // ATTACH PARTITION adopts them instead of building its own under lock.
    // The old table's "warn" index already matches and is kept.
    let indexes = [
        (
            "_brin",
            "USING brin (\"timestamp\", id) WITH (pages_per_range = 32, autosummarize = on)",
        ),
        (
            "_request_id_idx",
            "USING hash ((fields->>'request_id')) WHERE fields ? 'request_id'",
        ),
        (
            "_trace_id_idx",
            "USING hash ((fields->>'trace_id')) WHERE fields ? 'trace_id'",
        ),
    ];
    for (suffix, definition) in indexes {
        let index = legacy.sibling(suffix);
        drop_if_invalid(client, &index).await?;
        tracing::info!(
            target: "pglogsink::maintain",
            "upgrading {table}: building index {index} concurrently (writers go on)"
        );
        // The index's name alone: CREATE INDEX takes no schema (the index
        // goes in its table's schema).
        client
            .batch_execute(&format!(
                "CREATE INDEX CONCURRENTLY IF NOT EXISTS {} ON {old} {definition}",
                quote_identifier(index.name())
            ))
            .await?;
    }
    let check = legacy.sibling("_range").name().to_owned();
    let hold = hold_table(table);
    // Adding the constraint takes a brief exclusive lock; the rows past the
    // bound move aside in the same transaction so that validation passes.
    client
        .batch_execute(&format!(
            "BEGIN;
             SET LOCAL lock_timeout = '5s';
             SET LOCAL client_min_messages = warning;
             ALTER TABLE {old} DROP CONSTRAINT IF EXISTS \"{check}\";
             ALTER TABLE {old} ADD CONSTRAINT \"{check}\" CHECK (\"timestamp\" < {bound}) NOT VALID;
             CREATE TABLE IF NOT EXISTS {hold} (LIKE {old});
             WITH moved AS (DELETE FROM {old} WHERE \"timestamp\" >= {bound} RETURNING *)
                 INSERT INTO {hold} SELECT * FROM moved;
             COMMIT;"
        ))
        .await?;
    // A scan, but under a lock that lets writers go on.
    tracing::info!(
        target: "pglogsink::maintain",
        "upgrading {table}: checking that every row is before {bound} (writers go on)"
    );
    client
        .batch_execute(&format!(
            "ALTER TABLE {old} VALIDATE CONSTRAINT \"{check}\""
        ))
        .await
}

/// Drop the CHECK constraint and put the held rows back.
async fn undo_prepare(
    client: &Object,
    table: &TableName,
    legacy: &TableName,
) -> Result<(), tokio_postgres::Error> {
    let old = table.quoted();
    let hold = hold_table(table);
    client
        .batch_execute(&format!(
            "BEGIN;
             ALTER TABLE {old} DROP CONSTRAINT IF EXISTS \"{check}\";
             INSERT INTO {old} OVERRIDING SYSTEM VALUE SELECT * FROM {hold};
             DROP TABLE {hold};
             COMMIT;",
            check = legacy.sibling("_range").name()
        ))
        .await
}

/// Where rows stamped past the bound wait during an upgrade.
fn hold_table(table: &TableName) -> String {
    table.sibling("_upgrade_hold").quoted()
}

/// Step 2: the swap, in one transaction. Returns the old table's estimated
/// row count.
async fn swap(
    client: &mut Object,
    table: &TableName,
    legacy: &TableName,
    bound: &str,
) -> Result<i64, tokio_postgres::Error> {
    let old = table.quoted();
    let legacy_q = legacy.quoted();
    let hold = hold_table(table);
    let warn_old = table.sibling("_warn_idx");
    let warn_new = legacy.sibling("_warn_idx").name().to_owned();
    let sequence = id_sequence(table).quoted();
    let check = legacy.sibling("_range").name().to_owned();
    let tx = client.transaction().await?;
    tx.batch_execute(&format!(
        "SET LOCAL lock_timeout = '10s';
         LOCK TABLE {old} IN ACCESS EXCLUSIVE MODE;
         ALTER TABLE {old} RENAME TO \"{legacy_name}\";
         ALTER INDEX IF EXISTS {warn_old} RENAME TO \"{warn_new}\";
         ALTER TABLE {legacy_q} ALTER COLUMN id DROP IDENTITY IF EXISTS;",
        legacy_name = legacy.name(),
        warn_old = warn_old.quoted(),
    ))
    .await?;
    tx.batch_execute(&schema_script(table)).await?;
    tx.batch_execute(&format!(
        "SELECT setval('{seq}', (SELECT coalesce(max(id), 0) + 1 FROM {legacy_q}), false);
         ALTER TABLE {old} ATTACH PARTITION {legacy_q} FOR VALUES FROM (MINVALUE) TO ({bound});
         ALTER TABLE {legacy_q} DROP CONSTRAINT \"{check}\";
         INSERT INTO {old} SELECT * FROM {hold};
         DROP TABLE {hold};",
        seq = sequence.replace('\'', "''"),
    ))
    .await?;
    let rows: i64 = tx
        .query_typed_one(
            "SELECT reltuples::int8 FROM pg_class WHERE oid = to_regclass($1)",
            &[(&legacy_q, Type::TEXT)],
        )
        .await?
        .get(0);
    tx.commit().await?;
    Ok(rows.max(0))
}
