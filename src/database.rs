//! Connecting: a `DATABASE_URL` or an embedded server's settings become a
//! connection pool with sane timeouts and, where asked for, TLS.

use std::fmt;
use std::ops::Deref;
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use tokio_postgres::NoTls;

use crate::tls::{self, RootCert, SslMode};
use crate::Error;

/// Connections in a pool made by [`pool`]: one for each of the sink's
/// copies in flight ([`DEFAULT_COPIES_IN_FLIGHT`](crate::DEFAULT_COPIES_IN_FLIGHT)),
/// the rest for whatever else the application does with it.
pub const DEFAULT_POOL_SIZE: usize = 6;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// How to reach PostgreSQL: tokio-postgres' settings (host, port, user,
/// password, database...) plus TLS with libpq's meanings, which a
/// [`tokio_postgres::Config`] cannot hold (it knows only `disable`,
/// `prefer` and `require`, and no root certificate).
///
/// It dereferences to the [`tokio_postgres::Config`] for reading (its
/// getters work as they are); it is changed through its own setters, so
/// that TLS stays decided by [`tls_mode`](Self::tls_mode) and
/// [`root_cert`](Self::root_cert) alone (the driver's own `ssl_mode` is set
/// from them when the pool is built, and cannot be set around them).
/// `Debug` never shows the password.
///
/// ```
/// # fn demo() -> Result<(), pglogsink::Error> {
/// use pglogsink::{ConnectConfig, RootCert, SslMode};
///
/// let mut config = pglogsink::parse_url(
///     "postgres://app:secret@db.example.com/app?sslmode=verify-full&sslrootcert=/etc/ssl/db-ca.pem",
/// )?;
/// assert_eq!(config.tls_mode(), SslMode::VerifyFull);
/// assert_eq!(config.root_cert(), Some(&RootCert::File("/etc/ssl/db-ca.pem".into())));
/// config.set_application_name("billing").set_user("billing");
/// assert_eq!(config.get_user(), Some("billing")); // a tokio_postgres::Config getter
///
/// // Code that builds a tokio_postgres::Config keeps working: its
/// // disable/prefer/require carry over, without a root certificate.
/// let mut plain = pglogsink::tokio_postgres::Config::new();
/// plain.host("127.0.0.1").user("app");
/// assert_eq!(ConnectConfig::from(plain).tls_mode(), SslMode::Prefer);
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct ConnectConfig {
    postgres: tokio_postgres::Config,
    tls_mode: SslMode,
    root_cert: Option<RootCert>,
}

impl ConnectConfig {
    /// Whether and how connections use TLS.
    pub fn tls_mode(&self) -> SslMode {
        self.tls_mode
    }

    /// Set whether and how connections use TLS.
    pub fn set_tls_mode(&mut self, mode: SslMode) -> &mut ConnectConfig {
        self.tls_mode = mode;
        self
    }

    /// The root certificate(s) the server's certificate is checked against
    /// (`sslrootcert`); `None` means libpq's default, `~/.postgresql/root.crt`
    /// when it exists.
    pub fn root_cert(&self) -> Option<&RootCert> {
        self.root_cert.as_ref()
    }

    /// Set the root certificate(s) (`sslrootcert`).
    pub fn set_root_cert(&mut self, root: Option<RootCert>) -> &mut ConnectConfig {
        self.root_cert = root;
        self
    }

    /// The driver's settings, to read (TLS is [`ConnectConfig::tls_mode`]'s:
    /// the driver's own `ssl_mode` is not used).
    pub fn postgres(&self) -> &tokio_postgres::Config {
        &self.postgres
    }

    /// Connect as `user`.
    pub fn set_user(&mut self, user: &str) -> &mut ConnectConfig {
        self.postgres.user(user);
        self
    }

    /// Authenticate with `password`.
    pub fn set_password(&mut self, password: impl AsRef<[u8]>) -> &mut ConnectConfig {
        self.postgres.password(password);
        self
    }

