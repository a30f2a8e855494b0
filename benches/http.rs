//! What logging costs the web service: the bundled load client against
//! `serve` with the sink on, and against the same binary with `--no-log`,
//! alternating, in one run.
//!
//! ```sh
//! cargo bench --bench http -- --requests 100000 --rounds 3 --json /tmp/http.json
//! ```
//!
//! It builds nothing itself: it runs the `pglogsink` binary cargo built for
//! this bench (release). Both servers run at once on free loopback ports,
//! against `DATABASE_URL` or a private throw-away cluster the harness
//! starts, with a table of their own (dropped at the end). Each round loads
//! both servers one after the other (`load --requests N --concurrency 77`,
//! the order swapped every round to spread drift evenly); the runs against
//! the logging server use `load --verify`, which also waits until every
//! request's row is committed, so a round never starts while the previous
//! one's backlog is still being written. The table reports each round and
//! the medians: requests/s with logging on over requests/s with it off, and
//! the p99 of each.
//!
//! With `--no-log`, `serve` answers without building or queuing a record and
//! without writing its `tracing` request events to the table; the HTTP
//! server, routing and request-id middleware are the same.

use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use pglogsink::embedded::EmbeddedPostgres;
use pglogsink::TableName;
use serde_json::json;

type Fail = Box<dyn std::error::Error + Send + Sync>;

const BIN: &str = env!("CARGO_BIN_EXE_pglogsink");
const DEFAULT_REQUESTS: u64 = 100_000;
const DEFAULT_ROUNDS: usize = 3;
const CONCURRENCY: u32 = 77;
const READY_TIMEOUT: Duration = Duration::from_secs(60);
const STOP_TIMEOUT: Duration = Duration::from_secs(60);
/// Most requests one run may send, to keep the bench bounded.
const MAX_REQUESTS: u64 = 10_000_000;

struct Args {
    requests: u64,
    rounds: usize,
    json: Option<PathBuf>,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        requests: DEFAULT_REQUESTS,
        rounds: DEFAULT_ROUNDS,
        json: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = |name: &str| it.next().ok_or(format!("{name} needs a value"));
        match arg.as_str() {
            "--requests" => {
                args.requests = value("--requests")?
                    .parse()
                    .ok()
                    .filter(|n| (1..=MAX_REQUESTS).contains(n))
                    .ok_or(format!("--requests: expected 1 to {MAX_REQUESTS}"))?
            }
            "--rounds" => {
                args.rounds = value("--rounds")?
                    .parse()
                    .ok()
                    .filter(|&n| n > 0)
                    .ok_or("--rounds: expected a positive whole number")?
            }
            "--json" => args.json = Some(value("--json")?.into()),
            "-h" | "--help" => {
                return Err(
                    "usage: cargo bench --bench http -- [--requests N] [--rounds N] \
                            [--json PATH]"
                        .to_owned(),
                )
            }
            // `cargo bench` passes --bench; not ours.
            _ => {}
        }
    }
    Ok(args)
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(args) => args,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    let (server, url) = match std::env::var("DATABASE_URL") {
        Ok(url) => (None, url),
        Err(_) => {
            eprintln!("http: starting a private PostgreSQL cluster...");
            match EmbeddedPostgres::temporary() {
                Ok(server) => {
                    let url = server.url();
                    (Some(server), url)
                }
                Err(e) => {
                    eprintln!("http: {e}");
                    return ExitCode::FAILURE;
                }
            }
        }
    };
    let table = TableName::parse(&format!("bench_http_{}", std::process::id()))
        .expect("a valid table name");
    let result = run(&args, &url, &table);
    if let Err(e) = drop_tables(&url, &table) {
        eprintln!("http: could not drop {table}: {e}");
    }
    let _ = std::fs::remove_dir_all(scratch_dir());
    let code = match result {
        Ok(summary) => match &args.json {
            Some(path) => match std::fs::write(path, format!("{summary:#}\n")) {
                Ok(()) => {
                    println!("wrote {}", path.display());
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("http: cannot write {}: {e}", path.display());
                    ExitCode::FAILURE
                }
            },
            None => ExitCode::SUCCESS,
        },
        Err(e) => {
            eprintln!("http: FAILED: {e}");
            ExitCode::FAILURE
        }
    };
    if let Some(server) = server {
        if let Err(e) = server.stop() {
            eprintln!("http: stopping the private cluster: {e}");
        }
    }
    code
}

