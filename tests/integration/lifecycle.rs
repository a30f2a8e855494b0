//! The Log table's lifecycle: partitions made ahead, retention that drops
//! whole partitions while a COPY stream keeps running, records with skewed
//! clocks, the upgrade of the old shape in place, least-privilege roles, and
//! `--follow` with commits out of id order.

use std::time::{Duration, Instant};

use libtest_mimic::{Failed, Trial};
use pglogsink::admin::query::{Filter, Reader};
use pglogsink::deadpool_postgres::Pool;
use pglogsink::tokio_postgres;
use pglogsink::{CancellationToken, Level, Maintenance, Record, SinkConfig, TableName};

use crate::common::{
    async_trial, check, check_time, config, copy_lines, fresh_table, insert_one, pool,
};
use crate::service::{http_get, Serve, BIN};

const DAY: Duration = Duration::from_secs(86_400);

pub fn trials() -> Vec<Trial> {
    vec![
        async_trial(
            "lifecycle::retention_drops_whole_partitions_while_copy_goes_on",
            retention_drops_whole_partitions,
        ),
        async_trial(
            "lifecycle::instances_maintaining_at_once_take_turns",
            concurrent_maintenance,
        ),
        async_trial(
            "lifecycle::search_index_goes_on_closed_partitions_only",
            search_index,
        ),
        async_trial(
            "lifecycle::maintenance_stopped_inside_create_index_concurrently_closes_its_connection",
            stopped_inside_create_index,
        ),
        Trial::test(
            "lifecycle::a_row_a_day_since_1970_leaves_a_month_of_partitions",
            a_row_a_day_since_1970,
        ),
        async_trial(
            "lifecycle::records_from_skewed_clocks_are_stored",
            skewed_clocks,
        ),
        async_trial(
            "lifecycle::upgrade_in_place_under_writes_keeps_every_row",
            upgrade_in_place,
        ),
        async_trial(
            "lifecycle::follow_sees_rows_committed_out_of_id_order",
            follow_out_of_order,
        ),
        async_trial(
            "lifecycle::follow_shows_a_long_writers_rows_once_it_commits_and_others_meanwhile",
            follow_long_writer,
        ),
        Trial::test(
            "lifecycle::serve_as_an_insert_only_role_and_maintain_as_the_owner",
            least_privilege,
        ),
    ]
}

async fn scalar(pool: &Pool, sql: &str) -> Result<i64, Failed> {
    Ok(pool.get().await?.query_one(sql, &[]).await?.get(0))
}

async fn partitions_of(pool: &Pool, table: &TableName) -> Result<Vec<String>, Failed> {
    Ok(pool
        .get()
        .await?
        .query(
            "SELECT c.relname::text FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid \
             WHERE i.inhparent = $1::text::regclass ORDER BY 1",
            &[&table.quoted()],
        )
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect())
}

/// Bytes of the table but today's partition (which the test writes to).
async fn size_but_today(pool: &Pool, table: &TableName) -> Result<i64, Failed> {
    scalar(
        pool,
        &format!(
            "SELECT sum(pg_total_relation_size(relid))::int8 FROM pg_partition_tree('{}') \
             WHERE relid::text NOT LIKE '%\\_p' || to_char(now() AT TIME ZONE 'UTC', 'YYYYMMDD')",
            table.quoted()
        ),
    )
    .await
}

/// Rows at noon (UTC) of each of the `days` days before today.
fn noon_rows(table: &TableName, days: i32, per_day: i32) -> String {
    format!(
        "INSERT INTO {} (\"timestamp\", level, target, message) \
         SELECT date_trunc('day', now(), 'UTC') - d * interval '1 day' + interval '12 hours' \
                + s * interval '1 millisecond', 'info', 'old', 'day ' || d \
         FROM generate_series(1, {days}) d, generate_series(1, {per_day}) s",
        table.quoted()
    )
}

