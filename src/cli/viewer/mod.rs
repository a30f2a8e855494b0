//! The web viewer of `serve`: a single page (`GET /`, its script and style
//! embedded in the binary) over a JSON API (`GET /api/logs`,
//! `GET /api/histogram`, `GET /api/tail`) that scripts can use too.
//!
//! Every query goes through the library's query layer (`pglogsink::query`),
//! the one `pglogsink logs` uses: a read-only transaction, bound values
//! only, and a statement timeout (`--viewer-statement-timeout`), so that a
//! careless filter cannot load the database for long. The page renders
//! every logged text with `textContent`, never as markup, and is served
//! with a Content-Security-Policy that allows no inline script.
//!
//! Its routes ask for the same API keys as ingest (`--api-key-file`), which
//! a browser meets as a Basic-auth prompt (any user name, the key as the
//! password); scripts send `Authorization: Bearer KEY` or `X-Api-Key`.

mod api;
mod page;
mod params;
mod tail;

use axum::routing::get;
use axum::Router;

use crate::cli::http::{as_json, KeyGuard};

pub(crate) use api::{ViewerState, DEFAULT_STATEMENT_TIMEOUT, POOL_SIZE};

/// The `WWW-Authenticate` challenge of the viewer's 401: a browser asks
/// for the key.
const CHALLENGE: &str = "Basic realm=\"pglogsink viewer\", charset=\"UTF-8\"";

/// The viewer's routes: `/`, its assets, and `/api/...`, each behind the
/// API keys.
pub(crate) fn router(state: ViewerState) -> Router {
    let guard = KeyGuard::new(state.keys.clone(), CHALLENGE, as_json);
    let routes = Router::new()
        .route("/", get(page::index))
        .route("/viewer.js", get(page::script))
        .route("/viewer.css", get(page::style))
        .route("/api/logs", get(api::logs))
        .route("/api/histogram", get(api::histogram))
        .route("/api/tail", get(tail::tail))
        .with_state(state);
    guard.guard(routes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::Request;
    use axum::http::{header, StatusCode};
    use http_body_util::BodyExt;
    use pglogsink::{CancellationToken, TableName};
    use serde_json::Value;
    use tower::ServiceExt;

    /// A viewer whose database refuses connections.
    fn viewer() -> Router {
        router(ViewerState {
            pool: crate::cli::test_fixtures::unreachable_pool(),
            table: TableName::parse("log").unwrap(),
            statement_timeout: DEFAULT_STATEMENT_TIMEOUT,
            shutdown: CancellationToken::new(),
            keys: None,
        })
    }

    async fn get(uri: &str) -> (StatusCode, String, String) {
        let response = viewer()
            .oneshot(Request::get(uri).body(Body::empty()).unwrap())
            .await
            .unwrap();
        let status = response.status();
        let content_type = response
            .headers()
            .get(header::CONTENT_TYPE)
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        (
            status,
            content_type,
            String::from_utf8_lossy(&body).into_owned(),
        )
    }

    #[tokio::test]
    async fn the_page_and_its_assets_are_embedded() {
        let (status, content_type, body) = get("/?level=warn&field=status%3D500").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(content_type, "text/html; charset=utf-8");
        assert!(
            body.contains(r#"<script src="viewer.js"></script>"#),
            "{body}"
        );
        let (status, content_type, body) = get("/viewer.js").await;
        assert_eq!(
            (status, content_type.as_str()),
            (StatusCode::OK, "text/javascript; charset=utf-8")
        );
        assert!(!body.contains("innerHTML"), "data must never become markup");
        let (status, _, _) = get("/viewer.css").await;
        assert_eq!(status, StatusCode::OK);
    }

    #[tokio::test]
    async fn a_bad_parameter_is_a_400_before_any_query() {
        for uri in [
            "/?level=loud",
            "/api/logs?level=loud",
            "/api/histogram?level=loud",
            "/api/tail?level=loud",
        ] {
            let (status, content_type, body) = get(uri).await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{uri}: {body}");
            assert_eq!(content_type, "application/json");
            let json: Value = serde_json::from_str(&body).unwrap();
            assert_eq!(json["parameter"], "level", "{uri}: {body}");
        }
    }

    #[tokio::test]
    async fn an_unreachable_database_is_a_503() {
        let (status, _, body) = get("/api/logs?level=warn").await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
        let json: Value = serde_json::from_str(&body).unwrap();
        assert!(
            json["error"]
                .as_str()
                .unwrap()
                .starts_with("cannot reach the database"),
            "{body}"
        );
    }
}
