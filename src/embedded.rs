//! A private PostgreSQL cluster, started on demand.
//!
//! [`EmbeddedPostgres`] runs the PostgreSQL server binaries installed on the
//! machine (`initdb`, `pg_ctl`) against a data directory of its own. It is used
//!
//! * by the `pglogsink` binary when no `DATABASE_URL` is given, with a
//!   persistent `--data-dir` ([`EmbeddedPostgres::start`]); several pglogsink
//!   processes pointed at the same data directory share one server: the first
//!   one starts it (and stops it when it exits), the others attach to it;
//! * by integration tests and benchmarks, as a throw-away cluster under the
//!   system temporary directory ([`EmbeddedPostgres::temporary`]).
//!
//! Everything here is blocking (`std::process::Command`); call it before, or
//! outside of, the async runtime's hot paths.
//!
//! # Layout of a data directory
//!
//! ```text
//! <data_dir>/                  created by pglogsink, mode 0755 (the server's
//!                              OS user must be able to traverse it)
//! <data_dir>/pgdata/           the cluster (PGDATA), mode 0700; owned by the
//!                              `postgres` OS user when pglogsink runs as root
//! <data_dir>/pgdata/server.log the server's log (`pg_ctl -l`)
//! <data_dir>/connection.conf   mode 0600, `key=value` lines: port, user,
//!                              password, dbname, database_created; lets another
//!                              process attach to the running server
//! <data_dir>/start.lock        held (flock) while a process initialises or
//!                              starts the cluster, so concurrent starts do not
//!                              race
//! ```
//!
//! # The cluster
//!
//! `initdb` runs once, when `pgdata/PG_VERSION` is absent, with superuser
//! `pglogsink`, a random 24-hex-digit password, `scram-sha-256` authentication
//! for TCP, `peer` for local sockets (none are created), `UTF8` and locale `C`.
//! The server listens on `127.0.0.1` only, on a free port picked at each start,
//! and creates no Unix socket.
//!
//! After the first start, a database named `pglogsink` is created (over a
//! short-lived `tokio_postgres` connection to the `postgres` database, on a
//! private thread with its own current-thread runtime, so this works from
//! inside an async context too). [`EmbeddedPostgres::config`] and
//! [`EmbeddedPostgres::url`] point at that database.
//!
//! # Running as root
//!
//! PostgreSQL refuses to run as root. When the effective uid is 0, `initdb`
//! and `pg_ctl` run as the `postgres` OS user (which must exist), so the data
//! directory must be reachable by that user: see [`server_user_can_reach`].
//!
//! # Finding the server binaries
//!
//! In order: the directory named by `PGLOGSINK_PG_BIN` (an error if it is set
//! but does not hold both binaries), the first `PATH` directory holding both
//! `initdb` and `pg_ctl`, `/usr/lib/postgresql/<version>/bin` (highest version
//! first), `/usr/local/pgsql/bin`.

use std::ffi::{CString, OsStr};
use std::fmt;
use std::fs;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::net::{Ipv4Addr, SocketAddrV4, TcpListener};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::os::unix::io::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::Error;

/// The superuser `initdb` creates, and the user we connect as.
const USER: &str = "pglogsink";
/// The database created after the first start.
const DBNAME: &str = "pglogsink";
/// The OS user the server runs as when we are root.
const SERVER_OS_USER: &str = "postgres";
/// Name of the connection settings file inside the data directory.
const CONNECTION_FILE: &str = "connection.conf";
/// Name of the lock file inside the data directory.
const LOCK_FILE: &str = "start.lock";
/// Name of the cluster directory inside the data directory.
const PGDATA: &str = "pgdata";
/// Name of the server log inside the cluster directory.
const SERVER_LOG: &str = "server.log";
/// How many times a start is tried (with a new port) when the port was taken.
const START_ATTEMPTS: usize = 3;
/// How many lines of the server log go into a start error.
const LOG_TAIL_LINES: usize = 20;

const NOT_FOUND: &str = "PostgreSQL server binaries (initdb, pg_ctl) not found; install them \
     (Debian/Ubuntu: `apt-get install postgresql`), or set PGLOGSINK_PG_BIN to the directory \
     that holds them, or set DATABASE_URL / --database-url to use an existing server.";

