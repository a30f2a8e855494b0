//! The Log table on a real Citus cluster: a coordinator and two workers on
//! this machine ([`CitusCluster`]: three private clusters with Citus
//! loaded), always reached with the default sslmode, as an operator's URL
//! would (Citus turns `ssl = on` with a self-signed certificate of its own).
//!
//! One cluster is shared by the tests that leave the workers alone and
//! stopped at the end ([`shutdown`]); the test that kills a worker has a
//! cluster of its own. Without Citus installed these tests are ignored, or
//! fail when tools are required (CI): see [`ToolGate`].

use std::collections::BTreeSet;
use std::process::{Command, Output, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime};

use libtest_mimic::{Failed, Trial};
use pglogsink::deadpool_postgres::Pool;
use pglogsink::embedded::CitusCluster;
use pglogsink::{CancellationToken, Level, Logger, Record, SinkConfig, TableName};
use serde_json::Value;

use crate::common::{block_on, check, fresh_table, ToolGate};
use crate::embedded_supervise::{ok_count, rows_of_run, run_id};
use crate::faults::CommitDropper;
use crate::logs::lines_of;
use crate::service::{http_get, run, text, Serve, BIN};

pub fn trials() -> Vec<Trial> {
    let citus = ToolGate::new("citus", CitusCluster::missing());
    [
        Trial::test(
            "citus::migrate_distribute_is_idempotent_and_names_what_is_missing",
            migrate_distribute,
        ),
        Trial::test(
            "citus::an_unheard_commit_through_the_coordinator_is_written_once",
            || block_on(unheard_commit()),
        ),
        Trial::test(
            "citus::maintain_makes_and_drops_partitions_of_the_distributed_table",
            maintain_partitions,
        ),
        Trial::test(
            "citus::logs_and_the_viewer_api_read_the_distributed_table",
            reads,
        ),
        Trial::test(
            "citus::a_worker_killed_under_load_loses_and_doubles_nothing",
            killed_worker,
        ),
        Trial::test(
            "citus::closed_days_convert_to_columnar_on_the_workers_and_still_answer",
            columnar_days,
        ),
    ]
    .into_iter()
    .map(|trial| citus.gate(trial))
    .collect()
}

/// The cluster the tests share, started by the first one that asks.
static SHARED: OnceLock<Result<Mutex<Option<CitusCluster>>, String>> = OnceLock::new();

fn shared() -> Result<&'static Mutex<Option<CitusCluster>>, Failed> {
    SHARED
        .get_or_init(|| {
            CitusCluster::start(2)
                .map(|cluster| Mutex::new(Some(cluster)))
                .map_err(|e| e.to_string())
        })
        .as_ref()
        .map_err(|e| format!("no Citus cluster: {e}").into())
}

/// The shared coordinator's URL (default sslmode).
fn coordinator_url() -> Result<String, Failed> {
    let cluster = shared()?.lock().map_err(|_| "poisoned")?;
    Ok(cluster.as_ref().ok_or("the cluster was stopped")?.url())
}

/// Stop the shared cluster, if one was started.
pub fn shutdown() {
    if let Some(Ok(cluster)) = SHARED.get() {
        if let Some(cluster) = cluster.lock().ok().and_then(|mut c| c.take()) {
            if let Err(e) = cluster.stop() {
                eprintln!("stopping the Citus test cluster: {e}");
            }
        }
    }
}

fn pool_for(url: &str, size: usize) -> Result<Pool, Failed> {
    Ok(pglogsink::pool(pglogsink::parse_url(url)?, size)?)
}

/// One row of `sql` (which must return one).
async fn one_row(pool: &Pool, sql: &str) -> Result<pglogsink::tokio_postgres::Row, Failed> {
    Ok(pool.get().await?.query_one(sql, &[]).await?)
}

