//! The queries of `pglogsink logs` (the query layer the viewer uses too) on
//! a large partitioned Log table: their time, and their plans.
//!
//! ```sh
//! cargo bench --bench queries -- --rows 50000000 --days 5 --keep
//! ```
//!
//! Fills a table of `--rows` rows spread evenly over the last `--days` days
//! (one partition per day, made by `pglogsink::Maintenance`; 0.1% errors,
//! 1% warnings, two rows per request id, a rare word in 0.01% of the
//! messages), VACUUM ANALYZEs it, then times each query `--runs` times
//! through `pglogsink::admin::query::Reader`, exactly as `logs` sends it (its
//! transaction, its time windows), and prints the median and the slowest.
//! Last, every query once more under `auto_explain`, whose plans
//! (`EXPLAIN (ANALYZE, BUFFERS)` of each statement) are printed.
//!
//! With `--columnar`, the queries are timed on row storage first, then the
//! days that ended a day ago or more are converted to Citus columnar by
//! `pglogsink::Maintenance` (`--columnar-after 1d`), and timed again: the
//! bytes per row of those days before and after, and both times of each
//! query side by side. The private cluster then preloads `citus_columnar`
//! (Citus must be installed); a `DATABASE_URL` server must have it.
//!
//! Uses `DATABASE_URL` when set (the plans need a superuser for `LOAD
//! 'auto_explain'`), else a private throw-away cluster. With `--keep` the
//! table stays, and a later run with the same `--rows` reuses it (unless
//! it has columnar days: `--columnar` needs row storage first).
//! Filling 50 million rows takes several minutes and about 15 GB.

use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use pglogsink::admin::query::{FieldMatch, Filter, Reader, TimeFormat};
use pglogsink::embedded::EmbeddedPostgres;
use pglogsink::tokio_postgres::{self, AsyncMessage, Client, NoTls};
use pglogsink::{Level, Maintenance, MaintenanceReport, TableName};

type Fail = Box<dyn std::error::Error + Send + Sync>;

/// Rows per INSERT while filling (one progress line each).
const CHUNK: i64 = 2_000_000;
/// The four "processes" whose request ids the rows carry.
const PREFIXES: [&str; 4] = [
    "a1f3c9e2b7d4",
    "9c2e5b1a7f30",
    "44d0e8a9c1b2",
    "e7b3f60d2a95",
];

struct Args {
    rows: i64,
    days: i64,
    runs: usize,
    table: String,
    keep: bool,
    columnar: bool,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        rows: 50_000_000,
        days: 5,
        runs: 7,
        table: "bench_queries".to_owned(),
        keep: false,
        columnar: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = |name: &str| it.next().ok_or(format!("{name} needs a value"));
        match arg.as_str() {
            "--rows" => {
                args.rows = value("--rows")?
                    .parse()
                    .map_err(|e| format!("--rows: {e}"))?
            }
            "--days" => {
                args.days = value("--days")?
                    .parse()
                    .map_err(|e| format!("--days: {e}"))?
            }
            "--runs" => {
                args.runs = value("--runs")?
                    .parse()
                    .map_err(|e| format!("--runs: {e}"))?
            }
            "--table" => args.table = value("--table")?,
            "--keep" => args.keep = true,
            "--columnar" => args.columnar = true,
            "--bench" => {}
            other => {
                return Err(format!(
                    "unknown argument {other:?}; usage: queries [--rows N] [--days D] [--runs R] \
                     [--table NAME] [--keep] [--columnar]"
                ))
            }
        }
    }
    if args.rows < 1_000 || args.days < 1 || args.runs < 1 {
        return Err("--rows must be at least 1000, --days and --runs at least 1".into());
    }
    Ok(args)
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(args) => args,
        Err(e) => {
            eprintln!("queries: {e}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("queries: cannot build the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let (server, config) = match std::env::var("DATABASE_URL") {
        Ok(url) => match pglogsink::parse_url(&url) {
            Ok(config) => (None, config),
            Err(e) => {
                eprintln!("queries: {e}");
                return ExitCode::FAILURE;
            }
        },
        Err(_) => match private_cluster(&runtime, args.columnar) {
            Ok(server) => {
                let config = server.config();
                (Some(server), config)
            }
            Err(e) => {
                eprintln!("queries: {e}");
                return ExitCode::FAILURE;
            }
        },
    };
    let result = runtime.block_on(run(&args, &config));
    if let Some(server) = server {
        let _ = server.stop();
    }
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("queries: FAILED: {e}");
            ExitCode::FAILURE
        }
    }
}

