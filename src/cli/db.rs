//! How a subcommand finds its database: `--database-url`, or the private
//! cluster in `--data-dir`.

use std::path::{Path, PathBuf};

use pglogsink::embedded::{self, EmbeddedPostgres};
use pglogsink::CancellationToken;
use tokio::task::JoinHandle;

use pglogsink::TableName;

use super::failure::Failure;

/// Where the Log table lives. Shared by every subcommand.
#[derive(Clone, clap::Args)]
pub(crate) struct DatabaseArgs {
    /// PostgreSQL to use, e.g. postgres://user:password@127.0.0.1:5432/db. Without it, a private
    /// cluster in --data-dir is used.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true, value_name = "URL")]
    pub(crate) database_url: Option<String>,

    /// Directory of the private PostgreSQL cluster used when no database URL is given
    /// [default: ./.pglogsink]. When run as root, the server runs as the `postgres` OS user, which
    /// must be able to reach this directory.
    #[arg(long, env = "PGLOGSINK_DATA_DIR", value_name = "DIR")]
    pub(crate) data_dir: Option<PathBuf>,

    /// The Log table, optionally schema-qualified (lowercase letters, digits, underscores).
    #[arg(long, env = "PGLOGSINK_TABLE", default_value = pglogsink::DEFAULT_TABLE, value_name = "NAME")]
    pub(crate) table: TableName,
}

// Written by hand so that the URL's password can never reach a log line.
impl std::fmt::Debug for DatabaseArgs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DatabaseArgs")
            .field(
                "database_url",
                &self
                    .database_url
                    .as_deref()
                    .and_then(|url| pglogsink::parse_url(url).ok())
                    .map(|config| describe_config(&config)),
            )
            .field("data_dir", &self.data_dir)
            .field("table", &self.table)
            .finish()
    }
}

/// Whether a subcommand may create the private cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    /// `serve`, `migrate`: initialise and start it if needed.
    CreateIfMissing,
    /// `load`, `logs`: use an existing one (starting it if it is stopped).
    Existing,
}

/// An open database: a pool, and the embedded server when there is one
/// (stopped by `close` or on drop if this process started it).
pub(crate) struct Database {
    pub(crate) pool: deadpool_postgres::Pool,
    /// Where the data is, for messages; never contains a password.
    pub(crate) description: String,
    /// Where local state (the spool) goes: the data dir.
    pub(crate) state_dir: PathBuf,
    /// How `pool` connects, for pools of other parts (the web viewer's).
    config: pglogsink::ConnectConfig,
    embedded: Option<EmbeddedPostgres>,
}

impl Database {
    pub(crate) async fn open(args: &DatabaseArgs, mode: Mode) -> Result<Database, Failure> {
        if let Some(url) = &args.database_url {
            let config = pglogsink::parse_url(url)?;
            let description = describe_config(&config);
            let pool = pglogsink::pool(config.clone(), pglogsink::DEFAULT_POOL_SIZE)?;
            let state_dir = args
                .data_dir
                .clone()
                .unwrap_or_else(|| PathBuf::from(".pglogsink"));
            return Ok(Database {
                pool,
                description,
                state_dir,
                config,
                embedded: None,
            });
        }
        let data_dir = resolve_data_dir(args.data_dir.as_deref());
        let state_dir = data_dir.clone();
        let server = tokio::task::spawn_blocking(move || start_embedded(&data_dir, mode))
            .await
            .map_err(|e| Failure::from(format!("starting PostgreSQL: {e}")))??;
        let description = format!(
            "the private PostgreSQL in {} (127.0.0.1:{}{})",
            server.data_dir().display(),
            server.port(),
            if server.owns_server() {
                ""
            } else {
                ", started by another pglogsink process"
            }
        );
        let pool = pglogsink::pool(server.config(), pglogsink::DEFAULT_POOL_SIZE)?;
        Ok(Database {
            pool,
            description,
            state_dir,
            config: server.config(),
            embedded: Some(server),
        })
    }

