//! Keeping the Log table in shape: partitions made ahead, rows moved out of
//! the DEFAULT partition, whole partitions dropped by age.
//!
//! Every change is a short transaction of its own with a lock timeout: a
//! partition drop needs a brief exclusive lock on the parent table, and a
//! DDL statement waiting in the lock queue behind a long query would hold up
//! every COPY queued behind it. A change that cannot get its lock quickly is
//! retried a few times, then left for the next run.
//!
//! Each change's transaction first takes the table's maintenance lock (a
//! transaction-scoped advisory lock, so it works through a transaction-mode
//! pooler): when another instance holds it, this run stops and reports
//! itself skipped, so any number of instances can run maintenance on a
//! timer. A change another instance made between listing and doing (the
//! partition exists, or is gone) counts as done.

use std::collections::BTreeMap;

use deadpool_postgres::{Object, Pool};
use tokio_postgres::types::Type;

use crate::database::connection;
use crate::micros::{duration_micros, now_unix_micros};
use crate::partitions::{
    self, default_partition, sql_origin, sql_timestamp, utc_text, Partition, Shape,
};
use crate::table::TableName;
use crate::Error;

mod age;
mod changes;
mod columnar;
mod distributed;
mod keep_levels;
mod report;
mod rewrite;
mod settings;

pub use age::check_age;
pub use keep_levels::KeepLevels;
pub use report::{DroppedPartition, MaintenanceReport, RewrittenPartition};
pub use settings::{check_premake, Maintenance, DEFAULT_MAX_AGE, DEFAULT_PREMAKE};

use changes::ChangeApplier;

impl Maintenance {
    /// Run maintenance once on `table`: create the partitions from the
    /// current interval to `premake` intervals ahead, move rows out of the
    /// DEFAULT partition into partitions created for them (within the
    /// partition window: from `max_age` ago to that horizon), and, with a
    /// retention, drop the partitions and delete the DEFAULT partition's
    /// rows it has passed; then rewrite the closed partitions
    /// `columnar_after` and `keep_levels` ask for. Each change is logged.
    ///
    /// Errors when the table is missing or not partitioned (run
    /// [`migrate`](crate::migrate)), or when the role may not change it
    /// (SQLSTATE 42501: run maintenance as the table's owner).
    pub async fn run(&self, pool: &Pool, table: &TableName) -> Result<MaintenanceReport, Error> {
        self.validate()?;
        let context = format!("maintaining table {table}");
        let mut client = Checkout(Some(connection(pool, &context).await?));
        let lock = lock_key(table);
        let outcome = self.run_on(client.object(), table, lock, &context).await;
        client.give_back();
        outcome
    }

    async fn run_on(
        &self,
        client: &mut Object,
        table: &TableName,
        lock: i64,
        context: &str,
    ) -> Result<MaintenanceReport, Error> {
        let db = |e| Error::database(context, e);
        match partitions::shape(client, table).await.map_err(db)? {
            Shape::Partitioned => {}
            Shape::Missing => {
                return Err(Error::config(
                    "table",
                    format!("{table} does not exist: run `pglogsink migrate` first"),
                ))
            }
            Shape::Plain => {
                return Err(Error::config(
                    "table",
                    format!(
                        "{table} is not partitioned (pglogsink's earlier shape): run \
                         `pglogsink migrate` to upgrade it in place"
                    ),
                ))
            }
        }
        let existing = partitions::list(client, table).await.map_err(db)?;
        let default = existing.iter().any(|p| p.is_default);
        let now = now_unix_micros();
        let cutoff = self
            .retention
            .map(|r| now.saturating_sub(duration_micros(r)));
        let window = self.window(now, duration_micros(self.max_age), cutoff);
        let in_default = if default {
            self.default_rows_by_bin(client, table).await.map_err(db)?
        } else {
            BTreeMap::new()
        };

        let mut report = MaintenanceReport {
            kept_in_default: self.kept_in_default(window, cutoff, &in_default),
            ..MaintenanceReport::default()
        };
        let mut changes = ChangeApplier {
            client,
            lock,
            report: &mut report,
        };
        let mut go_on = self
            .apply_changes(&mut changes, table, window, cutoff, &existing, &in_default)
            .await
            .map_err(db)?;
        if go_on {
            go_on = rewrite::closed_partitions(&mut changes, self, table, now, cutoff).await?;
        }
        if go_on && self.search_index {
            // As they are now: the changes above may have added some.
            let existing = partitions::list(changes.client, table).await.map_err(db)?;
            let columnar = rewrite::columnar_partitions(changes.client, table)
                .await
                .map_err(db)?;
            let ended = self.interval.floor(now);
            let closed: Vec<&Partition> = existing
                .iter()
                .filter(|p| p.to.is_some_and(|to| to <= ended))
                .filter(|p| !cutoff.is_some_and(|c| p.ended_by(c)))
                .filter(|p| !columnar.contains(&p.name.quoted()))
                .collect();
            build_search_indexes(changes.client, &closed, changes.report)
                .await
                .map_err(db)?;
        }
        Ok(report)
    }

