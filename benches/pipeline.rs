//! End-to-end throughput: the same records loaded into fresh, identical Log
//! tables in six ways, in one run, against one PostgreSQL.
//!
//! ```sh
//! cargo bench --bench pipeline -- --records 1000000 --json /tmp/pipeline.json
//! cargo bench --bench pipeline -- --records 200000 --sweep      # batch sizes
//! cargo bench --bench pipeline -- --records 1000000 --rounds 3 --citus
//! ```
//!
//! `--citus` starts a Citus cluster on this machine (a coordinator and two
//! workers, `pglogsink::embedded::CitusCluster`; Citus must be installed)
//! and one plain server beside it, and runs `limit` and `pglogsink` into
//! each, round by round, every table distributed on the coordinator; then
//! diagnostics through the coordinator: batches of `--batch-size`, each a
//! transaction with its ledger row, with Citus' default connections (one
//! per shard) and with one connection per worker, as the sink sets.
//!
//! Uses `DATABASE_URL` when set, else starts a private throw-away cluster
//! (`EmbeddedPostgres::temporary`), stopped at the end. Every table it
//! creates is dropped at the end, also after a failure.
//!
//! # The methods
//!
//! * `limit`: all records encoded beforehand (not timed) and written by ONE
//!   binary `COPY` over one connection: what PostgreSQL takes from one
//!   client here.
//! * `limit_2`: the same records in two halves, encoded beforehand, written
//!   by TWO binary `COPY` streams at once on two connections: what
//!   PostgreSQL takes from two clients here (the sink keeps
//!   `copies_in_flight` batches in flight, 2 by default).
//! * `pglogsink`: `--producers` threads call `Logger::send` with records
//!   built beforehand (building them is the application's work, not the
//!   sink's); timed from the moment the producers are released until
//!   `Worker::shutdown` returns with every record committed
//!   (`report.written == N`). The pool's connection is opened beforehand,
//!   as it is in a running service.
//! * `pglogsink_old_shape`: the same as `pglogsink`, into the Log table's
//!   shape before partitioning (identity primary key, btree on "timestamp",
//!   partial btree on warnings; `tests/fixtures/old_shape.sql`), run in the
//!   same rounds, to measure what the partitioned shape saves per row.
//! * `seed`: multi-row `INSERT ... VALUES` of 10 rows, one connection (the
//!   seed article's MAX_BATCH_SIZE).
//! * `row_at_a_time`: one `INSERT` per record, on N/20 records.
//! * `vector_jsonb`: Vector's method, `INSERT ... SELECT ... FROM
//!   jsonb_populate_recordset(NULL::t, $1)` with 1,000 records as one JSON
//!   array (built in the timed loop, as Vector serialises its events).
//! * `unnest`: `INSERT ... SELECT ... FROM unnest($1::timestamptz[], ...)`
//!   per 1,000 records.
//!
//! Each statement commits on its own (autocommit), as each method would in a
//! service. The baselines get their `fields` JSON serialised beforehand, which
//! favours them slightly over pglogsink (which serialises in its encoder).
//! Before the timed methods, one untimed COPY of all records warms the
//! server (creates the WAL segments the later runs recycle), and before
//! each method a `CHECKPOINT` (when permitted) starts it from the same state.
//! `--rounds R` repeats `limit` and `pglogsink` alternately and reports
//! the median of each.
//!
//! After each method its table's rows are counted; a wrong count fails the
//! run (exit 1).
//!
//! # Latency
//!
//! log()-to-commit latency is measured in SQL, per row, from the record's
//! `"timestamp"` (stamped by `log()`) to its transaction's commit timestamp
//! (`pg_xact_commit_timestamp(xmin)`, which needs `track_commit_timestamp`:
//! on a private cluster the harness turns it on and restarts the server).
//! PostgreSQL takes that timestamp as it writes the commit record, just
//! before it flushes the WAL, so the flush itself is not included. Without
//! commit timestamps (a `DATABASE_URL` server that has them off), every
//! bench table gets a `written_at timestamptz DEFAULT clock_timestamp()`
//! column instead: COPY's column list leaves it to the default, evaluated as
//! each row is inserted, a lower bound of the commit time.
//!
//! "full" is the throughput run itself: all records are logged as fast as
//! the producers can, so its latency is mostly the time a record waits in
//! the backlog. "light" logs at half the measured maximum rate, paced, for
//! about five seconds: the latency a service with headroom sees.

use std::borrow::Cow;
use std::error::Error as StdError;
use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Barrier;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::{BufMut, Bytes, BytesMut};
use futures_util::SinkExt;
use pglogsink::deadpool_postgres::Pool;
use pglogsink::embedded::{CitusCluster, EmbeddedPostgres};
use pglogsink::tokio_postgres::types::{to_sql_checked, IsNull, ToSql, Type};
use pglogsink::tokio_postgres::{self, Config};
use pglogsink::{CancellationToken, Level, Record, SinkConfig, TableName};
use serde_json::{json, Value};
use tokio::runtime::Runtime;

type Fail = Box<dyn StdError + Send + Sync>;

const DEFAULT_RECORDS: usize = 1_000_000;
const DEFAULT_PRODUCERS: usize = 4;
const SEED_BATCH: usize = 10;
const ARRAY_BATCH: usize = 1000;
/// row_at_a_time loads this fraction of the records.
const ROW_AT_A_TIME_DIVISOR: usize = 20;
const SWEEP: [usize; 6] = [10, 100, 1000, 4096, 16384, 65536];
/// How long the light-rate latency run logs for.
const LIGHT_SECONDS: f64 = 5.0;
/// CopyData message size for `limit`, as the sink uses.
const COPY_CHUNK: usize = 256 * 1024;
const COLUMNS: &str = r#""timestamp", level, target, message, thread_id, fields"#;
/// All records are handed to the sink at once, far past the default memory
/// budget (with no spool it would hand records back): the queue may hold
/// them all.
const QUEUE_BYTES: usize = 64 << 30;
const METHODS: [&str; 8] = [
    "limit",
    "limit_2",
    "pglogsink",
    "pglogsink_old_shape",
    "seed",
    "row_at_a_time",
    "vector_jsonb",
    "unnest",
];

struct Args {
    records: usize,
    json: Option<PathBuf>,
    sweep: bool,
    batch_size: usize,
    producers: usize,
    rounds: usize,
    methods: Vec<String>,
    synchronous_commit_off: bool,
    /// Also run K sinks into one table, for each K here.
    sinks: Vec<usize>,
    /// The sinks' `copies_in_flight`.
    copies: usize,
    /// Through a Citus coordinator instead (see `run_citus`).
    citus: bool,
}