/// A running `pglogsink serve`, stopped (SIGTERM) on drop if still running.
struct Serve {
    child: Child,
    addr: SocketAddr,
    stderr: PathBuf,
}

impl Serve {
    fn start(url: &str, table: &TableName, log: bool) -> Result<Serve, Fail> {
        let addr = free_port()?;
        // The sink's state (its spool) goes to a directory of this
        // server's own: two sinks may not share a spool.
        let state = scratch_dir().join(if log { "on" } else { "off" });
        std::fs::create_dir_all(&state)?;
        let stderr = state.join("stderr.log");
        let mut command = Command::new(BIN);
        command
            .args(["serve", "--listen", &addr.to_string()])
            .args(["--table", &table.to_string()])
            .arg("--data-dir")
            .arg(&state)
            .env("DATABASE_URL", url)
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&stderr)?);
        if !log {
            command.arg("--no-log");
        }
        let child = command.spawn()?;
        let mut serve = Serve {
            child,
            addr,
            stderr,
        };
        serve.wait_ready()?;
        Ok(serve)
    }

    fn wait_ready(&mut self) -> Result<(), Fail> {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Some(status) = self.child.try_wait()? {
                return Err(format!("serve exited early ({status}): {}", self.log_tail()).into());
            }
            if TcpStream::connect_timeout(&self.addr, Duration::from_millis(200)).is_ok() {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!("serve did not listen on {} in time", self.addr).into());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.stderr).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(10)..].join(" | ")
    }

    /// SIGTERM, then wait; returns the exit code and the sink's final
    /// report line (records and batches written).
    fn stop(mut self) -> Result<(i32, String), Fail> {
        let code = self.terminate()?;
        if code != 0 {
            eprintln!("http: serve on {} said: {}", self.addr, self.log_tail());
        }
        let text = std::fs::read_to_string(&self.stderr).unwrap_or_default();
        let report = text
            .lines()
            .rev()
            .find_map(|l| {
                l.split_once("pglogsink: stopped: ")
                    .map(|(_, r)| r.to_owned())
            })
            .unwrap_or_default();
        Ok((code, report))
    }

    fn terminate(&mut self) -> Result<i32, Fail> {
        if let Some(status) = self.child.try_wait()? {
            return Ok(status.code().unwrap_or(-1));
        }
        let pid = i32::try_from(self.child.id())?;
        // SAFETY: signalling our own child by its pid.
        unsafe {
            libc::kill(pid, libc::SIGTERM);
        }
        let deadline = Instant::now() + STOP_TIMEOUT;
        loop {
            if let Some(status) = self.child.try_wait()? {
                return Ok(status.code().unwrap_or(-1));
            }
            if Instant::now() > deadline {
                self.child.kill()?;
                self.child.wait()?;
                return Err("serve did not stop within 60 s of SIGTERM".into());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.terminate();
    }
}

/// Where the servers keep their state and stderr; removed at the end.
fn scratch_dir() -> PathBuf {
    std::env::temp_dir().join(format!("pglogsink-bench-http-{}", std::process::id()))
}

fn free_port() -> Result<SocketAddr, Fail> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
    Ok(listener.local_addr()?)
}

/// One load run's summary.
#[derive(Debug, Clone, Copy)]
struct Load {
    requests_per_s: f64,
    p50_ms: f64,
    p99_ms: f64,
}

fn load(
    serve: &Serve,
    url: &str,
    table: &TableName,
    requests: u64,
    verify: bool,
) -> Result<Load, Fail> {
    let mut command = Command::new(BIN);
    command
        .args(["load", "--url", &format!("http://{}", serve.addr)])
        .args(["--requests", &requests.to_string()])
        .args(["--concurrency", &CONCURRENCY.to_string()])
        .env_remove("RUST_LOG")
        .stdin(Stdio::null());
    if verify {
        command
            .args(["--verify", "--table", &table.to_string()])
            .env("DATABASE_URL", url);
    }
    let output = command.output()?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        return Err(format!(
            "load failed ({}): {} {}",
            output.status,
            stdout.trim(),
            String::from_utf8_lossy(&output.stderr).trim()
        )
        .into());
    }
    parse_summary(&stdout).ok_or_else(|| format!("unexpected load output: {stdout}").into())
}