/// The table's partitions, and how many of them (and the table) Citus
/// distributes.
async fn partitions(pool: &Pool, table: &TableName) -> Result<(BTreeSet<String>, i64), Failed> {
    let rows = pool
        .get()
        .await?
        .query(
            "SELECT c.relname::text, EXISTS (SELECT 1 FROM pg_dist_partition p \
                                             WHERE p.logicalrelid = c.oid) \
             FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid \
             WHERE i.inhparent = to_regclass($1)",
            &[&table.quoted()],
        )
        .await?;
    let names = rows.iter().map(|r| r.get::<_, String>(0)).collect();
    let distributed = rows.iter().filter(|r| r.get::<_, bool>(1)).count() as i64;
    Ok((names, distributed))
}

async fn exists(pool: &Pool, relation: &TableName) -> Result<bool, Failed> {
    let row = pool
        .get()
        .await?
        .query_one("SELECT to_regclass($1) IS NOT NULL", &[&relation.quoted()])
        .await?;
    Ok(row.get(0))
}

async fn is_distributed(pool: &Pool, relation: &TableName) -> Result<bool, Failed> {
    let row = pool
        .get()
        .await?
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM pg_dist_partition WHERE logicalrelid = to_regclass($1))",
            &[&relation.quoted()],
        )
        .await?;
    Ok(row.get(0))
}

/// `pglogsink migrate --distribute` for `table` on `url`.
fn migrate_distributed(url: &str, table: &str) -> Result<Output, Failed> {
    run(&[
        "migrate",
        "--database-url",
        url,
        "--table",
        table,
        "--distribute",
    ])
}

fn migrate_distribute() -> Result<(), Failed> {
    let url = coordinator_url()?;
    let table = fresh_table("citus_migrate");
    let name = table.to_string();
    let first = migrate_distributed(&url, &name)?;
    check(
        first.status.success()
            && text(&first.stdout).contains(&format!(
                "table {name} is distributed now by id in 32 shards on 2 nodes"
            )),
        || {
            format!(
                "migrate --distribute: {}{}",
                text(&first.stdout),
                text(&first.stderr)
            )
        },
    )?;
    let again = migrate_distributed(&url, &name)?;
    check(
        again.status.success() && text(&again.stdout).contains("was distributed already by id"),
        || {
            format!(
                "migrate --distribute again: {}{}",
                text(&again.stdout),
                text(&again.stderr)
            )
        },
    )?;
    block_on(async {
        let pool = pool_for(&url, 2)?;
        let encrypted: bool = one_row(
            &pool,
            "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
        )
        .await?
        .get(0);
        check(encrypted, || "the default sslmode did not encrypt".into())?;
        let (names, distributed) = partitions(&pool, &table).await?;
        check(
            names.len() >= 4 && distributed == names.len() as i64,
            || format!("{distributed} of the partitions {names:?} are distributed"),
        )?;
        // The ledger and the rejected rows stay on the coordinator, where
        // the batch's transaction commits its ledger key.
        for side in [table.ledger_table(), table.rejected_table()] {
            check(
                exists(&pool, &side).await? && !is_distributed(&pool, &side).await?,
                || format!("{side} should be a plain table on the coordinator"),
            )?;
        }
        // A table distributed by hand, by another column, is left alone.
        let by_hand = fresh_table("citus_by_hand");
        pglogsink::migrate(&pool, &by_hand).await?;
        pool.get()
            .await?
            .batch_execute(&format!(
                "SELECT create_distributed_table('{}', 'timestamp')",
                by_hand.quoted()
            ))
            .await?;
        let left = pglogsink::distribute(&pool, &by_hand, &Default::default()).await?;
        check(!left.changed && left.column == "timestamp", || {
            format!("{left:?}")
        })
    })?;

    // A worker, and a server without Citus loaded: refused, saying what is
    // missing, with nothing made.
    let worker = {
        let cluster = shared()?.lock().map_err(|_| "poisoned")?;
        cluster.as_ref().ok_or("stopped")?.worker_url(0)?
    };
    let plain = crate::common::url()?;
    for (url, said) in [
        (worker.as_str(), "this server is a Citus worker"),
        (plain.as_str(), "distributing needs Citus"),
    ] {
        let other = fresh_table("citus_refused");
        let name = other.to_string();
        let out = migrate_distributed(url, &name)?;
        check(
            !out.status.success() && text(&out.stderr).contains(said),
            || format!("expected {said:?}: {}", text(&out.stderr)),
        )?;
        let made = block_on_value(async { exists(&pool_for(url, 1)?, &other).await })?;
        check(!made, || {
            format!("{name} was made although distributing was refused")
        })?;
    }
    Ok(())
}

