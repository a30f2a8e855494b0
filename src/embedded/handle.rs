//! The handle to a private cluster: start, attach, a throw-away cluster,
//! how to connect, and stopping.

use std::fmt;
use std::fs;
use std::io;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::binaries::find_binaries;
use super::cluster::{free_port, on_private_runtime, random_hex, USER};
use super::connection_file::ConnectionFile;
use super::files::{absolute, canonical, create_dir_all_0755, set_mode};
use super::files::{CONNECTION_FILE, LOCK_FILE, PGDATA};
use super::os_user::{check_reachable, server_user, ReachHint};
use super::pid_file::{running_server, wait_for_settled_server};
use super::runner::{Runner, StartOutcome};
use super::start_lock::LockFile;
use super::supervise::Supervisor;
use crate::Error;

/// A PostgreSQL server running on a private data directory.
///
/// Either this handle started the server ([`owns_server`](Self::owns_server)
/// is true: it is stopped by [`stop`](Self::stop) or when the handle is
/// dropped), or it attached to a server another pglogsink process started
/// for the same data directory (then the server is left running).
///
/// `Debug` never shows the password.
pub struct EmbeddedPostgres {
    pub(super) data_dir: PathBuf,
    pub(super) pgdata: PathBuf,
    pub(super) port: u16,
    pub(super) user: String,
    pub(super) password: String,
    pub(super) dbname: String,
    pub(super) owns: bool,
    pub(super) temporary: bool,
    /// Set for owned handles: how to run `pg_ctl`.
    pub(super) runner: Option<Runner>,
    /// `stop()` has already run: `Drop` has nothing left to do.
    pub(super) finished: bool,
}

impl EmbeddedPostgres {
    /// Attach to the server already running for `data_dir` (started by
    /// another pglogsink process), or initialise the cluster (first use) and
    /// start it. A server started here is stopped by [`stop`](Self::stop) or
    /// when the handle is dropped.
    ///
    /// `data_dir` and its missing parents are created (mode 0755). When
    /// running as root, fails before touching anything if the `postgres` OS
    /// user cannot reach `data_dir` (see [`server_user_can_reach`](super::server_user_can_reach)).
    pub fn start(data_dir: impl AsRef<Path>) -> Result<EmbeddedPostgres, Error> {
        let data_dir = absolute(data_dir.as_ref())?;
        let server_user = server_user()?;
        if let Some(user) = &server_user {
            check_reachable(&data_dir, user, ReachHint::DataDir)?;
        }
        if let Some(attached) = Self::attach(&data_dir)? {
            return Ok(attached);
        }
        let bins = find_binaries()?;
        create_dir_all_0755(&data_dir)?;
        let data_dir = canonical(&data_dir)?;
        let _lock = LockFile::acquire(&data_dir.join(LOCK_FILE))?;
        // Another process may have started the server while we waited.
        if let Some(attached) = Self::attach(&data_dir)? {
            return Ok(attached);
        }
        let runner = Runner {
            bins,
            user: server_user,
        };
        launch(data_dir, runner, false)
    }