/// A throw-away cluster; for `--columnar`, with `citus_columnar` preloaded.
fn private_cluster(
    runtime: &tokio::runtime::Runtime,
    columnar: bool,
) -> Result<EmbeddedPostgres, Fail> {
    let server = EmbeddedPostgres::temporary()?;
    if columnar {
        runtime.block_on(async {
            let (client, connection) = server.config().connect(NoTls).await?;
            tokio::spawn(connection);
            client
                .batch_execute("ALTER SYSTEM SET shared_preload_libraries = 'citus_columnar'")
                .await
        })?;
        server.stop_server()?;
        server.start_server()?;
    }
    Ok(server)
}

/// A connection whose notices (auto_explain's plans) are collected.
async fn connect(
    config: &tokio_postgres::Config,
) -> Result<(Client, Arc<Mutex<Vec<String>>>), Fail> {
    let (client, mut connection) = config.connect(NoTls).await?;
    let notices = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&notices);
    tokio::spawn(async move {
        while let Some(message) = std::future::poll_fn(|cx| connection.poll_message(cx)).await {
            match message {
                Ok(AsyncMessage::Notice(notice)) => {
                    if let Ok(mut all) = sink.lock() {
                        all.push(notice.message().to_owned());
                    }
                }
                Ok(_) => {}
                Err(_) => break,
            }
        }
    });
    Ok((client, notices))
}