const USAGE: &str = "usage: cargo bench --bench pipeline -- [--records N] [--json PATH] \
[--sweep] [--batch-size N] [--producers N] [--rounds N] [--methods limit,pglogsink,...] \
[--synchronous-commit-off] [--sinks 1,2,4] [--copies N] [--citus]";

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        records: DEFAULT_RECORDS,
        json: None,
        sweep: false,
        batch_size: pglogsink::DEFAULT_BATCH_SIZE,
        producers: DEFAULT_PRODUCERS,
        rounds: 1,
        methods: METHODS.iter().map(|m| m.to_string()).collect(),
        synchronous_commit_off: false,
        sinks: Vec::new(),
        copies: pglogsink::DEFAULT_COPIES_IN_FLIGHT,
        citus: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = |name: &str| it.next().ok_or(format!("{name} needs a value"));
        let number = |s: String, name: &str| {
            s.parse::<usize>().ok().filter(|&n| n > 0).ok_or(format!(
                "{name}: expected a positive whole number, got {s:?}"
            ))
        };
        match arg.as_str() {
            "--records" => args.records = number(value("--records")?, "--records")?,
            "--json" => args.json = Some(value("--json")?.into()),
            "--sweep" => args.sweep = true,
            "--batch-size" => args.batch_size = number(value("--batch-size")?, "--batch-size")?,
            "--producers" => args.producers = number(value("--producers")?, "--producers")?,
            "--copies" => args.copies = number(value("--copies")?, "--copies")?,
            "--rounds" => args.rounds = number(value("--rounds")?, "--rounds")?,
            "--methods" => {
                args.methods = value("--methods")?.split(',').map(str::to_owned).collect();
                if let Some(bad) = args.methods.iter().find(|m| !METHODS.contains(&m.as_str())) {
                    return Err(format!("unknown method {bad:?}: use {}", METHODS.join(",")));
                }
            }
            "--synchronous-commit-off" => args.synchronous_commit_off = true,
            "--citus" => args.citus = true,
            "--sinks" => {
                args.sinks = value("--sinks")?
                    .split(',')
                    .map(|k| number(k.to_owned(), "--sinks"))
                    .collect::<Result<_, _>>()?;
            }
            "-h" | "--help" => return Err(USAGE.to_owned()),
            // `cargo bench` passes --bench (and filters); they are not ours.
            _ => {}
        }
    }
    Ok(args)
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(args) => args,
        Err(e) => {
            eprintln!("{e}");
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
            eprintln!("pipeline: cannot build the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    if args.citus {
        return citus::run(&runtime, &args);
    }
    let mut bench = match Bench::connect(&runtime, &args) {
        Ok(bench) => bench,
        Err(e) => {
            eprintln!("pipeline: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = bench.run(&args);
    bench.drop_all_tables();
    let code = match result {
        Ok(summary) => {
            if let Some(path) = &args.json {
                let text = serde_json::to_string_pretty(&summary).unwrap_or_default();
                if let Err(e) = std::fs::write(path, text + "\n") {
                    eprintln!("pipeline: cannot write {}: {e}", path.display());
                    return ExitCode::FAILURE;
                }
                println!("wrote {}", path.display());
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("pipeline: FAILED: {e}");
            ExitCode::FAILURE
        }
    };
    if let Some(server) = bench.server.take() {
        if let Err(e) = server.stop() {
            eprintln!("pipeline: stopping the private cluster: {e}");
        }
    }
    code
}

// ---------------------------------------------------------------------------
// The records

/// One generated log line, in the shapes the methods need.
struct Row {
    ts: SystemTime,
    level: Level,
    target: &'static str,
    message: String,
    thread_id: i64,
    fields: Vec<(&'static str, Value)>,
    /// `fields` as JSON text; None when there are none.
    fields_json: Option<Vec<u8>>,
}

impl Row {
    fn to_record(&self) -> Record {
        let fields = self
            .fields
            .iter()
            .map(|(k, v)| (Cow::Borrowed(*k), v.clone()))
            .collect();
        Record::new(self.level, self.message.clone())
            .target(self.target)
            .fields(fields)
    }
}

/// xorshift64*: deterministic, no dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

const TARGETS: [&str; 5] = ["http", "recipes", "db::pool", "auth", "payments"];

/// Realistic lines of about 100 bytes; about a third carry 1 to 3 fields.
fn generate(n: usize) -> Vec<Row> {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let base = SystemTime::now();
    (0..n)
        .map(|i| {
            let id = rng.below(100_000);
            let ms = rng.below(900);
            let user = rng.below(50_000);
            let message = match rng.below(4) {
                0 => format!(
                    "GET /api/v1/recipes/{id}?include=ingredients&lang=en answered 200 OK in {ms}.{} ms for user {user} (cache)",
                    rng.below(10)
                ),
                1 => format!(
                    "cache miss for key recipe:{id}:ingredients; loaded from primary database shard {} in {ms} ms, now cached",
                    rng.below(16)
                ),
                2 => format!(
                    "user {user} signed in from 10.{}.{}.{} with a session cookie; access token refreshed, valid for 3600 s",
                    rng.below(256),
                    rng.below(256),
                    rng.below(256)
                ),
                _ => format!(
                    "payment {id} for order {} authorised by the card provider after {ms} ms; capture scheduled for tonight",
                    rng.below(1_000_000)
                ),
            };
            let level = match rng.below(20) {
                0 => Level::Error,
                1 | 2 => Level::Warn,
                3..=7 => Level::Debug,
                _ => Level::Info,
            };
            let fields: Vec<(&'static str, Value)> = match rng.below(6) {
                0 => vec![("status", json!(200)), ("ms", json!(ms))],
                1 => vec![
                    ("user_id", json!(user)),
                    ("request_id", json!(format!("req-{:016x}", rng.next()))),
                    ("cached", json!(rng.below(2) == 0)),
                ],
                _ => Vec::new(),
            };
            let fields_json = (!fields.is_empty()).then(|| {
                let map: serde_json::Map<String, Value> = fields
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), v.clone()))
                    .collect();
                serde_json::to_vec(&map).expect("JSON of a map")
            });
            Row {
                ts: base + Duration::from_micros(i as u64),
                level,
                target: TARGETS[rng.below(TARGETS.len() as u64) as usize],
                message,
                thread_id: 1000 + (i % 8) as i64,
                fields,
                fields_json,
            }
        })
        .collect()
}

// ---------------------------------------------------------------------------
// Encodings the baselines use

/// Microseconds from the Unix epoch to PostgreSQL's (2000-01-01 UTC).
const PG_EPOCH_OFFSET_MICROS: i64 = 946_684_800_000_000;

fn unix_micros(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as i64)
}

/// The whole set as one binary COPY stream (the format the sink writes).
fn encode_copy(rows: &[Row]) -> Bytes {
    let mut buf = BytesMut::with_capacity(rows.len() * 200 + 64);
    buf.put_slice(b"PGCOPY\n\xff\r\n\0");
    buf.put_i32(0);
    buf.put_i32(0);
    for r in rows {
        buf.put_i16(6);
        buf.put_i32(8);
        buf.put_i64(unix_micros(r.ts) - PG_EPOCH_OFFSET_MICROS);
        for text in [r.level.as_str(), r.target, r.message.as_str()] {
            buf.put_i32(text.len() as i32);
            buf.put_slice(text.as_bytes());
        }
        buf.put_i32(8);
        buf.put_i64(r.thread_id);
        match &r.fields_json {
            Some(j) => {
                buf.put_i32(j.len() as i32 + 1);
                buf.put_u8(1);
                buf.put_slice(j);
            }
            None => buf.put_i32(-1),
        }
    }
    buf.put_i16(-1);
    buf.freeze()
}

/// JSON text sent as a `jsonb` parameter as is (version byte + text), so
/// that the baselines do not build `serde_json::Value` trees.
#[derive(Debug)]
struct RawJsonb<'a>(&'a [u8]);

impl ToSql for RawJsonb<'_> {
    fn to_sql(&self, _: &Type, out: &mut BytesMut) -> Result<IsNull, Fail> {
        out.put_u8(1);
        out.put_slice(self.0);
        Ok(IsNull::No)
    }

    fn accepts(ty: &Type) -> bool {
        *ty == Type::JSONB
    }

    to_sql_checked!();
}

