//! Tests of the embedded PostgreSQL launcher (`pglogsink::embedded`).

use std::fs;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use libtest_mimic::{Failed, Trial};
use pglogsink::embedded::{server_user_can_reach, EmbeddedPostgres};

/// The embedded-server trials.
pub fn trials() -> Vec<Trial> {
    vec![
        Trial::test("embedded::temporary_runs_queries_and_cleans_up", temporary),
        Trial::test(
            "embedded::second_start_attaches_and_restart_reuses_cluster",
            attach,
        ),
        Trial::test("embedded::stop_server_and_start_server", stop_start_server),
        Trial::test("embedded::server_user_reachability", reachability),
    ]
}

fn check(condition: bool, message: impl Into<String>) -> Result<(), Failed> {
    if condition {
        Ok(())
    } else {
        Err(message.into().into())
    }
}

fn fail(context: &str, e: impl std::fmt::Display) -> Failed {
    format!("{context}: {e}").into()
}

fn is_root() -> bool {
    // SAFETY: geteuid cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// Run `f` with a fresh connection to `config` on a current-thread runtime.
fn with_client<T>(
    config: &tokio_postgres::Config,
    f: impl for<'c> FnOnce(
        &'c tokio_postgres::Client,
    ) -> std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<T, tokio_postgres::Error>> + 'c>,
    >,
) -> Result<T, String> {
    let mut config = config.clone();
    config.connect_timeout(Duration::from_secs(5));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    runtime.block_on(async move {
        let (client, connection) = config
            .connect(tokio_postgres::NoTls)
            .await
            .map_err(|e| format!("connect: {e}"))?;
        let connection = tokio::spawn(connection);
        let result = f(&client).await.map_err(|e| format!("query: {e}"));
        drop(client);
        let _ = connection.await;
        result
    })
}

fn select_one(config: &tokio_postgres::Config) -> Result<i32, String> {
    with_client(config, |c| {
        Box::pin(async move { Ok(c.query_one("SELECT 1", &[]).await?.get::<_, i32>(0)) })
    })
}

/// The postmaster pid of a running cluster, from `pgdata/postmaster.pid`.
fn postmaster_pid(data_dir: &Path) -> Result<i32, Failed> {
    let path = data_dir.join("pgdata/postmaster.pid");
    let text = fs::read_to_string(&path).map_err(|e| fail(&path.display().to_string(), e))?;
    text.lines()
        .next()
        .and_then(|l| l.trim().parse().ok())
        .ok_or_else(|| format!("no pid in {}", path.display()).into())
}

/// Whether `pid` is a live process (zombies count as dead).
fn process_alive(pid: i32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z" && state != "X"),
        Err(_) => false,
    }
}

/// Live processes whose command line mentions `needle`.
fn processes_mentioning(needle: &Path) -> Vec<i32> {
    let needle = needle.to_string_lossy().into_owned();
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|&pid| pid != std::process::id() as i32)
        .filter(|&pid| {
            fs::read(format!("/proc/{pid}/cmdline"))
                .map(|c| {
                    String::from_utf8_lossy(&c)
                        .replace('\0', " ")
                        .contains(&needle)
                })
                .unwrap_or(false)
        })
        .filter(|&pid| process_alive(pid))
        .collect()
}

/// A directory under the temp dir, removed (with anything in it) on drop.
struct ScratchDir(PathBuf);