    /// Create, move, drop and delete, one change at a time; false when
    /// another instance turned out to be maintaining the table.
    async fn apply_changes(
        &self,
        changes: &mut ChangeApplier<'_>,
        table: &TableName,
        window: Window,
        cutoff: Option<i64>,
        existing: &[Partition],
        in_default: &BTreeMap<i64, u64>,
    ) -> Result<bool, tokio_postgres::Error> {
        for start in self.bins_to_create(window, existing, in_default) {
            let moving = in_default.contains_key(&start);
            if !self.create(changes, table, start, moving).await? {
                return Ok(false);
            }
        }
        let Some(cutoff) = cutoff else {
            return Ok(true);
        };
        for partition in existing.iter().filter(|p| p.ended_by(cutoff)) {
            if !drop_partition(changes, partition).await? {
                return Ok(false);
            }
        }
        let step = self.interval.micros();
        if in_default.keys().any(|&bin| bin + step <= cutoff) {
            return self.delete_expired_defaults(changes, table, cutoff).await;
        }
        Ok(true)
    }

    /// The partition window at `now`: from the bin `max_age` (or the
    /// retention, when shorter) ago to `premake` bins past the current one.
    fn window(&self, now: i64, max_age: i64, cutoff: Option<i64>) -> Window {
        let step = self.interval.micros();
        let current = self.interval.floor(now);
        let oldest = now.saturating_sub(max_age).max(cutoff.unwrap_or(i64::MIN));
        Window {
            from: self.interval.floor(oldest),
            to: current + (i64::from(self.premake) + 1) * step,
        }
    }

    /// Bins that should have a partition and have none: the current one and
    /// `premake` ahead, and those of the window holding rows in the DEFAULT
    /// partition.
    fn bins_to_create(
        &self,
        window: Window,
        existing: &[Partition],
        in_default: &BTreeMap<i64, u64>,
    ) -> Vec<i64> {
        let step = self.interval.micros();
        let ahead = (0..=i64::from(self.premake)).map(|i| window.to - (i + 1) * step);
        let mut bins: Vec<i64> = in_default
            .keys()
            .copied()
            .filter(|&bin| window.holds(bin))
            .chain(ahead)
            .collect();
        bins.sort_unstable();
        bins.dedup();
        bins.retain(|&bin| !existing.iter().any(|p| p.overlaps(bin, bin + step)));
        bins
    }

    /// Rows the DEFAULT partition keeps: outside the window, and not
    /// deleted by retention.
    fn kept_in_default(
        &self,
        window: Window,
        cutoff: Option<i64>,
        in_default: &BTreeMap<i64, u64>,
    ) -> u64 {
        let step = self.interval.micros();
        let expired = |bin: i64| cutoff.is_some_and(|c| bin + step <= self.interval.floor(c));
        in_default
            .iter()
            .filter(|(&bin, _)| !window.holds(bin) && !expired(bin))
            .map(|(_, &rows)| rows)
            .sum()
    }

