//! Ingest over HTTP for services written in anything: OTLP/HTTP logs
//! (`POST /v1/logs`) and newline-delimited JSON (`POST /ingest/ndjson`),
//! decoded into [`Record`]s and handed to the same [`Logger`] as the
//! service's own lines, so they get the sink's guarantees (spool,
//! exactly-once ledger, poison-row isolation).
//!
//! The contract of every answer:
//! - 2xx: every record the answer counts as accepted was handed to the sink,
//!   as if the caller had called `log()`.
//! - 4xx: nothing was handed over. Bad input is named (line, field, limit).
//! - 503 with `Retry-After`: the sink cannot take the records now, and took
//!   none of them: a request's records are queued all together or not at
//!   all ([`Handover`]), so a client that retries the whole body duplicates
//!   nothing.
//!
//! A request's memory counts in the sink's queue budget from its first
//! byte: its body as read and decompressed, what decoding it takes, and its
//! records, so that requests in flight and records queued together stay
//! within the budget (`--max-queue-bytes`).

mod api_keys;
mod body;
mod decode_cost;
mod hex;
mod ndjson;
mod otlp;
mod otlp_json;
mod timestamp;

use std::net::SocketAddr;
use std::path::PathBuf;

use axum::extract::{FromRef, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use pglogsink::{Batch, Level, Logger, Record, SendError};

pub(crate) use api_keys::ApiKeys;
pub(crate) use body::BodyLimits;

/// Default `--max-body-bytes`: 16 MiB, after decompression.
pub(crate) const DEFAULT_MAX_BODY: &str = "16MiB";
/// Default `--max-records-per-request`.
pub(crate) const DEFAULT_MAX_RECORDS: usize = 100_000;

/// What `Retry-After` says when the sink cannot take records.
const RETRY_AFTER_SECS: u64 = 5;

#[derive(Debug, Clone, clap::Args)]
pub(crate) struct IngestArgs {
    /// Largest ingest request body, in bytes, both as sent and after gzip decompression
    /// (suffixes K, M, G accepted); a larger one is refused with 413.
    #[arg(long, env = "PGLOGSINK_MAX_BODY_BYTES", default_value = DEFAULT_MAX_BODY,
          value_parser = super::sink_args::parse_bytes, value_name = "BYTES")]
    pub(crate) max_body_bytes: usize,

    /// Most log records one ingest request may carry (NDJSON lines, OTLP log records); a request
    /// with more is refused with 413, before it is decoded where the format allows.
    #[arg(long, env = "PGLOGSINK_MAX_RECORDS_PER_REQUEST",
          default_value_t = DEFAULT_MAX_RECORDS, value_parser = parse_max_records, value_name = "N")]
    pub(crate) max_records_per_request: usize,

    /// File of API keys for the ingest endpoints, one per line (`sha256:<hex>` for a key stored
    /// hashed; `#` starts a comment). Requests must carry one as `Authorization: Bearer KEY` or
    /// `X-Api-Key: KEY`. Reloaded on SIGHUP and when the file changes. Without it, `serve` only
    /// listens on a loopback address.
    #[arg(long, env = "PGLOGSINK_API_KEY_FILE", value_name = "PATH")]
    pub(crate) api_key_file: Option<PathBuf>,

    /// PEM certificate chain: serve HTTPS instead of HTTP (with --tls-key).
    #[arg(
        long,
        env = "PGLOGSINK_TLS_CERT",
        value_name = "PATH",
        requires = "tls_key"
    )]
    pub(crate) tls_cert: Option<PathBuf>,

    /// PEM private key of --tls-cert.
    #[arg(
        long,
        env = "PGLOGSINK_TLS_KEY",
        value_name = "PATH",
        requires = "tls_cert"
    )]
    pub(crate) tls_key: Option<PathBuf>,
}

