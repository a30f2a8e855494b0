//! Where the binary's `tracing` events go: stderr always, and the Log table
//! once `serve` has its sink.
//!
//! The subscriber is installed first thing in `main`, before any database
//! exists, because starting the database already logs. The Log-table half is
//! a [`PgLogLayer`] in a process-wide `OnceLock`, filled by `serve` when its
//! sink is running ([`write_events_to`]); until then (and in every other
//! subcommand) it is an empty slot. A `OnceLock` rather than
//! `tracing_subscriber::reload`: it is set once and never changes, so an
//! atomic load per event replaces a lock, and no subscriber type has to be
//! named to pass a reload handle around.

use std::io::IsTerminal;
use std::sync::OnceLock;

use pglogsink::{Logger, PgLogLayer};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Subscriber};
use tracing_subscriber::layer::{Context, Layer};
use tracing_subscriber::prelude::*;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::EnvFilter;

/// stderr's filter when `RUST_LOG` is unset (or invalid): the service's own
/// messages and 5xx answers, but not one line per request (those are at
/// debug: `RUST_LOG=info,http=debug` shows them).
const DEFAULT_STDERR_FILTER: &str = "info,http=warn";

static TABLE_LAYER: OnceLock<PgLogLayer> = OnceLock::new();

/// Which `tracing` events of the binary become rows, unless
/// `PGLOGSINK_TABLE_FILTER` says otherwise (`EnvFilter` syntax).
const DEFAULT_TABLE_FILTER: &str = "info";

/// Install the process-wide subscriber: `fmt` on stderr filtered by
/// `RUST_LOG`, and the Log table filtered by `PGLOGSINK_TABLE_FILTER`
/// (default [`DEFAULT_TABLE_FILTER`]) once [`write_events_to`] is called.
///
/// The layer itself drops the events of pglogsink and of the database
/// crates, so the service's own diagnostics go to stderr only.
pub(crate) fn init() -> Result<(), String> {
    let stderr_filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(DEFAULT_STDERR_FILTER));
    let table_filter = match std::env::var("PGLOGSINK_TABLE_FILTER") {
        Ok(spec) => EnvFilter::try_new(&spec).map_err(|e| {
            format!(
                "invalid PGLOGSINK_TABLE_FILTER {spec:?}: {e}; use tracing's EnvFilter syntax, e.g. info,http=debug"
            )
        })?,
        Err(_) => EnvFilter::new(DEFAULT_TABLE_FILTER),
    };
    tracing_subscriber::registry()
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_ansi(std::io::stderr().is_terminal())
                .with_filter(stderr_filter),
        )
        .with(LateTableLayer.with_filter(table_filter))
        .init();
    Ok(())
}

/// From now on, `tracing` events (of `info` and above) also become rows
/// through `logger`. Only the first call has an effect.
pub(crate) fn write_events_to(logger: Logger) {
    let _ = TABLE_LAYER.set(PgLogLayer::new(logger));
}

/// The [`PgLogLayer`] in [`TABLE_LAYER`], or nothing while it is empty.
struct LateTableLayer;

impl<S> Layer<S> for LateTableLayer
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        if let Some(layer) = TABLE_LAYER.get() {
            layer.on_new_span(attrs, id, ctx);
        }
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        if let Some(layer) = TABLE_LAYER.get() {
            layer.on_record(id, values, ctx);
        }
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        if let Some(layer) = TABLE_LAYER.get() {
            layer.on_event(event, ctx);
        }
    }
}
