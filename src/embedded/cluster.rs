//! Setting a cluster up: `initdb` on first use, a start on a free port, the
//! `pglogsink` database after the first start, and the connection settings
//! recorded for the next process.

use std::fs;
use std::io::Read;
use std::net::{Ipv4Addr, SocketAddrV4, TcpListener};
use std::path::PathBuf;
use std::time::Duration;

use super::connection_file::ConnectionFile;
use super::handle::EmbeddedPostgres;
use super::runner::{Runner, StartOutcome};
use super::{CONNECTION_FILE, PGDATA};
use crate::Error;

/// The superuser `initdb` creates, and the user we connect as.
pub(super) const USER: &str = "pglogsink";
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
        .dbname("postgres")
        .connect_timeout(Duration::from_secs(10));
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
                .batch_execute(&format!("CREATE DATABASE {}", quote_ident(&dbname)))
                .await
                .map_err(|e| Error::database(context, e))?;
        }
        Ok(())
    })
}

/// Connect with `config` (no TLS) and run `work` on that connection, on a
/// private thread with a current-thread runtime of its own, so that the
/// blocking code of this module works from inside an async context too.
/// `context` names what is done, for errors.
pub(super) fn on_private_runtime<T, F, Fut>(
    context: &str,
    config: crate::ConnectConfig,
    work: F,
) -> Result<T, Error>
where
    T: Send + 'static,
    F: FnOnce(tokio_postgres::Client, String) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = Result<T, Error>>,
{
    let thread_context = context.to_owned();
    let worker = std::thread::Builder::new()
        .name("pglogsink-embedded-sql".to_owned())
        .spawn(move || -> Result<T, Error> {
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
                let (client, connection) =
                    config
                        .postgres()
                        .connect(tokio_postgres::NoTls)
                        .await
                        .map_err(|e| Error::database(thread_context.clone(), e))?;
                let connection = tokio::spawn(connection);
                let result = work(client, thread_context).await;
                let _ = connection.await;
                result
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

/// A free TCP port on 127.0.0.1 (free now; the server may still lose a race
/// for it, which the caller retries).
pub(super) fn free_port() -> Result<u16, Error> {
    TcpListener::bind(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| Error::io("picking a free TCP port on", "127.0.0.1", e))
}

/// `bytes` random bytes from /dev/urandom, as lowercase hex.
pub(super) fn random_hex(bytes: usize) -> Result<String, Error> {
    let mut buf = vec![0u8; bytes];
    fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut buf))
        .map_err(|e| Error::io("reading", "/dev/urandom", e))?;
    Ok(buf.iter().map(|b| format!("{b:02x}")).collect())
}

pub(super) fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}
