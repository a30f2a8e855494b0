//! The sink against a real PostgreSQL: rows, batching, NUL bytes, shutdown,
//! fatal errors, and a server that goes away and comes back.

use std::time::{Duration, Instant};

use libtest_mimic::{Failed, Trial};
use pglogsink::embedded::EmbeddedPostgres;
use pglogsink::{CancellationToken, Level, Logger, Record, SinkConfig, TableName};
use serde_json::json;

use crate::common::{async_trial, check, check_time, count, fresh_table, pool};

pub fn trials() -> Vec<Trial> {
    vec![
        async_trial(
            "sink::rows_have_every_column_as_logged",
            rows_have_every_column_as_logged,
        ),
        async_trial(
            "sink::many_producers_nothing_lost_nothing_doubled",
            many_producers,
        ),
        async_trial(
            "sink::batches_take_what_is_queued_up_to_the_batch_size",
            batches_take_what_is_queued,
        ),
        async_trial(
            "sink::records_logged_just_before_shutdown_are_written",
            logged_just_before_shutdown,
        ),
        async_trial(
            "sink::nul_bytes_are_replaced_not_fatal",
            nul_bytes_are_replaced,
        ),
        async_trial("sink::odd_text_round_trips", odd_text_round_trips),
        async_trial(
            "sink::several_sinks_share_one_table_with_ledgers_and_spools_of_their_own",
            several_sinks_one_table,
        ),
        async_trial(
            "sink::missing_table_is_fatal_and_cancels_the_app",
            missing_table_is_fatal,
        ),
        async_trial(
            "sink::missing_privilege_is_fatal",
            missing_privilege_is_fatal,
        ),
        async_trial(
            "sink::migrate_is_idempotent_with_a_schema",
            migrate_is_idempotent,
        ),
        Trial::test(
            "sink::server_restart_loses_nothing",
            server_restart_loses_nothing,
        ),
        Trial::test(
            "sink::shutdown_with_server_down_reports_not_written",
            shutdown_with_server_down,
        ),
    ]
}

async fn migrated(prefix: &str) -> Result<(pglogsink::deadpool_postgres::Pool, TableName), Failed> {
    let pool = pool()?;
    let table = fresh_table(prefix);
    pglogsink::migrate(&pool, &table).await?;
    Ok((pool, table))
}

fn config(table: &TableName) -> SinkConfig {
    SinkConfig {
        table: table.to_string(),
        ..SinkConfig::default()
    }
}

async fn rows_have_every_column_as_logged() -> Result<(), Failed> {
    let (pool, table) = migrated("cols").await?;
    let token = CancellationToken::new();
    let (logger, worker) = pglogsink::spawn(pool.clone(), &config(&table), token.clone())?;
    let before = std::time::SystemTime::now();
    logger.send(
        Record::new(Level::Warn, "disk almost full")
            .target("storage::disk")
            .field("free_mb", 12)
            .field("ratio", 0.5)
            .field("ok", false)
            .field("mount", "/var")
            .field("tags", json!(["a", 1])),
    )?;
    logger.log(Level::Info, "plain")?;
    let other = logger.clone();
    std::thread::spawn(move || other.log(Level::Info, "from another thread"))
        .join()
        .map_err(|_| "producer thread panicked")??;
    let report = worker.shutdown(Duration::from_secs(10)).await;
    check(report.is_complete() && report.written == 3, || {
        format!("{report:?}")
    })?;
    check(!token.is_cancelled(), || {
        "the app token was cancelled without a fatal error".into()
    })?;

    let client = pool.get().await?;
    let rows = client
        .query(
            &format!(
                // By message, not id: with two COPYs in flight, rows of
                // batches written at once may take their ids in either order.
                r#"SELECT level::text, target, message, thread_id, fields, "timestamp"
                   FROM {} ORDER BY message"#,
                table.quoted()
            ),
            &[],
        )
        .await?;
    check(rows.len() == 3, || format!("{} rows", rows.len()))?;
    let level: String = rows[0].get(0);
    let target: String = rows[0].get(1);
    let message: String = rows[0].get(2);
    let thread: i64 = rows[0].get(3);
    let fields: serde_json::Value = rows[0].get(4);
    let ts: std::time::SystemTime = rows[0].get(5);
    check(level == "warn", || format!("level {level}"))?;
    check(target == "storage::disk", || format!("target {target}"))?;
    check(message == "disk almost full", || {
        format!("message {message}")
    })?;
    // "disk almost full", "from another thread", "plain".
    let other_thread: i64 = rows[1].get(3);
    let same_thread: i64 = rows[2].get(3);
    check(
        thread > 0 && thread == same_thread && other_thread != thread,
        || format!("thread ids {thread}, {same_thread}, {other_thread}"),
    )?;
    check(
        fields
            == json!({"free_mb": 12, "ratio": 0.5, "ok": false, "mount": "/var", "tags": ["a", 1]}),
        || format!("fields {fields}"),
    )?;
    let skew = ts.duration_since(before).unwrap_or_default();
    check(
        ts >= before - Duration::from_millis(1) && skew < Duration::from_secs(5),
        || format!("timestamp {ts:?} vs {before:?}"),
    )?;
    let target2: String = rows[1].get(1);
    let fields2: Option<serde_json::Value> = rows[1].get(4);
    check(target2 == "app" && fields2.is_none(), || {
        format!("default target {target2}, fields {fields2:?}")
    })
}

