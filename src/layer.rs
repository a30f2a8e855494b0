//! The `tracing` adapter: a [`Layer`] that turns every event into one record
//! for the sink, with the fields of its enclosing spans merged in.
//!
//! Span fields are converted to JSON once, when the span is created or
//! recorded, and kept in the span's extensions; an event then costs one
//! `Vec` of fields, one `String` for its message and a clone of each span
//! value it inherits.

use std::borrow::Cow;
use std::fmt;

use serde_json::Value;
use tracing::field::{Field, Visit};
use tracing::span::{self, Attributes, Id};
use tracing::{Event, Subscriber};
use tracing_subscriber::layer::{Context, Layer};
use tracing_subscriber::registry::LookupSpan;

use crate::fields::Fields;
use crate::level::Level;
use crate::logger::Logger;
use crate::record::Record;

/// A [`tracing_subscriber::Layer`] that writes every `tracing` event to the
/// Log table through a [`Logger`].
///
/// Each event becomes one row: its level, its target, its `message`, and its
/// other fields as a jsonb object with their native JSON types (integers,
/// floats and bools stay numbers and bools; `%display` and `?debug` values
/// become strings). The fields of the spans the event is in are merged in;
/// when a name repeats, the innermost span wins and the event's own field
/// wins over all spans.
///
/// It is an ordinary layer: it shares a registry with `fmt` and filters with
/// [`Layer::with_filter`] (per layer) or an `EnvFilter` (for all layers).
///
/// ```no_run
/// use std::time::Duration;
/// use pglogsink::{CancellationToken, PgLogLayer, SinkConfig, TableName};
/// use tracing_subscriber::{filter::LevelFilter, prelude::*, EnvFilter};
///
/// # async fn demo() -> Result<(), pglogsink::Error> {
/// let pool = pglogsink::pool(pglogsink::parse_url("postgres://app:pw@127.0.0.1/app")?, 4)?;
/// pglogsink::migrate(&pool, &TableName::parse("log")?).await?;
/// let shutdown = CancellationToken::new();
/// let (logger, worker) = pglogsink::spawn(pool, &SinkConfig::default(), shutdown.clone())?;
///
/// tracing_subscriber::registry()
///     .with(tracing_subscriber::fmt::layer().with_filter(EnvFilter::from_default_env()))
///     .with(PgLogLayer::new(logger).with_filter(LevelFilter::INFO))
///     .init();
///
/// let span = tracing::info_span!("request", request_id = "r1", path = "/recipes/7");
/// span.in_scope(|| tracing::info!(status = 200, ms = 0.4, "request done"));
/// // One row: info, target "my_app", "request done",
/// //          {"request_id": "r1", "path": "/recipes/7", "status": 200, "ms": 0.4}
///
/// shutdown.cancelled().await;
/// worker.shutdown(Duration::from_secs(10)).await;
/// # Ok(()) }
/// ```
///
/// # No feedback
///
/// Events that come from the sink itself or from the database crates it
/// writes through (`pglogsink`, `tokio_postgres`, `postgres`,
/// `postgres_protocol`, `postgres_types`, `deadpool`, `deadpool_postgres`,
/// `deadpool_runtime`) are not written: while the database is down, each
/// retry warning or pool complaint would otherwise queue one more record for
/// the same database. An event is recognised by its target, whose first
/// segment before a `::` or a `.` names the crate (deadpool-postgres says
/// `target: "deadpool.postgres"`), and, for the database crates, by where
/// it was emitted, its module path (`deadpool_postgres`), whatever its
/// target. Events bridged from the `log` crate are judged by their
/// `log.target` and `log.module_path` fields. They still reach the other
/// layers, such as `fmt`. pglogsink's own events are known by their target
/// only: the `pglogsink` binary shares the crate name, and its request lines
/// (target `http`) are meant to become rows.
///
/// What can still slip through: events of other crates on the sink's path,
/// which are not excluded because applications use them for their own
/// connections too (`rustls`, `tokio_postgres_rustls`, `tokio`, `socket2`);
/// an event whose module path is unknown (a `log` record built by hand, or
/// a bridge that drops it) and whose target names no crate of the list (say
/// `"pool"`); and the application's own events about the sink, such as a
/// warning it logs when [`Logger::send`] fails. Filter those with
/// [`Layer::with_filter`].
///
/// Once the sink has stopped, events are dropped silently; the layer never
/// panics and never logs.
#[derive(Debug, Clone)]
pub struct PgLogLayer {
    logger: Logger,
}

