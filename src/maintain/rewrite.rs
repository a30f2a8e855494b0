//! Rewriting closed partitions: into Citus columnar storage past
//! `columnar_after`, and without the levels a `keep_levels` rule drops.
//!
//! A rewrite builds the new partition beside the old one and swaps it in,
//! in one transaction per partition, so that a run stopped anywhere
//! (maintenance killed, the server restarted) leaves the old partition as
//! it was and nothing else; the next run starts that partition again.
//!
//! 1. `LOCK TABLE <old> IN SHARE MODE`: a late row for that range (a
//!    skewed clock, a spool replayed) waits for the swap instead of being
//!    missed by the copy. Writers to the other partitions (today's) and
//!    readers go on.
//! 2. The new partition `<old>_rewrite` is made bare (heap or columnar,
//!    with a CHECK on its range), then attached to a scratch partitioned
//!    table made `LIKE` the Log table with its indexes: PostgreSQL clones
//!    the indexes onto it while it is empty (so they grow with the copy,
//!    and a partial index stays the size of its rows), BRIN included,
//!    which columnar refuses from `CREATE INDEX` but must have to be
//!    attached, since the Log table's partitioned BRIN index needs one on
//!    every partition (see `columnar` for what it does there). On a
//!    distributed Log table both are distributed first (`distributed`).
//! 3. The rows copied (`INSERT ... SELECT`, the kept levels only), the new
//!    partition analyzed and detached from the scratch table, which goes.
//! 4. The swap, the only step that locks the Log table: drop the old
//!    partition, attach the new one (its indexes match the Log table's, and
//!    a CHECK on its range spares the validation scan), give it the old
//!    name. It holds the lock for milliseconds and waits for it at most
//!    [`SWAP_LOCK_TIMEOUT`]; a busy lock is retried from a savepoint,
//!    keeping the copy.
//!
//! The levels a partition was rewritten without are recorded in its table
//! comment, so that it is rewritten again only for a rule that drops more.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use deadpool_postgres::Object;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::Type;
use tokio_postgres::Transaction;

use super::changes::{ChangeApplier, ATTEMPTS, LOCK_TIMEOUT};
use super::distributed::Placement;
use super::report::RewrittenPartition;
use super::settings::Maintenance;
use super::{columnar, keep_levels};
use crate::micros::duration_micros;
use crate::partitions::{self, sql_timestamp, Partition};
use crate::table::{quote_identifier, TableName};
use crate::{Error, Level};

/// How long the swap may wait for its lock on the Log table: writers queue
/// behind a waiting DDL statement, so this bounds their wait too.
const SWAP_LOCK_TIMEOUT: &str = "50ms";
/// Tries at the swap before the rewrite is left for the next run.
const SWAP_ATTEMPTS: u32 = 10;
/// How the table comment records the lowest level a partition kept.
const KEPT_MARK: &str = "pglogsink: keeps ";

/// How a partition is stored.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct Storage {
    pub(super) columnar: bool,
    /// The lowest level kept by an earlier rewrite; `None`: every level.
    pub(super) lowest: Option<Level>,
}

/// Rewrite the closed partitions the rules ask for, oldest first. False
/// when another instance turned out to be maintaining the table.
pub(super) async fn closed_partitions(
    changes: &mut ChangeApplier<'_>,
    maintenance: &Maintenance,
    table: &TableName,
    now: i64,
    cutoff: Option<i64>,
) -> Result<bool, Error> {
    if maintenance.columnar_after.is_none() && maintenance.keep_levels.is_empty() {
        return Ok(true);
    }
    let context = format!("rewriting closed partitions of {table}");
    let db = |e| Error::database(context.as_str(), e);
    if maintenance.columnar_after.is_some() {
        columnar::ensure_available(changes.client).await?;
    }
    let placement = Placement::of(changes.client, table).await?;
    let existing = partitions::list(changes.client, table).await.map_err(db)?;
    let stored = storage(changes.client, table).await.map_err(db)?;
    for (partition, target) in plan(maintenance, &existing, &stored, now, cutoff) {
        let what = || format!("rewrite {}", partition.name);
        match rewrite_one(changes, table, &partition, target, &placement).await {
            Ok(Some(done)) => changes.report.rewritten.push(done),
            Ok(None) if changes.report.skipped => return Ok(false),
            Ok(None) => changes.report.postponed.push(what()),
            Err(e) => return Err(db(e)),
        }
    }
    Ok(true)
}

