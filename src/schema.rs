//! Creating the Log table: runs `sql/schema.sql`, the same file operators can
//! apply with psql.

use crate::database::connection;
use crate::table::TableName;
use crate::Error;

/// The schema script, as shipped in `sql/schema.sql`.
pub const SCHEMA_SQL: &str = include_str!("../sql/schema.sql");

/// Create the Log table, its level type and index if they do not exist.
/// Safe to run again and from several processes at once.
///
/// ```no_run
/// # async fn demo(pool: deadpool_postgres::Pool) -> Result<(), pglogsink::Error> {
/// let table = pglogsink::TableName::parse("log")?;
/// pglogsink::migrate(&pool, &table).await?;
/// # Ok(()) }
/// ```
pub async fn migrate(pool: &deadpool_postgres::Pool, table: &TableName) -> Result<(), Error> {
    let context = format!("creating table {table}");
    let mut client = connection(pool, &context).await?;
    let tx = client
        .transaction()
        .await
        .map_err(|e| Error::database(context.as_str(), e))?;
    tx.execute(
        "SELECT set_config('pglogsink.table', $1, true)",
        &[&table.to_string()],
    )
    .await
    .map_err(|e| Error::database(context.as_str(), e))?;
    tx.batch_execute(SCHEMA_SQL)
        .await
        .map_err(|e| Error::database(context.as_str(), e))?;
    tx.commit()
        .await
        .map_err(|e| Error::database(context.as_str(), e))
}
