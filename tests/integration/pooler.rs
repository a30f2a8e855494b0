//! Through a connection pooler in transaction mode: Debian's PgBouncer (1.18
//! on Debian 12, which does not track prepared statements) with two server
//! connections in front of a private cluster, and three `serve` processes
//! (each with a pool of four) writing one table through it, driven by three
//! `load --verify` runs that also count through it. Every transaction may
//! land on either server connection, so a prepared statement that outlives
//! its transaction is missing (26000) or collides with another process's
//! (42P05) in a later one.

use std::fs;
use std::io::Write;
use std::net::TcpStream;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use libtest_mimic::{Failed, Trial};
use pglogsink::embedded::EmbeddedPostgres;
use pglogsink::tokio_postgres::types::Type;
use pglogsink::{CancellationToken, ConnectConfig, Level, Record, SinkConfig};

use crate::common::{
    async_trial, block_on, check, fresh_table, give_to_server_user, server_os_user, ToolGate,
};
use crate::service::{free_port, text, Serve, BIN};

/// Requests per `load` run; each writes one `recipes` row. More when a
/// backend is to be caught busy writing.
const REQUESTS: u64 = 2000;
const REQUESTS_WITH_KILL: u64 = 4000;

pub fn trials() -> Vec<Trial> {
    let pgbouncer = ToolGate::new(
        "pooler",
        PgBouncer::binary().is_none().then(|| {
            "pgbouncer is not installed (Debian: apt-get install pgbouncer; .ci/run installs it)"
                .to_owned()
        }),
    );
    vec![
        async_trial(
            "pooler::no_prepared_statement_outlives_a_transaction",
            nothing_left_on_the_connection,
        ),
        pgbouncer.gate(Trial::test(
            "pooler::three_services_write_one_table_through_pgbouncer_transaction_mode",
            || three_services(false),
        )),
        pgbouncer.gate(Trial::test(
            "pooler::pgbouncer_full_is_waited_out_and_a_refused_password_stops",
            pgbouncer_errors,
        )),
        pgbouncer.gate(Trial::test(
            "pooler::a_backend_killed_behind_pgbouncer_loses_and_doubles_nothing",
            || three_services(true),
        )),
    ]
}

/// What a transaction pooler would trip over, looked at directly: after
/// migrating, writing, isolating refused rows into the rejected table and
/// pruning the ledger over one connection, that session holds no prepared
/// statement (a pooler would have handed it to another client).
async fn nothing_left_on_the_connection() -> Result<(), Failed> {
    let pool = pglogsink::pool(crate::common::config()?, 1)?;
    let table = fresh_table("nostate");
    pglogsink::migrate(&pool, &table).await?;
    let session = {
        let client = pool.get().await?;
        client
            .batch_execute(&format!(
                "ALTER TABLE {} ADD CONSTRAINT no_poison CHECK (message NOT LIKE '%poison%')",
                table.quoted()
            ))
            .await?;
        backend_pid(&client).await?
    };
    let config = SinkConfig {
        table: table.to_string(),
        batch_size: 100,
        ..SinkConfig::default()
    };
    let (logger, worker) = pglogsink::spawn(pool.clone(), &config, CancellationToken::new())?;
    for i in 0..1000u64 {
        let message = if i % 400 == 7 { "poison" } else { "fine" };
        logger.send(Record::new(Level::Info, format!("{message} {i}")).field("n", i))?;
    }
    let report = worker.shutdown(Duration::from_secs(30)).await;
    check(
        report.written == 997 && report.rejected == 3 && report.is_complete(),
        || format!("{report:?}"),
    )?;
    // The query layer (`logs`, the viewer) and maintenance, on the same
    // connection.
    {
        let mut client = pool.get().await?;
        let reader = pglogsink::admin::query::Reader::new(table.clone()).time_zone("Europe/Paris");
        let filter = pglogsink::admin::query::Filter {
            level: Some(Level::Info),
            grep: Some("fine".into()),
            since: Some(std::time::SystemTime::now() - Duration::from_secs(3600)),
            ..Default::default()
        };
        let newest = reader.newest(&mut client, &filter, 5).await?;
        check(newest.len() == 5, || format!("{newest:?}"))?;
        let (_, mut follower) = reader.follow(&mut client, &filter, 5).await?;
        follower.poll(&mut client).await?;
    }
    pglogsink::Maintenance {
        retention: Some(Duration::from_secs(86_400)),
        ..Default::default()
    }
    .run(&pool, &table)
    .await?;
    let client = pool.get().await?;
    check(backend_pid(&client).await? == session, || {
        "the pool did not keep its one connection, so its session cannot be inspected".to_owned()
    })?;
    // The simple protocol, so that the question leaves nothing behind either.
    let left: Vec<String> = client
        .simple_query("SELECT name || ': ' || statement FROM pg_prepared_statements")
        .await?
        .into_iter()
        .filter_map(|m| match m {
            pglogsink::tokio_postgres::SimpleQueryMessage::Row(row) => {
                row.get(0).map(str::to_owned)
            }
            _ => None,
        })
        .collect();
    check(left.is_empty(), || {
        format!("prepared statements left on the connection: {left:?}")
    })
}