/// The partitions of `table` stored as columnar, by quoted name.
pub(super) async fn columnar_partitions(
    client: &Object,
    table: &TableName,
) -> Result<HashSet<String>, tokio_postgres::Error> {
    Ok(storage(client, table)
        .await?
        .into_iter()
        .filter(|(_, s)| s.columnar)
        .map(|(name, _)| name)
        .collect())
}

/// How each partition of `table` is stored, by quoted name.
async fn storage(
    client: &Object,
    table: &TableName,
) -> Result<HashMap<String, Storage>, tokio_postgres::Error> {
    let rows = client
        .query_typed(
            "SELECT nullif(n.nspname, current_schema())::text, c.relname::text, \
                    coalesce(a.amname = 'columnar', false), obj_description(c.oid, 'pg_class') \
             FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid \
             JOIN pg_namespace n ON n.oid = c.relnamespace LEFT JOIN pg_am a ON a.oid = c.relam \
             WHERE i.inhparent = to_regclass($1)",
            &[(&table.quoted(), Type::TEXT)],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| {
            let name = TableName::from_parts(r.get(0), r.get(1)).quoted();
            let comment: Option<String> = r.get(3);
            let lowest = comment.as_deref().and_then(kept_level);
            (
                name,
                Storage {
                    columnar: r.get(2),
                    lowest,
                },
            )
        })
        .collect())
}

/// The lowest level kept, read back from a table comment.
fn kept_level(comment: &str) -> Option<Level> {
    let rest = &comment[comment.find(KEPT_MARK)? + KEPT_MARK.len()..];
    rest.split_whitespace().next()?.parse().ok()
}

/// The partitions to rewrite, oldest first, and how each should end up:
/// those whose whole range is past `columnar_after` and not columnar yet,
/// and those a `keep_levels` rule would drop more of than they have lost.
/// Partitions past the retention are left to it.
fn plan(
    m: &Maintenance,
    existing: &[Partition],
    stored: &HashMap<String, Storage>,
    now: i64,
    cutoff: Option<i64>,
) -> Vec<(Partition, Storage)> {
    let mut wanted = Vec::new();
    for partition in existing {
        let Some(end) = partition.to.filter(|_| !partition.is_default) else {
            continue;
        };
        if cutoff.is_some_and(|c| partition.ended_by(c)) {
            continue;
        }
        let now_stored = stored
            .get(&partition.name.quoted())
            .copied()
            .unwrap_or_default();
        let columnar = m
            .columnar_after
            .is_some_and(|age| end <= now.saturating_sub(duration_micros(age)));
        let lowest = keep_levels::lowest_kept(&m.keep_levels, end, now);
        if (columnar && !now_stored.columnar) || lowest > now_stored.lowest {
            let target = Storage {
                columnar: columnar || now_stored.columnar,
                lowest: lowest.max(now_stored.lowest),
            };
            wanted.push((partition.clone(), target));
        }
    }
    wanted.sort_by_key(|(p, _)| p.to);
    wanted
}