    /// Another pool on the same database, of at most `size` connections
    /// (opened when first needed), so that one part's long queries cannot
    /// take the connections another needs.
    pub(crate) fn separate_pool(
        &self,
        size: usize,
    ) -> Result<deadpool_postgres::Pool, pglogsink::Error> {
        pglogsink::pool(self.config.clone(), size)
    }

    /// Start the private PostgreSQL again whenever it dies, until `token` is
    /// cancelled; if it cannot be started, `token` is cancelled (a fatal
    /// stop). Nothing to do for a `--database-url`, or for a server another
    /// pglogsink process started (that process supervises it).
    pub(crate) fn supervise(&self, token: &CancellationToken) -> Supervision {
        let supervisor = self
            .embedded
            .as_ref()
            .filter(|server| server.owns_server())
            .and_then(|server| server.supervisor().ok());
        Supervision(supervisor.map(|s| tokio::spawn(s.run(token.clone()))))
    }

    /// Close the pool and stop the embedded server if this process started it.
    pub(crate) fn close(self) {
        self.pool.close();
        if let Some(server) = self.embedded {
            if let Err(e) = server.stop() {
                eprintln!("pglogsink: {e}");
            }
        }
    }
}

/// The supervision task of [`Database::supervise`].
pub(crate) struct Supervision(Option<JoinHandle<Result<(), pglogsink::Error>>>);

impl Supervision {
    /// Wait for the task (its token is cancelled by now); false, with the
    /// fatal line printed, when it gave up on the server.
    pub(crate) async fn finish(self) -> bool {
        let Some(task) = self.0 else {
            return true;
        };
        match task.await {
            Ok(Ok(())) => true,
            Ok(Err(e)) => {
                eprintln!("pglogsink: fatal: {e}");
                false
            }
            Err(e) => {
                eprintln!("pglogsink: fatal: the embedded PostgreSQL supervisor failed: {e}");
                false
            }
        }
    }
}

fn start_embedded(data_dir: &Path, mode: Mode) -> Result<EmbeddedPostgres, Failure> {
    if mode == Mode::Existing && !data_dir.join("pgdata").join("PG_VERSION").exists() {
        return Err(Failure::from(format!(
            "no pglogsink database in {}: start `pglogsink serve` (with the same --data-dir) first, \
             or pass --database-url",
            data_dir.display()
        )));
    }
    Ok(EmbeddedPostgres::start(data_dir)?)
}

/// The data dir to use. An explicit one is used as given (the launcher says
/// clearly if the server cannot reach it). The default `./.pglogsink` is used
/// unless we run as root in a directory the `postgres` user cannot reach
/// (a clone under /root): then a directory under the system temp dir, named
/// after the working directory so every subcommand run from here finds it.
pub(crate) fn resolve_data_dir(explicit: Option<&Path>) -> PathBuf {
    if let Some(dir) = explicit {
        return dir.to_owned();
    }
    let default = PathBuf::from(".pglogsink");
    let cwd = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("."));
    if embedded::server_user_can_reach(&cwd.join(&default)) {
        return default;
    }
    let fallback = std::env::temp_dir().join(format!(
        "pglogsink-{:016x}",
        fnv1a(cwd.as_os_str().as_encoded_bytes())
    ));
    eprintln!(
        "pglogsink: the postgres OS user cannot reach {}; using data dir {} instead (set --data-dir to choose)",
        cwd.join(&default).display(),
        fallback.display()
    );
    fallback
}

/// A stable hash (std's `DefaultHasher` may change between releases).
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// `user@host:port/db`, without the password.
pub(crate) fn describe_config(config: &tokio_postgres::Config) -> String {
    let host = config
        .get_hosts()
        .first()
        .map(|h| match h {
            tokio_postgres::config::Host::Tcp(h) => h.clone(),
            tokio_postgres::config::Host::Unix(p) => p.display().to_string(),
        })
        .unwrap_or_else(|| "localhost".to_owned());
    let port = config.get_ports().first().copied().unwrap_or(5432);
    format!(
        "{}@{host}:{port}/{}",
        config.get_user().unwrap_or("?"),
        config.get_dbname().unwrap_or("?")
    )
}