async fn run(args: &Args, config: &tokio_postgres::Config) -> Result<(), Fail> {
    let table = TableName::parse(&args.table)?;
    let pool = pglogsink::pool(config.clone(), 2)?;
    let (mut client, notices) = connect(config).await?;
    let present: i64 = client
        .query_one(
            &format!(
                "SELECT CASE WHEN to_regclass('{t}') IS NULL THEN -1 \
                 ELSE (SELECT count(*) FROM {t}) END",
                t = table.quoted()
            ),
            &[],
        )
        .await
        .map(|r| r.get(0))
        .unwrap_or(-1);
    let has_columnar = present >= 0
        && client
            .query_one(
                &format!(
                    "SELECT EXISTS (SELECT 1 FROM pg_partition_tree('{}') t \
                     JOIN pg_class c ON c.oid = t.relid JOIN pg_am a ON a.oid = c.relam \
                     WHERE a.amname = 'columnar')",
                    table.quoted()
                ),
                &[],
            )
            .await?
            .get::<_, bool>(0);
    let filled = if present >= args.rows && !(args.columnar && has_columnar) {
        eprintln!("queries: reusing {table} ({present} rows)");
        catch_up(&client, &table, args, present).await?;
        None
    } else {
        Some(fill(&pool, &client, &table, args).await?)
    };
    let size: String = client
        .query_one(
            &format!(
                "SELECT pg_size_pretty(sum(pg_total_relation_size(relid))) || ' in ' || \
                 count(*) FILTER (WHERE isleaf) || ' partitions' FROM pg_partition_tree('{}')",
                table.quoted()
            ),
            &[],
        )
        .await?
        .get(0);
    let version: String = client.query_one("SHOW server_version", &[]).await?.get(0);
    let buffers: String = client.query_one("SHOW shared_buffers", &[]).await?.get(0);
    println!(
        "queries: {} rows over {} days ({size}), PostgreSQL {version}, shared_buffers {buffers}{}",
        args.rows,
        args.days,
        filled.map_or(String::new(), |d: Duration| format!(
            "; filled in {:.0} s",
            d.as_secs_f64()
        ))
    );

    let reader = Reader::new(table.clone()).time_format(TimeFormat::Rfc3339Utc);
    let cases = cases(args);
    let closed = if args.columnar {
        closed_days(&client, &table).await?
    } else {
        Vec::new()
    };
    let row_sizes = sizes(&client, &closed).await?;
    let rows_stored = time_cases(&cases, &reader, &mut client, args.runs).await?;
    if args.columnar {
        let report = convert(&pool, &table).await?;
        // The newest rows as recent as in the first timing.
        let present: i64 = client
            .query_one(&format!("SELECT count(*) FROM {}", table.quoted()), &[])
            .await?
            .get(0);
        catch_up(&client, &table, args, present).await?;
        // Summarised and analyzed as for the first timing.
        client
            .batch_execute(&format!("VACUUM ANALYZE {}", table.quoted()))
            .await?;
        let columnar = time_cases(&cases, &reader, &mut client, args.runs).await?;
        print_storage(
            &client,
            &report,
            &row_sizes,
            &sizes(&client, &closed).await?,
        )
        .await?;
        println!();
        println!(
            "{:<44} {:>6} {:>21} {:>21} {:>7}",
            "query (as `pglogsink logs` sends it)",
            "rows",
            "row: median/max ms",
            "columnar: median/max",
            "ratio"
        );
        for ((case, row), col) in cases.iter().zip(&rows_stored).zip(&columnar) {
            println!(
                "{:<44} {:>6} {:>10.1} {:>10.1} {:>10.1} {:>10.1} {:>7.2}",
                case.name,
                col.rows,
                row.median_ms(),
                row.max_ms(),
                col.median_ms(),
                col.max_ms(),
                col.median_ms() / row.median_ms()
            );
        }
    } else {
        println!();
        println!(
            "{:<44} {:>6} {:>10} {:>10}",
            "query (as `pglogsink logs` sends it)", "rows", "median ms", "max ms"
        );
        for (case, timed) in cases.iter().zip(&rows_stored) {
            println!(
                "{:<44} {:>6} {:>10.1} {:>10.1}",
                case.name,
                timed.rows,
                timed.median_ms(),
                timed.max_ms()
            );
        }
    }

    println!();
    println!(
        "plans (auto_explain: EXPLAIN (ANALYZE, BUFFERS) of every statement each query sent):"
    );
    let explained = client
        .batch_execute(
            "LOAD 'auto_explain'; SET auto_explain.log_min_duration = 0; \
             SET auto_explain.log_analyze = on; SET auto_explain.log_buffers = on; \
             SET auto_explain.log_timing = on; SET auto_explain.log_level = notice; \
             SET client_min_messages = notice",
        )
        .await;
    match explained {
        Err(e) => println!("  (not available: {e}; plans need a superuser)"),
        Ok(()) => {
            for case in &cases {
                notices.lock().map_err(|_| "poisoned")?.clear();
                case.run(&reader, &mut client).await?;
                tokio::time::sleep(Duration::from_millis(50)).await;
                println!("\n--- {}", case.name);
                for plan in notices.lock().map_err(|_| "poisoned")?.iter() {
                    println!("{}", plan.trim_end());
                }
            }
        }
    }
    if !args.keep {
        pool.get()
            .await?
            .batch_execute(&format!(
                "DROP TABLE {}, {}, {}",
                table.quoted(),
                table.ledger_table().quoted(),
                table.rejected_table().quoted()
            ))
            .await?;
    }
    Ok(())
}

/// A query's rows, and its times (the first, warming run left out).
struct Timed {
    rows: usize,
    times: Vec<Duration>,
}

impl Timed {
    fn median_ms(&self) -> f64 {
        self.times[self.times.len() / 2].as_secs_f64() * 1e3
    }

    fn max_ms(&self) -> f64 {
        self.times[self.times.len() - 1].as_secs_f64() * 1e3
    }
}

async fn time_cases(
    cases: &[Case],
    reader: &Reader,
    client: &mut Client,
    runs: usize,
) -> Result<Vec<Timed>, Fail> {
    let mut all = Vec::new();
    for case in cases {
        let mut times = Vec::new();
        let mut rows = 0;
        for run in 0..=runs {
            let (n, took) = case.run(reader, client).await?;
            rows = n;
            if run > 0 {
                times.push(took); // the first run warms the cache
            }
        }
        times.sort();
        all.push(Timed { rows, times });
    }
    Ok(all)
}

/// Convert the days that ended a day ago or more to columnar, as
/// `pglogsink maintain --columnar-after 1d` does.
async fn convert(
    pool: &pglogsink::deadpool_postgres::Pool,
    table: &TableName,
) -> Result<MaintenanceReport, Fail> {
    eprintln!("queries: converting the days that ended a day ago or more to columnar...");
    let maintenance = Maintenance {
        columnar_after: Some(Duration::from_secs(86_400)),
        ..Maintenance::default()
    };
    let report = maintenance.run(pool, table).await?;
    if report.rewritten.is_empty() {
        return Err(format!("nothing converted: {report}").into());
    }
    Ok(report)
}