/// A PostgreSQL server running on a private data directory.
///
/// Either this handle started the server ([`owns_server`](Self::owns_server)
/// is true: it is stopped by [`stop`](Self::stop) or when the handle is
/// dropped), or it attached to a server another pglogsink process started
/// for the same data directory (then the server is left running).
///
/// `Debug` never shows the password.
pub struct EmbeddedPostgres {
    data_dir: PathBuf,
    pgdata: PathBuf,
    port: u16,
    user: String,
    password: String,
    dbname: String,
    owns: bool,
    temporary: bool,
    /// Set for owned handles: how to run `pg_ctl`.
    runner: Option<Runner>,
    /// `stop()` has already run: `Drop` has nothing left to do.
    finished: bool,
}

impl EmbeddedPostgres {
    /// Attach to the server already running for `data_dir` (started by
    /// another pglogsink process), or initialise the cluster (first use) and
    /// start it. A server started here is stopped by [`stop`](Self::stop) or
    /// when the handle is dropped.
    ///
    /// `data_dir` and its missing parents are created (mode 0755). When
    /// running as root, fails before touching anything if the `postgres` OS
    /// user cannot reach `data_dir` (see [`server_user_can_reach`]).
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
        format!(
            "postgres://{}:{}@127.0.0.1:{}/{}?sslmode=disable",
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

    /// The data directory (absolute; see the [module docs](self) for its
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

    /// For fault-injection tests: stop the server now (fast shutdown) but keep
    /// the handle; [`start_server`](Self::start_server) starts it again on
    /// the same port. Only for a handle that owns its server.
    pub fn stop_server(&self) -> Result<(), Error> {
        let runner = self.owned_runner("stop")?;
        runner.stop(&self.pgdata)
    }

    /// Start the server again after [`stop_server`](Self::stop_server), on
    /// the same port. Does nothing if it is already running. Only for a
    /// handle that owns its server.
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

/// Whether the OS user the server will run as can reach `path`: every
/// existing directory on the way (after resolving symlinks), including `path`
/// itself when it exists, must be searchable (`x`) by that user.
///
/// When `path` does not exist yet, pglogsink creates the missing directories
/// itself (mode 0755), so only search permission on the nearest existing
/// ancestor is required, not write permission.
///
/// Always true when not running as root (the server then runs as the current
/// user). When running as root and there is no `postgres` OS user, false.
pub fn server_user_can_reach(path: &Path) -> bool {
    match server_user() {
        Ok(None) => true,
        Ok(Some(user)) => match absolute(path) {
            Ok(path) => unreachable_component(&path, &user).is_none(),
            Err(_) => false,
        },
        Err(_) => false,
    }
}

// ---------------------------------------------------------------------------
// Launching

/// Initialise the cluster in `data_dir/pgdata` if needed, start it, create the
/// database on first start and record the connection settings.
///
/// `data_dir` exists (and is canonical); for a persistent directory the
/// caller holds the start lock.
fn launch(data_dir: PathBuf, runner: Runner, temporary: bool) -> Result<EmbeddedPostgres, Error> {
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
fn create_database(handle: &EmbeddedPostgres) -> Result<(), Error> {
    let mut config = handle.config();
    config
        .dbname("postgres")
        .connect_timeout(Duration::from_secs(10));
    let dbname = handle.dbname.clone();
    let context = format!(
        "creating database `{dbname}` in the embedded PostgreSQL server ({})",
        handle.data_dir.display()
    );
    let thread_context = context.clone();
    let worker = std::thread::Builder::new()
        .name("pglogsink-createdb".to_owned())
        .spawn(move || -> Result<(), Error> {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| {
                    Error::embedded(format!(
                        "{thread_context}: could not build a tokio runtime ({e}); check the \
                         process's resource limits."
                    ))
                })?;
            runtime.block_on(async move {
                let (client, connection) = config
                    .connect(tokio_postgres::NoTls)
                    .await
                    .map_err(|e| Error::database(thread_context.clone(), e))?;
                let connection = tokio::spawn(connection);
                let exists = client
                    .query_opt("SELECT 1 FROM pg_database WHERE datname = $1", &[&dbname])
                    .await
                    .map_err(|e| Error::database(thread_context.clone(), e))?
                    .is_some();
                if !exists {
                    client
                        .batch_execute(&format!("CREATE DATABASE {}", quote_ident(&dbname)))
                        .await
                        .map_err(|e| Error::database(thread_context.clone(), e))?;
                }
                drop(client);
                let _ = connection.await;
                Ok(())
            })
        })
        .map_err(|e| {
            Error::embedded(format!(
                "{context}: could not spawn a thread ({e}); check the process's resource limits."
            ))
        })?;
    worker.join().map_err(|_| {
        Error::embedded(format!(
            "{context}: the worker thread panicked; this is a bug in pglogsink, please report it."
        ))
    })?
}

/// How to run the server binaries, and as whom.
struct Runner {
    bins: Binaries,
    /// The OS user to run as (when we are root).
    user: Option<OsUser>,
}

enum StartOutcome {
    Started,
    /// The start failed because the port was in use; try another.
    PortTaken(String),
    Failed(String),
}

impl Runner {
    fn command(&self, program: &Path, cwd: &Path) -> Command {
        let mut cmd = Command::new(program);
        cmd.current_dir(cwd)
            .stdin(Stdio::null())
            .env_remove("HOME")
            .env("LC_MESSAGES", "C")
            // Own process group: a Ctrl-C in the terminal must not stop the
            // server before our process has drained its queue.
            .process_group(0);
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("PG") {
                cmd.env_remove(key);
            }
        }
        if let Some(user) = &self.user {
            cmd.uid(user.uid).gid(user.gid);
        }
        cmd
    }

    fn run(&self, program: &Path, cwd: &Path, args: &[&OsStr]) -> Result<Output, Error> {
        self.command(program, cwd)
            .args(args)
            .output()
            .map_err(|e| Error::io("running", program, e))
    }

    /// `initdb` into `pgdata` (created here, mode 0700, owned by the server
    /// user).
    fn initdb(
        &self,
        data_dir: &Path,
        pgdata: &Path,
        password: &str,
        no_sync: bool,
    ) -> Result<(), Error> {
        match fs::read_dir(pgdata) {
            Ok(mut entries) => {
                if entries.next().is_some() {
                    return Err(Error::embedded(format!(
                        "{} is not empty but holds no complete PostgreSQL cluster (no PG_VERSION; \
                         an earlier initialisation was probably interrupted); remove that \
                         directory and try again.",
                        pgdata.display()
                    )));
                }
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                fs::DirBuilder::new()
                    .mode(0o700)
                    .create(pgdata)
                    .map_err(|e| Error::io("creating the PostgreSQL data directory", pgdata, e))?;
            }
            Err(e) => return Err(Error::io("reading", pgdata, e)),
        }
        set_mode(pgdata, 0o700)?;
        self.give_to_server_user(pgdata)?;

        let pwfile = data_dir.join("initdb.pwfile");
        let _ = fs::remove_file(&pwfile);
        write_private_file(&pwfile, format!("{password}\n").as_bytes())
            .map_err(|e| Error::io("writing the initdb password file", &pwfile, e))?;
        let result = self.give_to_server_user(&pwfile).and_then(|()| {
            let mut args: Vec<&OsStr> = vec![
                OsStr::new("-D"),
                pgdata.as_os_str(),
                OsStr::new("-U"),
                OsStr::new(USER),
            ];
            let pwfile_arg = format!("--pwfile={}", pwfile.display());
            args.extend(
                [
                    pwfile_arg.as_str(),
                    "--auth-local=peer",
                    "--auth-host=scram-sha-256",
                    "-E",
                    "UTF8",
                    "--locale=C",
                ]
                .map(OsStr::new),
            );
            if no_sync {
                args.push(OsStr::new("--no-sync"));
            }
            self.run(&self.bins.initdb, data_dir, &args)
        });
        let _ = fs::remove_file(&pwfile);
        let output = result?;
        if !output.status.success() {
            return Err(Error::embedded(format!(
                "initdb failed for {} ({}): {}; fix the problem it reports, or set DATABASE_URL \
                 to use an existing server.",
                pgdata.display(),
                output.status,
                flatten(&output.stderr)
            )));
        }
        Ok(())
    }

    /// `pg_ctl start` on `port`.
    fn start(&self, pgdata: &Path, port: u16) -> Result<StartOutcome, Error> {
        let log = pgdata.join(SERVER_LOG);
        let log_start = fs::metadata(&log).map(|m| m.len()).unwrap_or(0);
        let options =
            format!("-c listen_addresses=127.0.0.1 -c port={port} -c unix_socket_directories=''");
        let cwd = pgdata.parent().unwrap_or(pgdata);
        let output = self.run(
            &self.bins.pg_ctl,
            cwd,
            &[
                OsStr::new("-D"),
                pgdata.as_os_str(),
                OsStr::new("-l"),
                log.as_os_str(),
                OsStr::new("-w"),
                OsStr::new("-t"),
                OsStr::new("60"),
                OsStr::new("-o"),
                OsStr::new(&options),
                OsStr::new("start"),
            ],
        )?;
        if output.status.success() {
            return Ok(StartOutcome::Started);
        }
        let new_log = read_from(&log, log_start);
        let tail = last_lines(&new_log, LOG_TAIL_LINES);
        let message = format!(
            "the embedded PostgreSQL server in {} did not start on port {port} (pg_ctl: {}); \
             fix the problem shown in the last lines of {} below, or set DATABASE_URL to use an \
             existing server:\n{}",
            pgdata.display(),
            pg_ctl_said(&output.stderr),
            log.display(),
            if tail.is_empty() {
                "(the log is empty)"
            } else {
                &tail
            }
        );
        if new_log.contains("Address already in use") {
            Ok(StartOutcome::PortTaken(message))
        } else {
            Ok(StartOutcome::Failed(message))
        }
    }

    /// `pg_ctl stop -m fast`, waiting up to 30 s.
    fn stop(&self, pgdata: &Path) -> Result<(), Error> {
        self.stop_mode(pgdata, "fast")
    }

    fn stop_immediate(&self, pgdata: &Path) -> Result<(), Error> {
        self.stop_mode(pgdata, "immediate")
    }

    fn stop_mode(&self, pgdata: &Path, mode: &str) -> Result<(), Error> {
        // The postmaster removes postmaster.pid (which is what `pg_ctl -w`
        // waits for) a moment before its process ends: wait for the process
        // too, so that "stopped" means no server process is left.
        let pid = running_server(pgdata).ok().flatten().map(|p| p.pid);
        self.pg_ctl_stop(pgdata, mode)?;
        if let Some(pid) = pid {
            let deadline = Instant::now() + Duration::from_secs(10);
            while pid_alive(pid) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        Ok(())
    }

    fn pg_ctl_stop(&self, pgdata: &Path, mode: &str) -> Result<(), Error> {
        let cwd = pgdata.parent().unwrap_or(pgdata);
        let output = self.run(
            &self.bins.pg_ctl,
            cwd,
            &[
                OsStr::new("-D"),
                pgdata.as_os_str(),
                OsStr::new("-m"),
                OsStr::new(mode),
                OsStr::new("-w"),
                OsStr::new("-t"),
                OsStr::new("30"),
                OsStr::new("stop"),
            ],
        )?;
        if output.status.success() {
            return Ok(());
        }
        Err(Error::embedded(format!(
            "stopping the embedded PostgreSQL server in {} failed (pg_ctl: {}); see {}, and stop \
             it by hand with `pg_ctl -D {} stop` if it is still running.",
            pgdata.display(),
            pg_ctl_said(&output.stderr),
            pgdata.join(SERVER_LOG).display(),
            pgdata.display()
        )))
    }

    fn give_to_server_user(&self, path: &Path) -> Result<(), Error> {
        if let Some(user) = &self.user {
            std::os::unix::fs::chown(path, Some(user.uid), Some(user.gid)).map_err(|e| {
                Error::io(
                    format!("changing the owner (to `{SERVER_OS_USER}`) of"),
                    path,
                    e,
                )
            })?;
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------
// The running server (postmaster.pid)

struct PidFile {
    pid: i32,
    port: Option<u16>,
    status: Option<String>,
}

/// The server running for `pgdata`, if any (postmaster.pid present and its
/// pid alive).
fn running_server(pgdata: &Path) -> Result<Option<PidFile>, Error> {
    let path = pgdata.join("postmaster.pid");
    let text = match fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io("reading", &path, e)),
    };
    let lines: Vec<&str> = text.lines().collect();
    let Some(pid) = lines.first().and_then(|l| l.trim().parse::<i32>().ok()) else {
        // Being written, or garbage: not a usable server.
        return Ok(None);
    };
    if !pid_alive(pid) {
        return Ok(None);
    }
    let port = lines
        .get(3)
        .and_then(|l| l.trim().parse::<u16>().ok())
        .filter(|&p| p != 0);
    let status = lines
        .get(7)
        .map(|l| l.trim().to_owned())
        .filter(|s| !s.is_empty());
    Ok(Some(PidFile { pid, port, status }))
}

/// The running server for `pgdata` once it is ready: waits while it is
/// starting (up to 60 s) and while it is stopping (then `None`).
fn wait_for_settled_server(pgdata: &Path) -> Result<Option<PidFile>, Error> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let Some(info) = running_server(pgdata)? else {
            return Ok(None);
        };
        match info.status.as_deref() {
            Some("ready") | Some("standby") => return Ok(Some(info)),
            _ if Instant::now() >= deadline => {
                return Err(Error::embedded(format!(
                    "the PostgreSQL server (pid {}) for {} has been {} for more than 60 s; see \
                     {}, and stop it with `pg_ctl -D {} stop` if it is stuck.",
                    info.pid,
                    pgdata.display(),
                    match info.status.as_deref() {
                        Some("stopping") => "stopping",
                        _ => "starting",
                    },
                    pgdata.join(SERVER_LOG).display(),
                    pgdata.display()
                )))
            }
            _ => std::thread::sleep(Duration::from_millis(50)),
        }
    }
}

/// Whether `pid` is a live (not zombie) process.
fn pid_alive(pid: i32) -> bool {
    if pid <= 0 {
        return false;
    }
    // SAFETY: kill with signal 0 only checks for existence and permission.
    let rc = unsafe { libc::kill(pid, 0) };
    if rc != 0 && io::Error::last_os_error().raw_os_error() != Some(libc::EPERM) {
        return false;
    }
    // A zombie (dead, not yet reaped) still answers kill(0).
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .map_or(true, |state| state != "Z" && state != "X"),
        Err(_) => true,
    }
}

