//! `pglogsink serve`: the demo web service. Its handler `GET /recipes/{id}`
//! answers a fixed body and logs one record through the sink, as a real
//! service's handlers would; its ingest endpoints (`super::ingest`) take
//! other services' logs into the same sink, and it serves the web viewer of
//! the Log table (`/`, `/api/...`: `super::viewer`).
//!
//! Shutdown order, all within one `--shutdown-timeout` from the signal: a
//! signal (or the sink's fatal error) cancels one token; the HTTP server
//! stops taking connections and finishes in-flight requests (they may still
//! log); then the sink drains its queue with the time that is left, and
//! spools the rest; then the private PostgreSQL, if we started it, stops.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use axum::extract::{Extension, FromRef, Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use metrics_exporter_prometheus::PrometheusHandle;
use pglogsink::{CancellationToken, Level, Logger, Record, Report};
use tokio_util::task::TaskTracker;

use super::db::DatabaseArgs;
use super::db::{Database, Mode};
use super::failure::Failure;
use super::flag_values::Age;
use super::flag_values::{parse_seconds, Seconds};
use super::http::{Access, HttpArgs, Rejection};
use super::ingest::{IngestArgs, IngestState};
use super::maintain::{ClosedPartitionsArgs, MaintenanceArgs};
use super::request_span::{trace_request, RequestId};
use super::signal::shutdown_signal;
use super::sink_args::SinkArgs;
use super::viewer::ViewerState;

#[derive(Debug, clap::Args)]
pub(crate) struct ServeArgs {
    /// Address to listen on.
    #[arg(
        long,
        env = "PGLOGSINK_LISTEN",
        default_value = "127.0.0.1:8080",
        value_name = "ADDR"
    )]
    pub(crate) listen: SocketAddr,

    #[command(flatten)]
    pub(crate) db: DatabaseArgs,

    #[command(flatten)]
    pub(crate) sink: SinkArgs,

    #[command(flatten)]
    pub(crate) partitions: MaintenanceArgs,

    #[command(flatten)]
    pub(crate) ingest: IngestArgs,

    #[command(flatten)]
    pub(crate) http: HttpArgs,

    /// How often to run maintenance (partitions ahead, retention): 10m, 1h... Instances sharing a
    /// table take turns (an advisory lock); a role that may not create or drop partitions gets
    /// one warning and ingest goes on.
    #[arg(long, env = "PGLOGSINK_MAINTENANCE_INTERVAL",
          default_value_t = Age(DEFAULT_MAINTENANCE_INTERVAL),
          value_parser = parse_every, value_name = "EVERY")]
    pub(crate) maintenance_interval: Age,

    #[command(flatten)]
    pub(crate) closed: ClosedPartitionsArgs,

    /// Seconds from a shutdown signal to exit: in-flight requests finish, then the queue is
    /// written with the time left; what is not written by then is spooled (and reported).
    #[arg(long, env = "PGLOGSINK_SHUTDOWN_TIMEOUT",
          default_value_t = Seconds(pglogsink::DEFAULT_SHUTDOWN_TIMEOUT),
          value_parser = parse_shutdown_timeout, value_name = "SECS")]
    pub(crate) shutdown_timeout: Seconds,

    /// Seconds a query of the web viewer (`/`, `/api/...`) may run before PostgreSQL cancels it,
    /// so that a careless filter cannot load the database for long.
    #[arg(long, env = "PGLOGSINK_VIEWER_STATEMENT_TIMEOUT",
          default_value_t = Seconds(super::viewer::DEFAULT_STATEMENT_TIMEOUT),
          value_parser = parse_statement_timeout, value_name = "SECS")]
    pub(crate) viewer_statement_timeout: Seconds,

    /// Answer requests without logging them (for measuring the sink's overhead).
    #[arg(long, env = "PGLOGSINK_NO_LOG",
          value_parser = clap::builder::BoolishValueParser::new())]
    pub(crate) no_log: bool,
}

/// Default `--maintenance-interval`.
const DEFAULT_MAINTENANCE_INTERVAL: Duration = Duration::from_secs(600);

/// The maintenance period: at least a second.
fn parse_every(s: &str) -> Result<Age, String> {
    match pglogsink::admin::parse_duration(s) {
        Some(d) if d >= Duration::from_secs(1) => Ok(Age(d)),
        _ => Err("expected a period of at least 1s, such as 10m, 1h or 30s".to_owned()),
    }
}

/// The viewer's statement timeout: more than 0, at most an hour.
fn parse_statement_timeout(s: &str) -> Result<Seconds, String> {
    parse_seconds(s, false, 3_600.0).map(Seconds)
}

