//! The web viewer on a large Log table: how fast `pglogsink serve` answers
//! the page's requests, and how soon headless Chromium shows the first page.
//!
//! ```sh
//! cargo bench --bench viewer -- --rows 10000000 --keep
//! ```
//!
//! Fills a table of `--rows` rows (default 10 million) spread over the last
//! `--days` days (default 2, one partition per day) with one
//! `INSERT ... SELECT generate_series`, VACUUM ANALYZEs it, starts the
//! `pglogsink` binary's `serve` on it, then times each API request the page
//! makes `--runs` times (median and slowest, after one warm-up). Last, when
//! `chromium` and `chromedriver` are installed, it opens the page in
//! headless Chromium `--runs` times and prints when the first page of rows
//! was in the page (`performance.now()` at that moment: from the start of
//! navigation, so it includes loading the HTML, the script, and the API
//! call). The target is 300 ms.
//!
//! Uses `DATABASE_URL` when set, else a private throw-away cluster. With
//! `--keep` the table stays and a later run with as many `--rows` reuses it.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use fantoccini::ClientBuilder;
use pglogsink::embedded::EmbeddedPostgres;
use pglogsink::{Maintenance, TableName};
use serde_json::{json, Value};

type Fail = Box<dyn std::error::Error + Send + Sync>;