    /// Attach only: `Ok(None)` when no server is running for this data
    /// directory (including when the directory does not exist).
    ///
    /// A server that is still starting is waited for (up to 60 s); one that is
    /// shutting down is waited for too, and then reported as not running.
    pub fn attach(data_dir: impl AsRef<Path>) -> Result<Option<EmbeddedPostgres>, Error> {
        let data_dir = absolute(data_dir.as_ref())?;
        let pgdata = data_dir.join(PGDATA);
        let Some(info) = wait_for_settled_server(&pgdata)? else {
            return Ok(None);
        };
        let data_dir = canonical(&data_dir)?;
        let pgdata = data_dir.join(PGDATA);
        let conn_path = data_dir.join(CONNECTION_FILE);
        let conn = match ConnectionFile::read(&conn_path)? {
            Some(conn) => conn,
            None => {
                return Err(Error::embedded(format!(
                    "a PostgreSQL server (pid {}) is running for {}, but its connection file {} \
                     is missing, so pglogsink cannot log in to it; stop that server \
                     (`pg_ctl -D {} stop`) and start again, or set DATABASE_URL.",
                    info.pid,
                    data_dir.display(),
                    conn_path.display(),
                    pgdata.display()
                )))
            }
        };
        let port = info.port.or(conn.port).ok_or_else(|| {
            Error::embedded(format!(
                "a PostgreSQL server (pid {}) is running for {}, but its port cannot be \
                 determined from {}; stop that server and start again, or set DATABASE_URL.",
                info.pid,
                data_dir.display(),
                pgdata.join("postmaster.pid").display()
            ))
        })?;
        Ok(Some(EmbeddedPostgres {
            data_dir,
            pgdata,
            port,
            user: conn.user,
            password: conn.password,
            dbname: conn.dbname,
            owns: false,
            temporary: false,
            runner: None,
            finished: false,
        }))
    }

    /// A fresh cluster in a new directory under [`std::env::temp_dir`],
    /// removed (directory and all) when the handle is stopped or dropped.
    ///
    /// `initdb` runs with `--no-sync`; the server itself runs with default
    /// (durable) settings.
    pub fn temporary() -> Result<EmbeddedPostgres, Error> {
        let base = absolute(&std::env::temp_dir())?;
        let server_user = server_user()?;
        if let Some(user) = &server_user {
            check_reachable(&base, user, ReachHint::TempDir)?;
        }
        let bins = find_binaries()?;
        let mut attempt = 0;
        let dir = loop {
            let random = random_hex(4)?;
            let dir = base.join(format!("pglogsink-{}-{random}", std::process::id()));
            match fs::DirBuilder::new().mode(0o755).create(&dir) {
                Ok(()) => break dir,
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists && attempt < 10 => {
                    attempt += 1;
                }
                Err(e) => {
                    return Err(Error::io(
                        "creating a temporary directory for PostgreSQL",
                        &dir,
                        e,
                    ))
                }
            }
        };
        let result = (|| {
            set_mode(&dir, 0o755)?;
            let dir = canonical(&dir)?;
            let runner = Runner {
                bins,
                user: server_user,
            };
            launch(dir, runner, true)
        })();
        if result.is_err() {
            let _ = fs::remove_dir_all(&dir);
        }
        result
    }

    /// How to connect: host `127.0.0.1`, the port, user, password and
    /// database name, without TLS (the server listens on loopback only and
    /// has no certificate).
    pub fn config(&self) -> crate::ConnectConfig {
        let mut config = tokio_postgres::Config::new();
        config
            .host("127.0.0.1")
            .port(self.port)
            .user(&self.user)
            .password(&self.password)
            .dbname(&self.dbname)
            .ssl_mode(tokio_postgres::config::SslMode::Disable);
        crate::ConnectConfig::from(config)
    }

    /// `postgres://user:password@127.0.0.1:port/dbname?sslmode=disable`.
    ///
    /// It contains the password: hand it to child processes or put it in
    /// their environment, never print it. `sslmode=disable` keeps a
    /// `PGSSLMODE` in the environment from asking this server for TLS.
    pub fn url(&self) -> String {
        self.url_with_query("?sslmode=disable")
    }

    /// `postgres://user:password@127.0.0.1:port/dbname` and `query`.
    pub(super) fn url_with_query(&self, query: &str) -> String {
        format!(
            "postgres://{}:{}@127.0.0.1:{}/{}{query}",
            percent_encode(&self.user),
            percent_encode(&self.password),
            self.port,
            percent_encode(&self.dbname)
        )
    }

    /// The TCP port the server listens on (on `127.0.0.1`).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The data directory (absolute; see the [module docs](super) for its
    /// layout).
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// True when this handle started the server (and so will stop it).
    pub fn owns_server(&self) -> bool {
        self.owns
    }