/// The shutdown deadline: 0 (do not wait) to one day.
fn parse_shutdown_timeout(s: &str) -> Result<Seconds, String> {
    parse_seconds(s, true, 86_400.0).map(Seconds)
}

#[derive(Clone)]
pub(crate) struct AppState {
    pub(crate) logger: Logger,
    /// False with `--no-log`: requests are answered without a record.
    pub(crate) log_requests: bool,
    /// For the readiness probe.
    pub(crate) pool: deadpool_postgres::Pool,
    /// The Prometheus registry, when one is installed.
    pub(crate) metrics: Option<PrometheusHandle>,
    /// The OTLP and NDJSON endpoints' settings.
    pub(crate) ingest: IngestState,
    /// The web viewer's settings.
    pub(crate) viewer: ViewerState,
}

impl FromRef<AppState> for IngestState {
    fn from_ref(state: &AppState) -> IngestState {
        state.ingest.clone()
    }
}

/// The routes, separate from `run` so tests can call them without a socket.
pub(crate) fn app(state: AppState) -> Router {
    Router::new()
        .route("/recipes/{id}", get(recipe))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .merge(super::ingest::routes(&state))
        .with_state(state.clone())
        .merge(super::viewer::router(state.viewer))
        .layer(axum::middleware::from_fn(trace_request))
        .layer(axum::middleware::from_fn(super::metrics::track))
}

/// Answers a fixed body and writes exactly one log row with `Logger`, with
/// the `run_id` that `load --verify` counts. The request's `http` access
/// line is a row of its own only for a 5xx answer or when
/// `PGLOGSINK_TABLE_FILTER` asks for `http=debug`; it has no `run_id`, so
/// `load --verify` still counts one row per request.
async fn recipe(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Extension(request_id): Extension<RequestId>,
    headers: HeaderMap,
) -> Response {
    if !state.log_requests {
        return "recipe".into_response();
    }
    let mut record = Record::new(Level::Debug, format!("GET /recipes/{id}"))
        .target("recipes")
        .field("request_id", request_id.0);
    if let Some(run_id) = headers.get("x-run-id").and_then(|v| v.to_str().ok()) {
        record = record.field("run_id", run_id);
    }
    match state.logger.send(record) {
        Ok(()) => "recipe".into_response(),
        // Say so rather than answer a request whose log line would be lost.
        Err(refused) => Rejection::sink_refused(&refused).into_response(),
    }
}

async fn healthz(State(state): State<AppState>) -> Json<serde_json::Value> {
    let stats = state.logger.stats();
    Json(serde_json::json!({
        "status": "ok",
        "sink": {
            "running": !stats.closed,
            "queued": stats.queued,
            "written": stats.written,
            "retries": stats.retries,
        }
    }))
}

/// Ready when the sink takes records and the database answers.
async fn readyz(State(state): State<AppState>) -> Response {
    super::health::readyz(&state.logger, &state.pool).await
}

/// Prometheus text format.
async fn metrics(State(state): State<AppState>) -> Response {
    match &state.metrics {
        Some(handle) => super::metrics::render(handle, &state.logger),
        None => (StatusCode::NOT_FOUND, "metrics are not enabled\n").into_response(),
    }
}