/// Binary-free COPY of `rows` rows stamped now, in a transaction that may
/// wait at most 100 ms for any lock: an error here is a lock wait over that.
async fn copy_now(
    client: &mut tokio_postgres::Client,
    table: &TableName,
    rows: usize,
) -> Result<(), tokio_postgres::Error> {
    let tx = client.transaction().await?;
    tx.batch_execute("SET LOCAL lock_timeout = '100ms'").await?;
    copy_lines(&tx, table, "now\tinfo\twriter\tcopy stream", rows).await?;
    tx.commit().await
}

async fn retention_drops_whole_partitions() -> Result<(), Failed> {
    let pool = pool()?;
    let table = fresh_table("ret");
    pglogsink::migrate(&pool, &table).await?;
    pool.get()
        .await?
        .batch_execute(&noon_rows(&table, 40, 250))
        .await?;
    // The 40 past days went to DEFAULT; maintenance reaching 50 days back
    // gives each its partition.
    let moved = Maintenance {
        max_age: 50 * DAY,
        ..Maintenance::default()
    }
    .run(&pool, &table)
    .await?;
    check(
        moved.moved_from_default == 10_000 && moved.created.len() == 40,
        || format!("{moved}"),
    )?;
    let before = size_but_today(&pool, &table).await?;

    // A COPY stream into today's partition for the whole maintenance run.
    let stop = CancellationToken::new();
    let writer = {
        let (stop, table) = (stop.clone(), table.clone());
        let mut client = pool.get().await?;
        tokio::spawn(async move {
            let mut batches = 0u64;
            while !stop.is_cancelled() {
                copy_now(&mut client, &table, 200).await?;
                batches += 1;
            }
            Ok::<u64, tokio_postgres::Error>(batches)
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    let started = Instant::now();
    let retention = Maintenance {
        retention: Some(30 * DAY),
        ..Maintenance::default()
    };
    let report = retention.run(&pool, &table).await?;
    let took = started.elapsed();
    tokio::time::sleep(Duration::from_millis(200)).await;
    stop.cancel();
    let batches = writer
        .await?
        .map_err(|e| format!("the COPY stream waited over 100 ms for a lock: {e}"))?;
    eprintln!(
        "    retention 30d: {} partitions dropped in {took:?} while {batches} COPYs of 200 rows ran",
        report.dropped.len()
    );

    check(report.dropped.len() == 10, || format!("{report}"))?;
    check(report.postponed.is_empty(), || format!("{report}"))?;
    let old_rows = scalar(
        &pool,
        &format!(
            "SELECT count(*) FROM {} WHERE target = 'old'",
            table.quoted()
        ),
    )
    .await?;
    check(old_rows == 30 * 250, || {
        format!("{old_rows} old rows left; expected the 30 newest days")
    })?;
    let oldest_day = scalar(
        &pool,
        &format!(
            "SELECT max(substr(message, 5)::int)::int8 FROM {} WHERE target = 'old'",
            table.quoted()
        ),
    )
    .await?;
    check(oldest_day == 30, || {
        format!("day {oldest_day} is still there")
    })?;
    let written = scalar(
        &pool,
        &format!(
            "SELECT count(*) FROM {} WHERE target = 'writer'",
            table.quoted()
        ),
    )
    .await?;
    check(written == batches as i64 * 200, || {
        format!(
            "{written} rows of the COPY stream, expected {}",
            batches * 200
        )
    })?;
    // A quarter of the old days is gone, and with them about a quarter of
    // the bytes (the premade partitions' empty indexes stay).
    let after = size_but_today(&pool, &table).await?;
    check((after as f64) < before as f64 * 0.85, || {
        format!("size {before} -> {after}")
    })?;
    let names = partitions_of(&pool, &table).await?;
    check(names.len() == 40 - 10 + 4 + 1, || format!("{names:?}"))
}

/// Four instances run maintenance on one table at the same moment, with
/// twenty days of rows waiting in DEFAULT: no error, every day gets exactly
/// one partition with its rows, and the work is not done twice.
async fn concurrent_maintenance() -> Result<(), Failed> {
    let pool = pool()?;
    let table = fresh_table("conc");
    pglogsink::migrate(&pool, &table).await?;
    pool.get()
        .await?
        .batch_execute(&noon_rows(&table, 20, 50))
        .await?;
    let runs = (0..4).map(|_| {
        let (pool, table) = (pool.clone(), table.clone());
        tokio::spawn(async move { Maintenance::default().run(&pool, &table).await })
    });
    let mut created = Vec::new();
    let mut moved = 0;
    for run in runs {
        let report = run.await??;
        created.extend(report.created.clone());
        moved += report.moved_from_default;
    }
    created.sort();
    let distinct = {
        let mut d = created.clone();
        d.dedup();
        d
    };
    check(
        created.len() == 20 && distinct.len() == 20 && moved == 1_000,
        || format!("created {created:?}, moved {moved}"),
    )?;
    let in_default = scalar(
        &pool,
        &format!("SELECT count(*) FROM \"{}_default\"", table.name()),
    )
    .await?;
    let total = scalar(&pool, &format!("SELECT count(*) FROM {}", table.quoted())).await?;
    check(in_default == 0 && total == 1_000, || {
        format!("{in_default} rows left in DEFAULT, {total} in all")
    })
}

async fn search_index() -> Result<(), Failed> {
    let pool = pool()?;
    let table = fresh_table("trgm");
    pglogsink::migrate(&pool, &table).await?;
    pool.get()
        .await?
        .batch_execute(&noon_rows(&table, 3, 100))
        .await?;
    let maintenance = Maintenance {
        search_index: true,
        ..Maintenance::default()
    };
    let report = maintenance.run(&pool, &table).await?;
    // The three past days got partitions (moved out of DEFAULT), then their
    // search index; today's partition and those ahead get none.
    check(report.search_indexed.len() == 3, || format!("{report}"))?;
    let indexed: Vec<String> = pool
        .get()
        .await?
        .query(
            "SELECT t.relname::text FROM pg_index i JOIN pg_class x ON x.oid = i.indexrelid \
             JOIN pg_class t ON t.oid = i.indrelid JOIN pg_inherits h ON h.inhrelid = t.oid \
             WHERE h.inhparent = $1::text::regclass AND x.relname LIKE '%\\_message\\_trgm' \
             AND i.indisvalid ORDER BY 1",
            &[&table.quoted()],
        )
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    check(indexed == report.search_indexed, || {
        format!("valid trigram indexes on {indexed:?}; the report says {report}")
    })?;
    let today = partitions_of(&pool, &table)
        .await?
        .into_iter()
        .filter(|p| !indexed.contains(p) && !p.ends_with("_default"))
        .count();
    check(today == 4, || {
        format!("{today} partitions without the index")
    })?;
    let again = maintenance.run(&pool, &table).await?;
    check(again.search_indexed.is_empty(), || format!("{again}"))?;
    // A grep over those days finds its rows (through the index or not).
    let mut client = pool.get().await?;
    let rows = Reader::new(table.clone())
        .newest(
            &mut client,
            &Filter {
                grep: Some("DAY 2".into()),
                ..Filter::default()
            },
            500,
        )
        .await?;
    check(rows.len() == 100, || {
        format!("{} rows for day 2", rows.len())
    })
}

/// `serve` stopping drops its maintenance run; one dropped while its
/// `CREATE INDEX CONCURRENTLY` waits must not hand that busy connection to
/// the next user of the pool (the sink, draining).
async fn stopped_inside_create_index() -> Result<(), Failed> {
    let pool = pglogsink::pool(config()?, 1)?;
    let watcher = crate::common::pool()?;
    let table = fresh_table("cic");
    pglogsink::migrate(&pool, &table).await?;
    pool.get()
        .await?
        .batch_execute(&noon_rows(&table, 1, 100))
        .await?;
    Maintenance::default().run(&pool, &table).await?;
    // A snapshot held open: the index build waits for it to end.
    let mut holder = watcher.get().await?;
    let snapshot = holder
        .build_transaction()
        .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
        .start()
        .await?;
    snapshot.batch_execute("SELECT 1").await?;
    let maintenance = Maintenance {
        search_index: true,
        ..Maintenance::default()
    };
    let run = maintenance.run(&pool, &table);
    let building = async {
        let sql = "SELECT count(*) FROM pg_stat_activity \
                   WHERE state = 'active' AND query LIKE 'CREATE INDEX CONCURRENTLY%'";
        while scalar(&watcher, sql).await? == 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok::<(), Failed>(())
    };
    tokio::select! {
        outcome = run => return Err(format!("the run ended on its own: {outcome:?}").into()),
        waited = tokio::time::timeout(Duration::from_secs(30), building) => {
            waited.map_err(|_| "the index build never started")??;
        }
    }
    // The run is dropped here, mid-statement. The pool's one connection
    // answers at once: the busy one was not given back.
    let answered = tokio::time::timeout(Duration::from_secs(5), async {
        scalar(&pool, "SELECT 1::int8").await
    })
    .await;
    snapshot.rollback().await?;
    check(matches!(answered, Ok(Ok(1))), || {
        format!("the pool's connection did not answer within 5 s: {answered:?}")
    })
}

async fn skewed_clocks() -> Result<(), Failed> {
    let pool = pool()?;
    let table = fresh_table("skew");
    pglogsink::migrate(&pool, &table).await?;
    let sink_config = SinkConfig {
        table: table.to_string(),
        ..SinkConfig::default()
    };
    let token = CancellationToken::new();
    let (logger, worker) = pglogsink::spawn(pool.clone(), &sink_config, token.clone())?;
    let now = std::time::SystemTime::now();
    logger.send(Record::new(Level::Info, "three years ago").at(now - 3 * 365 * DAY))?;
    logger.send(Record::new(Level::Info, "two days ahead").at(now + 2 * DAY))?;
    let report = worker.shutdown(Duration::from_secs(10)).await;
    check(report.written == 2 && report.fatal.is_none(), || {
        format!("{report:?}")
    })?;
    check(!token.is_cancelled(), || "the sink stopped the app".into())?;
    let places: Vec<(String, String)> = pool
        .get()
        .await?
        .query(
            &format!(
                "SELECT tableoid::regclass::text, message FROM {} ORDER BY \"timestamp\"",
                table.quoted()
            ),
            &[],
        )
        .await?
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    check(
        places[0].0.ends_with("_default") && !places[1].0.ends_with("_default"),
        || format!("{places:?}: the old one in DEFAULT, the future one in its premade partition"),
    )?;
    // Three years is past the partition window: the record stays in
    // DEFAULT, and the report says so; a window reaching that far gives it
    // its own partition.
    let report = Maintenance::default().run(&pool, &table).await?;
    check(
        report.moved_from_default == 0 && report.kept_in_default == 1,
        || format!("{report}"),
    )?;
    let report = Maintenance {
        max_age: 4 * 365 * DAY,
        ..Maintenance::default()
    }
    .run(&pool, &table)
    .await?;
    check(
        report.moved_from_default == 1 && report.kept_in_default == 0,
        || format!("{report}"),
    )
}

/// The body: one NDJSON line per day since 1970 through `serve`,
/// then `pglogsink maintain`. The rows are all kept and readable; only the
/// partition window's days (30 back, 3 ahead) get partitions, and maintain
/// is done in seconds (it made 10,141 partitions in 6.5 minutes and went
/// on, before the window).
fn a_row_a_day_since_1970() -> Result<(), Failed> {
    let mut server = crate::ingest::Server::start(&[])?;
    let today = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs()
        / 86_400;
    let days = today + 1;
    let body: String = (0..days)
        .map(|d| format!("{{\"timestamp\":{},\"message\":\"day {d}\"}}\n", d * 86_400))
        .collect();
    let reply = server.post(
        "/ingest/ndjson",
        &[("content-type", "application/x-ndjson")],
        body.as_bytes(),
    )?;
    check(reply.status == 200, || reply.text())?;
    let out = server.stop()?;
    check(out.status.success(), || {
        String::from_utf8_lossy(&out.stderr).into_owned()
    })?;
    let table = server.table.to_string();
    let started = Instant::now();
    let maintain = std::process::Command::new(BIN)
        .args(["maintain", "--database-url", &crate::common::url()?])
        .args(["--table", &table])
        .env_remove("DATABASE_URL")
        .output()?;
    let took = started.elapsed();
    let report = String::from_utf8_lossy(&maintain.stdout).into_owned();
    check(maintain.status.success(), || {
        format!("{report}{}", String::from_utf8_lossy(&maintain.stderr))
    })?;
    crate::common::block_on(async {
        let pool = pool()?;
        let partitions = partitions_of(&pool, &server.table).await?;
        let rows = scalar(
            &pool,
            &format!("SELECT count(*) FROM {}", server.table.quoted()),
        )
        .await?;
        let in_default = scalar(
            &pool,
            &format!("SELECT count(*) FROM \"{}_default\"", server.table.name()),
        )
        .await?;
        eprintln!(
            "    {days} rows, a day apart since 1970: maintain took {took:.2?}, {} partitions \
             (DEFAULT included), {in_default} rows left in DEFAULT",
            partitions.len()
        );
        check(rows == days as i64, || format!("{rows} rows of {days}"))?;
        check(partitions.len() <= 60, || {
            format!("{} partitions: {partitions:?}", partitions.len())
        })?;
        check(in_default == days as i64 - 31, || {
            format!("{in_default} rows in DEFAULT; expected all but the 31 newest days'")
        })?;
        check_time(
            "maintain after a row a day since 1970",
            took,
            Duration::from_secs(60),
        )?;
        check(report.contains("outside the partition window"), || {
            report.clone()
        })
    })
}

async fn upgrade_in_place() -> Result<(), Failed> {
    let pool = pool()?;
    let table = fresh_table("upg");
    {
        let client = pool.get().await?;
        client
            .batch_execute(&format!(
                "BEGIN; SELECT set_config('pglogsink.table', '{table}', true); {} COMMIT;",
                include_str!("../fixtures/old_shape.sql")
            ))
            .await?;
        client.batch_execute(&noon_rows(&table, 10, 2_000)).await?;
    }
    // Writers keep writing through the upgrade.
    let sink_config = SinkConfig {
        table: table.to_string(),
        batch_size: 500,
        ..SinkConfig::default()
    };
    let token = CancellationToken::new();
    let (logger, worker) = pglogsink::spawn(pool.clone(), &sink_config, token.clone())?;
    let producer = {
        let logger = logger.clone();
        tokio::spawn(async move {
            let mut sent = 0u64;
            for i in 0..40_000 {
                if logger.log(Level::Info, format!("during {i}")).is_ok() {
                    sent += 1;
                }
                if i % 1_000 == 0 {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            }
            sent
        })
    };
    tokio::time::sleep(Duration::from_millis(30)).await;
    let done = pglogsink::upgrade(&pool, &table, &Maintenance::default()).await?;
    let sent = producer.await?;
    let report = worker.shutdown(Duration::from_secs(30)).await;
    check(report.written == sent && report.fatal.is_none(), || {
        format!("sent {sent}: {report:?}")
    })?;
    check(matches!(done, pglogsink::Upgrade::Upgraded { .. }), || {
        format!("{done:?}")
    })?;
    let kind = scalar(
        &pool,
        &format!(
            "SELECT (relkind = 'p')::int::int8 FROM pg_class WHERE oid = '{}'::regclass",
            table.quoted()
        ),
    )
    .await?;
    check(kind == 1, || "not partitioned".into())?;
    let (rows, distinct_ids) = {
        let row = pool
            .get()
            .await?
            .query_one(
                &format!(
                    "SELECT count(*), count(DISTINCT id) FROM {}",
                    table.quoted()
                ),
                &[],
            )
            .await?;
        (row.get::<_, i64>(0), row.get::<_, i64>(1))
    };
    check(rows == 20_000 + sent as i64 && distinct_ids == rows, || {
        format!("{rows} rows, {distinct_ids} distinct ids; expected 20000 + {sent}")
    })?;
    // The old table became a partition without a copy: its indexes were
    // adopted, and the new shape's come along.
    let names = partitions_of(&pool, &table).await?;
    check(names.iter().any(|n| n.ends_with("_legacy")), || {
        format!("{names:?}")
    })?;
    // Adopted, not built again under the lock: its primary key, its old
    // "timestamp" and warn indexes, and the three built concurrently.
    let legacy_indexes: Vec<String> = pool
        .get()
        .await?
        .query(
            "SELECT indexdef FROM pg_indexes WHERE tablename = $1 ORDER BY 1",
            &[&format!("{}_legacy", table.name())],
        )
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    check(legacy_indexes.len() == 6, || format!("{legacy_indexes:#?}"))?;
    // Upgrading again is a no-op; maintenance works on the result.
    let again = pglogsink::upgrade(&pool, &table, &Maintenance::default()).await?;
    check(again == pglogsink::Upgrade::AlreadyPartitioned, || {
        format!("{again:?}")
    })?;
    Maintenance::default().run(&pool, &table).await?;
    Ok(())
}

async fn follow_out_of_order() -> Result<(), Failed> {
    let pool = pool()?;
    let table = fresh_table("fol");
    pglogsink::migrate(&pool, &table).await?;
    let insert = |message: &str| insert_one(&table, message);
    let mut reader_client = pool.get().await?;
    let reader = Reader::new(table.clone());
    pool.get().await?.batch_execute(&insert("before")).await?;
    let (newest, mut follower) = reader
        .follow(&mut reader_client, &Filter::default(), 10)
        .await?;
    check(newest.len() == 1, || format!("{newest:?}"))?;

    // A takes the lower id but commits after B.
    let mut slow = pool.get().await?;
    let slow_tx = slow.transaction().await?;
    slow_tx.batch_execute(&insert("slow A")).await?;
    pool.get().await?.batch_execute(&insert("fast B")).await?;
    let first = follower.poll(&mut reader_client).await?;
    check(
        first.iter().map(|r| r.message.as_str()).eq(["fast B"]),
        || format!("{first:?}"),
    )?;
    slow_tx.commit().await?;
    let mut later = Vec::new();
    for _ in 0..3 {
        later.extend(follower.poll(&mut reader_client).await?);
    }
    check(
        later.iter().map(|r| r.message.as_str()).eq(["slow A"]),
        || format!("after A's commit: {later:?}"),
    )?;
    check(later[0].id < first[0].id, || "A has the lower id".into())
}

/// The owner creates the table; `serve` runs as a role that may only write
/// rows (no CREATE on the schema): it starts, logs, and its maintenance
/// timer warns once and counts the failure; `maintain` as the owner works.
fn least_privilege() -> Result<(), Failed> {
    let table = fresh_table("lp");
    let role = format!("{}_w", table.name());
    let owner_url = crate::common::url()?;
    crate::common::block_on(async {
        let pool = pool()?;
        pglogsink::migrate(&pool, &table).await?;
        let t = table.quoted();
        pool.get()
            .await?
            .batch_execute(&format!(
                "CREATE ROLE {role} LOGIN PASSWORD 'pw';
                 GRANT USAGE ON SCHEMA public TO {role};
                 GRANT INSERT ON {t} TO {role};
                 GRANT USAGE ON SEQUENCE \"{name}_id_seq\" TO {role};
                 GRANT SELECT, INSERT, DELETE ON {l} TO {role};
                 GRANT INSERT ON {r} TO {role};
                 INSERT INTO {t} (\"timestamp\", level, target, message)
                     VALUES (now() - interval '5 days', 'info', 'late', 'replayed from a spool');",
                name = table.name(),
                l = table.ledger_table().quoted(),
                r = table.rejected_table().quoted()
            ))
            .await?;
        Ok(())
    })?;
    let mut as_role = config()?;
    as_role.set_user(&role).set_password("pw");
    let host = match &as_role.get_hosts()[0] {
        tokio_postgres::config::Host::Tcp(h) => h.clone(),
        tokio_postgres::config::Host::Unix(p) => p.display().to_string(),
    };
    let role_url = format!(
        "postgres://{role}:pw@{host}:{}/{}",
        as_role.get_ports()[0],
        as_role.get_dbname().unwrap_or("postgres")
    );
    let table_arg = table.to_string();
    let mut serve = Serve::start(
        &["--database-url", &role_url, "--table", &table_arg],
        &["--maintenance-interval", "1s", "--retention", "30d"],
    )?;
    for n in 0..5 {
        let (status, _) = http_get(&serve.addr, &format!("/recipes/{n}"))?;
        check(status == 200, || format!("GET /recipes/{n}: {status}"))?;
    }
    // The run at start and at least two on the timer each fail for want of
    // privilege (counted every time, warned about once).
    serve.wait_for_metric(
        "pglogsink_maintenance_failures_total{reason=\"privilege\"}",
        3,
    )?;
    serve.signal("-INT")?;
    let out = serve.wait()?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    check(out.status.success(), || format!("serve failed: {stderr}"))?;
    let warnings = stderr.matches("maintenance of table").count();
    check(warnings == 1, || {
        format!("{warnings} maintenance warnings:\n{stderr}")
    })?;
    check(stderr.contains("owner"), || {
        format!("the warning says who can: {stderr}")
    })?;

    let maintain = std::process::Command::new(BIN)
        .args([
            "maintain",
            "--database-url",
            &owner_url,
            "--table",
            &table_arg,
        ])
        .env_remove("DATABASE_URL")
        .output()?;
    let said = String::from_utf8_lossy(&maintain.stdout);
    check(
        maintain.status.success() && said.contains("moved 1 row"),
        || format!("{said}{}", String::from_utf8_lossy(&maintain.stderr)),
    )?;
    crate::common::block_on(async {
        let rows = scalar(
            &pool()?,
            &format!(
                "SELECT count(*) FROM {} WHERE target = 'recipes'",
                table.quoted()
            ),
        )
        .await?;
        check(rows == 5, || format!("{rows} request rows"))
    })
}

/// A writer holding rows (one in a subtransaction) uncommitted across many
/// polls while other transactions commit 30,000 rows: those are shown as
/// they commit, the writer's once it commits, none twice; and what the
/// follower tracks stays one entry for it.
async fn follow_long_writer() -> Result<(), Failed> {
    let pool = pool()?;
    let table = fresh_table("folw");
    pglogsink::migrate(&pool, &table).await?;
    let insert = |message: &str| insert_one(&table, message);
    let mut reader_client = pool.get().await?;
    let reader = Reader::new(table.clone());
    let (_, mut follower) = reader
        .follow(&mut reader_client, &Filter::default(), 10)
        .await?;
    let mut long = pool.get().await?;
    let long_tx = long.transaction().await?;
    long_tx
        .batch_execute(&format!(
            "{}; SAVEPOINT s; {}; RELEASE s",
            insert("long first"),
            insert("long in a savepoint")
        ))
        .await?;
    let mut shown = Vec::new();
    for batch in 0..30 {
        pool.get()
            .await?
            .batch_execute(&format!(
                "INSERT INTO {} (\"timestamp\", level, target, message) \
                 SELECT now(), 'info', 't', 'other ' || {batch} || '.' || i FROM generate_series(1, 1000) i",
                table.quoted()
            ))
            .await?;
        shown.extend(follower.poll(&mut reader_client).await?);
    }
    for _ in 0..5 {
        shown.extend(follower.poll(&mut reader_client).await?);
    }
    let others = shown
        .iter()
        .filter(|r| r.message.starts_with("other"))
        .count();
    check(others == 30_000 && shown.len() == 30_000, || {
        format!("{others} other rows of 30000 shown, {} in all", shown.len())
    })?;
    long_tx.commit().await?;
    for _ in 0..3 {
        shown.extend(follower.poll(&mut reader_client).await?);
    }
    let long_rows: Vec<&str> = shown
        .iter()
        .filter(|r| r.message.starts_with("long"))
        .map(|r| r.message.as_str())
        .collect();
    let mut ids: Vec<i64> = shown.iter().map(|r| r.id).collect();
    ids.sort_unstable();
    ids.dedup();
    check(
        long_rows == ["long first", "long in a savepoint"] && ids.len() == shown.len(),
        || {
            format!(
                "the long writer's rows: {long_rows:?}; {} shown, {} distinct",
                shown.len(),
                ids.len()
            )
        },
    )
}
