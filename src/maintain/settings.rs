//! What a maintenance run does ([`Maintenance`]): its settings, their
//! defaults and their rules.

use std::time::Duration;

use super::age::check_age;
use super::keep_levels::{self, KeepLevels};
use crate::partitions::PartitionInterval;
use crate::Error;

/// Partitions made ahead of the current one by default.
pub const DEFAULT_PREMAKE: u32 = 3;
/// How old rows may be and still get partitions made for them, by default:
/// 30 days (see [`Maintenance::max_age`]).
pub const DEFAULT_MAX_AGE: Duration = Duration::from_secs(30 * 86_400);
/// Most partitions made ahead of the current one.
const MAX_PREMAKE: u32 = 1_000;

/// What a maintenance run does. `Default`: daily partitions, three made
/// ahead, partitions made for rows up to 30 days old, nothing dropped.
///
/// ```no_run
/// # async fn demo(pool: deadpool_postgres::Pool) -> Result<(), pglogsink::Error> {
/// use std::time::Duration;
/// use pglogsink::{Maintenance, TableName};
///
/// let maintenance = Maintenance {
///     retention: Some(Duration::from_secs(30 * 86_400)),
///     ..Maintenance::default()
/// };
/// let report = maintenance.run(&pool, &TableName::parse("log")?).await?;
/// println!("{report}");
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Maintenance {
    /// The time one partition covers.
    pub interval: PartitionInterval,
    /// Partitions made ahead of the current one.
    pub premake: u32,
    /// Drop partitions whose whole range is older than this (and delete
    /// such rows from the DEFAULT partition); `None` keeps everything.
    pub retention: Option<Duration>,
    /// The partition window's reach into the past: rows in the DEFAULT
    /// partition older than this get no partition of their own. They stay
    /// in DEFAULT (still read by every query; retention deletes them), so
    /// that a client whose clock is years off, or a body of rows stamped a
    /// day apart since 1970, cannot make thousands of partitions. With a
    /// retention, the shorter of the two applies. The window's other end
    /// is `premake` intervals ahead: rows beyond it wait in DEFAULT until
    /// the window reaches them.
    pub max_age: Duration,
    /// Give every partition whose range has ended a trigram index on
    /// `message` (`pg_trgm`, built concurrently, once), so that a
    /// `grep` over older data is an index lookup; the partition being
    /// written never has one, so COPY pays nothing for it (nor does a
    /// columnar partition: columnar takes no trigram index).
    pub search_index: bool,
    /// Rewrite each partition whose whole range is older than this into
    /// Citus columnar storage (built beside, swapped in; the server needs
    /// the `citus_columnar` extension). `None`: never.
    pub columnar_after: Option<Duration>,
    /// Per-level retention: when a partition is rewritten (to columnar, or
    /// for these rules alone), it keeps only the levels the oldest rule it
    /// has passed names; never by `DELETE`.
    pub keep_levels: Vec<KeepLevels>,
}

impl Default for Maintenance {
    fn default() -> Maintenance {
        Maintenance {
            interval: PartitionInterval::default(),
            premake: DEFAULT_PREMAKE,
            retention: None,
            max_age: DEFAULT_MAX_AGE,
            search_index: false,
            columnar_after: None,
            keep_levels: Vec::new(),
        }
    }
}

impl Maintenance {
    /// The settings that make partitions and nothing else (what
    /// [`migrate_with`](crate::migrate_with) runs): the interval and the
    /// premake.
    pub(crate) fn premake_only(&self) -> Maintenance {
        Maintenance {
            interval: self.interval,
            premake: self.premake,
            max_age: self.max_age,
            ..Maintenance::default()
        }
    }

    /// Check the settings: every age at least an hour ([`check_age`]), at
    /// most 1,000 partitions ahead, and no per-level rules that contradict
    /// each other (an older partition cannot keep a level a younger one
    /// has lost).
    pub fn validate(&self) -> Result<(), Error> {
        let age = |option: &'static str, age: Option<Duration>| {
            age.map_or(Ok(()), check_age)
                .map_err(|message| Error::config(option, message))
        };
        age("retention", self.retention)?;
        age("max age", Some(self.max_age))?;
        age("columnar after", self.columnar_after)?;
        check_premake(self.premake).map_err(|message| Error::config("premake", message))?;
        keep_levels::check(&self.keep_levels)
    }
}

/// The rule of [`Maintenance::premake`]: at most 1,000.
pub fn check_premake(n: u32) -> Result<(), String> {
    if n <= MAX_PREMAKE {
        Ok(())
    } else {
        Err(format!(
            "{n} is out of range: use a whole number from 0 to {MAX_PREMAKE}"
        ))
    }
}