// ---------------------------------------------------------------------------
// The connection file

struct ConnectionFile {
    port: Option<u16>,
    user: String,
    password: String,
    dbname: String,
    database_created: bool,
}

impl ConnectionFile {
    /// `Ok(None)` when the file does not exist.
    fn read(path: &Path) -> Result<Option<ConnectionFile>, Error> {
        let text =
            match fs::read_to_string(path) {
                Ok(text) => text,
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
                Err(e) => return Err(Error::io(
                    "reading the embedded PostgreSQL connection file (run pglogsink as the user \
                     that created it)",
                    path,
                    e,
                )),
            };
        let (mut port, mut user, mut password, mut dbname, mut created) =
            (None, None, None, None, false);
        for line in text.lines() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let Some((key, value)) = line.split_once('=') else {
                continue;
            };
            let value = value.trim();
            match key.trim() {
                "port" => port = value.parse::<u16>().ok().filter(|&p| p != 0),
                "user" => user = Some(value.to_owned()),
                "password" => password = Some(value.to_owned()),
                "dbname" => dbname = Some(value.to_owned()),
                "database_created" => created = value == "true",
                _ => {}
            }
        }
        match (user, password, dbname) {
            (Some(user), Some(password), Some(dbname))
                if !user.is_empty() && !password.is_empty() && !dbname.is_empty() =>
            {
                Ok(Some(ConnectionFile {
                    port,
                    user,
                    password,
                    dbname,
                    database_created: created,
                }))
            }
            _ => Err(Error::embedded(format!(
                "the embedded PostgreSQL connection file {} is incomplete (it needs user, \
                 password and dbname lines); restore it, or remove its data directory to start \
                 afresh (this deletes its data).",
                path.display()
            ))),
        }
    }

    /// Write atomically (temporary file + rename), mode 0600.
    fn write(&self, path: &Path) -> Result<(), Error> {
        let text = format!(
            "# pglogsink embedded PostgreSQL connection settings; private (contains the \
             password)\nport={}\nuser={}\npassword={}\ndbname={}\ndatabase_created={}\n",
            self.port.unwrap_or(0),
            self.user,
            self.password,
            self.dbname,
            self.database_created
        );
        let tmp = path.with_extension("conf.tmp");
        let _ = fs::remove_file(&tmp);
        let written =
            write_private_file(&tmp, text.as_bytes()).and_then(|()| fs::rename(&tmp, path));
        written.map_err(|e| {
            let _ = fs::remove_file(&tmp);
            Error::io("writing the embedded PostgreSQL connection file", path, e)
        })
    }
}

