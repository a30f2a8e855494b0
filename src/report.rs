//! What the sink reports when it stops: what was written, what was not, and
//! why it stopped if it stopped on its own.

use crate::stats::Lost;
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
/// Every record taken by `log()` during this run is counted once: in
/// `written`, `rejected`, `dead_lettered`, `spooled`, `not_written` or
/// `in_doubt`. Records replayed from an earlier run's spool are counted in
/// `replayed` and in `written` or `rejected`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Report {
    /// Records committed to the Log table.
    pub written: u64,
    /// Records moved to the spool, to be written by a later run (or later in
    /// this one: those are counted in `replayed` too).
    pub spooled: u64,
    /// Records written from the spool.
    pub replayed: u64,
    /// Records PostgreSQL refused, stored in the rejected-rows table.
    pub rejected: u64,
    /// Refused records written to the dead-letter file in the spool.
    pub dead_lettered: u64,
    /// Records of batches found already committed when retried or replayed,
    /// and so not written twice.
    pub already_written: u64,
    /// Records cut down to the maximum record size.
    pub truncated: u64,
    /// Bytes of torn or corrupt spool entries that were skipped.
    pub spool_corrupt_bytes: u64,
    /// Records lost: taken by `log()` but neither written nor spooled (no
    /// spool is configured, or writing to it failed).
    pub not_written: u64,
    /// Records in a COPY that was in flight when the shutdown deadline passed,
    /// with no spool to keep them: the server may or may not have committed
    /// them.
    pub in_doubt: u64,
    /// Records `send()` handed back instead of taking them (the sink was
    /// full or had stopped), by reason in `lost`.
    pub handed_back: u64,
    /// Records lost or handed back, by reason (`not_written` is
    /// [`Lost::dropped`], `handed_back` the rest).
    pub lost: Lost,
    /// The spool directory, when there is one.
    pub spool_dir: Option<std::path::PathBuf>,
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
    /// Of `spooled`, the records this run replayed itself.
    pub(crate) spooled_replayed: u64,
}

impl Report {
    /// Take the handed-back counts from `lost`, a later snapshot.
    pub(crate) fn add_handed_back(&mut self, lost: Lost) {
        self.lost.sink_full = lost.sink_full;
        self.lost.too_large = lost.too_large;
        self.lost.stopped = lost.stopped;
        self.handed_back = lost.handed_back();
    }

    /// True when nothing was lost and the sink did not stop on a fatal error
    /// (records may still wait in the spool: see [`Report::left_in_spool`]).
    pub fn is_complete(&self) -> bool {
        self.not_written == 0 && self.in_doubt == 0 && self.fatal.is_none()
    }

    /// Records of this run left in the spool for a later start.
    pub fn left_in_spool(&self) -> u64 {
        self.spooled.saturating_sub(self.spooled_replayed)
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "wrote {} records in {} batches ({} retries)",
            self.written, self.batches, self.retries
        )?;
        if self.replayed > 0 {
            write!(f, ", {} of them replayed from the spool", self.replayed)?;
        }
        if self.rejected > 0 || self.dead_lettered > 0 {
            write!(
                f,
                "; {} refused by PostgreSQL, kept in the rejected table",
                self.rejected
            )?;
            if self.dead_lettered > 0 {
                write!(f, " and {} in the dead-letter file", self.dead_lettered)?;
            }
        }
        if let (Some(dir), kept @ 1..) = (&self.spool_dir, self.left_in_spool()) {
            write!(
                f,
                "; {kept} records spooled to {} for the next start",
                dir.display()
            )?;
        }
        if self.not_written == 0 && self.in_doubt == 0 {
            f.write_str("; nothing lost")?;
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
        if self.handed_back > 0 {
            write!(
                f,
                "; {} records handed back to callers ({} while full, ",
                self.handed_back, self.lost.sink_full
            )?;
            if self.lost.too_large > 0 {
                write!(f, "{} too large for the budget, ", self.lost.too_large)?;
            }
            write!(f, "{} after the stop)", self.lost.stopped)?;
        }
        if self.timed_out {
            f.write_str("; the shutdown deadline passed")?;
        }
        if self.truncated > 0 {
            write!(f, "; {} oversized records truncated", self.truncated)?;
        }
        if self.spool_corrupt_bytes > 0 {
            write!(
                f,
                "; {} bytes of corrupt spool entries skipped",
                self.spool_corrupt_bytes
            )?;
        }
        if self.nul_replaced > 0 {
            write!(f, "; {} records had NUL bytes replaced", self.nul_replaced)?;
        }
        Ok(())
    }
}

/// `1536` → `1.5 KiB`.
pub(crate) fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["bytes", "KiB", "MiB", "GiB", "TiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} bytes")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::human_bytes;

    #[test]
    fn sizes_read_in_binary_units() {
        assert_eq!(human_bytes(10), "10 bytes");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(3 << 20), "3.0 MiB");
        assert_eq!(human_bytes(2_791_728_742), "2.6 GiB");
    }
}
