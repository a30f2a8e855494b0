//! Ingest over HTTP beside the in-process pipeline, in one run, against one
//! PostgreSQL: records/s from the first record sent until the last is
//! committed, and the CPU each party spent.
//!
//! ```sh
//! cargo bench --bench ingest -- --records 200000 --batch 1000 --rounds 3 --json /tmp/ingest.json
//! ```
//!
//! * `in-process`: this process runs a sink of its own (the library, same
//!   settings as `serve`) and calls `Logger::send` for every record, built
//!   in the loop, as an application would.
//! * `ndjson` and `otlp`: `pglogsink load --mode ndjson|otlp --batch B
//!   --concurrency C` against a running `pglogsink serve` (the release
//!   binary cargo built for this bench): `B` records per request, NDJSON or
//!   OTLP protobuf (what the OpenTelemetry SDKs send by default).
//!
//! Each run is timed from its start until the sink's `written` counter (the
//! library's stats in-process, `/healthz` for `serve`, polled every 5 ms)
//! has grown by the run's records: committed, not merely queued. The order
//! of the three turns every round, to spread drift. CPU seconds are read
//! from the kernel: the bench process (in-process: producer + sink), the
//! `load` client, `serve`, and the PostgreSQL cluster's processes (private
//! cluster only). At the end the row counts are checked exactly.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use pglogsink::embedded::EmbeddedPostgres;
use pglogsink::{CancellationToken, Level, Logger, Record, SinkConfig, TableName};
use serde_json::json;

type Fail = Box<dyn std::error::Error + Send + Sync>;

const BIN: &str = env!("CARGO_BIN_EXE_pglogsink");
const POLL: Duration = Duration::from_millis(5);
const RUN_TIMEOUT: Duration = Duration::from_secs(300);

struct Args {
    records: u64,
    batch: u64,
    rounds: usize,
    concurrency: u32,
    json: Option<PathBuf>,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        records: 200_000,
        batch: 1000,
        rounds: 3,
        concurrency: 8,
        json: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut number = |name: &str| -> Result<u64, String> {
            it.next()
                .and_then(|v| v.parse().ok())
                .filter(|&n| n > 0)
                .ok_or(format!("{name}: expected a positive whole number"))
        };
        match arg.as_str() {
            "--records" => args.records = number("--records")?,
            "--batch" => args.batch = number("--batch")?,
            "--rounds" => args.rounds = number("--rounds")? as usize,
            "--concurrency" => args.concurrency = number("--concurrency")? as u32,
            "--json" => args.json = Some(it.next().ok_or("--json needs a path")?.into()),
            "-h" | "--help" => {
                return Err(
                    "usage: cargo bench --bench ingest -- [--records N] [--batch B] \
                            [--rounds N] [--concurrency C] [--json PATH]"
                        .to_owned(),
                )
            }
            _ => {} // cargo bench passes --bench
        }
    }
    if args.records % args.batch != 0 {
        return Err("--records must be a multiple of --batch".to_owned());
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
            eprintln!("ingest: starting a private PostgreSQL cluster...");
            match EmbeddedPostgres::temporary() {
                Ok(server) => {
                    let url = server.url();
                    (Some(server), url)
                }
                Err(e) => {
                    eprintln!("ingest: {e}");
                    return ExitCode::FAILURE;
                }
            }
        }
    };
    let pid = std::process::id();
    let http_table = TableName::parse(&format!("bench_ingest_{pid}")).expect("valid");
    let local_table = TableName::parse(&format!("bench_ingest_local_{pid}")).expect("valid");
    let postmaster = server
        .as_ref()
        .map(|s| s.data_dir().join("pgdata").join("postmaster.pid"));
    let result = run(
        &args,
        &url,
        &http_table,
        &local_table,
        postmaster.as_deref(),
    );
    for table in [&http_table, &local_table] {
        if let Err(e) = drop_tables(&url, table) {
            eprintln!("ingest: could not drop {table}: {e}");
        }
    }
    let _ = std::fs::remove_dir_all(scratch_dir());
    let code = match result {
        Ok(summary) => match &args.json {
            Some(path) => match std::fs::write(path, format!("{summary:#}\n")) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("ingest: cannot write {}: {e}", path.display());
                    ExitCode::FAILURE
                }
            },
            None => ExitCode::SUCCESS,
        },
        Err(e) => {
            eprintln!("ingest: FAILED: {e}");
            ExitCode::FAILURE
        }
    };
    if let Some(server) = server {
        if let Err(e) = server.stop() {
            eprintln!("ingest: stopping the private cluster: {e}");
        }
    }
    code
}

