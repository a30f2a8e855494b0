//! The tracing layer against a real PostgreSQL: the exact row an event
//! inside nested spans becomes, field types included.

use std::time::Duration;

use libtest_mimic::Trial;
use pglogsink::{CancellationToken, PgLogLayer, SinkConfig};
use serde_json::json;
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::prelude::*;
use tracing_subscriber::EnvFilter;

use crate::common::{async_trial, check, fresh_table, pool};

pub fn trials() -> Vec<Trial> {
    vec![async_trial(
        "layer::an_event_in_nested_spans_becomes_exactly_this_row",
        an_event_in_nested_spans_becomes_exactly_this_row,
    )]
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
