//! What one `log()` call costs the producer, next to a bare `flume` send of
//! the same record and `tracing-appender`'s non-blocking writer, with one,
//! two and four producer threads.
//!
//! ```sh
//! cargo bench --bench log_call
//! ```
//!
//! Criterion prints its own estimates per function; at the end a table gives
//! the median nanoseconds per call of each method and its ratio to the bare
//! flume send measured in the same run (absolute times drift on a shared
//! machine, ratios much less).
//!
//! # Keeping the queue bounded, and the comparison fair
//!
//! No database is needed: the sink's pool points at a refused port
//! (127.0.0.1:1). Such a sink never drains its queue, so a criterion run of
//! hundreds of millions of calls would grow it without bound, and a queue
//! that keeps growing makes every call pay for fresh pages and reallocation,
//! which is not what `log()` costs in a running service. So every sample is
//! cut into chunks of [`CHUNK`] calls per thread:
//!
//! * before a chunk (not timed), a fresh sink is spawned on a
//!   *current-thread* Tokio runtime. Its consumer task only runs while this
//!   harness blocks on that runtime, never during the timed calls: nothing
//!   takes records off the queue or contends for its lock while `log()` is
//!   measured;
//! * the chunk's calls are timed: wall time from the threads' common start
//!   to the last one's end, divided by the calls per thread (so a thread
//!   that waits for a core counts as waiting); a sample is its median chunk, so that chunks in which
//!   another process took the core (the machine is shared) do not count;
//! * after the chunk (not timed), `Worker::shutdown` with a zero deadline
//!   drops the queued records and the report is checked: every call queued
//!   exactly one record and none was written.
//!
//! The bare flume reference gets exactly the same treatment: a fresh
//! unbounded channel per chunk, dropped afterwards. Both therefore include
//! the same cost of growing a new queue to `CHUNK × threads` slots; the
//! "flume send, warm queue" row (one channel whose receiver empties it
//! between chunks, keeping its capacity) shows how large that shared
//! constant is.
//!
//! `tracing-appender` is measured the way it runs: one writer whose worker
//! thread drains a bounded queue into `std::io::sink()` concurrently, set to
//! block rather than drop lines when full (its default drops them, which
//! would make an overloaded writer look fast). Its producer formats the line
//! (timestamp, level, target, message) into a reused buffer and writes it
//! with one `write_all`, which is what a `tracing` formatting layer does.
//!
//! With more threads than the machine's cores, "ns per call" is the wall
//! time a thread spends per call while all of them run, so it includes
//! waiting for a core; the ratios compare methods under the same load.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::hint::black_box;
use std::io::Write;
use std::sync::{Barrier, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use criterion::{BenchmarkId, Criterion, Throughput};
use pglogsink::{CancellationToken, Level, Logger, Record, SinkConfig, Worker};
use tracing_appender::non_blocking::{NonBlocking, NonBlockingBuilder, WorkerGuard};

/// Calls per thread between two (untimed) queue resets.
const CHUNK: u64 = 16384;
/// About 100 bytes, like a real log line.
const MESSAGE: &str =
    "GET /api/v1/recipes/4711?include=ingredients answered 200 in 3.2 ms for user 1042 via cache";
const TARGET: &str = "app";
const RUN_ID: &str = "load-1795450757417-18826";
const THREADS: [usize; 3] = [1, 2, 4];

/// What is logged per call.
#[derive(Clone, Copy, PartialEq)]
enum Shape {
    /// A static ~100-byte message; the target is the logger's default.
    Plain,
    /// What `serve` logs per request: a formatted message, a target and one
    /// string field.
    Request,
}

fn record(shape: Shape, i: u64) -> Record {
    match shape {
        Shape::Plain => Record::new(Level::Info, MESSAGE).target(TARGET),
        Shape::Request => Record::new(Level::Debug, format!("GET /recipes/{i}"))
            .target("recipes")
            .field("run_id", RUN_ID),
    }
}

/// One way of handing a record off. `open` and `close` run between chunks
/// (not timed); `call` is what is timed.
trait Method: Sync {
    /// Shared by the threads for one chunk.
    type Chunk: Send + Sync;
    /// One thread's handle during a chunk.
    type Local;
    fn open(&self) -> Self::Chunk;
    fn local(&self, chunk: &Self::Chunk) -> Self::Local;
    fn call(&self, local: &mut Self::Local, i: u64);
    fn close(&self, chunk: Self::Chunk, calls: u64);
}

/// The sink, spawned fresh for each chunk against a database that refuses
/// connections.
struct Sink {
    runtime: tokio::runtime::Runtime,
    pool: pglogsink::deadpool_postgres::Pool,
    shape: Shape,
    /// `log(level, message)` (default target) rather than `send(record)`.
    via_log: bool,
}

impl Sink {
    fn new(shape: Shape, via_log: bool) -> Sink {
        let config = pglogsink::parse_url("postgres://nobody@127.0.0.1:1/none").expect("url");
        Sink {
            runtime: tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime"),
            pool: pglogsink::pool(config, 1).expect("pool"),
            shape,
            via_log,
        }
    }
}

impl Method for Sink {
    type Chunk = (Logger, Worker);
    type Local = Logger;

    fn open(&self) -> (Logger, Worker) {
        let config = SinkConfig {
            default_target: TARGET.to_owned(),
            // Every call is measured queuing, never the sink handing a
            // record back for its memory budget.
            max_queue_bytes: 64 << 30,
            ..SinkConfig::default()
        };
        self.runtime.block_on(async {
            pglogsink::spawn(self.pool.clone(), &config, CancellationToken::new()).expect("spawn")
        })
    }

    fn local(&self, chunk: &(Logger, Worker)) -> Logger {
        chunk.0.clone()
    }

    #[inline]
    fn call(&self, logger: &mut Logger, i: u64) {
        let result = if self.via_log {
            logger.log(Level::Info, MESSAGE)
        } else {
            logger.send(record(self.shape, black_box(i)))
        };
        black_box(result).ok();
    }

    fn close(&self, (logger, worker): (Logger, Worker), calls: u64) {
        drop(logger);
        let report = self.runtime.block_on(worker.shutdown(Duration::ZERO));
        assert_eq!(report.written, 0, "nothing can be written: {report:?}");
        assert_eq!(
            report.not_written + report.in_doubt,
            calls,
            "every call queued exactly one record: {report:?}"
        );
    }
}

/// A bare unbounded flume channel: fresh per chunk, or one kept warm.
struct Flume {
    shape: Shape,
    warm: Option<(flume::Sender<Record>, flume::Receiver<Record>)>,
    /// Also read the wall clock, as `log()` must (the record cannot be
    /// stamped from outside the crate; the time is only black-boxed).
    stamp: bool,
}

impl Method for Flume {
    type Chunk = (flume::Sender<Record>, flume::Receiver<Record>);
    type Local = flume::Sender<Record>;

    fn open(&self) -> Self::Chunk {
        match &self.warm {
            Some((tx, rx)) => (tx.clone(), rx.clone()),
            None => flume::unbounded(),
        }
    }

    fn local(&self, chunk: &Self::Chunk) -> flume::Sender<Record> {
        chunk.0.clone()
    }

    #[inline]
    fn call(&self, tx: &mut flume::Sender<Record>, i: u64) {
        if self.stamp {
            black_box(SystemTime::now());
        }
        black_box(tx.send(record(self.shape, black_box(i)))).ok();
    }

    fn close(&self, (tx, rx): Self::Chunk, calls: u64) {
        // try_recv pops one by one and keeps the queue's capacity (drain()
        // would take the whole buffer away).
        let mut received = 0;
        while rx.try_recv().is_ok() {
            received += 1;
        }
        assert_eq!(received, calls);
        drop(tx);
    }
}

/// tracing-appender's non-blocking writer into `io::sink()`.
struct Appender {
    writer: NonBlocking,
    _guard: WorkerGuard,
    shape: Shape,
}

impl Appender {
    fn new(shape: Shape) -> Appender {
        let (writer, guard) = NonBlockingBuilder::default()
            .lossy(false)
            .finish(std::io::sink());
        Appender {
            writer,
            _guard: guard,
            shape,
        }
    }
}

impl Method for Appender {
    type Chunk = ();
    type Local = (NonBlocking, Vec<u8>);

    fn open(&self) {}

    fn local(&self, _: &()) -> (NonBlocking, Vec<u8>) {
        (self.writer.clone(), Vec::with_capacity(256))
    }

    #[inline]
    fn call(&self, (writer, line): &mut (NonBlocking, Vec<u8>), i: u64) {
        let micros = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_micros());
        line.clear();
        // Writing into a Vec cannot fail.
        let _ = match self.shape {
            Shape::Plain => writeln!(line, "{micros} INFO {TARGET}: {MESSAGE}"),
            Shape::Request => writeln!(
                line,
                "{micros} DEBUG recipes: GET /recipes/{} run_id={RUN_ID}",
                black_box(i)
            ),
        };
        black_box(writer.write_all(line)).ok();
    }

    fn close(&self, _: (), _: u64) {}
}