/// One partition, in one transaction. `None` when it was not rewritten:
/// another instance holds the maintenance lock (`report.skipped`), a lock
/// stayed busy (postponed), or the partition is gone.
async fn rewrite_one(
    changes: &mut ChangeApplier<'_>,
    table: &TableName,
    old: &Partition,
    target: Storage,
    placement: &Placement,
) -> Result<Option<RewrittenPartition>, tokio_postgres::Error> {
    let mut pause = Duration::from_millis(100);
    for attempt in 1..=ATTEMPTS {
        let started = Instant::now();
        let mut tx = changes.client.transaction().await?;
        placement.begin(&tx).await?;
        match lock_old(&tx, changes.lock, &old.name).await {
            Ok(true) => {}
            Ok(false) => {
                changes.report.skipped = true;
                return Ok(None);
            }
            Err(e) if e.code() == Some(&SqlState::LOCK_NOT_AVAILABLE) => {
                drop(tx);
                tracing::debug!(target: "pglogsink::maintain", attempt, partition = %old.name, "lock busy; retrying");
                tokio::time::sleep(pause).await;
                pause *= 2;
                continue;
            }
            Err(e) => return Err(e),
        }
        let Some(built) = build_beside(&tx, table, old, target, placement).await? else {
            return Ok(None); // dropped since it was listed
        };
        let Some(swapped) = swap(&mut tx, table, old, &built).await? else {
            return Ok(None);
        };
        tx.commit().await?;
        // Measured once committed: Citus does not size tables a
        // transaction has modified.
        let bytes: i64 = changes
            .client
            .query_typed_one(
                &format!("SELECT {}(to_regclass($1))", placement.size_function()),
                &[(&old.name.quoted(), Type::TEXT)],
            )
            .await?
            .get(0);
        let done = RewrittenPartition {
            name: old.name.to_string(),
            columnar: target.columnar,
            lowest_kept: target.lowest,
            rows_before: built.rows_before,
            rows: built.rows,
            bytes_before: built.bytes_before,
            bytes,
            took: started.elapsed(),
            swap: swapped,
        };
        tracing::info!(
            target: "pglogsink::maintain",
            partition = %old.name, columnar = target.columnar,
            lowest_kept = target.lowest.map(Level::as_str), rows_before = done.rows_before,
            rows = done.rows, bytes_before = done.bytes_before, bytes = done.bytes,
            seconds = done.took.as_secs_f64(), swap_ms = done.swap.as_secs_f64() * 1e3,
            "rewrote partition"
        );
        return Ok(Some(done));
    }
    Ok(None)
}

/// The maintenance lock (false: another instance has it), then the old
/// partition's SHARE lock, which waits for the writers it has now and
/// makes later ones wait for the swap.
async fn lock_old(
    tx: &Transaction<'_>,
    lock: i64,
    old: &TableName,
) -> Result<bool, tokio_postgres::Error> {
    let locked: bool = tx
        .query_typed_one(
            "SELECT pg_try_advisory_xact_lock($1)",
            &[(&lock, Type::INT8)],
        )
        .await?
        .get(0);
    if !locked {
        return Ok(false);
    }
    // A copy takes minutes: no statement timeout, and a maintenance
    // process that died is noticed within a second (PostgreSQL 14 and
    // later) rather than at the end of the copy.
    tx.batch_execute(&format!(
        "SET LOCAL statement_timeout = 0; SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'; \
         SELECT set_config('client_connection_check_interval', '1s', true) \
         WHERE current_setting('server_version_num')::int >= 140000"
    ))
    .await?;
    match tx
        .batch_execute(&format!("LOCK TABLE {} IN SHARE MODE", old.quoted()))
        .await
    {
        Err(e) if e.code() == Some(&SqlState::UNDEFINED_TABLE) => Ok(true), // seen next
        other => other.map(|()| true),
    }
}

/// The new partition, filled, beside the old one.
struct Built {
    new: TableName,
    /// Its statistics objects (see `columnar::after_fill`).
    statistics: usize,
    /// The old partition's bound, as PostgreSQL writes it.
    bound: String,
    comment: Option<String>,
    rows_before: i64,
    rows: i64,
    bytes_before: i64,
}

