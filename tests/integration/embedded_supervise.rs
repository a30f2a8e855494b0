//! Supervision of the private cluster: the default `serve` (its own
//! PostgreSQL) under load, its postmaster killed with SIGKILL as the OOM
//! killer would; the cluster must come back by itself and every
//! acknowledged request's row must arrive exactly once.

use std::net::TcpListener;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use libtest_mimic::{Failed, Trial};
use pglogsink::embedded::{EmbeddedPostgres, RestartPolicy};
use pglogsink::CancellationToken;

use crate::common::{block_on, check, signal};
use crate::service::{http_get, text, Serve, BIN};

/// How long the killed cluster may take to answer again: a poll (1 s), the
/// first delay (0.5 s), and crash recovery (about 2-5 s here), with room for
/// a machine busy with the other tests.
const BACK_WITHIN: Duration = Duration::from_secs(30);

pub fn trials() -> Vec<Trial> {
    vec![
        Trial::test(
            "embedded_supervise::killed_postmaster_comes_back_and_every_row_arrives_once",
            killed_postmaster,
        ),
        Trial::test(
            "embedded_supervise::a_cluster_that_cannot_start_is_given_up",
            cannot_start,
        ),
    ]
}

fn killed_postmaster() -> Result<(), Failed> {
    let dir = std::env::temp_dir().join(format!("pglogsink-supervise-{}", std::process::id()));
    let result = killed_postmaster_in(&dir);
    let _ = std::fs::remove_dir_all(&dir);
    result
}

fn killed_postmaster_in(dir: &Path) -> Result<(), Failed> {
    let data_dir = dir.to_string_lossy().into_owned();
    let pgdata = dir.join("pgdata");
    let mut serve = Serve::start(&["--data-dir", &data_dir], &[])?;
    let first = ready_postmaster(&pgdata).ok_or("no running postmaster after serve started")?;

    let mut load = Command::new(BIN)
        .args(["load", "--url", &serve.url(), "--duration", "10"])
        .args(["--concurrency", "4", "--verify", "--data-dir", &data_dir])
        .env_remove("DATABASE_URL")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    // Under load: the server is killed once the load's rows are arriving.
    serve.wait_for_metric("pglogsink_records_written_total", 1)?;
    let killed = Instant::now();
    signal(first, "-KILL")?;

    // Back by itself: a new postmaster, ready for connections.
    let second = loop {
        match ready_postmaster(&pgdata) {
            Some(pid) if pid != first => break pid,
            _ if killed.elapsed() > BACK_WITHIN => {
                let _ = load.kill();
                let _ = load.wait();
                let _ = serve.signal("-TERM");
                let out = serve.wait()?;
                return Err(format!(
                    "the cluster was not running again {BACK_WITHIN:?} after its postmaster was \
                     killed; serve said:\n{}",
                    text(&out.stderr)
                )
                .into());
            }
            _ => std::thread::sleep(Duration::from_millis(50)),
        }
    };
    let back_after = killed.elapsed();

    let load = load.wait_with_output()?;
    let stdout = text(&load.stdout);
    check(load.status.success() && stdout.contains(": OK"), || {
        format!("load --verify failed:\n{stdout}{}", text(&load.stderr))
    })?;
    let run_id = run_id(&stdout)?;
    let acknowledged = ok_count(&stdout)?;
    let server = EmbeddedPostgres::attach(dir)?.ok_or("the cluster is not running")?;
    let (rows, distinct) = rows_of_run(
        server.config(),
        &pglogsink::TableName::parse(pglogsink::DEFAULT_TABLE)?,
        &run_id,
    )?;
    check(rows == acknowledged && distinct == rows, || {
        format!(
            "run {run_id}: {acknowledged} requests acknowledged, {rows} rows, {distinct} \
             distinct request ids"
        )
    })?;

    let (_, metrics) = http_get(&serve.addr, "/metrics")?;
    check(
        metrics
            .lines()
            .any(|l| l == "pglogsink_embedded_restarts_total 1"),
        || format!("no restart counted in /metrics:\n{metrics}"),
    )?;

    serve.signal("-TERM")?;
    let out = serve.wait()?;
    let stderr = text(&out.stderr);
    check(out.status.success(), || {
        format!("serve exit {:?}: {stderr}", out.status)
    })?;
    check(
        stderr.contains("starting it again") && stderr.contains("runs again"),
        || format!("no supervision lines in serve's output:\n{stderr}"),
    )?;
    check(!pgdata.join("postmaster.pid").exists(), || {
        format!("serve left its restarted postmaster (pid {second}) running")
    })?;
    eprintln!(
        "    postmaster {first} killed, {second} ready {:.2} s later; {rows} rows for {acknowledged} \
         requests",
        back_after.as_secs_f64()
    );
    Ok(())
}

