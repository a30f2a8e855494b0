//! The `pglogsink` binary end to end: `serve`, `load --verify`, `logs`,
//! Ctrl-C, and a fatal stop when the Log table is dropped under load.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use libtest_mimic::{Failed, Trial};
use pglogsink::TableName;

use crate::common::{
    check, check_time, exit_within, fresh_table, signal, url, wait_until, Captured,
};

pub(crate) const BIN: &str = env!("CARGO_BIN_EXE_pglogsink");

pub fn trials() -> Vec<Trial> {
    vec![
        Trial::test(
            "service::load_verify_then_ctrl_c_exits_cleanly",
            load_verify_then_ctrl_c,
        ),
        Trial::test(
            "service::metrics_and_readyz_describe_the_running_service",
            metrics_and_readyz,
        ),
        Trial::test(
            "service::dropping_the_table_under_load_stops_the_service",
            dropping_the_table_stops_the_service,
        ),
        Trial::test(
            "service::embedded_default_starts_and_stops_its_own_postgres",
            embedded_default,
        ),
        Trial::test(
            "service::help_lists_every_flag_with_its_env_var",
            help_lists_flags,
        ),
        Trial::test(
            "service::rust_log_info_prints_no_line_per_request_and_http_debug_does",
            access_lines_on_stderr,
        ),
    ]
}

/// What the README's `RUST_LOG` row says: a request's access line is at
/// debug (target `http`), so `info` prints none and `info,http=debug` one.
fn access_lines_on_stderr() -> Result<(), Failed> {
    let db = url()?;
    let table = fresh_table("rustlog").to_string();
    let db_args = ["--database-url", &db, "--table", &table];
    for (filter, shown) in [("info", false), ("info,http=debug", true)] {
        let mut serve = Serve::start_with_env(&db_args, &[], &[("RUST_LOG", filter)])?;
        let (status, _) = http_get(&serve.addr, "/recipes/7")?;
        check(status == 200, || format!("GET /recipes/7: {status}"))?;
        serve.signal("-INT")?;
        let out = serve.wait()?;
        let stderr = text(&out.stderr);
        check(out.status.success(), || format!("serve: {stderr}"))?;
        check(stderr.contains("GET /recipes/7 200") == shown, || {
            format!(
                "RUST_LOG={filter}: access line shown: {}; stderr:\n{stderr}",
                !shown
            )
        })?;
    }
    Ok(())
}

pub(crate) fn free_port() -> Result<u16, Failed> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// A running `pglogsink serve`, killed if the test fails before it stops it.
/// Its stdout and stderr are read as it runs (a service that logs more
/// than a pipe holds would otherwise block on its next line).
pub(crate) struct Serve {
    child: Option<Child>,
    output: Option<Captured>,
    pub(crate) addr: String,
    spool: std::path::PathBuf,
}

impl Serve {
    pub(crate) fn start(db_args: &[&str], extra: &[&str]) -> Result<Serve, Failed> {
        Serve::start_with_env(db_args, extra, &[])
    }