/// Run `iters` calls on each of `threads` threads, chunk by chunk; returns
/// `iters` times the median chunk's wall time per call.
///
/// The median rather than the sum: on a shared machine some chunks lose
/// their core to another process for a whole scheduler slice, which says
/// nothing about the method; the median chunk of a sample is one that ran.
fn run<M: Method>(method: &M, threads: usize, iters: u64) -> Duration {
    let mut per_call: Vec<f64> = Vec::with_capacity(iters.div_ceil(CHUNK) as usize);
    if threads == 1 {
        let mut done = 0;
        while done < iters {
            let n = CHUNK.min(iters - done);
            let chunk = method.open();
            let mut local = method.local(&chunk);
            let start = Instant::now();
            for i in done..done + n {
                method.call(&mut local, i);
            }
            per_call.push(start.elapsed().as_nanos() as f64 / n as f64);
            drop(local);
            method.close(chunk, n);
            done += n;
        }
        return scaled_median(&mut per_call, iters);
    }
    let slot: RwLock<Option<M::Chunk>> = RwLock::new(None);
    // The chunk is in the slot / every thread holds its handle / all done.
    let ready_line = Barrier::new(threads + 1);
    let start_line = Barrier::new(threads + 1);
    let finish_line = Barrier::new(threads + 1);
    let chunks = iters.div_ceil(CHUNK);
    std::thread::scope(|scope| {
        for _ in 0..threads {
            scope.spawn(|| {
                for c in 0..chunks {
                    let first = c * CHUNK;
                    let n = CHUNK.min(iters - first);
                    ready_line.wait();
                    {
                        let guard = slot.read().expect("slot");
                        let mut local = method.local(guard.as_ref().expect("chunk"));
                        start_line.wait();
                        for i in first..first + n {
                            method.call(&mut local, i);
                        }
                    }
                    finish_line.wait();
                }
            });
        }
        for c in 0..chunks {
            let n = CHUNK.min(iters - c * CHUNK);
            *slot.write().expect("slot") = Some(method.open());
            ready_line.wait();
            // Wall time from the common start to the last thread's end:
            // a thread that waits for a core is waiting in `log()` too.
            start_line.wait();
            let start = Instant::now();
            finish_line.wait();
            let wall = start.elapsed();
            let chunk = slot.write().expect("slot").take().expect("chunk");
            method.close(chunk, n * threads as u64);
            per_call.push(wall.as_nanos() as f64 / n as f64);
        }
    });
    scaled_median(&mut per_call, iters)
}