/// Steps 2 and 3: the new partition made beside the old one and filled.
/// `None` when the old partition is gone.
async fn build_beside(
    tx: &Transaction<'_>,
    table: &TableName,
    old: &Partition,
    target: Storage,
    placement: &Placement,
) -> Result<Option<Built>, tokio_postgres::Error> {
    let found = tx
        .query_typed(
            &format!(
                "SELECT pg_get_expr(c.relpartbound, c.oid), {size}(c.oid), \
                        obj_description(c.oid, 'pg_class'), pg_get_partkeydef(i.inhparent), \
                        (SELECT string_agg(quote_ident(attname), ', ' ORDER BY attnum) \
                         FROM pg_attribute WHERE attrelid = i.inhparent AND attnum > 0 \
                         AND NOT attisdropped) \
                 FROM pg_class c JOIN pg_inherits i ON i.inhrelid = c.oid \
                 WHERE c.oid = to_regclass($1) AND i.inhparent = to_regclass($2)",
                size = placement.size_function()
            ),
            &[
                (&old.name.quoted(), Type::TEXT),
                (&table.quoted(), Type::TEXT),
            ],
        )
        .await?;
    let Some(row) = found.first() else {
        return Ok(None);
    };
    let (bound, bytes_before, comment): (String, i64, Option<String>) =
        (row.get(0), row.get(1), row.get(2));
    let (partition_key, columns): (String, String) = (row.get(3), row.get(4));
    let new = old.name.sibling("_rewrite");
    make_new(
        tx,
        table,
        old,
        &new,
        target,
        placement,
        &partition_key,
        &bound,
    )
    .await?;
    let stage = scratch_table(table);
    let (rows_before, rows, statistics) = fill(tx, old, &new, target, &columns, &stage).await?;
    Ok(Some(Built {
        new,
        statistics,
        bound,
        comment: target.lowest.map(kept_comment).or(comment),
        rows_before,
        rows,
        bytes_before,
    }))
}

/// The new partition, empty, with the Log table's indexes: made a
/// partition of a scratch table `LIKE` the Log table, which clones them
/// onto it (BRIN too, which columnar's `CREATE INDEX` refuses), distributed
/// as the Log table is.
#[allow(clippy::too_many_arguments)]
async fn make_new(
    tx: &Transaction<'_>,
    table: &TableName,
    old: &Partition,
    new: &TableName,
    target: Storage,
    placement: &Placement,
    partition_key: &str,
    bound: &str,
) -> Result<(), tokio_postgres::Error> {
    let stage = scratch_table(table);
    let new_q = new.quoted();
    if target.columnar {
        let rows = placement.rows_per_table(tx, &old.name).await?;
        columnar::before_create(tx, rows).await?;
    }
    let parent = table.quoted();
    each(
        tx,
        &[
            "SET LOCAL client_min_messages = warning".to_owned(),
            format!("DROP TABLE IF EXISTS {new_q}, {stage}"),
            format!(
                "CREATE TABLE {stage} (LIKE {parent} INCLUDING DEFAULTS INCLUDING INDEXES) \
                 PARTITION BY {partition_key}"
            ),
        ],
    )
    .await?;
    placement.follow(tx, &stage, table).await?;
    tx.batch_execute(&format!(
        "CREATE TABLE {new_q} (LIKE {parent} INCLUDING DEFAULTS,
             CONSTRAINT {RANGE_CHECK} CHECK ({range})) USING {access_method}",
        range = range_condition(old),
        access_method = if target.columnar { "columnar" } else { "heap" },
    ))
    .await?;
    placement.follow(tx, &new_q, table).await?;
    tx.batch_execute(&format!(
        "ALTER TABLE {stage} ATTACH PARTITION {new_q} {bound}"
    ))
    .await?;
    if target.columnar {
        // See `columnar`: a BRIN index there must not ask for summaries.
        for (index, _) in indexes_using(tx, new, "brin").await? {
            tx.batch_execute(&format!("ALTER INDEX {index} SET (autosummarize = off)"))
                .await?;
        }
    }
    Ok(())
}

