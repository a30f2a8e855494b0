//! Fault injection: every test logs a known set of records, breaks something,
//! and asserts exact row counts afterwards: nothing lost, nothing doubled.

use std::collections::HashSet;
use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use libtest_mimic::{Failed, Trial};
use pglogsink::deadpool_postgres::Pool;
use pglogsink::embedded::EmbeddedPostgres;
use pglogsink::{CancellationToken, Level, Logger, Record, Report, SinkConfig, TableName};
use serde_json::json;

use crate::common::{async_trial, block_on, check, count, fresh_table, pool};

pub fn trials() -> Vec<Trial> {
    vec![
        async_trial(
            "faults::ambiguous_commit_is_not_written_twice",
            ambiguous_commit,
        ),
        async_trial(
            "faults::backends_terminated_during_copy_lose_and_double_nothing",
            terminated_backends,
        ),
        async_trial("faults::poison_rows_are_isolated_and_kept", poison_rows),
        async_trial(
            "faults::refused_rows_go_to_the_dead_letter_file_when_the_rejected_table_fails",
            dead_letter,
        ),
        async_trial("faults::oversized_and_hostile_input", hostile_input),
        async_trial(
            "faults::fatal_stop_spools_and_the_next_start_replays",
            fatal_stop_spools_then_replays,
        ),
        Trial::test(
            "faults::long_outage_spills_past_the_memory_budget_then_recovers",
            long_outage_spills,
        ),
        Trial::test(
            "faults::shutdown_with_server_down_spools_and_restart_replays",
            shutdown_server_down_replays,
        ),
        Trial::test(
            "faults::a_torn_spool_tail_is_reported_and_skipped",
            torn_spool_tail,
        ),
    ]
}