/// Reads `throughput:  N requests/s` and `latency:     p50 X ms, p99 Y ms, ...`.
fn parse_summary(text: &str) -> Option<Load> {
    let field = |line: &str, key: &str| -> Option<f64> {
        let rest = &line[line.find(key)? + key.len()..];
        rest.split_whitespace()
            .next()?
            .trim_end_matches(',')
            .parse()
            .ok()
    };
    let throughput = text.lines().find(|l| l.starts_with("throughput:"))?;
    let latency = text.lines().find(|l| l.starts_with("latency:"))?;
    Some(Load {
        requests_per_s: field(throughput, "throughput:")?,
        p50_ms: field(latency, "p50 ")?,
        p99_ms: field(latency, "p99 ")?,
    })
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn run(args: &Args, url: &str, table: &TableName) -> Result<serde_json::Value, Fail> {
    eprintln!("http: starting serve (logging on) and serve --no-log...");
    let on = Serve::start(url, table, true)?;
    let off = Serve::start(url, table, false)?;
    let mut rounds: Vec<(Load, Load)> = Vec::new();
    for round in 0..args.rounds {
        eprintln!("http: round {} of {}...", round + 1, args.rounds);
        let (a, b) = if round % 2 == 0 {
            let a = load(&on, url, table, args.requests, true)?;
            (a, load(&off, url, table, args.requests, false)?)
        } else {
            let b = load(&off, url, table, args.requests, false)?;
            (load(&on, url, table, args.requests, true)?, b)
        };
        rounds.push((a, b));
    }
    let (on_code, on_report) = on.stop()?;
    let (off_code, _) = off.stop()?;
    if on_code != 0 || off_code != 0 {
        return Err(format!(
            "serve exited with {on_code} (logging on) and {off_code} (--no-log); \
             expected 0: every record written"
        )
        .into());
    }

    println!();
    println!(
        "http overhead: {} rounds of {} requests each, concurrency {CONCURRENCY}, loopback",
        args.rounds, args.requests
    );
    println!(
        "{:<8} {:>14} {:>10} {:>14} {:>10} {:>9}",
        "round", "on req/s", "on p99", "off req/s", "off p99", "on/off"
    );
    for (i, (a, b)) in rounds.iter().enumerate() {
        println!(
            "{:<8} {:>14.0} {:>8.2}ms {:>14.0} {:>8.2}ms {:>9.3}",
            i + 1,
            a.requests_per_s,
            a.p99_ms,
            b.requests_per_s,
            b.p99_ms,
            a.requests_per_s / b.requests_per_s
        );
    }
    let on_rate = median(rounds.iter().map(|r| r.0.requests_per_s).collect());
    let off_rate = median(rounds.iter().map(|r| r.1.requests_per_s).collect());
    let on_p99 = median(rounds.iter().map(|r| r.0.p99_ms).collect());
    let off_p99 = median(rounds.iter().map(|r| r.1.p99_ms).collect());
    let on_p50 = median(rounds.iter().map(|r| r.0.p50_ms).collect());
    let off_p50 = median(rounds.iter().map(|r| r.1.p50_ms).collect());
    let ratio = on_rate / off_rate;
    println!(
        "{:<8} {:>14.0} {:>8.2}ms {:>14.0} {:>8.2}ms {:>9.3}",
        "median", on_rate, on_p99, off_rate, off_p99, ratio
    );
    println!("logging on / off: {ratio:.3} of the requests/s (target >= 0.95)");
    println!("the logging server's sink: {on_report}");
    Ok(json!({
        "requests": args.requests,
        "rounds": args.rounds,
        "concurrency": CONCURRENCY,
        "logging_on": {"requests_per_s": on_rate, "p50_ms": on_p50, "p99_ms": on_p99},
        "logging_off": {"requests_per_s": off_rate, "p50_ms": off_p50, "p99_ms": off_p99},
        "ratio": ratio,
        "sink_report": on_report,
        "per_round": rounds.iter().map(|(a, b)| json!({
            "on": {"requests_per_s": a.requests_per_s, "p99_ms": a.p99_ms},
            "off": {"requests_per_s": b.requests_per_s, "p99_ms": b.p99_ms},
        })).collect::<Vec<_>>(),
    }))
}

/// Drop the bench's table and the sink's side tables.
fn drop_tables(url: &str, table: &TableName) -> Result<(), Fail> {
    let config = pglogsink::parse_url(url)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let pool = pglogsink::pool(config, 1)?;
        let client = pool.get().await?;
        client
            .batch_execute(&format!(
                "DROP TABLE IF EXISTS {}, {}, {}",
                table.quoted(),
                table.ledger_table().quoted(),
                table.rejected_table().quoted()
            ))
            .await?;
        Ok(())
    })
}
