//! The sink's tuning flags, shared by the commands that run a sink.

use std::path::{Path, PathBuf};

use pglogsink::admin::settings;
use pglogsink::SinkConfig;

use super::db::DatabaseArgs;
use super::flag_values::{
    parse_bytes, parse_bytes_or_zero, parse_seconds, whole_number, ByteSize, Seconds,
};

#[derive(Debug, Clone, clap::Args)]
pub(crate) struct SinkArgs {
    /// Most records written per COPY. The sink never waits to fill a batch: it writes what is
    /// queued, up to this many.
    #[arg(long, env = "PGLOGSINK_BATCH_SIZE", default_value_t = pglogsink::DEFAULT_BATCH_SIZE,
          value_parser = |s: &str| whole_number(s, settings::check_batch_size), value_name = "N")]
    pub(crate) batch_size: usize,

    /// Batches written at once, each in its own transaction on a connection of its own. Two
    /// COPY streams took 1.4 times the rows/s of one on a 2-core machine; 1 keeps commits in
    /// order.
    #[arg(long, env = "PGLOGSINK_COPIES_IN_FLIGHT",
          default_value_t = pglogsink::DEFAULT_COPIES_IN_FLIGHT,
          value_parser = |s: &str| whole_number(s, settings::check_copies_in_flight),
          value_name = "N")]
    pub(crate) copies_in_flight: usize,

    /// Directory of the on-disk spool that keeps records the database cannot take now (an outage
    /// past --max-queue-bytes, a fatal stop, the shutdown deadline); they are written, oldest
    /// first, when writes work again, also by the next start. A spool belongs to one table
    /// [default: <data dir>/spool/<table>].
    #[arg(long, env = "PGLOGSINK_SPOOL_DIR", value_name = "DIR")]
    pub(crate) spool_dir: Option<PathBuf>,

    /// Memory the queue may use before records move to the spool, in bytes (suffixes K, M, G,
    /// KiB, MiB, GiB accepted). It holds while a write waits on a lock or a dead network path.
    /// When the spool cannot take more either, requests are answered 503 (with Retry-After)
    /// and /readyz says why, until the database catches up.
    #[arg(long, env = "PGLOGSINK_MAX_QUEUE_BYTES",
          default_value_t = ByteSize(pglogsink::DEFAULT_MAX_QUEUE_BYTES as u64),
          value_parser = parse_max_queue_bytes, value_name = "BYTES")]
    pub(crate) max_queue_bytes: ByteSize,

    /// Most disk the spool may take (it may pass it by one batch). Past it, records are
    /// handed back rather than written to disk.
    #[arg(long, env = "PGLOGSINK_MAX_SPOOL_BYTES",
          default_value_t = ByteSize(pglogsink::DEFAULT_MAX_SPOOL_BYTES),
          value_parser = parse_max_spool_bytes, value_name = "BYTES")]
    pub(crate) max_spool_bytes: ByteSize,

    /// Free space the spool leaves on its filesystem, so that it never fills a disk it shares
    /// with the database or the application (0 turns the reserve off).
    #[arg(long, env = "PGLOGSINK_SPOOL_MIN_FREE",
          default_value_t = ByteSize(pglogsink::DEFAULT_SPOOL_MIN_FREE_BYTES),
          value_parser = parse_bytes_or_zero, value_name = "BYTES")]
    pub(crate) spool_min_free: ByteSize,

    /// Seconds a batch waits for a lock on the Log table (held by ALTER TABLE, VACUUM FULL, a
    /// non-concurrent CREATE INDEX, a partition being dropped) before it is retried.
    #[arg(long, env = "PGLOGSINK_LOCK_TIMEOUT",
          default_value_t = Seconds(pglogsink::DEFAULT_LOCK_TIMEOUT),
          value_parser = parse_lock_timeout, value_name = "SECS")]
    pub(crate) lock_timeout: Seconds,

    /// Seconds one statement of a batch's transaction may take on the server; the sink gives up
    /// on the connection 5 s later (a network path that drops packets silently). Both are
    /// retried like any transient error.
    #[arg(long, env = "PGLOGSINK_WRITE_TIMEOUT",
          default_value_t = Seconds(pglogsink::DEFAULT_WRITE_TIMEOUT),
          value_parser = parse_write_timeout, value_name = "SECS")]
    pub(crate) write_timeout: Seconds,

    /// Largest record (target, message and fields) written as is; a larger one is truncated
    /// with a marker and counted.
    #[arg(long, env = "PGLOGSINK_MAX_RECORD_BYTES",
          default_value_t = ByteSize(pglogsink::DEFAULT_MAX_RECORD_BYTES as u64),
          value_parser = parse_max_record_bytes, value_name = "BYTES")]
    pub(crate) max_record_bytes: ByteSize,
}

