//! Command-line interface of the `pglogsink` binary: one module per
//! subcommand, plus how a subcommand finds its database.

pub(crate) mod db;
pub(crate) mod diagnostics;
pub(crate) mod failure;
pub(crate) mod flag_values;
pub(crate) mod health;
pub(crate) mod http;
pub(crate) mod ingest;
pub(crate) mod load;
pub(crate) mod load_body;
pub(crate) mod load_progress;
pub(crate) mod load_verify;
pub(crate) mod logs;
pub(crate) mod maintain;
pub(crate) mod metrics;
pub(crate) mod request_span;
pub(crate) mod serve;
pub(crate) mod signal;
pub(crate) mod sink_args;
#[cfg(test)]
pub(crate) mod test_fixtures;
pub(crate) mod trace_ids;
pub(crate) mod viewer;

use clap::{Args, Parser, Subcommand};

use db::DatabaseArgs;
use failure::Failure;

const ABOUT: &str = "Application logs into PostgreSQL, fast, without slowing the code that logs.";
const LONG_ABOUT: &str = "\
Application logs into PostgreSQL, fast, without slowing the code that logs.

Without --database-url (or DATABASE_URL), every subcommand uses a private \
PostgreSQL cluster kept in --data-dir (default ./.pglogsink): `serve` and \
`migrate` create and start it, `load` and `logs` use the one `serve` started \
(or start it for as long as they run).";

#[derive(Debug, Parser)]
#[command(name = "pglogsink", version, about = ABOUT, long_about = LONG_ABOUT)]
pub(crate) struct Cli {
    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Run the service: the demo route (GET /recipes/N writes one log row with `Logger`, carrying
    /// its request id), ingest of other services' logs (OTLP/HTTP at /v1/logs, NDJSON at
    /// /ingest/ndjson), the web viewer of the Log table (/ and /api/...), /healthz, /readyz and
    /// /metrics, and the table's maintenance on a timer. The `http` access line (status,
    /// duration) is stored as a row of its own only for a 5xx answer, or for every request with
    /// PGLOGSINK_TABLE_FILTER=info,http=debug.
    Serve(Box<serve::ServeArgs>),
    /// Fire concurrent requests at `serve`, report throughput and latency, optionally verify every row arrived.
    Load(load::LoadArgs),
    /// Show the newest rows of the Log table, filtered; --follow for new rows as they arrive.
    Logs(logs::LogsArgs),
    /// Create the Log table and its first partitions (idempotent), or upgrade a table of
    /// pglogsink's earlier, unpartitioned shape in place.
    Migrate(MigrateArgs),
    /// Keep the Log table in shape once: make partitions ahead, move rows out of the DEFAULT
    /// partition, drop partitions past --retention, index and rewrite closed ones
    /// (--search-index, --columnar-after, --keep-levels-after). `serve` does the same on a timer.
    Maintain(maintain::MaintainArgs),
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[test]
    fn the_password_never_shows_in_debug_output() {
        let cli = Cli::try_parse_from([
            "pglogsink",
            "logs",
            "--database-url",
            "postgres://app:s3cret-pw@127.0.0.1:5432/app",
        ])
        .unwrap();
        let debug = format!("{cli:?}");
        assert!(!debug.contains("s3cret-pw"), "{debug}");
        assert!(debug.contains("app@127.0.0.1:5432/app"), "{debug}");
    }
}

#[derive(Debug, Args)]
pub(crate) struct MigrateArgs {
    #[command(flatten)]
    pub(crate) db: DatabaseArgs,

    #[command(flatten)]
    pub(crate) partitions: maintain::MaintenanceArgs,

    /// On a Citus coordinator: also distribute the Log table over the workers (by id; the
    /// ledger and rejected-rows tables stay on the coordinator, so every batch still commits
    /// exactly once). Safe to repeat; a table distributed already is left as it is. Refused,
    /// saying what is missing, on a server without Citus or without workers.
    #[arg(long, env = "PGLOGSINK_DISTRIBUTE",
          value_parser = clap::builder::BoolishValueParser::new())]
    pub(crate) distribute: bool,
}

/// `pglogsink migrate`: create, or upgrade in place.
pub(crate) async fn migrate(args: MigrateArgs) -> Result<(), Failure> {
    let db = db::Database::open(&args.db, db::Mode::CreateIfMissing).await?;
    let table = &args.db.table;
    let maintenance = args.partitions.maintenance();
    // Distributing first: on a server without Citus it refuses before
    // anything is made.
    let spread = if args.distribute {
        match pglogsink::distribute(&db.pool, table, &maintenance).await {
            Ok(spread) => Some(spread),
            Err(e) => {
                db.close();
                return Err(e.into());
            }
        }
    } else {
        None
    };
    let done = pglogsink::upgrade(&db.pool, table, &maintenance).await;
    let description = db.description.clone();
    db.close();
    match done? {
        pglogsink::Upgrade::Upgraded {
            partition,
            bound,
            rows,
        } => println!(
            "table {table} is partitioned now in {description}: its {rows} earlier rows are \
             partition {partition} (up to {bound}), dropped as a whole once retention passes it"
        ),
        _ => println!("table {table} is ready in {description}"),
    }
    if let Some(spread) = spread {
        println!(
            "table {table} {} by {} in {} shards on {} nodes",
            if spread.changed {
                "is distributed now"
            } else {
                "was distributed already"
            },
            spread.column,
            spread.shards,
            spread.nodes
        );
    }
    Ok(())
}