/// Copy the kept rows, then prepare the new partition for reading and
/// detach it from the scratch table, which goes. The old partition's rows,
/// the new one's, and how many statistics objects it got.
async fn fill(
    tx: &Transaction<'_>,
    old: &Partition,
    new: &TableName,
    target: Storage,
    columns: &str,
    stage: &str,
) -> Result<(i64, i64, usize), tokio_postgres::Error> {
    let (old_q, new_q) = (old.name.quoted(), new.quoted());
    let kept = target.lowest.map_or(String::new(), |l| {
        format!(" WHERE level >= '{}'", l.as_str())
    });
    let rows_before = match target.lowest {
        Some(_) => Some(count(tx, &format!("SELECT count(*) FROM {old_q}")).await?),
        None => None,
    };
    let rows = tx
        .execute(
            &format!("INSERT INTO {new_q} ({columns}) SELECT {columns} FROM {old_q}{kept}"),
            &[],
        )
        .await? as i64;
    let statistics = if target.columnar {
        columnar::after_fill(tx, new).await?
    } else {
        summarize_brin(tx, new).await?;
        0
    };
    tx.batch_execute(&format!("ANALYZE {new_q}")).await?;
    rebuild_dense_hash_indexes(tx, new).await?;
    each(
        tx,
        &[
            format!("ALTER TABLE {stage} DETACH PARTITION {new_q}"),
            format!("DROP TABLE {stage}"),
        ],
    )
    .await?;
    Ok((rows_before.unwrap_or(rows), rows, statistics))
}

/// The CHECK that spares the validation scan when the new partition is
/// attached (its range, as PostgreSQL would check it).
const RANGE_CHECK: &str = "pglogsink_rewrite_range";

fn range_condition(partition: &Partition) -> String {
    let mut terms = Vec::new();
    if let Some(from) = partition.from {
        terms.push(format!("\"timestamp\" >= {}", sql_timestamp(from)));
    }
    if let Some(to) = partition.to {
        terms.push(format!("\"timestamp\" < {}", sql_timestamp(to)));
    }
    terms.join(" AND ")
}

/// The scratch partitioned table a new partition gets its indexes from.
fn scratch_table(table: &TableName) -> String {
    table.sibling("_rewrite_stage").quoted()
}

fn kept_comment(level: Level) -> String {
    format!("{KEPT_MARK}{level} and above (rewritten by pglogsink maintain)")
}

/// Run `statements` one by one: Citus refuses several DDL statements in one
/// query string.
async fn each(tx: &Transaction<'_>, statements: &[String]) -> Result<(), tokio_postgres::Error> {
    for statement in statements {
        tx.batch_execute(statement).await?;
    }
    Ok(())
}

async fn count(tx: &Transaction<'_>, sql: &str) -> Result<i64, tokio_postgres::Error> {
    Ok(tx.query_typed_one(sql, &[]).await?.get(0))
}

/// Summarise every block range of the heap partition's BRIN indexes (the
/// copy wrote them all at once; autovacuum would get to them later).
async fn summarize_brin(
    tx: &Transaction<'_>,
    partition: &TableName,
) -> Result<(), tokio_postgres::Error> {
    for (index, _) in indexes_using(tx, partition, "brin").await? {
        tx.query_typed(
            "SELECT brin_summarize_new_values($1::text::regclass)",
            &[(&index, Type::TEXT)],
        )
        .await?;
    }
    Ok(())
}

/// The indexes of `partition` of the access method `am` (`brin`, `hash`),
/// each as SQL names it and with the share of the partition's rows it
/// holds (PostgreSQL's estimates; 0 before an ANALYZE).
async fn indexes_using(
    tx: &Transaction<'_>,
    partition: &TableName,
    am: &str,
) -> Result<Vec<(String, f64)>, tokio_postgres::Error> {
    let rows = tx
        .query_typed(
            "SELECT i.indexrelid::regclass::text, \
                    coalesce(c.reltuples / nullif(greatest(t.reltuples, 0), 0), 0)::float8 \
             FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid \
             JOIN pg_am a ON a.oid = c.relam JOIN pg_class t ON t.oid = i.indrelid \
             WHERE i.indrelid = to_regclass($1) AND a.amname = $2",
            &[(&partition.quoted(), Type::TEXT), (&am, Type::TEXT)],
        )
        .await?;
    Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
}

