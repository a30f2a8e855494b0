//! Ingest over HTTP for services written in anything: OTLP/HTTP logs
//! (`POST /v1/logs`) and newline-delimited JSON (`POST /ingest/ndjson`),
//! decoded into [`Record`]s and handed to the same [`Logger`] as the
//! service's own lines, so they get the sink's guarantees (spool,
//! exactly-once ledger, poison-row isolation).
//!
//! The contract of every answer:
//! - 2xx: every record the answer counts as accepted was handed to the sink
//!   (`Logger::send` returned `Ok`), as if the caller had called `log()`.
//! - 4xx: nothing was handed over. Bad input is named (line, field, limit).
//! - 503 with `Retry-After`: the sink cannot take records now; those it took
//!   before it refused are counted in the answer (none, unless it stopped
//!   while the body was being handed over).

mod api_keys;
mod body;
mod hex;
pub(crate) mod https;
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
use pglogsink::{Level, Logger, Record};

pub(crate) use api_keys::ApiKeys;

/// Default `--max-body-bytes`: 16 MiB, after decompression.
pub(crate) const DEFAULT_MAX_BODY: &str = "16MiB";

/// What `Retry-After` says when the sink cannot take records.
const RETRY_AFTER_SECS: u64 = 5;

#[derive(Debug, Clone, clap::Args)]
pub(crate) struct IngestArgs {
    /// Largest ingest request body, in bytes, both as sent and after gzip decompression
    /// (suffixes K, M, G accepted); a larger one is refused with 413.
    #[arg(long, env = "PGLOGSINK_MAX_BODY_BYTES", default_value = DEFAULT_MAX_BODY,
          value_parser = super::sink_args::parse_bytes, value_name = "BYTES")]
    pub(crate) max_body_bytes: usize,

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
            (Some(cert), Some(key)) => Some(https::acceptor(cert, key)?),
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

/// What `serve` needs from the ingest flags once checked.
pub(crate) struct Prepared {
    pub(crate) keys: Option<ApiKeys>,
    pub(crate) tls: Option<tokio_rustls::TlsAcceptor>,
}

/// What the ingest handlers share.
#[derive(Clone, Debug)]
pub(crate) struct IngestState {
    pub(crate) logger: Logger,
    pub(crate) max_body_bytes: usize,
    /// `None`: no key is asked for (only allowed on a loopback address).
    pub(crate) keys: Option<ApiKeys>,
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

/// What became of a body's records.
#[derive(Debug)]
pub(crate) struct Handed {
    /// Handed to the sink.
    pub(crate) accepted: usize,
    /// Not handed over (the sink refused the first of them), and why.
    pub(crate) refused: Option<(usize, Rejection)>,
}

/// Hand the records to the sink in order, stopping at the first it
/// refuses: those after it are refused too, so that a retry of the rest
/// keeps their order.
pub(crate) fn hand_over(logger: &Logger, records: Vec<Record>) -> Handed {
    let total = records.len();
    for (i, record) in records.into_iter().enumerate() {
        if let Err(refused) = logger.send(record) {
            return Handed {
                accepted: i,
                refused: Some((total - i, unavailable(&refused))),
            };
        }
    }
    Handed {
        accepted: total,
        refused: None,
    }
}

/// Every way `Logger::send` can refuse a record is a 503 with `Retry-After`:
/// the sink stopped (shutdown, fatal error), or it has no room in memory or
/// spool (`SendError::Full`). The one place that maps them, for the ingest
/// endpoints and the demo route alike.
pub(crate) fn unavailable(refused: &pglogsink::SendError) -> Rejection {
    Rejection::new(
        StatusCode::SERVICE_UNAVAILABLE,
        format!("{refused}: retry later"),
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
            max_body_bytes: 1 << 20,
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
