//! The page: `GET /` and its script and style, embedded in the binary,
//! served with a Content-Security-Policy that allows no inline script.

use axum::extract::RawQuery;
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};

use super::api::bad_request;
use super::params;

const INDEX_HTML: &str = include_str!("assets/index.html");
const VIEWER_JS: &str = include_str!("assets/viewer.js");
const VIEWER_CSS: &str = include_str!("assets/viewer.css");

/// Scripts and styles from this origin only: no inline script, so a
/// logged message that became markup by mistake could still run nothing.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
                   connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// The page. Its filters are checked here too, so a broken link says what
/// is wrong with it instead of showing an empty page.
pub(super) async fn index(RawQuery(query): RawQuery) -> Response {
    if let Err(bad) = params::parse(query.as_deref().unwrap_or("")) {
        return bad_request(&bad);
    }
    let mut response = asset(INDEX_HTML, "text/html; charset=utf-8");
    response.headers_mut().insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    response
}

pub(super) async fn script() -> Response {
    asset(VIEWER_JS, "text/javascript; charset=utf-8")
}

pub(super) async fn style() -> Response {
    asset(VIEWER_CSS, "text/css; charset=utf-8")
}

fn asset(body: &'static str, content_type: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}
