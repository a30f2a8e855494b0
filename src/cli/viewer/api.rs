//! The JSON API (`GET /api/logs`, `GET /api/histogram`; the live tail is
//! `tail.rs`), what its handlers share, and how a refused or failed query
//! is answered.

use std::time::{Duration, SystemTime};

use axum::extract::{RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use deadpool_postgres::{Object, Pool};
use pglogsink::admin::query::{Filter, Histogram, LogRow, Reader, TimeFormat};
use pglogsink::admin::unix_micros;
use pglogsink::tokio_postgres::{self, error::SqlState};
use pglogsink::{CancellationToken, Level, TableName};
use serde_json::{json, Value};

use super::params::{self, cursor_text, BadParam, Params};
use crate::cli::http::ApiKeys;

/// Connections of the viewer's own pool: its queries never wait for the
/// sink's connections, nor take them.
pub(crate) const POOL_SIZE: usize = 4;
/// Default of `--viewer-statement-timeout`.
pub(crate) const DEFAULT_STATEMENT_TIMEOUT: Duration = Duration::from_secs(5);
/// The histogram's range when the filter has no `since`: this long before
/// its end. An hour of a busy table is counted in well under a second (0.1 s
/// for 200,000 rows); a day of 5 million rows took 2.2 s (benches/viewer.rs).
const DEFAULT_HISTOGRAM_SPAN: Duration = Duration::from_secs(3_600);

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

/// `GET /api/logs`: the newest matching rows (or those just older than
/// `before`), newest first, and the `before` value of the next page.
pub(super) async fn logs(State(state): State<ViewerState>, RawQuery(query): RawQuery) -> Response {
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
pub(super) async fn histogram(
    State(state): State<ViewerState>,
    RawQuery(query): RawQuery,
) -> Response {
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
pub(super) async fn prepare(
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
pub(super) fn bad_request(bad: &BadParam) -> Response {
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