fn spool_dir(name: &str) -> PathBuf {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let dir = std::env::temp_dir().join(format!(
        "pglogsink-faults-{name}-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

fn config(table: &TableName, spool: Option<&Path>) -> SinkConfig {
    SinkConfig {
        table: table.to_string(),
        spool_dir: spool.map(Path::to_owned),
        retry_initial: Duration::from_millis(20),
        retry_max: Duration::from_millis(300),
        ..SinkConfig::default()
    }
}

/// Log `n` records numbered `from..from+n` (field `n`), as fast as possible.
fn log_numbered(logger: &Logger, from: u64, n: u64) -> Result<(), Failed> {
    for i in from..from + n {
        logger.send(Record::new(Level::Info, format!("record {i}")).field("n", i))?;
    }
    Ok(())
}

/// Rows, and distinct record numbers, in the table.
async fn rows_and_distinct(pool: &Pool, table: &TableName) -> Result<(i64, i64), Failed> {
    let row = pool
        .get()
        .await?
        .query_one(
            &format!(
                "SELECT count(*), count(DISTINCT fields->>'n') FROM {}",
                table.quoted()
            ),
            &[],
        )
        .await?;
    Ok((row.get(0), row.get(1)))
}

async fn exactly_once(pool: &Pool, table: &TableName, expected: u64) -> Result<(), Failed> {
    let (rows, distinct) = rows_and_distinct(pool, table).await?;
    check(rows == expected as i64 && distinct == rows, || {
        format!("{rows} rows, {distinct} distinct, expected {expected} exactly once")
    })
}

/// A TCP proxy to PostgreSQL that, `times` times, forwards a transaction's
/// COMMIT to the server but drops the connection instead of passing the
/// server's "COMMIT" completion back: the server has committed, the client
/// never hears so.
///
/// It reads the messages, so it offers no TLS: a client's TLS request is
/// answered "no" (as a server without TLS answers it), so that a client
/// with the default sslmode (`prefer`) goes on in plain text.
pub(crate) struct CommitDropper {
    pub(crate) port: u16,
    pub(crate) dropped: Arc<AtomicU32>,
    stop: Arc<AtomicBool>,
}

impl CommitDropper {
    pub(crate) fn start(upstream_port: u16, times: u32) -> Result<CommitDropper, Failed> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        listener.set_nonblocking(true)?;
        let port = listener.local_addr()?.port();
        let dropped = Arc::new(AtomicU32::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (d, s) = (dropped.clone(), stop.clone());
        std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((client, _)) => {
                        let _ = client.set_nonblocking(false);
                        if let Ok(server) = TcpStream::connect(("127.0.0.1", upstream_port)) {
                            let d = d.clone();
                            std::thread::spawn(move || proxy(client, server, d, times));
                        }
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        Ok(CommitDropper {
            port,
            dropped,
            stop,
        })
    }
}

impl CommitDropper {
    /// The proxy dropped `times` COMMIT replies, and the sink's `report`
    /// accounts for all `records`, some as found already committed.
    pub(crate) fn settled(&self, report: &Report, times: u32, records: u64) -> Result<(), Failed> {
        let dropped = self.dropped.load(Ordering::SeqCst);
        check(dropped == times, || {
            format!("the proxy dropped {dropped} commits, not {times}")
        })?;
        check(
            report.is_complete() && report.written + report.already_written == records,
            || format!("{report:?}"),
        )?;
        check(report.already_written > 0, || {
            format!("no batch was recognised as already committed: {report:?}")
        })
    }
}

impl Drop for CommitDropper {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// The first eight bytes of a client's SSLRequest: its length and code.
const SSL_REQUEST: [u8; 8] = [0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f];

fn proxy(mut client: TcpStream, mut server: TcpStream, dropped: Arc<AtomicU32>, times: u32) {
    // A startup packet is at least eight bytes long, an SSLRequest exactly.
    let mut first = [0u8; 8];
    if client.read_exact(&mut first).is_err() {
        return;
    }
    let passed_on = if first == SSL_REQUEST {
        client.write_all(b"N")
    } else {
        server.write_all(&first)
    };
    if passed_on.is_err() {
        return;
    }
    let (Ok(mut client_read), Ok(mut server_write)) = (client.try_clone(), server.try_clone())
    else {
        return;
    };
    std::thread::spawn(move || {
        let _ = std::io::copy(&mut client_read, &mut server_write);
        let _ = server_write.shutdown(Shutdown::Write);
    });
    // Server to client, message by message (type byte, length, body). The
    // server sends no untyped message: TLS requests never reach it.
    loop {
        let mut header = [0u8; 5];
        if server.read_exact(&mut header).is_err() {
            break;
        }
        let len = u32::from_be_bytes([header[1], header[2], header[3], header[4]]) as usize;
        let mut body = vec![0u8; len.saturating_sub(4)];
        if server.read_exact(&mut body).is_err() {
            break;
        }
        if header[0] == b'C'
            && body.starts_with(b"COMMIT\0")
            && dropped.load(Ordering::SeqCst) < times
        {
            dropped.fetch_add(1, Ordering::SeqCst);
            let _ = client.shutdown(Shutdown::Both);
            let _ = server.shutdown(Shutdown::Both);
            return;
        }
        if client.write_all(&header).is_err() || client.write_all(&body).is_err() {
            break;
        }
    }
    let _ = client.shutdown(Shutdown::Both);
}

async fn ambiguous_commit() -> Result<(), Failed> {
    let direct = pool()?;
    let table = fresh_table("ambiguous");
    pglogsink::migrate(&direct, &table).await?;
    let upstream = crate::common::config()?;
    let port = *upstream.get_ports().first().ok_or("no port")?;
    let proxy = CommitDropper::start(port, 3)?;
    let mut through_proxy = pglogsink::tokio_postgres::Config::new();
    through_proxy
        .host("127.0.0.1")
        .port(proxy.port)
        .user(upstream.get_user().ok_or("no user")?)
        .dbname(upstream.get_dbname().ok_or("no dbname")?)
        .ssl_mode(pglogsink::tokio_postgres::config::SslMode::Disable);
    if let Some(password) = upstream.get_password() {
        through_proxy.password(password);
    }
    let sink_pool = pglogsink::pool(through_proxy, 2)?;
    let cfg = SinkConfig {
        batch_size: 100,
        ..config(&table, None)
    };
    let (logger, worker) = pglogsink::spawn(sink_pool, &cfg, CancellationToken::new())?;
    for round in 0..5 {
        log_numbered(&logger, round * 200, 200)?;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let report = worker.shutdown(Duration::from_secs(20)).await;
    proxy.settled(&report, 3, 1000)?;
    exactly_once(&direct, &table, 1000).await
}

async fn terminated_backends() -> Result<(), Failed> {
    let pool = pool()?;
    let table = fresh_table("terminate");
    pglogsink::migrate(&pool, &table).await?;
    let mut sink_config = crate::common::config()?;
    let app = format!("pglogsink-{}", table.name());
    sink_config.set_application_name(&app);
    let (logger, worker) = pglogsink::spawn(
        pglogsink::pool(sink_config, 2)?,
        &SinkConfig {
            batch_size: 200,
            ..config(&table, None)
        },
        CancellationToken::new(),
    )?;
    let killer = {
        let pool = pool.clone();
        let app = app.clone();
        tokio::spawn(async move {
            let mut killed = 0u64;
            let client = pool.get().await.map_err(|e| e.to_string())?;
            for _ in 0..60 {
                let rows = client
                    .query(
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1",
                        &[&app],
                    )
                    .await
                    .map_err(|e| e.to_string())?;
                killed += rows.len() as u64;
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
            Ok::<u64, String>(killed)
        })
    };
    let producer = std::thread::spawn(move || -> Result<(), String> {
        for chunk in 0..40u64 {
            log_numbered(&logger, chunk * 500, 500).map_err(|e| format!("{e:?}"))?;
            std::thread::sleep(Duration::from_millis(40));
        }
        Ok(())
    });
    producer.join().map_err(|_| "producer panicked")??;
    let killed = killer.await??;
    let report = worker.shutdown(Duration::from_secs(30)).await;
    check(killed > 0 && report.retries > 0, || {
        format!("killed {killed} backends, {} retries", report.retries)
    })?;
    check(
        report.is_complete() && report.written + report.already_written == 20_000,
        || format!("{report:?}"),
    )?;
    exactly_once(&pool, &table, 20_000).await
}

async fn poison_rows() -> Result<(), Failed> {
    let pool = pool()?;
    let table = fresh_table("poison");
    pglogsink::migrate(&pool, &table).await?;
    let client = pool.get().await?;
    // Two refusals an operator could add: a CHECK, and a narrowed column.
    client
        .batch_execute(&format!(
            "ALTER TABLE {t} ADD CONSTRAINT no_poison CHECK (message NOT LIKE '%poison%'); \
             ALTER TABLE {t} ALTER COLUMN target TYPE varchar(20);",
            t = table.quoted()
        ))
        .await?;
    let (logger, worker) = pglogsink::spawn(
        pool.clone(),
        &config(&table, None),
        CancellationToken::new(),
    )?;
    let bad = [17u64, 2500, 4999];
    for i in 0..5000u64 {
        let mut record = Record::new(Level::Info, format!("record {i}")).field("n", i);
        if bad.contains(&i) {
            record = Record::new(Level::Info, format!("poison {i}")).field("n", i);
        }
        if i == 3000 {
            record = record.target("a-target-far-longer-than-twenty-characters");
        }
        logger.send(record)?;
    }
    let report = worker.shutdown(Duration::from_secs(30)).await;
    check(
        report.written == 4996 && report.rejected == 4 && report.is_complete(),
        || format!("{report:?}"),
    )?;
    exactly_once(&pool, &table, 4996).await?;
    let rejected = client
        .query(
            &format!(
                "SELECT sqlstate, record->>'message', (record->'fields'->>'n')::int FROM {} ORDER BY 3",
                table.rejected_table().quoted()
            ),
            &[],
        )
        .await?;
    let got: Vec<(Option<String>, String, i32)> = rejected
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    let expected = vec![
        (Some("23514".to_owned()), "poison 17".to_owned(), 17),
        (Some("23514".to_owned()), "poison 2500".to_owned(), 2500),
        (Some("22001".to_owned()), "record 3000".to_owned(), 3000),
        (Some("23514".to_owned()), "poison 4999".to_owned(), 4999),
    ];
    check(got == expected, || format!("rejected rows: {got:?}"))
}

async fn dead_letter() -> Result<(), Failed> {
    let pool = pool()?;
    let table = fresh_table("dead");
    pglogsink::migrate(&pool, &table).await?;
    pool.get()
        .await?
        .batch_execute(&format!(
            "ALTER TABLE {} ADD CHECK (message <> 'refused'); DROP TABLE {};",
            table.quoted(),
            table.rejected_table().quoted()
        ))
        .await?;
    let spool = spool_dir("dead");
    let (logger, worker) = pglogsink::spawn(
        pool.clone(),
        &config(&table, Some(&spool)),
        CancellationToken::new(),
    )?;
    logger.log(Level::Info, "fine")?;
    logger.log(Level::Info, "refused")?;
    let report = worker.shutdown(Duration::from_secs(10)).await;
    let lines = std::fs::read_to_string(spool.join("dead-letter.ndjson"))?;
    let _ = std::fs::remove_dir_all(&spool);
    check(
        report.written == 1 && report.dead_lettered == 1 && report.is_complete(),
        || format!("{report:?}"),
    )?;
    let entry: serde_json::Value = serde_json::from_str(lines.trim())?;
    check(
        entry["record"]["message"] == "refused" && entry["sqlstate"] == "23514",
        || lines.clone(),
    )
}

async fn hostile_input() -> Result<(), Failed> {
    let pool = pool()?;
    let table = fresh_table("hostile");
    pglogsink::migrate(&pool, &table).await?;
    let cfg = SinkConfig {
        max_record_bytes: 4 << 20,
        ..config(&table, None)
    };
    let (logger, worker) = pglogsink::spawn(pool.clone(), &cfg, CancellationToken::new())?;
    let planes: String = (0..=16u32)
        .filter_map(|plane| char::from_u32(plane * 0x10000 + 0x41))
        .chain([
            '\u{1}', '\u{1b}', '\u{7f}', '\u{85}', '\u{2028}', '\u{feff}', '\u{fffd}',
        ])
        .collect();
    let mut deep = json!("bottom");
    for _ in 0..64 {
        deep = json!({ "d": deep });
    }
    let wide: serde_json::Map<String, serde_json::Value> =
        (0..10_000).map(|i| (format!("k{i}"), json!(i))).collect();
    let three_mb = "m".repeat(3 << 20);
    let ten_mb = "t".repeat(10 << 20);
    let records = vec![
        Record::new(Level::Info, three_mb.clone()).field("n", 0),
        Record::new(Level::Info, ten_mb).field("n", 1),
        Record::new(Level::Info, planes.clone())
            .field("n", 2)
            .field(planes.clone(), planes.clone()),
        Record::new(Level::Info, "deep")
            .field("n", 3)
            .field("deep", deep.clone()),
        Record::new(Level::Info, "wide")
            .field("n", 4)
            .field("wide", serde_json::Value::Object(wide)),
        Record::new(
            Level::Info,
            "\\.\n\\copy log from program 'rm -rf /'; '); DROP TABLE log; --",
        )
        .field("n", 5)
        .field("sql", "E'\\\\x00' || chr(0)"),
    ];
    for record in records {
        logger.send(record)?;
    }
    let report = worker.shutdown(Duration::from_secs(30)).await;
    check(
        report.written == 6 && report.truncated == 1 && report.is_complete(),
        || format!("{report:?}"),
    )?;
    let client = pool.get().await?;
    let rows = client
        .query(
            &format!(
                "SELECT message, fields FROM {} ORDER BY (fields->>'n')::int",
                table.quoted()
            ),
            &[],
        )
        .await?;
    let message = |i: usize| -> String { rows[i].get(0) };
    let fields = |i: usize| -> serde_json::Value { rows[i].get(1) };
    check(message(0) == three_mb, || {
        "the 3 MB message was not kept intact".into()
    })?;
    let cut = message(1);
    check(
        cut.len() <= 4 << 20 && cut.contains("[truncated ") && cut.starts_with("tttt"),
        || {
            format!(
                "truncated message of {} bytes ends {:?}",
                cut.len(),
                &cut[cut.len().saturating_sub(40)..]
            )
        },
    )?;
    check(
        message(2) == planes && fields(2)[planes.as_str()] == json!(planes),
        || "planes".into(),
    )?;
    check(fields(3)["deep"] == deep, || "deep fields".into())?;
    check(
        fields(4)["wide"].as_object().map(|o| o.len()) == Some(10_000),
        || "wide fields".into(),
    )?;
    check(message(5).starts_with("\\.\n\\copy"), || message(5))?;
    check(count(&pool, &table).await? == 6, || "count".into())
}

async fn fatal_stop_spools_then_replays() -> Result<(), Failed> {
    let admin = pool()?;
    let table = fresh_table("fatal");
    pglogsink::migrate(&admin, &table).await?;
    let role = format!("{}_w", table.name());
    admin
        .get()
        .await?
        .batch_execute(&format!(
            "CREATE ROLE {role} LOGIN PASSWORD 'pw'; GRANT USAGE ON SCHEMA public TO {role}; \
             GRANT SELECT, INSERT, DELETE ON {t}, {l}, {r} TO {role}; \
             GRANT USAGE ON SEQUENCE \"{name}_id_seq\" TO {role};",
            name = table.name(),
            t = table.quoted(),
            l = table.ledger_table().quoted(),
            r = table.rejected_table().quoted()
        ))
        .await?;
    let mut as_role = crate::common::config()?;
    as_role.set_user(&role).set_password("pw");
    let spool = spool_dir("fatal");

    // The operator revokes INSERT: the sink stops, spooling what it holds.
    admin
        .get()
        .await?
        .batch_execute(&format!("REVOKE INSERT ON {} FROM {role}", table.quoted()))
        .await?;
    let token = CancellationToken::new();
    let (logger, worker) = pglogsink::spawn(
        pglogsink::pool(as_role.clone(), 2)?,
        &config(&table, Some(&spool)),
        token.clone(),
    )?;
    log_numbered(&logger, 0, 3000)?;
    tokio::time::timeout(Duration::from_secs(10), token.cancelled())
        .await
        .map_err(|_| "no fatal stop within 10 s")?;
    let _ = log_numbered(&logger, 3000, 10); // refused: the sink has stopped
    let first = worker.shutdown(Duration::from_secs(5)).await;
    check(
        first.fatal.as_ref().and_then(|f| f.sqlstate()) == Some("42501"),
        || format!("{first:?}"),
    )?;
    check(
        first.left_in_spool() == 3000 && first.not_written + first.in_doubt == 0,
        || format!("{first:?}"),
    )?;
    check(
        first.to_string().contains(&spool.display().to_string()),
        || first.to_string(),
    )?;

    // After the repair, the next start replays the spool first.
    admin
        .get()
        .await?
        .batch_execute(&format!("GRANT INSERT ON {} TO {role}", table.quoted()))
        .await?;
    let (logger, worker) = pglogsink::spawn(
        pglogsink::pool(as_role, 2)?,
        &config(&table, Some(&spool)),
        CancellationToken::new(),
    )?;
    log_numbered(&logger, 5000, 100)?;
    let second = worker.shutdown(Duration::from_secs(20)).await;
    let _ = std::fs::remove_dir_all(&spool);
    check(
        second.replayed == 3000 && second.written == 3100 && second.is_complete(),
        || format!("{second:?}"),
    )?;
    exactly_once(&admin, &table, 3100).await
}

/// Memory stays bounded during a long outage: past the budget the queue
/// moves to the spool, and everything arrives once the server is back.
fn long_outage_spills() -> Result<(), Failed> {
    let server = EmbeddedPostgres::temporary()?;
    let spool = spool_dir("outage");
    let result = block_on(async {
        let pool = pglogsink::pool(server.config(), 2)?;
        let table = fresh_table("outage");
        pglogsink::migrate(&pool, &table).await?;
        let cfg = SinkConfig {
            max_queue_bytes: 1 << 20,
            ..config(&table, Some(&spool))
        };
        let (logger, worker) = pglogsink::spawn(pool.clone(), &cfg, CancellationToken::new())?;
        log_numbered(&logger, 0, 1000)?;
        server.stop_server()?;
        // 100,000 records of ~250 bytes (25 MB) while the server is away,
        // paced over ~2 s; the queue is sampled as it goes.
        let mut max_queued = 0;
        let started = Instant::now();
        for chunk in 0..100u64 {
            log_numbered(&logger, 1000 + chunk * 1000, 1000)?;
            max_queued = max_queued.max(logger.stats().queued_bytes);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let outage = started.elapsed();
        let during = logger.stats();
        server.start_server()?;
        let report = worker.shutdown(Duration::from_secs(60)).await;
        check(during.spooled > 50_000, || {
            format!("only {} records spooled during the outage", during.spooled)
        })?;
        // The budget is 1 MiB; while the queue moves to the spool it may
        // pass it by its margin (4 MiB at least), never more.
        check(max_queued <= 5 << 20, || {
            format!("the queue held {max_queued} bytes")
        })?;
        check(report.is_complete() && report.left_in_spool() == 0, || {
            format!("{report:?}")
        })?;
        check(report.replayed == report.spooled, || format!("{report:?}"))?;
        eprintln!(
            "    outage {outage:?}: at most {max_queued} bytes queued, {} records spooled and replayed",
            report.spooled
        );
        exactly_once(&pool, &table, 101_000).await
    });
    let _ = std::fs::remove_dir_all(&spool);
    server.stop()?;
    result
}

fn shutdown_server_down_replays() -> Result<(), Failed> {
    let server = EmbeddedPostgres::temporary()?;
    let spool = spool_dir("down");
    let result = block_on(async {
        let pool = pglogsink::pool(server.config(), 2)?;
        let table = fresh_table("down");
        pglogsink::migrate(&pool, &table).await?;
        server.stop_server()?;
        let (logger, worker) = pglogsink::spawn(
            pool.clone(),
            &config(&table, Some(&spool)),
            CancellationToken::new(),
        )?;
        log_numbered(&logger, 0, 5000)?;
        let first = worker.shutdown(Duration::from_millis(500)).await;
        check(
            first.timed_out && first.left_in_spool() == 5000 && first.is_complete(),
            || format!("{first:?}"),
        )?;
        server.start_server()?;
        let (_logger, worker) = pglogsink::spawn(
            pool.clone(),
            &config(&table, Some(&spool)),
            CancellationToken::new(),
        )?;
        let second = worker.shutdown(Duration::from_secs(20)).await;
        check(second.replayed == 5000 && second.is_complete(), || {
            format!("{second:?}")
        })?;
        exactly_once(&pool, &table, 5000).await
    });
    let _ = std::fs::remove_dir_all(&spool);
    server.stop()?;
    result
}

fn torn_spool_tail() -> Result<(), Failed> {
    let server = EmbeddedPostgres::temporary()?;
    let spool = spool_dir("torn");
    let result = block_on(async {
        let pool = pglogsink::pool(server.config(), 2)?;
        let table = fresh_table("torn");
        pglogsink::migrate(&pool, &table).await?;
        server.stop_server()?;
        let cfg = SinkConfig {
            batch_size: 100,
            ..config(&table, Some(&spool))
        };
        let (logger, worker) = pglogsink::spawn(pool.clone(), &cfg, CancellationToken::new())?;
        log_numbered(&logger, 0, 1000)?;
        let first = worker.shutdown(Duration::from_millis(300)).await;
        check(first.left_in_spool() == 1000, || format!("{first:?}"))?;
        // Power loss while the last entry was being appended.
        let segment = std::fs::read_dir(&spool)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .find(|p| p.extension().is_some_and(|x| x == "spool"))
            .ok_or("no spool segment")?;
        let len = std::fs::metadata(&segment)?.len();
        std::fs::OpenOptions::new()
            .write(true)
            .open(&segment)?
            .set_len(len - 10)?;

        server.start_server()?;
        let (_logger, worker) = pglogsink::spawn(pool.clone(), &cfg, CancellationToken::new())?;
        let second = worker.shutdown(Duration::from_secs(20)).await;
        check(
            second.spool_corrupt_bytes > 0 && second.is_complete(),
            || format!("{second:?}"),
        )?;
        check(second.to_string().contains("corrupt spool"), || {
            second.to_string()
        })?;
        let (rows, distinct) = rows_and_distinct(&pool, &table).await?;
        // Only the torn entry (one batch of at most 100) is missing.
        check(
            (900..1000).contains(&rows) && distinct == rows && rows as u64 == second.replayed,
            || {
                format!(
                    "{rows} rows ({distinct} distinct) after replaying a torn spool; {second:?}"
                )
            },
        )?;
        let seen: HashSet<i64> = pool
            .get()
            .await?
            .query(
                &format!("SELECT (fields->>'n')::bigint FROM {}", table.quoted()),
                &[],
            )
            .await?
            .iter()
            .map(|r| r.get(0))
            .collect();
        check((0..rows).all(|n| seen.contains(&n)), || {
            "the replayed rows are not the oldest ones".into()
        })
    });
    let _ = std::fs::remove_dir_all(&spool);
    server.stop()?;
    result
}