    /// Connect to the database `dbname`.
    pub fn set_dbname(&mut self, dbname: &str) -> &mut ConnectConfig {
        self.postgres.dbname(dbname);
        self
    }

    /// Name the connections in `pg_stat_activity` (`application_name`).
    pub fn set_application_name(&mut self, name: &str) -> &mut ConnectConfig {
        self.postgres.application_name(name);
        self
    }

    /// Give up on a connection attempt after `timeout`.
    pub fn set_connect_timeout(&mut self, timeout: std::time::Duration) -> &mut ConnectConfig {
        self.postgres.connect_timeout(timeout);
        self
    }
}

impl From<tokio_postgres::Config> for ConnectConfig {
    fn from(postgres: tokio_postgres::Config) -> ConnectConfig {
        ConnectConfig {
            tls_mode: SslMode::from_driver(postgres.get_ssl_mode()),
            postgres,
            root_cert: None,
        }
    }
}

impl Deref for ConnectConfig {
    type Target = tokio_postgres::Config;

    fn deref(&self) -> &tokio_postgres::Config {
        &self.postgres
    }
}

impl fmt::Debug for ConnectConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // tokio_postgres::Config's Debug redacts the password.
        f.debug_struct("ConnectConfig")
            .field("postgres", &self.postgres)
            .field("tls_mode", &self.tls_mode)
            .field("root_cert", &self.root_cert)
            .finish()
    }
}

/// Parse a `postgres://` URL or a `key=value` connection string.
///
/// `sslmode` takes libpq's values (`disable`, `prefer`, `require`,
/// `verify-ca`, `verify-full`) and `sslrootcert` a PEM file or `system`;
/// when the string does not set them, `PGSSLMODE` and `PGSSLROOTCERT` do, as
/// with libpq. The error never repeats the string (it may hold a password).
///
/// ```
/// # fn demo() -> Result<(), pglogsink::Error> {
/// let config = pglogsink::parse_url("host=db.example.com user=app sslmode=require")?;
/// assert_eq!(config.tls_mode(), pglogsink::SslMode::Require);
/// # Ok(()) }
/// ```
pub fn parse_url(url: &str) -> Result<ConnectConfig, Error> {
    parse_with_env(url, |name| std::env::var(name).ok())
}

/// [`parse_url`] with the environment passed in, for tests.
fn parse_with_env(url: &str, env: impl Fn(&str) -> Option<String>) -> Result<ConnectConfig, Error> {
    let TlsKeys {
        rest,
        sslmode,
        sslrootcert,
    } = take_tls_keys(url);
    let mut postgres = rest.parse::<tokio_postgres::Config>().map_err(|e| {
        Error::config(
            "database URL",
            format!("{e}; expected postgres://user:password@host:port/dbname"),
        )
    })?;
    let env = |name: &str| env(name).filter(|value| !value.is_empty());
    let root_cert = sslrootcert
        .or_else(|| env("PGSSLROOTCERT"))
        .map(|value| RootCert::parse(&value));
    let tls_mode = match (sslmode, env("PGSSLMODE")) {
        (Some(mode), _) => mode
            .parse::<SslMode>()
            .map_err(|e| Error::config("sslmode", e))?,
        (None, Some(mode)) => mode
            .parse::<SslMode>()
            .map_err(|e| Error::config("PGSSLMODE", e))?,
        // libpq: trusting the system's CAs makes verify-full the default.
        (None, None) if root_cert == Some(RootCert::System) => SslMode::VerifyFull,
        (None, None) => SslMode::Prefer,
    };
    postgres.ssl_mode(tls_mode.driver_mode());
    Ok(ConnectConfig {
        postgres,
        tls_mode,
        root_cert,
    })
}

/// A connection string with `sslmode` and `sslrootcert` taken out, and
/// their values. tokio-postgres rejects `verify-ca`, `verify-full` and
/// `sslrootcert`, so they never reach its parser.
#[derive(Debug, PartialEq)]
struct TlsKeys {
    rest: String,
    sslmode: Option<String>,
    sslrootcert: Option<String>,
}

