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
        if !(1..=MAX_BATCH_SIZE).contains(&self.batch_size) {
            return Err(Error::config(
                "batch size",
                format!(
                    "{} is out of range: use a whole number from 1 to {MAX_BATCH_SIZE}",
                    self.batch_size
                ),
            ));
        }
        if self.max_queue_bytes < 1024 * 1024 {
            return Err(Error::config(
                "max queue bytes",
                format!(
                    "{} is too small: use at least 1048576 (1 MiB)",
                    self.max_queue_bytes
                ),
            ));
        }
        if !(1024..=256 * 1024 * 1024).contains(&self.max_record_bytes) {
            return Err(Error::config(
                "max record bytes",
                format!(
                    "{} is out of range: use 1024 (1 KiB) to 268435456 (256 MiB)",
                    self.max_record_bytes
                ),
            ));
        }
        if self.ledger_retention < Duration::from_secs(60) {
            return Err(Error::config(
                "ledger retention",
                "keep the ledger for at least 60 seconds",
            ));
        }
        if !(1..=MAX_COPIES_IN_FLIGHT).contains(&self.copies_in_flight) {
            return Err(Error::config(
                "copies in flight",
                format!(
                    "{} is out of range: use a whole number from 1 to {MAX_COPIES_IN_FLIGHT}",
                    self.copies_in_flight
                ),
            ));
        }
        if self.max_spool_bytes < 1024 * 1024 {
            return Err(Error::config(
                "max spool bytes",
                format!(
                    "{} is too small: use at least 1048576 (1 MiB)",
                    self.max_spool_bytes
                ),
            ));
        }
        if self.write_timeout < Duration::from_secs(1) {
            return Err(Error::config(
                "write timeout",
                "use at least 1 second: a large batch takes a while to COPY",
            ));
        }
        if self.lock_timeout < Duration::from_millis(10) || self.lock_timeout > self.write_timeout {
            return Err(Error::config(
                "lock timeout",
                "use at least 10 ms and at most the write timeout",
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
