//! Closed partitions rewritten (issue 20, items 4 and 5): to Citus
//! columnar storage past `--columnar-after`, without the lower levels past
//! `--keep-levels-after`. Columnar runs on private clusters configured as a
//! Citus server is (`shared_preload_libraries = 'citus'`, `CREATE
//! EXTENSION citus`; maintenance creates `citus_columnar` itself), with
//! `log_lock_waits` on and `deadlock_timeout = 100ms`, so that any lock wait
//! over 100 ms is in the server log. The plain rewrite, and the error where
//! columnar is missing, run on the shared test cluster.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use libtest_mimic::{Failed, Trial};
use pglogsink::deadpool_postgres::Pool;
use pglogsink::embedded::EmbeddedPostgres;
use pglogsink::{CancellationToken, Level, Maintenance, Record, SinkConfig, TableName};

use crate::common::{async_trial, block_on, check, fresh_table, pool, url, ToolGate};
use crate::service::{run, text, BIN};

const DAY: Duration = Duration::from_secs(86_400);

pub fn trials() -> Vec<Trial> {
    let citus = ToolGate::new("columnar", citus_missing());
    vec![
        citus.gate(async_trial(
            "columnar::closed_days_convert_and_still_answer_through_indexes",
            closed_days_convert,
        )),
        citus.gate(async_trial(
            "columnar::the_sink_waits_for_no_lock_over_100ms_during_a_conversion",
            no_long_lock_waits,
        )),
        citus.gate(async_trial(
            "columnar::levels_are_dropped_in_the_same_conversion",
            levels_in_the_conversion,
        )),
        citus.gate(async_trial(
            "columnar::a_distributed_log_table_converts_shard_by_shard",
            distributed_conversion,
        )),
        citus.gate(Trial::test(
            "columnar::a_run_killed_or_crashed_midway_leaves_the_partition_as_it_was",
            killed_midway,
        )),
        async_trial(
            "columnar::keep_levels_rewrites_closed_days_without_a_delete",
            keep_levels_plain,
        ),
        async_trial(
            "columnar::without_columnar_maintain_says_what_is_missing",
            without_columnar,
        ),
    ]
}

/// Why the Citus tests cannot run here, if they cannot: the Citus
/// libraries missing from the PostgreSQL the tests start.
fn citus_missing() -> Option<String> {
    let Some(libdir) = pkglibdir() else {
        return Some("no pg_config found for the PostgreSQL the tests start".to_owned());
    };
    let missing: Vec<&str> = ["citus.so", "citus_columnar.so"]
        .into_iter()
        .filter(|lib| !libdir.join(lib).exists())
        .collect();
    (!missing.is_empty()).then(|| {
        format!(
            "Citus is not installed ({} missing from {}; .ci/run installs Citus 13.2)",
            missing.join(", "),
            libdir.display()
        )
    })
}

/// The library directory of the PostgreSQL `EmbeddedPostgres` starts,
/// looked up as it finds its binaries.
fn pkglibdir() -> Option<PathBuf> {
    let mut dirs: Vec<PathBuf> = Vec::new();
    if let Some(dir) = std::env::var_os("PGLOGSINK_PG_BIN").filter(|d| !d.is_empty()) {
        dirs.push(dir.into());
    } else {
        if let Some(path) = std::env::var_os("PATH") {
            dirs.extend(std::env::split_paths(&path).filter(|d| d.join("pg_ctl").exists()));
        }
        let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| Some((e.file_name().to_str()?.parse().ok()?, e.path().join("bin"))))
            .collect();
        versions.sort_by_key(|v| std::cmp::Reverse(v.0));
        dirs.extend(versions.into_iter().map(|(_, dir)| dir));
    }
    let dir = dirs.into_iter().find(|d| d.join("pg_config").exists())?;
    let out = Command::new(dir.join("pg_config"))
        .arg("--pkglibdir")
        .output()
        .ok()?;
    Some(PathBuf::from(text(&out.stdout).trim()))
}

/// A private cluster set up as a Citus server, with lock waits logged.
struct Citus {
    cluster: EmbeddedPostgres,
    url: String,
}