/// Run an async body that returns a value, on a runtime of its own.
fn block_on_value<T>(f: impl std::future::Future<Output = Result<T, Failed>>) -> Result<T, Failed> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(f)
}

/// The COMMIT reply lost between the sink and the coordinator, three
/// times: the coordinator committed the batch's rows on the workers (two
/// phases) and its ledger key locally in one transaction, so the retry
/// finds the key and writes nothing twice.
async fn unheard_commit() -> Result<(), Failed> {
    let url = coordinator_url()?;
    let direct = pool_for(&url, 2)?;
    let table = fresh_table("citus_unheard");
    pglogsink::distribute(&direct, &table, &Default::default()).await?;
    let config = pglogsink::parse_url(&url)?;
    let port = *config.get_ports().first().ok_or("no port")?;
    let proxy = CommitDropper::start(port, 3)?;
    // The same URL through the proxy, sslmode still at its default.
    let through_proxy = url.replace(&format!(":{port}/"), &format!(":{}/", proxy.port));
    let sink_pool = pool_for(&through_proxy, 2)?;
    let sink_config = SinkConfig {
        table: table.to_string(),
        batch_size: 100,
        retry_initial: Duration::from_millis(20),
        retry_max: Duration::from_millis(300),
        ..SinkConfig::default()
    };
    let (logger, worker) = pglogsink::spawn(sink_pool, &sink_config, CancellationToken::new())?;
    for round in 0..5u64 {
        log_numbered(&logger, round * 200, 200)?;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let report = worker.shutdown(Duration::from_secs(30)).await;
    proxy.settled(&report, 3, 1000)?;
    let row = one_row(
        &direct,
        &format!(
            "SELECT count(*), count(DISTINCT fields->>'n') FROM {}",
            table.quoted()
        ),
    )
    .await?;
    let (rows, distinct): (i64, i64) = (row.get(0), row.get(1));
    check(rows == 1000 && distinct == 1000, || {
        format!("{rows} rows, {distinct} distinct, expected 1000 exactly once")
    })
}

/// Log `n` records numbered `from..from+n` (field `n`).
fn log_numbered(logger: &Logger, from: u64, n: u64) -> Result<(), Failed> {
    for i in from..from + n {
        logger.send(Record::new(Level::Info, format!("record {i}")).field("n", i))?;
    }
    Ok(())
}

/// `maintain` on a distributed table: the partitions it makes ahead, and
/// the one it makes for a row waiting in DEFAULT, are distributed too
/// (Citus distributes what is attached to a distributed parent); the one
/// past retention is dropped with its shards.
fn maintain_partitions() -> Result<(), Failed> {
    let url = coordinator_url()?;
    let table = fresh_table("citus_maintain");
    let pool = pool_for(&url, 2)?;
    let (old, future) = block_on_value(async {
        pglogsink::distribute(&pool, &table, &Default::default()).await?;
        // A day ten days ago, made as an older pglogsink would have made it.
        let row = one_row(
            &pool,
            &format!(
                "SELECT to_char(d, 'YYYYMMDD'), format('CREATE TABLE %I PARTITION OF {} FOR \
                 VALUES FROM (%L) TO (%L)', '{}_p' || to_char(d, 'YYYYMMDD'), \
                 d::timestamp AT TIME ZONE 'UTC', (d + 1)::timestamp AT TIME ZONE 'UTC') \
                 FROM (SELECT (now() AT TIME ZONE 'UTC')::date - 10 AS d) day",
                table.quoted(),
                table
            ),
        )
        .await?;
        let (day, create): (String, String) = (row.get(0), row.get(1));
        let client = pool.get().await?;
        client.batch_execute(&create).await?;
        // A row ten days old, and one six days ahead (past the premade
        // partitions: it waits in DEFAULT).
        client
            .batch_execute(&format!(
                "INSERT INTO {t} (\"timestamp\", level, target, message) VALUES \
                 (now() - interval '10 days', 'info', 'app', 'old'), \
                 (now() + interval '6 days', 'info', 'app', 'ahead')",
                t = table.quoted()
            ))
            .await?;
        let ahead: String = one_row(
            &pool,
            "SELECT to_char((now() AT TIME ZONE 'UTC') + interval '6 days', 'YYYYMMDD')",
        )
        .await?
        .get(0);
        Ok((
            TableName::parse(&format!("{table}_p{day}"))?,
            TableName::parse(&format!("{table}_p{ahead}"))?,
        ))
    })?;
    let name = table.to_string();
    let out = run(&[
        "maintain",
        "--database-url",
        &url,
        "--table",
        &name,
        "--premake",
        "7",
        "--retention",
        "5d",
    ])?;
    let said = text(&out.stdout);
    check(out.status.success(), || {
        format!("maintain: {said}{}", text(&out.stderr))
    })?;
    check(
        said.contains(&old.to_string()) && said.contains(&future.to_string()),
        || format!("maintain should name {old} (dropped) and {future} (made): {said}"),
    )?;
    block_on(async {
        check(!exists(&pool, &old).await?, || {
            format!("{old} was not dropped")
        })?;
        let left: i64 = one_row(
            &pool,
            &format!("SELECT count(*) FROM pg_dist_shard WHERE logicalrelid::text = '{old}'"),
        )
        .await?
        .get(0);
        check(left == 0, || format!("{left} shards of {old} are left"))?;
        let (names, distributed) = partitions(&pool, &table).await?;
        check(
            names.len() >= 9 && distributed == names.len() as i64,
            || format!("{distributed} of the partitions {names:?} are distributed"),
        )?;
        let row = one_row(
            &pool,
            &format!(
                "SELECT (SELECT count(*) FROM {f} WHERE message = 'ahead'), \
                        (SELECT count(*) FROM {t}_default), (SELECT count(*) FROM {t})",
                f = future.quoted(),
                t = table
            ),
        )
        .await?;
        let (moved, in_default, all): (i64, i64, i64) = (row.get(0), row.get(1), row.get(2));
        check(moved == 1 && in_default == 0 && all == 1, || {
            format!("ahead in its partition {moved}, in DEFAULT {in_default}, rows {all}")
        })
    })
}

/// `maintain --columnar-after 1d` on a distributed Log table with three
/// closed days: every shard of those days on the workers becomes columnar,
/// `--request-id` and `--trace-id` still find their rows there, and a
/// second run changes nothing.
fn columnar_days() -> Result<(), Failed> {
    let url = coordinator_url()?;
    let table = fresh_table("citus_closed");
    let name = table.to_string();
    let pool = pool_for(&url, 2)?;
    let days: Vec<String> = block_on_value(async {
        pglogsink::distribute(&pool, &table, &Default::default()).await?;
        let mut days = Vec::new();
        for ago in 2..=4u64 {
            let base = SystemTime::now() - Duration::from_secs(ago * 86_400);
            let day: String = one_row(
                &pool,
                &format!(
                    "SELECT to_char(now() AT TIME ZONE 'UTC' - interval '{ago} days', 'YYYYMMDD')"
                ),
            )
            .await?
            .get(0);
            pool.get()
                .await?
                .batch_execute(&format!(
                    "CREATE TABLE IF NOT EXISTS {t}_p{day} PARTITION OF {t} FOR VALUES FROM \
                     ('{d} 00:00:00+00') TO ('{d} 00:00:00+00'::timestamptz + interval '1 day')",
                    t = table,
                    d = format!("{}-{}-{}", &day[..4], &day[4..6], &day[6..])
                ))
                .await?;
            write_rows(&pool, &table, base, ago * 1000..ago * 1000 + 300).await?;
            days.push(day);
        }
        Ok(days)
    })?;
    let maintain = || {
        run(&[
            "maintain",
            "--database-url",
            &url,
            "--table",
            &name,
            "--columnar-after",
            "1d",
        ])
    };
    let out = maintain()?;
    let said = text(&out.stdout);
    check(out.status.success(), || {
        format!("maintain --columnar-after: {said}{}", text(&out.stderr))
    })?;
    let columnar_shards = block_on_value(async {
        let mut counts = Vec::new();
        for day in &days {
            let row = one_row(
                &pool,
                &format!(
                    "SELECT count(*) FILTER (WHERE result = 't'), count(*) FROM \
                     run_command_on_placements('{table}_p{day}', $$SELECT \
                     (SELECT amname FROM pg_am a JOIN pg_class c ON c.relam = a.oid \
                      WHERE c.oid = '%s'::regclass) = 'columnar'$$)"
                ),
            )
            .await?;
            counts.push((row.get::<_, i64>(0), row.get::<_, i64>(1)));
        }
        Ok(counts)
    })?;
    eprintln!("    columnar placements per closed day (columnar, all): {columnar_shards:?}");
    check(
        columnar_shards
            .iter()
            .all(|&(columnar, all)| all > 0 && columnar == all),
        || format!("not every placement is columnar: {columnar_shards:?}; maintain said {said}"),
    )?;
    let written = || (2..=4u64).flat_map(|ago| ago * 1000..ago * 1000 + 300);
    let by_request = written().filter(|i| i % 25 == 7).count();
    let by_trace = written().filter(|i| i % 11 == 3).count();
    for (flag, value, expected) in [
        ("--request-id", "req-7".to_owned(), by_request),
        ("--trace-id", trace_id(3), by_trace),
    ] {
        let started = Instant::now();
        let out = Command::new(BIN)
            .args([
                "logs",
                "--json",
                "--limit",
                "1000",
                "--database-url",
                &url,
                "--table",
                &name,
            ])
            .args([flag, value.as_str()])
            .env_remove("DATABASE_URL")
            .output()?;
        let rows = text(&out.stdout).lines().count();
        eprintln!(
            "    logs {flag} on converted days: {rows} rows in {:?}",
            started.elapsed()
        );
        check(rows == expected, || {
            format!(
                "logs {flag} {value}: {rows} rows, expected {expected}: {}",
                text(&out.stderr)
            )
        })?;
    }
    // The lookup itself, on an open connection (the `logs` runs above
    // include starting a process and Citus opening its worker connections).
    let lookup = block_on_value(async {
        let client = pool.get().await?;
        let sql = format!(
            "SELECT count(*) FROM {} WHERE fields->>'request_id' = 'req-7'",
            table.quoted()
        );
        client.query_one(&sql, &[]).await?;
        let started = Instant::now();
        let rows: i64 = client.query_one(&sql, &[]).await?.get(0);
        let default = started.elapsed();
        client
            .batch_execute("SET citus.max_cached_conns_per_worker = 16")
            .await?;
        client.query_one(&sql, &[]).await?;
        let started = Instant::now();
        client.query_one(&sql, &[]).await?;
        Ok((rows, default, started.elapsed()))
    })?;
    eprintln!("    request-id lookup on an open connection: {lookup:?}");
    let again = maintain()?;
    let said = text(&again.stdout);
    check(
        again.status.success() && said.contains("nothing to do"),
        || format!("a second run changed something: {said}"),
    )
}

/// Rows with known request and trace ids, written by a sink through the
/// coordinator; then `logs` and the viewer's `/api/logs` answer newest,
/// grep, request id, trace id, and `logs --follow` prints new rows once.
fn reads() -> Result<(), Failed> {
    let url = coordinator_url()?;
    let table = fresh_table("citus_reads");
    let pool = pool_for(&url, 4)?;
    let name = table.to_string();
    let base = SystemTime::now() - Duration::from_secs(600);
    block_on(async {
        pglogsink::distribute(&pool, &table, &Default::default()).await?;
        write_rows(&pool, &table, base, 0..300).await
    })?;

    let logs = |args: &[&str]| -> Result<Vec<Value>, Failed> {
        let out = Command::new(BIN)
            .args(["logs", "--json", "--database-url", &url, "--table", &name])
            .args(args)
            .env_remove("DATABASE_URL")
            .output()?;
        check(out.status.success(), || {
            format!("logs {args:?}: {}", text(&out.stderr))
        })?;
        text(&out.stdout)
            .lines()
            .map(|line| Ok(serde_json::from_str(line)?))
            .collect()
    };
    let trace = trace_id(3);
    let cases: [(&[&str], Vec<u64>); 4] = [
        (&["--limit", "3"], vec![297, 298, 299]),
        (&["--grep", "citus row 123"], vec![123]),
        (
            &["--request-id", "req-7"],
            (0..300).filter(|i| i % 25 == 7).collect(),
        ),
        (
            &["--trace-id", &trace],
            (0..300).filter(|i| i % 11 == 3).collect(),
        ),
    ];
    for (args, expected) in &cases {
        let got = numbers(&logs(args)?)?;
        check(got == *expected, || {
            format!("logs {args:?}: got {got:?}, expected {expected:?}")
        })?;
    }

    let mut serve = Serve::start(&["--database-url", &url, "--table", &name], &[])?;
    let api = [
        ("/api/logs?limit=3".to_owned(), vec![299, 298, 297]),
        ("/api/logs?grep=citus+row+123".to_owned(), vec![123]),
        (
            "/api/logs?request_id=req-7".to_owned(),
            (0..300).rev().filter(|i| i % 25 == 7).collect(),
        ),
        (
            format!("/api/logs?trace_id={trace}"),
            (0..300).rev().filter(|i| i % 11 == 3).collect(),
        ),
    ];
    for (path, expected) in &api {
        let (status, body) = http_get(&serve.addr, path)?;
        let page: Value = serde_json::from_str(&body)?;
        let rows = page["rows"].as_array().cloned().unwrap_or_default();
        let got = numbers(&rows)?;
        check(status == 200 && got == *expected, || {
            format!("{path}: {status}, got {got:?}, expected {expected:?}: {body}")
        })?;
    }
    serve.signal("-INT")?;
    serve.wait()?;

    follow(&url, &name, &pool, &table, base)
}

/// `logs --follow` through the coordinator: the newest row first, then
/// every row written after it, each once.
fn follow(
    url: &str,
    name: &str,
    pool: &Pool,
    table: &TableName,
    base: SystemTime,
) -> Result<(), Failed> {
    let mut child = Command::new(BIN)
        .args(["logs", "--json", "--follow", "--limit", "1"])
        .args(["--database-url", url, "--table", name])
        .env_remove("DATABASE_URL")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let rx = lines_of(&mut child)?;
    let result = (|| {
        let next = |timeout: Duration| -> Result<u64, Failed> {
            let line = rx
                .recv_timeout(timeout)
                .map_err(|e| format!("logs --follow printed nothing within {timeout:?}: {e}"))?;
            numbers(&[serde_json::from_str(&line)?])?
                .first()
                .copied()
                .ok_or_else(|| format!("no row number in {line}").into())
        };
        let first = next(Duration::from_secs(30))?;
        check(first == 299, || {
            format!("follow began with row {first}, not 299")
        })?;
        block_on(write_rows(pool, table, base, 300..400))?;
        let mut seen = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        while seen.len() < 100 && Instant::now() < deadline {
            seen.push(next(Duration::from_secs(30))?);
        }
        seen.sort_unstable();
        check(seen == (300..400).collect::<Vec<_>>(), || {
            format!("follow printed {} rows: {seen:?}", seen.len())
        })?;
        std::thread::sleep(Duration::from_millis(1500));
        check(rx.try_recv().is_err(), || {
            "follow printed a row twice".into()
        })
    })();
    let _ = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status();
    let status = child.wait()?;
    result?;
    check(status.success(), || {
        format!("logs --follow exited {status}")
    })
}

/// Row `i` of the reads test: message `citus row {i}`, request id
/// `req-{i % 25}`, trace id number `i % 11`, one millisecond after row
/// `i - 1`.
async fn write_rows(
    pool: &Pool,
    table: &TableName,
    base: SystemTime,
    rows: std::ops::Range<u64>,
) -> Result<(), Failed> {
    let config = SinkConfig {
        table: table.to_string(),
        ..SinkConfig::default()
    };
    let (logger, worker) = pglogsink::spawn(pool.clone(), &config, CancellationToken::new())?;
    let count = rows.end - rows.start;
    for i in rows {
        logger.send(
            Record::new(Level::Info, format!("citus row {i}"))
                .target("citus")
                .field("i", i)
                .field("request_id", format!("req-{}", i % 25))
                .field("trace_id", trace_id(i % 11))
                .at(base + Duration::from_millis(i)),
        )?;
    }
    let report = worker.shutdown(Duration::from_secs(30)).await;
    check(report.is_complete() && report.written == count, || {
        format!("{report:?}")
    })
}

/// A 32-hex-digit trace id made of `n`.
fn trace_id(n: u64) -> String {
    format!("{n:032x}")
}

/// The row numbers (field `i`) of JSON rows, in their order.
fn numbers(rows: &[Value]) -> Result<Vec<u64>, Failed> {
    rows.iter()
        .map(|row| {
            row["fields"]["i"]
                .as_u64()
                .ok_or_else(|| format!("no field i in {row}").into())
        })
        .collect()
}

/// `serve` through the coordinator under `load --verify`; one worker
/// killed (SIGKILL to its postmaster and every backend) 3 s in and started
/// again 5 s later. serve keeps running; every acknowledged request's row
/// is there exactly once, by count and by distinct request id.
fn killed_worker() -> Result<(), Failed> {
    let cluster = CitusCluster::start(2)?;
    let url = cluster.url();
    let table = fresh_table("citus_kill");
    let name = table.to_string();
    let migrate = migrate_distributed(&url, &name)?;
    check(migrate.status.success(), || text(&migrate.stderr))?;
    let db = ["--database-url", url.as_str(), "--table", name.as_str()];
    let mut serve = Serve::start(&db, &[])?;
    let load = Command::new(BIN)
        .args([
            "load",
            "--url",
            &serve.url(),
            "--duration",
            "12",
            "--concurrency",
            "8",
        ])
        .args(["--verify", "--verify-timeout", "120"])
        .args(db)
        .env_remove("DATABASE_URL")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    std::thread::sleep(Duration::from_secs(3));
    cluster.kill_worker(0)?;
    std::thread::sleep(Duration::from_secs(5));
    cluster.start_worker(0)?;
    // Transactions the coordinator committed while the worker's prepared
    // part could not be told: Citus finishes them within
    // citus.recover_2pc_interval (a minute); do it now instead of waiting.
    block_on(async {
        pool_for(&url, 1)?
            .get()
            .await?
            .batch_execute("SELECT recover_prepared_transactions()")
            .await?;
        Ok(())
    })?;
    let load = load.wait_with_output()?;
    let stdout = text(&load.stdout);
    let alive = serve.pid().is_ok() && http_get(&serve.addr, "/healthz").is_ok();
    serve.signal("-TERM")?;
    let served = serve.wait()?;
    let stderr = text(&served.stderr);
    check(alive && served.status.success(), || {
        format!("serve stopped: {:?}\n{stderr}", served.status)
    })?;
    check(load.status.success() && stdout.contains(": OK"), || {
        format!("load --verify: {stdout}{}", text(&load.stderr))
    })?;
    let run_id = run_id(&stdout)?;
    let acknowledged = ok_count(&stdout)?;
    let (rows, distinct) = rows_of_run(pglogsink::parse_url(&url)?, &table, &run_id)?;
    check(rows == acknowledged && distinct == rows, || {
        format!("{acknowledged} requests acknowledged, {rows} rows, {distinct} request ids")
    })?;
    let retries = retries_in(&stderr)?;
    check(retries > 0, || {
        format!("no write was retried: did the kill reach the sink?\n{stderr}")
    })?;
    eprintln!(
        "    worker killed and restarted: {acknowledged} requests, {rows} rows, {distinct} \
         request ids, {retries} retries"
    );
    cluster.stop()?;
    Ok(())
}

/// The `(N retries)` of serve's last line.
fn retries_in(stderr: &str) -> Result<u64, Failed> {
    stderr
        .rsplit_once(" retries)")
        .and_then(|(before, _)| before.rsplit_once('(').map(|(_, n)| n))
        .and_then(|n| n.trim().parse().ok())
        .ok_or_else(|| format!("no retry count in serve's output:\n{stderr}").into())
}