/// `logs` through the pooler: the newest rows, and one request's rows by
/// its id (unnamed statements in short transactions, like everything else).
fn logs_through(db_args: &[&str], direct: &ConnectConfig, table: &str) -> Result<(), Failed> {
    let logs = |args: &[&str]| {
        Command::new(BIN)
            .arg("logs")
            .args(db_args)
            .args(args)
            .env_remove("DATABASE_URL")
            .output()
    };
    let out = logs(&["--target", "recipes", "--limit", "5"])?;
    check(
        out.status.success() && text(&out.stdout).lines().count() == 5,
        || {
            format!(
                "logs through PgBouncer: {}{}",
                text(&out.stdout),
                text(&out.stderr)
            )
        },
    )?;
    let id: String = block_on_value(async {
        let (client, connection) = direct.connect(pglogsink::tokio_postgres::NoTls).await?;
        tokio::spawn(connection);
        let row = client
            .query_one(
                &format!("SELECT fields->>'request_id' FROM \"{table}\" LIMIT 1"),
                &[],
            )
            .await?;
        Ok::<String, Failed>(row.get(0))
    })?;
    let out = logs(&["--request-id", &id, "--json"])?;
    let lines: Vec<String> = text(&out.stdout).lines().map(str::to_owned).collect();
    check(
        out.status.success() && !lines.is_empty() && lines.iter().all(|l| l.contains(&id)),
        || {
            format!(
                "logs --request-id {id} through PgBouncer: {lines:?} {}",
                text(&out.stderr)
            )
        },
    )
}

async fn backend_pid(client: &pglogsink::deadpool_postgres::Client) -> Result<String, Failed> {
    client
        .simple_query("SELECT pg_backend_pid()")
        .await?
        .into_iter()
        .find_map(|m| match m {
            pglogsink::tokio_postgres::SimpleQueryMessage::Row(row) => {
                row.get(0).map(str::to_owned)
            }
            _ => None,
        })
        .ok_or_else(|| "no pid".into())
}