/// Create `path` (it must not exist) readable by its owner only, write
/// `bytes` and sync: for files that hold the password.
fn write_private_file(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

// ---------------------------------------------------------------------------
// Start lock

/// An exclusive `flock` on a file, released on drop.
struct LockFile {
    _file: fs::File,
}

impl LockFile {
    fn acquire(path: &Path) -> Result<LockFile, Error> {
        let file = fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(path)
            .map_err(|e| Error::io("opening the start lock", path, e))?;
        loop {
            // SAFETY: the descriptor is valid for the life of `file`.
            let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) };
            if rc == 0 {
                return Ok(LockFile { _file: file });
            }
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(Error::io("locking", path, e));
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Binaries

struct Binaries {
    initdb: PathBuf,
    pg_ctl: PathBuf,
}

impl Binaries {
    fn in_dir(dir: &Path) -> Option<Binaries> {
        let initdb = dir.join("initdb");
        let pg_ctl = dir.join("pg_ctl");
        (is_executable(&initdb) && is_executable(&pg_ctl)).then_some(Binaries { initdb, pg_ctl })
    }
}

fn find_binaries() -> Result<Binaries, Error> {
    if let Some(dir) = std::env::var_os("PGLOGSINK_PG_BIN").filter(|d| !d.is_empty()) {
        let dir = PathBuf::from(dir);
        return Binaries::in_dir(&dir).ok_or_else(|| {
            Error::embedded(format!(
                "PGLOGSINK_PG_BIN is set to {}, but that directory does not hold both initdb and \
                 pg_ctl; point it at the directory of the PostgreSQL server binaries (e.g. \
                 /usr/lib/postgresql/15/bin), or unset it.",
                dir.display()
            ))
        });
    }
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            if dir.as_os_str().is_empty() {
                continue;
            }
            if let Some(bins) = Binaries::in_dir(&dir) {
                return Ok(bins);
            }
        }
    }
    let mut versions: Vec<(Vec<u32>, PathBuf)> = Vec::new();
    if let Ok(entries) = fs::read_dir("/usr/lib/postgresql") {
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some(version) = name
                .to_str()
                .and_then(|n| n.split('.').map(|p| p.parse::<u32>().ok()).collect())
            else {
                continue;
            };
            versions.push((version, entry.path().join("bin")));
        }
    }
    versions.sort_by(|a, b| b.0.cmp(&a.0));
    for (_, dir) in versions {
        if let Some(bins) = Binaries::in_dir(&dir) {
            return Ok(bins);
        }
    }
    Binaries::in_dir(Path::new("/usr/local/pgsql/bin")).ok_or_else(|| Error::embedded(NOT_FOUND))
}