impl IngestArgs {
    /// Check the flags against the listen address and load the keys and the
    /// certificate. A non-loopback address needs keys; without TLS there it
    /// is allowed (a TLS proxy in front is common) but said loudly.
    pub(crate) fn prepare(&self, listen: SocketAddr) -> Result<Prepared, String> {
        let keys = match &self.api_key_file {
            Some(path) => Some(ApiKeys::load(path)?),
            None if listen.ip().is_loopback() => None,
            None => {
                return Err(format!(
                    "refusing to listen on {listen} without API keys: the ingest endpoints \
                     would take logs from anyone who can reach it. Give --api-key-file FILE \
                     (one key per line), or listen on a loopback address such as 127.0.0.1"
                ))
            }
        };
        let tls = match (&self.tls_cert, &self.tls_key) {
            (Some(cert), Some(key)) => Some(super::http::tls::acceptor(cert, key)?),
            _ => None,
        };
        if tls.is_none() && !listen.ip().is_loopback() {
            tracing::warn!(
                "listening on {listen} over plain HTTP: API keys and logs travel in clear. Give \
                 --tls-cert and --tls-key, or put a TLS-terminating proxy in front"
            );
        }
        Ok(Prepared { keys, tls })
    }
}

fn parse_max_records(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(n) if (1..=10_000_000).contains(&n) => Ok(n),
        _ => Err("expected a whole number from 1 to 10000000".to_owned()),
    }
}

/// What `serve` needs from the ingest flags once checked.
pub(crate) struct Prepared {
    pub(crate) keys: Option<ApiKeys>,
    pub(crate) tls: Option<tokio_rustls::TlsAcceptor>,
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

/// 413 unless a request's `records` are within the per-request cap, `max`.
pub(crate) fn check_records(records: usize, max: usize) -> Result<(), Rejection> {
    if records <= max {
        return Ok(());
    }
    Err(Rejection::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        format!(
            "the request holds {records} log records, more than {max} \
             (--max-records-per-request): send smaller batches"
        ),
    ))
}

/// The ingest routes, for the service's router (whose state holds an
/// [`IngestState`]).
pub(crate) fn routes<S>(state: &S) -> Router<S>
where
    S: Clone + Send + Sync + 'static,
    IngestState: FromRef<S>,
{
    let keys = IngestState::from_ref(state).keys;
    // Each endpoint refuses in its own encoding, a 401 too.
    let guard = |render| {
        axum::middleware::from_fn_with_state(
            KeyGuard {
                keys: keys.clone(),
                challenge: "Bearer realm=\"pglogsink ingest\"",
                render,
            },
            authorize,
        )
    };
    Router::new()
        .route("/v1/logs", post(otlp::export))
        .route_layer(guard(otlp::refusal))
        .merge(
            Router::new()
                .route("/ingest/ndjson", post(ndjson::ingest))
                .route_layer(guard(as_json)),
        )
}

/// The viewer's routes behind the same API keys as ingest. A browser meets
/// the key as a Basic-auth prompt (any user name, the key as the
/// password); scripts send `Authorization: Bearer KEY` or `X-Api-Key`.
pub(crate) fn guarded_viewer(viewer: Router, ingest: &IngestState) -> Router {
    viewer.route_layer(axum::middleware::from_fn_with_state(
        KeyGuard {
            keys: ingest.keys.clone(),
            challenge: "Basic realm=\"pglogsink viewer\", charset=\"UTF-8\"",
            render: as_json,
        },
        authorize,
    ))
}

/// Which keys a set of routes asks for, and how a 401 asks for one.
#[derive(Clone)]
struct KeyGuard {
    /// `None`: no key is asked for (only allowed on a loopback address).
    keys: Option<ApiKeys>,
    /// The `WWW-Authenticate` challenge of a 401.
    challenge: &'static str,
    /// How the routes' answers write a refusal (for the request's headers).
    render: fn(Rejection, &HeaderMap) -> Response,
}

/// A refusal as `{"error": "..."}`.
fn as_json(rejection: Rejection, _: &HeaderMap) -> Response {
    rejection.into_response()
}

/// 401 unless the request carries a valid key (when keys are configured).
async fn authorize(State(guard): State<KeyGuard>, request: Request, next: Next) -> Response {
    let Some(keys) = &guard.keys else {
        return next.run(request).await;
    };
    match api_keys::presented(request.headers()) {
        Some(key) if keys.accepts(&key) => next.run(request).await,
        presented => {
            // Never the key itself: only whether one came.
            let why = if presented.is_some() {
                "the API key is not valid"
            } else {
                "an API key is required: send Authorization: Bearer KEY or X-Api-Key: KEY"
            };
            let rejection = Rejection::new(StatusCode::UNAUTHORIZED, why);
            let mut response = (guard.render)(rejection, request.headers());
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static(guard.challenge),
            );
            response
        }
    }
}