/// PgBouncer's own errors, as the sink meets them: a full house (08P01 "no
/// more connections allowed") is waited out, a refused password (08P01
/// "password authentication failed") stops the sink at once.
fn pgbouncer_errors() -> Result<(), Failed> {
    let cluster = EmbeddedPostgres::temporary()?;
    let direct = cluster.config();
    let bouncer = PgBouncer::start_with(&direct, 1)?;
    let through = pglogsink::parse_url(&bouncer.url(&direct))?;
    let table = fresh_table("pgberr");
    let config = SinkConfig {
        table: table.to_string(),
        retry_initial: Duration::from_millis(20),
        retry_max: Duration::from_millis(200),
        ..SinkConfig::default()
    };
    block_on(async {
        pglogsink::migrate(&pglogsink::pool(direct.clone(), 1)?, &table).await?;
        // The one client PgBouncer accepts, held while the sink tries.
        let holder = pglogsink::pool(through.clone(), 1)?;
        let held = holder.get().await?;
        let token = CancellationToken::new();
        let (logger, worker) =
            pglogsink::spawn(pglogsink::pool(through.clone(), 1)?, &config, token.clone())?;
        for i in 0..100 {
            logger.log(Level::Info, format!("waiting for room {i}"))?;
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while logger.stats().retries < 3 {
            check(Instant::now() < deadline, || {
                format!("fewer than 3 retries in 10 s: {:?}", logger.stats())
            })?;
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let last_error = logger.last_error().unwrap_or_default();
        check(
            last_error.contains("no more connections allowed") && !token.is_cancelled(),
            || {
                format!(
                    "while PgBouncer was full: {:?}, {last_error}",
                    logger.stats()
                )
            },
        )?;
        drop(held);
        holder.close();
        let report = worker.shutdown(Duration::from_secs(20)).await;
        check(
            report.is_complete() && report.written == 100 && report.retries >= 3,
            || format!("{report:?}\n{}", bouncer.log()),
        )?;

        // A pooler with room to spare, so that the only error is the
        // refused password (the full one may still hold the first sink's
        // connection for a moment, which would count as a retry).
        let roomy = PgBouncer::start_with(&direct, 5)?;
        let mut wrong = pglogsink::parse_url(&roomy.url(&direct))?;
        wrong.set_password("not-the-password");
        let token = CancellationToken::new();
        let (logger, worker) =
            pglogsink::spawn(pglogsink::pool(wrong, 1)?, &config, token.clone())?;
        logger.log(Level::Info, "refused")?;
        tokio::time::timeout(Duration::from_secs(10), token.cancelled())
            .await
            .map_err(|_| "a refused password did not stop the sink within 10 s")?;
        let report = worker.shutdown(Duration::from_secs(5)).await;
        let fatal = report
            .fatal
            .as_ref()
            .map(ToString::to_string)
            .unwrap_or_default();
        check(
            fatal.contains("authentication failed")
                && fatal.contains("password")
                && report.retries == 0,
            || format!("{report:?}"),
        )
    })?;
    drop(bouncer);
    cluster.stop()?;
    Ok(())
}

fn three_services(kill_a_backend: bool) -> Result<(), Failed> {
    let requests = if kill_a_backend {
        REQUESTS_WITH_KILL
    } else {
        REQUESTS
    };
    // A cluster of its own: the test counts and kills its backends.
    let cluster = EmbeddedPostgres::temporary()?;
    let direct = cluster.config();
    let bouncer = PgBouncer::start(&direct)?;
    let url = bouncer.url(&direct);
    let table = fresh_table("pgb").to_string();
    let db_args = ["--database-url", url.as_str(), "--table", table.as_str()];

    // Started together, so that their migrations race through the pooler
    // too. Small batches make many transactions.
    let mut serves = std::thread::scope(|s| {
        let starting: Vec<_> = (0..3)
            .map(|_| s.spawn(|| Serve::start(&db_args, &["--batch-size", "50"])))
            .collect();
        starting
            .into_iter()
            .map(|h| {
                h.join()
                    .map_err(|_| Failed::from("a serve start panicked"))?
            })
            .collect::<Result<Vec<_>, Failed>>()
    })
    .map_err(|e| with_log(e, &bouncer))?;

    let mut loads = serves
        .iter()
        .map(|serve| {
            Command::new(BIN)
                .args(["load", "--url", &serve.url()])
                .args(["--requests", &requests.to_string(), "--concurrency", "8"])
                .args(["--verify", "--verify-timeout", "30"])
                .args(db_args)
                .env_remove("DATABASE_URL")
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .spawn()
        })
        .collect::<Result<Vec<Child>, _>>()?;

    // While they run: how many server connections exist, and (for the
    // second test) terminate one that is in the middle of something.
    let watched = block_on_value(watch(&direct, kill_a_backend, &mut loads));
    let outputs: Vec<Output> = loads
        .into_iter()
        .map(|load| load.wait_with_output())
        .collect::<Result<_, _>>()?;
    let watched = watched?;

    // Stopped before anything is checked, so that a failure shows what the
    // services said (a fatal stop names its error).
    let mut retries = 0;
    let mut stopped = Vec::new();
    for serve in &mut serves {
        serve.signal("-INT")?;
        let out = serve.wait()?;
        retries += text(&out.stderr)
            .matches("transient database error")
            .count();
        stopped.push(out);
    }
    let said = || {
        let services: Vec<String> = stopped
            .iter()
            .map(|out| format!("serve exit {:?}: {}", out.status, text(&out.stderr)))
            .collect();
        format!("{}\n{}", services.join("\n"), bouncer.log())
    };
    for out in &outputs {
        let stdout = text(&out.stdout);
        check(
            out.status.success()
                && stdout.contains(&format!("{requests} ok"))
                && stdout.contains(": OK"),
            || format!("load through PgBouncer failed: {stdout}\n{}", said()),
        )?;
    }
    for out in &stopped {
        let stderr = text(&out.stderr);
        check(
            out.status.success() && stderr.contains("nothing lost") && !stderr.contains("fatal"),
            said,
        )?;
    }

    check((1..=2).contains(&watched.most_backends), || {
        format!(
            "expected PgBouncer to hold at most 2 server connections, saw {}",
            watched.most_backends
        )
    })?;
    if kill_a_backend {
        // A backend caught in the middle of a write: its sink must have
        // seen the error and retried (a fatal stop fails the checks above).
        check(watched.killed.is_some() && retries > 0, || {
            format!(
                "terminated a backend in state {:?}, and the services retried {retries} times",
                watched.killed
            )
        })?;
    }
    let per_run = block_on_value(rows_per_run(&direct, &table))?;
    check(
        per_run.len() == 3
            && per_run
                .iter()
                .all(|&(rows, distinct)| rows == requests as i64 && distinct == rows),
        || {
            format!(
                "rows per run (rows, distinct request ids): {per_run:?}, expected 3 x \
                 {requests}; {retries} retries; killed {:?}",
                watched.killed
            )
        },
    )?;
    if !kill_a_backend {
        logs_through(&db_args, &direct, &table)?;
    }
    drop(bouncer);
    cluster.stop()?;
    Ok(())
}

struct Watched {
    most_backends: i64,
    /// The state of the backend that was terminated.
    killed: Option<String>,
}

async fn watch(
    direct: &ConnectConfig,
    kill_a_backend: bool,
    loads: &mut [Child],
) -> Result<Watched, Failed> {
    let pool = pglogsink::pool(direct.clone(), 1)?;
    let client = pool.get().await?;
    let started = Instant::now();
    let mut watched = Watched {
        most_backends: 0,
        killed: None,
    };
    loop {
        let mut running = false;
        for load in loads.iter_mut() {
            running |= load.try_wait()?.is_none();
        }
        if !running {
            return Ok(watched);
        }
        let row = client
            .query_typed_one(
                "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend' \
                 AND datname = current_database() AND pid <> pg_backend_pid()",
                &[],
            )
            .await?;
        watched.most_backends = watched.most_backends.max(row.get(0));
        if kill_a_backend
            && watched.killed.is_none()
            && started.elapsed() > Duration::from_millis(100)
        {
            let busy = client
                .query_typed_opt(
                    // A sink's write transaction (its ledger INSERT or
                    // its COPY), not load --verify's count.
                    "SELECT state, pg_terminate_backend(pid) FROM pg_stat_activity \
                     WHERE backend_type = 'client backend' AND datname = current_database() \
                     AND pid <> pg_backend_pid() AND state <> 'idle' \
                     AND (query LIKE 'COPY %' OR query LIKE 'INSERT INTO %') LIMIT 1",
                    &[],
                )
                .await?;
            if let Some(row) = busy {
                let terminated: bool = row.get(1);
                if terminated {
                    watched.killed = Some(row.get(0));
                }
            }
        }
        // Often while a backend is still to be caught busy.
        let pause = if kill_a_backend && watched.killed.is_none() {
            2
        } else {
            20
        };
        tokio::time::sleep(Duration::from_millis(pause)).await;
    }
}

/// (rows, distinct request ids) of each `load` run's `recipes` rows.
async fn rows_per_run(direct: &ConnectConfig, table: &str) -> Result<Vec<(i64, i64)>, Failed> {
    let pool = pglogsink::pool(direct.clone(), 1)?;
    let client = pool.get().await?;
    let rows = client
        .query_typed(
            &format!(
                "SELECT count(*), count(DISTINCT fields->>'request_id') FROM {table} \
                 WHERE target = $1 GROUP BY fields->>'run_id' ORDER BY 1"
            ),
            &[(&"recipes", Type::TEXT)],
        )
        .await?;
    Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
}

fn block_on_value<T>(f: impl std::future::Future<Output = Result<T, Failed>>) -> Result<T, Failed> {
    let mut out = None;
    block_on(async {
        out = Some(f.await?);
        Ok(())
    })?;
    out.ok_or_else(|| "no value".into())
}

fn with_log(e: Failed, bouncer: &PgBouncer) -> Failed {
    format!("{}\n{}", e.message().unwrap_or(""), bouncer.log()).into()
}

/// A PgBouncer in transaction mode with a pool of two server connections,
/// listening on a free loopback port. Stopped (SIGTERM) and its directory
/// removed on drop.
pub(crate) struct PgBouncer {
    child: Option<Child>,
    port: u16,
    dir: PathBuf,
}

impl PgBouncer {
    fn binary() -> Option<PathBuf> {
        let path = std::env::var_os("PATH").unwrap_or_default();
        std::env::split_paths(&path)
            .chain(["/usr/sbin".into(), "/usr/local/sbin".into()])
            .map(|dir| dir.join("pgbouncer"))
            .find(|p| p.is_file())
    }

    /// Start one in front of `upstream` (user and password taken from it).
    pub(crate) fn start(upstream: &ConnectConfig) -> Result<PgBouncer, Failed> {
        PgBouncer::start_with(upstream, 200)
    }

    /// The same, accepting at most `max_client_conn` clients.
    fn start_with(upstream: &ConnectConfig, max_client_conn: u32) -> Result<PgBouncer, Failed> {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let binary = PgBouncer::binary().ok_or("pgbouncer is not installed")?;
        let dir = std::env::temp_dir().join(format!(
            "pglogsink-pgbouncer-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = fs::remove_dir_all(&dir);
        fs::DirBuilder::new().mode(0o700).create(&dir)?;
        // From here on, an early return removes the directory.
        let mut bouncer = PgBouncer {
            child: None,
            port: free_port()?,
            dir,
        };
        let dir = bouncer.dir.clone();
        let port = bouncer.port;
        give_to_server_user(&dir)?;
        let user = upstream.get_user().ok_or("no user")?;
        let password = String::from_utf8(upstream.get_password().ok_or("no password")?.to_vec())?;
        let upstream_port = *upstream.get_ports().first().ok_or("no port")?;
        // The plain password lets PgBouncer answer the client's SCRAM and
        // log in to the server with SCRAM itself.
        write_private(
            &dir.join("userlist.txt"),
            &format!("\"{user}\" \"{password}\"\n"),
        )?;
        write_private(
            &dir.join("pgbouncer.ini"),
            &format!(
                "[databases]\n\
                 * = host=127.0.0.1 port={upstream_port}\n\
                 [pgbouncer]\n\
                 listen_addr = 127.0.0.1\n\
                 listen_port = {port}\n\
                 unix_socket_dir =\n\
                 auth_type = scram-sha-256\n\
                 auth_file = {}\n\
                 pool_mode = transaction\n\
                 default_pool_size = 2\n\
                 max_client_conn = {max_client_conn}\n\
                 server_login_retry = 1\n",
                dir.join("userlist.txt").display()
            ),
        )?;
        let log = fs::File::create(dir.join("pgbouncer.log"))?;
        let mut command = Command::new(binary);
        command
            .arg(dir.join("pgbouncer.ini"))
            .current_dir(&dir)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .process_group(0);
        if let Some((uid, gid)) = server_os_user()? {
            command.uid(uid).gid(gid);
        }
        bouncer.child = Some(command.spawn()?);
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            let exited = bouncer
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten());
            if exited.is_some() || Instant::now() > deadline {
                return Err(
                    format!("pgbouncer did not start ({exited:?}):\n{}", bouncer.log()).into(),
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(bouncer)
    }

    /// A URL through this PgBouncer, for `upstream`'s user and database.
    pub(crate) fn url(&self, upstream: &ConnectConfig) -> String {
        format!(
            "postgres://{}:{}@127.0.0.1:{}/{}",
            upstream.get_user().unwrap_or(""),
            String::from_utf8_lossy(upstream.get_password().unwrap_or(b"")),
            self.port,
            upstream.get_dbname().unwrap_or("")
        )
    }

    /// The last lines of its log, for failure messages.
    pub(crate) fn log(&self) -> String {
        let log = fs::read_to_string(self.dir.join("pgbouncer.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        format!(
            "pgbouncer log (last lines):\n{}",
            lines[lines.len().saturating_sub(30)..].join("\n")
        )
    }
}

impl Drop for PgBouncer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // SAFETY: a plain kill(2) of the child this struct started.
            unsafe {
                libc::kill(child.id() as libc::pid_t, libc::SIGTERM);
            }
            let _ = child.wait();
        }
        let _ = fs::remove_dir_all(&self.dir);
    }
}

fn write_private(path: &Path, contents: &str) -> Result<(), Failed> {
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(contents.as_bytes())?;
    drop(file);
    give_to_server_user(path)
}