    /// Rows of the DEFAULT partition, counted by the bin they belong to.
    async fn default_rows_by_bin(
        &self,
        client: &Object,
        table: &TableName,
    ) -> Result<BTreeMap<i64, u64>, tokio_postgres::Error> {
        let sql = format!(
            "SELECT (extract(epoch FROM date_bin('{}', \"timestamp\", {})) \
             * 1000000)::int8, count(*) FROM {} GROUP BY 1",
            self.interval.sql_interval(),
            sql_origin(),
            default_partition(table).quoted()
        );
        let rows = client.query_typed(&sql, &[]).await?;
        Ok(rows
            .iter()
            .map(|r| (r.get::<_, i64>(0), r.get::<_, i64>(1) as u64))
            .collect())
    }

    /// Create the partition for the bin starting at `start`; with `moving`,
    /// first take its rows out of the DEFAULT partition (a new partition
    /// cannot be attached while the DEFAULT one holds rows in its range).
    async fn create(
        &self,
        changes: &mut ChangeApplier<'_>,
        table: &TableName,
        start: i64,
        moving: bool,
    ) -> Result<bool, tokio_postgres::Error> {
        let name = self.interval.partition_name(table, start);
        let end = start + self.interval.micros();
        let (from, to) = (sql_timestamp(start), sql_timestamp(end));
        let (parent, partition) = (table.quoted(), name.quoted());
        let statements = if moving {
            vec![
                format!("CREATE TABLE {partition} (LIKE {parent} INCLUDING DEFAULTS)"),
                format!(
                    "WITH moved AS (DELETE FROM {} WHERE \"timestamp\" >= {from} \
                     AND \"timestamp\" < {to} RETURNING *) INSERT INTO {partition} SELECT * FROM moved",
                    default_partition(table).quoted()
                ),
                format!("ALTER TABLE {parent} ATTACH PARTITION {partition} FOR VALUES FROM ({from}) TO ({to})"),
            ]
        } else {
            vec![format!(
                "CREATE TABLE {partition} PARTITION OF {parent} FOR VALUES FROM ({from}) TO ({to})"
            )]
        };
        let Some(counts) = changes
            .apply(&statements, || format!("create {name}"))
            .await?
        else {
            return Ok(!changes.report.skipped);
        };
        let moved = if moving { counts[1] } else { 0 };
        tracing::info!(
            target: "pglogsink::maintain",
            partition = %name, from = utc_text(start), to = utc_text(end),
            moved_from_default = moved,
            "created partition"
        );
        changes.report.created.push(name.to_string());
        changes.report.moved_from_default += moved;
        Ok(true)
    }

    /// Delete the DEFAULT partition's rows whose bin is past the retention.
    async fn delete_expired_defaults(
        &self,
        changes: &mut ChangeApplier<'_>,
        table: &TableName,
        cutoff: i64,
    ) -> Result<bool, tokio_postgres::Error> {
        let before_micros = self.interval.floor(cutoff);
        let before = sql_timestamp(before_micros);
        let default = default_partition(table);
        let sql = format!(
            "DELETE FROM {} WHERE \"timestamp\" < {before}",
            default.quoted()
        );
        let Some(counts) = changes
            .apply(&[sql], || format!("delete from {default}"))
            .await?
        else {
            return Ok(!changes.report.skipped);
        };
        tracing::info!(
            target: "pglogsink::maintain",
            partition = %default, before = utc_text(before_micros), rows = counts[0],
            "deleted rows past the retention from the DEFAULT partition"
        );
        changes.report.deleted_from_default += counts[0];
        Ok(true)
    }
}

/// The bins that get partitions: `[from, to)`, bin starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Window {
    from: i64,
    to: i64,
}

impl Window {
    fn holds(self, bin: i64) -> bool {
        bin >= self.from && bin < self.to
    }
}

