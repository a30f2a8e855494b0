//! The ingest endpoints' flags, and what their handlers share.

use pglogsink::Logger;

use crate::cli::flag_values::{parse_bytes, ByteSize};
use crate::cli::http::ApiKeys;

/// Default `--max-body-bytes`: 16 MiB, after decompression.
pub(crate) const DEFAULT_MAX_BODY: ByteSize = ByteSize(16 << 20);
/// Default `--max-records-per-request`.
pub(crate) const DEFAULT_MAX_RECORDS: usize = 100_000;

#[derive(Debug, Clone, clap::Args)]
pub(crate) struct IngestArgs {
    /// Largest ingest request body, in bytes, both as sent and after gzip decompression
    /// (suffixes K, M, G accepted); a larger one is refused with 413.
    #[arg(long, env = "PGLOGSINK_MAX_BODY_BYTES", default_value_t = DEFAULT_MAX_BODY,
          value_parser = parse_bytes, value_name = "BYTES")]
    pub(crate) max_body_bytes: ByteSize,

    /// Most log records one ingest request may carry (NDJSON lines, OTLP log records); a request
    /// with more is refused with 413, before it is decoded where the format allows.
    #[arg(long, env = "PGLOGSINK_MAX_RECORDS_PER_REQUEST",
          default_value_t = DEFAULT_MAX_RECORDS, value_parser = parse_max_records, value_name = "N")]
    pub(crate) max_records_per_request: usize,
}

impl IngestArgs {
    /// What the handlers share: these limits, `logger`'s sink and its
    /// queue budget, bodies read within `body_read_timeout`, `keys` asked
    /// for.
    pub(crate) fn state(
        &self,
        logger: Logger,
        body_read_timeout: std::time::Duration,
        queue_budget: usize,
        keys: Option<ApiKeys>,
    ) -> IngestState {
        IngestState {
            logger,
            body: BodyLimits {
                max_bytes: usize::try_from(self.max_body_bytes.0).unwrap_or(usize::MAX),
                read_timeout: body_read_timeout,
            },
            max_records: self.max_records_per_request,
            queue_budget: queue_budget as u64,
            keys,
        }
    }
}

fn parse_max_records(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(n) if (1..=10_000_000).contains(&n) => Ok(n),
        _ => Err("expected a whole number from 1 to 10000000".to_owned()),
    }
}

/// How an ingest body is read: its size cap, and how long it may take.
#[derive(Debug, Clone, Copy)]
pub(crate) struct BodyLimits {
    /// Largest body, as sent and decompressed.
    pub(crate) max_bytes: usize,
    /// Longest time from the request's head to the end of its body.
    pub(crate) read_timeout: std::time::Duration,
}

/// What the ingest handlers share.
#[derive(Clone, Debug)]
pub(crate) struct IngestState {
    pub(crate) logger: Logger,
    pub(crate) body: BodyLimits,
    /// Most records per request.
    pub(crate) max_records: usize,
    /// The sink's queue budget, in bytes: a request that needs more can
    /// never be taken (413), one that finds no room now can later (503).
    pub(crate) queue_budget: u64,
    /// `None`: no key is asked for (only allowed on a loopback address).
    pub(crate) keys: Option<ApiKeys>,
}

#[cfg(test)]
impl IngestState {
    /// For unit tests: `logger`'s sink, 1 MiB bodies within 5 s, 1,000
    /// records per request, the default queue budget, no keys.
    pub(crate) fn for_tests(logger: Logger) -> IngestState {
        IngestState {
            logger,
            body: BodyLimits {
                max_bytes: 1 << 20,
                read_timeout: std::time::Duration::from_secs(5),
            },
            max_records: 1000,
            queue_budget: pglogsink::DEFAULT_MAX_QUEUE_BYTES as u64,
            keys: None,
        }
    }
}