fn is_executable(path: &Path) -> bool {
    fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

// ---------------------------------------------------------------------------
// OS user and reachability

#[derive(Clone, Copy)]
struct OsUser {
    uid: u32,
    gid: u32,
}

/// The OS user the server must run as: `None` when we are not root (it runs
/// as us), the `postgres` user when we are.
fn server_user() -> Result<Option<OsUser>, Error> {
    // SAFETY: geteuid cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        return Ok(None);
    }
    lookup_user(SERVER_OS_USER).map(Some).ok_or_else(|| {
        Error::embedded(format!(
            "pglogsink runs as root, and PostgreSQL refuses to run as root, but there is no \
             `{SERVER_OS_USER}` OS user to run it as; create one (e.g. `useradd --system \
             {SERVER_OS_USER}`), run pglogsink as another user, or set DATABASE_URL."
        ))
    })
}

fn lookup_user(name: &str) -> Option<OsUser> {
    let cname = CString::new(name).ok()?;
    let mut buf: Vec<libc::c_char> = vec![0; 1024];
    loop {
        // SAFETY: all-zero is a valid `passwd` (null pointers, zero ids).
        let mut pwd: libc::passwd = unsafe { std::mem::zeroed() };
        let mut result: *mut libc::passwd = std::ptr::null_mut();
        // SAFETY: the pointers are valid for the stated sizes; getpwnam_r is
        // the thread-safe variant of getpwnam.
        let rc = unsafe {
            libc::getpwnam_r(
                cname.as_ptr(),
                &mut pwd,
                buf.as_mut_ptr(),
                buf.len(),
                &mut result,
            )
        };
        if rc == libc::ERANGE && buf.len() < 1 << 20 {
            buf.resize(buf.len() * 2, 0);
            continue;
        }
        if rc != 0 || result.is_null() {
            return None;
        }
        return Some(OsUser {
            uid: pwd.pw_uid,
            gid: pwd.pw_gid,
        });
    }
}