/// Rebuild the hash indexes of the filled partition that hold (nearly)
/// every row, such as `request_id` on a service's rows. A hash index that
/// grew with the copy splits its buckets one by one, leaving half of them
/// overflowing (37 bytes per row measured on 2 million rows); one built at
/// once is sized for the table's rows (27 to 34 bytes per row). A partial
/// index of few rows stays as it grew: built at once, it would be sized for
/// every row of the table too.
async fn rebuild_dense_hash_indexes(
    tx: &Transaction<'_>,
    partition: &TableName,
) -> Result<(), tokio_postgres::Error> {
    for (index, share) in indexes_using(tx, partition, "hash").await? {
        if share >= 0.9 {
            tx.batch_execute(&format!("REINDEX INDEX {index}")).await?;
        }
    }
    Ok(())
}

/// Step 4: drop the old partition, attach the new one under the old name
/// (its indexes too), from a savepoint retried while the lock is busy. The
/// time from the first lock request to the end; `None` when the lock
/// stayed busy.
async fn swap(
    tx: &mut Transaction<'_>,
    table: &TableName,
    old: &Partition,
    built: &Built,
) -> Result<Option<Duration>, tokio_postgres::Error> {
    let index_names = index_names_by_parent(tx, &old.name).await?;
    tx.batch_execute(&format!("SET LOCAL lock_timeout = '{SWAP_LOCK_TIMEOUT}'"))
        .await?;
    let mut pause = Duration::from_millis(100);
    for attempt in 1..=SWAP_ATTEMPTS {
        let savepoint = tx.savepoint("pglogsink_swap").await?;
        let started = Instant::now();
        match swap_once(&savepoint, table, old, built, &index_names).await {
            Ok(()) => {
                savepoint.commit().await?;
                return Ok(Some(started.elapsed()));
            }
            Err(e) if e.code() == Some(&SqlState::LOCK_NOT_AVAILABLE) => {
                savepoint.rollback().await?;
                tracing::debug!(target: "pglogsink::maintain", attempt, partition = %old.name, "swap: lock busy; retrying");
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(2));
            }
            Err(e) => return Err(e),
        }
    }
    Ok(None)
}

async fn swap_once(
    tx: &Transaction<'_>,
    table: &TableName,
    old: &Partition,
    built: &Built,
    index_names: &HashMap<i64, String>,
) -> Result<(), tokio_postgres::Error> {
    let new_q = built.new.quoted();
    let comment = built.comment.as_deref().map_or("NULL".to_owned(), |c| {
        format!("'{}'", c.replace('\'', "''"))
    });
    let old_q = old.name.quoted();
    each(
        tx,
        &[
            format!("DROP TABLE {old_q}"),
            format!(
                "ALTER TABLE {} ATTACH PARTITION {new_q} {}",
                table.quoted(),
                built.bound
            ),
            format!("ALTER TABLE {new_q} DROP CONSTRAINT {RANGE_CHECK}"),
            format!(
                "ALTER TABLE {new_q} RENAME TO {}",
                quote_identifier(old.name.name())
            ),
            format!("COMMENT ON TABLE {old_q} IS {comment}"),
        ],
    )
    .await?;
    for k in 1..=built.statistics {
        tx.batch_execute(&format!(
            "ALTER STATISTICS {} RENAME TO {}",
            columnar::statistics(&built.new, k).quoted(),
            quote_identifier(columnar::statistics(&old.name, k).name())
        ))
        .await?;
    }
    // Its indexes take the old ones' names, matched by the Log table's
    // index each belongs to.
    for (parent, index) in index_names_by_parent(tx, &old.name).await? {
        if let Some(name) = index_names.get(&parent) {
            tx.batch_execute(&format!(
                "ALTER INDEX {} RENAME TO {}",
                quoted_in_schema(&old.name, &index),
                quote_identifier(name)
            ))
            .await?;
        }
    }
    Ok(())
}

/// The indexes of `partition` that belong to an index of the Log table:
/// the Log table's index (its oid) to the partition's index name.
async fn index_names_by_parent(
    tx: &Transaction<'_>,
    partition: &TableName,
) -> Result<HashMap<i64, String>, tokio_postgres::Error> {
    let rows = tx
        .query_typed(
            "SELECT h.inhparent::int8, c.relname::text FROM pg_index i \
             JOIN pg_class c ON c.oid = i.indexrelid \
             JOIN pg_inherits h ON h.inhrelid = i.indexrelid \
             WHERE i.indrelid = to_regclass($1)",
            &[(&partition.quoted(), Type::TEXT)],
        )
        .await?;
    Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
}