/// Drop one partition, logging what it held. False when another instance
/// is maintaining the table.
async fn drop_partition(
    changes: &mut ChangeApplier<'_>,
    partition: &Partition,
) -> Result<bool, tokio_postgres::Error> {
    let name = partition.name.quoted();
    let found = changes
        .client
        .query_typed(
            "SELECT c.reltuples::int8, pg_total_relation_size(c.oid), \
                    pg_get_expr(c.relpartbound, c.oid) \
             FROM pg_class c WHERE c.oid = to_regclass($1)",
            &[(&name, Type::TEXT)],
        )
        .await?;
    let Some(row) = found.first() else {
        return Ok(true); // dropped by another instance since it was listed
    };
    let (mut rows, bytes, range): (i64, i64, String) = (row.get(0), row.get(1), row.get(2));
    if rows < 0 {
        // Never analyzed: count (a partition past retention takes no writes).
        rows = changes
            .client
            .query_typed_one(&format!("SELECT count(*) FROM {name}"), &[])
            .await?
            .get(0);
    }
    let drop = [format!("DROP TABLE {name}")];
    if changes
        .apply(&drop, || format!("drop {}", partition.name))
        .await?
        .is_none()
    {
        return Ok(!changes.report.skipped);
    }
    tracing::info!(
        target: "pglogsink::maintain",
        partition = %partition.name, range, rows, bytes,
        "dropped partition past the retention"
    );
    changes.report.dropped.push(DroppedPartition {
        name: partition.name.to_string(),
        range: range.trim_start_matches("FOR VALUES ").to_owned(),
        rows,
        bytes,
    });
    Ok(true)
}

/// A trigram index on `message` for each of `partitions` that has none.
async fn build_search_indexes(
    client: &Object,
    partitions: &[&Partition],
    report: &mut MaintenanceReport,
) -> Result<(), tokio_postgres::Error> {
    if partitions.is_empty() {
        return Ok(());
    }
    client
        .batch_execute(
            "SET client_min_messages = warning; CREATE EXTENSION IF NOT EXISTS pg_trgm; \
             RESET client_min_messages",
        )
        .await?;
    for partition in partitions {
        let index = partition.name.sibling("_message_trgm");
        drop_if_invalid(client, &index).await?;
        let exists = client
            .query_typed(
                "SELECT 1 FROM pg_class WHERE oid = to_regclass($1)",
                &[(&index.quoted(), Type::TEXT)],
            )
            .await?;
        if !exists.is_empty() {
            continue;
        }
        let started = std::time::Instant::now();
        client
            .batch_execute(&format!(
                "CREATE INDEX CONCURRENTLY \"{}\" ON {} USING gin (message gin_trgm_ops)",
                index.name().replace('"', "\"\""),
                partition.name.quoted()
            ))
            .await?;
        tracing::info!(
            target: "pglogsink::maintain",
            partition = %partition.name, seconds = started.elapsed().as_secs_f64(),
            "built the search index"
        );
        report.search_indexed.push(partition.name.to_string());
    }
    Ok(())
}

/// A run's connection, given back to the pool only when the run ends.
///
/// A run dropped midway (`serve` stopping cancels its maintenance) may
/// leave a statement running on the server: a `CREATE INDEX CONCURRENTLY`
/// waits for every older transaction to end. Given back, that busy
/// connection would make its next user (the sink draining its queue at
/// shutdown) wait behind the statement; so it is taken out of the pool and
/// closed instead.
struct Checkout(Option<Object>);

impl Checkout {
    fn object(&mut self) -> &mut Object {
        self.0
            .as_mut()
            .expect("the connection is held until the run ends")
    }

    /// The run ended: the connection is idle and goes back to the pool.
    fn give_back(mut self) {
        drop(self.0.take());
    }
}

impl Drop for Checkout {
    fn drop(&mut self) {
        if let Some(object) = self.0.take() {
            drop(Object::take(object));
        }
    }
}

