//! `GET /metrics`: Prometheus text format through the `metrics` facade and
//! its Prometheus exporter.
//!
//! The sink's counters live in the library as plain atomics (the hot path
//! stays free of any metrics call); they are copied into the registry when
//! Prometheus scrapes. Per-batch histograms and retries by reason are
//! recorded by the library's consumer as they happen.
//!
//! Histogram samples are kept by the exporter until upkeep folds them into
//! their buckets. Without the exporter's own HTTP listener nothing does that
//! but a scrape, so [`upkeep`] runs it on a timer: memory stays flat under
//! load whether or not anyone scrapes `/metrics`.

use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, Request};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use metrics::Unit;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use pglogsink::{CancellationToken, Logger};

/// How often histogram samples are folded into their buckets. The
/// exporter's own listener uses the same period.
const UPKEEP_INTERVAL: Duration = Duration::from_secs(5);

/// Install the process-wide recorder. Call once, before serving.
pub(crate) fn install() -> Result<PrometheusHandle, super::failure::Failure> {
    let seconds = &[
        0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
    ];
    let rows = &[
        1.0,
        10.0,
        100.0,
        1_000.0,
        4_096.0,
        16_384.0,
        65_536.0,
        262_144.0,
        1_048_576.0,
    ];
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), seconds)?
        .set_buckets_for_metric(Matcher::Full("pglogsink_batch_rows".into()), rows)?
        .install_recorder()?;
    describe();
    Ok(handle)
}

/// Run the registry's upkeep every [`UPKEEP_INTERVAL`] until `token` is
/// cancelled. `install_recorder` leaves this to the caller; a scrape does it
/// too, but many deployments never scrape.
pub(crate) async fn upkeep(handle: PrometheusHandle, token: CancellationToken) {
    let mut timer = tokio::time::interval(UPKEEP_INTERVAL);
    timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = token.cancelled() => return,
            _ = timer.tick() => handle.run_upkeep(),
        }
    }
}

/// Every counter the service exports, and its help text.
const COUNTERS: &[(&str, &str)] = &[
    ("pglogsink_records_enqueued_total", "Records taken by log()."),
    ("pglogsink_records_written_total", "Records committed to the Log table."),
    ("pglogsink_records_rejected_total", "Records PostgreSQL refused, kept in the rejected table or dead-letter file."),
    ("pglogsink_records_spooled_total", "Records moved to the on-disk spool."),
    ("pglogsink_records_replayed_total", "Records written from the spool."),
    ("pglogsink_records_truncated_total", "Records cut to the maximum record size."),
    ("pglogsink_batches_total", "COPY batches committed."),
    ("pglogsink_maintenance_runs_total", "Maintenance runs of the Log table that succeeded (or found another instance at it)."),
    ("pglogsink_maintenance_failures_total", "Maintenance runs that failed, by reason (privilege: the role may not create or drop partitions)."),
    ("pglogsink_partitions_dropped_total", "Partitions of the Log table dropped by retention."),
    ("pglogsink_retries_total", "Batch attempts retried after a transient error, by reason."),
    ("pglogsink_records_lost_total", "Records that will not reach the table, by reason: handed back to the caller (sink_full, \
         too_large, stopped) or taken and dropped (spool_full, spool_error, no_spool, refused_row)."),
    ("pglogsink_records_in_doubt_total", "Records in a COPY cut off at the shutdown deadline with no spool: maybe committed."),
    ("pglogsink_embedded_restarts_total", "Times the private PostgreSQL was started again after it died."),
    ("http_requests_total", "HTTP requests answered, by route, method and status."),
];

