//! What the sink reports when it stops: what was written, what was not, and
//! why it stopped if it stopped on its own.

use std::fmt;

/// A write error that retrying cannot fix; the sink stops on it and cancels
/// the application's shutdown token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FatalError {
    pub(crate) table: String,
    pub(crate) sqlstate: Option<String>,
    pub(crate) message: String,
    pub(crate) hint: String,
}

impl FatalError {
    /// The table the sink was writing to.
    pub fn table(&self) -> &str {
        &self.table
    }

    /// The SQLSTATE, when the server gave one.
    pub fn sqlstate(&self) -> Option<&str> {
        self.sqlstate.as_deref()
    }

    /// The server's or driver's message.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// What the operator should do about it.
    pub fn hint(&self) -> &str {
        &self.hint
    }
}

impl fmt::Display for FatalError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "cannot write to table {}: {}", self.table, self.message)?;
        if let Some(code) = &self.sqlstate {
            write!(f, " (SQLSTATE {code})")?;
        }
        write!(f, "; {}", self.hint)
    }
}

impl std::error::Error for FatalError {}

/// The account the sink gives when it stops, from
/// [`Worker::shutdown`](crate::Worker::shutdown).
///
/// Every record handed to `log()` is counted in exactly one of `written`,
/// `not_written` and `in_doubt`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Report {
    /// Records committed to the Log table.
    pub written: u64,
    /// Records taken by `log()` that were not written (queued when the sink
    /// stopped, or in a batch that failed fatally or was abandoned at the
    /// deadline before its COPY began).
    pub not_written: u64,
    /// Records in a COPY that was in flight when the shutdown deadline passed:
    /// the server may or may not have committed them.
    pub in_doubt: u64,
    /// COPY batches committed.
    pub batches: u64,
    /// Batch attempts retried after a transient error.
    pub retries: u64,
    /// Records whose NUL bytes were replaced by U+FFFD.
    pub nul_replaced: u64,
    /// True when the shutdown deadline passed before the queue was drained.
    pub timed_out: bool,
    /// Set when the sink stopped on a fatal error.
    pub fatal: Option<FatalError>,
}

impl Report {
    /// True when every record was written and nothing went wrong.
    pub fn is_complete(&self) -> bool {
        self.not_written == 0 && self.in_doubt == 0 && self.fatal.is_none()
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "wrote {} records in {} batches ({} retries)",
            self.written, self.batches, self.retries
        )?;
        if self.not_written == 0 && self.in_doubt == 0 {
            f.write_str("; nothing left unwritten")?;
        } else {
            write!(f, "; {} records NOT written", self.not_written)?;
            if self.in_doubt > 0 {
                write!(
                    f,
                    ", {} in doubt (their COPY was in flight at the deadline)",
                    self.in_doubt
                )?;
            }
        }
        if self.timed_out {
            f.write_str("; the shutdown deadline passed")?;
        }
        if self.nul_replaced > 0 {
            write!(f, "; {} records had NUL bytes replaced", self.nul_replaced)?;
        }
        Ok(())
    }
}
