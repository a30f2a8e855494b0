//! Under pressure, end to end through `pglogsink serve` with real clients:
//! ingest faster than the database takes it is answered 503 within the
//! memory budget (backpressure, not the spool, and every accepted record
//! once); bodies built to blow up when decoded are answered, not obeyed;
//! half-sent requests are cut off while the service answers; and shutdown
//! meets its deadline while the ledger is locked, spooling the rest.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use libtest_mimic::{Failed, Trial};
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use opentelemetry_proto::tonic::resource::v1::Resource;
use prost::Message;

use crate::common::{block_on, check, check_time, fresh_table, url};
use crate::limits::{metric, peak_rss_kib};
use crate::service::{http_get, http_raw, run, status_of, text, Serve};

pub fn trials() -> Vec<Trial> {
    vec![
        Trial::test(
            "pressure::ingest_faster_than_the_database_is_answered_503_within_the_budget",
            backpressure,
        ),
        Trial::test(
            "pressure::bodies_that_decode_to_gigabytes_are_answered_and_serve_stays_up",
            hostile_bodies,
        ),
        Trial::test(
            "pressure::records_that_grow_during_a_stall_move_to_the_spool_at_the_budget",
            growing_records,
        ),
        Trial::test(
            "pressure::half_sent_requests_are_cut_off_and_healthz_answers_meanwhile",
            half_sent_requests,
        ),
        Trial::test(
            "pressure::shutdown_meets_its_deadline_with_the_ledger_locked_and_spools_the_rest",
            shutdown_deadline,
        ),
    ]
}

const BUDGET_MIB: u64 = 16;

/// Every COPY into `table` takes 100 ms more (a statement trigger): the
/// database is healthy, commits keep coming, but it takes about
/// `2 copies * batch / 0.1 s` rows a second, far less than 20 clients send.
fn slow_down(table: &pglogsink::TableName) -> Result<(), Failed> {
    let function = format!("{}_slow", table.name());
    block_on(async {
        let pool = crate::common::pool()?;
        pool.get()
            .await?
            .batch_execute(&format!(
                "CREATE FUNCTION {function}() RETURNS trigger LANGUAGE plpgsql AS \
                 $$ BEGIN PERFORM pg_sleep(0.1); RETURN NULL; END $$; \
                 CREATE TRIGGER slow BEFORE INSERT ON {} FOR EACH STATEMENT \
                 EXECUTE FUNCTION {function}();",
                table.quoted()
            ))
            .await?;
        Ok(())
    })
}

/// `serve --max-queue-bytes 16MiB --batch-size 1000` into a table whose
/// COPYs each take 100 ms, under `load --mode ndjson --batch 1000
/// --concurrency 20`: the excess is answered 503, peak RSS stays within the
/// budget plus 64 MiB, nothing goes through the spool, and every record of
/// every 200 is in the table once (`load --verify`).
fn backpressure() -> Result<(), Failed> {
    let db = url()?;
    let table = fresh_table("pressure");
    let t = table.to_string();
    let budget = format!("{BUDGET_MIB}MiB");
    let mut serve = Serve::start(
        &["--database-url", &db, "--table", &t],
        &["--max-queue-bytes", &budget, "--batch-size", "1000"],
    )?;
    slow_down(&table)?;
    let load = run(&[
        "load",
        "--url",
        &serve.url(),
        "--mode",
        "ndjson",
        "--batch",
        "1000",
        "--concurrency",
        "20",
        "--duration",
        "6",
        "--verify",
        "--verify-timeout",
        "120",
        "--database-url",
        &db,
        "--table",
        &t,
    ])?;
    let stdout = text(&load.stdout);
    let (_, metrics) = http_get(&serve.addr, "/metrics")?;
    let peak_mib = peak_rss_kib(serve.pid()?)? / 1024;
    serve.signal("-INT")?;
    let out = serve.wait()?;
    let stderr = text(&out.stderr);
    let (ok, non_2xx) = load_counts(&stdout).ok_or_else(|| stdout.clone())?;
    eprintln!(
        "    {ok} requests answered 200, {non_2xx} answered 503; peak RSS {peak_mib} MiB \
         (budget {BUDGET_MIB} MiB); {}",
        stdout
            .lines()
            .find(|l| l.starts_with("verify"))
            .unwrap_or("")
    );
    check(stdout.contains(": OK"), || format!("load: {stdout}"))?;
    check(ok > 0 && non_2xx > 0, || {
        format!("expected both 200s and 503s: {stdout}")
    })?;
    check(
        metric(&metrics, "pglogsink_records_spooled_total") == Some(0),
        || format!("records went through the spool with the database healthy: {stderr}"),
    )?;
    check(peak_mib <= BUDGET_MIB + 64, || {
        format!("peak RSS {peak_mib} MiB with a budget of {BUDGET_MIB} MiB")
    })?;
    check(
        out.status.success() && stderr.contains("nothing lost"),
        || stderr.clone(),
    )
}