impl ScratchDir {
    fn new(tag: &str, mode: u32) -> Result<ScratchDir, Failed> {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let path = std::env::temp_dir().join(format!(
            "pglogsink-test-{tag}-{}-{nanos:08x}",
            std::process::id()
        ));
        fs::DirBuilder::new()
            .mode(mode)
            .create(&path)
            .map_err(|e| fail("creating scratch dir", e))?;
        fs::set_permissions(&path, fs::Permissions::from_mode(mode))
            .map_err(|e| fail("chmod scratch dir", e))?;
        Ok(ScratchDir(path))
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn temporary() -> Result<(), Failed> {
    let pg = EmbeddedPostgres::temporary().map_err(|e| fail("temporary()", e))?;
    let dir = pg.data_dir().to_path_buf();
    check(
        pg.owns_server(),
        "a temporary server is owned by its handle",
    )?;
    check(
        dir.join("pgdata/PG_VERSION").exists(),
        "cluster initialised",
    )?;
    check(
        dir.starts_with(std::fs::canonicalize(std::env::temp_dir())?),
        format!("{} is under the temp dir", dir.display()),
    )?;
    let debug = format!("{pg:?}");
    let password = pg
        .config()
        .get_password()
        .map(|p| String::from_utf8_lossy(p).into_owned())
        .ok_or("config has a password")?;
    check(password.len() == 24, "24-hex-digit password")?;
    check(
        !debug.contains(&password),
        "Debug must not show the password",
    )?;
    check(pg.url().contains(&password), "url() carries the password")?;
    check(
        pg.url()
            .starts_with(&format!("postgres://pglogsink:{password}@127.0.0.1:")),
        "url() format",
    )?;

    let one = select_one(&pg.config()).map_err(|e| fail("SELECT 1", e))?;
    check(one == 1, "SELECT 1 returns 1")?;
    // The configured database is the one we are connected to.
    let db = with_client(&pg.config(), |c| {
        Box::pin(async move {
            Ok(c.query_one("SELECT current_database()", &[])
                .await?
                .get::<_, String>(0))
        })
    })
    .map_err(|e| fail("current_database()", e))?;
    check(
        db == "pglogsink",
        format!("database is pglogsink, got {db}"),
    )?;

    let pid = postmaster_pid(&dir)?;
    check(process_alive(pid), "postmaster alive while running")?;
    pg.stop().map_err(|e| fail("stop()", e))?;
    check(
        !dir.exists(),
        format!("{} removed by stop()", dir.display()),
    )?;
    check(
        !process_alive(pid),
        format!("postmaster {pid} gone after stop()"),
    )?;
    let left = processes_mentioning(&dir);
    check(
        left.is_empty(),
        format!("processes left for the dir: {left:?}"),
    )?;
    Ok(())
}

fn attach() -> Result<(), Failed> {
    let scratch = ScratchDir::new("attach", 0o755)?;
    let data_dir = scratch.0.join("data");

    let owner = EmbeddedPostgres::start(&data_dir).map_err(|e| fail("first start()", e))?;
    check(owner.owns_server(), "first start owns the server")?;
    let conn_file = data_dir.join("connection.conf");
    let mode = fs::metadata(&conn_file)
        .map_err(|e| fail("connection file", e))?
        .permissions()
        .mode();
    check(
        mode & 0o777 == 0o600,
        format!("connection file mode {mode:o}"),
    )?;

    with_client(&owner.config(), |c| {
        Box::pin(async move {
            c.batch_execute("CREATE TABLE kept (v int); INSERT INTO kept VALUES (42)")
                .await
        })
    })
    .map_err(|e| fail("create table", e))?;

    let second = EmbeddedPostgres::start(&data_dir).map_err(|e| fail("second start()", e))?;
    check(!second.owns_server(), "second start attaches")?;
    check(
        second.port() == owner.port(),
        "attached handle has the same port",
    )?;
    check(
        second.url() == owner.url(),
        "attached handle has the same url",
    )?;
    let attached = EmbeddedPostgres::attach(&data_dir)
        .map_err(|e| fail("attach()", e))?
        .ok_or("attach() finds the running server")?;
    check(attached.port() == owner.port(), "attach() port")?;
    check(
        second.stop_server().is_err(),
        "an attached handle cannot stop the server",
    )?;
    drop(attached);
    drop(second);
    check(
        select_one(&owner.config()).is_ok(),
        "dropping attached handles leaves the server running",
    )?;

    let pid = postmaster_pid(&data_dir)?;
    let old_port = owner.port();
    let old_config = owner.config();
    owner.stop().map_err(|e| fail("stop()", e))?;
    check(!process_alive(pid), "stopping the owner stops the server")?;
    check(
        select_one(&old_config).is_err(),
        "no connection after the owner stopped",
    )?;
    check(data_dir.join("pgdata/PG_VERSION").exists(), "cluster kept")?;
    check(
        EmbeddedPostgres::attach(&data_dir)
            .map_err(|e| fail("attach() after stop", e))?
            .is_none(),
        "attach() is None when no server runs",
    )?;

    let again = EmbeddedPostgres::start(&data_dir).map_err(|e| fail("restart", e))?;
    check(again.owns_server(), "restart owns the server")?;
    let _ = old_port; // the port may or may not be the same
    let v = with_client(&again.config(), |c| {
        Box::pin(async move {
            Ok(c.query_one("SELECT v FROM kept", &[])
                .await?
                .get::<_, i32>(0))
        })
    })
    .map_err(|e| fail("reading the table created before the restart", e))?;
    check(v == 42, "data survives a restart (no re-initdb)")?;
    let pid = postmaster_pid(&data_dir)?;
    drop(again);
    check(!process_alive(pid), "dropping the owner stops the server")?;
    check(data_dir.exists(), "a persistent data dir is kept")?;
    Ok(())
}

fn stop_start_server() -> Result<(), Failed> {
    let pg = EmbeddedPostgres::temporary().map_err(|e| fail("temporary()", e))?;
    let port = pg.port();
    check(select_one(&pg.config()).is_ok(), "works before stop_server")?;
    pg.stop_server().map_err(|e| fail("stop_server()", e))?;
    check(
        select_one(&pg.config()).is_err(),
        "connection fails while stopped",
    )?;
    check(
        EmbeddedPostgres::attach(pg.data_dir())
            .map_err(|e| fail("attach()", e))?
            .is_none(),
        "nothing to attach to while stopped",
    )?;
    pg.start_server().map_err(|e| fail("start_server()", e))?;
    check(pg.port() == port, "same port after start_server")?;
    let one = select_one(&pg.config()).map_err(|e| fail("SELECT 1 after restart", e))?;
    check(one == 1, "works after start_server")?;
    let dir = pg.data_dir().to_path_buf();
    pg.stop().map_err(|e| fail("stop()", e))?;
    check(!dir.exists(), "temporary dir removed")?;
    Ok(())
}

fn reachability() -> Result<(), Failed> {
    let temp = std::env::temp_dir();
    check(server_user_can_reach(&temp), "the temp dir is reachable")?;
    check(
        server_user_can_reach(&temp.join("pglogsink-not-yet-created/sub")),
        "a not-yet-existing dir under the temp dir is reachable",
    )?;

    let locked = ScratchDir::new("locked", 0o700)?;
    let inside = locked.0.join("data");
    if !is_root() {
        check(
            server_user_can_reach(&inside),
            "always reachable when not root",
        )?;
        return Ok(());
    }
    check(
        !server_user_can_reach(&inside),
        format!(
            "{} is not reachable (parent is 0700 root)",
            inside.display()
        ),
    )?;
    check(
        !server_user_can_reach(&locked.0),
        "the 0700 root dir itself is not reachable",
    )?;
    let err = match EmbeddedPostgres::start(&inside) {
        Ok(pg) => {
            let _ = pg.stop();
            return Err("start() on an unreachable dir must fail".into());
        }
        Err(e) => e.to_string(),
    };
    check(
        err.contains(&inside.display().to_string()),
        format!("error names the path: {err}"),
    )?;
    check(
        err.contains("postgres"),
        format!("error names the user: {err}"),
    )?;
    check(!inside.exists(), "nothing created for an unreachable dir")?;
    Ok(())
}