struct Args {
    rows: i64,
    days: i64,
    runs: usize,
    keep: bool,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        rows: 10_000_000,
        days: 2,
        runs: 7,
        keep: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut number = |name: &str| -> Result<i64, String> {
            it.next()
                .ok_or(format!("{name} needs a value"))?
                .parse()
                .map_err(|e| format!("{name}: {e}"))
        };
        match arg.as_str() {
            "--rows" => args.rows = number("--rows")?,
            "--days" => args.days = number("--days")?,
            "--runs" => args.runs = number("--runs")? as usize,
            "--keep" => args.keep = true,
            "--bench" => {}
            other => {
                return Err(format!(
                    "unknown argument {other:?}; usage: viewer [--rows N] [--days D] [--runs R] [--keep]"
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
            eprintln!("viewer: {e}");
            return ExitCode::from(2);
        }
    };
    let (server, url) = match std::env::var("DATABASE_URL") {
        Ok(url) => (None, url),
        Err(_) => match EmbeddedPostgres::temporary() {
            Ok(server) => {
                let url = server.url();
                (Some(server), url)
            }
            Err(e) => {
                eprintln!("viewer: {e}");
                return ExitCode::FAILURE;
            }
        },
    };
    let result = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(Fail::from)
        .and_then(|rt| rt.block_on(run(&args, &url)));
    if let Some(server) = server {
        let _ = server.stop();
    }
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("viewer: FAILED: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: &Args, url: &str) -> Result<(), Fail> {
    let table = TableName::parse("bench_viewer")?;
    let pool = pglogsink::pool(pglogsink::parse_url(url)?, 2)?;
    let client = pool.get().await?;
    let present: i64 = client
        .query_one(
            "SELECT CASE WHEN to_regclass('bench_viewer') IS NULL THEN -1 \
             ELSE (SELECT count(*) FROM bench_viewer) END",
            &[],
        )
        .await
        .map(|r| r.get(0))
        // No such table: PostgreSQL refuses the whole query.
        .unwrap_or(-1);
    drop(client);
    if present >= args.rows {
        eprintln!("viewer: reusing {table} ({present} rows)");
    } else {
        fill(&pool, &table, args).await?;
    }

    let serve = Serve::start(url, &table)?;
    println!(
        "\n{:<48} {:>10} {:>10}",
        "request (as the page sends it)", "median ms", "max ms"
    );
    let tz = "tz=UTC";
    for path in [
        "/".to_owned(),
        format!("/api/logs?limit=100&{tz}"),
        format!("/api/logs?limit=100&level=error&{tz}"),
        format!("/api/logs?limit=100&grep=timeout&since=1h&{tz}"),
        format!("/api/logs?limit=100&field=status%3D500&since=15m&{tz}"),
        format!("/api/histogram?buckets=60&since=1h&{tz}"),
        format!("/api/histogram?buckets=60&{tz}"),
    ] {
        let mut times = Vec::new();
        for run in 0..=args.runs {
            let start = Instant::now();
            let status = get(&serve.addr, &path)?;
            if status != 200 {
                return Err(format!("{path} answered {status}").into());
            }
            if run > 0 {
                times.push(start.elapsed());
            }
        }
        times.sort();
        println!(
            "{path:<48} {:>10.1} {:>10.1}",
            times[times.len() / 2].as_secs_f64() * 1e3,
            times[times.len() - 1].as_secs_f64() * 1e3
        );
    }
    browser(&serve, args.runs).await?;
    drop(serve);
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

/// The table, `args.rows` rows over the last `args.days` days, one
/// partition per day; 1% warnings, 0.1% errors, a status field.
async fn fill(
    pool: &pglogsink::deadpool_postgres::Pool,
    table: &TableName,
    args: &Args,
) -> Result<(), Fail> {
    let start = Instant::now();
    let client = pool.get().await?;
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
             FROM generate_series(1, {days}) d; ",
            days = args.days
        ))
        .await?;
    Maintenance::default().run(pool, table).await?;
    client
        .batch_execute(&format!("DELETE FROM {t} WHERE target = 'marker'"))
        .await?;
    eprintln!("viewer: filling {} rows...", args.rows);
    let rows = args.rows;
    let span = args.days * 86_400_000_000;
    client
        .batch_execute(&format!(
            "INSERT INTO {t} (\"timestamp\", level, target, message, thread_id, fields) \
             SELECT now() - make_interval(secs => ({span} - i * ({span}::float8 / {rows})) / 1e6), \
                    CASE WHEN i % 1000 = 0 THEN 'error' WHEN i % 100 = 0 THEN 'warn' \
                         WHEN i % 3 = 0 THEN 'debug' ELSE 'info' END::pglogsink_level, \
                    (ARRAY['http', 'shop::orders', 'shop::payments', 'db'])[1 + i % 4], \
                    CASE WHEN i % 1000 = 0 THEN 'payment timeout after 30 s' \
                         ELSE 'GET /recipes/' || (i % 977) || ' answered' END, \
                    i % 16, \
                    jsonb_build_object('request_id', 'r' || i / 2, \
                                       'status', CASE WHEN i % 1000 = 0 THEN 500 ELSE 200 END) \
             FROM generate_series(1, {rows}) i"
        ))
        .await?;
    eprintln!(
        "viewer: filled in {:.0} s; VACUUM ANALYZE...",
        start.elapsed().as_secs_f64()
    );
    client.batch_execute(&format!("VACUUM ANALYZE {t}")).await?;
    eprintln!("viewer: ready after {:.0} s", start.elapsed().as_secs_f64());
    Ok(())
}

/// The page in headless Chromium, when it is installed: when its first
/// page of rows was drawn, `runs` times in one browser.
async fn browser(serve: &Serve, runs: usize) -> Result<(), Fail> {
    let (Some(chromium), Some(chromedriver)) = (which("chromium"), which("chromedriver")) else {
        println!("\n(chromium or chromedriver not installed: no browser figure)");
        return Ok(());
    };
    let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let mut driver = Command::new(chromedriver)
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    let result = async {
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            if Instant::now() > deadline {
                return Err(Fail::from("chromedriver did not start"));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let mut caps = serde_json::Map::new();
        caps.insert(
            "goog:chromeOptions".into(),
            json!({"binary": chromium, "args": ["--headless=new", "--no-sandbox",
                   "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1280,800"]}),
        );
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        let browser = ClientBuilder::new(connector)
            .capabilities(caps)
            .connect(&format!("http://127.0.0.1:{port}"))
            .await?;
        let mut times = Vec::new();
        for run in 0..=runs {
            browser.goto(&format!("http://{}/", serve.addr)).await?;
            let deadline = Instant::now() + Duration::from_secs(30);
            let at = loop {
                let value = browser
                    .execute(
                        "return document.body.dataset.state === 'ready' && window.__firstRender;",
                        vec![],
                    )
                    .await?;
                if let Value::Number(ms) = value {
                    break ms.as_f64().unwrap_or(f64::NAN);
                }
                if Instant::now() > deadline {
                    return Err(Fail::from("the page showed no rows within 30 s"));
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            };
            let rows = browser
                .execute(
                    "return document.querySelectorAll('#rows tbody tr.row').length;",
                    vec![],
                )
                .await?;
            // Where the time went: the HTML, and the first page's API call.
            let phases = browser
                .execute(
                    "const n = performance.getEntriesByType('navigation')[0]; \
                     const api = performance.getEntriesByType('resource') \
                         .find(r => r.name.includes('/api/logs')); \
                     return [Math.round(n.responseEnd), Math.round(api.startTime), \
                             Math.round(api.responseEnd)];",
                    vec![],
                )
                .await?;
            // The histogram comes after the rows; let it finish before the
            // next load, as a user would.
            let deadline = Instant::now() + Duration::from_secs(30);
            while browser
                .execute(
                    "return document.getElementById('axis-to').textContent;",
                    vec![],
                )
                .await?
                .as_str()
                .is_some_and(str::is_empty)
                && Instant::now() < deadline
            {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            if run == 0 {
                println!("\nbrowser: first page of {rows} rows drawn, ms after navigation began:");
                println!(
                    "  cold (a new browser's first page): {at:.0} (HTML received, /api/logs \
                     sent and received, ms: {phases})"
                );
            } else {
                if run == 1 {
                    println!(
                        "  warm, first run: {at:.0} (HTML received, /api/logs sent and \
                         received, ms: {phases})"
                    );
                }
                times.push(at);
            }
        }
        times.sort_by(f64::total_cmp);
        println!(
            "  warm: median {:.0}, max {:.0} (target: 300)",
            times[times.len() / 2],
            times[times.len() - 1]
        );
        browser.close().await?;
        Ok(())
    }
    .await;
    let _ = driver.kill();
    let _ = driver.wait();
    result
}

fn which(name: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

/// `pglogsink serve` on the table, stopped on drop.
struct Serve {
    child: Child,
    addr: String,
}

impl Serve {
    fn start(url: &str, table: &TableName) -> Result<Serve, Fail> {
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let addr = format!("127.0.0.1:{port}");
        let spool = std::env::temp_dir().join(format!("pglogsink-bench-viewer-{port}"));
        let child = Command::new(env!("CARGO_BIN_EXE_pglogsink"))
            .args(["serve", "--listen", &addr, "--table", &table.to_string()])
            .args(["--database-url", url])
            .env("PGLOGSINK_SPOOL_DIR", &spool)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()?;
        let serve = Serve { child, addr };
        let deadline = Instant::now() + Duration::from_secs(60);
        while get(&serve.addr, "/healthz").is_err() {
            if Instant::now() > deadline {
                return Err("serve did not answer within 60 s".into());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(serve)
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-INT", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
    }
}

/// GET `path` over HTTP/1.0, the whole body read; the status code.
fn get(addr: &str, path: &str) -> Result<u16, Fail> {
    let mut stream = TcpStream::connect(addr)?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n")?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response)?;
    let head = String::from_utf8_lossy(&response[..response.len().min(64)]).into_owned();
    head.split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("no status line from {path}: {head:?}").into())
}
