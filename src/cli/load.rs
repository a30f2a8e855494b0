//! `pglogsink load`: a bundled concurrent HTTP load client for local tests.
//!
//! `concurrency` workers each keep one HTTP/1.1 keep-alive connection to
//! `serve` and send `GET <url>/recipes/<n>` one after another (or, with
//! `--mode ndjson|otlp`, a batch of records to an ingest endpoint: see
//! `load_body.rs`), every request tagged with the same fresh run id in
//! `x-run-id`. With `--verify` it then counts the rows carrying that run id
//! in the Log table until every successful request has its rows.

use std::net::{IpAddr, SocketAddr};
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use hdrhistogram::Histogram;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::{self, SendRequest};
use hyper::{StatusCode, Uri};
use hyper_util::rt::TokioIo;
use pglogsink::admin::describe;
use pglogsink::CancellationToken;
use tokio::net::TcpStream;
use tokio_util::task::TaskTracker;

use super::failure::Failure;
use super::flag_values::parse_seconds;
use super::load_body::{LoadMode, Payload};
use super::load_progress::Progress;

const DEFAULT_REQUESTS: u64 = 1000;
const MAX_CONCURRENCY: u32 = 10_000;
const MAX_DURATION_SECS: f64 = 3600.0;
/// A request (or connect) taking longer than this counts as a connection error.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Pause after a failed connect, so that a dead server is not hammered.
const RECONNECT_PAUSE: Duration = Duration::from_millis(100);
/// Highest latency the histograms track exactly (one hour, in microseconds).
const MAX_LATENCY_US: u64 = 3_600_000_000;

#[derive(Debug, clap::Args)]
pub(crate) struct LoadArgs {
    /// Base URL of the running `pglogsink serve`; requests go to <URL>/recipes/<n>. Must be
    /// http:// on a loopback address (127.0.0.0/8, [::1] or localhost): this bundled client is
    /// for local load tests only.
    #[arg(long, env = "PGLOGSINK_URL", default_value = "http://127.0.0.1:8080",
          value_name = "URL", value_parser = parse_target)]
    pub(crate) url: Target,

    /// Number of concurrent workers, each with one keep-alive connection sending its requests
    /// one after another (1..=10000).
    #[arg(long, env = "PGLOGSINK_CONCURRENCY", default_value = "77", value_name = "N",
          value_parser = parse_concurrency)]
    pub(crate) concurrency: u32,

    /// Total number of requests, shared by all workers [default: 1000 unless --duration is given].
    #[arg(long, env = "PGLOGSINK_REQUESTS", value_name = "N", value_parser = parse_requests,
          conflicts_with = "duration")]
    pub(crate) requests: Option<u64>,

    /// Send requests for this many seconds instead of a fixed number (fractions allowed, at most
    /// 3600).
    #[arg(long, env = "PGLOGSINK_DURATION", value_name = "SECS", value_parser = parse_run_time)]
    pub(crate) duration: Option<Duration>,

    /// After the run, check in the database that every successful request wrote exactly its
    /// rows (one, or --batch with ndjson/otlp) tagged with this run's id (needs the same
    /// --database-url or --data-dir as `serve`).
    #[arg(long, env = "PGLOGSINK_VERIFY",
          value_parser = clap::builder::BoolishValueParser::new())]
    pub(crate) verify: bool,

    /// With --verify: how long to wait for the rows to arrive before failing.
    #[arg(long, env = "PGLOGSINK_VERIFY_TIMEOUT", default_value = "30", value_name = "SECS",
          value_parser = parse_verify_timeout)]
    pub(crate) verify_timeout: Duration,

    /// What each request does: `recipes` (GET /recipes/<n>, one row each), `ndjson` (POST
    /// /ingest/ndjson) or `otlp` (POST /v1/logs, OTLP protobuf), these two with --batch records
    /// per request.
    #[arg(
        long,
        env = "PGLOGSINK_LOAD_MODE",
        value_enum,
        default_value = "recipes",
        value_name = "MODE"
    )]
    pub(crate) mode: LoadMode,

    /// Records per request with --mode ndjson or otlp (1..=100000).
    #[arg(long, env = "PGLOGSINK_LOAD_BATCH", default_value = "1000", value_name = "N",
          value_parser = parse_batch)]
    pub(crate) batch: usize,

    #[command(flatten)]
    pub(crate) db: super::db::DatabaseArgs,
}