    /// Stop the server if this handle owns it (`pg_ctl stop -m fast`, waiting
    /// up to 30 s), then remove the directory if it is temporary.
    pub fn stop(mut self) -> Result<(), Error> {
        self.finished = true;
        self.shutdown()
    }

    /// A [`Supervisor`] that starts this server again, on the same port,
    /// whenever it dies, until the token given to its
    /// [`run`](Supervisor::run) is cancelled. Only for a handle that owns its
    /// server (the process that started a server supervises it).
    pub fn supervisor(&self) -> Result<Supervisor, Error> {
        let runner = self.owned_runner("supervise")?;
        Ok(Supervisor::new(
            &self.data_dir,
            &self.pgdata,
            self.port,
            runner.clone(),
        ))
    }

    /// For fault-injection tests and benchmarks (feature `test-hooks`):
    /// stop the server now (fast shutdown) but keep the handle;
    /// [`start_server`](Self::start_server) starts it again on the same port.
    /// Only for a handle that owns its server.
    #[cfg(feature = "test-hooks")]
    pub fn stop_server(&self) -> Result<(), Error> {
        let runner = self.owned_runner("stop")?;
        runner.stop(&self.pgdata)
    }

    /// For fault-injection tests and benchmarks (feature `test-hooks`):
    /// start the server again after [`stop_server`](Self::stop_server), on
    /// the same port. Does nothing if it is already running. Only for a
    /// handle that owns its server.
    #[cfg(feature = "test-hooks")]
    pub fn start_server(&self) -> Result<(), Error> {
        let runner = self.owned_runner("start")?;
        if running_server(&self.pgdata)?.is_some() {
            return Ok(());
        }
        match runner.start(&self.pgdata, self.port)? {
            StartOutcome::Started => Ok(()),
            StartOutcome::PortTaken(message) | StartOutcome::Failed(message) => {
                Err(Error::embedded(message))
            }
        }
    }

    fn owned_runner(&self, what: &str) -> Result<&Runner, Error> {
        match (&self.runner, self.owns) {
            (Some(runner), true) => Ok(runner),
            _ => Err(Error::embedded(format!(
                "this handle attached to a PostgreSQL server started by another process for {}, \
                 so it cannot {what} it; use the handle that started the server.",
                self.data_dir.display()
            ))),
        }
    }

    /// Stop the server if owned and running; remove the directory if
    /// temporary.
    fn shutdown(&mut self) -> Result<(), Error> {
        if !self.owns {
            return Ok(());
        }
        if let Some(runner) = &self.runner {
            if running_server(&self.pgdata)?.is_some() {
                if let Err(e) = runner.stop(&self.pgdata) {
                    // Last resort, so that a temporary cluster does not outlive us.
                    if runner.stop_immediate(&self.pgdata).is_err() {
                        return Err(e);
                    }
                }
            }
        }
        if self.temporary {
            match fs::remove_dir_all(&self.data_dir) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => {
                    return Err(Error::io(
                        "removing the temporary PostgreSQL directory",
                        &self.data_dir,
                        e,
                    ))
                }
            }
        }
        Ok(())
    }
}

impl Drop for EmbeddedPostgres {
    fn drop(&mut self) {
        if self.finished {
            return;
        }
        self.finished = true;
        if let Err(e) = self.shutdown() {
            let message = e.to_string().replace('\n', " | ");
            eprintln!(
                "pglogsink: could not stop the embedded PostgreSQL server in {}: {message}",
                self.data_dir.display()
            );
        }
    }
}

impl fmt::Debug for EmbeddedPostgres {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EmbeddedPostgres")
            .field("data_dir", &self.data_dir)
            .field("port", &self.port)
            .field("user", &self.user)
            .field("password", &"<redacted>")
            .field("dbname", &self.dbname)
            .field("owns_server", &self.owns)
            .field("temporary", &self.temporary)
            .finish()
    }
}

fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The database created after the first start.
const DBNAME: &str = "pglogsink";
/// How many times a start is tried (with a new port) when the port was taken.
const START_ATTEMPTS: usize = 3;