/// Every gauge, its unit and its help text.
const GAUGES: &[(&str, Option<Unit>, &str)] = &[
    (
        "pglogsink_spool_bytes",
        Some(Unit::Bytes),
        "Bytes the spool takes on disk.",
    ),
    (
        "pglogsink_full",
        None,
        "1 while the memory budget and the spool are both exhausted and records are handed back.",
    ),
    (
        "pglogsink_queue_depth",
        None,
        "Records waiting in the in-memory queue.",
    ),
    (
        "pglogsink_queue_bytes",
        Some(Unit::Bytes),
        "Memory the queue holds, as counted against --max-queue-bytes (records queued, and \
         ingest requests being read and decoded).",
    ),
    (
        "pglogsink_oldest_unwritten_seconds",
        Some(Unit::Seconds),
        "Age of the oldest record taken by log() and not yet written.",
    ),
    (
        "pglogsink_up",
        None,
        "1 while the sink takes records, 0 after it stopped.",
    ),
];

/// Every histogram, its unit and its help text.
const HISTOGRAMS: &[(&str, Option<Unit>, &str)] = &[
    (
        "pglogsink_batch_rows",
        None,
        "Rows per committed COPY batch.",
    ),
    (
        "pglogsink_copy_duration_seconds",
        Some(Unit::Seconds),
        "Time to write one batch (transaction, ledger row and COPY).",
    ),
    (
        "http_request_duration_seconds",
        Some(Unit::Seconds),
        "HTTP request latency, by route.",
    ),
];

fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram};
    for &(name, help) in COUNTERS {
        describe_counter!(name, help);
    }
    for &(name, unit, help) in GAUGES {
        match unit {
            Some(unit) => describe_gauge!(name, unit, help),
            None => describe_gauge!(name, help),
        }
    }
    for &(name, unit, help) in HISTOGRAMS {
        match unit {
            Some(unit) => describe_histogram!(name, unit, help),
            None => describe_histogram!(name, help),
        }
    }
}

/// The scrape endpoint's answer: the sink's counters copied in, then the
/// whole registry rendered.
pub(crate) fn render(handle: &PrometheusHandle, logger: &Logger) -> Response {
    let stats = logger.stats();
    metrics::counter!("pglogsink_records_enqueued_total").absolute(stats.received + stats.queued);
    metrics::counter!("pglogsink_records_written_total").absolute(stats.written);
    metrics::counter!("pglogsink_records_rejected_total")
        .absolute(stats.rejected + stats.dead_lettered);
    metrics::counter!("pglogsink_records_spooled_total").absolute(stats.spooled);
    metrics::counter!("pglogsink_records_replayed_total").absolute(stats.replayed);
    metrics::counter!("pglogsink_records_truncated_total").absolute(stats.truncated);
    metrics::counter!("pglogsink_batches_total").absolute(stats.batches);
    for (reason, records) in stats.lost.by_reason() {
        metrics::counter!("pglogsink_records_lost_total", "reason" => reason).absolute(records);
    }
    metrics::counter!("pglogsink_records_in_doubt_total").absolute(stats.in_doubt);
    metrics::gauge!("pglogsink_spool_bytes").set(stats.spool_bytes as f64);
    metrics::gauge!("pglogsink_full").set(if stats.full { 1.0 } else { 0.0 });
    metrics::gauge!("pglogsink_queue_depth").set(stats.queued as f64);
    metrics::gauge!("pglogsink_queue_bytes").set(stats.queued_bytes as f64);
    metrics::gauge!("pglogsink_oldest_unwritten_seconds")
        .set(stats.oldest_unwritten.map_or(0.0, |d| d.as_secs_f64()));
    metrics::gauge!("pglogsink_up").set(if stats.closed { 0.0 } else { 1.0 });
    (
        [("content-type", "text/plain; version=0.0.4; charset=utf-8")],
        handle.render(),
    )
        .into_response()
}

/// Middleware: count and time every request by its route pattern (not its
/// path, so that `/recipes/{id}` is one series).
pub(crate) async fn track(request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let method = request.method().to_string();
    let started = Instant::now();
    let response = next.run(request).await;
    let status = response.status().as_u16().to_string();
    metrics::counter!("http_requests_total", "route" => route.clone(), "method" => method, "status" => status)
        .increment(1);
    metrics::histogram!("http_request_duration_seconds", "route" => route)
        .record(started.elapsed().as_secs_f64());
    response
}
