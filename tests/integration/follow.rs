//! `logs --follow` and the viewer's `/api/tail` while another session holds
//! a transaction open (`BEGIN; SELECT txid_current();`, idle, as a
//! forgotten psql session, a long report or `pg_dump` would): 300,000 rows
//! committed behind it, by two writers whose transactions commit out of id
//! order, are all printed, each once, most of them within 10 s of the last
//! commit. Before, both printed the first 10,000 and froze.

use std::collections::HashSet;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::time::{Duration, Instant};

use libtest_mimic::{Failed, Trial};
use pglogsink::TableName;

use crate::common::{
    async_trial, check, copy_lines, exit_within, fresh_table, pool, signal, url, CHECK_TIMES,
};
use crate::service::{Serve, BIN};

/// Rows written behind the open transaction.
const ROWS: usize = 300_000;

/// Held by each trial while it runs: the two do not share the cores with
/// each other, only with the other tests.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
/// Rows per writing transaction.
const PER_COMMIT: usize = 1_000;

pub fn trials() -> Vec<Trial> {
    vec![
        async_trial(
            "follow::logs_follow_goes_on_behind_an_idle_open_transaction",
            logs_follow,
        ),
        async_trial(
            "follow::api_tail_goes_on_behind_an_idle_open_transaction",
            api_tail,
        ),
    ]
}

async fn logs_follow() -> Result<(), Failed> {
    let _turn = ONE_AT_A_TIME.lock().await;
    let table = fresh_table("behind");
    let pool = pool()?;
    pglogsink::migrate(&pool, &table).await?;
    let holder = open_transaction(&pool).await?;
    copy_rows(&pool, &table, 1).await?;
    let mut child = Command::new(BIN)
        .args([
            "logs", "--follow", "--json", "--target", "behind", "--limit", "1",
        ])
        .args(["--database-url", &url()?, "--table", &table.to_string()])
        .env_remove("DATABASE_URL")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()?;
    let stdout = child.stdout.take().ok_or("no stdout")?;
    let (tx, ids) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            let id = serde_json::from_str::<Id>(&line).map_or(-1, |row| row.id);
            if tx.send(vec![id]).is_err() {
                break;
            }
        }
    });
    let outcome = behind_an_open_transaction(&table, holder, &ids, "logs --follow").await;
    stop(&mut child);
    outcome
}

async fn api_tail() -> Result<(), Failed> {
    let _turn = ONE_AT_A_TIME.lock().await;
    let table = fresh_table("behind");
    let db = url()?;
    let serve = Serve::start(&["--database-url", &db, "--table", &table.to_string()], &[])?;
    let pool = pool()?;
    let holder = open_transaction(&pool).await?;
    copy_rows(&pool, &table, 1).await?;
    let mut stream = TcpStream::connect(&serve.addr)?;
    // HTTP/1.0: the events come unchunked until the connection closes.
    write!(
        stream,
        "GET /api/tail?target=behind&limit=1 HTTP/1.0\r\nHost: {}\r\n\r\n",
        serve.addr
    )?;
    let (tx, ids) = mpsc::channel();
    let reader = stream.try_clone()?;
    std::thread::spawn(move || {
        for line in BufReader::new(reader).lines() {
            let Ok(line) = line else { break };
            let Some(data) = line.strip_prefix("data: ") else {
                continue;
            };
            let rows: Vec<Id> = serde_json::from_str(data).unwrap_or_default();
            let batch = rows.iter().map(|r| r.id).collect();
            if tx.send(batch).is_err() {
                break;
            }
        }
    });
    let outcome = behind_an_open_transaction(&table, holder, &ids, "/api/tail").await;
    let _ = stream.shutdown(std::net::Shutdown::Both);
    outcome
}

/// A row's id (the rest of the row is skipped, not built).
#[derive(serde::Deserialize)]
struct Id {
    id: i64,
}

/// A session in an idle transaction that holds a transaction id.
async fn open_transaction(
    pool: &pglogsink::deadpool_postgres::Pool,
) -> Result<pglogsink::deadpool_postgres::Object, Failed> {
    let holder = pool.get().await?;
    holder.batch_execute("BEGIN; SELECT txid_current()").await?;
    Ok(holder)
}

/// With `holder`'s transaction open since before the follower started (its
/// first output, the newest rows, is the one row written before), write
/// [`ROWS`] rows and count the ids the follower then shows: at least 95%
/// within 10 s of the last commit, all within 60 s, none twice.
async fn behind_an_open_transaction(
    table: &TableName,
    holder: pglogsink::deadpool_postgres::Object,
    ids: &Receiver<Vec<i64>>,
    what: &str,
) -> Result<(), Failed> {
    let pool = pool()?;
    let first = ids
        .recv_timeout(Duration::from_secs(30))
        .map_err(|e| format!("{what} showed nothing within 30 s: {e}"))?;
    check(first.len() == 1, || {
        format!("{what} started with {first:?}")
    })?;

    let writers: Vec<_> = (0..2)
        .map(|_| {
            let (pool, table) = (pool.clone(), table.clone());
            tokio::spawn(async move {
                for _ in 0..ROWS / 2 / PER_COMMIT {
                    copy_rows(&pool, &table, PER_COMMIT).await?;
                }
                Ok::<(), Failed>(())
            })
        })
        .collect();
    for writer in writers {
        writer.await??;
    }
    let committed = Instant::now();

    let mut seen = HashSet::new();
    let mut twice = 0;
    let mut within_10s = None;
    let deadline = committed + Duration::from_secs(60);
    while seen.len() < ROWS && Instant::now() < deadline {
        if within_10s.is_none() && committed.elapsed() >= Duration::from_secs(10) {
            within_10s = Some(seen.len());
        }
        let Ok(batch) = ids.recv_timeout(Duration::from_millis(100)) else {
            continue;
        };
        for id in batch {
            if !seen.insert(id) || id == first[0] {
                twice += 1;
            }
        }
    }
    let all_after = committed.elapsed();
    let within_10s = within_10s.unwrap_or(seen.len());
    // Nothing more comes (no row twice, late).
    std::thread::sleep(Duration::from_secs(1));
    twice += ids.try_iter().flatten().count();
    holder.batch_execute("ROLLBACK").await?;
    eprintln!(
        "    {what}: {within_10s} of {ROWS} rows committed behind an open transaction shown \
         within 10 s of the last commit; {} in {all_after:.1?}; {twice} twice",
        seen.len()
    );
    check(twice == 0, || format!("{what} showed {twice} rows twice"))?;
    // How fast is a promise held only on a quiet machine (see check_time).
    if std::env::var_os(CHECK_TIMES).is_some() {
        check(within_10s * 100 >= ROWS * 95, || {
            format!("{what} showed {within_10s} of {ROWS} rows within 10 s")
        })?;
    }
    check(seen.len() == ROWS, || {
        format!("{what} showed {} of {ROWS} rows within 60 s", seen.len())
    })
}

/// `rows` rows in one COPY transaction.
async fn copy_rows(
    pool: &pglogsink::deadpool_postgres::Pool,
    table: &TableName,
    rows: usize,
) -> Result<(), Failed> {
    let mut client = pool.get().await?;
    let tx = client.transaction().await?;
    let line = "now\tinfo\tbehind\tbehind an open transaction";
    copy_lines(&tx, table, line, rows).await?;
    tx.commit().await?;
    Ok(())
}

fn stop(child: &mut Child) {
    let _ = signal(child.id(), "-INT");
    let _ = exit_within(child, Duration::from_secs(10));
    let _ = child.kill();
    let _ = child.wait();
}