const TLS_KEYS: [&str; 2] = ["sslmode", "sslrootcert"];

fn take_tls_keys(url: &str) -> TlsKeys {
    let mut keys = TlsKeys {
        rest: url.to_owned(),
        sslmode: None,
        sslrootcert: None,
    };
    let mut take = |key: &str, value: String| match key {
        "sslmode" => keys.sslmode = Some(value),
        _ => keys.sslrootcert = Some(value),
    };
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        // tokio-postgres reads the credentials up to the first '@', so a
        // '?' before it belongs to the password, not to the query.
        let after_credentials = url.find('@').map_or(0, |at| at + 1);
        let Some(question) = url[after_credentials..].find('?') else {
            return keys;
        };
        let (base, query) = url.split_at(after_credentials + question);
        let query = &query[1..];
        let mut kept = Vec::new();
        for pair in query.split('&') {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            let key = percent_decode(key);
            if TLS_KEYS.contains(&key.as_str()) {
                take(&key, percent_decode(value));
            } else {
                kept.push(pair);
            }
        }
        let rest = if kept.is_empty() {
            base.to_owned()
        } else {
            format!("{base}?{}", kept.join("&"))
        };
        keys.rest = rest;
        return keys;
    }
    // key=value form. A string this does not understand goes to
    // tokio-postgres unchanged, for its own error message.
    let Some(entries) = key_value_entries(url) else {
        return keys;
    };
    let mut rest = String::with_capacity(url.len());
    let mut copied_to = 0;
    for (key, value, range) in entries {
        if TLS_KEYS.contains(&key.as_str()) {
            rest.push_str(&url[copied_to..range.start]);
            copied_to = range.end;
            take(&key, value);
        }
    }
    rest.push_str(&url[copied_to..]);
    keys.rest = rest;
    keys
}