impl PgLogLayer {
    /// A layer that sends each event through `logger`.
    ///
    /// Records take the event's target; use [`Layer::with_filter`] to choose
    /// which events become rows.
    pub fn new(logger: Logger) -> PgLogLayer {
        PgLogLayer { logger }
    }
}

impl<S> Layer<S> for PgLogLayer
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        store_span_fields(attrs, id, &ctx);
    }

    fn on_record(&self, id: &Id, values: &span::Record<'_>, ctx: Context<'_, S>) {
        update_span_fields(id, values, &ctx);
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        if self.logger.is_closed() {
            return;
        }
        if let Some(record) = record_of(event, &ctx) {
            // Closed: the sink stopped in between. Nothing to do; logging
            // about it from here would recurse.
            let _ = self.logger.send(record);
        }
    }
}

/// Crates whose events never become rows (see "No feedback" above).
const IGNORED_CRATES: [&str; 8] = [
    "pglogsink",
    "tokio_postgres",
    "postgres",
    "postgres_protocol",
    "postgres_types",
    "deadpool",
    "deadpool_postgres",
    "deadpool_runtime",
];

/// The crate a target or module path names: its first segment before a
/// `::` (module paths, tracing's default targets) or a `.`
/// (`deadpool.postgres`).
fn crate_of(path: &str) -> &str {
    path.split([':', '.']).next().unwrap_or(path)
}

/// True for a target that names one of [`IGNORED_CRATES`] or a module of one.
fn is_ignored(target: &str) -> bool {
    IGNORED_CRATES.contains(&crate_of(target))
}

/// True for a module path inside one of the database crates, whatever
/// target the event chose. Not `pglogsink`: the binary is a crate of that
/// name too, and its events (the `http` request lines) are wanted; the
/// library's own events all have a `pglogsink` target.
fn is_driver_module(module_path: &str) -> bool {
    let krate = crate_of(module_path);
    krate != "pglogsink" && IGNORED_CRATES.contains(&krate)
}

/// A span's fields as JSON, kept in its extensions by `on_new_span` and
/// updated by `on_record`. Shared by every `PgLogLayer` of a registry.
struct SpanFields(Fields);

fn store_span_fields<S>(attrs: &Attributes<'_>, id: &Id, ctx: &Context<'_, S>)
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    if attrs.fields().is_empty() {
        return;
    }
    let Some(span) = ctx.span(id) else { return };
    let mut extensions = span.extensions_mut();
    // A second PgLogLayer in the same registry finds the fields recorded.
    if extensions.get_mut::<SpanFields>().is_some() {
        return;
    }
    let mut fields = Fields::with_capacity(attrs.fields().len());
    attrs.record(&mut FieldVisitor::span(&mut fields));
    extensions.insert(SpanFields(fields));
}

fn update_span_fields<S>(id: &Id, values: &span::Record<'_>, ctx: &Context<'_, S>)
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    let Some(span) = ctx.span(id) else { return };
    let mut extensions = span.extensions_mut();
    match extensions.get_mut::<SpanFields>() {
        Some(SpanFields(fields)) => values.record(&mut FieldVisitor::span(fields)),
        None => {
            let mut fields = Fields::new();
            values.record(&mut FieldVisitor::span(&mut fields));
            extensions.insert(SpanFields(fields));
        }
    }
}

/// The record for an event, or `None` when its target is ignored.
fn record_of<S>(event: &Event<'_>, ctx: &Context<'_, S>) -> Option<Record>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    let metadata = event.metadata();
    if is_ignored(metadata.target()) || metadata.module_path().is_some_and(is_driver_module) {
        return None;
    }
    let mut fields = Fields::with_capacity(metadata.fields().len());
    let mut visitor = FieldVisitor::event(&mut fields, metadata.target() == "log");
    event.record(&mut visitor);
    let FieldVisitor {
        message,
        log_target,
        log_module_path,
        ..
    } = visitor;
    if log_module_path.as_deref().is_some_and(is_driver_module) {
        return None;
    }
    let target = match log_target {
        Some(target) if is_ignored(&target) => return None,
        Some(target) => Cow::Owned(target),
        None => Cow::Borrowed(metadata.target()),
    };
    // Leaf first, keeping the first value of each name: the same result as
    // merging from the root with inner values replacing outer ones, without
    // the buffer that walking from the root needs.
    if let Some(scope) = ctx.event_scope(event) {
        for span in scope {
            if let Some(SpanFields(inherited)) = span.extensions().get::<SpanFields>() {
                for (name, value) in inherited {
                    if !fields.iter().any(|(n, _)| n == name) {
                        fields.push(name.clone(), value.clone());
                    }
                }
            }
        }
    }
    Some(
        Record::new(level_of(metadata.level()), message.unwrap_or_default())
            .target(target)
            .fields(fields),
    )
}

