//! A record's level: its name in the Log table, and the names other
//! loggers give it, read in one place.

use std::fmt;
use std::str::FromStr;

/// Severity of a record, stored in the `level` column as its lowercase name.
///
/// Ordered from least to most severe, so `level >= Level::Warn` means
/// "warnings and errors" in Rust as it does in SQL.
///
/// ```
/// use pglogsink::Level;
///
/// let level: Level = "WARNING".parse()?;
/// assert_eq!(level, Level::Warn);
/// assert!(level >= Level::Info && level < Level::Error);
/// assert_eq!(level.to_string(), "warn");
/// # Ok::<(), pglogsink::ParseLevelError>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Level {
    /// Very verbose diagnostics.
    Trace,
    /// Diagnostics for developers.
    Debug,
    /// Normal operation.
    Info,
    /// Something unexpected that the program survived.
    Warn,
    /// A failure.
    Error,
}

impl Level {
    /// Every level, least severe first.
    pub const ALL: [Level; 5] = [
        Level::Trace,
        Level::Debug,
        Level::Info,
        Level::Warn,
        Level::Error,
    ];

    /// The lowercase name stored in the database (`"info"`...).
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Trace => "trace",
            Level::Debug => "debug",
            Level::Info => "info",
            Level::Warn => "warn",
            Level::Error => "error",
        }
    }
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The error of parsing a [`Level`] from text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseLevelError(String);

impl fmt::Display for ParseLevelError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "unknown level {:?}: expected one of trace, debug, info, warn, error",
            self.0
        )
    }
}

impl std::error::Error for ParseLevelError {}

impl FromStr for Level {
    type Err = ParseLevelError;

    /// pglogsink's own names, case-insensitively; `warning` is accepted for
    /// `warn`. For the names other loggers use, see
    /// [`Level::from_any_logger`].
    fn from_str(s: &str) -> Result<Level, ParseLevelError> {
        match s.to_ascii_lowercase().as_str() {
            "trace" => Ok(Level::Trace),
            "debug" => Ok(Level::Debug),
            "info" => Ok(Level::Info),
            "warn" | "warning" => Ok(Level::Warn),
            "error" => Ok(Level::Error),
            _ => Err(ParseLevelError(s.to_owned())),
        }
    }
}

impl Level {
    /// The names [`Level::from_any_logger`] reads, for messages.
    pub const ANY_LOGGER_NAMES: &'static str =
        "trace, debug, info (notice), warn (warning), error (err, fatal, critical)";

    /// A level from its name as other loggers spell it (syslog, Python,
    /// Java, OpenTelemetry's `severity_text`), case-insensitively and
    /// without surrounding spaces; a name with no level of its own maps to
    /// the nearest. pglogsink's own names are read too.
    ///
    /// ```
    /// use pglogsink::Level;
    ///
    /// assert_eq!(Level::from_any_logger(" Fatal "), Some(Level::Error));
    /// assert_eq!(Level::from_any_logger("notice"), Some(Level::Info));
    /// assert_eq!(Level::from_any_logger("warn"), Some(Level::Warn));
    /// assert_eq!(Level::from_any_logger("loud"), None);
    /// ```
    pub fn from_any_logger(name: &str) -> Option<Level> {
        let name = name.trim();
        if let Ok(level) = name.parse() {
            return Some(level);
        }
        let level = match name.to_ascii_lowercase().as_str() {
            "verbose" | "finest" | "finer" => Level::Trace,
            "fine" | "config" => Level::Debug,
            "information" | "informational" | "notice" => Level::Info,
            "err" | "severe" | "fatal" | "critical" | "crit" | "alert" | "emerg" | "emergency"
            | "panic" => Level::Error,
            _ => return None,
        };
        Some(level)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_names_strictly_other_loggers_names_leniently() {
        for level in Level::ALL {
            assert_eq!(level.as_str().parse(), Ok(level));
            assert_eq!(level.as_str().to_uppercase().parse(), Ok(level));
            assert_eq!(Level::from_any_logger(level.as_str()), Some(level));
        }
        assert_eq!("warning".parse(), Ok(Level::Warn));
        assert!("notice".parse::<Level>().is_err());
        assert!(" info".parse::<Level>().is_err());
        assert_eq!(Level::from_any_logger("WARNING"), Some(Level::Warn));
        assert_eq!(Level::from_any_logger("Fatal"), Some(Level::Error));
        assert_eq!(Level::from_any_logger("notice"), Some(Level::Info));
        assert_eq!(Level::from_any_logger(" debug "), Some(Level::Debug));
        assert_eq!(Level::from_any_logger("finest"), Some(Level::Trace));
        assert_eq!(Level::from_any_logger("loud"), None);
    }
}
