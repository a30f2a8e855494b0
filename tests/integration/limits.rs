//! Limits that hold whatever the database does, end to end through
//! `pglogsink serve`: memory while a table lock holds every COPY, and a
//! spool at its cap while the server is down.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use libtest_mimic::{Failed, Trial};
use pglogsink::embedded::EmbeddedPostgres;

use crate::common::{block_on, check, fresh_table, url};
use crate::service::{http_get, http_get_raw, run, status_of, text, Serve};

pub fn trials() -> Vec<Trial> {
    vec![
        Trial::test(
            "limits::a_table_lock_keeps_serve_within_its_memory_budget",
            table_lock,
        ),
        Trial::test(
            "limits::a_full_spool_hands_records_back_and_counts_every_one",
            full_spool,
        ),
    ]
}

const BUDGET_MIB: u64 = 4;

/// `serve --max-queue-bytes 4MiB` under load while another session holds
/// `LOCK TABLE ... IN ACCESS EXCLUSIVE MODE` for 10 s: the COPY in flight
/// waits on the lock the whole time (`--lock-timeout 30`), the queue moves to the spool while the lock still holds, and
/// the peak RSS stays within the budget plus 64 MiB. Every row arrives once (`load --verify`).
fn table_lock() -> Result<(), Failed> {
    let db = url()?;
    let table = fresh_table("lock");
    let t = table.to_string();
    let budget = format!("{BUDGET_MIB}MiB");
    let mut serve = Serve::start(
        &["--database-url", &db, "--table", &t],
        &["--max-queue-bytes", &budget, "--lock-timeout", "30"],
    )?;
    let load = {
        let (url, db, t) = (serve.url(), db.clone(), t.clone());
        std::thread::spawn(move || {
            run(&[
                "load",
                "--url",
                &url,
                "--duration",
                "16",
                "--concurrency",
                "8",
                "--verify",
                "--verify-timeout",
                "60",
                "--database-url",
                &db,
                "--table",
                &t,
            ])
        })
    };
    std::thread::sleep(Duration::from_secs(2));
    let locked_for = Duration::from_secs(10);
    let mut spooled_while_locked = 0;
    block_on(async {
        let pool = crate::common::pool()?;
        let mut client = pool.get().await?;
        let tx = client.transaction().await?;
        tx.batch_execute(&format!(
            "LOCK TABLE {} IN ACCESS EXCLUSIVE MODE",
            table.quoted()
        ))
        .await?;
        tokio::time::sleep(locked_for - Duration::from_secs(1)).await;
        let (_, metrics) = http_get(&serve.addr, "/metrics")?;
        spooled_while_locked = metric(&metrics, "pglogsink_records_spooled_total").unwrap_or(0);
        tokio::time::sleep(Duration::from_secs(1)).await;
        tx.commit().await?;
        Ok(())
    })?;
    let load = load.join().map_err(|_| "the load thread panicked")??;
    let stdout = text(&load.stdout);
    // While the spooled backlog is written after the lock, the queue may
    // meet its budget and a few requests be answered 503 (taking nothing):
    // every 200 is counted by --verify.
    check(
        stdout.contains(": OK") && stdout.contains(" 0 connection errors)"),
        || format!("load: {stdout}\n{}", text(&load.stderr)),
    )?;
    let peak_mib = peak_rss_kib(serve.pid()?)? / 1024;
    serve.signal("-INT")?;
    let out = serve.wait()?;
    let stderr = text(&out.stderr);
    check(
        out.status.success() && stderr.contains("nothing lost"),
        || stderr.clone(),
    )?;
    eprintln!(
        "    lock held {locked_for:?}: peak RSS {peak_mib} MiB (budget {BUDGET_MIB} MiB), \
         {spooled_while_locked} records spooled while it held; {}; {}",
        stdout
            .lines()
            .find(|l| l.starts_with("requests:"))
            .unwrap_or(""),
        stdout.lines().last().unwrap_or("")
    );
    check(spooled_while_locked > 0, || {
        "nothing moved to the spool while the lock held every COPY".into()
    })?;
    check(peak_mib <= BUDGET_MIB + 64, || {
        format!("peak RSS {peak_mib} MiB with a budget of {BUDGET_MIB} MiB")
    })
}

/// The server is stopped under load with `--max-queue-bytes 1MiB
/// --max-spool-bytes 1MiB`: once both are full, requests get 503 with
/// `Retry-After`, `/readyz` says why, `pglogsink_records_lost_total` counts
/// each record handed back, and once the server is back every acknowledged
/// request's row is in the table exactly once.
fn full_spool() -> Result<(), Failed> {
    let server = EmbeddedPostgres::temporary()?;
    let result = full_spool_on(&server);
    server.stop()?;
    result
}