/// `name`, in the schema of `beside`.
fn quoted_in_schema(beside: &TableName, name: &str) -> String {
    TableName::from_parts(beside.schema().map(str::to_owned), name.to_owned()).quoted()
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: i64 = 86_400_000_000;

    fn day(n: i64) -> Partition {
        Partition {
            name: TableName::parse(&format!("log_p{n}")).unwrap(),
            from: Some(n * DAY),
            to: Some((n + 1) * DAY),
            is_default: false,
        }
    }

    fn names(plan: &[(Partition, Storage)]) -> Vec<(String, Storage)> {
        plan.iter()
            .map(|(p, s)| (p.name.name().to_owned(), *s))
            .collect()
    }

    fn stored(entries: &[(i64, bool, Option<Level>)]) -> HashMap<String, Storage> {
        entries
            .iter()
            .map(|&(n, columnar, lowest)| (day(n).name.quoted(), Storage { columnar, lowest }))
            .collect()
    }

    #[test]
    fn columnar_after_takes_partitions_whose_whole_range_is_older() {
        let m = Maintenance {
            columnar_after: Some(Duration::from_secs(86_400)),
            ..Maintenance::default()
        };
        let now = 10 * DAY + DAY / 2; // noon of day 10
        let existing = [day(10), day(9), day(8), day(7), day(11)];
        let done = stored(&[(7, true, None)]);
        let columnar = Storage {
            columnar: true,
            lowest: None,
        };
        // Day 9 ended at midnight, less than a day ago; day 7 is done.
        let wanted = plan(&m, &existing, &done, now, None);
        assert_eq!(names(&wanted), vec![("log_p8".to_owned(), columnar)]);
        let cutoff = Some(9 * DAY);
        assert!(
            plan(&m, &existing, &done, now, cutoff).is_empty(),
            "retention drops day 8"
        );
    }

    #[test]
    fn a_level_rule_rewrites_once_and_keeps_the_storage() {
        let m = Maintenance {
            keep_levels: vec!["2d=info".parse().unwrap(), "5d=warn".parse().unwrap()],
            ..Maintenance::default()
        };
        let now = 10 * DAY;
        let existing = [day(2), day(5), day(6), day(7), day(8)];
        let done = stored(&[
            (2, true, Some(Level::Info)),
            (5, false, Some(Level::Error)),
            (7, true, Some(Level::Info)),
        ]);
        let wanted = plan(&m, &existing, &done, now, None);
        let storage = |columnar, lowest| Storage {
            columnar,
            lowest: Some(lowest),
        };
        assert_eq!(
            names(&wanted),
            vec![
                // Past 5 days: warn and above, still columnar.
                ("log_p2".to_owned(), storage(true, Level::Warn)),
                // Past 2 days and never rewritten: a plain rewrite.
                ("log_p6".to_owned(), storage(false, Level::Info)),
            ],
            "day 5 already lost more, day 7 is done, day 8 is too young"
        );
    }

    #[test]
    fn the_comment_records_the_lowest_level_kept() {
        assert_eq!(kept_level(&kept_comment(Level::Warn)), Some(Level::Warn));
        assert_eq!(kept_level("an operator's note"), None);
        assert_eq!(kept_level("pglogsink: keeps "), None);
    }

    #[test]
    fn range_conditions() {
        assert_eq!(
            range_condition(&day(0)),
            "\"timestamp\" >= '1970-01-01 00:00:00+00' AND \"timestamp\" < '1970-01-02 00:00:00+00'"
        );
        let legacy = Partition {
            from: None,
            ..day(0)
        };
        assert_eq!(
            range_condition(&legacy),
            "\"timestamp\" < '1970-01-02 00:00:00+00'"
        );
    }
}