/// RFC 3339 in UTC with microseconds, for jsonb_populate_recordset.
fn write_rfc3339(out: &mut Vec<u8>, t: SystemTime) {
    let micros = unix_micros(t);
    let secs = micros.div_euclid(1_000_000);
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let _ = write!(
        out,
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:06}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60,
        micros.rem_euclid(1_000_000)
    );
}

fn json_array(rows: &[Row], out: &mut Vec<u8>) {
    out.clear();
    out.push(b'[');
    for (i, r) in rows.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(b"{\"timestamp\":\"");
        write_rfc3339(out, r.ts);
        out.extend_from_slice(b"\",\"level\":\"");
        out.extend_from_slice(r.level.as_str().as_bytes());
        out.extend_from_slice(b"\",\"target\":");
        let _ = serde_json::to_writer(&mut *out, r.target);
        out.extend_from_slice(b",\"message\":");
        let _ = serde_json::to_writer(&mut *out, &r.message);
        let _ = write!(out, ",\"thread_id\":{},\"fields\":", r.thread_id);
        match &r.fields_json {
            Some(j) => out.extend_from_slice(j),
            None => out.extend_from_slice(b"null"),
        }
        out.push(b'}');
    }
    out.push(b']');
}

// ---------------------------------------------------------------------------
// The database and the tables

/// The Log table's shape before partitioning, for `pglogsink_old_shape`.
const OLD_SHAPE: &str = include_str!("../tests/fixtures/old_shape.sql");

/// Which Log table a method writes to.
#[derive(Clone, Copy, PartialEq)]
enum Shape {
    /// `sql/schema.sql`, through `pglogsink::migrate`.
    Partitioned,
    /// `tests/fixtures/old_shape.sql`.
    Old,
}

/// How latency is read back: the commit timestamp, or the per-row default.
#[derive(Clone, Copy, PartialEq)]
enum Stamp {
    Commit,
    WrittenAt,
}

struct Bench<'rt> {
    rt: &'rt Runtime,
    server: Option<EmbeddedPostgres>,
    pool: Pool,
    /// For pools of their own (`--sinks`), and whether they turn
    /// synchronous commit off.
    config: Config,
    sync_off: bool,
    stamp: Stamp,
    tables: Vec<TableName>,
    info: Value,
    /// The sinks' `copies_in_flight`.
    copies: usize,
    /// Distribute every fresh table (`--citus`).
    distribute: bool,
}

fn pool_for(config: &Config, sync_off: bool) -> Result<Pool, Fail> {
    let mut config = config.clone();
    if sync_off {
        config.options("-c synchronous_commit=off");
    }
    Ok(pglogsink::pool(config, pglogsink::DEFAULT_POOL_SIZE)?)
}

impl<'rt> Bench<'rt> {
    fn connect(rt: &'rt Runtime, args: &Args) -> Result<Bench<'rt>, Fail> {
        let (server, config) = match std::env::var("DATABASE_URL") {
            Ok(url) => (None, pglogsink::parse_url(&url)?),
            Err(_) => {
                eprintln!("pipeline: starting a private PostgreSQL cluster...");
                let server = EmbeddedPostgres::temporary()?;
                let config = server.config();
                (Some(server), config)
            }
        };
        Bench::on(rt, args, server, config, false)
    }

    /// A bench on the server `config` reaches. Commit timestamps are turned
    /// on (and `server` restarted) when `server` is ours; with `distribute`,
    /// every table is distributed over a Citus cluster first.
    fn on(
        rt: &'rt Runtime,
        args: &Args,
        server: Option<EmbeddedPostgres>,
        config: pglogsink::ConnectConfig,
        distribute: bool,
    ) -> Result<Bench<'rt>, Fail> {
        let pool = pool_for(&config, args.synchronous_commit_off)?;
        let mut stamp = Stamp::WrittenAt;
        let tracked: String = rt.block_on(async {
            let client = pool.get().await?;
            Ok::<_, Fail>(
                client
                    .query_one("SHOW track_commit_timestamp", &[])
                    .await?
                    .get(0),
            )
        })?;
        if tracked == "on" {
            stamp = Stamp::Commit;
        } else if let Some(server) = server.as_ref().filter(|s| s.owns_server()) {
            rt.block_on(async {
                let client = pool.get().await?;
                client
                    .batch_execute("ALTER SYSTEM SET track_commit_timestamp = on")
                    .await?;
                Ok::<_, Fail>(())
            })?;
            pool.close();
            server.stop_server()?;
            server.start_server()?;
            stamp = Stamp::Commit;
        }
        let pool = pool_for(&config, args.synchronous_commit_off)?;
        let info = rt.block_on(async {
            let client = pool.get().await?;
            let mut settings = serde_json::Map::new();
            for name in [
                "server_version",
                "synchronous_commit",
                "fsync",
                "wal_sync_method",
                "shared_buffers",
                "max_wal_size",
                "track_commit_timestamp",
            ] {
                let v: String = client.query_one(&format!("SHOW {name}"), &[]).await?.get(0);
                settings.insert(name.to_owned(), json!(v));
            }
            Ok::<_, Fail>(Value::Object(settings))
        })?;
        Ok(Bench {
            rt,
            server,
            pool,
            config: Config::clone(&config),
            sync_off: args.synchronous_commit_off,
            stamp,
            tables: Vec::new(),
            info,
            copies: args.copies,
            distribute,
        })
    }

    /// A fresh Log table (migrate, as the sink's users create it).
    fn fresh_table(&mut self, name: &str) -> Result<TableName, Fail> {
        self.fresh_table_shaped(name, Shape::Partitioned)
    }

    fn fresh_table_shaped(&mut self, name: &str, shape: Shape) -> Result<TableName, Fail> {
        let table = TableName::parse(&format!("bench_{name}_{}", std::process::id()))?;
        self.drop_table(&table);
        self.tables.push(table.clone());
        let stamp = self.stamp;
        let distribute = self.distribute;
        self.rt.block_on(async {
            match shape {
                Shape::Partitioned if distribute => {
                    pglogsink::distribute(&self.pool, &table, &Default::default()).await?;
                }
                Shape::Partitioned => pglogsink::migrate(&self.pool, &table).await?,
                Shape::Old => {
                    self.pool
                        .get()
                        .await?
                        .batch_execute(&format!(
                            "BEGIN; SELECT set_config('pglogsink.table', '{table}', true); \
                             {OLD_SHAPE} COMMIT;"
                        ))
                        .await?
                }
            }
            if stamp == Stamp::WrittenAt {
                let client = self.pool.get().await?;
                client
                    .batch_execute(&format!(
                        "ALTER TABLE {} ADD COLUMN written_at timestamptz DEFAULT clock_timestamp()",
                        table.quoted()
                    ))
                    .await?;
            }
            // Start every method from the same state; needs privileges.
            let client = self.pool.get().await?;
            let _ = client.batch_execute("CHECKPOINT").await;
            if distribute {
                let _ = client
                    .batch_execute("SELECT run_command_on_workers('CHECKPOINT')")
                    .await;
            }
            Ok::<_, Fail>(())
        })?;
        Ok(table)
    }

    fn drop_table(&self, table: &TableName) {
        let sql = format!(
            "DROP TABLE IF EXISTS {}, {}, {}",
            table.quoted(),
            table.ledger_table().quoted(),
            table.rejected_table().quoted()
        );
        let result = self.rt.block_on(async {
            let client = self.pool.get().await?;
            client.batch_execute(&sql).await?;
            Ok::<_, Fail>(())
        });
        if let Err(e) = result {
            eprintln!("pipeline: could not drop {table}: {e}");
        }
    }