/// One timed run: records/s and CPU seconds (client or producer, server
/// or sink, PostgreSQL).
#[derive(Debug, Clone, Copy, Default)]
struct Measured {
    rate: f64,
    client_cpu: f64,
    server_cpu: f64,
    postgres_cpu: f64,
}

const METHODS: [&str; 3] = ["in-process", "ndjson", "otlp"];

fn run(
    args: &Args,
    url: &str,
    http_table: &TableName,
    local_table: &TableName,
    postmaster: Option<&Path>,
) -> Result<serde_json::Value, Fail> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let config = pglogsink::parse_url(url)?;
    let pool = pglogsink::pool(config, pglogsink::DEFAULT_POOL_SIZE)?;
    runtime.block_on(pglogsink::migrate(&pool, local_table))?;
    // Throughput, not backpressure: the queue takes every record (past a
    // budget the excess would be handed back, and answered 503 over HTTP;
    // benches/pressure.sh measures that).
    let sink_config = SinkConfig {
        table: local_table.to_string(),
        spool_dir: Some(scratch_dir().join("local-spool")),
        max_queue_bytes: QUEUE_BYTES,
        ..SinkConfig::default()
    };
    let (logger, worker) = runtime.block_on(async {
        pglogsink::spawn(pool.clone(), &sink_config, CancellationToken::new())
    })?;
    eprintln!("ingest: starting serve...");
    let serve = Serve::start(url, http_table)?;
    let cluster = postmaster.map(|p| p.to_owned());
    let postgres_cpu = || cluster.as_deref().map_or(0.0, cluster_cpu);

    let mut rounds: Vec<[Measured; 3]> = Vec::new();
    for round in 0..args.rounds {
        eprintln!("ingest: round {} of {}...", round + 1, args.rounds);
        let mut measured = [Measured::default(); 3];
        for k in 0..3 {
            let method = (round + k) % 3;
            let pg_before = postgres_cpu();
            let mut m = match method {
                0 => in_process(&logger, args.records, round)?,
                1 => over_http(&serve, args, "ndjson")?,
                _ => over_http(&serve, args, "otlp")?,
            };
            m.postgres_cpu = postgres_cpu() - pg_before;
            measured[method] = m;
        }
        rounds.push(measured);
    }
    let report = runtime.block_on(worker.shutdown(Duration::from_secs(60)));
    let (code, serve_report) = serve.stop()?;
    let expected_local = args.records * args.rounds as u64;
    let counted = (
        runtime.block_on(count(&pool, local_table))?,
        runtime.block_on(count(&pool, http_table))?,
    );
    if code != 0
        || report.written != expected_local
        || counted != (expected_local, 2 * expected_local)
    {
        return Err(format!(
            "rows: in-process {} of {expected_local} (report: {report}), over HTTP {} of {} \
             (serve exit {code}: {serve_report})",
            counted.0,
            counted.1,
            2 * expected_local
        )
        .into());
    }
    Ok(print_table(args, &rounds, postmaster.is_some()))
}

fn print_table(args: &Args, rounds: &[[Measured; 3]], have_pg: bool) -> serde_json::Value {
    println!();
    println!(
        "ingest: {} rounds of {} records; HTTP in requests of {} records, concurrency {}, loopback",
        args.rounds, args.records, args.batch, args.concurrency
    );
    println!(
        "{:<8} {:>14} {:>14} {:>14} {:>12} {:>12}",
        "round", "in-process/s", "ndjson/s", "otlp/s", "ndjson/in", "otlp/in"
    );
    let row = |label: &str, m: [f64; 3]| {
        println!(
            "{label:<8} {:>14.0} {:>14.0} {:>14.0} {:>12.2} {:>12.2}",
            m[0],
            m[1],
            m[2],
            m[1] / m[0],
            m[2] / m[0]
        )
    };
    for (i, r) in rounds.iter().enumerate() {
        row(&(i + 1).to_string(), [r[0].rate, r[1].rate, r[2].rate]);
    }
    let med =
        |f: &dyn Fn(&Measured) -> f64, k: usize| median(rounds.iter().map(|r| f(&r[k])).collect());
    let rates = [0, 1, 2].map(|k| med(&|m| m.rate, k));
    row("median", rates);
    // CPU seconds per 100,000 records, medians.
    let per = 100_000.0 / args.records as f64;
    println!();
    println!("CPU seconds per 100,000 records (medians):");
    println!(
        "{:<12} {:>16} {:>16} {:>12}",
        "", "client/producer", "serve/sink", "PostgreSQL"
    );
    let mut cpu = Vec::new();
    for (k, name) in METHODS.iter().enumerate() {
        let c = [
            med(&|m| m.client_cpu, k) * per,
            med(&|m| m.server_cpu, k) * per,
            med(&|m| m.postgres_cpu, k) * per,
        ];
        let pg = if have_pg {
            format!("{:>12.3}", c[2])
        } else {
            format!("{:>12}", "n/a")
        };
        let server = if k == 0 {
            format!("{:>16}", "(in client)")
        } else {
            format!("{:>16.3}", c[1])
        };
        println!("{name:<12} {:>16.3} {server} {pg}", c[0]);
        cpu.push(json!({"method": name, "client": c[0], "server": c[1], "postgres": c[2]}));
    }
    json!({
        "records": args.records,
        "batch": args.batch,
        "rounds": args.rounds,
        "concurrency": args.concurrency,
        "median_records_per_s": {"in_process": rates[0], "ndjson": rates[1], "otlp": rates[2]},
        "ratio_to_in_process": {"ndjson": rates[1] / rates[0], "otlp": rates[2] / rates[0]},
        "cpu_seconds_per_100k_records": cpu,
        "per_round": rounds.iter().map(|r| [r[0].rate, r[1].rate, r[2].rate]).collect::<Vec<_>>(),
    })
}