fn parse_batch(s: &str) -> Result<usize, String> {
    match s.trim().parse::<usize>() {
        Ok(n) if (1..=100_000).contains(&n) => Ok(n),
        _ => Err("must be a whole number from 1 to 100000".to_owned()),
    }
}

/// A validated `--url`: plain HTTP to a loopback host.
#[derive(Debug, Clone)]
pub(crate) struct Target {
    /// `http://authority/prefix`, for messages.
    display: String,
    /// Host without IPv6 brackets, for name resolution.
    host: String,
    port: u16,
    /// The `Host` header.
    authority: String,
    /// Path of the URL without trailing slash (`""` for `http://127.0.0.1:8080`).
    prefix: String,
}

fn parse_target(s: &str) -> Result<Target, String> {
    let uri: Uri = s
        .trim()
        .parse()
        .map_err(|e| format!("not a valid URL: {e}"))?;
    match uri.scheme_str() {
        Some("http") => {}
        Some(other) => {
            return Err(format!(
                "only http:// URLs are supported, not {other}://: this bundled client is for \
                 local load tests only"
            ))
        }
        None => return Err("expected a URL like http://127.0.0.1:8080".to_owned()),
    }
    let authority = uri.authority().ok_or("the URL has no host")?;
    if authority.as_str().contains('@') {
        return Err("the URL must not contain a user name or password".to_owned());
    }
    let host = authority
        .host()
        .trim_start_matches('[')
        .trim_end_matches(']');
    if !is_loopback_host(host) {
        return Err(format!(
            "{} is not a loopback address: this bundled client only sends load to the local \
             machine (127.0.0.0/8, [::1] or localhost)",
            authority.host()
        ));
    }
    if uri.query().is_some() {
        return Err("the URL must not have a query string".to_owned());
    }
    let prefix = uri.path().trim_end_matches('/').to_owned();
    Ok(Target {
        display: format!("http://{authority}{prefix}"),
        host: host.to_owned(),
        port: authority.port_u16().unwrap_or(80),
        authority: authority.as_str().to_owned(),
        prefix,
    })
}

fn is_loopback_host(host: &str) -> bool {
    host.eq_ignore_ascii_case("localhost")
        || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

fn parse_concurrency(s: &str) -> Result<u32, String> {
    match s.trim().parse::<u32>() {
        Ok(n) if (1..=MAX_CONCURRENCY).contains(&n) => Ok(n),
        _ => Err(format!(
            "must be a whole number from 1 to {MAX_CONCURRENCY}"
        )),
    }
}

fn parse_requests(s: &str) -> Result<u64, String> {
    match s.trim().parse::<u64>() {
        Ok(n) if n >= 1 => Ok(n),
        _ => Err("must be a whole number, at least 1".to_owned()),
    }
}

fn parse_run_time(s: &str) -> Result<Duration, String> {
    parse_seconds(s, false, MAX_DURATION_SECS)
}

fn parse_verify_timeout(s: &str) -> Result<Duration, String> {
    parse_seconds(s, false, 86_400.0)
}

/// `load-<unix millis>-<pid>`: unique per run on this machine.
fn run_id(unix_millis: u128, pid: u32) -> String {
    format!("load-{unix_millis}-{pid}")
}

/// One run of the load client: what its workers share (where to, what to
/// send, how many) and what they counted.
struct LoadRun {
    target: Target,
    addrs: Vec<SocketAddr>,
    run_id: String,
    /// What every request sends.
    payload: Payload,
    /// With --requests, the total; with --duration, when to stop starting requests.
    limit: Result<u64, Instant>,
    next: AtomicU64,
    ok: AtomicU64,
    non_2xx: AtomicU64,
    conn_errors: AtomicU64,
    first_error: Mutex<Option<String>>,
    cancel: CancellationToken,
    /// Every task of the run (the HTTP connections, the progress line, the
    /// signal listener), so that the run ends only when all have.
    tasks: TaskTracker,
}

impl LoadRun {
    /// The sequence number (from 1) of the next request to send, if any.
    fn next_slot(&self) -> Option<u64> {
        if self.cancel.is_cancelled() {
            return None;
        }
        if let Err(deadline) = self.limit {
            if Instant::now() >= deadline {
                return None;
            }
        }
        let slot = self.next.fetch_add(1, Ordering::Relaxed);
        match self.limit {
            Ok(total) if slot >= total => None,
            _ => Some(slot + 1),
        }
    }

    fn failed(&self, counter: &AtomicU64, error: String) {
        counter.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut first) = self.first_error.lock() {
            first.get_or_insert(error);
        }
    }

    /// (ok, failed).
    fn counts(&self) -> (u64, u64) {
        let failed =
            self.non_2xx.load(Ordering::Relaxed) + self.conn_errors.load(Ordering::Relaxed);
        (self.ok.load(Ordering::Relaxed), failed)
    }
}