/// The entries of a libpq `key=value` string: key, unquoted value, and the
/// byte range of the whole entry. `None` when it is not well formed.
fn key_value_entries(s: &str) -> Option<Vec<(String, String, std::ops::Range<usize>)>> {
    let mut entries = Vec::new();
    let mut chars = s.char_indices().peekable();
    let skip_space = |chars: &mut std::iter::Peekable<std::str::CharIndices<'_>>| {
        while chars.next_if(|(_, c)| c.is_whitespace()).is_some() {}
    };
    loop {
        skip_space(&mut chars);
        let Some(&(start, _)) = chars.peek() else {
            return Some(entries);
        };
        let mut key = String::new();
        while let Some((_, c)) = chars.next_if(|(_, c)| *c != '=' && !c.is_whitespace()) {
            key.push(c);
        }
        skip_space(&mut chars);
        chars.next_if(|(_, c)| *c == '=')?;
        skip_space(&mut chars);
        let mut value = String::new();
        if chars.next_if(|(_, c)| *c == '\'').is_some() {
            loop {
                match chars.next()? {
                    (_, '\\') => value.push(chars.next()?.1),
                    (_, '\'') => break,
                    (_, c) => value.push(c),
                }
            }
        } else {
            while let Some((_, c)) = chars.next_if(|(_, c)| !c.is_whitespace()) {
                if c == '\\' {
                    value.push(chars.next()?.1);
                } else {
                    value.push(c);
                }
            }
        }
        let end = chars.peek().map_or(s.len(), |&(i, _)| i);
        if key.is_empty() {
            return None;
        }
        entries.push((key, value, start..end));
    }
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let hex = |i: usize| bytes.get(i).and_then(|&b| (b as char).to_digit(16));
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            if let (Some(high), Some(low)) = (hex(i + 1), hex(i + 2)) {
                out.push((high * 16 + low) as u8);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A pool for these settings. No connection is made until one is needed.
///
/// Takes a [`ConnectConfig`] (from [`parse_url`]) or a
/// [`tokio_postgres::Config`]. Sets a 5 s connect timeout, TCP keepalives
/// and `application_name = pglogsink` unless the settings already say
/// otherwise. TLS follows libpq's `sslmode`:
///
/// | `sslmode` | encrypted | certificate checked |
/// |---|---|---|
/// | `disable` | never | - |
/// | `prefer` (default) | when the server offers TLS | no |
/// | `require` | always | no; with a root certificate, the chain |
/// | `verify-ca` | always | the chain, up to the root certificate |
/// | `verify-full` | always | the chain and the host name |
///
/// "No" is libpq's no: any certificate is taken (self-signed, expired, X.509
/// version 1 as Citus makes); only its public key is read, to check the
/// handshake's signature. `verify-ca` and `verify-full` check version 3
/// certificates only.
///
/// The root certificate file is read here: a missing or unreadable one is
/// an error now rather than at every connection.
///
/// Nothing the pool's users need outlives a transaction on the server (no
/// cached prepared statements), so the pool works through a connection
/// pooler in transaction mode such as PgBouncer.
///
/// ```no_run
/// # async fn demo() -> Result<(), pglogsink::Error> {
/// let config = pglogsink::parse_url("postgres://app:secret@127.0.0.1:5432/app")?;
/// let pool = pglogsink::pool(config, pglogsink::DEFAULT_POOL_SIZE)?;
/// # Ok(()) }
/// ```
pub fn pool(config: impl Into<ConnectConfig>, size: usize) -> Result<Pool, Error> {
    let ConnectConfig {
        mut postgres,
        tls_mode,
        root_cert,
    } = config.into();
    if postgres.get_connect_timeout().is_none() {
        postgres.connect_timeout(CONNECT_TIMEOUT);
    }
    if postgres.get_application_name().is_none() {
        postgres.application_name("pglogsink");
    }
    postgres.keepalives(true);
    postgres.keepalives_idle(Duration::from_secs(30));
    postgres.ssl_mode(tls_mode.driver_mode());
    let manager_config = ManagerConfig {
        // Fast: recycling sends nothing, so a pooler sees no extra
        // statements between our transactions.
        recycling_method: RecyclingMethod::Fast,
    };
    let manager = match tls::connector(tls_mode, root_cert.as_ref())? {
        Some(tls) => Manager::from_config(postgres, tls, manager_config),
        None => Manager::from_config(postgres, NoTls, manager_config),
    };
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

#[cfg(test)]
mod tests {
    use super::*;

    fn no_env(_: &str) -> Option<String> {
        None
    }

    #[test]
    fn libpq_tls_keys_are_taken_out_of_urls() {
        let keys = take_tls_keys(
            "postgres://u:p@h/db?application_name=x&sslmode=verify-full&sslrootcert=%2Ftmp%2Fca%20x.pem",
        );
        assert_eq!(
            keys,
            TlsKeys {
                rest: "postgres://u:p@h/db?application_name=x".into(),
                sslmode: Some("verify-full".into()),
                sslrootcert: Some("/tmp/ca x.pem".into()),
            }
        );
        let keys = take_tls_keys("postgresql://h/db?sslmode=require");
        assert_eq!(keys.rest, "postgresql://h/db");
        assert_eq!(keys.sslmode.as_deref(), Some("require"));
        assert_eq!(take_tls_keys("postgres://h/db").rest, "postgres://h/db");
        // A '?' in the password is the password's.
        let keys = take_tls_keys("postgres://u:p?sslmode=x@h/db?sslmode=require");
        assert_eq!(keys.rest, "postgres://u:p?sslmode=x@h/db");
        assert_eq!(keys.sslmode.as_deref(), Some("require"));
    }

    #[test]
    fn libpq_tls_keys_are_taken_out_of_key_value_strings() {
        let keys = take_tls_keys(
            "host=h sslmode = verify-ca  password='it\\'s x' sslrootcert='/a b/c.pem' dbname=d",
        );
        assert_eq!(keys.sslmode.as_deref(), Some("verify-ca"));
        assert_eq!(keys.sslrootcert.as_deref(), Some("/a b/c.pem"));
        assert!(!keys.rest.contains("ssl"), "{}", keys.rest);
        assert!(keys.rest.contains("dbname=d"), "{}", keys.rest);
        assert!(keys.rest.contains("password='it\\'s x'"), "{}", keys.rest);
    }

    #[test]
    fn sslmode_has_libpq_values_and_defaults() {
        let parse = |url: &str| parse_with_env(url, no_env).unwrap();
        let c = parse("postgres://u:p@h/db?sslmode=verify-full&sslrootcert=/ca.pem");
        assert_eq!(c.tls_mode(), SslMode::VerifyFull);
        assert_eq!(c.root_cert(), Some(&RootCert::File("/ca.pem".into())));
        assert_eq!(
            c.get_ssl_mode(),
            tokio_postgres::config::SslMode::Require,
            "the driver must ask for TLS"
        );
        assert_eq!(c.get_user(), Some("u"));
        assert_eq!(parse("postgres://h/db").tls_mode(), SslMode::Prefer);
        assert_eq!(parse("host=h sslmode=disable").tls_mode(), SslMode::Disable);
        let system = parse("postgres://h/db?sslrootcert=system");
        assert_eq!(system.tls_mode(), SslMode::VerifyFull);
        assert_eq!(system.root_cert(), Some(&RootCert::System));
    }

    #[test]
    fn the_environment_applies_when_the_url_is_silent() {
        let env = |name: &str| match name {
            "PGSSLMODE" => Some("verify-ca".to_owned()),
            "PGSSLROOTCERT" => Some("/env/ca.pem".to_owned()),
            _ => None,
        };
        let c = parse_with_env("postgres://h/db", env).unwrap();
        assert_eq!(c.tls_mode(), SslMode::VerifyCa);
        assert_eq!(c.root_cert(), Some(&RootCert::File("/env/ca.pem".into())));
        let c = parse_with_env("postgres://h/db?sslmode=disable&sslrootcert=/u.pem", env).unwrap();
        assert_eq!(c.tls_mode(), SslMode::Disable);
        assert_eq!(c.root_cert(), Some(&RootCert::File("/u.pem".into())));
        let bad = |name: &str| (name == "PGSSLMODE").then(|| "verify".to_owned());
        let err = parse_with_env("postgres://h/db", bad)
            .unwrap_err()
            .to_string();
        assert!(err.contains("PGSSLMODE"), "{err}");
    }

    #[test]
    fn errors_never_repeat_the_password() {
        for url in [
            "postgres://app:s3cret@h/db?sslmode=bogus",
            "postgres://app:s3cret@h:notaport/db",
            "host=h password=s3cret sslmode=verify_full",
            "host=h password=s3cret bogus=1",
            "postgres://app:s3cret?sslmode=x@h/db?sslmode=bogus",
        ] {
            let err = parse_with_env(url, no_env).unwrap_err().to_string();
            assert!(!err.contains("s3cret"), "{url}: {err}");
        }
        let config = parse_with_env("postgres://app:s3cret@h/db", no_env).unwrap();
        assert!(!format!("{config:?}").contains("s3cret"));
    }

    #[test]
    fn a_driver_config_keeps_its_mode() {
        let mut c = tokio_postgres::Config::new();
        c.ssl_mode(tokio_postgres::config::SslMode::Disable);
        assert_eq!(ConnectConfig::from(c.clone()).tls_mode(), SslMode::Disable);
        c.ssl_mode(tokio_postgres::config::SslMode::Require);
        let c = ConnectConfig::from(c);
        assert_eq!(c.tls_mode(), SslMode::Require);
        assert_eq!(c.root_cert(), None);
    }
}
