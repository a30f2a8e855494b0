//! Request ids and the per-request span of `serve`.
//!
//! Every request runs inside a `tracing` span (target `http`) carrying its
//! request id, method and path, so every row it causes carries the id: the
//! rows of `tracing` events through the span, and the handler's own
//! `Logger` record through the [`RequestId`] extension. The id comes from
//! the `x-request-id` header or is generated, and is echoed in the response.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::Instant;

use axum::extract::Request;
use axum::http::{HeaderMap, HeaderValue};
use axum::middleware::Next;
use axum::response::Response;
use tracing::Instrument;

/// The request and response header holding the request id.
pub(crate) const HEADER: &str = "x-request-id";

/// Longest accepted incoming id; a longer one is replaced by a generated id.
const MAX_LEN: usize = 128;

/// The id of the request being handled, in the request's extensions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RequestId(pub(crate) String);

impl RequestId {
    /// The caller's `x-request-id` if it is 1 to 128 visible ASCII
    /// characters, else a new one.
    pub(crate) fn from_headers(headers: &HeaderMap) -> RequestId {
        headers
            .get(HEADER)
            .and_then(|v| v.to_str().ok())
            .filter(|id| is_acceptable(id))
            .map_or_else(RequestId::generate, |id| RequestId(id.to_owned()))
    }

    /// `<12 hex digits fixed for this process>-<counter in hex>`: unique
    /// within the process by the counter, and across processes by the
    /// random prefix.
    pub(crate) fn generate() -> RequestId {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        RequestId(format!("{}-{n:x}", process_prefix()))
    }
}

impl fmt::Display for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

fn is_acceptable(id: &str) -> bool {
    (1..=MAX_LEN).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_graphic())
}

/// 48 random bits, drawn once from the operating system (ring's
/// `SystemRandom`); where that fails, the process id and start time mixed.
fn process_prefix() -> &'static str {
    static PREFIX: OnceLock<String> = OnceLock::new();
    PREFIX.get_or_init(|| format!("{:012x}", pglogsink::admin::random::id() & 0xffff_ffff_ffff))
}

/// Paths polled by probes and scrapers: logged at `debug`, so that they do
/// not fill the Log table.
fn is_probe(path: &str) -> bool {
    matches!(path, "/healthz" | "/readyz" | "/metrics")
}

/// Middleware: run the request in its span, echo its id, and log its outcome
/// (status and duration) through `tracing` with target `http`.
pub(crate) async fn trace_request(mut request: Request, next: Next) -> Response {
    let started = Instant::now();
    let id = RequestId::from_headers(request.headers());
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let span = tracing::info_span!(
        target: "http",
        "request",
        request_id = %id,
        method = %method,
        path = %path,
    );
    let header = HeaderValue::from_str(&id.0).ok();
    request.extensions_mut().insert(id);
    let mut response = next.run(request).instrument(span.clone()).await;

    let status = response.status().as_u16();
    // Whole microseconds, so the stored value reads 0.085 rather than 0.08500000001.
    let duration_ms = started.elapsed().as_micros() as f64 / 1000.0;
    span.in_scope(|| {
        if is_probe(&path) {
            tracing::debug!(target: "http", status, duration_ms, "{method} {path} {status}");
        } else if status >= 500 {
            tracing::warn!(target: "http", status, duration_ms, "{method} {path} {status}");
        } else {
            // One access line per request would double the rows of the demo
            // (its handler already logs one): stored only when the table
            // filter asks for it (PGLOGSINK_TABLE_FILTER=info,http=debug).
            tracing::debug!(target: "http", status, duration_ms, "{method} {path} {status}");
        }
    });
    if let Some(header) = header {
        response.headers_mut().insert(HEADER, header);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(id: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(HEADER, HeaderValue::from_str(id).unwrap());
        headers
    }

    #[test]
    fn an_acceptable_incoming_id_is_kept_else_one_is_generated() {
        assert_eq!(RequestId::from_headers(&headers("abc-123")).0, "abc-123");
        for bad in ["", "has space", &"x".repeat(129)] {
            let id = RequestId::from_headers(&headers(bad)).0;
            assert_ne!(id, bad);
            assert!(is_acceptable(&id), "{id}");
        }
        assert!(is_acceptable(&RequestId::from_headers(&HeaderMap::new()).0));
    }

    #[test]
    fn generated_ids_share_the_process_prefix_and_never_repeat() {
        let a = RequestId::generate().0;
        let b = RequestId::generate().0;
        assert_ne!(a, b);
        let (prefix_a, _) = a.split_once('-').unwrap();
        let (prefix_b, _) = b.split_once('-').unwrap();
        assert_eq!(prefix_a, prefix_b);
        assert_eq!(prefix_a.len(), 12);
        assert!(prefix_a.bytes().all(|c| c.is_ascii_hexdigit()));
    }
}