#[derive(Clone, Copy)]
enum ReachHint {
    DataDir,
    TempDir,
}

fn check_reachable(path: &Path, user: &OsUser, hint: ReachHint) -> Result<(), Error> {
    let Some(blocker) = unreachable_component(path, user) else {
        return Ok(());
    };
    let what = if blocker == path {
        format!(
            "the directory {} is not accessible to it",
            blocker.display()
        )
    } else {
        format!(
            "the parent directory {} is not accessible to it",
            blocker.display()
        )
    };
    let advice = match hint {
        ReachHint::DataDir => {
            "choose a --data-dir it can reach, e.g. under /var/tmp, or set DATABASE_URL"
        }
        ReachHint::TempDir => {
            "set TMPDIR to a directory it can reach, e.g. /var/tmp, or set DATABASE_URL"
        }
    };
    Err(Error::embedded(format!(
        "the PostgreSQL server runs as OS user `{SERVER_OS_USER}`, which cannot reach {} ({what}); \
         {advice}.",
        path.display()
    )))
}

/// The first directory on the way to `path` (absolute) that `user` cannot
/// search, if any.
fn unreachable_component(path: &Path, user: &OsUser) -> Option<PathBuf> {
    if user.uid == 0 {
        return None;
    }
    let existing = path.ancestors().find(|a| fs::symlink_metadata(a).is_ok())?;
    let resolved = match fs::canonicalize(existing) {
        Ok(resolved) => resolved,
        Err(_) => return Some(existing.to_path_buf()),
    };
    let mut chain: Vec<&Path> = resolved.ancestors().collect();
    chain.reverse();
    for dir in chain {
        let searchable = match fs::metadata(dir) {
            Ok(meta) if meta.is_dir() => {
                let bit = if meta.uid() == user.uid {
                    0o100
                } else if meta.gid() == user.gid {
                    0o010
                } else {
                    0o001
                };
                meta.mode() & bit != 0
            }
            _ => false,
        };
        if !searchable {
            return Some(dir.to_path_buf());
        }
    }
    None
}