    fn drop_all_tables(&mut self) {
        for table in std::mem::take(&mut self.tables) {
            self.drop_table(&table);
        }
    }

    fn count(&self, table: &TableName) -> Result<usize, Fail> {
        self.rt.block_on(async {
            let client = self.pool.get().await?;
            let n: i64 = client
                .query_one(&format!("SELECT count(*) FROM {}", table.quoted()), &[])
                .await?
                .get(0);
            Ok(n as usize)
        })
    }

    /// Count the rows (a wrong count fails the run), then drop the table.
    fn finish_method(
        &mut self,
        method: &str,
        table: &TableName,
        expected: usize,
    ) -> Result<(), Fail> {
        let n = self.count(table)?;
        if n != expected {
            return Err(format!("{method}: {n} rows in {table}, expected {expected}").into());
        }
        self.drop_table(table);
        self.tables.retain(|t| t != table);
        Ok(())
    }

    /// p50 and p99 of log()-to-commit, in milliseconds.
    fn latency(&self, table: &TableName) -> Result<(f64, f64), Fail> {
        let committed = match self.stamp {
            Stamp::Commit => "pg_xact_commit_timestamp(xmin)",
            Stamp::WrittenAt => "written_at",
        };
        let sql = format!(
            "SELECT percentile_cont(ARRAY[0.5, 0.99]::float8[]) WITHIN GROUP \
             (ORDER BY extract(epoch FROM {committed} - \"timestamp\")) FROM {}",
            table.quoted()
        );
        self.rt.block_on(async {
            let client = self.pool.get().await?;
            let p: Vec<f64> = client.query_one(&sql, &[]).await?.get(0);
            Ok((p[0] * 1000.0, p[1] * 1000.0))
        })
    }

    // -----------------------------------------------------------------------
    // The methods. Each returns the timed duration.

    fn limit(&mut self, rows: &[Row], name: &str) -> Result<Duration, Fail> {
        let table = self.fresh_table(name)?;
        let data = encode_copy(rows);
        let elapsed = self.rt.block_on(async {
            let client = self.pool.get().await?;
            let statement = client
                .prepare(&format!(
                    "COPY {} ({COLUMNS}) FROM STDIN (FORMAT binary)",
                    table.quoted()
                ))
                .await?;
            let start = Instant::now();
            let copied = copy_in(&client, &statement, &data).await?;
            let elapsed = start.elapsed();
            if copied != rows.len() as u64 {
                return Err(format!("limit: COPY reported {copied} rows").into());
            }
            Ok::<_, Fail>(elapsed)
        })?;
        self.finish_method("limit", &table, rows.len())?;
        Ok(elapsed)
    }

    /// `limit` with the rows in `streams` parts written at once, each by a
    /// COPY on a connection of its own; timed until the last one ends.
    fn limit_n(&mut self, rows: &[Row], name: &str, streams: usize) -> Result<Duration, Fail> {
        let table = self.fresh_table(name)?;
        let part = rows.len().div_ceil(streams);
        let parts: Vec<Bytes> = rows.chunks(part).map(encode_copy).collect();
        let sql = format!(
            "COPY {} ({COLUMNS}) FROM STDIN (FORMAT binary)",
            table.quoted()
        );
        let elapsed = self.rt.block_on(async {
            let mut clients = Vec::new();
            for _ in &parts {
                let client = self.pool.get().await?;
                let statement = client.prepare(&sql).await?;
                clients.push((client, statement));
            }
            let start = Instant::now();
            let copies = clients
                .iter()
                .zip(&parts)
                .map(|((client, statement), data)| copy_in(client, statement, data));
            let copied: u64 = futures_util::future::try_join_all(copies)
                .await?
                .into_iter()
                .sum();
            let elapsed = start.elapsed();
            if copied != rows.len() as u64 {
                return Err(format!("{name}: COPY reported {copied} rows").into());
            }
            Ok::<_, Fail>(elapsed)
        })?;
        self.finish_method(name, &table, rows.len())?;
        Ok(elapsed)
    }

    /// Log `rows` through a sink; `rate` paces the producers (rows/s in
    /// all). Returns the duration and the latency percentiles.
    fn pglogsink(
        &mut self,
        rows: &[Row],
        name: &str,
        batch_size: usize,
        producers: usize,
        rate: Option<f64>,
    ) -> Result<(Duration, (f64, f64)), Fail> {
        self.pglogsink_into(rows, name, batch_size, producers, rate, Shape::Partitioned)
    }