fn scaled_median(per_call: &mut [f64], iters: u64) -> Duration {
    Duration::from_nanos((median(per_call) * iters as f64).round() as u64)
}

/// Per-sample nanoseconds per call, by (group, method), for the summary.
static SAMPLES: Mutex<BTreeMap<(String, String), Vec<f64>>> = Mutex::new(BTreeMap::new());

fn bench<M: Method>(c: &mut Criterion, group: &str, name: &str, threads: usize, method: M) {
    let mut g = c.benchmark_group(group);
    g.throughput(Throughput::Elements(1));
    g.bench_function(BenchmarkId::from_parameter(name), |b| {
        b.iter_custom(|iters| {
            let elapsed = run(&method, threads, iters);
            // Small warm-up samples are mostly timer noise.
            if iters >= 1000 {
                SAMPLES
                    .lock()
                    .expect("samples")
                    .entry((group.to_owned(), name.to_owned()))
                    .or_default()
                    .push(elapsed.as_nanos() as f64 / iters as f64);
            }
            elapsed
        })
    });
    g.finish();
}

const LOG: &str = "pglogsink log() (default target)";
const SEND: &str = "pglogsink send(record with target)";
const FLUME: &str = "flume send (fresh queue per chunk)";
const FLUME_WARM: &str = "flume send (warm queue)";
const FLUME_STAMPED: &str = "flume send + SystemTime::now()";
const APPENDER: &str = "tracing-appender non_blocking";