fn full_spool_on(server: &EmbeddedPostgres) -> Result<(), Failed> {
    let table = fresh_table("full");
    let t = table.to_string();
    let db = server.url();
    // The service's own tracing lines stay out of the table, so that every
    // record handed back is a request's (a 503 also makes an access line).
    let mut serve = Serve::start_with_env(
        &["--database-url", &db, "--table", &t],
        &[
            "--max-queue-bytes",
            "1MiB",
            "--max-spool-bytes",
            "1MiB",
            "--spool-min-free",
            "0",
        ],
        &[("PGLOGSINK_TABLE_FILTER", "off")],
    )?;
    server.stop_server()?;
    let tally = Arc::new(Tally::default());
    let workers: Vec<_> = (0..4)
        .map(|w| {
            let (addr, tally) = (serve.addr.clone(), tally.clone());
            std::thread::spawn(move || drive(&addr, w, &tally))
        })
        .collect();
    for worker in workers {
        worker.join().map_err(|_| "a request thread panicked")??;
    }
    let (ok, refused) = (
        tally.ok.load(Ordering::Relaxed),
        tally.refused.load(Ordering::Relaxed),
    );
    check(refused > 0, || format!("no request was refused ({ok} ok)"))?;
    check(tally.retry_after.load(Ordering::Relaxed), || {
        "a 503 came without Retry-After".into()
    })?;
    let (status, body) = http_get(&serve.addr, "/readyz")?;
    check(
        status == 503 && body.contains("the log sink is full"),
        || format!("/readyz: {status} {body}"),
    )?;
    let (_, metrics) = http_get(&serve.addr, "/metrics")?;
    let handed_back = metric(
        &metrics,
        r#"pglogsink_records_lost_total{reason="sink_full"}"#,
    );
    check(handed_back == Some(refused), || {
        format!("{refused} requests got 503 but the metric says {handed_back:?}:\n{metrics}")
    })?;

    server.start_server()?;
    let deadline = Instant::now() + Duration::from_secs(60);
    while http_get(&serve.addr, "/readyz")?.0 != 200 {
        check(Instant::now() < deadline, || {
            "not ready 60 s after the server came back".into()
        })?;
        std::thread::sleep(Duration::from_millis(200));
    }
    serve.signal("-INT")?;
    let out = serve.wait()?;
    let stderr = text(&out.stderr);
    check(out.status.success(), || stderr.clone())?;
    let (rows, distinct) = block_on_rows(server, &table)?;
    eprintln!(
        "    {ok} requests acknowledged, {refused} refused with 503; {rows} rows ({distinct} distinct)"
    );
    check(rows == ok as i64 && distinct == rows, || {
        format!("{ok} acknowledged but {rows} rows ({distinct} distinct); serve said: {stderr}")
    })
}

#[derive(Default)]
struct Tally {
    ok: AtomicU64,
    refused: AtomicU64,
    retry_after: AtomicBool,
}

/// Requests until this worker has seen 50 refusals (or 30,000 requests).
fn drive(addr: &str, worker: u32, tally: &Tally) -> Result<(), Failed> {
    let mut refused = 0;
    for i in 0..30_000 {
        let path = format!("/recipes/{worker}-{i}");
        let response = http_get_raw(addr, &path, &[("x-run-id", "full-spool")])?;
        match status_of(&response).unwrap_or(0) {
            200 => tally.ok.fetch_add(1, Ordering::Relaxed),
            503 => {
                refused += 1;
                if response
                    .to_ascii_lowercase()
                    .contains("\r\nretry-after: 5\r\n")
                {
                    tally.retry_after.store(true, Ordering::Relaxed);
                }
                tally.refused.fetch_add(1, Ordering::Relaxed)
            }
            other => return Err(format!("unexpected status {other}: {response}").into()),
        };
        if refused >= 50 {
            break;
        }
    }
    Ok(())
}

fn block_on_rows(
    server: &EmbeddedPostgres,
    table: &pglogsink::TableName,
) -> Result<(i64, i64), Failed> {
    let mut counts = (0, 0);
    block_on(async {
        let pool = pglogsink::pool(server.config(), 1)?;
        let client = pool.get().await?;
        let row = client
            .query_one(
                &format!(
                    "SELECT count(*), count(DISTINCT fields->>'request_id') FROM {} \
                     WHERE fields->>'run_id' = 'full-spool'",
                    table.quoted()
                ),
                &[],
            )
            .await?;
        counts = (row.get(0), row.get(1));
        Ok(())
    })?;
    Ok(counts)
}

/// The value of a counter line `name value` in Prometheus text.
pub(crate) fn metric(text: &str, name: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .map(|v| v as u64)
}

/// Peak resident set size of a process (VmHWM), in KiB.
pub(crate) fn peak_rss_kib(pid: u32) -> Result<u64, Failed> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .ok_or_else(|| "no VmHWM in /proc/<pid>/status".into())
}