impl Citus {
    /// Start one (on a runtime of its own: callers may be async).
    fn start() -> Result<Citus, Failed> {
        std::thread::spawn(|| {
            let cluster = EmbeddedPostgres::temporary()?;
            block_on(async {
                let pool = pglogsink::pool(cluster.config(), 1)?;
                let client = pool.get().await?;
                for setting in [
                    "shared_preload_libraries = 'citus'",
                    "log_lock_waits = on",
                    "deadlock_timeout = '100ms'",
                    "log_line_prefix = '%m [%p] %a: '",
                ] {
                    client
                        .batch_execute(&format!("ALTER SYSTEM SET {setting}"))
                        .await?;
                }
                Ok(())
            })?;
            // Citus connects to the node it runs on (shards on the
            // coordinator) without the test's password.
            let hba = cluster.data_dir().join("pgdata").join("pg_hba.conf");
            let rules = std::fs::read_to_string(&hba)?;
            std::fs::write(&hba, format!("host all all 127.0.0.1/32 trust\n{rules}"))?;
            cluster.stop_server()?;
            cluster.start_server()?;
            block_on(async {
                let pool = pglogsink::pool(cluster.config(), 1)?;
                pool.get()
                    .await?
                    .batch_execute("SET client_min_messages = warning; CREATE EXTENSION citus")
                    .await?;
                Ok(())
            })?;
            let url = cluster.url();
            Ok(Citus { cluster, url })
        })
        .join()
        .map_err(|_| Failed::from("starting the Citus cluster panicked"))?
    }

    fn pool(&self, size: usize) -> Result<Pool, Failed> {
        Ok(pglogsink::pool(self.cluster.config(), size)?)
    }

    fn log(&self) -> PathBuf {
        self.cluster.data_dir().join("pgdata").join("server.log")
    }
}

/// The Citus cluster the columnar trials share, started on first use.
static SHARED: OnceLock<Result<Mutex<Option<Citus>>, String>> = OnceLock::new();

/// How to reach the shared Citus cluster.
struct Shared {
    url: String,
    config: pglogsink::ConnectConfig,
    pool: Pool,
    log: PathBuf,
}

fn shared() -> Result<Shared, Failed> {
    let citus = SHARED
        .get_or_init(|| {
            Citus::start()
                .map(|c| Mutex::new(Some(c)))
                .map_err(|e| format!("{e:?}"))
        })
        .as_ref()
        .map_err(|e| Failed::from(format!("no Citus cluster: {e}")))?;
    let guard = citus.lock().map_err(|_| "poisoned")?;
    let citus = guard.as_ref().ok_or("the Citus cluster is stopped")?;
    Ok(Shared {
        url: citus.url.clone(),
        config: citus.cluster.config(),
        pool: citus.pool(4)?,
        log: citus.log(),
    })
}

/// Stop the shared Citus cluster, if one was started.
pub fn shutdown() {
    if let Some(Ok(citus)) = SHARED.get() {
        if let Some(citus) = citus.lock().ok().and_then(|mut c| c.take()) {
            if let Err(e) = citus.cluster.stop() {
                eprintln!("stopping the Citus test cluster: {e}");
            }
        }
    }
}

async fn scalar(pool: &Pool, sql: &str) -> Result<i64, Failed> {
    let row = pool.get().await?.query_one(sql, &[]).await;
    Ok(row.map_err(explained)?.try_get(0)?)
}

async fn text_of(pool: &Pool, sql: &str) -> Result<String, Failed> {
    let rows = pool
        .get()
        .await?
        .simple_query(sql)
        .await
        .map_err(explained)?;
    Ok(rows
        .iter()
        .filter_map(|m| match m {
            pglogsink::tokio_postgres::SimpleQueryMessage::Row(r) => r.get(0).map(str::to_owned),
            _ => None,
        })
        .collect::<Vec<_>>()
        .join("\n"))
}

/// The partition of the day `days` before today.
async fn day_partition(pool: &Pool, table: &TableName, days: i32) -> Result<String, Failed> {
    let suffix = text_of(
        pool,
        &format!("SELECT to_char((now() AT TIME ZONE 'UTC') - interval '{days} days', 'YYYYMMDD')"),
    )
    .await?;
    Ok(format!("{}_p{suffix}", table.name()))
}