/// The advisory lock key of `table`'s maintenance (FNV-1a of its name).
fn lock_key(table: &TableName) -> i64 {
    let name = format!("pglogsink maintain {}", table.quoted());
    name.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    }) as i64
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::partitions::PartitionInterval;
    use std::time::Duration;

    const DAY: i64 = 86_400_000_000;

    fn partition(from: i64, to: i64) -> Partition {
        Partition {
            name: TableName::parse("p").unwrap(),
            from: Some(from),
            to: Some(to),
            is_default: false,
        }
    }

    fn window(m: &Maintenance, now: i64, cutoff: Option<i64>) -> Window {
        let max_age = i64::try_from(m.max_age.as_micros()).unwrap();
        m.window(now, max_age, cutoff)
    }

    #[test]
    fn premade_bins_skip_existing_partitions() {
        let m = Maintenance::default();
        let today = PartitionInterval::Day.floor(1_796_307_907_000_000);
        let existing = [partition(today, today + DAY)];
        let bins = m.bins_to_create(window(&m, today + 5, None), &existing, &BTreeMap::new());
        assert_eq!(bins, vec![today + DAY, today + 2 * DAY, today + 3 * DAY]);
    }

    #[test]
    fn default_rows_get_a_partition_only_inside_the_window() {
        let m = Maintenance {
            premake: 1,
            ..Maintenance::default()
        };
        let now = 1_796_307_907_000_000;
        let today = PartitionInterval::Day.floor(now);
        let in_default: BTreeMap<i64, u64> = [
            (today - 40 * DAY, 1),  // past max_age (30 days): stays in DEFAULT
            (today - 31 * DAY, 7),  // ended before the instant 30 days ago: out
            (today - 30 * DAY, 2),  // holds the instant 30 days ago: in
            (today - 2 * DAY, 5),   // gets its partition
            (today + DAY, 3),       // the premade one
            (today + 2 * DAY, 4),   // past the horizon: waits in DEFAULT
            (today + 400 * DAY, 1), // a year ahead: waits in DEFAULT
        ]
        .into_iter()
        .collect();
        let w = window(&m, now, None);
        let bins = m.bins_to_create(w, &[], &in_default);
        assert_eq!(
            bins,
            vec![today - 30 * DAY, today - 2 * DAY, today, today + DAY]
        );
        assert_eq!(m.kept_in_default(w, None, &in_default), 1 + 7 + 4 + 1);
        // A retention shorter than max_age narrows the window, and deletes
        // what it has passed rather than keeping it.
        let cutoff = Some(now - 10 * DAY);
        let w = window(&m, now, cutoff);
        let bins = m.bins_to_create(w, &[], &in_default);
        assert_eq!(bins, vec![today - 2 * DAY, today, today + DAY]);
        assert_eq!(m.kept_in_default(w, cutoff, &in_default), 4 + 1);
        // A longer max_age reaches further back.
        let long = Maintenance {
            max_age: Duration::from_secs(41 * 86_400),
            ..m
        };
        let bins = long.bins_to_create(window(&long, now, None), &[], &in_default);
        assert_eq!(bins[0], today - 40 * DAY);
    }

    #[test]
    fn a_row_a_day_since_1970_makes_a_month_of_partitions() {
        let m = Maintenance::default();
        let now = 1_796_307_907_000_000;
        let in_default: BTreeMap<i64, u64> = (0..now / DAY + 1).map(|d| (d * DAY, 1)).collect();
        let w = window(&m, now, None);
        let bins = m.bins_to_create(w, &[], &in_default);
        assert_eq!(bins.len(), 30 + 4, "30 days back, today and 3 ahead");
        assert_eq!(
            m.kept_in_default(w, None, &in_default) as usize,
            in_default.len() - 31
        );
    }

    #[test]
    fn expiry_needs_the_whole_range_past_the_cutoff() {
        assert!(partition(0, DAY).ended_by(DAY));
        assert!(!partition(0, DAY).ended_by(DAY - 1));
        let legacy = Partition {
            from: None,
            ..partition(0, DAY)
        };
        assert!(
            legacy.ended_by(DAY),
            "the upgraded old table (MINVALUE) too"
        );
    }

    #[test]
    fn the_report_says_what_changed() {
        let report = MaintenanceReport {
            created: vec!["log_p20261204".into()],
            dropped: vec![DroppedPartition {
                name: "log_p20261001".into(),
                range: "FROM ('2026-10-01 00:00:00+00') TO ('2026-10-02 00:00:00+00')".into(),
                rows: 1200,
                bytes: 3 * 1024 * 1024,
            }],
            ..MaintenanceReport::default()
        };
        assert_eq!(
            report.to_string(),
            "created 1 partition(s) (log_p20261204); dropped log_p20261001 \
             (FROM ('2026-10-01 00:00:00+00') TO ('2026-10-02 00:00:00+00'); 1200 rows, 3.0 MiB)"
        );
        assert_eq!(MaintenanceReport::default().to_string(), "nothing to do");
    }
}
