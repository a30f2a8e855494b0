//! A refused request as every route answers it: a status and a message,
//! `{"error": "..."}` with any extra members, and `Retry-After` on a 503.
//! Also the one mapping of "the sink took nothing" (its
//! [`SendError`]) to an answer, for the ingest endpoints and the demo route
//! alike.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use pglogsink::SendError;

/// What `Retry-After` says when the sink cannot take records.
const RETRY_AFTER_SECS: u64 = 5;

/// A refused request: its status and what to tell the client. Rendered as
/// `{"error": "..."}` unless the endpoint renders it its own way (OTLP).
#[derive(Debug)]
pub(crate) struct Rejection {
    pub(crate) status: StatusCode,
    pub(crate) message: String,
    /// Extra JSON members (the NDJSON endpoint's bad lines, counts; the
    /// viewer's parameter at fault).
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

    /// A 503 saying why, to be retried later.
    pub(crate) fn unavailable(why: &str) -> Rejection {
        Rejection::new(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("{why}: retry later"),
        )
    }

    /// Every way the sink can refuse records: 503 with `Retry-After` when
    /// it has stopped or has no room now, 413 when they need more than its
    /// whole budget.
    pub(crate) fn sink_refused<T>(error: &SendError<T>) -> Rejection {
        if error.is_too_large() {
            return Rejection::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("{error}: send smaller requests"),
            );
        }
        Rejection::unavailable(&format!("{error}"))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_503_says_when_to_retry() {
        let response = Rejection::new(StatusCode::SERVICE_UNAVAILABLE, "x").into_response();
        assert_eq!(response.headers()[header::RETRY_AFTER], "5");
        let response = Rejection::bad_request("x").into_response();
        assert!(response.headers().get(header::RETRY_AFTER).is_none());
    }
}