/// `requests: N ok, M failed (K non-2xx, ...)` of `load`'s summary.
fn load_counts(stdout: &str) -> Option<(u64, u64)> {
    let line = stdout.lines().find(|l| l.starts_with("requests:"))?;
    let mut words = line.split_whitespace();
    let ok = words.nth(1)?.parse().ok()?;
    let non_2xx = line
        .split('(')
        .nth(1)?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    Some((ok, non_2xx))
}

/// One OTLP protobuf body: `resources` resources, each with an attribute of
/// `attribute_bytes`, and `records` log records with `attributes` empty
/// attributes each.
fn otlp_body(attribute_bytes: usize, records: usize, attributes: usize) -> Vec<u8> {
    let big = KeyValue {
        key: "big".to_owned(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue("x".repeat(attribute_bytes))),
        }),
    };
    let record = LogRecord {
        attributes: vec![KeyValue::default(); attributes],
        ..LogRecord::default()
    };
    ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            resource: Some(Resource {
                attributes: vec![
                    KeyValue {
                        key: "service.name".to_owned(),
                        value: Some(AnyValue {
                            value: Some(any_value::Value::StringValue("hostile".to_owned())),
                        }),
                    },
                    big,
                ],
                ..Resource::default()
            }),
            scope_logs: vec![ScopeLogs {
                log_records: vec![record; records],
                ..ScopeLogs::default()
            }],
            ..ResourceLogs::default()
        }],
    }
    .encode_to_vec()
}

fn post_otlp(addr: &str, body: &[u8]) -> Result<u16, Failed> {
    let response = http_raw(
        addr,
        "POST",
        "/v1/logs",
        &[("Content-Type", "application/x-protobuf")],
        body,
    )?;
    status_of(&String::from_utf8_lossy(&response)).ok_or_else(|| "no status line".into())
}