/// A refused request: its status and what to tell the client. Rendered as
/// `{"error": "..."}` unless the endpoint renders it its own way (OTLP).
#[derive(Debug)]
pub(crate) struct Rejection {
    pub(crate) status: StatusCode,
    pub(crate) message: String,
    /// Extra JSON members (the NDJSON endpoint's bad lines, counts).
    pub(crate) details: serde_json::Map<String, serde_json::Value>,
}

impl Rejection {
    pub(crate) fn new(status: StatusCode, message: impl Into<String>) -> Rejection {
        Rejection {
            status,
            message: message.into(),
            details: serde_json::Map::new(),
        }
    }

    pub(crate) fn bad_request(message: impl Into<String>) -> Rejection {
        Rejection::new(StatusCode::BAD_REQUEST, message)
    }

    /// `Retry-After` on a 503: the headers every rendering adds.
    pub(crate) fn headers(&self) -> Vec<(header::HeaderName, HeaderValue)> {
        if self.status == StatusCode::SERVICE_UNAVAILABLE {
            vec![(header::RETRY_AFTER, HeaderValue::from(RETRY_AFTER_SECS))]
        } else {
            Vec::new()
        }
    }
}

impl IntoResponse for Rejection {
    fn into_response(self) -> Response {
        let mut body = self.details.clone();
        body.insert("error".to_owned(), self.message.clone().into());
        let mut response = (self.status, axum::Json(body)).into_response();
        response.headers_mut().extend(self.headers());
        response
    }
}

/// One request's records on their way to the sink, all or none: the
/// request's memory (body, decoding) and then each record take their room
/// in the sink's queue budget as they come, and the records are queued
/// together at the end. Dropped before that, it queues nothing and gives
/// the room back.
pub(crate) struct Handover<'a> {
    batch: Batch<'a>,
    /// Bytes held for the request's own memory.
    held: u64,
    /// Records pushed so far.
    pushed: usize,
    /// Records the request holds, once known.
    expected: Option<usize>,
    queue_budget: u64,
}

/// Where a request's decoded records go: its [`Handover`] to the sink (a
/// `Vec`, in unit tests of the decoding).
pub(crate) trait Destination {
    /// Take a record.
    fn push(&mut self, record: Record) -> Result<(), Rejection>;
    /// Count `bytes` of memory the decoding holds.
    fn hold(&mut self, bytes: usize) -> Result<(), Rejection>;
}

impl Destination for Handover<'_> {
    fn push(&mut self, record: Record) -> Result<(), Rejection> {
        Handover::push(self, record)
    }

    fn hold(&mut self, bytes: usize) -> Result<(), Rejection> {
        Handover::hold(self, bytes)
    }
}

#[cfg(test)]
impl Destination for Vec<Record> {
    fn push(&mut self, record: Record) -> Result<(), Rejection> {
        Vec::push(self, record);
        Ok(())
    }

    fn hold(&mut self, _bytes: usize) -> Result<(), Rejection> {
        Ok(())
    }
}

/// What became of a request's records.
#[derive(Debug)]
pub(crate) struct Handed {
    /// Handed to the sink.
    pub(crate) accepted: usize,
    /// Not handed over (the sink stopped while they were being queued),
    /// and why.
    pub(crate) refused: Option<(usize, Rejection)>,
}

