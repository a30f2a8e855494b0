//! The shared test database and small helpers.

use std::future::Future;
use std::io::Read;
use std::process::{Child, Command, ExitStatus, Output};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use libtest_mimic::{Failed, Trial};
use pglogsink::embedded::EmbeddedPostgres;
use pglogsink::TableName;

struct TestDb {
    config: pglogsink::ConnectConfig,
    url: String,
    server: Mutex<Option<EmbeddedPostgres>>,
}

static DB: OnceLock<Result<TestDb, String>> = OnceLock::new();

fn db() -> Result<&'static TestDb, Failed> {
    DB.get_or_init(|| match std::env::var("DATABASE_URL") {
        Ok(url) => Ok(TestDb {
            config: pglogsink::parse_url(&url).map_err(|e| e.to_string())?,
            url,
            server: Mutex::new(None),
        }),
        Err(_) => {
            let server = EmbeddedPostgres::temporary().map_err(|e| e.to_string())?;
            Ok(TestDb {
                config: server.config(),
                url: server.url(),
                server: Mutex::new(Some(server)),
            })
        }
    })
    .as_ref()
    .map_err(|e| Failed::from(format!("no test database: {e}")))
}

/// Stop the shared cluster, if one was started.
pub fn shutdown() {
    if let Some(Ok(db)) = DB.get() {
        if let Some(server) = db.server.lock().ok().and_then(|mut s| s.take()) {
            if let Err(e) = server.stop() {
                eprintln!("stopping the test cluster: {e}");
            }
        }
    }
}

/// Connection settings of the shared test database.
pub fn config() -> Result<pglogsink::ConnectConfig, Failed> {
    Ok(db()?.config.clone())
}

/// URL of the shared test database (for child processes).
pub fn url() -> Result<String, Failed> {
    Ok(db()?.url.clone())
}

/// A pool on the shared test database.
pub fn pool() -> Result<pglogsink::deadpool_postgres::Pool, Failed> {
    Ok(pglogsink::pool(config()?, 4)?)
}

/// A table name no other test uses.
pub fn fresh_table(prefix: &str) -> TableName {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    TableName::parse(&format!("{prefix}_{}_{n}", std::process::id())).expect("valid table name")
}

/// Run an async test body on a runtime of its own.
pub fn block_on<T, F: Future<Output = Result<T, Failed>>>(f: F) -> Result<T, Failed> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?
        .block_on(f)
}

/// A trial whose body is async.
pub fn async_trial<F, Fut>(name: &str, body: F) -> Trial
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = Result<(), Failed>>,
{
    Trial::test(name, move || block_on(body()))
}

/// Fail with a message unless `cond`.
pub fn check(cond: bool, message: impl FnOnce() -> String) -> Result<(), Failed> {
    if cond {
        Ok(())
    } else {
        Err(message().into())
    }
}