// ---------------------------------------------------------------------------
// Small helpers

fn absolute(path: &Path) -> Result<PathBuf, Error> {
    if path.as_os_str().is_empty() {
        return Err(Error::embedded(
            "the PostgreSQL data directory path is empty; give a directory, e.g. --data-dir \
             ./.pglogsink.",
        ));
    }
    if path.is_absolute() {
        return Ok(path.to_path_buf());
    }
    std::env::current_dir()
        .map(|cwd| cwd.join(path))
        .map_err(|e| Error::io("resolving the relative path", path, e))
}

fn canonical(path: &Path) -> Result<PathBuf, Error> {
    fs::canonicalize(path).map_err(|e| Error::io("resolving", path, e))
}

fn set_mode(path: &Path, mode: u32) -> Result<(), Error> {
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .map_err(|e| Error::io(format!("setting mode {mode:o} on"), path, e))
}

/// Create `path` and its missing parents, each with mode 0755 regardless of
/// the umask (the server's OS user must be able to traverse them).
fn create_dir_all_0755(path: &Path) -> Result<(), Error> {
    let mut missing: Vec<&Path> = path.ancestors().take_while(|a| !a.exists()).collect();
    missing.reverse();
    for dir in missing {
        match fs::DirBuilder::new().mode(0o755).create(dir) {
            Ok(()) => set_mode(dir, 0o755)?,
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists && dir.is_dir() => {}
            Err(e) => return Err(Error::io("creating directory", dir, e)),
        }
    }
    if !path.is_dir() {
        return Err(Error::embedded(format!(
            "{} exists but is not a directory; choose another --data-dir.",
            path.display()
        )));
    }
    Ok(())
}