/// The partitions that ended a day ago or more: those `--columnar-after
/// 1d` converts.
async fn closed_days(client: &Client, table: &TableName) -> Result<Vec<String>, Fail> {
    let rows = client
        .query(
            "SELECT c.oid::regclass::text FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid \
             WHERE i.inhparent = $1::text::regclass \
             AND (regexp_match(pg_get_expr(c.relpartbound, c.oid), 'TO \\(''([^'']+)''\\)'))[1]::timestamptz \
                 <= now() - interval '1 day' ORDER BY 1",
            &[&table.quoted()],
        )
        .await?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

/// Bytes of `partitions`: their data, then each kind of index.
async fn sizes(client: &Client, partitions: &[String]) -> Result<Vec<(String, i64)>, Fail> {
    if partitions.is_empty() {
        return Ok(Vec::new());
    }
    let rows = client
        .query(
            "SELECT 'data', sum(pg_relation_size(p::regclass))::int8 FROM unnest($1::text[]) p \
             UNION ALL (SELECT a.amname || ' ' || pg_get_indexdef(i.indexrelid, 1, true) \
                               || coalesce(' WHERE ' || pg_get_expr(i.indpred, i.indrelid), ''), \
                               sum(pg_relation_size(i.indexrelid))::int8 \
                        FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid \
                        JOIN pg_am a ON a.oid = c.relam \
                        WHERE i.indrelid = ANY (SELECT p::regclass FROM unnest($1::text[]) p) \
                        GROUP BY 1 ORDER BY 1)",
            &[&partitions],
        )
        .await?;
    Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
}

/// Bytes per row of the converted days, before and after (in all and by
/// part), with what columnar keeps in its own catalog for them.
async fn print_storage(
    client: &Client,
    report: &MaintenanceReport,
    before_parts: &[(String, i64)],
    after_parts: &[(String, i64)],
) -> Result<(), Fail> {
    let converted = &report.rewritten;
    let rows: i64 = converted.iter().map(|r| r.rows).sum();
    let before: i64 = converted.iter().map(|r| r.bytes_before).sum();
    let after: i64 = converted.iter().map(|r| r.bytes).sum();
    let names: Vec<String> = converted
        .iter()
        .map(|r| format!("'{}'", r.name.replace('\'', "''")))
        .collect();
    // Each row of columnar's catalog: its data, its tuple header and line
    // pointer, and its primary key entry.
    let metadata: i64 = client
        .query_one(
            &format!(
                "WITH s AS (SELECT storage_id FROM columnar.storage \
                            WHERE relation::text IN ({})) \
                 SELECT (SELECT coalesce(sum(pg_column_size(c.*) + 60), 0) FROM columnar_internal.chunk c \
                         WHERE c.storage_id IN (SELECT storage_id FROM s)) \
                      + (SELECT coalesce(sum(pg_column_size(g.*) + 50), 0) FROM columnar_internal.chunk_group g \
                         WHERE g.storage_id IN (SELECT storage_id FROM s)) \
                      + (SELECT coalesce(sum(pg_column_size(t.*) + 70), 0) FROM columnar_internal.stripe t \
                         WHERE t.storage_id IN (SELECT storage_id FROM s))",
                names.join(", ")
            ),
            &[],
        )
        .await?
        .get::<_, Option<i64>>(0)
        .unwrap_or(0);
    let took: f64 = converted.iter().map(|r| r.took.as_secs_f64()).sum();
    let swap = converted.iter().map(|r| r.swap).max().unwrap_or_default();
    println!();
    println!(
        "converted {} partitions ({rows} rows) in {took:.0} s; longest swap {:.1} ms",
        converted.len(),
        swap.as_secs_f64() * 1e3
    );
    let per_row = |bytes: i64| bytes as f64 / rows.max(1) as f64;
    println!(
        "bytes per row of those days, with their indexes: row storage {:.1}, columnar {:.1} \
         (+{:.2} in columnar's catalog) = {:.3} of row storage",
        per_row(before),
        per_row(after),
        per_row(metadata),
        (after + metadata) as f64 / before as f64
    );
    for (part, bytes) in before_parts {
        let after = after_parts
            .iter()
            .find(|(p, _)| p == part)
            .map_or(0, |(_, b)| *b);
        println!(
            "  {:<72} {:>7.1} {:>7.1}",
            part,
            per_row(*bytes),
            per_row(after)
        );
    }
    Ok(())
}

/// One query of `logs`.
struct Case {
    name: &'static str,
    filter: Filter,
    limit: i64,
    follow_poll: bool,
}

impl Case {
    async fn run(&self, reader: &Reader, client: &mut Client) -> Result<(usize, Duration), Fail> {
        if self.follow_poll {
            let (_, mut follower) = reader.follow(client, &self.filter, self.limit).await?;
            follower.poll(client).await?; // settles the first mark
            let start = Instant::now();
            let rows = follower.poll(client).await?;
            return Ok((rows.len(), start.elapsed()));
        }
        let start = Instant::now();
        let rows = reader.newest(client, &self.filter, self.limit).await?;
        Ok((rows.len(), start.elapsed()))
    }
}

fn cases(args: &Args) -> Vec<Case> {
    let ago = |secs: u64| Some(SystemTime::now() - Duration::from_secs(secs));
    let case = |name, filter, limit| Case {
        name,
        filter,
        limit,
        follow_poll: false,
    };
    // A request from the middle of the range (two rows).
    let middle = args.rows / 2;
    let request_id = request_id(middle);
    vec![
        case("newest 50", Filter::default(), 50),
        case(
            "--level error --since 15m",
            Filter {
                level: Some(Level::Error),
                since: ago(15 * 60),
                ..Filter::default()
            },
            50,
        ),
        case(
            "--level warn (newest 50)",
            Filter {
                level: Some(Level::Warn),
                ..Filter::default()
            },
            50,
        ),
        case(
            "--grep timeout --since 1h",
            Filter {
                grep: Some("timeout".into()),
                since: ago(3_600),
                ..Filter::default()
            },
            50,
        ),
        case(
            "--target shop::orders (newest 50)",
            Filter {
                target: Some("shop::orders".into()),
                ..Filter::default()
            },
            50,
        ),
        case(
            "--field status=500 --since 1h",
            Filter {
                fields: vec![FieldMatch {
                    key: "status".into(),
                    value: "500".into(),
                }],
                since: ago(3_600),
                ..Filter::default()
            },
            50,
        ),
        case(
            "--request-id (no time bound)",
            Filter {
                request_id: Some(request_id),
                ..Filter::default()
            },
            50,
        ),
        case(
            "newest 50 --until 3d (a closed day)",
            Filter {
                until: ago(3 * 86_400),
                ..Filter::default()
            },
            50,
        ),
        case(
            "--level error --until 3d",
            Filter {
                level: Some(Level::Error),
                until: ago(3 * 86_400),
                ..Filter::default()
            },
            50,
        ),
        case(
            "--grep timeout --since 3d1h --until 3d",
            Filter {
                grep: Some("timeout".into()),
                since: ago(3 * 86_400 + 3_600),
                until: ago(3 * 86_400),
                ..Filter::default()
            },
            50,
        ),
        Case {
            name: "--follow: one poll",
            filter: Filter::default(),
            limit: 50,
            follow_poll: true,
        },
        Case {
            name: "--follow --since 1h: one poll",
            filter: Filter {
                since: ago(3_600),
                ..Filter::default()
            },
            limit: 50,
            follow_poll: true,
        },
    ]
}

/// The request id of row `i` (rows `2k` and `2k+1` share one), in the
/// service's shape: a per-process prefix, then a counter in hex.
fn request_id(i: i64) -> String {
    let request = i / 2;
    format!("{}-{:x}", PREFIXES[(request % 4) as usize], request / 4)
}

/// Create the table and its daily partitions, fill it, VACUUM ANALYZE it.
async fn fill(
    pool: &pglogsink::deadpool_postgres::Pool,
    client: &Client,
    table: &TableName,
    args: &Args,
) -> Result<Duration, Fail> {
    let start = Instant::now();
    let t = table.quoted();
    client
        .batch_execute(&format!(
            "DROP TABLE IF EXISTS {t}, {}, {}",
            table.ledger_table().quoted(),
            table.rejected_table().quoted()
        ))
        .await?;
    pglogsink::migrate(pool, table).await?;
    // One row per past day in DEFAULT: maintenance makes each its partition.
    client
        .batch_execute(&format!(
            "INSERT INTO {t} (\"timestamp\", level, target, message) \
             SELECT now() - d * interval '1 day', 'info', 'marker', 'marker' \
             FROM generate_series(1, {}) d",
            args.days
        ))
        .await?;
    Maintenance::default().run(pool, table).await?;
    client
        .batch_execute(&format!("DELETE FROM {t} WHERE target = 'marker'"))
        .await?;
    let span_micros = args.days * 86_400_000_000;
    let step = span_micros as f64 / args.rows as f64;
    let mut done = 0;
    while done < args.rows {
        let upto = (done + CHUNK).min(args.rows);
        let at = format!("now() - make_interval(secs => ({span_micros} - i * {step}) / 1e6)");
        client
            .batch_execute(&insert_sql(&t, &at, done, upto))
            .await?;
        done = upto;
        eprintln!(
            "queries: filled {done} of {} rows ({:.0} s)",
            args.rows,
            start.elapsed().as_secs_f64()
        );
    }
    eprintln!("queries: VACUUM ANALYZE (summarises the BRIN ranges, gathers statistics)...");
    client.batch_execute(&format!("VACUUM ANALYZE {t}")).await?;
    Ok(start.elapsed())
}

/// Rows `from..upto` of the generated table, stamped by the SQL expression
/// `at` (of `i`).
fn insert_sql(t: &str, at: &str, from: i64, upto: i64) -> String {
    let prefixes = PREFIXES
        .iter()
        .map(|p| format!("'{p}'"))
        .collect::<Vec<_>>()
        .join(",");
    format!(
        "INSERT INTO {t} (\"timestamp\", level, target, message, thread_id, fields)
         SELECT {at},
                CASE WHEN i % 1000 = 0 THEN 'error' WHEN i % 100 = 1 THEN 'warn'
                     WHEN i % 5 = 2 THEN 'debug' ELSE 'info' END::pglogsink_level,
                (ARRAY['http','recipes','shop::orders','shop::payments','auth','cache','db::pool','mailer'])[1 + (i / 2) % 8],
                CASE WHEN i % 10000 = 7 THEN 'upstream timeout after 30000 ms calling payments for order ' || i
                     WHEN i % 4 = 0 THEN 'GET /api/v1/recipes/' || (i % 100000) || '?lang=en answered 200 OK in ' || (i % 900) || ' ms'
                     WHEN i % 4 = 1 THEN 'cache miss for key recipe:' || (i % 100000) || ':ingredients; loaded in ' || (i % 90) || ' ms'
                     WHEN i % 4 = 2 THEN 'user ' || (i % 50000) || ' signed in; access token refreshed, valid for 3600 s'
                     ELSE 'payment ' || i || ' authorised by the card provider after ' || (i % 900) || ' ms' END,
                1000 + i % 8,
                jsonb_build_object(
                    'request_id', (ARRAY[{prefixes}])[1 + (i / 2) % 4] || '-' || to_hex(i / 8),
                    'status', CASE WHEN i % 1000 = 0 THEN 500 ELSE 200 END,
                    'ms', i % 900)
         FROM generate_series({from}::int8, {}::int8) i",
        upto - 1
    )
}

/// A reused table is as a live one would be now: the rows that would have
/// arrived since it was filled (at the same rate) are added, so that "the
/// newest rows" are as recent as on a running service.
async fn catch_up(
    client: &Client,
    table: &TableName,
    args: &Args,
    present: i64,
) -> Result<(), Fail> {
    let t = table.quoted();
    let newest: Option<f64> = client
        .query_one(
            &format!(
                "SELECT extract(epoch FROM now() - max(\"timestamp\"))::float8 FROM {t} \
                 WHERE \"timestamp\" > now() - interval '1 day'"
            ),
            &[],
        )
        .await?
        .get(0);
    let Some(gap) = newest.filter(|&g| g > 0.0) else {
        return Ok(());
    };
    let per_second = args.rows as f64 / (args.days as f64 * 86_400.0);
    let rows = (gap * per_second) as i64;
    let step = 1e6 / per_second;
    let at = format!(
        "now() - make_interval(secs => {gap}) + make_interval(secs => (i - {present}) * {step} / 1e6)"
    );
    client
        .batch_execute(&insert_sql(&t, &at, present, present + rows))
        .await?;
    eprintln!("queries: added the {rows} rows of the last {gap:.0} s, as a live table would have");
    Ok(())
}