fn level_of(level: &tracing::Level) -> Level {
    match *level {
        tracing::Level::TRACE => Level::Trace,
        tracing::Level::DEBUG => Level::Debug,
        tracing::Level::INFO => Level::Info,
        tracing::Level::WARN => Level::Warn,
        tracing::Level::ERROR => Level::Error,
    }
}

/// Converts field values to JSON into `fields`. For events, `message` is
/// taken out as the record's message, and the `log.*` fields of events
/// bridged from the `log` crate are dropped except `log.target`, which
/// becomes the target, and `log.module_path`, kept to tell where the event
/// came from.
struct FieldVisitor<'a> {
    fields: &'a mut Fields,
    is_event: bool,
    from_log: bool,
    message: Option<String>,
    log_target: Option<String>,
    log_module_path: Option<String>,
}

impl<'a> FieldVisitor<'a> {
    fn span(fields: &'a mut Fields) -> FieldVisitor<'a> {
        FieldVisitor {
            fields,
            is_event: false,
            from_log: false,
            message: None,
            log_target: None,
            log_module_path: None,
        }
    }

    fn event(fields: &'a mut Fields, from_log: bool) -> FieldVisitor<'a> {
        FieldVisitor {
            fields,
            is_event: true,
            from_log,
            message: None,
            log_target: None,
            log_module_path: None,
        }
    }

    /// Whether `field` is a plain field (not the message, not `log.*`).
    fn is_plain(&self, field: &Field) -> bool {
        !(self.is_event
            && (field.name() == "message" || (self.from_log && field.name().starts_with("log."))))
    }

    fn put(&mut self, field: &Field, value: Value) {
        set_field(self.fields, field.name(), value);
    }
}

/// Set `name` to `value`, replacing an earlier value of the same name.
fn set_field(fields: &mut Fields, name: &'static str, value: Value) {
    match fields.0.iter_mut().find(|(n, _)| n == name) {
        Some((_, old)) => *old = value,
        None => fields.push(name, value),
    }
}

/// A 128-bit integer as a JSON number when it fits in 64 bits, else as its
/// decimal string (JSON readers lose precision beyond that).
fn wide_int(value: i128) -> Value {
    if let Ok(v) = i64::try_from(value) {
        Value::from(v)
    } else if let Ok(v) = u64::try_from(value) {
        Value::from(v)
    } else {
        Value::String(value.to_string())
    }
}

impl Visit for FieldVisitor<'_> {
    fn record_f64(&mut self, field: &Field, value: f64) {
        if self.is_plain(field) {
            // Non-finite floats become null, as with `Record::field`.
            self.put(field, Value::from(value));
        }
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        if self.is_plain(field) {
            self.put(field, Value::from(value));
        }
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        if self.is_plain(field) {
            self.put(field, Value::from(value));
        }
    }

    fn record_i128(&mut self, field: &Field, value: i128) {
        if self.is_plain(field) {
            self.put(field, wide_int(value));
        }
    }

    fn record_u128(&mut self, field: &Field, value: u128) {
        if self.is_plain(field) {
            let json =
                i128::try_from(value).map_or_else(|_| Value::String(value.to_string()), wide_int);
            self.put(field, json);
        }
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        if self.is_plain(field) {
            self.put(field, Value::Bool(value));
        }
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        if self.is_plain(field) {
            self.put(field, Value::String(value.to_owned()));
        } else if field.name() == "message" {
            self.message = Some(value.to_owned());
        } else if field.name() == "log.target" {
            self.log_target = Some(value.to_owned());
        } else if field.name() == "log.module_path" {
            self.log_module_path = Some(value.to_owned());
        }
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.record_debug(field, &format_args!("{value}"));
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if self.is_plain(field) {
            self.put(field, Value::String(format!("{value:?}")));
        } else if field.name() == "message" {
            self.message = Some(format!("{value:?}"));
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use serde_json::json;
    use tracing_subscriber::filter::LevelFilter;
    use tracing_subscriber::prelude::*;

    use super::*;

    /// The layer's logic with a `Vec` in place of the sink.
    #[derive(Clone, Default)]
    struct Capture(Arc<Mutex<Vec<Record>>>);

    impl<S> Layer<S> for Capture
    where
        S: Subscriber + for<'a> LookupSpan<'a>,
    {
        fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
            store_span_fields(attrs, id, &ctx);
        }

        fn on_record(&self, id: &Id, values: &span::Record<'_>, ctx: Context<'_, S>) {
            update_span_fields(id, values, &ctx);
        }

        fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
            if let Some(record) = record_of(event, &ctx) {
                self.0.lock().unwrap().push(record);
            }
        }
    }

    impl Capture {
        fn take(&self) -> Vec<Record> {
            std::mem::take(&mut *self.0.lock().unwrap())
        }
    }

    /// The fields of a record as one JSON object, last value of a name
    /// winning (as in the jsonb column).
    fn object(record: &Record) -> Value {
        let mut map = serde_json::Map::new();
        for (name, value) in record.field_list() {
            map.insert(name.to_string(), value.clone());
        }
        Value::Object(map)
    }

    /// Events here say `target: "app"`: their default target, this module's
    /// path `pglogsink::layer::tests`, is one the layer ignores.
    fn capture(body: impl FnOnce()) -> Vec<Record> {
        let capture = Capture::default();
        let subscriber = tracing_subscriber::registry().with(capture.clone());
        tracing::subscriber::with_default(subscriber, body);
        capture.take()
    }

    #[test]
    fn field_values_keep_their_json_types() {
        let err = std::io::Error::other("disk full");
        let records = capture(|| {
            tracing::warn!(
                target: "shop::orders",
                int = -3,
                big = u64::MAX,
                wide = 1_i128 << 100,
                ratio = 0.5,
                ok = true,
                name = "x",
                shown = %"display",
                point = ?(1, "a"),
                error = &err as &(dyn std::error::Error + 'static),
                "order {} shipped",
                7
            );
        });
        assert_eq!(records.len(), 1);
        let record = &records[0];
        assert_eq!(record.level(), Level::Warn);
        assert_eq!(record.target.as_deref(), Some("shop::orders"));
        assert_eq!(record.message(), "order 7 shipped");
        assert_eq!(
            object(record),
            json!({
                "int": -3,
                "big": u64::MAX,
                "wide": (1_i128 << 100).to_string(),
                "ratio": 0.5,
                "ok": true,
                "name": "x",
                "shown": "display",
                "point": "(1, \"a\")",
                "error": "disk full",
            })
        );
    }

    #[test]
    fn span_fields_merge_innermost_winning_and_the_event_wins_over_spans() {
        let records = capture(|| {
            let outer = tracing::info_span!(target: "app", "request", request_id = "r1", user = "ann", n = 1);
            let _outer = outer.enter();
            let inner = tracing::debug_span!(target: "app", "db", user = "bob", table = tracing::field::Empty);
            let _inner = inner.enter();
            inner.record("table", "recipes");
            tracing::info!(target: "app", n = 2, "query");
            drop(_inner);
            tracing::info!(target: "app", "after the inner span");
        });
        assert_eq!(records.len(), 2);
        assert_eq!(records[0].message(), "query");
        assert_eq!(
            object(&records[0]),
            json!({"request_id": "r1", "user": "bob", "table": "recipes", "n": 2})
        );
        assert_eq!(
            object(&records[1]),
            json!({"request_id": "r1", "user": "ann", "n": 1})
        );
        // No duplicates: each name appears once.
        assert_eq!(records[0].field_list().len(), 4);
    }

    #[test]
    fn recording_a_span_field_again_replaces_it() {
        let records = capture(|| {
            let span = tracing::info_span!(target: "app", "job", state = "new", id = 1);
            span.record("state", "done");
            span.in_scope(|| tracing::info!(target: "app", "finished"));
        });
        assert_eq!(object(&records[0]), json!({"state": "done", "id": 1}));
    }

    #[test]
    fn levels_map_one_to_one() {
        let records = capture(|| {
            tracing::trace!(target: "app", "t");
            tracing::debug!(target: "app", "d");
            tracing::info!(target: "app", "i");
            tracing::warn!(target: "app", "w");
            tracing::error!(target: "app", "e");
        });
        let levels: Vec<Level> = records.iter().map(Record::level).collect();
        assert_eq!(levels, Level::ALL);
        assert!(records.iter().all(|r| r.field_list().is_empty()));
    }

    #[test]
    fn an_event_without_a_message_has_an_empty_one() {
        let records = capture(|| tracing::info!(target: "app", answer = 42));
        assert_eq!(records[0].message(), "");
        assert_eq!(object(&records[0]), json!({"answer": 42}));
    }

    #[test]
    fn the_sink_and_its_database_crates_never_feed_back() {
        for ignored in [
            "pglogsink",
            "pglogsink::consumer",
            "tokio_postgres",
            "tokio_postgres::connection",
            "postgres",
            "deadpool",
            "deadpool_postgres::managed",
            // deadpool-postgres 0.14 warns under this dotted target.
            "deadpool.postgres",
            "tokio_postgres.connection",
        ] {
            assert!(is_ignored(ignored), "{ignored}");
        }
        for kept in [
            "app",
            "pglogsinks",
            "postgresql_app",
            "my::pglogsink",
            "app.deadpool",
            "deadpool_app.postgres",
            "http",
        ] {
            assert!(!is_ignored(kept), "{kept}");
        }
        let records = capture(|| {
            tracing::warn!(target: "pglogsink", "retrying");
            tracing::debug!(target: "tokio_postgres::prepare", "preparing");
            tracing::info!(target: "deadpool_postgres", "recycled");
            tracing::warn!(
                target: "deadpool.postgres",
                "Connection could not be recycled: Connection closed"
            );
            tracing::info!(target: "app", "kept");
        });
        let messages: Vec<&str> = records.iter().map(Record::message).collect();
        assert_eq!(messages, ["kept"]);
    }

    #[test]
    fn events_bridged_from_the_log_crate_take_their_real_target() {
        // What tracing-log emits for `log::info!` in tokio_postgres and in an app.
        let records = capture(|| {
            tracing::event!(
                target: "log",
                tracing::Level::INFO,
                {
                    log.target = "tokio_postgres::connection",
                    log.module_path = "tokio_postgres::connection",
                },
                "NOTICE: relation exists"
            );
            tracing::event!(
                target: "log",
                tracing::Level::INFO,
                {
                    log.target = "legacy::module",
                    log.module_path = "legacy::module",
                    log.file = "src/module.rs",
                    log.line = 12,
                    user = "ann",
                },
                "from log"
            );
        });
        assert_eq!(records.len(), 1, "the tokio_postgres one is dropped");
        assert_eq!(records[0].target.as_deref(), Some("legacy::module"));
        assert_eq!(records[0].message(), "from log");
        assert_eq!(object(&records[0]), json!({"user": "ann"}));
    }

    #[test]
    fn the_database_crates_are_known_by_module_path_but_not_pglogsink() {
        for driver in [
            "deadpool_postgres",
            "deadpool::managed",
            "tokio_postgres::connection",
            "postgres_protocol::message",
        ] {
            assert!(is_driver_module(driver), "{driver}");
        }
        // The binary's modules: their `http` events are wanted.
        for kept in ["pglogsink::cli::request_span", "app::db", "deadpool_app"] {
            assert!(!is_driver_module(kept), "{kept}");
        }
    }

    #[test]
    fn log_records_are_judged_by_their_module_path_too() {
        // Through tracing-log's own bridge: a record with a target that names
        // no crate is still dropped when it was emitted in a driver crate.
        let record = |target, module_path| {
            tracing_log::format_trace(
                &log::Record::builder()
                    .level(log::Level::Warn)
                    .target(target)
                    .module_path_static(module_path)
                    .args(format_args!("{target}"))
                    .build(),
            )
            .unwrap();
        };
        let records = capture(|| {
            record("deadpool.postgres", Some("deadpool_postgres"));
            record("deadpool.postgres", None);
            record("pool", Some("deadpool_postgres::config"));
            record("pool", Some("app::db"));
            record("pool", None);
        });
        let targets: Vec<_> = records.iter().map(|r| r.target.as_deref()).collect();
        assert_eq!(targets, [Some("pool"), Some("pool")]);
    }

    #[test]
    fn a_per_layer_filter_composes_with_a_global_one() {
        let capture = Capture::default();
        let other = Capture::default();
        let subscriber = tracing_subscriber::registry()
            .with(tracing_subscriber::EnvFilter::new("debug,noisy=off"))
            .with(other.clone())
            .with(capture.clone().with_filter(LevelFilter::INFO));
        tracing::subscriber::with_default(subscriber, || {
            tracing::trace!(target: "app", "nowhere");
            tracing::debug!(target: "app", "only the other layer");
            tracing::info!(target: "app", "both");
            tracing::error!(target: "noisy", "nowhere either");
        });
        let mine: Vec<String> = capture
            .take()
            .iter()
            .map(|r| r.message().to_owned())
            .collect();
        let theirs: Vec<String> = other
            .take()
            .iter()
            .map(|r| r.message().to_owned())
            .collect();
        assert_eq!(mine, ["both"]);
        assert_eq!(theirs, ["only the other layer", "both"]);
    }

    #[test]
    fn spans_disabled_for_the_layer_add_nothing() {
        let capture = Capture::default();
        let subscriber = tracing_subscriber::registry()
            .with(Capture::default())
            .with(capture.clone().with_filter(LevelFilter::INFO));
        tracing::subscriber::with_default(subscriber, || {
            let request = tracing::info_span!(target: "app", "request", request_id = "r1");
            let _request = request.enter();
            let detail =
                tracing::debug_span!(target: "app", "detail", request_id = "hidden", step = 2);
            let _detail = detail.enter();
            tracing::info!(target: "app", "done");
        });
        assert_eq!(object(&capture.take()[0]), json!({"request_id": "r1"}));
    }

    #[test]
    fn two_layers_in_one_registry_share_span_fields() {
        let a = Capture::default();
        let b = Capture::default();
        let subscriber = tracing_subscriber::registry()
            .with(a.clone())
            .with(b.clone());
        tracing::subscriber::with_default(subscriber, || {
            let span = tracing::info_span!(target: "app", "s", k = 1);
            span.record("k", 2);
            span.in_scope(|| tracing::info!(target: "app", "e"));
        });
        assert_eq!(object(&a.take()[0]), json!({"k": 2}));
        assert_eq!(object(&b.take()[0]), json!({"k": 2}));
    }

    #[tokio::test]
    async fn a_stopped_sink_drops_events_silently() {
        let config = crate::parse_url("postgres://nobody@127.0.0.1:1/none").unwrap();
        let pool = crate::pool(config, 1).unwrap();
        let (logger, worker) = crate::spawn(
            pool,
            &crate::SinkConfig::default(),
            crate::CancellationToken::new(),
        )
        .unwrap();
        worker.shutdown(std::time::Duration::from_millis(50)).await;
        assert!(logger.is_closed());
        let before = logger.stats();
        // Every event the other layers see: the app's event still reaches
        // them, and only it.
        #[derive(Clone, Default)]
        struct Count(Arc<Mutex<Vec<String>>>);
        impl<S: Subscriber> Layer<S> for Count {
            fn on_event(&self, event: &Event<'_>, _: Context<'_, S>) {
                let target = event.metadata().target().to_owned();
                self.0.lock().unwrap().push(target);
            }
        }
        let seen = Count::default();
        let subscriber = tracing_subscriber::registry()
            .with(PgLogLayer::new(logger.clone()))
            .with(seen.clone());
        tracing::subscriber::with_default(subscriber, || {
            let span = tracing::info_span!(target: "app", "request", request_id = "r1");
            span.in_scope(|| tracing::error!(target: "app", code = 1, "after the stop"));
        });
        assert_eq!(*seen.0.lock().unwrap(), ["app"]);
        let after = logger.stats();
        assert_eq!(
            (after.received, after.queued),
            (before.received, 0),
            "a record was taken after the stop"
        );
    }

    #[test]
    fn wide_integers_stay_numbers_when_they_fit() {
        assert_eq!(wide_int(-5), json!(-5));
        assert_eq!(wide_int(i128::from(u64::MAX)), json!(u64::MAX));
        assert_eq!(wide_int(i128::MIN), json!(i128::MIN.to_string()));
        let mut fields = Fields::new();
        set_field(&mut fields, "a", json!(1));
        set_field(&mut fields, "b", json!(2));
        set_field(&mut fields, "a", json!(3));
        assert_eq!(*fields, [("a".into(), json!(3)), ("b".into(), json!(2))]);
    }
}