/// Initialise the cluster in `data_dir/pgdata` if needed, start it, create the
/// database on first start and record the connection settings.
///
/// `data_dir` exists (and is canonical); for a persistent directory the
/// caller holds the start lock.
pub(super) fn launch(
    data_dir: PathBuf,
    runner: Runner,
    temporary: bool,
) -> Result<EmbeddedPostgres, Error> {
    let pgdata = data_dir.join(PGDATA);
    let conn_path = data_dir.join(CONNECTION_FILE);

    let mut conn = if pgdata.join("PG_VERSION").exists() {
        match ConnectionFile::read(&conn_path)? {
            Some(conn) => conn,
            None => {
                return Err(Error::embedded(format!(
                    "the PostgreSQL cluster in {} has no connection file {}, so its password is \
                     unknown; remove the directory {} to start afresh (this deletes its data), \
                     or choose another --data-dir.",
                    pgdata.display(),
                    conn_path.display(),
                    data_dir.display()
                )))
            }
        }
    } else {
        let conn = ConnectionFile {
            port: None,
            user: USER.to_owned(),
            password: random_hex(12)?,
            dbname: DBNAME.to_owned(),
            database_created: false,
        };
        // Written before initdb: a cluster never exists without its password.
        conn.write(&conn_path)?;
        runner.initdb(&data_dir, &pgdata, &conn.password, temporary)?;
        conn
    };

    let mut last_failure = String::new();
    let mut port = None;
    for _ in 0..START_ATTEMPTS {
        let candidate = free_port()?;
        match runner.start(&pgdata, candidate)? {
            StartOutcome::Started => {
                port = Some(candidate);
                break;
            }
            StartOutcome::PortTaken(message) => last_failure = message,
            StartOutcome::Failed(message) => return Err(Error::embedded(message)),
        }
    }
    let Some(port) = port else {
        return Err(Error::embedded(last_failure));
    };

    let handle = EmbeddedPostgres {
        data_dir,
        pgdata,
        port,
        user: conn.user.clone(),
        password: conn.password.clone(),
        dbname: conn.dbname.clone(),
        owns: true,
        temporary,
        runner: Some(runner),
        finished: false,
    };
    // From here on, an error drops `handle`, which stops the server (and
    // removes a temporary directory).
    if !conn.database_created {
        create_database(&handle)?;
        conn.database_created = true;
    }
    conn.port = Some(port);
    conn.write(&conn_path)?;
    Ok(handle)
}

/// Create the `dbname` database of `handle` if it does not exist, connecting
/// to the `postgres` database.
pub(super) fn create_database(handle: &EmbeddedPostgres) -> Result<(), Error> {
    let mut config = handle.config();
    config
        .set_dbname("postgres")
        .set_connect_timeout(Duration::from_secs(10));
    let dbname = handle.dbname.clone();
    let context = format!(
        "creating database `{dbname}` in the embedded PostgreSQL server ({})",
        handle.data_dir.display()
    );
    on_private_runtime(&context, config, move |client, context| async move {
        let exists = client
            .query_opt("SELECT 1 FROM pg_database WHERE datname = $1", &[&dbname])
            .await
            .map_err(|e| Error::database(context.clone(), e))?
            .is_some();
        if !exists {
            client
                .batch_execute(&format!(
                    "CREATE DATABASE {}",
                    crate::table::quote_identifier(&dbname)
                ))
                .await
                .map_err(|e| Error::database(context, e))?;
        }
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_encoding() {
        assert_eq!(percent_encode("ab-c_9"), "ab-c_9");
        assert_eq!(percent_encode("a b@c"), "a%20b%40c");
    }

    #[test]
    fn attach_to_missing_dir_is_none() {
        let dir = std::env::temp_dir().join("pglogsink-does-not-exist-7c1f");
        assert!(EmbeddedPostgres::attach(&dir).unwrap().is_none());
    }
}