pub(crate) async fn run(args: ServeArgs) -> Result<ExitCode, Failure> {
    // Keys and certificate first: a refusal to start needs no database.
    let access = args.http.access(args.listen)?;
    // Bind next: a taken port should fail before a database is started.
    let listener = super::http::bind(args.listen)
        .map_err(|e| format!("cannot listen on {}: {e}", args.listen))?;
    let metrics = super::metrics::install()?;
    let db = Database::open(&args.db, Mode::CreateIfMissing).await?;
    let viewer_pool = db.separate_pool(super::viewer::POOL_SIZE)?;
    let maintenance = args.closed.apply(args.partitions.maintenance())?;
    pglogsink::migrate_with(&db.pool, &args.db.table, &maintenance).await?;
    let config = args.sink.config(&args.db, &db.state_dir);

    let token = CancellationToken::new();
    let (logger, worker) = pglogsink::spawn(db.pool.clone(), &config, token.clone())?;
    // From here on, `tracing` events of the service at the table filter's
    // levels (by default `info`, so the `http` line of a 5xx answer) become
    // rows too; pglogsink's and the drivers' own diagnostics stay on stderr.
    if !args.no_log {
        super::diagnostics::write_events_to(logger.clone());
    }
    let scheme = if access.tls.is_some() {
        "https"
    } else {
        "http"
    };
    tracing::info!(
        "listening on {scheme}://{}; logging to table {} in {}",
        args.listen,
        args.db.table,
        db.description
    );
    let tasks = spawn_tasks(&args, &db.pool, maintenance, &metrics, &access, &token);
    // The private PostgreSQL, if we started it, is started again when it dies.
    let supervision = db.supervise(&token);

    let state = AppState {
        ingest: args.ingest.state(
            logger.clone(),
            args.http.body_read_timeout.0,
            config.max_queue_bytes,
            access.keys.clone(),
        ),
        logger,
        log_requests: !args.no_log,
        pool: db.pool.clone(),
        metrics: Some(metrics),
        viewer: ViewerState {
            pool: viewer_pool,
            table: args.db.table.clone(),
            statement_timeout: args.viewer_statement_timeout.0,
            shutdown: token.clone(),
            keys: access.keys,
        },
    };
    let Seconds(shutdown_timeout) = args.shutdown_timeout;
    let stopping = super::http::serve(
        listener,
        access.tls,
        app(state),
        args.http.limits(),
        &token,
        shutdown_timeout,
    )
    .await;
    // The sink has what is left of the deadline.
    let left = (stopping + shutdown_timeout).saturating_duration_since(tokio::time::Instant::now());
    let report = worker.shutdown(left).await;
    // The token is cancelled: the maintenance timer returns at once (a run
    // in progress is abandoned; each of its changes is a transaction of its
    // own), and so do the metrics upkeep and the signal listener.
    tasks.close();
    tasks.wait().await;
    let cluster_ok = supervision.finish().await;
    db.close();
    let code = print_report(&report);
    Ok(if cluster_ok { code } else { ExitCode::FAILURE })
}

/// The service's tasks beside the HTTP server: the maintenance timer, the
/// metrics upkeep, the API keys' reload, and the signal listener that
/// cancels `token`. Every one ends when `token` is cancelled; shutdown waits
/// for all of them before the database goes.
fn spawn_tasks(
    args: &ServeArgs,
    pool: &deadpool_postgres::Pool,
    maintenance: pglogsink::Maintenance,
    metrics: &PrometheusHandle,
    access: &Access,
    token: &CancellationToken,
) -> TaskTracker {
    let tasks = TaskTracker::new();
    tasks.spawn(super::maintain::on_timer(
        pool.clone(),
        args.db.table.clone(),
        maintenance,
        args.maintenance_interval.0,
        token.clone(),
    ));
    tasks.spawn(super::metrics::upkeep(metrics.clone(), token.clone()));
    if let Some(keys) = access.keys.clone() {
        tasks.spawn(keys.watch(token.clone()));
    }
    let signal_token = token.clone();
    tasks.spawn(async move {
        tokio::select! {
            () = shutdown_signal() => {
                tracing::info!("shutdown requested; finishing requests and draining the log queue");
                signal_token.cancel();
            }
            // A fatal error stopped the service: no signal to wait for.
            () = signal_token.cancelled() => {}
        }
    });
    tasks
}

