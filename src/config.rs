//! The sink's settings: one struct with defaults, validated in one place.

use std::path::PathBuf;
use std::time::Duration;

use crate::table::TableName;
use crate::Error;

/// Records per COPY batch unless configured otherwise: the most the consumer
/// takes from the queue at once. It never waits to fill a batch, so this
/// only matters under backlog, where each commit (an fsync) is shared by more
/// rows. Chosen from `cargo bench --bench pipeline -- --sweep`: 1,024 reached
/// 0.70 of a single COPY's rate, 16,384 matched it, with the same latency at
/// half load.
pub const DEFAULT_BATCH_SIZE: usize = 16_384;
/// Largest accepted `batch_size`.
pub const MAX_BATCH_SIZE: usize = 1 << 20;
/// How long shutdown waits for the queue to drain, by default.
pub const DEFAULT_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(10);
/// The Log table's default name.
pub const DEFAULT_TABLE: &str = "log";
/// Memory the queue may use, by default, before records go to the spool.
pub const DEFAULT_MAX_QUEUE_BYTES: usize = 128 * 1024 * 1024;
/// Largest record (target, message and fields) written as is, by default;
/// larger ones are truncated with a marker.
pub const DEFAULT_MAX_RECORD_BYTES: usize = 1024 * 1024;
/// Most bytes the spool may take on disk, by default.
pub const DEFAULT_MAX_SPOOL_BYTES: u64 = 4 * 1024 * 1024 * 1024;
/// Free space the spool leaves on its filesystem, by default.
pub const DEFAULT_SPOOL_MIN_FREE_BYTES: u64 = 512 * 1024 * 1024;
/// How long a batch's transaction waits for a lock on the table, by default.
pub const DEFAULT_LOCK_TIMEOUT: Duration = Duration::from_secs(5);
/// How long one statement of a batch's transaction may take, by default.
pub const DEFAULT_WRITE_TIMEOUT: Duration = Duration::from_secs(30);
/// Batches written at once, each on a connection of its own, by default:
/// two COPY streams took 1.4 times the rows/s of one on the 2-core test
/// machine (`cargo bench --bench pipeline`, method `limit_2`).
pub const DEFAULT_COPIES_IN_FLIGHT: usize = 2;
/// Largest accepted `copies_in_flight`.
pub const MAX_COPIES_IN_FLIGHT: usize = 16;
/// How long the ledger of committed batches is kept, by default.
pub const DEFAULT_LEDGER_RETENTION: Duration = Duration::from_secs(24 * 3600);

/// Settings of a sink. Start from `Default` and change what you need.
///
/// ```
/// let config = pglogsink::SinkConfig {
///     table: "app_log".into(),
///     batch_size: 500,
///     ..Default::default()
/// };
/// config.validate()?;
/// # Ok::<(), pglogsink::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct SinkConfig {
    /// The Log table, optionally schema-qualified (default `log`).
    pub table: String,
    /// Most records per COPY (default [`DEFAULT_BATCH_SIZE`]).
    pub batch_size: usize,
    /// Target stored for records that do not set one (default `app`).
    pub default_target: String,
    /// First retry delay after a transient error (default 100 ms).
    pub retry_initial: Duration,
    /// Longest retry delay (default 5 s). Transient errors are retried until
    /// they clear or the shutdown deadline passes.
    pub retry_max: Duration,
    /// Directory of the on-disk spool (default: none). With a spool, records
    /// that cannot be written (a long outage past `max_queue_bytes`, a fatal
    /// stop, the shutdown deadline) are kept on disk and replayed, oldest
    /// first, when writes work again, including by the next process started
    /// with the same spool. A spool belongs to one table and one process at a
    /// time. Without one, memory grows during an outage and what is
    /// unwritten at the end is only counted.
    pub spool_dir: Option<PathBuf>,
    /// Estimated bytes the queue may hold in memory (default
    /// [`DEFAULT_MAX_QUEUE_BYTES`]). Past it the queue moves to the spool;
    /// when there is no spool or it can take no more, `send()` hands
    /// records back with [`SendError::Full`](crate::SendError::Full) until
    /// the queue is under budget again. `log()` never blocks either way.
    pub max_queue_bytes: usize,
    /// Most bytes the spool may take on disk (default
    /// [`DEFAULT_MAX_SPOOL_BYTES`]); it may pass it by one batch.
    pub max_spool_bytes: u64,
    /// Free space the spool leaves on its filesystem (default
    /// [`DEFAULT_SPOOL_MIN_FREE_BYTES`]), so that it never fills a disk it
    /// shares with the database or the application.
    pub spool_min_free_bytes: u64,
    /// How long a batch waits for a lock on the Log table before the write
    /// is retried (default 5 s): a migration, `VACUUM FULL` or a partition
    /// being dropped holds one. Memory stays within budget meanwhile.
    pub lock_timeout: Duration,
    /// How long one statement of a batch's transaction may take (default
    /// 30 s); the client gives up on the connection 5 s after that, which
    /// also covers a network path that drops packets silently. Either is
    /// retried like any transient error.
    pub write_timeout: Duration,
    /// Most batches being written at once, each in its own transaction on
    /// a connection of its own (default [`DEFAULT_COPIES_IN_FLIGHT`]). The
    /// pool needs at least this many connections for them to overlap. Rows
    /// of batches in flight together may commit in either order; each batch
    /// is still written exactly once.
    pub copies_in_flight: usize,
    /// Largest record written as is (default [`DEFAULT_MAX_RECORD_BYTES`]);
    /// a larger one is truncated with a marker and counted, never dropped.
    pub max_record_bytes: usize,
    /// How long ledger rows are kept (default 24 h). A batch replayed or
    /// retried within this time is never written twice.
    pub ledger_retention: Duration,
}

