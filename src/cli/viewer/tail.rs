//! `GET /api/tail`: the live tail, as Server-Sent Events. The query layer's
//! `Follower` finds the matching rows committed since its last poll (none
//! missed, none twice); each poll's rows go out as one `rows` event, a JSON
//! array in id order, so a burst of thousands of rows is a few events.
//!
//! The first event holds the newest `limit` matching rows, so a page that
//! loaded its rows a moment before misses nothing in between (it skips the
//! ids it already shows). A connection is taken for each poll and given
//! back, so an open tail holds none; a failed poll sends a `failure` event
//! and the tail tries again at the next one.

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::{RawQuery, State};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::stream::{self, Stream};
use pglogsink::admin::query::{Follower, LogRow};
use pglogsink::CancellationToken;

use super::api::{bad_request, prepare, query_failed, RowJson, ViewerState};
use super::params::BadParam;

/// How often a tail asks for new rows.
const POLL_INTERVAL: Duration = Duration::from_millis(250);

pub(super) async fn tail(State(state): State<ViewerState>, RawQuery(query): RawQuery) -> Response {
    let (params, reader, filter, mut client) = match prepare(&state, query).await {
        Ok(prepared) => prepared,
        Err(response) => return response,
    };
    if filter.until.is_some() {
        return bad_request(&BadParam::new(
            "until",
            "a live tail shows rows as they are written: it cannot end before now",
        ));
    }
    let (newest, follower) = match reader.follow(&mut client, &filter, params.limit).await {
        Ok(started) => started,
        Err(e) => return query_failed(e, &state.table),
    };
    drop(client);
    let mut newest = newest;
    newest.reverse();
    let first = rows_event(&newest);
    let polls = polls(state, follower);
    let events = stream::once(async move { Ok(first) });
    Sse::new(futures_util::StreamExt::chain(events, polls))
        .keep_alive(KeepAlive::default())
        .into_response()
}

/// Poll after poll until the client goes away (the stream is dropped) or
/// the service shuts down.
fn polls(
    state: ViewerState,
    follower: Follower,
) -> impl Stream<Item = Result<Event, Infallible>> + Send {
    struct Tail {
        state: ViewerState,
        follower: Follower,
        shutdown: CancellationToken,
    }
    let shutdown = state.shutdown.clone();
    let tail = Tail {
        state,
        follower,
        shutdown,
    };
    stream::unfold(tail, |mut tail| async move {
        loop {
            let pause = tail.follower.pause(POLL_INTERVAL);
            tokio::select! {
                () = tail.shutdown.cancelled() => return None,
                () = tokio::time::sleep(pause) => {}
            }
            match poll(&tail.state, &mut tail.follower).await {
                Ok(rows) if rows.is_empty() => continue,
                Ok(rows) => return Some((Ok(rows_event(&rows)), tail)),
                Err(message) => {
                    let event = Event::default().event("failure").data(message);
                    return Some((Ok(event), tail));
                }
            }
        }
    })
}

async fn poll(state: &ViewerState, follower: &mut Follower) -> Result<Vec<LogRow>, String> {
    let mut client = state
        .pool
        .get()
        .await
        .map_err(|e| format!("cannot reach the database: {}", pglogsink::Error::from(e)))?;
    follower.poll(&mut client).await.map_err(|e| {
        format!(
            "reading table {}: {}",
            state.table,
            pglogsink::Error::from(e)
        )
    })
}

/// One `rows` event: the rows as a JSON array, oldest first.
fn rows_event(rows: &[LogRow]) -> Event {
    let rows: Vec<RowJson> = rows.iter().map(RowJson::from).collect();
    let data = serde_json::to_string(&rows).unwrap_or_else(|_| "[]".to_owned());
    Event::default().event("rows").data(data)
}