/// Poll `cond` every 50 ms until it holds; fail naming `what` when it
/// still does not after `within`. What a test waits for is a signal (a row,
/// a metric, a log line), never a fixed sleep.
pub fn wait_until(
    what: &str,
    within: Duration,
    mut cond: impl FnMut() -> Result<bool, Failed>,
) -> Result<(), Failed> {
    let deadline = Instant::now() + within;
    loop {
        if cond()? {
            return Ok(());
        }
        check(Instant::now() < deadline, || {
            format!("{what}: not within {within:?}")
        })?;
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Set (to anything) to hold the tests to the times the README states; see
/// [`check_time`].
pub const CHECK_TIMES: &str = "PGLOGSINK_CHECK_TIMES";

/// A time a test measured against one the README promises (`what took
/// took`, promised within `limit`). Printed always. On a shared, loaded
/// machine a functional test must not fail for being slow, so the promise
/// is held only when [`CHECK_TIMES`] is set (a quiet machine, a release
/// check); without it, only ten times the promise (at least a minute)
/// fails: that is not slowness but something that did not happen.
pub fn check_time(what: &str, took: Duration, limit: Duration) -> Result<(), Failed> {
    eprintln!("    {what}: {took:.2?} (promised within {limit:?})");
    let bound = if std::env::var_os(CHECK_TIMES).is_some() {
        limit
    } else {
        (limit * 10).max(Duration::from_secs(60))
    };
    check(took <= bound, || {
        format!("{what} took {took:?}, more than {bound:?} (promised within {limit:?})")
    })
}

/// Send `sig` (`-INT`, `-HUP`, `-KILL`...) to process `pid`.
pub fn signal(pid: impl std::fmt::Display, sig: &str) -> Result<(), Failed> {
    let status = Command::new("kill")
        .args([sig, &pid.to_string()])
        .status()?;
    check(status.success(), || format!("kill {sig} {pid} failed"))
}

/// How `child` exited, once it has, or `None` when it still runs after
/// `within`.
pub fn exit_within(child: &mut Child, within: Duration) -> Result<Option<ExitStatus>, Failed> {
    let deadline = Instant::now() + within;
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(Some(status));
        }
        if Instant::now() >= deadline {
            return Ok(None);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A child's stdout and stderr, each read by a thread as it comes, so that
/// a test can wait for a line while the child runs, and kept to the end.
pub struct Captured {
    stdout: (Arc<Mutex<Vec<u8>>>, JoinHandle<()>),
    stderr: (Arc<Mutex<Vec<u8>>>, JoinHandle<()>),
}

impl Captured {
    /// Read the child's piped stdout and stderr from now on.
    pub fn of(child: &mut Child) -> Captured {
        fn drain(mut from: impl Read + Send + 'static) -> (Arc<Mutex<Vec<u8>>>, JoinHandle<()>) {
            let seen = Arc::new(Mutex::new(Vec::new()));
            let into = seen.clone();
            let reader = std::thread::spawn(move || {
                let mut chunk = [0u8; 8192];
                while let Ok(n @ 1..) = from.read(&mut chunk) {
                    into.lock().unwrap().extend_from_slice(&chunk[..n]);
                }
            });
            (seen, reader)
        }
        Captured {
            stdout: drain(child.stdout.take().expect("piped")),
            stderr: drain(child.stderr.take().expect("piped")),
        }
    }

    /// Its stderr so far.
    pub fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.stderr.0.lock().unwrap()).into_owned()
    }

    /// The whole output, once the child has exited.
    pub fn collect(self, status: ExitStatus) -> Output {
        let all = |(seen, reader): (Arc<Mutex<Vec<u8>>>, JoinHandle<()>)| {
            let _ = reader.join();
            let bytes = std::mem::take(&mut *seen.lock().unwrap());
            bytes
        };
        Output {
            status,
            stdout: all(self.stdout),
            stderr: all(self.stderr),
        }
    }
}

/// `rows` copies of one text-format COPY line (`timestamp, level, target,
/// message`, tab-separated) into `table`, in `tx`.
pub async fn copy_lines(
    tx: &pglogsink::tokio_postgres::Transaction<'_>,
    table: &TableName,
    line: &str,
    rows: usize,
) -> Result<(), pglogsink::tokio_postgres::Error> {
    use futures_util::SinkExt;
    let sink = tx
        .copy_in::<_, bytes::Bytes>(&format!(
            "COPY {} (\"timestamp\", level, target, message) FROM STDIN",
            table.quoted()
        ))
        .await?;
    futures_util::pin_mut!(sink);
    sink.send(bytes::Bytes::from(format!("{line}\n").repeat(rows)))
        .await?;
    sink.as_mut().finish().await?;
    Ok(())
}

/// An `INSERT` of one row stamped now: level info, target `t`.
pub fn insert_one(table: &TableName, message: &str) -> String {
    format!(
        "INSERT INTO {} (\"timestamp\", level, target, message) VALUES (now(), 'info', 't', '{message}')",
        table.quoted()
    )
}

/// Rows in a table.
pub async fn count(
    pool: &pglogsink::deadpool_postgres::Pool,
    table: &TableName,
) -> Result<i64, Failed> {
    let client = pool.get().await?;
    let row = client
        .query_one(&format!("SELECT count(*) FROM {}", table.quoted()), &[])
        .await?;
    Ok(row.get(0))
}

/// The uid and gid servers run as: the `postgres` OS user when we are root
/// (PostgreSQL and PgBouncer refuse to run as root), else `None` (they run
/// as us).
pub fn server_os_user() -> Result<Option<(u32, u32)>, Failed> {
    // SAFETY: geteuid cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        return Ok(None);
    }
    // SAFETY: a NUL-terminated name; the result is read before any other
    // getpw* call on this thread could overwrite it.
    let entry = unsafe { libc::getpwnam(c"postgres".as_ptr()) };
    if entry.is_null() {
        return Err("running as root, and there is no `postgres` OS user to run servers as".into());
    }
    // SAFETY: non-null, points to libc's static passwd entry.
    let entry = unsafe { &*entry };
    Ok(Some((entry.pw_uid, entry.pw_gid)))
}

/// Hand `path` to the servers' OS user (when we are root), so that a
/// server can read a file the test wrote.
pub fn give_to_server_user(path: &std::path::Path) -> Result<(), Failed> {
    if let Some((uid, gid)) = server_os_user()? {
        std::os::unix::fs::chown(path, Some(uid), Some(gid))
            .map_err(|e| format!("chown {}: {e}", path.display()))?;
    }
    Ok(())
}

/// Whether the trials that need an outside tool (PgBouncer, Chromium, an
/// OpenTelemetry SDK, Citus) can run. On a contributor's machine without
/// the tool they are ignored, and a line says why. With
/// `PGLOGSINK_REQUIRE_TOOLS` set (`.ci/run` sets it) they fail with that
/// reason instead: CI cannot go green by skipping them.
pub struct ToolGate {
    /// Why the tool cannot be used; `None` when it can.
    missing: Option<String>,
}

impl ToolGate {
    /// `missing`: why the tool is not there (`None`: it is). `group` names
    /// the tests in the line printed when they are ignored.
    pub fn new(group: &str, missing: Option<String>) -> ToolGate {
        if let Some(why) = &missing {
            if !tools_required() {
                eprintln!("{group}: {why}, so these tests are ignored");
            }
        }
        ToolGate { missing }
    }

    /// The trial as it runs here: unchanged when the tool is there;
    /// otherwise ignored, or failing with the reason when tools are
    /// required.
    pub fn gate(&self, trial: Trial) -> Trial {
        let Some(why) = &self.missing else {
            return trial;
        };
        if !tools_required() {
            return trial.with_ignored_flag(true);
        }
        let why = format!("{why} (PGLOGSINK_REQUIRE_TOOLS is set: a missing tool fails)");
        Trial::test(trial.name().to_owned(), move || Err(why.into()))
    }
}

/// True when tests must not be ignored for a missing tool.
fn tools_required() -> bool {
    std::env::var_os("PGLOGSINK_REQUIRE_TOOLS").is_some_and(|v| !v.is_empty() && v != "0")
}
