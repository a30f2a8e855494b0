//! The error type of everything that is not the hot path: configuration,
//! connecting, migrating, starting the embedded server.
//!
//! `log()` has its own tiny error ([`SendError`](crate::SendError)) because it must
//! hand the record back; the consumer's write errors are classified by the
//! same SQLSTATE table as [`Error::is_transient`] and reported in the
//! shutdown [`Report`](crate::Report), never returned to producers.
//!
//! [`describe`] renders any error the way pglogsink renders its own: one
//! line, causes after colons, PostgreSQL's message instead of the driver's
//! bare "db error".

use std::fmt;
use std::path::PathBuf;

use deadpool_postgres::PoolError;

/// An error from setting up or running pglogsink (not from `log()`).
///
/// The kind is available through [`Error::kind`]; `Display` gives one line a
/// person can act on. Passwords never appear in it. A driver or pool error
/// converts into one with `?` (or `Error::from`), to be described and
/// classified the same way.
///
/// ```no_run
/// use std::time::Duration;
/// use pglogsink::{Error, TableName};
///
/// # async fn demo() -> Result<(), Error> {
/// let pool = pglogsink::pool(pglogsink::parse_url("postgres://app@127.0.0.1/app")?, 2)?;
/// let table = TableName::parse("log")?;
/// loop {
///     match pglogsink::migrate(&pool, &table).await {
///         Ok(()) => return Ok(()),
///         // The database is starting, restarting or overloaded: wait.
///         Err(e) if e.is_transient() => {
///             eprintln!("{e}; retrying");
///             tokio::time::sleep(Duration::from_secs(1)).await;
///         }
///         Err(e) if e.is_permission_denied() => {
///             eprintln!("ask the DBA for the privileges: {e}");
///             return Err(e);
///         }
///         Err(e) => return Err(e),
///     }
/// }
/// # }
/// ```
pub struct Error(Box<ErrorKind>);

/// What went wrong.
#[derive(Debug)]
#[non_exhaustive]
pub enum ErrorKind {
    /// A configuration value was rejected. `option` names it the way the user
    /// wrote it (`--batch-size`, `table`...).
    Config {
        /// The option, as the user knows it.
        option: &'static str,
        /// What is wrong and what is accepted.
        message: String,
    },
    /// The database answered with an error, or could not be reached.
    Database {
        /// What we were doing ("connecting", "applying the schema"...);
        /// empty for an error converted with `From`.
        context: String,
        /// The driver's error.
        source: tokio_postgres::Error,
    },
    /// No connection could be taken from the pool.
    Pool {
        /// What we were doing; empty for an error converted with `From`.
        context: String,
        /// The pool's error, rendered.
        message: String,
        /// No connection came free, or could be opened, within the pool's
        /// timeout: trying again later may succeed.
        timed_out: bool,
    },
    /// The embedded PostgreSQL server could not be set up, started or stopped.
    Embedded {
        /// A complete sentence, including what to do about it.
        message: String,
    },
    /// The server lacks what was asked of it (an extension such as Citus,
    /// a node it needs); retrying will not help until an operator adds it.
    Unsupported {
        /// A complete sentence: what is missing and how to add it.
        message: String,
    },
    /// A file-system operation failed.
    Io {
        /// What we were doing.
        context: String,
        /// The path involved.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
}

impl Error {
    /// The kind of this error.
    pub fn kind(&self) -> &ErrorKind {
        &self.0
    }

    /// Consume the error, returning its kind.
    pub fn into_kind(self) -> ErrorKind {
        *self.0
    }

    /// The SQLSTATE code, when the database gave one.
    pub fn sqlstate(&self) -> Option<&str> {
        match &*self.0 {
            ErrorKind::Database { source, .. } => source.code().map(|c| c.code()),
            _ => None,
        }
    }

    /// Whether the database refused for want of a privilege (SQLSTATE
    /// 42501): the role may not do this, and retrying will not help.
    pub fn is_permission_denied(&self) -> bool {
        self.sqlstate() == Some("42501")
    }

    /// Whether trying again later may succeed: the connection failed or was
    /// lost, the server is starting, restarting or out of resources, a
    /// connection pooler dropped us, the statement met a deadlock or a lock
    /// timeout, or no connection came free in time. This is the table the
    /// sink itself retries writes by, one row per SQLSTATE class. Everything
    /// else is not: a missing table, refused credentials, a bad
    /// configuration, and errors that are not recognised.
    ///
    /// ```
    /// let e = pglogsink::TableName::parse("no such table!").unwrap_err();
    /// assert!(!e.is_transient());
    /// ```
    pub fn is_transient(&self) -> bool {
        match &*self.0 {
            ErrorKind::Database { source, .. } => crate::classify::retry_helps(source),
            ErrorKind::Pool { timed_out, .. } => *timed_out,
            ErrorKind::Config { .. }
            | ErrorKind::Embedded { .. }
            | ErrorKind::Unsupported { .. }
            | ErrorKind::Io { .. } => false,
        }
    }

    pub(crate) fn config(option: &'static str, message: impl Into<String>) -> Error {
        Error(Box::new(ErrorKind::Config {
            option,
            message: message.into(),
        }))
    }

    pub(crate) fn database(context: impl Into<String>, source: tokio_postgres::Error) -> Error {
        Error(Box::new(ErrorKind::Database {
            context: context.into(),
            source,
        }))
    }