/// The access method of a partition (`heap`, `columnar`).
async fn access_method(pool: &Pool, partition: &str) -> Result<String, Failed> {
    text_of(
        pool,
        &format!(
            "SELECT a.amname FROM pg_class c JOIN pg_am a ON a.oid = c.relam \
             WHERE c.oid = '{partition}'::regclass"
        ),
    )
    .await
}

/// `table` with today's partition and those of the `days` days before it,
/// each past day holding `per_day` rows of every level in turn, each row
/// with a request id `r<day>-<n>` and every tenth with a trace id; a few
/// rows today. With `distributed`, the table is distributed by Citus (by
/// `id`, 4 shards) before its past days' partitions are made.
async fn table_with_days(
    pool: &Pool,
    table: &TableName,
    days: i32,
    per_day: i32,
    distributed: bool,
) -> Result<(), Failed> {
    pglogsink::migrate(pool, table).await?;
    let t = table.quoted();
    let client = pool.get().await?;
    if distributed {
        client
            .query(
                "SELECT create_distributed_table($1::text::regclass, 'id', shard_count => 4)",
                &[&t],
            )
            .await
            .map_err(explained)?;
    }
    // Named and bounded as maintenance makes them.
    client
        .batch_execute(&format!(
            "DO $days$ DECLARE day timestamptz; BEGIN
             FOR d IN 1..{days} LOOP
                 day := date_trunc('day', now(), 'UTC') - d * interval '1 day';
                 EXECUTE format('CREATE TABLE %I PARTITION OF %s FOR VALUES FROM (%L) TO (%L)',
                     '{name}_p' || to_char(day AT TIME ZONE 'UTC', 'YYYYMMDD'), '{t}',
                     day, day + interval '1 day');
             END LOOP; END $days$",
            name = table.name()
        ))
        .await
        .map_err(explained)?;
    client
        .batch_execute(&format!(
            "INSERT INTO {t} (\"timestamp\", level, target, message, fields)
             SELECT date_trunc('day', now(), 'UTC') - d * interval '1 day'
                    + s * (interval '86399 seconds' / {per_day}),
                    (ARRAY['trace','debug','info','warn','error'])[1 + s % 5]::pglogsink_level,
                    'day' || d, 'day ' || d || ' row ' || s,
                    jsonb_build_object('request_id', 'r' || d || '-' || s)
                    || CASE WHEN s % 10 = 0
                       THEN jsonb_build_object('trace_id', lpad(to_hex(d * 10000000 + s), 32, '0'))
                       ELSE '{{}}' END
             FROM generate_series(1, {days}) d, generate_series(0, {per_day} - 1) s"
        ))
        .await
        .map_err(explained)?;
    client
        .batch_execute(&format!(
            "INSERT INTO {t} (\"timestamp\", level, target, message)
             SELECT now() - s * interval '1 second', 'info', 'today', 'today ' || s
             FROM generate_series(1, 100) s"
        ))
        .await
        .map_err(explained)?;
    client
        .batch_execute(&format!("VACUUM ANALYZE {t}"))
        .await
        .map_err(explained)?;
    Ok(())
}

/// A database error with PostgreSQL's message.
fn explained(e: pglogsink::tokio_postgres::Error) -> Failed {
    pglogsink::admin::describe(&e).to_string().into()
}

fn trace_id(day: i64, row: i64) -> String {
    format!("{:032x}", day * 10_000_000 + row)
}

/// `pglogsink logs <flag> <value>` prints the row whose message is `message`.
fn logs_finds(
    url: &str,
    table: &TableName,
    flag: &str,
    value: &str,
    message: &str,
) -> Result<(), Failed> {
    let out = run(&[
        "logs",
        "--database-url",
        url,
        "--table",
        table.name(),
        "--json",
        flag,
        value,
    ])?;
    check(text(&out.stdout).contains(message), || {
        format!(
            "logs {flag} {value}: {}{}",
            text(&out.stdout),
            text(&out.stderr)
        )
    })
}

fn maintain(url: &str, table: &TableName, flags: &[&str]) -> Result<String, Failed> {
    let mut args = vec!["maintain", "--database-url", url, "--table", table.name()];
    args.extend_from_slice(flags);
    let out = run(&args)?;
    check(out.status.success(), || {
        format!("maintain {flags:?} failed: {}", text(&out.stderr))
    })?;
    Ok(text(&out.stdout))
}