    pub(crate) fn start_with_env(
        db_args: &[&str],
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> Result<Serve, Failed> {
        let addr = format!("127.0.0.1:{}", free_port()?);
        // Each service gets a spool of its own, never one in the working tree.
        let spool = std::env::temp_dir().join(format!(
            "pglogsink-svc-spool-{}-{}",
            std::process::id(),
            addr.replace([':', '.'], "-")
        ));
        let mut child = Command::new(BIN)
            .arg("serve")
            .args(["--listen", &addr])
            .args(db_args)
            .args(extra)
            .env_remove("DATABASE_URL")
            .env("PGLOGSINK_SPOOL_DIR", &spool)
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?;
        let output = Some(Captured::of(&mut child));
        let mut serve = Serve {
            child: Some(child),
            output,
            addr,
            spool,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        while http_get(&serve.addr, "/healthz").is_err() {
            if let Some(status) = serve
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                let out = serve.wait()?;
                return Err(format!(
                    "serve exited early ({status}): {}",
                    String::from_utf8_lossy(&out.stderr)
                )
                .into());
            }
            if Instant::now() > deadline {
                return Err("serve did not answer /healthz within 60 s".into());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(serve)
    }

    pub(crate) fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Wait (at most 30 s) until its `/metrics` shows the counter `name`
    /// (with its labels) at `at_least` or more: the signal a test acts on.
    pub(crate) fn wait_for_metric(&self, name: &str, at_least: u64) -> Result<(), Failed> {
        wait_until(
            &format!("{name} >= {at_least}"),
            Duration::from_secs(30),
            || {
                let (_, metrics) = http_get(&self.addr, "/metrics")?;
                Ok(crate::limits::metric(&metrics, name).is_some_and(|n| n >= at_least))
            },
        )
    }

    pub(crate) fn pid(&self) -> Result<u32, Failed> {
        Ok(self.child.as_ref().ok_or("not running")?.id())
    }

    pub(crate) fn signal(&self, sig: &str) -> Result<(), Failed> {
        signal(self.pid()?, sig)
    }

    /// Wait (at most 30 s) for the process to exit and collect its output.
    pub(crate) fn wait(&mut self) -> Result<Output, Failed> {
        let mut child = self.child.take().ok_or("not running")?;
        let output = self.output.take().ok_or("not running")?;
        if let Some(status) = exit_within(&mut child, Duration::from_secs(30))? {
            return Ok(output.collect(status));
        }
        let _ = child.kill();
        let out = output.collect(child.wait()?);
        Err(format!(
            "serve did not exit within 30 s: {}",
            String::from_utf8_lossy(&out.stderr)
        )
        .into())
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = signal(child.id(), "-INT");
            let _ = child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.spool);
    }
}

/// A minimal HTTP/1.0 GET: status code and body.
pub(crate) fn http_get(addr: &str, path: &str) -> Result<(u16, String), Failed> {
    let response = http_get_raw(addr, path, &[])?;
    let status = status_of(&response).ok_or("no status line")?;
    let body = response.split("\r\n\r\n").nth(1).unwrap_or("").to_owned();
    Ok((status, body))
}

/// A minimal HTTP/1.0 GET with `headers`: the whole response, head and body.
pub(crate) fn http_get_raw(
    addr: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> Result<String, Failed> {
    let response = http_raw(addr, "GET", path, headers, b"")?;
    Ok(String::from_utf8_lossy(&response).into_owned())
}

/// A minimal HTTP/1.0 request: the whole response, head and body.
pub(crate) fn http_raw(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Result<Vec<u8>, Failed> {
    let mut stream = TcpStream::connect(addr)?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut request = format!("{method} {path} HTTP/1.0\r\nHost: {addr}\r\n");
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    if !body.is_empty() {
        request.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes())?;
    stream.write_all(body)?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response)?;
    Ok(response)
}

/// The status code of a raw response.
pub(crate) fn status_of(response: &str) -> Option<u16> {
    response.split(' ').nth(1).and_then(|s| s.parse().ok())
}

pub(crate) fn run(args: &[&str]) -> Result<Output, Failed> {
    Ok(Command::new(BIN)
        .args(args)
        .env_remove("DATABASE_URL")
        .output()?)
}

pub(crate) fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn load_verify_then_ctrl_c() -> Result<(), Failed> {
    let db = url()?;
    let table = fresh_table("svc").to_string();
    let db_args = ["--database-url", &db, "--table", &table];
    // Access lines are stored only on request: ask for them here, to check
    // that every row of a request carries its id.
    let mut serve = Serve::start_with_env(
        &db_args,
        &["--batch-size", "100"],
        &[("PGLOGSINK_TABLE_FILTER", "info,http=debug")],
    )?;
    let (status, body) = http_get(&serve.addr, "/recipes/42")?;
    check(status == 200 && body == "recipe", || {
        format!("{status} {body:?}")
    })?;

    let load = run(&[
        "load",
        "--url",
        &serve.url(),
        "--requests",
        "3000",
        "--concurrency",
        "20",
        "--verify",
        "--database-url",
        &db,
        "--table",
        &table,
    ])?;
    let stdout = text(&load.stdout);
    check(load.status.success(), || {
        format!("load failed: {stdout}\n{}", text(&load.stderr))
    })?;
    check(stdout.contains("3000 ok") && stdout.contains("OK"), || {
        stdout.clone()
    })?;

    let logs = run(&[
        "logs",
        "--database-url",
        &db,
        "--table",
        &table,
        "--target",
        "recipes",
        "--limit",
        "5",
    ])?;
    let shown = text(&logs.stdout);
    check(logs.status.success() && shown.lines().count() == 5, || {
        format!("logs: {shown}{}", text(&logs.stderr))
    })?;
    check(
        shown
            .lines()
            .all(|l| l.contains("GET /recipes/") && l.contains("run_id")),
        || shown.clone(),
    )?;
    every_row_of_a_request_has_its_id(&db, &table)?;

    serve.signal("-INT")?;
    let out = serve.wait()?;
    let stderr = text(&out.stderr);
    check(out.status.success(), || {
        format!("serve exit {:?}: {stderr}", out.status)
    })?;
    // Each request wrote its `recipes` row with `Logger` and its `http` row
    // through the tracing layer (plus the probes' and the service's own lines).
    let written = stderr
        .split("wrote ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .and_then(|n| n.parse::<u64>().ok())
        .unwrap_or(0);
    check(written >= 6002 && stderr.contains("nothing lost"), || {
        stderr.clone()
    })
}

/// A request's `recipes` row (written with `Logger`) and its `http` row
/// (from the tracing span) share its request id; only the first has the run id.
fn every_row_of_a_request_has_its_id(db: &str, table: &str) -> Result<(), Failed> {
    let db_args = ["--database-url", db, "--table", table, "--json"];
    let newest = run(&[
        &["logs", "--target", "recipes", "--limit", "1"],
        &db_args[..],
    ]
    .concat())?;
    let row: serde_json::Value = serde_json::from_str(text(&newest.stdout).trim())?;
    let request_id = row["fields"]["request_id"]
        .as_str()
        .ok_or_else(|| format!("no request_id in {row}"))?
        .to_owned();
    let rows = run(&[&["logs", "--request-id", &request_id], &db_args[..]].concat())?;
    let rows: Vec<serde_json::Value> = text(&rows.stdout)
        .lines()
        .map(serde_json::from_str)
        .collect::<Result<_, _>>()?;
    let targets: Vec<&str> = rows.iter().filter_map(|r| r["target"].as_str()).collect();
    check(targets == ["recipes", "http"], || {
        format!("rows of request {request_id}: {rows:?}")
    })?;
    let http = &rows[1];
    check(
        http["level"] == "debug"
            && http["fields"]["status"] == 200
            && http["fields"]["method"] == "GET"
            && http["fields"]["run_id"].is_null()
            && http["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("GET /recipes/") && m.ends_with(" 200")),
        || format!("http row {http}"),
    )
}

fn dropping_the_table_stops_the_service() -> Result<(), Failed> {
    let db = url()?;
    let table = fresh_table("drop");
    let table_arg = table.to_string();
    let mut serve = Serve::start(&["--database-url", &db, "--table", &table_arg], &[])?;
    let mut load = Command::new(BIN)
        .args([
            "load",
            "--url",
            &serve.url(),
            "--duration",
            "20",
            "--concurrency",
            "8",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    // Under load: the table is dropped once the load's rows are arriving.
    serve.wait_for_metric("pglogsink_records_written_total", 1)?;
    drop_table(&db, &table)?;
    let dropped = Instant::now();
    let out = serve.wait();
    let _ = load.kill();
    let _ = load.wait();
    let out = out?;
    let took = dropped.elapsed();
    let stderr = text(&out.stderr);
    check(!out.status.success(), || {
        format!("serve exited 0 after the table was dropped: {stderr}")
    })?;
    check_time(
        "serve's stop after the table was dropped",
        took,
        Duration::from_secs(10),
    )?;
    let fatal = stderr
        .lines()
        .find(|l| l.starts_with("pglogsink: fatal:"))
        .ok_or_else(|| stderr.clone())?;
    check(
        fatal.contains("42P01")
            && fatal.contains(&table_arg)
            && fatal.contains("migrate")
            && fatal.contains("not written"),
        || fatal.to_owned(),
    )
}

fn drop_table(db: &str, table: &TableName) -> Result<(), Failed> {
    crate::common::block_on(async {
        let pool = pglogsink::pool(pglogsink::parse_url(db)?, 1)?;
        pool.get()
            .await?
            .batch_execute(&format!("DROP TABLE {}", table.quoted()))
            .await?;
        Ok(())
    })
}

fn embedded_default() -> Result<(), Failed> {
    let dir = std::env::temp_dir().join(format!("pglogsink-svc-{}", std::process::id()));
    let data_dir = dir.to_string_lossy().into_owned();
    let result = (|| {
        let mut serve = Serve::start(&["--data-dir", &data_dir], &[])?;
        for i in 0..10 {
            http_get(&serve.addr, &format!("/recipes/{i}"))?;
        }
        // The sink writes asynchronously: give it a moment under load.
        let deadline = Instant::now() + Duration::from_secs(10);
        let logs = loop {
            let logs = run(&["logs", "--data-dir", &data_dir, "--limit", "3"])?;
            if text(&logs.stdout).lines().count() == 3 || Instant::now() > deadline {
                break logs;
            }
            std::thread::sleep(Duration::from_millis(100));
        };
        check(text(&logs.stdout).lines().count() == 3, || {
            text(&logs.stdout) + &text(&logs.stderr)
        })?;
        serve.signal("-TERM")?;
        let out = serve.wait()?;
        check(out.status.success(), || text(&out.stderr))?;
        check(no_postgres_for(&dir), || {
            "a postgres process for the data dir survived".into()
        })?;
        // `logs` starts the stopped cluster for as long as it runs.
        let logs = run(&[
            "logs",
            "--data-dir",
            &data_dir,
            "--target",
            "recipes",
            "--limit",
            "100",
        ])?;
        check(text(&logs.stdout).lines().count() == 10, || {
            text(&logs.stdout) + &text(&logs.stderr)
        })?;
        check(no_postgres_for(&dir), || {
            "`logs` left its postgres running".into()
        })
    })();
    let _ = std::fs::remove_dir_all(&dir);
    result
}

fn no_postgres_for(dir: &Path) -> bool {
    let pid_file = dir.join("pgdata").join("postmaster.pid");
    !pid_file.exists()
}

fn help_lists_flags() -> Result<(), Failed> {
    for (sub, flags) in [
        (
            "serve",
            &[
                "--listen",
                "--database-url",
                "--data-dir",
                "--table",
                "--batch-size",
                "--shutdown-timeout",
            ][..],
        ),
        (
            "load",
            &[
                "--url",
                "--concurrency",
                "--requests",
                "--duration",
                "--verify",
            ][..],
        ),
        (
            "logs",
            &[
                "--limit",
                "--database-url",
                "--data-dir",
                "--level",
                "--since",
                "--until",
                "--grep",
                "--target",
                "--field",
                "--request-id",
                "--follow",
                "--json",
                "PGLOGSINK_REQUEST_ID",
                "PGLOGSINK_FOLLOW",
            ][..],
        ),
        ("migrate", &["--database-url", "--table"][..]),
    ] {
        let out = run(&[sub, "--help"])?;
        let help = text(&out.stdout);
        for flag in flags {
            check(help.contains(flag), || {
                format!("`{sub} --help` does not mention {flag}")
            })?;
        }
        check(help.contains("[env: "), || {
            format!("`{sub} --help` names no environment variable")
        })?;
    }
    let bad = run(&["serve", "--batch-size", "0"])?;
    check(
        !bad.status.success() && text(&bad.stderr).contains("from 1 to"),
        || text(&bad.stderr),
    )
}

fn metrics_and_readyz() -> Result<(), Failed> {
    let db = url()?;
    let table = fresh_table("metrics").to_string();
    let mut serve = Serve::start(&["--database-url", &db, "--table", &table], &[])?;
    let (status, body) = http_get(&serve.addr, "/readyz")?;
    check(status == 200 && body.contains(r#""ready":true"#), || {
        format!("{status} {body}")
    })?;
    for i in 0..20 {
        http_get(&serve.addr, &format!("/recipes/{i}"))?;
    }
    // The sink writes asynchronously: wait until /metrics counts the rows.
    let deadline = Instant::now() + Duration::from_secs(10);
    let metrics = loop {
        let (status, body) = http_get(&serve.addr, "/metrics")?;
        check(status == 200, || format!("/metrics answered {status}"))?;
        let written = body
            .lines()
            .find_map(|l| l.strip_prefix("pglogsink_records_written_total "))
            .and_then(|v| v.trim().parse::<f64>().ok())
            .unwrap_or(0.0);
        if written >= 20.0 {
            break body;
        }
        check(Instant::now() < deadline, || {
            format!("{written} records written after 10 s:\n{body}")
        })?;
        std::thread::sleep(Duration::from_millis(50));
    };
    // A whole line: as a prefix, "... 2" would also match 200.
    check(
        metrics
            .lines()
            .any(|l| l == "pglogsink_records_written_total 20"),
        || format!("/metrics does not count 20 records written:\n{metrics}"),
    )?;
    for needle in [
        "pglogsink_records_enqueued_total",
        "pglogsink_queue_depth",
        "pglogsink_oldest_unwritten_seconds",
        "pglogsink_batch_rows_bucket",
        "pglogsink_copy_duration_seconds_bucket",
        r#"http_requests_total{route="/recipes/{id}",method="GET",status="200"} 20"#,
        r#"http_request_duration_seconds_bucket{route="/recipes/{id}""#,
        "# HELP pglogsink_records_written_total",
    ] {
        check(metrics.contains(needle), || {
            format!("/metrics lacks {needle:?}:\n{metrics}")
        })?;
    }
    serve.signal("-INT")?;
    let out = serve.wait()?;
    check(out.status.success(), || text(&out.stderr))
}
