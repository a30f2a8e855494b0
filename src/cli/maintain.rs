//! `pglogsink maintain`, and the same maintenance on a timer inside `serve`:
//! partitions made ahead, rows moved out of the DEFAULT partition, whole
//! partitions dropped past the retention, closed partitions rewritten
//! (columnar, per-level retention).

use std::time::Duration;

use pglogsink::admin::settings;
use pglogsink::{KeepLevels, Maintenance, PartitionInterval, TableName};
use tokio_util::sync::CancellationToken;

use super::db::DatabaseArgs;
use super::db::{Database, Mode};
use super::failure::Failure;
use super::flag_values::{parse_age, whole_number, Age};

/// The maintenance settings, shared by `maintain`, `migrate` and `serve`.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct MaintenanceArgs {
    /// Time covered by one partition of the Log table: 1h, 1d or 7d (weeks start on Monday, UTC).
    #[arg(long, env = "PGLOGSINK_PARTITION_INTERVAL",
          default_value_t = PartitionInterval::default(),
          value_parser = parse_interval, value_name = "INTERVAL")]
    pub(crate) partition_interval: PartitionInterval,

    /// Partitions to create ahead of the current one.
    #[arg(long, env = "PGLOGSINK_PREMAKE", default_value_t = pglogsink::DEFAULT_PREMAKE,
          value_parser = |s: &str| whole_number(s, settings::check_premake), value_name = "N")]
    pub(crate) premake: u32,

    /// How far back rows get partitions of their own: rows in the DEFAULT partition older than this
    /// stay there (still read by every query; --retention deletes them), so that a client whose
    /// clock is years off cannot make a partition per day since 1970. With --retention, the shorter
    /// of the two applies.
    #[arg(long, env = "PGLOGSINK_MAX_AGE", default_value_t = Age(pglogsink::DEFAULT_MAX_AGE),
          value_parser = parse_age, value_name = "AGE")]
    pub(crate) max_age: Age,
}

impl MaintenanceArgs {
    /// The partitions' settings; nothing is dropped or rewritten (see
    /// [`ClosedPartitionsArgs::apply`]).
    pub(crate) fn maintenance(&self) -> Maintenance {
        Maintenance {
            interval: self.partition_interval,
            premake: self.premake,
            max_age: self.max_age.0,
            ..Maintenance::default()
        }
    }
}

/// What maintenance does to partitions once their time has passed, shared
/// by `maintain` and `serve` (which does it on its maintenance timer).
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct ClosedPartitionsArgs {
    /// Drop partitions of the Log table whose whole time range is older than this (30d, 12h,
    /// 2d12h; at least 1h), and delete such rows from the DEFAULT partition. Without it nothing
    /// is dropped.
    #[arg(long, env = "PGLOGSINK_RETENTION", value_parser = parse_age, value_name = "AGE")]
    pub(crate) retention: Option<Age>,

    /// Give each partition whose day (or interval) has ended a trigram index on message (pg_trgm,
    /// built concurrently, once), so that --grep over older rows is an index lookup. The partition
    /// being written never gets one. Needs the right to create the pg_trgm extension (or have it
    /// created by a superuser first).
    #[arg(long, env = "PGLOGSINK_SEARCH_INDEX",
          value_parser = clap::builder::BoolishValueParser::new())]
    pub(crate) search_index: bool,

    /// Convert each partition whose whole time range is older than AGE (2d, 7d; at least 1h) to
    /// Citus columnar storage: a copy built beside and swapped in without blocking writers, about a
    /// seventh of the disk, request and trace ids still found through their indexes. Needs the
    /// citus_columnar extension, with 'citus_columnar' (or 'citus') in shared_preload_libraries.
    #[arg(long, env = "PGLOGSINK_COLUMNAR_AFTER", value_parser = parse_age, value_name = "AGE")]
    pub(crate) columnar_after: Option<Age>,

    /// Per-level retention, AGE=LEVEL (7d=info): a partition whose whole time range is older than
    /// AGE keeps LEVEL and above, dropped when it is rewritten (by --columnar-after, or else by a
    /// plain rewrite: a new partition filled from the old one and swapped in), never by DELETE.
    /// Repeatable, older ages keeping higher levels (2d=info and 30d=warn); the env var takes them
    /// comma-separated.
    #[arg(long, env = "PGLOGSINK_KEEP_LEVELS_AFTER", value_parser = parse_keep_levels,
          value_name = "AGE=LEVEL", value_delimiter = ',')]
    pub(crate) keep_levels_after: Vec<KeepLevels>,
}