async fn many_producers() -> Result<(), Failed> {
    const THREADS: usize = 4;
    const PER_THREAD: usize = 25_000;
    let (pool, table) = migrated("many").await?;
    let (logger, worker) =
        pglogsink::spawn(pool.clone(), &config(&table), CancellationToken::new())?;
    let producers: Vec<_> = (0..THREADS)
        .map(|t| {
            let logger = logger.clone();
            std::thread::spawn(move || {
                for i in 0..PER_THREAD {
                    let record = Record::new(Level::Info, format!("record {i} of thread {t}"))
                        .field("t", t as u64)
                        .field("i", i as u64);
                    if logger.send(record).is_err() {
                        return Err(format!("thread {t}: the sink closed at record {i}"));
                    }
                }
                Ok(())
            })
        })
        .collect();
    for p in producers {
        p.join().map_err(|_| "a producer panicked")??;
    }
    let report = worker.shutdown(Duration::from_secs(30)).await;
    let expected = (THREADS * PER_THREAD) as u64;
    check(report.is_complete() && report.written == expected, || {
        format!("{report:?}")
    })?;
    let client = pool.get().await?;
    let row = client
        .query_one(
            &format!(
                "SELECT count(*), count(DISTINCT (fields->>'t', fields->>'i')) FROM {}",
                table.quoted()
            ),
            &[],
        )
        .await?;
    let (rows, distinct): (i64, i64) = (row.get(0), row.get(1));
    check(rows == expected as i64 && distinct == rows, || {
        format!("{rows} rows, {distinct} distinct, expected {expected}")
    })
}

async fn batches_take_what_is_queued() -> Result<(), Failed> {
    let (pool, table) = migrated("batch").await?;
    let cfg = SinkConfig {
        batch_size: 10,
        ..config(&table)
    };
    // A burst like `load`'s default 77 concurrent requests: 77 records
    // arrive at once; batches are at most 10.
    let (logger, worker) = pglogsink::spawn(pool.clone(), &cfg, CancellationToken::new())?;
    for i in 0..77 {
        logger.log(Level::Debug, format!("GET /recipes/{i}"))?;
    }
    let report = worker.shutdown(Duration::from_secs(10)).await;
    check(report.written == 77 && report.is_complete(), || {
        format!("{report:?}")
    })?;
    check(report.batches >= 8, || {
        format!("77 records in {} batches of at most 10", report.batches)
    })?;
    check(count(&pool, &table).await? == 77, || "row count".into())
}

async fn logged_just_before_shutdown() -> Result<(), Failed> {
    let (pool, table) = migrated("last").await?;
    let (logger, worker) =
        pglogsink::spawn(pool.clone(), &config(&table), CancellationToken::new())?;
    for i in 0..5_000 {
        logger.log(Level::Info, format!("late {i}"))?;
    }
    // No wait at all between the last log() and shutdown.
    let report = worker.shutdown(Duration::from_secs(10)).await;
    check(report.written == 5_000 && report.is_complete(), || {
        format!("{report:?}")
    })?;
    check(count(&pool, &table).await? == 5_000, || "row count".into())?;
    match logger.log(Level::Info, "after shutdown") {
        Err(pglogsink::SendError::Closed(record)) => {
            check(record.message() == "after shutdown", || {
                "the record was not handed back".into()
            })
        }
        Err(other) => Err(format!("expected Closed, got {other}").into()),
        Ok(()) => Err("log() after shutdown succeeded".into()),
    }
}