    fn pglogsink_into(
        &mut self,
        rows: &[Row],
        name: &str,
        batch_size: usize,
        producers: usize,
        rate: Option<f64>,
        shape: Shape,
    ) -> Result<(Duration, (f64, f64)), Fail> {
        let table = self.fresh_table_shaped(name, shape)?;
        let per_producer = rows.len().div_ceil(producers);
        let parts: Vec<Vec<Record>> = rows
            .chunks(per_producer)
            .map(|part| part.iter().map(Row::to_record).collect())
            .collect();
        let config = SinkConfig {
            table: table.to_string(),
            batch_size,
            copies_in_flight: self.copies,
            max_queue_bytes: QUEUE_BYTES,
            ..SinkConfig::default()
        };
        let pool = self.pool.clone();
        let (logger, worker) = self.rt.block_on(async {
            // One open connection per copy in flight, as in a running service.
            let mut open = Vec::new();
            for _ in 0..self.copies {
                open.push(pool.get().await?);
            }
            drop(open);
            Ok::<_, Fail>(pglogsink::spawn(pool, &config, CancellationToken::new())?)
        })?;
        let refused = AtomicU64::new(0);
        let start_line = Barrier::new(parts.len() + 1);
        let rate_each = rate.map(|r| r / parts.len() as f64);
        let start = std::thread::scope(|scope| {
            for part in parts {
                let logger = logger.clone();
                let (start_line, refused) = (&start_line, &refused);
                scope.spawn(move || {
                    start_line.wait();
                    let t0 = Instant::now();
                    for (k, record) in part.into_iter().enumerate() {
                        if let Some(rate) = rate_each {
                            let due = t0 + Duration::from_secs_f64(k as f64 / rate);
                            let now = Instant::now();
                            if due > now {
                                std::thread::sleep(due - now);
                            }
                        }
                        // Built beforehand, stamped as it is logged: the
                        // latency is from the send, as an application's
                        // record built and logged at once would have it.
                        if logger.send(record.at(SystemTime::now())).is_err() {
                            refused.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                });
            }
            start_line.wait();
            Instant::now()
        });
        drop(logger);
        let report = self.rt.block_on(worker.shutdown(Duration::from_secs(3600)));
        let elapsed = start.elapsed();
        let refused = refused.load(Ordering::Relaxed);
        if refused > 0 || report.written != rows.len() as u64 || !report.is_complete() {
            return Err(
                format!("{name}: {refused} records refused by log(); report: {report:?}").into(),
            );
        }
        let latency = self.latency(&table)?;
        self.finish_method(name, &table, rows.len())?;
        Ok((elapsed, latency))
    }

    /// `k` sinks (as `k` instances would run), each with its own pool and
    /// ledger instance, writing one table at once; the producers are split
    /// between them. Timed from the first send until every sink's shutdown
    /// returns with its share committed.
    fn sinks(
        &mut self,
        rows: &[Row],
        k: usize,
        batch_size: usize,
        producers: usize,
    ) -> Result<Duration, Fail> {
        let name = format!("sinks_{k}");
        let table = self.fresh_table(&name)?;
        let per_sink = rows.len().div_ceil(k);
        let producers_each = (producers / k).max(1);
        let config = SinkConfig {
            table: table.to_string(),
            batch_size,
            copies_in_flight: self.copies,
            max_queue_bytes: QUEUE_BYTES,
            ..SinkConfig::default()
        };
        let mut sinks = Vec::new();
        for part in rows.chunks(per_sink) {
            let pool = pool_for(&self.config, self.sync_off)?;
            let (logger, worker) = self.rt.block_on(async {
                drop(pool.get().await?);
                Ok::<_, Fail>(pglogsink::spawn(pool, &config, CancellationToken::new())?)
            })?;
            let records: Vec<Record> = part.iter().map(Row::to_record).collect();
            sinks.push((logger, worker, records));
        }
        let start_line = Barrier::new(sinks.iter().map(|_| producers_each).sum::<usize>() + 1);
        let refused = AtomicU64::new(0);
        let mut workers = Vec::new();
        let start = std::thread::scope(|scope| {
            for (logger, worker, records) in sinks {
                let each = records.len().div_ceil(producers_each).max(1);
                let mut records = records;
                while !records.is_empty() {
                    let part: Vec<Record> = records.drain(..each.min(records.len())).collect();
                    let logger = logger.clone();
                    let (start_line, refused) = (&start_line, &refused);
                    scope.spawn(move || {
                        start_line.wait();
                        for record in part {
                            if logger.send(record).is_err() {
                                refused.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                    });
                }
                workers.push(worker);
            }
            start_line.wait();
            Instant::now()
        });
        let mut written = 0;
        for worker in workers {
            let report = self.rt.block_on(worker.shutdown(Duration::from_secs(3600)));
            if !report.is_complete() {
                return Err(format!("{name}: {report:?}").into());
            }
            written += report.written;
        }
        let elapsed = start.elapsed();
        if refused.load(Ordering::Relaxed) > 0 || written != rows.len() as u64 {
            return Err(format!("{name}: {written} written of {}", rows.len()).into());
        }
        self.finish_method(&name, &table, rows.len())?;
        Ok(elapsed)
    }

    /// Diagnostics: the records pre-encoded in batches of `batch`, one COPY
    /// per batch, each committed on its own; with `ledger`, in the same
    /// transaction shape as the sink (BEGIN, ledger INSERT, COPY, COMMIT).
    /// Between `limit` and `pglogsink`, they show what per-batch commits and
    /// the ledger cost, and so what is left for the sink's own work.
    fn limit_batched(
        &mut self,
        rows: &[Row],
        batch: usize,
        ledger: bool,
    ) -> Result<Duration, Fail> {
        self.limit_batched_with(rows, batch, ledger, None)
    }

    /// [`limit_batched`](Self::limit_batched), each transaction beginning
    /// with `settings` (`SET LOCAL ...`) when given (with the ledger only).
    fn limit_batched_with(
        &mut self,
        rows: &[Row],
        batch: usize,
        ledger: bool,
        settings: Option<&str>,
    ) -> Result<Duration, Fail> {
        let name = if ledger {
            "copy_batches_ledger"
        } else {
            "copy_batches"
        };
        let table = self.fresh_table(name)?;
        let batches: Vec<Bytes> = rows.chunks(batch).map(encode_copy).collect();
        let copy_sql = format!(
            "COPY {} ({COLUMNS}) FROM STDIN (FORMAT binary)",
            table.quoted()
        );
        let claim_sql = format!(
            "INSERT INTO {} (instance, seq, part, rows) VALUES ($1, $2, $3, $4) \
             ON CONFLICT DO NOTHING",
            table.ledger_table().quoted()
        );
        let elapsed = self.rt.block_on(async {
            let client = self.pool.get().await?;
            let copy = client.prepare(&copy_sql).await?;
            let claim = client.prepare(&claim_sql).await?;
            let start = Instant::now();
            for (seq, (data, chunk)) in batches.iter().zip(rows.chunks(batch)).enumerate() {
                let n = chunk.len() as u64;
                let copied = if ledger {
                    // What Client::transaction() sends, on the plain client.
                    client.batch_execute("BEGIN").await?;
                    if let Some(settings) = settings {
                        client.batch_execute(settings).await?;
                    }
                    client
                        .execute(&claim, &[&1i64, &(seq as i64), &0i32, &(n as i32)])
                        .await?;
                    let copied = copy_in(&client, &copy, data).await?;
                    client.batch_execute("COMMIT").await?;
                    copied
                } else {
                    copy_in(&client, &copy, data).await?
                };
                if copied != n {
                    return Err(format!("{name}: COPY reported {copied} rows, sent {n}").into());
                }
            }
            Ok::<_, Fail>(start.elapsed())
        })?;
        self.finish_method(name, &table, rows.len())?;
        Ok(elapsed)
    }

    fn seed(&mut self, rows: &[Row], name: &str, per_statement: usize) -> Result<Duration, Fail> {
        let table = self.fresh_table(name)?;
        let insert = |n: usize| {
            let values: Vec<String> = (0..n)
                .map(|i| {
                    let p = i * 6;
                    format!(
                        "(${}, ${}::text::pglogsink_level, ${}, ${}, ${}, ${})",
                        p + 1,
                        p + 2,
                        p + 3,
                        p + 4,
                        p + 5,
                        p + 6
                    )
                })
                .collect();
            format!(
                "INSERT INTO {} ({COLUMNS}) VALUES {}",
                table.quoted(),
                values.join(", ")
            )
        };
        let elapsed = self.rt.block_on(async {
            let client = self.pool.get().await?;
            let full = client.prepare(&insert(per_statement)).await?;
            let rest = rows.len() % per_statement;
            let last = if rest > 0 {
                Some(client.prepare(&insert(rest)).await?)
            } else {
                None
            };
            let start = Instant::now();
            for chunk in rows.chunks(per_statement) {
                let levels: Vec<&str> = chunk.iter().map(|r| r.level.as_str()).collect();
                let fields: Vec<Option<RawJsonb>> = chunk
                    .iter()
                    .map(|r| r.fields_json.as_deref().map(RawJsonb))
                    .collect();
                let mut params: Vec<&(dyn ToSql + Sync)> = Vec::with_capacity(chunk.len() * 6);
                for (i, r) in chunk.iter().enumerate() {
                    params.push(&r.ts);
                    params.push(&levels[i]);
                    params.push(&r.target);
                    params.push(&r.message);
                    params.push(&r.thread_id);
                    params.push(&fields[i]);
                }
                let statement = if chunk.len() == per_statement {
                    &full
                } else {
                    last.as_ref().expect("a statement for the remainder")
                };
                client.execute(statement, &params).await?;
            }
            Ok::<_, Fail>(start.elapsed())
        })?;
        self.finish_method(name, &table, rows.len())?;
        Ok(elapsed)
    }

    fn vector_jsonb(&mut self, rows: &[Row]) -> Result<Duration, Fail> {
        let table = self.fresh_table("vector_jsonb")?;
        let sql = format!(
            "INSERT INTO {t} ({COLUMNS}) SELECT {COLUMNS} FROM jsonb_populate_recordset(NULL::{t}, $1)",
            t = table.quoted()
        );
        let elapsed = self.rt.block_on(async {
            let client = self.pool.get().await?;
            let statement = client.prepare(&sql).await?;
            let mut text = Vec::with_capacity(ARRAY_BATCH * 256);
            let start = Instant::now();
            for chunk in rows.chunks(ARRAY_BATCH) {
                json_array(chunk, &mut text);
                client.execute(&statement, &[&RawJsonb(&text)]).await?;
            }
            Ok::<_, Fail>(start.elapsed())
        })?;
        self.finish_method("vector_jsonb", &table, rows.len())?;
        Ok(elapsed)
    }

    fn unnest(&mut self, rows: &[Row]) -> Result<Duration, Fail> {
        let table = self.fresh_table("unnest")?;
        let sql = format!(
            "INSERT INTO {} ({COLUMNS}) \
             SELECT ts, lvl::pglogsink_level, tgt, msg, tid, f \
             FROM unnest($1::timestamptz[], $2::text[], $3::text[], $4::text[], $5::int8[], $6::jsonb[]) \
             AS u(ts, lvl, tgt, msg, tid, f)",
            table.quoted()
        );
        let elapsed = self.rt.block_on(async {
            let client = self.pool.get().await?;
            let statement = client.prepare(&sql).await?;
            let start = Instant::now();
            for chunk in rows.chunks(ARRAY_BATCH) {
                let ts: Vec<SystemTime> = chunk.iter().map(|r| r.ts).collect();
                let levels: Vec<&str> = chunk.iter().map(|r| r.level.as_str()).collect();
                let targets: Vec<&str> = chunk.iter().map(|r| r.target).collect();
                let messages: Vec<&str> = chunk.iter().map(|r| r.message.as_str()).collect();
                let threads: Vec<i64> = chunk.iter().map(|r| r.thread_id).collect();
                let fields: Vec<Option<RawJsonb>> = chunk
                    .iter()
                    .map(|r| r.fields_json.as_deref().map(RawJsonb))
                    .collect();
                client
                    .execute(
                        &statement,
                        &[&ts, &levels, &targets, &messages, &threads, &fields],
                    )
                    .await?;
            }
            Ok::<_, Fail>(start.elapsed())
        })?;
        self.finish_method("unnest", &table, rows.len())?;
        Ok(elapsed)
    }

    // -----------------------------------------------------------------------

    fn run(&mut self, args: &Args) -> Result<Value, Fail> {
        let machine = machine();
        eprintln!("pipeline: generating {} records...", args.records);
        let rows = generate(args.records);
        let avg_message =
            rows.iter().map(|r| r.message.len()).sum::<usize>() as f64 / rows.len() as f64;
        let with_fields = rows.iter().filter(|r| !r.fields.is_empty()).count();
        let mut out = json!({
            "records": args.records,
            "producers": args.producers,
            "batch_size": args.batch_size,
            "avg_message_bytes": avg_message,
            "records_with_fields": with_fields,
            "record_struct_bytes": std::mem::size_of::<Record>(),
            "latency_source": match self.stamp {
                Stamp::Commit => "pg_xact_commit_timestamp(xmin) - timestamp",
                Stamp::WrittenAt => "written_at (clock_timestamp() at insert) - timestamp",
            },
            "synchronous_commit_off": args.synchronous_commit_off,
            "machine": machine,
            "postgres": self.info.clone(),
        });
        println!(
            "pipeline: {} records (messages {:.0} bytes on average, {:.0}% with fields), \
             {} producers, batch size {}, PostgreSQL {}, {} CPUs ({}){}",
            args.records,
            avg_message,
            100.0 * with_fields as f64 / rows.len() as f64,
            args.producers,
            args.batch_size,
            self.info["server_version"].as_str().unwrap_or("?"),
            out["machine"]["cpus"],
            out["machine"]["cpu_model"].as_str().unwrap_or("?"),
            if args.synchronous_commit_off {
                ", synchronous_commit = off for every connection"
            } else {
                ""
            }
        );

        eprintln!("pipeline: warm-up (an untimed COPY of all records)...");
        self.limit(&rows, "warmup")?;

        let wants = |m: &str| args.methods.iter().any(|x| x == m);
        let mut results: Vec<(&str, usize, Duration)> = Vec::new();
        let mut limit_runs = Vec::new();
        let mut limit_2_runs = Vec::new();
        let mut sink_runs = Vec::new();
        let mut old_shape_runs = Vec::new();
        let mut full_latency = None;
        let sink_wanted = wants("pglogsink") || args.sweep;
        for round in 0..args.rounds {
            if wants("limit") || args.sweep {
                eprintln!("pipeline: limit (round {})...", round + 1);
                limit_runs.push(self.limit(&rows, "limit")?);
            }
            if wants("limit_2") && !args.sweep {
                eprintln!("pipeline: limit_2 (round {})...", round + 1);
                limit_2_runs.push(self.limit_n(&rows, "limit_2", 2)?);
            }
            if sink_wanted {
                eprintln!("pipeline: pglogsink (round {})...", round + 1);
                let (d, lat) =
                    self.pglogsink(&rows, "pglogsink", args.batch_size, args.producers, None)?;
                sink_runs.push(d);
                full_latency.get_or_insert(Vec::new()).push(lat);
            }
            if wants("pglogsink_old_shape") && !args.sweep {
                eprintln!("pipeline: pglogsink_old_shape (round {})...", round + 1);
                let (d, _) = self.pglogsink_into(
                    &rows,
                    "pglogsink_old_shape",
                    args.batch_size,
                    args.producers,
                    None,
                    Shape::Old,
                )?;
                old_shape_runs.push(d);
            }
        }
        if !limit_runs.is_empty() {
            results.push(("limit", rows.len(), median_duration(&mut limit_runs)));
        }
        if !limit_2_runs.is_empty() {
            results.push(("limit_2", rows.len(), median_duration(&mut limit_2_runs)));
        }
        let mut diagnostics = serde_json::Map::new();
        if !args.sweep && wants("limit") && wants("pglogsink") {
            for ledger in [false, true] {
                eprintln!(
                    "pipeline: diagnostics, pre-encoded batches of {}{}...",
                    args.batch_size,
                    if ledger { " with the ledger" } else { "" }
                );
                let d = self.limit_batched(&rows, args.batch_size, ledger)?;
                let name = if ledger {
                    "copy_batches_ledger"
                } else {
                    "copy_batches"
                };
                diagnostics.insert(
                    name.to_owned(),
                    json!({"rows": rows.len(), "seconds": d.as_secs_f64(),
                           "rows_per_s": rows.len() as f64 / d.as_secs_f64()}),
                );
            }
        }
        let mut light = None;
        let mut light_rate = None;
        if !sink_runs.is_empty() {
            let d = median_duration(&mut sink_runs);
            results.push(("pglogsink", rows.len(), d));
            if !old_shape_runs.is_empty() {
                let old = median_duration(&mut old_shape_runs);
                results.push(("pglogsink_old_shape", rows.len(), old));
            }
            let rate = rows.len() as f64 / d.as_secs_f64() / 2.0;
            let n = ((rate * LIGHT_SECONDS) as usize).clamp(1000.min(rows.len()), rows.len());
            eprintln!("pipeline: pglogsink at {rate:.0} rows/s (half the maximum), {n} records...");
            let (_, lat) = self.pglogsink(
                &rows[..n],
                "pglogsink_light",
                args.batch_size,
                args.producers,
                Some(rate),
            )?;
            light = Some(lat);
            light_rate = Some(rate);
        }
        if !args.sweep {
            if wants("seed") {
                eprintln!("pipeline: seed (10-row INSERTs)...");
                results.push(("seed", rows.len(), self.seed(&rows, "seed", SEED_BATCH)?));
            }
            if wants("row_at_a_time") {
                let n = (rows.len() / ROW_AT_A_TIME_DIVISOR).max(1);
                eprintln!("pipeline: row_at_a_time ({n} records)...");
                results.push((
                    "row_at_a_time",
                    n,
                    self.seed(&rows[..n], "row_at_a_time", 1)?,
                ));
            }
            if wants("vector_jsonb") {
                eprintln!("pipeline: vector_jsonb...");
                results.push(("vector_jsonb", rows.len(), self.vector_jsonb(&rows)?));
            }
            if wants("unnest") {
                eprintln!("pipeline: unnest...");
                results.push(("unnest", rows.len(), self.unnest(&rows)?));
            }
        }

        let rate_of = |name: &str| {
            results
                .iter()
                .find(|(m, _, _)| *m == name)
                .map(|(_, n, d)| *n as f64 / d.as_secs_f64())
        };
        let limit_rate = rate_of("limit");
        let sink_rate = rate_of("pglogsink");
        let mut methods = serde_json::Map::new();
        println!();
        println!(
            "{:<15} {:>9} {:>9} {:>11} {:>9} {:>14}",
            "method", "rows", "seconds", "rows/s", "vs limit", "pglogsink vs"
        );
        for (name, n, d) in &results {
            let rate = *n as f64 / d.as_secs_f64();
            let vs_limit = limit_rate.map(|l| rate / l);
            let sink_vs = sink_rate.map(|s| s / rate);
            println!(
                "{:<15} {:>9} {:>9.2} {:>11.0} {:>9} {:>14}",
                name,
                n,
                d.as_secs_f64(),
                rate,
                vs_limit.map_or("-".to_owned(), |r| format!("{r:.2}")),
                if *name == "pglogsink" {
                    "-".to_owned()
                } else {
                    sink_vs.map_or("-".to_owned(), |r| format!("{r:.2}x"))
                },
            );
            methods.insert(
                name.to_string(),
                json!({
                    "rows": n,
                    "seconds": d.as_secs_f64(),
                    "rows_per_s": rate,
                    "vs_limit": vs_limit,
                    "pglogsink_vs": sink_vs,
                }),
            );
        }
        if args.rounds > 1 {
            methods.insert(
                "rounds".to_owned(),
                json!({
                    "limit_seconds": limit_runs.iter().map(Duration::as_secs_f64).collect::<Vec<_>>(),
                    "limit_2_seconds": limit_2_runs.iter().map(Duration::as_secs_f64).collect::<Vec<_>>(),
                    "pglogsink_seconds": sink_runs.iter().map(Duration::as_secs_f64).collect::<Vec<_>>(),
                    "pglogsink_old_shape_seconds": old_shape_runs.iter().map(Duration::as_secs_f64).collect::<Vec<_>>(),
                }),
            );
        }
        out["methods"] = Value::Object(methods);
        if !args.sinks.is_empty() {
            let mut by_k = serde_json::Map::new();
            let mut first = None;
            println!();
            println!(
                "K sinks into one table ({} producer threads in all), each its own pool and ledger instance:",
                args.producers
            );
            println!("{:>6} {:>11} {:>9}", "sinks", "rows/s", "vs first");
            for &k in &args.sinks {
                eprintln!("pipeline: {k} sink(s) into one table...");
                let d = self.sinks(&rows, k, args.batch_size, args.producers)?;
                let rate = rows.len() as f64 / d.as_secs_f64();
                let first = *first.get_or_insert(rate);
                println!("{k:>6} {rate:>11.0} {:>9.2}", rate / first);
                by_k.insert(
                    k.to_string(),
                    json!({"rows": rows.len(), "seconds": d.as_secs_f64(), "rows_per_s": rate}),
                );
            }
            out["sinks"] = Value::Object(by_k);
        }
        if !diagnostics.is_empty() {
            println!();
            println!(
                "diagnostics: the records pre-encoded (not timed) in batches of {}, \
                 one COPY and one commit per batch",
                args.batch_size
            );
            for (name, v) in &diagnostics {
                let rate = v["rows_per_s"].as_f64().unwrap_or(f64::NAN);
                let vs_limit = limit_rate.map_or("-".to_owned(), |l| format!("{:.2}", rate / l));
                let sink_vs = sink_rate.map_or("-".to_owned(), |s| format!("{:.2}x", s / rate));
                println!(
                    "{name:<20} {rate:>11.0} rows/s, {vs_limit} of limit; pglogsink {sink_vs} of it"
                );
            }
            out["diagnostics"] = Value::Object(diagnostics);
        }
        if let (Some(mut full), Some(light), Some(rate)) = (full_latency, light, light_rate) {
            full.sort_by(|a, b| a.1.total_cmp(&b.1));
            let full = full[full.len() / 2];
            println!();
            println!(
                "log()-to-commit latency, pglogsink, batch size {}: full speed p50 {:.1} ms, \
                 p99 {:.1} ms (burst of {} records: mostly backlog); at {:.0} rows/s (half the \
                 maximum) p50 {:.1} ms, p99 {:.1} ms",
                args.batch_size, full.0, full.1, args.records, rate, light.0, light.1
            );
            out["latency_ms"] = json!({
                "full": {"p50": full.0, "p99": full.1},
                "light": {"p50": light.0, "p99": light.1, "rows_per_s": rate},
            });
        }

        if args.sweep {
            let light_rate = light_rate.ok_or("the sweep needs the pglogsink run")?;
            let mut sweep = Vec::new();
            println!();
            println!(
                "batch size sweep ({} records, {} producers; light = {:.0} rows/s for every size; \
                 each point's ratio is to a limit run just before it)",
                args.records, args.producers, light_rate
            );
            println!(
                "{:>10} {:>11} {:>9} {:>10} {:>10} {:>11} {:>11}",
                "batch", "rows/s", "vs limit", "full p50", "full p99", "light p50", "light p99"
            );
            for batch in SWEEP {
                // A limit run right before each point, so that each ratio
                // compares neighbours in time (the machine's load drifts).
                eprintln!("pipeline: sweep, limit before batch size {batch}...");
                let limit = self.limit(&rows, "limit")?;
                let limit_rate = Some(rows.len() as f64 / limit.as_secs_f64());
                eprintln!("pipeline: sweep, batch size {batch}...");
                let (d, full) = self.pglogsink(&rows, "sweep", batch, args.producers, None)?;
                let n =
                    ((light_rate * LIGHT_SECONDS) as usize).clamp(1000.min(rows.len()), rows.len());
                let (_, light) = self.pglogsink(
                    &rows[..n],
                    "sweep_light",
                    batch,
                    args.producers,
                    Some(light_rate),
                )?;
                let rate = rows.len() as f64 / d.as_secs_f64();
                let vs_limit = limit_rate.map(|l| rate / l);
                println!(
                    "{:>10} {:>11.0} {:>9} {:>8.1}ms {:>8.1}ms {:>9.1}ms {:>9.1}ms",
                    batch,
                    rate,
                    vs_limit.map_or("-".to_owned(), |r| format!("{r:.2}")),
                    full.0,
                    full.1,
                    light.0,
                    light.1
                );
                sweep.push(json!({
                    "batch_size": batch,
                    "rows_per_s": rate,
                    "limit_rows_per_s": limit_rate,
                    "vs_limit": vs_limit,
                    "latency_ms": {
                        "full": {"p50": full.0, "p99": full.1},
                        "light": {"p50": light.0, "p99": light.1, "rows_per_s": light_rate},
                    },
                }));
            }
            out["sweep"] = Value::Array(sweep);
        }
        Ok(out)
    }
}

/// One COPY of a complete binary stream, sent in CopyData messages of
/// [`COPY_CHUNK`] bytes as the sink sends them.
async fn copy_in(
    client: &tokio_postgres::Client,
    statement: &tokio_postgres::Statement,
    data: &Bytes,
) -> Result<u64, Fail> {
    let sink = client.copy_in::<_, Bytes>(statement).await?;
    futures_util::pin_mut!(sink);
    let mut offset = 0;
    while offset < data.len() {
        let end = (offset + COPY_CHUNK).min(data.len());
        sink.feed(data.slice(offset..end)).await?;
        offset = end;
    }
    Ok(sink.as_mut().finish().await?)
}

fn median_duration(values: &mut [Duration]) -> Duration {
    values.sort();
    values[values.len() / 2]
}

fn machine() -> Value {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .and_then(|l| l.split(':').nth(1))
        .map_or("unknown".to_owned(), |m| m.trim().to_owned());
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    json!({"cpus": cpus, "cpu_model": model})
}

/// `--citus`: the same records through a Citus coordinator with two
/// workers on this machine, and into one server beside it, in one run.
mod citus {
    use super::*;

    /// What a batch's transaction sets through a coordinator
    /// (`src/copy.rs`), for the diagnostics.
    const ONE_CONNECTION_PER_WORKER: &str = "SET LOCAL citus.max_adaptive_executor_pool_size = 1";

    pub(super) fn run(rt: &Runtime, args: &Args) -> ExitCode {
        eprintln!("pipeline --citus: starting a coordinator and two workers, and one server...");
        let started = CitusCluster::start(2)
            .and_then(|cluster| EmbeddedPostgres::temporary().map(|single| (cluster, single)));
        let (cluster, single) = match started {
            Ok(both) => both,
            Err(e) => {
                eprintln!("pipeline --citus: {e}");
                return ExitCode::FAILURE;
            }
        };
        let result = compare(rt, args, &cluster, &single);
        let code = match result {
            Ok(summary) => match &args.json {
                Some(path) => {
                    let text = serde_json::to_string_pretty(&summary).unwrap_or_default();
                    match std::fs::write(path, text + "\n") {
                        Ok(()) => {
                            println!("wrote {}", path.display());
                            ExitCode::SUCCESS
                        }
                        Err(e) => {
                            eprintln!("pipeline: cannot write {}: {e}", path.display());
                            ExitCode::FAILURE
                        }
                    }
                }
                None => ExitCode::SUCCESS,
            },
            Err(e) => {
                eprintln!("pipeline --citus: FAILED: {e}");
                ExitCode::FAILURE
            }
        };
        for stopped in [cluster.stop(), single.stop()] {
            if let Err(e) = stopped {
                eprintln!("pipeline --citus: stopping a cluster: {e}");
                return ExitCode::FAILURE;
            }
        }
        code
    }

    /// The runs, alternating between the coordinator and the one server
    /// round by round, and the table of rates and ratios.
    fn compare(
        rt: &Runtime,
        args: &Args,
        cluster: &CitusCluster,
        single: &EmbeddedPostgres,
    ) -> Result<Value, Fail> {
        let coordinator = pglogsink::parse_url(&cluster.url())?;
        // Neither server is handed over: no restart for commit timestamps,
        // so both measure latency the same way (written_at).
        let mut through = Bench::on(rt, args, None, coordinator, true)?;
        let mut one = Bench::on(rt, args, None, single.config(), false)?;
        let result = measure(args, &mut through, &mut one);
        through.drop_all_tables();
        one.drop_all_tables();
        result
    }

    fn measure(args: &Args, through: &mut Bench, one: &mut Bench) -> Result<Value, Fail> {
        eprintln!("pipeline --citus: generating {} records...", args.records);
        let rows = generate(args.records);
        eprintln!("pipeline --citus: warm-up (an untimed COPY of all records into each)...");
        through.limit(&rows, "warmup")?;
        one.limit(&rows, "warmup")?;
        let names = [
            "limit through the coordinator",
            "pglogsink through the coordinator",
            "limit into one server",
            "pglogsink into one server",
        ];
        let mut runs: [Vec<Duration>; 4] = Default::default();
        for round in 1..=args.rounds {
            eprintln!("pipeline --citus: round {round} of {}...", args.rounds);
            runs[0].push(through.limit(&rows, "limit")?);
            let (d, _) =
                through.pglogsink(&rows, "pglogsink", args.batch_size, args.producers, None)?;
            runs[1].push(d);
            runs[2].push(one.limit(&rows, "limit")?);
            let (d, _) =
                one.pglogsink(&rows, "pglogsink", args.batch_size, args.producers, None)?;
            runs[3].push(d);
        }
        let rates: Vec<f64> = runs
            .iter_mut()
            .map(|r| rows.len() as f64 / median_duration(r).as_secs_f64())
            .collect();
        println!(
            "\npipeline --citus: {} records, {} producers, batch size {}, {} copies in flight, \
             median of {} rounds; a coordinator and two workers (32 shards per partition) and \
             one server, on this machine",
            args.records, args.producers, args.batch_size, args.copies, args.rounds
        );
        println!("{:<36} {:>11} {:>9}", "method", "rows/s", "vs limit");
        for (i, name) in names.iter().enumerate() {
            let limit = rates[i - i % 2];
            println!("{name:<36} {:>11.0} {:>9.2}", rates[i], rates[i] / limit);
        }
        let (vs_limit, vs_one) = (rates[1] / rates[0], rates[1] / rates[3]);
        println!(
            "pglogsink through the coordinator: {vs_limit:.2}x the coordinator's limit, \
             {vs_one:.2}x pglogsink into one server"
        );

        // Why: the same batches, one COPY and one commit each with the
        // ledger row, with Citus' defaults and with what pglogsink sets.
        let mut diagnostics = serde_json::Map::new();
        println!(
            "\ndiagnostics through the coordinator: the records pre-encoded in batches of {}, \
             one transaction each (ledger row, COPY, commit), one connection",
            args.batch_size
        );
        for (name, settings) in [
            ("citus_defaults", None),
            ("one_connection_per_worker", Some(ONE_CONNECTION_PER_WORKER)),
        ] {
            eprintln!("pipeline --citus: diagnostics, {name}...");
            let d = through.limit_batched_with(&rows, args.batch_size, true, settings)?;
            let rate = rows.len() as f64 / d.as_secs_f64();
            println!("{name:<36} {rate:>11.0} {:>9.2}", rate / rates[0]);
            diagnostics.insert(
                name.to_owned(),
                json!({"rows_per_s": rate, "vs_limit": rate / rates[0]}),
            );
        }
        let methods: serde_json::Map<String, Value> = names
            .iter()
            .zip(&rates)
            .zip(&runs)
            .map(|((name, rate), runs)| {
                let seconds: Vec<f64> = runs.iter().map(Duration::as_secs_f64).collect();
                (
                    name.to_string(),
                    json!({"rows_per_s": rate, "seconds": seconds}),
                )
            })
            .collect();
        Ok(json!({
            "records": args.records,
            "producers": args.producers,
            "batch_size": args.batch_size,
            "copies_in_flight": args.copies,
            "rounds": args.rounds,
            "machine": machine(),
            "methods": methods,
            "pglogsink_vs_coordinator_limit": vs_limit,
            "pglogsink_vs_one_server": vs_one,
            "diagnostics": diagnostics,
        }))
    }
}