fn main() {
    let mut c = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .configure_from_args();

    for threads in THREADS {
        let group = format!(
            "log_call/{threads}_thread{}",
            if threads > 1 { "s" } else { "" }
        );
        let plain = Shape::Plain;
        bench(&mut c, &group, LOG, threads, Sink::new(plain, true));
        bench(&mut c, &group, SEND, threads, Sink::new(plain, false));
        let flume = Flume {
            shape: plain,
            warm: None,
            stamp: false,
        };
        bench(&mut c, &group, FLUME, threads, flume);
        let stamped = Flume {
            shape: plain,
            warm: None,
            stamp: true,
        };
        bench(&mut c, &group, FLUME_STAMPED, threads, stamped);
        let warm = Flume {
            shape: plain,
            warm: Some(flume::unbounded()),
            stamp: false,
        };
        bench(&mut c, &group, FLUME_WARM, threads, warm);
        bench(&mut c, &group, APPENDER, threads, Appender::new(plain));
    }
    let group = "log_call/request_1_thread";
    let request = Shape::Request;
    bench(&mut c, group, SEND, 1, Sink::new(request, false));
    let flume = Flume {
        shape: request,
        warm: None,
        stamp: false,
    };
    bench(&mut c, group, FLUME, 1, flume);
    bench(&mut c, group, APPENDER, 1, Appender::new(request));

    c.final_summary();
    summary();
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    if n == 0 {
        f64::NAN
    } else if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    }
}

/// The table of medians and ratios to the bare flume send, same run.
fn summary() {
    let mut samples = SAMPLES.lock().expect("samples");
    if samples.is_empty() {
        return;
    }
    let mut medians: BTreeMap<(String, String), f64> = BTreeMap::new();
    for (key, values) in samples.iter_mut() {
        medians.insert(key.clone(), median(values));
    }
    println!();
    println!(
        "log_call summary: median ns per call (per thread), ratio to the bare flume send \
         in the same run; CHUNK = {CHUNK} calls per thread"
    );
    println!(
        "memory per queued record: size_of::<Record>() = {} bytes in the queue's slot, \
         plus heap: an owned message, an owned target, {} bytes per field entry and the \
         field values' own heap",
        std::mem::size_of::<Record>(),
        std::mem::size_of::<(Cow<'static, str>, serde_json::Value)>()
    );
    println!(
        "{:<28} {:<38} {:>9} {:>12}",
        "group", "method", "ns/call", "vs flume"
    );
    let groups: Vec<String> = {
        let mut g: Vec<String> = medians.keys().map(|(g, _)| g.clone()).collect();
        g.dedup();
        g
    };
    for group in groups {
        let flume = medians.get(&(group.clone(), FLUME.to_owned())).copied();
        for name in [LOG, SEND, FLUME, FLUME_STAMPED, FLUME_WARM, APPENDER] {
            let Some(&ns) = medians.get(&(group.clone(), name.to_owned())) else {
                continue;
            };
            let ratio = flume.map_or(Cow::Borrowed("-"), |f| format!("{:.2}x", ns / f).into());
            println!("{group:<28} {name:<38} {ns:>9.1} {ratio:>12}");
        }
    }
}
