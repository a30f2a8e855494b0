//! Ingest over HTTP for services written in anything: OTLP/HTTP logs
//! (`POST /v1/logs`) and newline-delimited JSON (`POST /ingest/ndjson`),
//! decoded into [`Record`](pglogsink::Record)s and handed to the same
//! [`Logger`](pglogsink::Logger) as the
//! service's own lines, so they get the sink's guarantees (spool,
//! exactly-once ledger, poison-row isolation).
//!
//! The contract of every answer:
//! - 2xx: every record the answer counts as accepted was handed to the sink,
//!   as if the caller had called `log()`.
//! - 4xx: nothing was handed over. Bad input is named (line, field, limit).
//! - 503 with `Retry-After`: the sink cannot take the records now, and took
//!   none of them: a request's records are queued all together or not at
//!   all ([`Handover`](handover::Handover)), so a client that retries the whole body duplicates
//!   nothing.
//!
//! A request's memory counts in the sink's queue budget from its first
//! byte: its body as read and decompressed, what decoding it takes, and its
//! records, so that requests in flight and records queued together stay
//! within the budget (`--max-queue-bytes`).

mod body;
mod decode_cost;
mod handover;
mod ndjson;
mod otlp;
mod otlp_json;
mod settings;
mod timestamp;

use axum::extract::FromRef;
use axum::routing::post;
use axum::Router;

use crate::cli::http::{as_json, KeyGuard};

pub(crate) use settings::{IngestArgs, IngestState};

/// The `WWW-Authenticate` challenge of the ingest endpoints' 401.
const CHALLENGE: &str = "Bearer realm=\"pglogsink ingest\"";

/// The ingest routes, each behind the API keys, for the service's router
/// (whose state holds an [`IngestState`]).
pub(crate) fn routes<S>(state: &S) -> Router<S>
where
    S: Clone + Send + Sync + 'static,
    IngestState: FromRef<S>,
{
    let keys = IngestState::from_ref(state).keys;
    // Each endpoint refuses in its own encoding, a 401 too.
    let otlp = KeyGuard::new(keys.clone(), CHALLENGE, otlp::refusal)
        .guard(Router::new().route("/v1/logs", post(otlp::export)));
    let ndjson = KeyGuard::new(keys, CHALLENGE, as_json)
        .guard(Router::new().route("/ingest/ndjson", post(ndjson::ingest)));
    otlp.merge(ndjson)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::test_fixtures::unreachable_sink as sink;
    use axum::body::Body;
    use axum::http::{header, StatusCode};
    use axum::response::Response;
    use http_body_util::BodyExt;
    use pglogsink::Logger;
    use std::time::Duration;
    use tower::ServiceExt;

    async fn post(logger: &Logger, uri: &str, content_type: &str, body: &[u8]) -> Response {
        let state = IngestState::for_tests(logger.clone());
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
}