/// Rewrite leftovers of `table` (there must never be any).
async fn leftovers(pool: &Pool, table: &TableName) -> Result<i64, Failed> {
    scalar(
        pool,
        &format!(
            "SELECT count(*) FROM pg_class WHERE relname LIKE '{}%\\_rewrite%'",
            table.name()
        ),
    )
    .await
}

async fn closed_days_convert() -> Result<(), Failed> {
    let Shared { url, pool, .. } = shared()?;
    let table = fresh_table("colconv");
    // Yesterday ended less than a day ago; the three days before it are
    // closed for a day or more.
    table_with_days(&pool, &table, 4, 30_000, false).await?;
    let t = table.quoted();
    let before = scalar(&pool, &format!("SELECT count(*) FROM {t}")).await?;

    let report = maintain(&url, &table, &["--columnar-after", "1d"])?;
    eprintln!("    {}", report.trim());
    check(
        report.matches("as columnar").count() == 3 && report.contains("bytes/row"),
        || format!("expected three conversions with their bytes per row: {report}"),
    )?;
    for days in 0..=4 {
        let partition = day_partition(&pool, &table, days).await?;
        let expected = if days >= 2 { "columnar" } else { "heap" };
        let am = access_method(&pool, &partition).await?;
        check(am == expected, || {
            format!("{partition} is {am}, not {expected}")
        })?;
    }
    let after = scalar(&pool, &format!("SELECT count(*) FROM {t}")).await?;
    check(after == before, || format!("{after} rows, {before} before"))?;
    check(leftovers(&pool, &table).await? == 0, || "leftovers".into())?;

    // Through `logs`, and through the indexes.
    let day3 = day_partition(&pool, &table, 3).await?;
    logs_finds(&url, &table, "--request-id", "r3-777", "day 3 row 777")?;
    logs_finds(
        &url,
        &table,
        "--trace-id",
        &trace_id(3, 770),
        "day 3 row 770",
    )?;
    for (field, value) in [
        ("request_id", "r3-777".to_owned()),
        ("trace_id", trace_id(3, 770)),
    ] {
        let plan = text_of(
            &pool,
            &format!(
                "EXPLAIN SELECT * FROM {t} WHERE fields ? '{field}' AND fields->>'{field}' = '{value}'"
            ),
        )
        .await?;
        check(
            plan.lines()
                .any(|l| l.contains("Index Scan") && l.contains(&format!(" on {day3} "))),
            || format!("{field} on the converted {day3} not through its index:\n{plan}"),
        )?;
    }

    // A recent window never reads converted days; a window inside one
    // skips its chunk groups outside the window.
    let recent = text_of(
        &pool,
        &format!("EXPLAIN SELECT * FROM {t} WHERE \"timestamp\" >= now() - interval '1 hour'"),
    )
    .await?;
    check(!recent.contains(&day3), || format!("not pruned:\n{recent}"))?;
    // As the query layer sends bounds: values, not expressions (columnar
    // skips chunk groups by constants only).
    let at = |hour: i32| {
        format!("date_trunc('day', now(), 'UTC') - interval '3 days' + interval '{hour} hours'")
    };
    let bounds = text_of(
        &pool,
        &format!("SELECT ({}) || '/' || ({})", at(10), at(11)),
    )
    .await?;
    let (from, to) = bounds.split_once('/').ok_or("no bounds")?;
    let window = text_of(
        &pool,
        &format!(
            "EXPLAIN (ANALYZE) SELECT count(*) FROM {t} \
             WHERE \"timestamp\" >= '{from}' AND \"timestamp\" < '{to}'"
        ),
    )
    .await?;
    let removed: i64 = window
        .lines()
        .find_map(|l| {
            l.trim()
                .strip_prefix("Columnar Chunk Groups Removed by Filter: ")
        })
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0);
    check(removed > 0, || format!("no chunk group skipped:\n{window}"))?;

    let again = maintain(&url, &table, &["--columnar-after", "1d"])?;
    check(again.contains("nothing to do"), || {
        format!("second run: {again}")
    })
}