impl<'a> Handover<'a> {
    pub(crate) fn new(state: &'a IngestState) -> Handover<'a> {
        Handover {
            batch: state.logger.batch(),
            held: 0,
            pushed: 0,
            expected: None,
            queue_budget: state.queue_budget,
        }
    }

    /// Hold `bytes` of the budget for the request's own memory. A stopped
    /// sink holds nothing and refuses nothing here: the first record is
    /// refused (a request with none is a success, as OTLP asks).
    pub(crate) fn hold(&mut self, bytes: usize) -> Result<(), Rejection> {
        let before = self.batch.bytes();
        match self.batch.hold(bytes) {
            Ok(()) => {
                self.held += bytes as u64;
                Ok(())
            }
            Err(e) if e.is_closed() => {
                // The batch gave back all it held.
                self.held = 0;
                Ok(())
            }
            Err(e) => Err(self.refused(&e, before + bytes as u64)),
        }
    }

    /// How many records the request holds, once known (to tell a request
    /// the sink can never take from one it cannot take now).
    pub(crate) fn expect(&mut self, records: usize) {
        self.expected = Some(records);
    }

    /// Add a record; refused (and the request with it) when the sink has
    /// no room for it.
    pub(crate) fn push(&mut self, record: Record) -> Result<(), Rejection> {
        let before = self.batch.bytes();
        match self.batch.push(record) {
            Ok(()) => {
                self.pushed += 1;
                Ok(())
            }
            Err(e) => {
                // What the whole request would hold, at the same cost per
                // record as the records so far.
                let per_record = before.saturating_sub(self.held) / (self.pushed as u64).max(1);
                let left = self.expected.unwrap_or(0).saturating_sub(self.pushed) as u64;
                Err(self.refused(&e, before + per_record * left))
            }
        }
    }

    /// Queue the records pushed.
    pub(crate) fn send(self) -> Handed {
        let total = self.pushed;
        match self.batch.send() {
            Ok(()) => Handed {
                accepted: total,
                refused: None,
            },
            // The sink ended while the records were being queued (it never
            // does once they have their room, unless its task failed).
            Err(e) => {
                let refused = e.into_inner().len();
                Handed {
                    accepted: total - refused,
                    refused: Some((refused, unavailable("the log sink has stopped"))),
                }
            }
        }
    }

    /// The answer to a refusal; `need`: about what the request needs of
    /// the budget in all.
    fn refused(&self, error: &SendError<Vec<Record>>, need: u64) -> Rejection {
        let mut rejection = if error.is_full() && need > self.queue_budget {
            too_large_for_the_budget(self.queue_budget)
        } else {
            refused(error)
        };
        // Nothing was taken; how much was refused, once counted.
        rejection.details.insert("accepted".to_owned(), 0.into());
        if let Some(records) = self.expected {
            rejection
                .details
                .insert("refused".to_owned(), records.into());
        }
        rejection
    }
}

/// Every way the sink can refuse records: 503 with `Retry-After` when it
/// has stopped or has no room now, 413 when they need more than its whole
/// budget. The one place that maps them, for the ingest endpoints and the
/// demo route alike.
pub(crate) fn refused<T>(error: &SendError<T>) -> Rejection {
    if error.is_too_large() {
        return Rejection::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("{error}: send smaller requests"),
        );
    }
    unavailable(&format!("{error}"))
}

fn too_large_for_the_budget(budget: u64) -> Rejection {
    Rejection::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        format!(
            "the request needs more memory than the log sink's whole queue budget of {budget} \
             bytes (--max-queue-bytes); nothing was queued: send smaller requests"
        ),
    )
}

/// A 503 with `Retry-After` saying why.
fn unavailable(why: &str) -> Rejection {
    Rejection::new(
        StatusCode::SERVICE_UNAVAILABLE,
        format!("{why}: retry later"),
    )
}

/// A level from its name as other loggers and OTLP's `severity_text` spell
/// it, case-insensitively: syslog's and Python's names map to the nearest.
pub(crate) fn level_from_name(name: &str) -> Option<Level> {
    let level = match name.trim().to_ascii_lowercase().as_str() {
        "trace" | "verbose" | "finest" | "finer" => Level::Trace,
        "debug" | "fine" | "config" => Level::Debug,
        "info" | "information" | "informational" | "notice" => Level::Info,
        "warn" | "warning" => Level::Warn,
        "error" | "err" | "severe" | "fatal" | "critical" | "crit" | "alert" | "emerg"
        | "emergency" | "panic" => Level::Error,
        _ => return None,
    };
    Some(level)
}