async fn nul_bytes_are_replaced() -> Result<(), Failed> {
    let (pool, table) = migrated("nul").await?;
    let (logger, worker) =
        pglogsink::spawn(pool.clone(), &config(&table), CancellationToken::new())?;
    logger.send(Record::new(Level::Info, "a\0b").field("k", "v\0"))?;
    logger.log(Level::Info, "clean")?;
    let report = worker.shutdown(Duration::from_secs(10)).await;
    check(report.written == 2 && report.nul_replaced == 1, || {
        format!("{report:?}")
    })?;
    let client = pool.get().await?;
    let row = client
        .query_one(
            &format!(
                "SELECT message, fields->>'k' FROM {} WHERE message <> 'clean'",
                table.quoted()
            ),
            &[],
        )
        .await?;
    let (message, k): (String, String) = (row.get(0), row.get(1));
    check(message == "a\u{FFFD}b" && k == "v\u{FFFD}", || {
        format!("{message:?} {k:?}")
    })
}

async fn odd_text_round_trips() -> Result<(), Failed> {
    let (pool, table) = migrated("odd").await?;
    let (logger, worker) =
        pglogsink::spawn(pool.clone(), &config(&table), CancellationToken::new())?;
    let samples = [
        "'; DROP TABLE log; --".to_owned(),
        "\\.\n\\N\t\r\u{7}".to_owned(),
        "emoji \u{1F600} cjk \u{4E2D} rtl \u{05D0} astral \u{10FFFF}".to_owned(),
        "x".repeat(300_000),
    ];
    for s in &samples {
        logger.send(Record::new(Level::Error, s.clone()).field(s.clone(), s.clone()))?;
    }
    let report = worker.shutdown(Duration::from_secs(10)).await;
    check(
        report.is_complete() && report.written == samples.len() as u64,
        || format!("{report:?}"),
    )?;
    let client = pool.get().await?;
    let rows = client
        .query(
            // Byte order, as Rust sorts the samples: not id order, which
            // batches written at once may take either way.
            &format!(
                r#"SELECT message, fields FROM {} ORDER BY message COLLATE "C""#,
                table.quoted()
            ),
            &[],
        )
        .await?;
    let mut samples = samples;
    samples.sort();
    for (row, sample) in rows.iter().zip(&samples) {
        let message: String = row.get(0);
        let fields: serde_json::Value = row.get(1);
        check(&message == sample, || {
            format!("message differs for sample of {} bytes", sample.len())
        })?;
        check(fields[sample.as_str()] == json!(sample), || {
            "field differs".into()
        })?;
    }
    Ok(())
}

async fn missing_table_is_fatal() -> Result<(), Failed> {
    let pool = pool()?;
    let table = fresh_table("missing");
    let token = CancellationToken::new();
    let (logger, worker) = pglogsink::spawn(pool, &config(&table), token.clone())?;
    logger.log(Level::Info, "into the void")?;
    tokio::time::timeout(Duration::from_secs(5), token.cancelled())
        .await
        .map_err(|_| "the app token was not cancelled within 5 s")?;
    check(logger.log(Level::Info, "after").is_err(), || {
        "log() still accepted records".into()
    })?;
    let report = worker.shutdown(Duration::from_secs(5)).await;
    let fatal = report
        .fatal
        .as_ref()
        .ok_or("no fatal error in the report")?;
    check(fatal.sqlstate() == Some("42P01"), || format!("{fatal}"))?;
    check(fatal.to_string().contains("pglogsink migrate"), || {
        format!("{fatal}")
    })?;
    check(report.written == 0 && report.not_written == 1, || {
        format!("{report:?}")
    })
}

async fn missing_privilege_is_fatal() -> Result<(), Failed> {
    let (pool, table) = migrated("priv").await?;
    let role = format!("{}_writer", table.name());
    let client = pool.get().await?;
    client
        .batch_execute(&format!(
            "CREATE ROLE {role} LOGIN PASSWORD 'pw'; GRANT USAGE ON SCHEMA public TO {role}; \
             GRANT SELECT ON {} TO {role};",
            table.quoted()
        ))
        .await?;
    let mut cfg = crate::common::config()?;
    cfg.set_user(&role).set_password("pw");
    let weak = pglogsink::pool(cfg, 2)?;
    let token = CancellationToken::new();
    let (logger, worker) = pglogsink::spawn(weak, &config(&table), token.clone())?;
    logger.log(Level::Info, "not allowed")?;
    tokio::time::timeout(Duration::from_secs(5), token.cancelled())
        .await
        .map_err(|_| "the app token was not cancelled within 5 s")?;
    let report = worker.shutdown(Duration::from_secs(5)).await;
    let fatal = report
        .fatal
        .as_ref()
        .ok_or("no fatal error in the report")?;
    check(
        fatal.sqlstate() == Some("42501") && fatal.hint().contains("GRANT INSERT"),
        || format!("{fatal}"),
    )?;
    check(count(&pool, &table).await? == 0, || {
        "rows were written".into()
    })
}