/// The postmaster killed and its port taken by someone else: the restarts
/// fail, and after `max_failed_starts` the supervisor gives up, cancelling
/// its token (which stops `serve`).
fn cannot_start() -> Result<(), Failed> {
    let pg = EmbeddedPostgres::temporary()?;
    let pgdata = pg.data_dir().join("pgdata");
    let pid = ready_postmaster(&pgdata).ok_or("no running postmaster")?;
    let policy = RestartPolicy {
        poll_interval: Duration::from_millis(100),
        first_delay: Duration::from_millis(300),
        max_delay: Duration::from_millis(600),
        max_failed_starts: 3,
        ..RestartPolicy::default()
    };
    let supervisor = pg.supervisor()?.with_policy(policy);
    let token = CancellationToken::new();
    let port = pg.port();
    let outcome = block_on(async {
        let run = tokio::spawn(supervisor.run(token.clone()));
        tokio::time::sleep(Duration::from_millis(200)).await;
        check(!run.is_finished(), || "the supervisor stopped early".into())?;
        signal(pid, "-KILL")?;
        // Take the port as soon as the dead server lets go of it.
        let taken = Instant::now();
        let _squatter = loop {
            match TcpListener::bind(("127.0.0.1", port)) {
                Ok(listener) => break listener,
                Err(_) if taken.elapsed() < Duration::from_secs(5) => {
                    tokio::time::sleep(Duration::from_millis(5)).await
                }
                Err(e) => return Err(format!("port {port} not freed: {e}").into()),
            }
        };
        let result = tokio::time::timeout(Duration::from_secs(60), run).await??;
        let error = match result {
            Ok(()) => return Err("the supervisor returned Ok without being cancelled".into()),
            Err(e) => e.to_string(),
        };
        check(
            error.contains("3 starts in a row failed") && error.contains(&port.to_string()),
            || error.clone(),
        )?;
        check(token.is_cancelled(), || {
            "the supervisor gave up without cancelling its token".into()
        })
    });
    pg.stop()?;
    outcome
}

/// The pid of the cluster's postmaster once it accepts connections.
fn ready_postmaster(pgdata: &Path) -> Option<i32> {
    let text = std::fs::read_to_string(pgdata.join("postmaster.pid")).ok()?;
    let lines: Vec<&str> = text.lines().collect();
    let pid = lines.first()?.trim().parse::<i32>().ok()?;
    let alive = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()?
        .rsplit_once(')')
        .and_then(|(_, rest)| rest.split_whitespace().next())
        .is_some_and(|state| state != "Z" && state != "X");
    (alive && lines.get(7).map(|s| s.trim()) == Some("ready")).then_some(pid)
}

/// The `N ok` of load's summary.
pub(crate) fn ok_count(stdout: &str) -> Result<i64, Failed> {
    stdout
        .split_whitespace()
        .collect::<Vec<_>>()
        .windows(2)
        .find(|w| w[1] == "ok" || w[1] == "ok,")
        .and_then(|w| w[0].parse().ok())
        .ok_or_else(|| format!("no request count in:\n{stdout}").into())
}

/// The `run id:` of load's summary.
pub(crate) fn run_id(stdout: &str) -> Result<String, Failed> {
    stdout
        .lines()
        .find_map(|l| l.strip_prefix("run id:"))
        .map(|id| id.trim().to_owned())
        .ok_or_else(|| format!("no run id in:\n{stdout}").into())
}

/// Rows of `table` tagged with `run_id`, and how many distinct request ids
/// they carry (each request has its own, so a duplicate shows as fewer ids
/// than rows).
pub(crate) fn rows_of_run(
    config: pglogsink::ConnectConfig,
    table: &pglogsink::TableName,
    run_id: &str,
) -> Result<(i64, i64), Failed> {
    let mut counts = (0, 0);
    block_on(async {
        let pool = pglogsink::pool(config, 1)?;
        let row = pool
            .get()
            .await?
            .query_one(
                &format!(
                    "SELECT count(*), count(DISTINCT fields->>'request_id') FROM {} \
                     WHERE fields->>'run_id' = $1",
                    table.quoted()
                ),
                &[&run_id],
            )
            .await?;
        counts = (row.get(0), row.get(1));
        Ok(())
    })?;
    Ok(counts)
}