/// The accepted level names, for error messages.
pub(crate) const LEVEL_NAMES: &str =
    "trace, debug, info (notice), warn (warning), error (err, fatal, critical)";

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use http_body_util::BodyExt;
    use std::time::Duration;
    use tower::ServiceExt;

    /// A sink on a database that refuses connections: records queue up.
    fn sink() -> (Logger, pglogsink::Worker) {
        let config = pglogsink::parse_url("postgres://nobody@127.0.0.1:1/none").unwrap();
        let pool = pglogsink::pool(config, 1).unwrap();
        let config = pglogsink::SinkConfig::default();
        pglogsink::spawn(pool, &config, pglogsink::CancellationToken::new()).unwrap()
    }

    async fn post(logger: &Logger, uri: &str, content_type: &str, body: &[u8]) -> Response {
        let state = IngestState {
            logger: logger.clone(),
            body: BodyLimits {
                max_bytes: 1 << 20,
                read_timeout: Duration::from_secs(5),
            },
            max_records: 1000,
            queue_budget: pglogsink::DEFAULT_MAX_QUEUE_BYTES as u64,
            keys: None,
        };
        let request = axum::http::Request::post(uri)
            .header(header::CONTENT_TYPE, content_type)
            .body(Body::from(body.to_vec()))
            .unwrap();
        routes(&state)
            .with_state(state)
            .oneshot(request)
            .await
            .unwrap()
    }

    const TWO_LINES: &[u8] = b"{\"message\":\"a\"}\n{\"message\":\"b\"}\n";
    const OTLP: &str =
        r#"{"resourceLogs":[{"scopeLogs":[{"logRecords":[{"body":{"stringValue":"x"}}]}]}]}"#;

    #[tokio::test]
    async fn a_running_sink_takes_every_record() {
        let (logger, worker) = sink();
        let response = post(&logger, "/ingest/ndjson", "application/x-ndjson", TWO_LINES).await;
        assert_eq!(response.status(), StatusCode::OK);
        let response = post(&logger, "/v1/logs", "application/json", OTLP.as_bytes()).await;
        assert_eq!(response.status(), StatusCode::OK);
        let report = worker.shutdown(Duration::from_millis(100)).await;
        assert_eq!(report.written + report.not_written + report.in_doubt, 3);
    }

    #[tokio::test]
    async fn a_stopped_sink_is_a_503_with_retry_after_and_takes_nothing() {
        let (logger, worker) = sink();
        let report = worker.shutdown(Duration::from_millis(50)).await;
        assert_eq!(report.written + report.not_written, 0);
        let response = post(&logger, "/ingest/ndjson", "application/x-ndjson", TWO_LINES).await;
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(response.headers()[header::RETRY_AFTER], "5");
        let body = response.into_body().collect().await.unwrap().to_bytes();
        let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(
            (json["accepted"].as_u64(), json["refused"].as_u64()),
            (Some(0), Some(2))
        );
        for content_type in ["application/json", "application/x-protobuf"] {
            let body: Vec<u8> = if content_type == "application/json" {
                OTLP.as_bytes().to_vec()
            } else {
                prost::Message::encode_to_vec(&otlp_json::decode(OTLP.as_bytes()).unwrap())
            };
            let response = post(&logger, "/v1/logs", content_type, &body).await;
            assert_eq!(
                response.status(),
                StatusCode::SERVICE_UNAVAILABLE,
                "{content_type}"
            );
            assert_eq!(response.headers()[header::RETRY_AFTER], "5");
        }
        // An empty request has no record to refuse: success, as OTLP asks.
        let response = post(&logger, "/v1/logs", "application/x-protobuf", b"").await;
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(logger.stats().queued, 0);
    }

    #[test]
    fn level_names_from_other_loggers() {
        assert_eq!(level_from_name("WARNING"), Some(Level::Warn));
        assert_eq!(level_from_name("Fatal"), Some(Level::Error));
        assert_eq!(level_from_name("notice"), Some(Level::Info));
        assert_eq!(level_from_name(" debug "), Some(Level::Debug));
        assert_eq!(level_from_name("loud"), None);
    }

    #[test]
    fn a_503_says_when_to_retry() {
        let response = Rejection::new(StatusCode::SERVICE_UNAVAILABLE, "x").into_response();
        assert_eq!(response.headers()[header::RETRY_AFTER], "5");
        let response = Rejection::bad_request("x").into_response();
        assert!(response.headers().get(header::RETRY_AFTER).is_none());
    }
}