/// Four sinks (as four instances would run) write one table at once, each
/// with a spool directory of its own: every record once, each sink's report
/// complete, each sink's batches under its own instance id in the ledger.
async fn several_sinks_one_table() -> Result<(), Failed> {
    let (pool, table) = migrated("k4").await?;
    const PER_SINK: u64 = 5_000;
    let spools: Vec<std::path::PathBuf> = (0..4)
        .map(|k| std::env::temp_dir().join(format!("pglogsink-k4-{}-{k}", std::process::id())))
        .collect();
    let mut workers = Vec::new();
    for (k, spool) in spools.iter().enumerate() {
        let config = SinkConfig {
            table: table.to_string(),
            batch_size: 200,
            spool_dir: Some(spool.clone()),
            ..SinkConfig::default()
        };
        let (logger, worker) = pglogsink::spawn(
            pglogsink::pool(crate::common::config()?, 2)?,
            &config,
            CancellationToken::new(),
        )?;
        let producer = std::thread::spawn(move || {
            for i in 0..PER_SINK {
                let record = Record::new(Level::Info, format!("sink {k} record {i}"))
                    .field("sink", k as u64)
                    .field("i", i);
                if logger.send(record).is_err() {
                    return false;
                }
            }
            true
        });
        workers.push((producer, worker));
    }
    let mut batches = 0;
    for (producer, worker) in workers {
        check(producer.join().unwrap_or(false), || "a send failed".into())?;
        let report = worker.shutdown(Duration::from_secs(30)).await;
        check(report.written == PER_SINK && report.is_complete(), || {
            format!("{report:?}")
        })?;
        batches += report.batches;
    }
    let client = pool.get().await?;
    let row = client
        .query_one(
            &format!(
                "SELECT count(*), count(DISTINCT (fields->>'sink', fields->>'i')) FROM {}",
                table.quoted()
            ),
            &[],
        )
        .await?;
    let (rows, distinct): (i64, i64) = (row.get(0), row.get(1));
    check(rows == 4 * PER_SINK as i64 && distinct == rows, || {
        format!("{rows} rows, {distinct} distinct")
    })?;
    let ledger = client
        .query_one(
            &format!(
                "SELECT count(DISTINCT instance), count(*), sum(rows)::int8 FROM {}",
                table.ledger_table().quoted()
            ),
            &[],
        )
        .await?;
    let (instances, ledger_rows, ledger_sum): (i64, i64, i64) =
        (ledger.get(0), ledger.get(1), ledger.get(2));
    check(
        instances == 4 && ledger_rows == batches as i64 && ledger_sum == rows,
        || {
            format!("ledger: {instances} instances, {ledger_rows} batches ({batches} reported), {ledger_sum} rows")
        },
    )?;
    for spool in &spools {
        let _ = std::fs::remove_dir_all(spool);
    }
    Ok(())
}

