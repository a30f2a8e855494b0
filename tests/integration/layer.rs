//! The tracing layer against a real PostgreSQL: the exact row an event
//! inside nested spans becomes, field types included; the pool's own
//! warnings about a killed connection never become rows.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use libtest_mimic::Trial;
use pglogsink::{CancellationToken, PgLogLayer, SinkConfig};
use serde_json::json;
use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::layer::{Context, Layer};
use tracing_subscriber::prelude::*;
use tracing_subscriber::EnvFilter;

use crate::common::{async_trial, check, config, fresh_table, pool};

pub fn trials() -> Vec<Trial> {
    vec![
        async_trial(
            "layer::an_event_in_nested_spans_becomes_exactly_this_row",
            an_event_in_nested_spans_becomes_exactly_this_row,
        ),
        // One thread: the pool's connection task, which logs the connection
        // error, must run where the thread-local subscriber is set.
        Trial::test(
            "layer::the_pools_warnings_about_a_killed_connection_never_become_rows",
            || {
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()?
                    .block_on(the_pools_warnings_about_a_killed_connection_never_become_rows())
            },
        ),
    ]
}

#[derive(Debug)]
#[allow(dead_code)] // read through Debug only
struct Cart {
    items: u32,
}

async fn an_event_in_nested_spans_becomes_exactly_this_row() -> Result<(), libtest_mimic::Failed> {
    let pool = pool()?;
    let table = fresh_table("layer");
    pglogsink::migrate(&pool, &table).await?;
    let config = SinkConfig {
        table: table.to_string(),
        ..SinkConfig::default()
    };
    let (logger, worker) = pglogsink::spawn(pool.clone(), &config, CancellationToken::new())?;

    // As an application sets it up: a global filter, fmt, and the layer
    // with a filter of its own. `with_default` keeps it to this thread.
    let subscriber = tracing_subscriber::registry()
        .with(EnvFilter::new("debug"))
        .with(tracing_subscriber::fmt::layer().with_writer(std::io::sink))
        .with(PgLogLayer::new(logger).with_filter(LevelFilter::INFO));
    tracing::subscriber::with_default(subscriber, || {
        let request = tracing::info_span!("request", request_id = "r1", user = "ann", attempt = 1);
        let _request = request.enter();
        let step = tracing::info_span!("step", user = "bob");
        let _step = step.enter();
        let cart = Cart { items: 3 };
        tracing::info!(
            answer = 42,
            ratio = 0.5,
            ok = true,
            name = "x",
            ?cart,
            "hello"
        );
        tracing::debug!("below the layer's filter");
        tracing::warn!(target: "pglogsink", "the sink's own diagnostics");
        tracing::warn!(target: "tokio_postgres::connection", "driver noise");
    });

    let report = worker.shutdown(Duration::from_secs(10)).await;
    check(report.is_complete() && report.written == 1, || {
        format!("{report:?}")
    })?;
    let client = pool.get().await?;
    let rows = client
        .query(
            &format!(
                "SELECT level::text, target, message, fields,
                        (SELECT jsonb_object_agg(key, jsonb_typeof(value)) FROM jsonb_each(fields))
                   FROM {}",
                table.quoted()
            ),
            &[],
        )
        .await?;
    check(rows.len() == 1, || format!("{} rows", rows.len()))?;
    let row = &rows[0];
    let (level, target, message): (String, String, String) = (row.get(0), row.get(1), row.get(2));
    let fields: serde_json::Value = row.get(3);
    let types: serde_json::Value = row.get(4);
    check(level == "info", || format!("level {level}"))?;
    check(target == "integration::layer", || {
        format!("target {target}")
    })?;
    check(message == "hello", || format!("message {message:?}"))?;
    check(
        fields
            == json!({
                "answer": 42,
                "ratio": 0.5,
                "ok": true,
                "name": "x",
                "cart": "Cart { items: 3 }",
                "request_id": "r1",
                "user": "bob",
                "attempt": 1,
            }),
        || format!("fields {fields}"),
    )?;
    check(
        types
            == json!({
                "answer": "number",
                "ratio": "number",
                "ok": "boolean",
                "name": "string",
                "cart": "string",
                "request_id": "string",
                "user": "string",
                "attempt": "number",
            }),
        || format!("types {types}"),
    )
}

