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

    /// Directory of the on-disk spool that keeps records the database cannot take now (an outage
    /// past --max-queue-bytes, a fatal stop, the shutdown deadline); they are written, oldest
    /// first, when writes work again, also by the next start. A spool belongs to one table
    /// [default: <data dir>/spool/<table>].
    #[arg(long, env = "PGLOGSINK_SPOOL_DIR", value_name = "DIR")]
    pub(crate) spool_dir: Option<PathBuf>,

    /// Memory the queue may use before records move to the spool, in bytes (suffixes K, M, G,
    /// KiB, MiB, GiB accepted).
    #[arg(long, env = "PGLOGSINK_MAX_QUEUE_BYTES", default_value = "128MiB",
          value_parser = parse_bytes, value_name = "BYTES")]
    pub(crate) max_queue_bytes: usize,

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
    fn batch_sizes_are_bounded() {
        assert!(parse_batch_size("0").unwrap_err().contains("from 1 to"));
        assert!(parse_batch_size("ten").is_err());
        assert_eq!(parse_batch_size("512"), Ok(512));
    }
}