/// Lines of the server log from byte `from` on, by processes of `app`,
/// that report a lock wait past `deadlock_timeout`.
fn lock_waits(log: &Path, from: usize, app: &str) -> Result<Vec<String>, Failed> {
    let all = std::fs::read(log)?;
    let new = text(&all[from.min(all.len())..]);
    Ok(new
        .lines()
        .filter(|l| l.contains(&format!(" {app}: ")) && l.contains("still waiting for"))
        .map(str::to_owned)
        .collect())
}

async fn no_long_lock_waits() -> Result<(), Failed> {
    let Shared {
        config, pool, log, ..
    } = shared()?;
    let table = fresh_table("colwait");
    table_with_days(&pool, &table, 4, 150_000, false).await?;
    // The sink on connections of its own, named in the server log.
    let app = format!("sink_{}", table.name());
    let mut sink_config = config;
    sink_config.set_application_name(&app);
    let sink_pool = pglogsink::pool(sink_config, 3)?;
    let (logger, worker) = pglogsink::spawn(
        sink_pool,
        &SinkConfig {
            table: table.to_string(),
            ..SinkConfig::default()
        },
        CancellationToken::new(),
    )?;
    let stop = CancellationToken::new();
    let writer = {
        let (stop, logger) = (stop.clone(), logger.clone());
        tokio::spawn(async move {
            let mut sent = 0u64;
            while !stop.is_cancelled() {
                for _ in 0..100 {
                    logger.send(Record::new(Level::Info, "writing today").target("writer"))?;
                    sent += 1;
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            Ok::<u64, pglogsink::SendError>(sent)
        })
    };

    // The check can fail: a 400 ms exclusive lock on the table shows up as
    // a wait of the sink in the log.
    let from = std::fs::metadata(&log)?.len() as usize;
    {
        let mut client = pool.get().await?;
        let tx = client.transaction().await?;
        tx.batch_execute(&format!(
            "LOCK TABLE {} IN ACCESS EXCLUSIVE MODE",
            table.quoted()
        ))
        .await?;
        tokio::time::sleep(Duration::from_millis(400)).await;
        tx.commit().await?;
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while lock_waits(&log, from, &app)?.is_empty() {
        check(Instant::now() < deadline, || {
            format!("the control wait of {app} is not in {}", log.display())
        })?;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let from = std::fs::metadata(&log)?.len() as usize;
    let maintenance = Maintenance {
        columnar_after: Some(DAY),
        ..Maintenance::default()
    };
    let report = maintenance.run(&pool, &table).await?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.cancel();
    let sent = writer.await??;
    drop(logger);
    let written = worker.shutdown(Duration::from_secs(30)).await;
    eprintln!(
        "    {report}; the sink wrote {} records meanwhile",
        written.written
    );

    check(report.rewritten.len() == 3, || format!("{report}"))?;
    let waits = lock_waits(&log, from, &app)?;
    check(waits.is_empty(), || {
        format!(
            "the sink waited over 100 ms for a lock:\n{}",
            waits.join("\n")
        )
    })?;
    check(written.is_complete() && written.written == sent, || {
        format!("sent {sent}: {written:?}")
    })?;
    let rows = scalar(
        &pool,
        &format!(
            "SELECT count(*) FROM {} WHERE target = 'writer'",
            table.quoted()
        ),
    )
    .await?;
    check(rows == sent as i64, || format!("{rows} rows of {sent}"))
}

/// Rows of `table` whose target is `day<d>`.
async fn day_rows(pool: &Pool, table: &TableName, d: i32) -> Result<i64, Failed> {
    scalar(
        pool,
        &format!(
            "SELECT count(*) FROM {} WHERE target = 'day{d}'",
            table.quoted()
        ),
    )
    .await
}

async fn levels_in_the_conversion() -> Result<(), Failed> {
    let Shared { url, pool, .. } = shared()?;
    let table = fresh_table("collevels");
    let per_day = 20_000;
    table_with_days(&pool, &table, 3, per_day, false).await?;
    // A rule of N days takes the partitions that ended N days ago: day 3
    // for 2d, days 2 and 3 for 1d.
    let flags = ["--columnar-after", "1d", "--keep-levels-after", "2d=warn"];
    let report = maintain(&url, &table, &flags)?;
    eprintln!("    {}", report.trim());
    // Day 3: columnar, warn and error only (two rows in five); day 2:
    // columnar, every row; yesterday: as it was.
    for (d, rows, am) in [
        (3, per_day * 2 / 5, "columnar"),
        (2, per_day, "columnar"),
        (1, per_day, "heap"),
    ] {
        let partition = day_partition(&pool, &table, d).await?;
        check(access_method(&pool, &partition).await? == am, || {
            format!("{partition} is not {am}")
        })?;
        let n = day_rows(&pool, &table, d).await?;
        check(n == i64::from(rows), || {
            format!("day {d}: {n} rows, not {rows}")
        })?;
    }
    check(
        maintain(&url, &table, &flags)?.contains("nothing to do"),
        || "a second run rewrote again".into(),
    )?;
    // A rule that drops more rewrites again, still columnar.
    let stricter = ["--columnar-after", "1d", "--keep-levels-after", "1d=error"];
    let report = maintain(&url, &table, &stricter)?;
    check(report.matches("rewrote").count() == 2, || report.clone())?;
    for d in [2, 3] {
        let n = day_rows(&pool, &table, d).await?;
        check(n == i64::from(per_day / 5), || format!("day {d}: {n} rows"))?;
        let partition = day_partition(&pool, &table, d).await?;
        check(
            access_method(&pool, &partition).await? == "columnar",
            || format!("{partition} is no longer columnar"),
        )?;
    }
    check(
        maintain(&url, &table, &stricter)?.contains("nothing to do"),
        || "a third run rewrote again".into(),
    )
}

/// The backend copying rows into a new partition of `table`, once one is.
async fn copying_backend(pool: &Pool, table: &TableName) -> Result<i32, Failed> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let rows = pool
            .get()
            .await?
            .query(
                "SELECT pid FROM pg_stat_activity WHERE state = 'active' AND query LIKE $1",
                &[&format!("INSERT INTO \"{}%_rewrite\"%", table.name())],
            )
            .await?;
        if let Some(row) = rows.first() {
            return Ok(row.get(0));
        }
        check(Instant::now() < deadline, || {
            "the copy never started".into()
        })?;
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The partition is as it was: heap, every row, nothing left beside it.
async fn as_it_was(
    pool: &Pool,
    table: &TableName,
    partition: &str,
    rows: i64,
) -> Result<(), Failed> {
    check(access_method(pool, partition).await? == "heap", || {
        format!("{partition} changed")
    })?;
    let n = day_rows(pool, table, 2).await?;
    check(n == rows, || format!("{n} rows of {rows}"))?;
    let left = leftovers(pool, table).await?;
    check(left == 0, || format!("{left} leftovers"))
}

fn killed_midway() -> Result<(), Failed> {
    let citus = Citus::start()?;
    let result = block_on(killed_midway_on(&citus));
    citus.cluster.stop()?;
    result
}

async fn killed_midway_on(citus: &Citus) -> Result<(), Failed> {
    let pool = citus.pool(2)?;
    let table = fresh_table("colkill");
    let per_day = 400_000;
    table_with_days(&pool, &table, 2, per_day, false).await?;
    let partition = day_partition(&pool, &table, 2).await?;
    let args = [
        "maintain",
        "--database-url",
        &citus.url,
        "--table",
        table.name(),
        "--columnar-after",
        "1d",
    ];

    // The maintenance process killed during the copy.
    let mut child = Command::new(BIN)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    let backend = copying_backend(&pool, &table).await?;
    child.kill()?;
    child.wait()?;
    let deadline = Instant::now() + Duration::from_secs(60);
    while scalar(
        &pool,
        &format!("SELECT count(*) FROM pg_stat_activity WHERE pid = {backend}"),
    )
    .await?
        > 0
    {
        check(Instant::now() < deadline, || "its backend went on".into())?;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    as_it_was(&pool, &table, &partition, i64::from(per_day)).await?;

    // The server crashed during the copy (the copying backend killed: the
    // postmaster restarts every session and recovers).
    let mut child = Command::new(BIN)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    let backend = copying_backend(&pool, &table).await?;
    let log = citus.log();
    let from = std::fs::metadata(&log)?.len() as usize;
    // SAFETY: kill(2) of a PostgreSQL backend of this test's own cluster.
    check(unsafe { libc::kill(backend, libc::SIGKILL) } == 0, || {
        "cannot kill the backend".into()
    })?;
    let status = child.wait()?;
    check(!status.success(), || {
        "maintain did not notice the crash".into()
    })?;
    // Every session ends, the server recovers and says it is ready again.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let all = std::fs::read(&log)?;
        let new = text(&all[from.min(all.len())..]);
        let crashed = new.find("terminated by signal 9");
        let ready = new.rfind("database system is ready to accept connections");
        if matches!((crashed, ready), (Some(c), Some(r)) if r > c) {
            break;
        }
        check(Instant::now() < deadline, || {
            format!("the server did not recover:\n{new}")
        })?;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let fresh = citus.pool(2)?;
    as_it_was(&fresh, &table, &partition, i64::from(per_day)).await?;

    // The next run does it.
    let report = maintain(&citus.url, &table, &["--columnar-after", "1d"])?;
    check(report.contains("as columnar"), || report.clone())?;
    check(
        access_method(&fresh, &partition).await? == "columnar",
        || format!("{partition} not converted"),
    )?;
    let n = day_rows(&fresh, &table, 2).await?;
    check(n == i64::from(per_day), || format!("{n} rows"))
}

async fn distributed_conversion() -> Result<(), Failed> {
    let Shared {
        url, config, pool, ..
    } = shared()?;
    // A single-node Citus: the coordinator holds the shards.
    let port = *config.get_ports().first().ok_or("no port")?;
    pool.get()
        .await?
        .batch_execute(&format!(
            "SELECT citus_set_coordinator_host('127.0.0.1', {port}) \
             WHERE NOT EXISTS (SELECT 1 FROM pg_dist_node); \
             SELECT citus_set_node_property('127.0.0.1', {port}, 'shouldhaveshards', true)"
        ))
        .await
        .map_err(explained)?;
    let table = fresh_table("coldist");
    let per_day = 20_000;
    table_with_days(&pool, &table, 3, per_day, true).await?;
    let flags = ["--columnar-after", "1d", "--keep-levels-after", "2d=info"];
    let report = maintain(&url, &table, &flags)?;
    eprintln!("    {}", report.trim());
    check(report.matches("as columnar").count() == 2, || {
        report.clone()
    })?;
    for (d, rows, am) in [
        (3, per_day * 3 / 5, "columnar"),
        (2, per_day, "columnar"),
        (1, per_day, "heap"),
    ] {
        let partition = day_partition(&pool, &table, d).await?;
        check(access_method(&pool, &partition).await? == am, || {
            format!("{partition} is not {am}")
        })?;
        // Each shard, as stored on its node.
        let shards = text_of(
            &pool,
            &format!(
                "SELECT string_agg(result, ',') FROM run_command_on_shards('{partition}', \
                 $$SELECT a.amname FROM pg_class c JOIN pg_am a ON a.oid = c.relam \
                   WHERE c.oid = '%s'::regclass$$)"
            ),
        )
        .await?;
        let expected = [am; 4].join(",");
        check(shards == expected, || {
            format!("{partition}'s shards: {shards}")
        })?;
        let n = day_rows(&pool, &table, d).await?;
        check(n == i64::from(rows), || {
            format!("day {d}: {n} rows, not {rows}")
        })?;
    }
    logs_finds(&url, &table, "--request-id", "r2-777", "day 2 row 777")?;
    check(leftovers(&pool, &table).await? == 0, || "leftovers".into())?;
    check(
        maintain(&url, &table, &flags)?.contains("nothing to do"),
        || "a second run rewrote again".into(),
    )
}

/// Oid of a relation.
async fn oid(pool: &Pool, relation: &str) -> Result<i64, Failed> {
    scalar(pool, &format!("SELECT '{relation}'::regclass::oid::int8")).await
}

async fn keep_levels_plain() -> Result<(), Failed> {
    let pool = pool()?;
    let url = url()?;
    let table = fresh_table("keeplevels");
    let per_day = 5_000;
    table_with_days(&pool, &table, 3, per_day, false).await?;
    let mut oids = Vec::new();
    for d in 1..=3 {
        oids.push(oid(&pool, &day_partition(&pool, &table, d).await?).await?);
    }
    let report = maintain(&url, &table, &["--keep-levels-after", "1d=info"])?;
    eprintln!("    {}", report.trim());
    check(
        report.matches("as heap keeping info and above").count() == 2,
        || report.clone(),
    )?;
    for d in 1..=3 {
        let partition = day_partition(&pool, &table, d).await?;
        let expected = if d == 1 { per_day } else { per_day * 3 / 5 };
        let n = day_rows(&pool, &table, d).await?;
        check(n == i64::from(expected), || {
            format!("day {d}: {n} rows, not {expected}")
        })?;
        let low = scalar(
            &pool,
            &format!(
                "SELECT count(*) FROM {} WHERE target = 'day{d}' AND level < 'info'",
                table.quoted()
            ),
        )
        .await?;
        check((d == 1) == (low > 0), || {
            format!("day {d}: {low} rows below info")
        })?;
        // A new table, not a DELETE: yesterday's is the same one.
        let now = oid(&pool, &partition).await?;
        check((now == oids[d as usize - 1]) == (d == 1), || {
            format!("day {d}: oid {now}, was {}", oids[d as usize - 1])
        })?;
        check(access_method(&pool, &partition).await? == "heap", || {
            format!("{partition} not heap")
        })?;
    }
    // Its time index is summarised: a window reads its block ranges only.
    let day3 = day_partition(&pool, &table, 3).await?;
    let unsummarised = scalar(
        &pool,
        &format!(
            "SELECT sum(brin_summarize_new_values(i.indexrelid))::int8 FROM pg_index i              JOIN pg_class c ON c.oid = i.indexrelid JOIN pg_am a ON a.oid = c.relam              WHERE i.indrelid = '{day3}'::regclass AND a.amname = 'brin'"
        ),
    )
    .await?;
    check(unsummarised == 0, || format!("{unsummarised} ranges left"))?;
    let comment = text_of(
        &pool,
        &format!("SELECT obj_description('{day3}'::regclass)"),
    )
    .await?;
    check(comment.contains("keeps info and above"), || comment.clone())?;

    let again = maintain(&url, &table, &["--keep-levels-after", "1d=info"])?;
    check(again.contains("nothing to do"), || {
        format!("second run: {again}")
    })?;
    let report = maintain(&url, &table, &["--keep-levels-after", "1d=warn"])?;
    check(report.matches("keeping warn").count() == 2, || {
        report.clone()
    })?;
    let n = day_rows(&pool, &table, 3).await?;
    check(n == i64::from(per_day * 2 / 5), || {
        format!("day 3: {n} rows")
    })?;
    // Both commands take the rules, and refuse contradicting ones.
    for command in ["maintain", "serve"] {
        let mut args = vec![command, "--database-url", &url, "--table", table.name()];
        if command == "serve" {
            args.extend(["--listen", "127.0.0.1:0"]);
        }
        args.extend([
            "--keep-levels-after",
            "2d=warn",
            "--keep-levels-after",
            "7d=info",
        ]);
        let wrong = run(&args)?;
        check(
            !wrong.status.success()
                && text(&wrong.stderr).contains("give older ages higher levels"),
            || {
                format!(
                    "{command} with contradicting rules: {}",
                    text(&wrong.stderr)
                )
            },
        )?;
    }
    Ok(())
}

async fn without_columnar() -> Result<(), Failed> {
    let pool = pool()?;
    let url = url()?;
    let table = fresh_table("nocolumnar");
    table_with_days(&pool, &table, 3, 100, false).await?;
    let out = run(&[
        "maintain",
        "--database-url",
        &url,
        "--table",
        table.name(),
        "--columnar-after",
        "1d",
    ])?;
    let err = text(&out.stderr);
    check(!out.status.success(), || "maintain succeeded".into())?;
    check(
        err.contains("citus_columnar") && err.contains("shared_preload_libraries"),
        || format!("the error does not say what is missing: {err}"),
    )?;
    eprintln!("    {}", err.trim());
    let partition = day_partition(&pool, &table, 3).await?;
    check(access_method(&pool, &partition).await? == "heap", || {
        format!("{partition} changed")
    })
}
