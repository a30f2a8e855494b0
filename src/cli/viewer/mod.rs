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

mod params;
mod tail;

use std::time::{Duration, SystemTime};

use axum::extract::{RawQuery, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use deadpool_postgres::{Object, Pool};
use pglogsink::admin::unix_micros;
use pglogsink::query::{Filter, Histogram, LogRow, Reader, TimeFormat};
use pglogsink::tokio_postgres::{self, error::SqlState};
use pglogsink::{CancellationToken, Level, TableName};
use serde_json::{json, Value};

use crate::cli::http::{as_json, ApiKeys, KeyGuard};

use params::{cursor_text, BadParam, Params};

/// Connections of the viewer's own pool: its queries never wait for the
/// sink's connections, nor take them.
pub(crate) const POOL_SIZE: usize = 4;
/// Default of `--viewer-statement-timeout`.
pub(crate) const DEFAULT_STATEMENT_TIMEOUT: Duration = Duration::from_secs(5);
/// The histogram's range when the filter has no `since`: this long before
/// its end. An hour of a busy table is counted in well under a second (0.1 s
/// for 200,000 rows); a day of 5 million rows took 2.2 s (benches/viewer.rs).
const DEFAULT_HISTOGRAM_SPAN: Duration = Duration::from_secs(3_600);

const INDEX_HTML: &str = include_str!("assets/index.html");
const VIEWER_JS: &str = include_str!("assets/viewer.js");
const VIEWER_CSS: &str = include_str!("assets/viewer.css");

/// Scripts and styles from this origin only: no inline script, so a
/// logged message that became markup by mistake could still run nothing.
/// The `WWW-Authenticate` challenge of the viewer's 401: a browser asks
/// for the key.
const CHALLENGE: &str = "Basic realm=\"pglogsink viewer\", charset=\"UTF-8\"";

const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
                   connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// What the viewer's handlers share.
#[derive(Clone)]
pub(crate) struct ViewerState {
    /// The viewer's own pool (not the sink's). A connection is taken per
    /// query (and per poll of a live tail) and given back at once.
    pub(crate) pool: Pool,
    pub(crate) table: TableName,
    pub(crate) statement_timeout: Duration,
    /// Cancelled at shutdown: live tails end then, so they do not hold the
    /// server's graceful shutdown open.
    pub(crate) shutdown: CancellationToken,
    /// `None`: no key is asked for (only allowed on a loopback address).
    pub(crate) keys: Option<ApiKeys>,
}

/// The viewer's routes: `/`, its assets, and `/api/...`, each behind the
/// API keys.
pub(crate) fn router(state: ViewerState) -> Router {
    let guard = KeyGuard::new(state.keys.clone(), CHALLENGE, as_json);
    let routes = Router::new()
        .route("/", get(index))
        .route("/viewer.js", get(script))
        .route("/viewer.css", get(style))
        .route("/api/logs", get(logs))
        .route("/api/histogram", get(histogram))
        .route("/api/tail", get(tail::tail))
        .with_state(state);
    guard.guard(routes)
}

/// The page. Its filters are checked here too, so a broken link says what
/// is wrong with it instead of showing an empty page.
async fn index(RawQuery(query): RawQuery) -> Response {
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

async fn script() -> Response {
    asset(VIEWER_JS, "text/javascript; charset=utf-8")
}

async fn style() -> Response {
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

/// `GET /api/logs`: the newest matching rows (or those just older than
/// `before`), newest first, and the `before` value of the next page.
async fn logs(State(state): State<ViewerState>, RawQuery(query): RawQuery) -> Response {
    let (params, reader, filter, mut client) = match prepare(&state, query).await {
        Ok(prepared) => prepared,
        Err(response) => return response,
    };
    let rows = match params.before {
        None => reader.newest(&mut client, &filter, params.limit).await,
        Some(key) => reader.older(&mut client, &filter, params.limit, key).await,
    };
    let rows = match rows {
        Ok(rows) => rows,
        Err(e) => return query_failed(e, &state.table),
    };
    let next = (rows.len() as i64 == params.limit)
        .then(|| rows.last().map(|r| cursor_text(r.key())))
        .flatten();
    let rows: Vec<RowJson> = rows.iter().map(RowJson::from).collect();
    Json(json!({ "rows": rows, "next": next })).into_response()
}

/// `GET /api/histogram`: matching rows per time bucket and level, over the
/// filter's `since`..`until` (by default the last hour up to now).
async fn histogram(State(state): State<ViewerState>, RawQuery(query): RawQuery) -> Response {
    let (params, reader, filter, mut client) = match prepare(&state, query).await {
        Ok(prepared) => prepared,
        Err(response) => return response,
    };
    let until = filter.until.unwrap_or_else(SystemTime::now);
    let since = filter.since.unwrap_or_else(|| {
        until
            .checked_sub(DEFAULT_HISTOGRAM_SPAN)
            .unwrap_or(SystemTime::UNIX_EPOCH)
    });
    match reader
        .histogram(&mut client, &filter, since, until, params.buckets)
        .await
    {
        Ok(histogram) => Json(histogram_json(&histogram, since, until)).into_response(),
        Err(e) => query_failed(e, &state.table),
    }
}

/// Parse the query string, take a connection, resolve the filter: what
/// every API route starts with, or the answer that ends it.
async fn prepare(
    state: &ViewerState,
    query: Option<String>,
) -> Result<(Params, Reader, Filter, Object), Response> {
    let params = params::parse(query.as_deref().unwrap_or("")).map_err(|b| bad_request(&b))?;
    let mut client = state.pool.get().await.map_err(|e| {
        unavailable(&format!(
            "cannot reach the database: {}",
            pglogsink::Error::from(e)
        ))
    })?;
    let reader = reader(state, params.tz.as_deref());
    if params.tz.is_some() {
        if let Err(e) = reader.check_time_zone(&mut client).await {
            return Err(match e.code() {
                Some(&SqlState::INVALID_PARAMETER_VALUE) => bad_request(&BadParam::new(
                    "tz",
                    "PostgreSQL does not know this time zone",
                )),
                _ => query_failed(e, &state.table),
            });
        }
    }
    let filter = match params.filter(&mut client, &reader).await {
        Ok(Ok(filter)) => filter,
        Ok(Err(bad)) => return Err(bad_request(&bad)),
        Err(e) => return Err(query_failed(e, &state.table)),
    };
    Ok((params, reader, filter, client))
}

/// A reader with the viewer's settings: RFC 3339 times in UTC (the page
/// shows them in the browser's zone), the statement timeout.
fn reader(state: &ViewerState, tz: Option<&str>) -> Reader {
    Reader::new(state.table.clone())
        .time_format(TimeFormat::Rfc3339Utc)
        .time_zone(tz.unwrap_or("UTC"))
        .statement_timeout(state.statement_timeout)
}

/// One row as the API returns it; `fields` is an object (or null), written
/// as PostgreSQL gave it rather than parsed and written again (a live tail
/// sends thousands of rows a second).
#[derive(serde::Serialize)]
pub(crate) struct RowJson<'a> {
    id: i64,
    timestamp: &'a str,
    micros: i64,
    level: &'a str,
    target: &'a str,
    message: &'a str,
    thread_id: Option<i64>,
    fields: Option<&'a serde_json::value::RawValue>,
}

impl<'a> From<&'a LogRow> for RowJson<'a> {
    fn from(row: &'a LogRow) -> RowJson<'a> {
        RowJson {
            id: row.id,
            timestamp: &row.timestamp,
            micros: row.micros,
            level: &row.level,
            target: &row.target,
            message: &row.message,
            thread_id: row.thread_id,
            fields: row
                .fields
                .as_deref()
                .and_then(|f| serde_json::from_str(f).ok()),
        }
    }
}

fn histogram_json(h: &Histogram, since: SystemTime, until: SystemTime) -> Value {
    let levels: Vec<&str> = Level::ALL.iter().map(|l| l.as_str()).collect();
    json!({
        "since": unix_micros(since),
        "until": unix_micros(until),
        "start": h.start_micros,
        "bucket": h.bucket_micros,
        "levels": levels,
        "counts": h.counts,
        "total": h.total(),
    })
}

/// 400, naming the parameter.
fn bad_request(bad: &BadParam) -> Response {
    let body = json!({
        "error": format!("invalid value for {}: {}", bad.name, bad.message),
        "parameter": bad.name,
    });
    (StatusCode::BAD_REQUEST, Json(body)).into_response()
}

fn unavailable(message: &str) -> Response {
    (
        StatusCode::SERVICE_UNAVAILABLE,
        Json(json!({ "error": message })),
    )
        .into_response()
}

/// What a failed query means for the caller: the statement timeout and an
/// unreachable database are worth trying again (503), a missing table is a
/// 404; anything else is ours (500).
pub(crate) fn query_failed(e: tokio_postgres::Error, table: &TableName) -> Response {
    match e.code().cloned() {
        Some(SqlState::QUERY_CANCELED) => unavailable(
            "the query ran longer than the viewer's statement timeout \
             (--viewer-statement-timeout); narrow the filter, e.g. with since or level",
        ),
        Some(SqlState::UNDEFINED_TABLE) => (
            StatusCode::NOT_FOUND,
            Json(json!({ "error": format!("table {table} does not exist") })),
        )
            .into_response(),
        _ => {
            let e = pglogsink::Error::from(e);
            if e.is_transient() {
                unavailable(&format!("the database is not available: {e}"))
            } else {
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    Json(json!({ "error": format!("reading table {table}: {e}") })),
                )
                    .into_response()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::Request;
    use http_body_util::BodyExt;
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
