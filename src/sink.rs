//! Wiring: one channel, one consumer task, the producer handle and the
//! worker handle that shuts it down.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use deadpool_postgres::Pool;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::config::SinkConfig;
use crate::consumer::{Consumer, Tokens};
#[cfg(test)]
use crate::level::Level;
use crate::logger::Logger;
use crate::report::{FatalError, Report};
use crate::sink_state::SinkState;
use crate::spool::{Spool, SpoolLimits};
use crate::writer::{PgWriter, WriteTimeouts, Writer};
use crate::Error;

/// Start a sink: returns the [`Logger`] producers log through and the
/// [`Worker`] that owns the consumer task.
///
/// `app_token` is the host application's shutdown token: the sink cancels it
/// when it meets a fatal database error (wrong schema, no permission, bad
/// credentials), so that the whole application stops instead of running on
/// with a dead logger. Must be called inside a Tokio runtime.
///
/// ```no_run
/// # async fn demo(pool: deadpool_postgres::Pool) -> Result<(), pglogsink::Error> {
/// use std::time::Duration;
/// use pglogsink::{Level, SinkConfig};
/// use tokio_util::sync::CancellationToken;
///
/// let shutdown = CancellationToken::new();
/// let (logger, worker) = pglogsink::spawn(pool, &SinkConfig::default(), shutdown.clone())?;
/// logger.log(Level::Info, "service started").ok();
///
/// // ... run until Ctrl-C or until the sink cancels `shutdown` ...
///
/// let report = worker.shutdown(Duration::from_secs(10)).await;
/// println!("{report}");
/// # Ok(()) }
/// ```
pub fn spawn(
    pool: Pool,
    config: &SinkConfig,
    app_token: CancellationToken,
) -> Result<(Logger, Worker), Error> {
    config.validate()?;
    let table = config.table_name()?;
    let timeouts = WriteTimeouts {
        lock: config.lock_timeout,
        statement: config.write_timeout,
    };
    spawn_with(PgWriter::new(pool, &table, timeouts), config, app_token)
}

/// [`spawn`] with any [`Writer`] (the consumer's unit tests use a fake).
pub(crate) fn spawn_with<W: Writer + 'static>(
    writer: W,
    config: &SinkConfig,
    app_token: CancellationToken,
) -> Result<(Logger, Worker), Error> {
    config.validate()?;
    let table = config.table_name()?;
    let runtime = tokio::runtime::Handle::try_current().map_err(|_| {
        Error::config(
            "runtime",
            "pglogsink::spawn must be called from inside a Tokio runtime",
        )
    })?;
    let limits = SpoolLimits::new(
        config.max_spool_bytes,
        config.spool_min_free_bytes,
        config.max_queue_bytes,
    );
    let spool = config
        .spool_dir
        .as_deref()
        .map(|dir| Spool::open(dir, &table.to_string(), limits))
        .transpose()?;
    let (tx, rx) = flume::unbounded();
    let state = Arc::new(SinkState::new(config.max_queue_bytes));
    let tokens = Tokens {
        app: app_token,
        stop: CancellationToken::new(),
        abort: CancellationToken::new(),
    };
    let (stop, abort) = (tokens.stop.clone(), tokens.abort.clone());
    let consumer = Consumer::new(writer, rx, config, spool, state.clone(), tokens);
    let task = runtime.spawn(consumer.run());
    let default_target = intern(&config.default_target);
    let logger = Logger::new(tx, state.clone(), default_target.into());
    let worker = Worker {
        task,
        state,
        stop,
        abort,
    };
    Ok((logger, worker))
}

/// The default target as a `&'static str`, so that `log()` without a target
/// of its own copies a pointer into the record: no String per record, and no
/// shared reference count either. An `Arc<str>` clone per record costs the
/// producers an atomic increment on one cache line they all share (5 ns more
/// than copying a pointer with one thread, 22 ns more with four, measured on
/// this 2-core machine). Each distinct name is leaked once per process, not
/// once per `spawn()`: tests and services that start many sinks with the same
/// default target add nothing.
fn intern(name: &str) -> &'static str {
    static NAMES: Mutex<BTreeSet<&'static str>> = Mutex::new(BTreeSet::new());
    let mut names = NAMES
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    if let Some(&known) = names.get(name) {
        return known;
    }
    let leaked: &'static str = Box::leak(name.to_owned().into_boxed_str());
    names.insert(leaked);
    leaked
}

/// Owns the sink's consumer task. Call [`shutdown`](Worker::shutdown) when
/// the application stops, after the last producer (the web server) is done.
///
/// Dropping it without `shutdown` leaves the consumer running until every
/// [`Logger`] is dropped, with no report.
///
/// ```no_run
/// use pglogsink::{CancellationToken, SinkConfig, DEFAULT_SHUTDOWN_TIMEOUT};
///
/// # async fn demo(pool: pglogsink::deadpool_postgres::Pool) -> Result<(), pglogsink::Error> {
/// let shutdown = CancellationToken::new();
/// let (logger, worker) = pglogsink::spawn(pool, &SinkConfig::default(), shutdown.clone())?;
/// // ... hand `logger` to the application; stop on Ctrl-C, or when the
/// // sink cancels `shutdown` because it met a fatal error ...
/// shutdown.cancelled().await;
/// if let Some(fatal) = worker.fatal_error() {
///     eprintln!("the sink stopped: {fatal}");
/// }
/// let report = worker.shutdown(DEFAULT_SHUTDOWN_TIMEOUT).await;
/// println!("{report}");
/// # drop(logger);
/// # Ok(()) }
/// ```
#[must_use = "call `shutdown` to drain the queue and learn what was written"]
pub struct Worker {
    task: JoinHandle<Report>,
    state: Arc<SinkState>,
    stop: CancellationToken,
    abort: CancellationToken,
}