impl ClosedPartitionsArgs {
    /// `maintenance` with these settings, checked.
    pub(crate) fn apply(&self, maintenance: Maintenance) -> Result<Maintenance, Failure> {
        let maintenance = Maintenance {
            retention: self.retention.map(|age| age.0),
            search_index: self.search_index,
            columnar_after: self.columnar_after.map(|age| age.0),
            keep_levels: self.keep_levels_after.clone(),
            ..maintenance
        };
        maintenance.validate()?;
        Ok(maintenance)
    }
}

#[derive(Debug, clap::Args)]
pub(crate) struct MaintainArgs {
    #[command(flatten)]
    pub(crate) db: DatabaseArgs,

    #[command(flatten)]
    pub(crate) partitions: MaintenanceArgs,

    #[command(flatten)]
    pub(crate) closed: ClosedPartitionsArgs,
}

fn parse_interval(s: &str) -> Result<PartitionInterval, String> {
    s.parse().map_err(|e: pglogsink::Error| e.to_string())
}

fn parse_keep_levels(s: &str) -> Result<KeepLevels, String> {
    s.parse()
        .map_err(|e: pglogsink::Error| e.to_string().replace("invalid --keep-levels-after: ", ""))
}

/// `pglogsink maintain`: one run, its report on stdout.
pub(crate) async fn run(args: MaintainArgs) -> Result<(), Failure> {
    let maintenance = args.closed.apply(args.partitions.maintenance())?;
    let db = Database::open(&args.db, Mode::Existing).await?;
    let result = maintenance.run(&db.pool, &args.db.table).await;
    db.close();
    let report = result.map_err(|e| explain(&e, &args.db.table))?;
    println!("table {}: {report}", args.db.table);
    Ok(())
}

/// The error, with what to do when it is a missing privilege.
fn explain(e: &pglogsink::Error, table: &TableName) -> Failure {
    if e.is_permission_denied() {
        format!(
            "{e}: creating and dropping partitions needs the owner of table {table} \
             (run `pglogsink maintain` as that role)"
        )
        .into()
    } else {
        e.to_string().into()
    }
}

/// `serve`'s maintenance: a run now, then every `every`, until `stop`.
/// Never stops the service: a failure is a warning (once per kind of
/// failure while it lasts) and a count in
/// `pglogsink_maintenance_failures_total`.
pub(crate) async fn on_timer(
    pool: deadpool_postgres::Pool,
    table: TableName,
    maintenance: Maintenance,
    every: Duration,
    stop: CancellationToken,
) {
    let mut ticks = tokio::time::interval(every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_failure: Option<&'static str> = None;
    loop {
        tokio::select! {
            _ = ticks.tick() => {}
            () = stop.cancelled() => return,
        }
        let outcome = tokio::select! {
            outcome = maintenance.run(&pool, &table) => outcome,
            () = stop.cancelled() => return,
        };
        match outcome {
            Ok(report) => {
                metrics::counter!("pglogsink_maintenance_runs_total").increment(1);
                metrics::counter!("pglogsink_partitions_dropped_total")
                    .increment(report.dropped.len() as u64);
                if last_failure.take().is_some() {
                    tracing::info!("maintenance of table {table} works again");
                }
                if !report.skipped && !report.is_unchanged() {
                    tracing::info!("maintenance of table {table}: {report}");
                }
            }
            Err(e) => {
                let reason = match e.sqlstate() {
                    _ if e.is_permission_denied() => "privilege",
                    Some(_) => "database",
                    None => "other",
                };
                metrics::counter!("pglogsink_maintenance_failures_total", "reason" => reason)
                    .increment(1);
                if last_failure != Some(reason) {
                    tracing::warn!(
                        "maintenance of table {table} failed: {}; ingest goes on (premade and \
                         DEFAULT partitions take the rows); retrying every {every:?}",
                        explain(&e, &table)
                    );
                }
                last_failure = Some(reason);
            }
        }
    }
}