impl SinkArgs {
    /// The sink's settings; the spool goes under `state_dir` unless given.
    pub(crate) fn config(&self, db: &DatabaseArgs, state_dir: &Path) -> SinkConfig {
        SinkConfig {
            table: db.table.to_string(),
            batch_size: self.batch_size,
            spool_dir: Some(
                self.spool_dir
                    .clone()
                    .unwrap_or_else(|| state_dir.join("spool").join(db.table.to_string())),
            ),
            max_queue_bytes: bytes_in_memory(self.max_queue_bytes),
            max_spool_bytes: self.max_spool_bytes.0,
            copies_in_flight: self.copies_in_flight,
            spool_min_free_bytes: self.spool_min_free.0,
            lock_timeout: self.lock_timeout.0,
            write_timeout: self.write_timeout.0,
            max_record_bytes: bytes_in_memory(self.max_record_bytes),
            ..SinkConfig::default()
        }
    }
}

/// A size that `parse_bytes` checked fits in memory's `usize`.
fn bytes_in_memory(size: ByteSize) -> usize {
    usize::try_from(size.0).unwrap_or(usize::MAX)
}

fn parse_max_queue_bytes(s: &str) -> Result<ByteSize, String> {
    let size = parse_bytes(s)?;
    settings::check_max_queue_bytes(bytes_in_memory(size))?;
    Ok(size)
}

fn parse_max_spool_bytes(s: &str) -> Result<ByteSize, String> {
    let size = parse_bytes(s)?;
    settings::check_max_spool_bytes(size.0)?;
    Ok(size)
}

fn parse_max_record_bytes(s: &str) -> Result<ByteSize, String> {
    let size = parse_bytes(s)?;
    settings::check_max_record_bytes(bytes_in_memory(size))?;
    Ok(size)
}

fn parse_lock_timeout(s: &str) -> Result<Seconds, String> {
    let timeout = parse_seconds(s, false, 3_600.0)?;
    settings::check_lock_timeout(timeout)?;
    Ok(Seconds(timeout))
}

fn parse_write_timeout(s: &str) -> Result<Seconds, String> {
    let timeout = parse_seconds(s, false, 86_400.0)?;
    settings::check_write_timeout(timeout)?;
    Ok(Seconds(timeout))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn spool_limits_and_timeouts_parse() {
        assert_eq!(parse_max_spool_bytes("4GiB"), Ok(ByteSize(4 << 30)));
        assert!(parse_max_spool_bytes("64K").unwrap_err().contains("1MiB"));
        assert_eq!(parse_bytes_or_zero("0"), Ok(ByteSize(0)));
        assert_eq!(parse_bytes_or_zero("512MiB"), Ok(ByteSize(512 << 20)));
        assert_eq!(
            parse_lock_timeout("0.5"),
            Ok(Seconds(Duration::from_millis(500)))
        );
        assert!(parse_write_timeout("0.5")
            .unwrap_err()
            .contains("at least 1 second"));
    }

    #[test]
    fn batch_sizes_are_bounded() {
        let parse_batch_size = |s| whole_number(s, settings::check_batch_size);
        let parse_copies = |s| whole_number(s, settings::check_copies_in_flight);
        assert!(parse_batch_size("0").unwrap_err().contains("from 1 to"));
        assert!(parse_copies("0").unwrap_err().contains("from 1 to 16"));
        assert_eq!(parse_copies("2"), Ok(2));
        assert!(parse_batch_size("ten").is_err());
        assert_eq!(parse_batch_size("512"), Ok(512));
    }

    #[test]
    fn every_default_is_the_library_constant_and_passes_its_rule() {
        let cli =
            <crate::cli::Cli as clap::Parser>::try_parse_from(["pglogsink", "serve"]).unwrap();
        let crate::cli::Command::Serve(serve) = cli.command else {
            unreachable!()
        };
        let (db, dir) = (&serve.db, std::path::Path::new("/state"));
        let config = serve.sink.config(db, dir);
        config.validate().unwrap();
        let defaults = pglogsink::SinkConfig::default();
        assert_eq!(config.batch_size, defaults.batch_size);
        assert_eq!(config.max_queue_bytes, defaults.max_queue_bytes);
        assert_eq!(config.max_spool_bytes, defaults.max_spool_bytes);
        assert_eq!(config.spool_min_free_bytes, defaults.spool_min_free_bytes);
        assert_eq!(config.lock_timeout, defaults.lock_timeout);
        assert_eq!(config.write_timeout, defaults.write_timeout);
        assert_eq!(config.max_record_bytes, defaults.max_record_bytes);
        assert_eq!(config.copies_in_flight, defaults.copies_in_flight);
    }
}