/// Connects and does the HTTP/1.1 handshake; the connection runs in its own task.
async fn connect(
    run: &LoadRun,
    stream: Option<TcpStream>,
) -> Result<SendRequest<Full<Bytes>>, String> {
    let connecting = async {
        let stream = match stream {
            Some(stream) => stream,
            None => TcpStream::connect(&run.addrs[..])
                .await
                .map_err(|e| format!("connect: {e}"))?,
        };
        stream.set_nodelay(true).ok();
        let (sender, connection) = http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| format!("handshake: {}", describe(&e)))?;
        run.tasks.spawn(connection);
        Ok(sender)
    };
    tokio::time::timeout(REQUEST_TIMEOUT, connecting)
        .await
        .unwrap_or_else(|_| Err("connect: timed out".to_owned()))
}

async fn send(
    sender: &mut SendRequest<Full<Bytes>>,
    run: &LoadRun,
    n: u64,
) -> Result<StatusCode, String> {
    sender.ready().await.map_err(|e| describe(&e).to_string())?;
    let target = &run.target;
    let request = run
        .payload
        .request(&target.prefix, &target.authority, n, &run.run_id)
        .map_err(|e| e.to_string())?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| describe(&e).to_string())?;
    let status = response.status();
    response
        .into_body()
        .collect()
        .await
        .map_err(|e| format!("reading the body: {}", describe(&e)))?;
    Ok(status)
}

/// One worker: sequential requests over one keep-alive connection, reconnecting after errors.
async fn worker(
    run: Arc<LoadRun>,
    mut first: Option<TcpStream>,
    mut hist: Histogram<u64>,
) -> Histogram<u64> {
    let mut conn: Option<SendRequest<Full<Bytes>>> = None;
    while let Some(n) = run.next_slot() {
        if conn.as_ref().is_some_and(|c| c.is_closed()) {
            conn = None;
        }
        let sender = match conn {
            Some(ref mut sender) => sender,
            None => {
                let connected = tokio::select! {
                    connected = connect(&run, first.take()) => connected,
                    _ = run.cancel.cancelled() => break,
                };
                match connected {
                    Ok(sender) => conn.insert(sender),
                    Err(e) => {
                        run.failed(&run.conn_errors, e);
                        tokio::select! {
                            _ = tokio::time::sleep(RECONNECT_PAUSE) => continue,
                            _ = run.cancel.cancelled() => break,
                        }
                    }
                }
            }
        };
        let started = Instant::now();
        let result = tokio::select! {
            result = tokio::time::timeout(REQUEST_TIMEOUT, send(sender, &run, n)) => result,
            _ = run.cancel.cancelled() => break,
        };
        match result {
            Ok(Ok(status)) => {
                let micros = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
                hist.saturating_record(micros.max(1));
                if status.is_success() {
                    run.ok.fetch_add(1, Ordering::Relaxed);
                } else {
                    run.failed(&run.non_2xx, format!("HTTP {status}"));
                }
            }
            Ok(Err(e)) => {
                conn = None;
                run.failed(&run.conn_errors, e);
            }
            Err(_) => {
                conn = None;
                run.failed(
                    &run.conn_errors,
                    format!("no response within {} s", REQUEST_TIMEOUT.as_secs()),
                );
            }
        }
    }
    hist
}