impl Worker {
    /// Stop intake, write what is queued, and report.
    ///
    /// `log()` returns [`SendError::Closed`](crate::SendError::Closed) from now on. The queue is
    /// drained (retrying transient errors) until it is empty or `timeout`
    /// passes; then the sink gives up and the report counts what was not
    /// written.
    ///
    /// ```no_run
    /// # async fn demo(worker: pglogsink::Worker) {
    /// let report = worker.shutdown(pglogsink::DEFAULT_SHUTDOWN_TIMEOUT).await;
    /// if !report.is_complete() {
    ///     eprintln!("{report}");
    /// }
    /// # }
    /// ```
    ///
    /// # Cancel safety
    ///
    /// Dropping the future before it completes (a `select!` branch that
    /// lost, a `tokio::time::timeout` around it) ends the sink as reaching
    /// the deadline would: the consumer stops retrying, moves what it holds
    /// to the spool if there is one, and ends. Only the report is lost; the
    /// counters stay readable through [`Logger::stats`](crate::Logger::stats).
    /// A future dropped before it was first polled has done nothing: the
    /// worker is dropped as if `shutdown` had not been called.
    pub async fn shutdown(mut self, timeout: Duration) -> Report {
        self.state.queue.close();
        self.stop.cancel();
        // Armed until the consumer has ended: if this future is dropped
        // while waiting, the guard gives up as the deadline would, so that
        // the consumer cannot go on retrying with no one to report to.
        let give_up = self.abort.clone().drop_guard();
        let joined = match tokio::time::timeout(timeout, &mut self.task).await {
            Ok(joined) => joined,
            Err(_) => {
                self.abort.cancel();
                (&mut self.task).await
            }
        };
        give_up.disarm();
        self.joined(joined)
    }

    /// The fatal error the sink stopped on, if it did.
    pub fn fatal_error(&self) -> Option<FatalError> {
        self.state.fatal.lock().ok().and_then(|f| f.clone())
    }

    /// True once the consumer task has ended (fatal error, or every logger
    /// dropped).
    pub fn is_finished(&self) -> bool {
        self.task.is_finished()
    }

    fn joined(&self, joined: Result<Report, tokio::task::JoinError>) -> Report {
        let mut report = self.consumer_report(joined);
        // Records handed back after the consumer ended count too.
        report.add_handed_back(self.state.snapshot(0).lost);
        report
    }

    fn consumer_report(&self, joined: Result<Report, tokio::task::JoinError>) -> Report {
        joined.unwrap_or_else(|e| {
            // The consumer does not panic by design; if it ever does, report
            // what the counters know (records it held in memory at that
            // moment are in no count, and the log line above says so).
            tracing::error!(target: "pglogsink", error = %e, "the sink's consumer task failed; records it held in memory are lost");
            self.state.report(None, false)
        })
    }
}

impl std::fmt::Debug for Worker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Worker")
            .field("finished", &self.task.is_finished())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A sink whose database refuses every connection: it retries forever
    /// until shutdown's deadline (or something else) tells it to give up.
    fn sink_without_a_database() -> (Logger, Worker) {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .unwrap()
            .port();
        let url = format!("postgres://nobody@127.0.0.1:{port}/nothing");
        let pool = crate::pool(crate::parse_url(&url).unwrap(), 1).unwrap();
        let config = SinkConfig {
            retry_initial: Duration::from_millis(5),
            retry_max: Duration::from_millis(10),
            ..SinkConfig::default()
        };
        spawn(pool, &config, CancellationToken::new()).unwrap()
    }

    /// Poll `done` every 10 ms; false if it is still not true after `limit`.
    async fn within(limit: Duration, done: impl Fn() -> bool) -> bool {
        let deadline = tokio::time::Instant::now() + limit;
        while !done() {
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        true
    }

    #[test]
    fn a_default_target_is_leaked_once_per_name_not_once_per_sink() {
        let first = intern("shop::checkout");
        let again = intern(&String::from("shop::checkout"));
        assert!(std::ptr::eq(first, again), "the same name was leaked twice");
        assert_eq!(intern("shop::cart"), "shop::cart");
    }

    #[tokio::test]
    async fn a_dropped_shutdown_still_ends_the_consumer() {
        let (logger, worker) = sink_without_a_database();
        logger.log(Level::Info, "never written").unwrap();
        assert!(
            within(Duration::from_secs(5), || logger.stats().retrying).await,
            "the sink never started retrying: {:?}",
            logger.stats()
        );
        // The caller stops waiting long before the hour is up.
        let gave_up = tokio::time::timeout(
            Duration::from_millis(50),
            worker.shutdown(Duration::from_secs(3600)),
        )
        .await;
        assert!(
            gave_up.is_err(),
            "shutdown returned while the database is away"
        );
        assert!(
            within(Duration::from_secs(5), || !logger.stats().retrying).await,
            "the consumer is still retrying after shutdown's future was dropped: {:?}",
            logger.stats()
        );
        let retries = logger.stats().retries;
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(
            logger.stats().retries,
            retries,
            "the consumer went on retrying"
        );
    }
}
