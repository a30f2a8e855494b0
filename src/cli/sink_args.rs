//! The sink's tuning flags, shared by the commands that run a sink.

use std::path::{Path, PathBuf};

use pglogsink::SinkConfig;

use super::DatabaseArgs;

#[derive(Debug, Clone, clap::Args)]
pub(crate) struct SinkArgs {
    /// Most records written per COPY. The sink never waits to fill a batch: it writes what is
    /// queued, up to this many.
    #[arg(long, env = "PGLOGSINK_BATCH_SIZE", default_value_t = pglogsink::DEFAULT_BATCH_SIZE,
          value_parser = parse_batch_size, value_name = "N")]
    pub(crate) batch_size: usize,

    /// Batches written at once, each in its own transaction on a connection of its own. Two
    /// COPY streams took 1.4 times the rows/s of one on a 2-core machine; 1 keeps commits in
    /// order.
    #[arg(long, env = "PGLOGSINK_COPIES_IN_FLIGHT",
          default_value_t = pglogsink::DEFAULT_COPIES_IN_FLIGHT,
          value_parser = parse_copies, value_name = "N")]
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
    #[arg(long, env = "PGLOGSINK_MAX_QUEUE_BYTES", default_value = "128MiB",
          value_parser = parse_bytes, value_name = "BYTES")]
    pub(crate) max_queue_bytes: usize,

    /// Most disk the spool may take (it may pass it by one batch). Past it, records are
    /// handed back rather than written to disk.
    #[arg(long, env = "PGLOGSINK_MAX_SPOOL_BYTES", default_value = "4GiB",
          value_parser = parse_spool_bytes, value_name = "BYTES")]
    pub(crate) max_spool_bytes: u64,

    /// Free space the spool leaves on its filesystem, so that it never fills a disk it shares
    /// with the database or the application (0 turns the reserve off).
    #[arg(long, env = "PGLOGSINK_SPOOL_MIN_FREE", default_value = "512MiB",
          value_parser = parse_bytes_or_zero, value_name = "BYTES")]
    pub(crate) spool_min_free: u64,

    /// Seconds a batch waits for a lock on the Log table (held by ALTER TABLE, VACUUM FULL, a
    /// non-concurrent CREATE INDEX, a partition being dropped) before it is retried.
    #[arg(long, env = "PGLOGSINK_LOCK_TIMEOUT", default_value = "5",
          value_parser = parse_lock_timeout, value_name = "SECS")]
    pub(crate) lock_timeout: std::time::Duration,

    /// Seconds one statement of a batch's transaction may take on the server; the sink gives up
    /// on the connection 5 s later (a network path that drops packets silently). Both are
    /// retried like any transient error.
    #[arg(long, env = "PGLOGSINK_WRITE_TIMEOUT", default_value = "30",
          value_parser = parse_write_timeout, value_name = "SECS")]
    pub(crate) write_timeout: std::time::Duration,

    /// Largest record (target, message and fields) written as is; a larger one is truncated
    /// with a marker and counted.
    #[arg(long, env = "PGLOGSINK_MAX_RECORD_BYTES", default_value = "1MiB",
          value_parser = parse_bytes, value_name = "BYTES")]
    pub(crate) max_record_bytes: usize,
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
            max_queue_bytes: self.max_queue_bytes,
            max_spool_bytes: self.max_spool_bytes,
            copies_in_flight: self.copies_in_flight,
            spool_min_free_bytes: self.spool_min_free,
            lock_timeout: self.lock_timeout,
            write_timeout: self.write_timeout,
            max_record_bytes: self.max_record_bytes,
            ..SinkConfig::default()
        }
    }
}

fn parse_batch_size(s: &str) -> Result<usize, String> {
    let max = pglogsink::MAX_BATCH_SIZE;
    match s.parse::<usize>() {
        Ok(n) if (1..=max).contains(&n) => Ok(n),
        _ => Err(format!("expected a whole number from 1 to {max}")),
    }
}

/// A byte count: `1048576`, `64K`, `128MiB`, `1G`... (K = 1024).
pub(crate) fn parse_bytes(s: &str) -> Result<usize, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (digits, unit) = t.split_at(split);
    let multiplier: usize = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        _ => return Err(bytes_error(s)),
    };
    digits
        .parse::<usize>()
        .ok()
        .and_then(|n| n.checked_mul(multiplier))
        .filter(|&n| n > 0)
        .ok_or_else(|| bytes_error(s))
}

fn parse_copies(s: &str) -> Result<usize, String> {
    let max = pglogsink::MAX_COPIES_IN_FLIGHT;
    match s.parse::<usize>() {
        Ok(n) if (1..=max).contains(&n) => Ok(n),
        _ => Err(format!("expected a whole number from 1 to {max}")),
    }
}

fn parse_spool_bytes(s: &str) -> Result<u64, String> {
    match parse_bytes(s) {
        Ok(n) if n >= 1 << 20 => Ok(n as u64),
        Ok(_) => Err("use at least 1MiB".to_owned()),
        Err(e) => Err(e),
    }
}

fn parse_bytes_or_zero(s: &str) -> Result<u64, String> {
    if s.trim() == "0" {
        return Ok(0);
    }
    parse_bytes(s).map(|n| n as u64)
}

fn parse_lock_timeout(s: &str) -> Result<std::time::Duration, String> {
    super::seconds::parse_seconds(s, false, 3600.0)
}

fn parse_write_timeout(s: &str) -> Result<std::time::Duration, String> {
    match super::seconds::parse_seconds(s, false, 86_400.0) {
        Ok(d) if d >= std::time::Duration::from_secs(1) => Ok(d),
        Ok(_) => Err("use at least 1 second: a large batch takes a while to COPY".to_owned()),
        Err(e) => Err(e),
    }
}

fn bytes_error(s: &str) -> String {
    format!(
        "{s:?} is not a size: use a whole number of bytes, optionally with K, M or G (e.g. 128MiB)"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_with_binary_suffixes() {
        assert_eq!(parse_bytes("1024"), Ok(1024));
        assert_eq!(parse_bytes("64K"), Ok(64 << 10));
        assert_eq!(parse_bytes("128MiB"), Ok(128 << 20));
        assert_eq!(parse_bytes("2 gb"), Ok(2 << 30));
        for bad in [
            "",
            "0",
            "-1",
            "12XB",
            "MiB",
            "1.5M",
            "99999999999999999999G",
        ] {
            assert!(parse_bytes(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn spool_limits_and_timeouts_parse() {
        assert_eq!(parse_spool_bytes("4GiB"), Ok(4 << 30));
        assert!(parse_spool_bytes("64K").unwrap_err().contains("1MiB"));
        assert_eq!(parse_bytes_or_zero("0"), Ok(0));
        assert_eq!(parse_bytes_or_zero("512MiB"), Ok(512 << 20));
        assert_eq!(
            parse_lock_timeout("0.5"),
            Ok(std::time::Duration::from_millis(500))
        );
        assert!(parse_write_timeout("0.5")
            .unwrap_err()
            .contains("at least 1 second"));
    }

    #[test]
    fn batch_sizes_are_bounded() {
        assert!(parse_batch_size("0").unwrap_err().contains("from 1 to"));
        assert!(parse_copies("0").unwrap_err().contains("from 1 to 16"));
        assert_eq!(parse_copies("2"), Ok(2));
        assert!(parse_batch_size("ten").is_err());
        assert_eq!(parse_batch_size("512"), Ok(512));
    }
}