/// One line for the operator. Exit 0 only when every record is in the
/// table: spooled records are safe but not written yet.
fn print_report(report: &Report) -> ExitCode {
    let kept = report.left_in_spool();
    let spooled = match (&report.spool_dir, kept) {
        (Some(dir), n) if n > 0 => format!(
            "{n} spooled to {} (written at the next start)",
            dir.display()
        ),
        _ => "0 spooled".to_owned(),
    };
    if let Some(fatal) = &report.fatal {
        eprintln!(
            "pglogsink: fatal: {fatal}. {} records were not written: {spooled}, {} lost; {} were written before the stop.",
            kept + report.not_written + report.in_doubt,
            report.not_written + report.in_doubt,
            report.written
        );
        return ExitCode::FAILURE;
    }
    eprintln!("pglogsink: stopped: {report}");
    if report.is_complete() && kept == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::test_fixtures::{unreachable_pool, unreachable_sink};
    use axum::body::Body;
    use axum::http::Request;
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    fn test_state(logger: Logger) -> AppState {
        AppState {
            ingest: IngestState::for_tests(logger.clone()),
            logger,
            log_requests: true,
            pool: unreachable_pool(),
            metrics: None,
            viewer: ViewerState {
                pool: unreachable_pool(),
                table: pglogsink::TableName::parse("log").unwrap(),
                statement_timeout: super::super::viewer::DEFAULT_STATEMENT_TIMEOUT,
                shutdown: CancellationToken::new(),
                keys: None,
            },
        }
    }

    /// The reason /readyz gives, with its status.
    async fn not_ready_because(logger: Logger) -> String {
        let (status, body) = get(app(test_state(logger)), "/readyz", None).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
        let json: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(json["ready"], false, "{body}");
        json["reason"].as_str().unwrap().to_owned()
    }

    #[tokio::test]
    async fn readyz_says_why_the_service_is_not_ready() {
        // An idle sink has not met the database yet: the probe finds it away.
        let (logger, _worker) = unreachable_sink();
        assert!(!logger.stats().retrying);
        let reason = not_ready_because(logger).await;
        assert!(
            reason.starts_with("the database did not answer"),
            "{reason}"
        );

        // A sink with records to write meets it first, and keeps retrying.
        let (logger, _worker) = unreachable_sink();
        logger.log(Level::Info, "waiting").unwrap();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while !logger.stats().retrying {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the sink never retried: {:?}",
                logger.stats()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let reason = not_ready_because(logger).await;
        assert!(
            reason.starts_with("the database does not accept writes; the sink is retrying"),
            "{reason}"
        );

        // A stopped sink says so before anything about the database.
        let (logger, worker) = unreachable_sink();
        let _ = worker.shutdown(Duration::ZERO).await;
        let reason = not_ready_because(logger).await;
        assert!(reason.starts_with("the log sink has stopped"), "{reason}");
    }

    async fn get(app: Router, uri: &str, run_id: Option<&str>) -> (StatusCode, String) {
        let mut request = Request::get(uri);
        if let Some(run_id) = run_id {
            request = request.header("x-run-id", run_id);
        }
        let response = app
            .oneshot(request.body(Body::empty()).unwrap())
            .await
            .unwrap();
        let status = response.status();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        (status, String::from_utf8_lossy(&body).into_owned())
    }

    #[tokio::test]
    async fn a_recipe_request_answers_and_queues_exactly_one_record() {
        let (logger, worker) = unreachable_sink();
        let app = app(test_state(logger.clone()));
        let (status, body) = get(app, "/recipes/7", Some("run-1")).await;
        assert_eq!((status, body.as_str()), (StatusCode::OK, "recipe"));
        let report = worker.shutdown(Duration::from_millis(200)).await;
        assert_eq!(
            report.written + report.not_written + report.in_doubt,
            1,
            "{report:?}"
        );
    }

    #[tokio::test]
    async fn after_the_sink_stops_requests_get_503() {
        let (logger, worker) = unreachable_sink();
        let report = worker.shutdown(Duration::from_millis(50)).await;
        assert_eq!(report.written, 0);
        let state = test_state(logger);
        let (status, _) = get(app(state), "/recipes/1", None).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    }

    #[tokio::test]
    async fn healthz_reports_the_sink() {
        let (logger, _worker) = unreachable_sink();
        let state = test_state(logger);
        let (status, body) = get(app(state), "/healthz", None).await;
        assert_eq!(status, StatusCode::OK);
        let json: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(json["status"], "ok");
        assert_eq!(json["sink"]["running"], true);
    }

    #[tokio::test]
    async fn every_response_carries_the_request_id_given_or_generated() {
        let (logger, _worker) = unreachable_sink();
        let app = app(test_state(logger));
        let given = Request::get("/recipes/1")
            .header("x-request-id", "abc-1")
            .body(Body::empty())
            .unwrap();
        let response = app.clone().oneshot(given).await.unwrap();
        assert_eq!(response.headers()["x-request-id"], "abc-1");
        for uri in ["/healthz", "/nowhere"] {
            let request = Request::get(uri).body(Body::empty()).unwrap();
            let response = app.clone().oneshot(request).await.unwrap();
            let id = response.headers()["x-request-id"].to_str().unwrap();
            assert!(id.len() > 12 && id.contains('-'), "{uri}: {id}");
        }
    }

    #[test]
    fn bad_option_values_are_rejected_with_the_accepted_form() {
        assert_eq!(
            parse_shutdown_timeout("2.5"),
            Ok(Seconds(Duration::from_millis(2500)))
        );
        // What --help shows as the default, and what it parses back to.
        let default = Seconds(pglogsink::DEFAULT_SHUTDOWN_TIMEOUT);
        assert_eq!(parse_shutdown_timeout(&default.to_string()), Ok(default));
        assert!(parse_shutdown_timeout("-1").is_err());
        assert!(parse_shutdown_timeout("soon").is_err());
    }
}