/// The application's side: build and send every record, then wait until
/// the sink has committed them.
fn in_process(logger: &Logger, records: u64, round: usize) -> Result<Measured, Fail> {
    let run_id = format!("local-{round}");
    let base = logger.stats().written;
    let cpu_before = own_cpu();
    let started = Instant::now();
    for i in 0..records {
        let record = Record::new(Level::Info, format!("load record {i}"))
            .target("load")
            .field("run_id", run_id.clone())
            .field("n", i);
        logger.send(record)?;
    }
    wait_for(|| Ok(logger.stats().written >= base + records))?;
    let secs = started.elapsed().as_secs_f64();
    Ok(Measured {
        rate: records as f64 / secs,
        client_cpu: own_cpu() - cpu_before,
        ..Measured::default()
    })
}

/// `load` against `serve`, timed until `serve`'s sink has written it all.
fn over_http(serve: &Serve, args: &Args, mode: &str) -> Result<Measured, Fail> {
    let base = serve.written()?;
    let server_before = process_cpu(serve.child.id())?;
    let children_before = children_cpu();
    let started = Instant::now();
    let mut load = Command::new(BIN)
        .args(["load", "--url", &format!("http://{}", serve.addr)])
        .args(["--mode", mode, "--batch", &args.batch.to_string()])
        .args(["--requests", &(args.records / args.batch).to_string()])
        .args(["--concurrency", &args.concurrency.to_string()])
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()?;
    wait_for(|| Ok(serve.written()? >= base + args.records))?;
    let secs = started.elapsed().as_secs_f64();
    let mut stdout = String::new();
    load.stdout
        .take()
        .ok_or("no stdout")?
        .read_to_string(&mut stdout)?;
    let status = load.wait()?;
    let requests = args.records / args.batch;
    if !status.success() || !stdout.contains(&format!("{requests} ok, 0 failed")) {
        return Err(format!("load --mode {mode} failed ({status}): {stdout}").into());
    }
    Ok(Measured {
        rate: args.records as f64 / secs,
        client_cpu: children_cpu() - children_before,
        server_cpu: process_cpu(serve.child.id())? - server_before,
        postgres_cpu: 0.0,
    })
}

fn wait_for(mut done: impl FnMut() -> Result<bool, Fail>) -> Result<(), Fail> {
    let deadline = Instant::now() + RUN_TIMEOUT;
    while !done()? {
        if Instant::now() > deadline {
            return Err("the records were not written within 300 s".into());
        }
        std::thread::sleep(POLL);
    }
    Ok(())
}

/// A running `pglogsink serve` (release build), stopped on drop.
struct Serve {
    child: Child,
    addr: SocketAddr,
    stderr: PathBuf,
}

/// The queue budget of both sinks: room for every record of a round.
const QUEUE_BYTES: usize = 4 << 30;

