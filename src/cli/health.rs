//! `GET /readyz`: ready when the sink takes records and the database
//! answers. (`/healthz` only says the process is alive.)

use std::time::Duration;

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use pglogsink::{Error, Logger, SendError};

/// How long the readiness probe waits for `SELECT 1`.
const PROBE_TIMEOUT: Duration = Duration::from_secs(1);

/// What a client is told when the sink did not take its record: 503 with
/// `Retry-After` (which HTTP clients and OpenTelemetry exporters honour).
pub(crate) fn not_taken(refused: &SendError) -> Response {
    let (retry_after, message) = match refused {
        SendError::Full(_) => (
            "5",
            "the log sink is full (the database is not keeping up and the spool is at its limit); retry later\n",
        ),
        _ => (
            "10",
            "logging has stopped; the service is shutting down\n",
        ),
    };
    (
        StatusCode::SERVICE_UNAVAILABLE,
        [(axum::http::header::RETRY_AFTER, retry_after)],
        message,
    )
        .into_response()
}

/// 200 `{"ready": true}`, or 503 with the reason.
pub(crate) async fn readyz(logger: &Logger, pool: &deadpool_postgres::Pool) -> Response {
    match not_ready_because(logger, pool).await {
        None => Json(serde_json::json!({ "ready": true })).into_response(),
        Some(reason) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(serde_json::json!({ "ready": false, "reason": reason })),
        )
            .into_response(),
    }
}

async fn not_ready_because(logger: &Logger, pool: &deadpool_postgres::Pool) -> Option<String> {
    let stats = logger.stats();
    let last_error = || logger.last_error().unwrap_or_default();
    if stats.closed {
        return Some(format!("the log sink has stopped: {}", last_error()));
    }
    if let Some(reason) = logger.full_reason() {
        return Some(format!("the log sink is full: {reason}"));
    }
    if stats.retrying {
        return Some(format!(
            "the database does not accept writes; the sink is retrying ({})",
            last_error()
        ));
    }
    let probe = async {
        let client = pool.get().await.map_err(Error::from)?;
        client
            .simple_query("SELECT 1")
            .await
            .map(|_| ())
            .map_err(Error::from)
    };
    match tokio::time::timeout(PROBE_TIMEOUT, probe).await {
        Ok(Ok(())) => None,
        Ok(Err(e)) => Some(format!("the database did not answer: {e}")),
        Err(_) => Some(format!(
            "the database did not answer within {} s",
            PROBE_TIMEOUT.as_secs()
        )),
    }
}
