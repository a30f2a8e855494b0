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

/// The script that distributes the Log table on Citus, as shipped in
/// `sql/distribute.sql`.
pub const DISTRIBUTE_SQL: &str = include_str!("../sql/distribute.sql");

/// How the Log table is spread over a Citus cluster, as [`distribute`]
/// found or left it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Distribution {
    /// The distribution column (`id` when pglogsink distributed it).
    pub column: String,
    /// Shards of the Log table (each of its partitions has as many).
    pub shards: i64,
    /// Nodes holding them.
    pub nodes: i64,
    /// False when the table was distributed already and nothing changed.
    pub changed: bool,
}

/// Distribute the Log table over a Citus cluster: make it as [`migrate_with`]
/// does when it is missing, then run `sql/distribute.sql` on the
/// coordinator.
///
/// Safe to run again, and on a table distributed by hand: a distributed
/// table is left as it is (`changed` is false). The ledger and the rejected
/// rows stay plain tables on the coordinator, so a batch's rows and its
/// ledger key still commit in one transaction (Citus commits the workers'
/// parts with two-phase commit, decided by the coordinator's own commit).
///
/// A server that is not a Citus coordinator with workers is refused, before
/// anything is made, with an
/// [`ErrorKind::Unsupported`](crate::ErrorKind::Unsupported) that says what
/// is missing. So is a table of pglogsink's earlier, unpartitioned shape:
/// [`upgrade`](crate::upgrade) it first.
///
/// ```no_run
/// # async fn demo(pool: deadpool_postgres::Pool) -> Result<(), pglogsink::Error> {
/// let table = pglogsink::TableName::parse("log")?;
/// let spread = pglogsink::distribute(&pool, &table, &pglogsink::Maintenance::default()).await?;
/// println!("{} shards by {} on {} nodes", spread.shards, spread.column, spread.nodes);
/// # Ok(()) }
/// ```
pub async fn distribute(
    pool: &Pool,
    table: &TableName,
    maintenance: &Maintenance,
) -> Result<Distribution, Error> {
    let context = format!("distributing table {table}");
    let mut client = connection(pool, &context).await?;
    let db = |e| Error::database(context.as_str(), e);
    citus_coordinator(&client).await?;
    if let Some(found) = distribution(&client, table).await.map_err(db)? {
        return Ok(found);
    }
    migrate_with(pool, table, maintenance).await?;
    if table_shape(pool, table).await? != Shape::Partitioned {
        return Err(Error::unsupported(format!(
            "table {table} has pglogsink's earlier, unpartitioned shape: upgrade it first \
             (`pglogsink migrate --table {table}` without --distribute), then distribute it"
        )));
    }
    let tx = client.transaction().await.map_err(db)?;
    tx.batch_execute(&format!(
        "SELECT set_config('pglogsink.table', '{}', true);\n{DISTRIBUTE_SQL}",
        table.to_string().replace('\'', "''")
    ))
    .await
    .map_err(db)?;
    tx.commit().await.map_err(db)?;
    let made = distribution(&client, table).await.map_err(db)?;
    made.map(|d| Distribution { changed: true, ..d })
        .ok_or_else(|| Error::unsupported(format!("{table} is still not distributed")))
}

/// Refuse, saying what is missing, unless this is a Citus coordinator
/// with at least one node that takes shards.
async fn citus_coordinator(client: &Object) -> Result<(), Error> {
    let context = "checking for Citus";
    let row = client
        .query_one(
            "SELECT (SELECT extversion FROM pg_extension WHERE extname = 'citus'), \
                    (SELECT default_version FROM pg_available_extensions WHERE name = 'citus'), \
                    current_setting('shared_preload_libraries'), current_database()",
            &[],
        )
        .await
        .map_err(|e| Error::database(context, e))?;
    let (created, available, preload, database): (Option<String>, Option<String>, String, String) =
        (row.get(0), row.get(1), row.get(2), row.get(3));
    if created.is_none() {
        return Err(Error::unsupported(citus_missing(
            available.is_some(),
            preload.split(',').any(|l| l.trim() == "citus"),
            &database,
        )));
    }
    let row = client
        .query_one(
            "SELECT citus_is_coordinator(), \
                    (SELECT count(*) FROM pg_dist_node \
                     WHERE isactive AND noderole = 'primary' AND shouldhaveshards)",
            &[],
        )
        .await
        .map_err(|e| Error::database(context, e))?;
    let (coordinator, nodes): (bool, i64) = (row.get(0), row.get(1));
    if !coordinator {
        return Err(Error::unsupported(
            "this server is a Citus worker: distribute the Log table from the coordinator \
             (its URL in --database-url)",
        ));
    }
    if nodes == 0 {
        return Err(Error::unsupported(
            "the Citus coordinator has no node to place shards on: add the workers with \
             SELECT citus_add_node('worker-host', 5432) (and SELECT \
             citus_set_coordinator_host('coordinator-host', 5432) first), then run this again",
        ));
    }
    Ok(())
}

/// What to tell an operator whose server has no `citus` extension in the
/// database: install Citus, load it, or create the extension.
fn citus_missing(available: bool, preloaded: bool, database: &str) -> String {
    let steps = "add shared_preload_libraries = 'citus' to postgresql.conf and restart, \
                 CREATE EXTENSION citus in this database, then add the workers with \
                 citus_add_node";
    match (available, preloaded) {
        (false, _) => format!(
            "distributing needs Citus, and this server has no citus extension installed: install \
             Citus (https://docs.citusdata.com) on the coordinator and every worker, then {steps}"
        ),
        (true, false) => format!(
            "distributing needs Citus: it is installed on this server but not loaded; {steps}"
        ),
        (true, true) => format!(
            "distributing needs Citus: it is loaded but the extension is not created in database \
             {database}: CREATE EXTENSION citus (as a superuser), then add the workers with \
             citus_add_node"
        ),
    }
}

/// The table's distribution, or `None` when it is not distributed.
async fn distribution(
    client: &Object,
    table: &TableName,
) -> Result<Option<Distribution>, tokio_postgres::Error> {
    let row = client
        .query_typed(
            "SELECT p.partmethod::text, column_to_column_name(p.logicalrelid, p.partkey), \
                    (SELECT count(*) FROM pg_dist_shard s WHERE s.logicalrelid = p.logicalrelid), \
                    (SELECT count(DISTINCT nodename || ':' || nodeport) \
                     FROM pg_dist_shard s JOIN pg_dist_shard_placement USING (shardid) \
                     WHERE s.logicalrelid = p.logicalrelid) \
             FROM pg_dist_partition p WHERE p.logicalrelid = to_regclass($1)",
            &[(&table.quoted(), Type::TEXT)],
        )
        .await?;
    let Some(row) = row.first() else {
        return Ok(None);
    };
    Ok(Some(Distribution {
        // A reference table or a Citus local table has no column.
        column: match (row.get::<_, String>(0).as_str(), row.get(1)) {
            ("h", Some(column)) => column,
            (method, _) => format!("(none: Citus partition method {method})"),
        },
        shards: row.get(2),
        nodes: row.get(3),
        changed: false,
    }))
}
