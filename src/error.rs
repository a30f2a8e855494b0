//! The error type of everything that is not the hot path: configuration,
//! connecting, migrating, starting the embedded server.
//!
//! `log()` has its own tiny error ([`Closed`](crate::Closed)) because it must
//! hand the record back; the consumer's write errors are classified in
//! [`classify`](crate::classify) and reported in the shutdown
//! [`Report`](crate::Report), never returned to producers.

use std::fmt;
use std::path::PathBuf;

/// An error from setting up or running pglogsink (not from `log()`).
///
/// The kind is available through [`Error::kind`]; `Display` gives one line a
/// person can act on. Passwords never appear in it.
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
        /// What we were doing ("connecting", "applying the schema"...).
        context: String,
        /// The driver's error.
        source: tokio_postgres::Error,
    },
    /// No connection could be taken from the pool.
    Pool {
        /// What we were doing.
        context: String,
        /// The pool's error, rendered.
        message: String,
    },
    /// The embedded PostgreSQL server could not be set up, started or stopped.
    Embedded {
        /// A complete sentence, including what to do about it.
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

    pub(crate) fn pool(context: impl Into<String>, message: impl fmt::Display) -> Error {
        Error(Box::new(ErrorKind::Pool {
            context: context.into(),
            message: message.to_string(),
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

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &*self.0 {
            ErrorKind::Config { option, message } => write!(f, "invalid {option}: {message}"),
            ErrorKind::Database { context, source } => {
                write!(f, "{context}: {}", crate::classify::describe(source))
            }
            ErrorKind::Pool { context, message } => write!(f, "{context}: {message}"),
            ErrorKind::Embedded { message } => f.write_str(message),
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
