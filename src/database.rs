//! Connecting: a `DATABASE_URL` or an embedded server's settings become a
//! connection pool with sane timeouts.

use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use tokio_postgres::NoTls;

use crate::Error;

/// Connections in a pool made by [`pool`]: one for the sink's consumer, the
/// rest for whatever else the application does with it.
pub const DEFAULT_POOL_SIZE: usize = 4;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Parse a `postgres://` URL or a `key=value` connection string.
///
/// The error never repeats the string (it may hold a password).
pub fn parse_url(url: &str) -> Result<tokio_postgres::Config, Error> {
    url.parse::<tokio_postgres::Config>().map_err(|e| {
        Error::config(
            "database URL",
            format!("{e}; expected postgres://user:password@host:port/dbname"),
        )
    })
}

/// A pool for these settings. No connection is made until one is needed.
///
/// Sets a 5 s connect timeout, TCP keepalives and `application_name =
/// pglogsink` unless the settings already say otherwise. TLS is not used.
///
/// ```no_run
/// # async fn demo() -> Result<(), pglogsink::Error> {
/// let config = pglogsink::parse_url("postgres://app:secret@127.0.0.1:5432/app")?;
/// let pool = pglogsink::pool(config, pglogsink::DEFAULT_POOL_SIZE)?;
/// # Ok(()) }
/// ```
pub fn pool(mut config: tokio_postgres::Config, size: usize) -> Result<Pool, Error> {
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(CONNECT_TIMEOUT);
    }
    if config.get_application_name().is_none() {
        config.application_name("pglogsink");
    }
    config.keepalives(true);
    config.keepalives_idle(Duration::from_secs(30));
    let manager = Manager::from_config(
        config,
        NoTls,
        ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        },
    );
    Pool::builder(manager)
        .max_size(size.max(1))
        .runtime(Runtime::Tokio1)
        .wait_timeout(Some(CONNECT_TIMEOUT))
        .create_timeout(Some(CONNECT_TIMEOUT))
        .recycle_timeout(Some(CONNECT_TIMEOUT))
        .build()
        .map_err(|e| Error::pool("building the connection pool", e))
}

/// Take a connection from the pool, turning pool errors into [`Error`].
pub(crate) async fn connection(
    pool: &Pool,
    context: &str,
) -> Result<deadpool_postgres::Object, Error> {
    pool.get().await.map_err(|e| match e {
        deadpool_postgres::PoolError::Backend(e) => Error::database(context, e),
        other => Error::pool(context, other),
    })
}