async fn report_progress(
    run: Arc<LoadRun>,
    total: Option<u64>,
    started: Instant,
    done: CancellationToken,
) {
    let template = match total {
        Some(_) => "{spinner} load [{elapsed_precise}] {wide_bar} {pos}/{len} {msg}",
        None => "{spinner} load [{elapsed_precise}] {pos} requests, {msg}",
    };
    let mut progress = Progress::new(total, template);
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = done.cancelled() => break,
        }
        let (ok, failed) = run.counts();
        let elapsed = started.elapsed().as_secs_f64();
        let rate = (ok + failed) as f64 / elapsed.max(1e-3);
        let of = total.map(|t| format!("/{t}")).unwrap_or_default();
        progress.update(
            ok + failed,
            format!("{rate:.0} req/s, {failed} errors"),
            || {
                format!(
                    "load: {}{of} requests, {rate:.0} req/s, {failed} errors, {elapsed:.1} s",
                    ok + failed
                )
            },
        );
    }
    progress.bar.finish_and_clear();
}

/// Latency in microseconds as milliseconds with two decimals.
fn ms(us: u64) -> String {
    format!("{:.2} ms", us as f64 / 1000.0)
}

fn latency_line(hist: &Histogram<u64>) -> String {
    if hist.is_empty() {
        return "no responses".to_owned();
    }
    format!(
        "p50 {}, p99 {}, max {}",
        ms(hist.value_at_quantile(0.5)),
        ms(hist.value_at_quantile(0.99)),
        ms(hist.max())
    )
}

/// Resolves the target to loopback addresses and opens the first connection, failing fast
/// with a clear message when nothing listens there.
async fn first_connection(target: &Target) -> Result<(Vec<SocketAddr>, TcpStream), Failure> {
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host((target.host.as_str(), target.port))
        .await
        .map_err(|e| format!("cannot resolve {}: {e}", target.host))?
        .filter(|a| a.ip().is_loopback())
        .collect();
    if addrs.is_empty() {
        return Err(format!("{} does not resolve to a loopback address", target.host).into());
    }
    let url = &target.display;
    match tokio::time::timeout(REQUEST_TIMEOUT, TcpStream::connect(&addrs[..])).await {
        Ok(Ok(stream)) => Ok((addrs, stream)),
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => Err(format!(
            "cannot connect to {url}: connection refused — is `pglogsink serve` running?"
        )
        .into()),
        Ok(Err(e)) => Err(format!("cannot connect to {url}: {e}").into()),
        Err(_) => Err(format!("cannot connect to {url}: timed out").into()),
    }
}

/// The summary printed on stdout after the run.
fn summary(
    run_id: &str,
    ok: u64,
    non_2xx: u64,
    conn_errors: u64,
    secs: f64,
    latency: &Histogram<u64>,
) -> String {
    let failed = non_2xx + conn_errors;
    format!(
        "run id:      {run_id}\n\
         requests:    {ok} ok, {failed} failed ({non_2xx} non-2xx, {conn_errors} connection errors) \
         in {secs:.2} s\n\
         throughput:  {:.0} requests/s\n\
         latency:     {}",
        (ok + failed) as f64 / secs.max(1e-3),
        latency_line(latency)
    )
}