impl Serve {
    fn start(url: &str, table: &TableName) -> Result<Serve, Fail> {
        let addr = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?.local_addr()?;
        let state = scratch_dir().join("serve");
        std::fs::create_dir_all(&state)?;
        let stderr = state.join("stderr.log");
        let child = Command::new(BIN)
            .args(["serve", "--listen", &addr.to_string()])
            .args(["--table", &table.to_string()])
            .args(["--max-queue-bytes", &QUEUE_BYTES.to_string()])
            .arg("--data-dir")
            .arg(&state)
            .env("DATABASE_URL", url)
            // Only the ingested records in the table.
            .env("PGLOGSINK_TABLE_FILTER", "off")
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&stderr)?)
            .spawn()?;
        let serve = Serve {
            child,
            addr,
            stderr,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        while serve.written().is_err() {
            if Instant::now() > deadline {
                return Err("serve did not answer /healthz within 60 s".into());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(serve)
    }

    /// The sink's `written` counter, from `/healthz`.
    fn written(&self) -> Result<u64, Fail> {
        let mut stream = TcpStream::connect(self.addr)?;
        stream.set_read_timeout(Some(Duration::from_secs(5)))?;
        write!(stream, "GET /healthz HTTP/1.0\r\nHost: bench\r\n\r\n")?;
        let mut response = String::new();
        stream.read_to_string(&mut response)?;
        let body = response.split("\r\n\r\n").nth(1).ok_or("no body")?;
        let health: serde_json::Value = serde_json::from_str(body)?;
        health["sink"]["written"]
            .as_u64()
            .ok_or_else(|| format!("no sink.written in {body}").into())
    }

    /// SIGTERM, wait; the exit code and the sink's report line.
    fn stop(mut self) -> Result<(i32, String), Fail> {
        // SAFETY: signalling our own child by its pid.
        unsafe {
            libc::kill(i32::try_from(self.child.id())?, libc::SIGTERM);
        }
        let status = self.child.wait()?;
        let text = std::fs::read_to_string(&self.stderr).unwrap_or_default();
        let report = text
            .lines()
            .rev()
            .find_map(|l| {
                l.split_once("pglogsink: stopped: ")
                    .map(|(_, r)| r.to_owned())
            })
            .unwrap_or_else(|| text.lines().last().unwrap_or_default().to_owned());
        Ok((status.code().unwrap_or(-1), report))
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn ticks_per_second() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks > 0 {
        ticks as f64
    } else {
        100.0
    }
}

/// utime + stime (and, with `children`, cutime + cstime) of a process, in
/// seconds, from /proc/<pid>/stat.
fn stat_cpu(pid: u32, children: bool) -> Result<f64, Fail> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name, which ends with the last ')'.
    let rest = &stat[stat.rfind(')').ok_or("bad stat")? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime, stime, cutime, cstime are fields 14-17 of stat: 11-14 here.
    let field = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    let mut ticks = field(11) + field(12);
    if children {
        ticks += field(13) + field(14);
    }
    Ok(ticks / ticks_per_second())
}

fn process_cpu(pid: u32) -> Result<f64, Fail> {
    stat_cpu(pid, false)
}

/// The PostgreSQL cluster: its postmaster, the processes it started
/// (backends, walwriter, checkpointer...), and those it reaped.
fn cluster_cpu(pidfile: &Path) -> f64 {
    let Some(postmaster) = std::fs::read_to_string(pidfile)
        .ok()
        .and_then(|t| t.lines().next().and_then(|l| l.trim().parse::<u32>().ok()))
    else {
        return 0.0;
    };
    let mut total = stat_cpu(postmaster, true).unwrap_or(0.0);
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return total;
    };
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let parent = std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .ok()
            .and_then(|s| {
                let rest = s[s.rfind(')')? + 2..].to_owned();
                rest.split_whitespace().nth(1)?.parse::<u32>().ok()
            });
        if parent == Some(postmaster) {
            total += stat_cpu(pid, false).unwrap_or(0.0);
        }
    }
    total
}

fn rusage_seconds(who: i32) -> f64 {
    // SAFETY: getrusage fills the struct it is given.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(who, &mut usage) };
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    secs(usage.ru_utime) + secs(usage.ru_stime)
}

fn own_cpu() -> f64 {
    rusage_seconds(libc::RUSAGE_SELF)
}

/// CPU of the children this process has waited for.
fn children_cpu() -> f64 {
    rusage_seconds(libc::RUSAGE_CHILDREN)
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn scratch_dir() -> PathBuf {
    std::env::temp_dir().join(format!("pglogsink-bench-ingest-{}", std::process::id()))
}

async fn count(pool: &pglogsink::deadpool_postgres::Pool, table: &TableName) -> Result<u64, Fail> {
    let client = pool.get().await?;
    let row = client
        .query_one(&format!("SELECT count(*) FROM {}", table.quoted()), &[])
        .await?;
    Ok(u64::try_from(row.get::<_, i64>(0))?)
}

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