    /// A pool that could not be built, or gave no connection.
    pub(crate) fn pool(context: impl Into<String>, problem: impl Into<PoolProblem>) -> Error {
        let PoolProblem { message, timed_out } = problem.into();
        Error(Box::new(ErrorKind::Pool {
            context: context.into(),
            message,
            timed_out,
        }))
    }

    pub(crate) fn unsupported(message: impl Into<String>) -> Error {
        Error(Box::new(ErrorKind::Unsupported {
            message: message.into(),
        }))
    }

    #[cfg(feature = "embedded")]
    pub(crate) fn embedded(message: impl Into<String>) -> Error {
        Error(Box::new(ErrorKind::Embedded {
            message: message.into(),
        }))
    }

    pub(crate) fn io(
        context: impl Into<String>,
        path: impl Into<PathBuf>,
        source: std::io::Error,
    ) -> Error {
        Error(Box::new(ErrorKind::Io {
            context: context.into(),
            path: path.into(),
            source,
        }))
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

/// What a pool error says, and whether waiting longer may help.
pub(crate) struct PoolProblem {
    message: String,
    timed_out: bool,
}

impl From<PoolError> for PoolProblem {
    fn from(e: PoolError) -> PoolProblem {
        PoolProblem {
            timed_out: matches!(e, PoolError::Timeout(_)),
            message: e.to_string(),
        }
    }
}

impl From<deadpool_postgres::BuildError> for PoolProblem {
    fn from(e: deadpool_postgres::BuildError) -> PoolProblem {
        PoolProblem {
            message: e.to_string(),
            timed_out: false,
        }
    }
}

/// A driver error met outside pglogsink's own calls (a query of your own,
/// the [`query`](crate::admin::query) layer), to be described and classified like
/// pglogsink's.
impl From<tokio_postgres::Error> for Error {
    fn from(source: tokio_postgres::Error) -> Error {
        Error::database(String::new(), source)
    }
}

/// A pool that gave no connection: the driver's error when it could not
/// connect, the pool's when it timed out or was closed.
impl From<PoolError> for Error {
    fn from(e: PoolError) -> Error {
        match e {
            PoolError::Backend(source) => Error::from(source),
            other => Error::pool(String::new(), other),
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let context = |f: &mut fmt::Formatter<'_>, context: &str| {
            if context.is_empty() {
                Ok(())
            } else {
                write!(f, "{context}: ")
            }
        };
        match &*self.0 {
            ErrorKind::Config { option, message } => write!(f, "invalid {option}: {message}"),
            ErrorKind::Database { context: c, source } => {
                context(f, c)?;
                f.write_str(&crate::classify::describe_postgres(source))
            }
            ErrorKind::Pool {
                context: c,
                message,
                ..
            } => {
                context(f, c)?;
                f.write_str(message)
            }
            ErrorKind::Embedded { message } | ErrorKind::Unsupported { message } => {
                f.write_str(message)
            }
            ErrorKind::Io {
                context,
                path,
                source,
            } => write!(f, "{context} {}: {source}", path.display()),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match &*self.0 {
            ErrorKind::Database { source, .. } => Some(source),
            ErrorKind::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

/// Render an error and its causes on one line, as pglogsink renders its own:
/// each cause after a colon unless the text already says it, and a
/// PostgreSQL error as the server's message and detail (the driver's own
/// `Display` says only "db error").
///
/// ```
/// use std::io;
///
/// let refused = io::Error::new(io::ErrorKind::ConnectionRefused, "connection refused");
/// let e = io::Error::new(io::ErrorKind::Other, Box::new(refused));
/// assert_eq!(pglogsink::admin::describe(&e).to_string(), "connection refused");
/// ```
pub fn describe<'a>(error: &'a (dyn std::error::Error + 'static)) -> impl fmt::Display + 'a {
    Described(error)
}

struct Described<'a>(&'a (dyn std::error::Error + 'static));

impl fmt::Display for Described<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut text = String::new();
        let mut next = Some(self.0);
        while let Some(error) = next {
            let (said, causes) = match error.downcast_ref::<tokio_postgres::Error>() {
                // Rendered with its own causes.
                Some(e) => (crate::classify::describe_postgres(e), None),
                None => (error.to_string(), error.source()),
            };
            if !text.contains(&said) {
                if !text.is_empty() {
                    text.push_str(": ");
                }
                text.push_str(&said);
            }
            next = causes;
        }
        f.write_str(&text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use deadpool_postgres::TimeoutType;

    #[test]
    fn causes_follow_after_colons_once() {
        let inner = std::io::Error::new(std::io::ErrorKind::NotFound, "no such file");
        let e = Error::io("reading the spool", "/tmp/spool", inner);
        assert_eq!(
            describe(&e).to_string(),
            "reading the spool /tmp/spool: no such file"
        );
    }

    #[test]
    fn pool_timeouts_are_transient_and_a_closed_pool_is_not() {
        let timed_out = Error::from(PoolError::Timeout(TimeoutType::Wait));
        assert!(timed_out.is_transient(), "{timed_out}");
        assert_eq!(
            timed_out.to_string(),
            "Timeout occurred while waiting for a slot to become available"
        );
        assert!(!Error::from(PoolError::Closed).is_transient());
        let with_context = Error::pool("connecting", PoolError::Timeout(TimeoutType::Create));
        assert!(with_context.is_transient());
        assert!(with_context.to_string().starts_with("connecting: "));
        assert!(!Error::config("table", "bad").is_transient());
    }
}