pub(crate) async fn run(args: LoadArgs) -> Result<ExitCode, Failure> {
    let (addrs, first) = first_connection(&args.url).await?;
    let millis = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    let run_id = run_id(millis, std::process::id());
    let total = match args.duration {
        Some(_) => None,
        None => Some(args.requests.unwrap_or(DEFAULT_REQUESTS)),
    };
    let started = Instant::now();
    let cancel = CancellationToken::new();
    let tasks = TaskTracker::new();
    let run = Arc::new(LoadRun {
        target: args.url.clone(),
        addrs,
        payload: Payload::new(args.mode, args.batch, &run_id),
        run_id,
        limit: total.ok_or(started + args.duration.unwrap_or_default()),
        next: AtomicU64::new(0),
        ok: AtomicU64::new(0),
        non_2xx: AtomicU64::new(0),
        conn_errors: AtomicU64::new(0),
        first_error: Mutex::new(None),
        cancel: cancel.clone(),
        tasks: tasks.clone(),
    });
    let on_signal = cancel.clone();
    let signal_task = tasks.spawn(async move {
        super::signal::shutdown_signal().await;
        on_signal.cancel();
    });
    let latency = drive(&run, args.concurrency, first, total, started).await?;
    let elapsed = started.elapsed().as_secs_f64();
    let interrupted = cancel.is_cancelled();
    print_results(&run, &args, elapsed, &latency, interrupted);
    let verified = match (args.verify, interrupted) {
        (false, _) => true,
        (true, true) => {
            println!("verify:      skipped (interrupted)");
            false
        }
        (true, false) => {
            let (ok, failed) = run.counts();
            let rows = ok * run.payload.records;
            let (db, timeout) = (&args.db, args.verify_timeout);
            super::load_verify::verify(db, timeout, &run.run_id, rows, failed, &cancel).await?
        }
    };
    signal_task.abort();
    close_connections(&tasks).await;
    let success = run.counts().1 == 0 && !interrupted && verified;
    Ok(if success {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// Run `concurrency` workers (the first on connection `first`) with a
/// progress line until they are done; their latencies together.
async fn drive(
    run: &Arc<LoadRun>,
    concurrency: u32,
    first: TcpStream,
    total: Option<u64>,
    started: Instant,
) -> Result<Histogram<u64>, Failure> {
    let done = CancellationToken::new();
    let progress = run
        .tasks
        .spawn(report_progress(run.clone(), total, started, done.clone()));
    let template = Histogram::<u64>::new_with_bounds(1, MAX_LATENCY_US, 3)?;
    let mut workers = tokio::task::JoinSet::new();
    let mut first = Some(first);
    for _ in 0..concurrency {
        workers.spawn(worker(
            run.clone(),
            first.take(),
            Histogram::new_from(&template),
        ));
    }
    let mut latency = Histogram::new_from(&template);
    while let Some(joined) = workers.join_next().await {
        latency.add(joined?)?;
    }
    done.cancel();
    progress.await.ok();
    Ok(latency)
}

/// The summary on stdout, with the records sent in ingest modes and what
/// went wrong first.
fn print_results(
    run: &LoadRun,
    args: &LoadArgs,
    elapsed: f64,
    latency: &Histogram<u64>,
    interrupted: bool,
) {
    let (ok, _) = run.counts();
    let (non_2xx, conn_errors) = (
        run.non_2xx.load(Ordering::Relaxed),
        run.conn_errors.load(Ordering::Relaxed),
    );
    println!(
        "{}",
        summary(&run.run_id, ok, non_2xx, conn_errors, elapsed, latency)
    );
    if args.mode != LoadMode::Recipes {
        let records = ok * run.payload.records;
        println!(
            "records:     {records} in {ok} requests of {}: {:.0} records/s",
            run.payload.records,
            records as f64 / elapsed.max(1e-3)
        );
    }
    if interrupted {
        println!("interrupted: stopped early by a signal");
    }
    if let Some(e) = run.first_error.lock().ok().and_then(|e| e.clone()) {
        println!("first error: {e}");
    }
}

/// The workers have returned, so every connection's sender is gone and its
/// task is closing: wait for them, within a request's timeout.
async fn close_connections(tasks: &TaskTracker) {
    tasks.close();
    if tokio::time::timeout(REQUEST_TIMEOUT, tasks.wait())
        .await
        .is_err()
    {
        eprintln!(
            "pglogsink: {} connections still closing after {REQUEST_TIMEOUT:?}; leaving them",
            tasks.len()
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_loopback_http_urls() {
        for url in [
            "http://127.0.0.1:8080",
            "http://127.1.2.3",
            "http://localhost:9000/",
            "http://LOCALHOST",
            "http://[::1]:8080",
        ] {
            assert!(parse_target(url).is_ok(), "{url} should be accepted");
        }
        let t = parse_target("http://[::1]:8080").expect("valid");
        assert_eq!(
            (t.host.as_str(), t.port, t.authority.as_str()),
            ("::1", 8080, "[::1]:8080")
        );
        assert_eq!(parse_target("http://localhost").expect("valid").port, 80);
    }

    #[test]
    fn rejects_remote_and_non_http_urls() {
        for url in [
            "http://10.0.0.1:8080",
            "http://example.com",
            "http://[2001:db8::1]/",
            "http://0.0.0.0:8080",
            "http://localhost.example.com",
        ] {
            let e = parse_target(url).expect_err(url);
            assert!(e.contains("not a loopback address"), "{url}: {e}");
        }
        assert!(parse_target("https://127.0.0.1:8443")
            .expect_err("https")
            .contains("only http://"));
        assert!(parse_target("127.0.0.1:8080").is_err());
        assert!(parse_target("http://user:pw@127.0.0.1/").is_err());
        assert!(parse_target("http://127.0.0.1/?a=b").is_err());
        assert!(parse_target("http://127.0.0.1 :80").is_err());
        assert!(parse_target("").is_err());
    }

    #[test]
    fn request_paths_keep_the_url_prefix() {
        let t = parse_target("http://127.0.0.1:8080").expect("valid");
        assert_eq!(t.prefix, "");
        assert_eq!(t.display, "http://127.0.0.1:8080");
        let t = parse_target("http://localhost:8080/api/").expect("valid");
        assert_eq!(t.prefix, "/api");
        assert_eq!(t.authority, "localhost:8080");
    }

    #[test]
    fn numeric_flags_are_validated() {
        assert_eq!(parse_concurrency("1"), Ok(1));
        assert_eq!(parse_concurrency("10000"), Ok(10_000));
        for bad in ["0", "10001", "-3", "x", ""] {
            assert!(parse_concurrency(bad).is_err(), "{bad}");
        }
        assert_eq!(parse_requests("1"), Ok(1));
        assert!(parse_requests("0").is_err());
        assert!(parse_requests("-1").is_err());
        assert_eq!(parse_run_time("0.5"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_run_time("3600"), Ok(Duration::from_secs(3600)));
        for bad in ["0", "-1", "3600.5", "NaN", "inf", "1e400", "soon"] {
            assert!(parse_run_time(bad).is_err(), "{bad}");
        }
        assert_eq!(parse_verify_timeout("30"), Ok(Duration::from_secs(30)));
    }

    #[test]
    fn run_ids_name_time_and_process() {
        assert_eq!(run_id(1_732_370_000_000, 4242), "load-1732370000000-4242");
        assert_ne!(run_id(1, 2), run_id(1, 3));
    }

    #[test]
    fn latency_is_reported_in_milliseconds() {
        let mut h = Histogram::<u64>::new_with_bounds(1, MAX_LATENCY_US, 3).expect("bounds");
        assert_eq!(latency_line(&h), "no responses");
        for _ in 0..98 {
            h.saturating_record(1_200);
        }
        h.saturating_record(4_500);
        h.saturating_record(12_300);
        assert_eq!(latency_line(&h), "p50 1.20 ms, p99 4.50 ms, max 12.30 ms");
        assert_eq!(ms(1_200), "1.20 ms");
    }

    #[test]
    fn summary_has_the_documented_shape() {
        let mut h = Histogram::<u64>::new_with_bounds(1, MAX_LATENCY_US, 3).expect("bounds");
        h.saturating_record(1_200);
        let text = summary("load-1-2", 18, 1, 1, 2.0, &h);
        assert_eq!(
            text,
            "run id:      load-1-2\n\
             requests:    18 ok, 2 failed (1 non-2xx, 1 connection errors) in 2.00 s\n\
             throughput:  10 requests/s\n\
             latency:     p50 1.20 ms, p99 1.20 ms, max 1.20 ms"
        );
    }

    #[test]
    fn request_slots_are_handed_out_exactly_once() {
        let run = LoadRun {
            target: parse_target("http://127.0.0.1:1").expect("valid"),
            addrs: Vec::new(),
            run_id: run_id(0, 0),
            payload: Payload::new(LoadMode::Recipes, 1, "r"),
            limit: Ok(3),
            next: AtomicU64::new(0),
            ok: AtomicU64::new(0),
            non_2xx: AtomicU64::new(0),
            conn_errors: AtomicU64::new(0),
            first_error: Mutex::new(None),
            cancel: CancellationToken::new(),
            tasks: TaskTracker::new(),
        };
        let slots: Vec<_> = std::iter::from_fn(|| run.next_slot()).collect();
        assert_eq!(slots, [1, 2, 3]);
        assert_eq!(run.next_slot(), None);
    }
}