/// Every event that reaches the subscriber, as (target, message), so the
/// test can tell that deadpool really spoke.
#[derive(Clone, Default)]
struct Seen(Arc<Mutex<Vec<(String, String)>>>);

impl Seen {
    fn has(&self, target: &str, message_start: &str) -> bool {
        self.0
            .lock()
            .unwrap()
            .iter()
            .any(|(t, m)| t == target && m.starts_with(message_start))
    }
}

impl<S: Subscriber> Layer<S> for Seen {
    fn on_event(&self, event: &Event<'_>, _: Context<'_, S>) {
        struct Message(String);
        impl Visit for Message {
            fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
                if field.name() == "message" {
                    self.0 = format!("{value:?}");
                }
            }
        }
        let mut message = Message(String::new());
        event.record(&mut message);
        let target = event.metadata().target().to_owned();
        self.0.lock().unwrap().push((target, message.0));
    }
}

/// deadpool-postgres warns under the dotted target `deadpool.postgres` when
/// a pooled connection dies ("Connection error: ...", from its connection
/// task) and when the pool then finds it closed ("Connection could not be
/// recycled: ..."). Both are produced for real here, by terminating the
/// pooled connection's backend, with the `log` bridge installed as the
/// binary has it; neither may become a row, while the application's events
/// around them do.
async fn the_pools_warnings_about_a_killed_connection_never_become_rows(
) -> Result<(), libtest_mimic::Failed> {
    let pool = pool()?;
    let table = fresh_table("layer_driver");
    pglogsink::migrate(&pool, &table).await?;
    let sink_config = SinkConfig {
        table: table.to_string(),
        ..SinkConfig::default()
    };
    let (logger, worker) = pglogsink::spawn(pool.clone(), &sink_config, CancellationToken::new())?;
    // Process-wide and idempotent: `log` records go to the current tracing
    // dispatcher, as in the binary (tracing-subscriber's `init`).
    let _ = tracing_log::LogTracer::init();

    let seen = Seen::default();
    let subscriber = tracing_subscriber::registry()
        .with(seen.clone())
        .with(PgLogLayer::new(logger).with_filter(LevelFilter::INFO));
    let guard = tracing::subscriber::set_default(subscriber);

    tracing::info!("before the outage");
    let victim = pglogsink::pool(config()?, 1)?;
    let pid: i32 = {
        let client = victim.get().await?;
        client
            .query_one("SELECT pg_backend_pid()", &[])
            .await?
            .get(0)
    };
    pool.get()
        .await?
        .execute("SELECT pg_terminate_backend($1)", &[&pid])
        .await?;
    // The connection task sees the server hang up and logs the error.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !seen.has("deadpool.postgres", "Connection error") && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Recycling finds the connection closed, warns, and opens a new one.
    victim.get().await?.query_one("SELECT 1", &[]).await?;
    tracing::info!("after the outage");
    drop(guard);

    check(seen.has("deadpool.postgres", "Connection error"), || {
        "deadpool logged no connection error".into()
    })?;
    check(
        seen.has("deadpool.postgres", "Connection could not be recycled"),
        || "deadpool logged no recycling failure".into(),
    )?;
    let report = worker.shutdown(Duration::from_secs(10)).await;
    check(report.is_complete(), || format!("{report:?}"))?;
    let rows = pool
        .get()
        .await?
        .query(
            &format!(
                "SELECT target, message FROM {} ORDER BY \"timestamp\"",
                table.quoted()
            ),
            &[],
        )
        .await?;
    let rows: Vec<(String, String)> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
    let expected = [
        ("integration::layer", "before the outage"),
        ("integration::layer", "after the outage"),
    ];
    check(
        rows.iter()
            .map(|(t, m)| (t.as_str(), m.as_str()))
            .eq(expected),
        || format!("rows {rows:?}"),
    )
}
