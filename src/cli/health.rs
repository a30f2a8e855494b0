//! `GET /readyz`: ready when the sink takes records and the database
//! answers. (`/healthz` only says the process is alive.)

use std::time::Duration;

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use pglogsink::{Error, Logger};

/// How long the readiness probe waits for `SELECT 1`.
const PROBE_TIMEOUT: Duration = Duration::from_secs(1);

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