/// A free TCP port on 127.0.0.1 (free now; the server may still lose a race
/// for it, which the caller retries).
fn free_port() -> Result<u16, Error> {
    TcpListener::bind(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| Error::io("picking a free TCP port on", "127.0.0.1", e))
}

/// `bytes` random bytes from /dev/urandom, as lowercase hex.
fn random_hex(bytes: usize) -> Result<String, Error> {
    let mut buf = vec![0u8; bytes];
    fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut buf))
        .map_err(|e| Error::io("reading", "/dev/urandom", e))?;
    Ok(buf.iter().map(|b| format!("{b:02x}")).collect())
}

/// The text of `path` from byte `offset` on (lossy); empty if unreadable.
fn read_from(path: &Path, offset: u64) -> String {
    let mut bytes = Vec::new();
    let read = fs::File::open(path).and_then(|mut f| {
        let len = f.metadata()?.len();
        f.seek(SeekFrom::Start(if offset <= len { offset } else { 0 }))?;
        f.read_to_end(&mut bytes)
    });
    match read {
        Ok(_) => String::from_utf8_lossy(&bytes).into_owned(),
        Err(_) => String::new(),
    }
}

fn last_lines(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Command output as one line.
fn flatten(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    let joined = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" ");
    if joined.is_empty() {
        "no output".to_owned()
    } else {
        joined
    }
}

/// `pg_ctl`'s stderr as one line, without its `pg_ctl: ` prefixes.
fn pg_ctl_said(bytes: &[u8]) -> String {
    flatten(bytes).replace("pg_ctl: ", "")
}

fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_encoding() {
        assert_eq!(percent_encode("ab-c_9"), "ab-c_9");
        assert_eq!(percent_encode("a b@c"), "a%20b%40c");
    }

    #[test]
    fn tail_of_log() {
        assert_eq!(last_lines("a\nb\n\nc\n", 2), "b\nc");
        assert_eq!(last_lines("", 5), "");
    }

    #[test]
    fn connection_file_round_trip() {
        let dir = std::env::temp_dir().join(format!(
            "pglogsink-unit-{}-{}",
            std::process::id(),
            random_hex(4).unwrap()
        ));
        fs::create_dir_all(&dir).unwrap();
        let path = dir.join(CONNECTION_FILE);
        let conn = ConnectionFile {
            port: Some(5433),
            user: "u".into(),
            password: "p=q".into(),
            dbname: "d".into(),
            database_created: true,
        };
        conn.write(&path).unwrap();
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let back = ConnectionFile::read(&path).unwrap().unwrap();
        assert_eq!(back.port, Some(5433));
        assert_eq!(back.password, "p=q");
        assert!(back.database_created);
        fs::remove_dir_all(&dir).unwrap();
        assert!(ConnectionFile::read(&path).unwrap().is_none());
    }

    #[test]
    fn attach_to_missing_dir_is_none() {
        let dir = std::env::temp_dir().join("pglogsink-does-not-exist-7c1f");
        assert!(EmbeddedPostgres::attach(&dir).unwrap().is_none());
    }
}