async fn migrate_is_idempotent() -> Result<(), Failed> {
    let pool = pool()?;
    let schema = format!("s_{}", fresh_table("x").name());
    pool.get()
        .await?
        .batch_execute(&format!("CREATE SCHEMA {schema}"))
        .await?;
    let table = TableName::parse(&format!("{schema}.app_log"))?;
    pglogsink::migrate(&pool, &table).await?;
    pglogsink::migrate(&pool, &table).await?;
    let (logger, worker) =
        pglogsink::spawn(pool.clone(), &config(&table), CancellationToken::new())?;
    logger.log(Level::Error, "in a schema")?;
    let report = worker.shutdown(Duration::from_secs(10)).await;
    check(report.written == 1, || format!("{report:?}"))?;
    let client = pool.get().await?;
    let row = client
        .query_one(
            &format!(
                "SELECT count(*) FILTER (WHERE level >= 'warn') FROM {}",
                table.quoted()
            ),
            &[],
        )
        .await?;
    check(row.get::<_, i64>(0) == 1, || "level ordering in SQL".into())?;
    let indexes: Vec<String> = client
        .query(
            "SELECT indexdef FROM pg_indexes WHERE schemaname = $1 AND tablename = 'app_log' \
             ORDER BY indexname",
            &[&schema],
        )
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    check(indexes.len() == 4, || {
        format!("expected the BRIN index on time and id, the warn, the request id and the trace id index: {indexes:#?}")
    })?;
    check(
        indexes[0].contains("USING brin (\"timestamp\", id)"),
        || format!("{indexes:#?}"),
    )?;
    // Made ahead: today and three days; a row of now lands in today's.
    let partitions: i64 = client
        .query_one(
            &format!(
                "SELECT count(*) FROM pg_inherits WHERE inhparent = '{}'::regclass",
                table.quoted()
            ),
            &[],
        )
        .await?
        .get(0);
    check(partitions == 5, || {
        format!("{partitions} partitions; expected 4 days and DEFAULT")
    })?;
    let in_default: i64 = client
        .query_one(
            &format!("SELECT count(*) FROM {schema}.app_log_default"),
            &[],
        )
        .await?
        .get(0);
    check(in_default == 0, || "the row went to DEFAULT".into())
}

/// A server stopped for a few seconds while producers keep logging: every
/// record arrives once the server is back.
fn server_restart_loses_nothing() -> Result<(), Failed> {
    let server = EmbeddedPostgres::temporary()?;
    crate::common::block_on(async {
        let pool = pglogsink::pool(server.config(), 2)?;
        let table = fresh_table("restart");
        pglogsink::migrate(&pool, &table).await?;
        let cfg = SinkConfig {
            retry_max: Duration::from_millis(500),
            ..config(&table)
        };
        let token = CancellationToken::new();
        let (logger, worker) = pglogsink::spawn(pool.clone(), &cfg, token.clone())?;
        let mut sent = 0u64;
        log_for(&logger, &mut sent, Duration::from_millis(500)).await?;
        server.stop_server()?;
        log_for(&logger, &mut sent, Duration::from_secs(2)).await?;
        server.start_server()?;
        log_for(&logger, &mut sent, Duration::from_millis(500)).await?;
        let report = worker.shutdown(Duration::from_secs(20)).await;
        check(!token.is_cancelled(), || {
            format!("fatal stop during a restart: {report}")
        })?;
        check(report.is_complete() && report.written == sent, || {
            format!("sent {sent}: {report:?}")
        })?;
        check(report.retries > 0, || "the outage caused no retry".into())?;
        let rows = count(&pool, &table).await?;
        check(rows == sent as i64, || {
            format!("{rows} rows for {sent} records")
        })
    })?;
    server.stop()?;
    Ok(())
}

/// About 5 records a millisecond for `d`, counted in `sent`. It sleeps on
/// the runtime's timer (not the thread), so that it never holds up a task.
async fn log_for(logger: &Logger, sent: &mut u64, d: Duration) -> Result<(), Failed> {
    let end = Instant::now() + d;
    while Instant::now() < end {
        for _ in 0..5 {
            logger.log(Level::Info, format!("n{sent}"))?;
            *sent += 1;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    Ok(())
}

/// With the server down, shutdown gives up at its deadline and counts every
/// record as not written.
fn shutdown_with_server_down() -> Result<(), Failed> {
    let server = EmbeddedPostgres::temporary()?;
    let result = crate::common::block_on(async {
        let pool = pglogsink::pool(server.config(), 2)?;
        let table = fresh_table("down");
        pglogsink::migrate(&pool, &table).await?;
        server.stop_server()?;
        let (logger, worker) = pglogsink::spawn(pool, &config(&table), CancellationToken::new())?;
        for i in 0..1_000 {
            logger.log(Level::Info, format!("n{i}"))?;
        }
        let started = Instant::now();
        let report = worker.shutdown(Duration::from_secs(1)).await;
        let took = started.elapsed();
        check_time(
            "a 1 s shutdown with the server down",
            took,
            Duration::from_secs(3),
        )?;
        check(report.timed_out, || format!("{report:?}"))?;
        check(
            report.written == 0 && report.not_written + report.in_doubt == 1_000,
            || format!("{report:?}"),
        )?;
        check(report.to_string().contains("NOT written"), || {
            report.to_string()
        })
    });
    server.stop()?;
    result
}