/// Bodies under `--max-body-bytes` that would decode into gigabytes: a 4
/// MiB resource attribute over 3,000 records (each record used to get its
/// own copy), 8 million empty records, 4 million empty attributes on one
/// record. Each is answered (200, or 413 with nothing taken), serve stays
/// up within its budget plus 64 MiB, and the first one's rows are written.
fn hostile_bodies() -> Result<(), Failed> {
    let db = url()?;
    let table = fresh_table("hostile");
    let t = table.to_string();
    let serve = Serve::start(&["--database-url", &db, "--table", &t], &[])?;
    let shared = otlp_body(4 << 20, 3000, 0);
    let empty_records = otlp_body(0, 8_000_000, 0);
    let empty_attributes = otlp_body(0, 1, 4_000_000);
    let mut answers = Vec::new();
    for (what, body, expected) in [
        ("a 4 MiB attribute over 3,000 records", &shared, 200),
        ("8 million empty records", &empty_records, 413),
        ("4 million empty attributes", &empty_attributes, 413),
    ] {
        let status = post_otlp(&serve.addr, body)?;
        answers.push(format!("{what} ({} MB): {status}", body.len() / 1_000_000));
        check(status == expected, || answers.join("; "))?;
        let (health, _) = http_get(&serve.addr, "/healthz")?;
        check(health == 200, || format!("after {what}: /healthz {health}"))?;
    }
    let peak_mib = peak_rss_kib(serve.pid()?)? / 1024;
    eprintln!("    {}; peak RSS {peak_mib} MiB", answers.join("; "));
    check(peak_mib <= 128 + 64, || format!("peak RSS {peak_mib} MiB"))?;
    block_on(async {
        let pool = crate::common::pool()?;
        let client = pool.get().await?;
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let row = client
                .query_one(
                    &format!(
                        "SELECT count(*), count(*) FILTER (WHERE fields ? \
                         'pglogsink_truncated_fields_bytes') FROM {}",
                        table.quoted()
                    ),
                    &[],
                )
                .await?;
            let (rows, noted): (i64, i64) = (row.get(0), row.get(1));
            if rows == 3000 {
                // The shared 4 MiB is over --max-record-bytes: each row keeps
                // a note of its size instead.
                return check(noted == 3000, || format!("{noted} of 3000 rows noted"));
            }
            check(Instant::now() < deadline, || format!("{rows} of 3000 rows"))?;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
}

/// `serve --max-queue-bytes 16MiB --lock-timeout 30` while another session
/// holds the Log table locked: small records first, then 256 KiB messages,
/// 200 MiB of them in bodies of five. The queue is counted as it is, so it moves to the spool
/// at the budget whatever the records' sizes (an average taken from the
/// small ones once let it grow gigabytes past it); peak RSS stays within
/// the budget plus 64 MiB, and once the lock goes every record answered 200
/// is in the table once.
fn growing_records() -> Result<(), Failed> {
    let db = url()?;
    let table = fresh_table("growing");
    let t = table.to_string();
    let budget = format!("{BUDGET_MIB}MiB");
    let mut serve = Serve::start(
        &["--database-url", &db, "--table", &t],
        &["--max-queue-bytes", &budget, "--lock-timeout", "30"],
    )?;
    let small: String = (0..1000)
        .map(|i| format!("{{\"message\":\"small {i}\",\"n\":{i}}}\n"))
        .collect();
    let big = "x".repeat(256 << 10);
    let large: String = (0..5)
        .map(|i| format!("{{\"message\":\"{big}\",\"n\":{i}}}\n"))
        .collect();
    let post = |body: &str| -> Result<u16, Failed> {
        let response = http_raw(
            &serve.addr,
            "POST",
            "/ingest/ndjson",
            &[("Content-Type", "application/x-ndjson")],
            body.as_bytes(),
        )?;
        status_of(&String::from_utf8_lossy(&response)).ok_or_else(|| "no status line".into())
    };
    let (accepted, spooled) = block_on(async {
        let pool = crate::common::pool()?;
        let mut client = pool.get().await?;
        let tx = client.transaction().await?;
        tx.batch_execute(&format!(
            "LOCK TABLE {} IN ACCESS EXCLUSIVE MODE",
            table.quoted()
        ))
        .await?;
        // Small records until the writes count as stuck, then large ones.
        let mut accepted = (0u64, 0u64);
        for _ in 0..20 {
            if post(&small)? == 200 {
                accepted.0 += 1;
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        for _ in 0..160 {
            if post(&large)? == 200 {
                accepted.1 += 1;
            }
        }
        let (_, metrics) = http_get(&serve.addr, "/metrics")?;
        let spooled = metric(&metrics, "pglogsink_records_spooled_total").unwrap_or(0);
        tx.commit().await?;
        Ok::<_, Failed>((accepted, spooled))
    })?;
    let peak_mib = peak_rss_kib(serve.pid()?)? / 1024;
    eprintln!(
        "    {} small and {} large bodies answered 200 while the table was locked; {spooled} \
         records spooled meanwhile; peak RSS {peak_mib} MiB (budget {BUDGET_MIB} MiB)",
        accepted.0, accepted.1
    );
    // A body that finds no room under the ceiling is answered 503 (and the
    // queue moves to the spool for the next): most are taken.
    check(accepted.1 >= 80 && spooled > 0, || {
        format!("{accepted:?} bodies taken, {spooled} records spooled")
    })?;
    check(peak_mib <= BUDGET_MIB + 64, || {
        format!("peak RSS {peak_mib} MiB with a budget of {BUDGET_MIB} MiB")
    })?;
    let expected = (accepted.0 * 1000 + accepted.1 * 5) as i64;
    let counted = block_on(async {
        let pool = crate::common::pool()?;
        let client = pool.get().await?;
        let deadline = Instant::now() + Duration::from_secs(120);
        let sql = format!("SELECT count(*) FROM {}", table.quoted());
        loop {
            let rows: i64 = client.query_one(&sql, &[]).await?.get(0);
            if rows >= expected || Instant::now() > deadline {
                return Ok::<_, Failed>(rows);
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    })?;
    serve.signal("-INT")?;
    let out = serve.wait()?;
    check(counted == expected, || {
        format!(
            "expected {expected} rows, found {counted}: {}",
            text(&out.stderr)
        )
    })
}

/// 2,000 clients send half a request head and stop: `/healthz` answers
/// meanwhile, and the server closes each of their connections once
/// `--header-read-timeout` (2 s here) has passed.
fn half_sent_requests() -> Result<(), Failed> {
    let db = url()?;
    let table = fresh_table("halfsent");
    let t = table.to_string();
    let serve = Serve::start(
        &["--database-url", &db, "--table", &t],
        &["--header-read-timeout", "2"],
    )?;
    let mut clients = Vec::with_capacity(2000);
    for _ in 0..2000 {
        let mut stream = TcpStream::connect(&serve.addr)?;
        stream.write_all(b"POST /ingest/ndjson HTTP/1.1\r\nHost: localhost\r\nContent-Ty")?;
        clients.push(stream);
    }
    let started = Instant::now();
    let (status, _) = http_get(&serve.addr, "/healthz")?;
    let healthz = started.elapsed();
    check(status == 200, || format!("/healthz answered {status}"))?;
    // Each connection ends (EOF, or reset) once the timeout has passed.
    let deadline = Instant::now() + Duration::from_secs(40);
    let mut open = clients;
    while !open.is_empty() {
        check(Instant::now() < deadline, || {
            format!(
                "{} of 2000 half-sent connections still open after 40 s",
                open.len()
            )
        })?;
        open.retain_mut(|stream| {
            stream.set_nonblocking(true).ok();
            let mut byte = [0u8; 64];
            match stream.read(&mut byte) {
                Ok(0) => false,
                Ok(_) => true,
                Err(e) => e.kind() == std::io::ErrorKind::WouldBlock,
            }
        });
        std::thread::sleep(Duration::from_millis(100));
    }
    let closed_after = started.elapsed();
    eprintln!(
        "    /healthz answered in {healthz:?} with 2000 half-sent requests open; all closed \
         {closed_after:?} after they were sent"
    );
    let (status, _) = http_get(&serve.addr, "/healthz")?;
    check(status == 200, || format!("/healthz then answered {status}"))
}

/// `serve --shutdown-timeout 3 --max-queue-bytes 32MiB` under `load --mode
/// ndjson`, with the ledger table locked so that no batch can commit:
/// SIGINT, and serve exits within the deadline plus a second, the rest
/// spooled (a test build writes a full 128 MiB queue to disk more slowly
/// than that on a busy machine; the release build's figure with the
/// default budget is in the README). Started again
/// with the same spool once the lock is gone, it writes every record of
/// every request answered 200, once.
fn shutdown_deadline() -> Result<(), Failed> {
    let db = url()?;
    let table = fresh_table("deadline");
    let t = table.to_string();
    let spool = std::env::temp_dir().join(format!("pglogsink-deadline-{}", std::process::id()));
    let spool_arg = spool.to_string_lossy().into_owned();
    let args = ["--database-url", db.as_str(), "--table", t.as_str()];
    let extra = [
        "--shutdown-timeout",
        "3",
        "--max-queue-bytes",
        "32MiB",
        "--spool-dir",
        spool_arg.as_str(),
    ];
    let mut serve = Serve::start(&args, &extra)?;
    let load = {
        let (url, db, t) = (serve.url(), db.clone(), t.clone());
        std::thread::spawn(move || {
            run(&[
                "load",
                "--url",
                &url,
                "--mode",
                "ndjson",
                "--batch",
                "1000",
                "--concurrency",
                "20",
                "--duration",
                "8",
                "--database-url",
                &db,
                "--table",
                &t,
            ])
        })
    };
    std::thread::sleep(Duration::from_secs(2));
    let exited_after = block_on(async {
        let pool = crate::common::pool()?;
        let mut client = pool.get().await?;
        let tx = client.transaction().await?;
        tx.batch_execute(&format!(
            "LOCK TABLE {} IN ACCESS EXCLUSIVE MODE",
            table.ledger_table().quoted()
        ))
        .await?;
        tokio::time::sleep(Duration::from_secs(1)).await;
        let started = Instant::now();
        serve.signal("-INT")?;
        let out = tokio::task::block_in_place(|| serve.wait())?;
        let took = started.elapsed();
        tx.rollback().await?;
        let stderr = text(&out.stderr);
        check(stderr.contains("spooled to"), || stderr.clone())?;
        Ok::<_, Failed>(took)
    })?;
    let load = load.join().map_err(|_| "the load thread panicked")??;
    let stdout = text(&load.stdout);
    let (ok, _) = load_counts(&stdout).ok_or_else(|| stdout.clone())?;
    eprintln!("    serve exited {exited_after:?} after SIGINT (--shutdown-timeout 3); {ok} requests answered 200");
    check_time(
        "serve's exit after SIGINT with --shutdown-timeout 3",
        exited_after,
        Duration::from_secs(4),
    )?;
    // Started again with the same spool: it replays what was spooled.
    let mut again = Serve::start(&args, &extra)?;
    let expected = i64::try_from(ok)?;
    // Every request sends the same 1,000 records (`n` 0 to 999): each must
    // be there once per request answered 200.
    let counted = block_on(async {
        let pool = crate::common::pool()?;
        let client = pool.get().await?;
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let sql = format!(
                "SELECT count(*), coalesce(min(c), 0), coalesce(max(c), 0) FROM \
                 (SELECT count(*) AS c FROM {} WHERE target = 'load' GROUP BY fields->>'n') AS n",
                table.quoted()
            );
            let row = client.query_one(&sql, &[]).await?;
            let counts: (i64, i64, i64) = (row.get(0), row.get(1), row.get(2));
            if counts.1 >= expected || Instant::now() > deadline {
                return Ok::<_, Failed>(counts);
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    })?;
    again.signal("-INT")?;
    again.wait()?;
    let _ = std::fs::remove_dir_all(&spool);
    check(counted == (1000, expected, expected), || {
        format!(
            "expected each of 1000 records {expected} times, found (records, min, max) {counted:?}"
        )
    })
}