impl Default for SinkConfig {
    fn default() -> SinkConfig {
        SinkConfig {
            table: DEFAULT_TABLE.to_owned(),
            batch_size: DEFAULT_BATCH_SIZE,
            default_target: "app".to_owned(),
            retry_initial: Duration::from_millis(100),
            retry_max: Duration::from_secs(5),
            spool_dir: None,
            max_queue_bytes: DEFAULT_MAX_QUEUE_BYTES,
            max_spool_bytes: DEFAULT_MAX_SPOOL_BYTES,
            spool_min_free_bytes: DEFAULT_SPOOL_MIN_FREE_BYTES,
            lock_timeout: DEFAULT_LOCK_TIMEOUT,
            write_timeout: DEFAULT_WRITE_TIMEOUT,
            copies_in_flight: DEFAULT_COPIES_IN_FLIGHT,
            max_record_bytes: DEFAULT_MAX_RECORD_BYTES,
            ledger_retention: DEFAULT_LEDGER_RETENTION,
        }
    }
}

impl SinkConfig {
    /// Check every setting; the error names the option and what it accepts.
    pub fn validate(&self) -> Result<(), Error> {
        self.table_name().map(|_| ())?;
        let rule = |option: &'static str, checked: Result<(), String>| {
            checked.map_err(|message| Error::config(option, message))
        };
        rule("batch size", check_batch_size(self.batch_size))?;
        rule(
            "max queue bytes",
            check_max_queue_bytes(self.max_queue_bytes),
        )?;
        rule(
            "max record bytes",
            check_max_record_bytes(self.max_record_bytes),
        )?;
        if self.ledger_retention < Duration::from_secs(60) {
            return Err(Error::config(
                "ledger retention",
                "keep the ledger for at least 60 seconds",
            ));
        }
        rule(
            "copies in flight",
            check_copies_in_flight(self.copies_in_flight),
        )?;
        rule(
            "max spool bytes",
            check_max_spool_bytes(self.max_spool_bytes),
        )?;
        rule("write timeout", check_write_timeout(self.write_timeout))?;
        rule("lock timeout", check_lock_timeout(self.lock_timeout))?;
        if self.lock_timeout > self.write_timeout {
            return Err(Error::config(
                "lock timeout",
                "use at most the write timeout",
            ));
        }
        if self.retry_initial.is_zero() || self.retry_max < self.retry_initial {
            return Err(Error::config(
                "retry delays",
                "the initial delay must be above zero and at most the maximum delay",
            ));
        }
        Ok(())
    }

    pub(crate) fn table_name(&self) -> Result<TableName, Error> {
        TableName::parse(&self.table)
    }
}

// The rule of each setting that the binary also takes as a flag, one
// function a setting: `SinkConfig::validate` applies them, and the flags
// check their values with the same functions (`pglogsink::admin::settings`),
// so that a flag and a field accept the same and say so the same way. Each
// error says what the setting accepts.

/// [`SinkConfig::batch_size`]: 1 to [`MAX_BATCH_SIZE`].
pub fn check_batch_size(n: usize) -> Result<(), String> {
    check(
        (1..=MAX_BATCH_SIZE).contains(&n),
        format!("{n} is out of range: use a whole number from 1 to {MAX_BATCH_SIZE}"),
    )
}

/// [`SinkConfig::copies_in_flight`]: 1 to [`MAX_COPIES_IN_FLIGHT`].
pub fn check_copies_in_flight(n: usize) -> Result<(), String> {
    check(
        (1..=MAX_COPIES_IN_FLIGHT).contains(&n),
        format!("{n} is out of range: use a whole number from 1 to {MAX_COPIES_IN_FLIGHT}"),
    )
}

/// [`SinkConfig::max_queue_bytes`]: at least 1 MiB.
pub fn check_max_queue_bytes(n: usize) -> Result<(), String> {
    check(n >= MIB, format!("{n} is too small: use at least 1MiB"))
}

/// [`SinkConfig::max_spool_bytes`]: at least 1 MiB.
pub fn check_max_spool_bytes(n: u64) -> Result<(), String> {
    check(
        n >= MIB as u64,
        format!("{n} is too small: use at least 1MiB"),
    )
}

/// [`SinkConfig::max_record_bytes`]: 1 KiB to 256 MiB.
pub fn check_max_record_bytes(n: usize) -> Result<(), String> {
    check(
        (1024..=256 * MIB).contains(&n),
        format!("{n} is out of range: use 1KiB to 256MiB"),
    )
}

/// [`SinkConfig::write_timeout`]: at least a second.
pub fn check_write_timeout(d: Duration) -> Result<(), String> {
    check(
        d >= Duration::from_secs(1),
        "use at least 1 second: a large batch takes a while to COPY".to_owned(),
    )
}

/// [`SinkConfig::lock_timeout`]: at least 10 ms (and, checked with the
/// other settings, at most the write timeout).
pub fn check_lock_timeout(d: Duration) -> Result<(), String> {
    check(
        d >= Duration::from_millis(10),
        "use at least 10 ms".to_owned(),
    )
}

const MIB: usize = 1024 * 1024;

fn check(ok: bool, otherwise: String) -> Result<(), String> {
    if ok {
        Ok(())
    } else {
        Err(otherwise)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_bad_values_name_their_option() {
        SinkConfig::default().validate().unwrap();
        let err = SinkConfig {
            batch_size: 0,
            ..Default::default()
        }
        .validate()
        .unwrap_err();
        assert!(err.to_string().contains("batch size"), "{err}");
        let err = SinkConfig {
            table: "Bad Name".into(),
            ..Default::default()
        }
        .validate()
        .unwrap_err();
        assert!(err.to_string().contains("table"), "{err}");
    }
}
