//! Wiring: one channel, one consumer task, the producer handle and the
//! worker handle that shuts it down.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::Pool;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::config::SinkConfig;
use crate::consumer::{Consumer, Tokens};
use crate::logger::Logger;
use crate::report::{FatalError, Report};
use crate::spool::{Spool, SpoolLimits};
use crate::stats::Shared;
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
    let shared = Arc::new(Shared::default());
    let tokens = Tokens {
        app: app_token,
        stop: CancellationToken::new(),
        abort: CancellationToken::new(),
    };
    let (stop, abort) = (tokens.stop.clone(), tokens.abort.clone());
    let consumer = Consumer::new(writer, rx, config, spool, shared.clone(), tokens);
    let task = runtime.spawn(consumer.run());
    // Interned once per sink, so that `log()` without a target of its own
    // copies a pointer instead of allocating a String for every record.
    let default_target: &'static str = Box::leak(config.default_target.clone().into_boxed_str());
    let logger = Logger::new(tx, shared.clone(), default_target.into());
    let worker = Worker {
        task,
        shared,
        stop,
        abort,
    };
    Ok((logger, worker))
}

/// Owns the sink's consumer task. Call [`shutdown`](Worker::shutdown) when
/// the application stops, after the last producer (the web server) is done.
///
/// Dropping it without `shutdown` leaves the consumer running until every
/// [`Logger`] is dropped, with no report.
#[must_use = "call `shutdown` to drain the queue and learn what was written"]
pub struct Worker {
    task: JoinHandle<Report>,
    shared: Arc<Shared>,
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
    pub async fn shutdown(mut self, timeout: Duration) -> Report {
        self.shared.closed.store(true, Ordering::Release);
        self.stop.cancel();
        match tokio::time::timeout(timeout, &mut self.task).await {
            Ok(joined) => self.joined(joined),
            Err(_) => {
                self.abort.cancel();
                let joined = (&mut self.task).await;
                self.joined(joined)
            }
        }
    }

    /// The fatal error the sink stopped on, if it did.
    pub fn fatal_error(&self) -> Option<FatalError> {
        self.shared.fatal.lock().ok().and_then(|f| f.clone())
    }

    /// True once the consumer task has ended (fatal error, or every logger
    /// dropped).
    pub fn is_finished(&self) -> bool {
        self.task.is_finished()
    }

    fn joined(&self, joined: Result<Report, tokio::task::JoinError>) -> Report {
        let mut report = self.consumer_report(joined);
        // Records handed back after the consumer ended count too.
        report.add_handed_back(self.shared.snapshot(0).lost);
        report
    }

    fn consumer_report(&self, joined: Result<Report, tokio::task::JoinError>) -> Report {
        joined.unwrap_or_else(|e| {
            // The consumer does not panic by design; if it ever does, report
            // what the counters know (records it held in memory at that
            // moment are in no count, and the log line above says so).
            tracing::error!(target: "pglogsink", error = %e, "the sink's consumer task failed; records it held in memory are lost");
            Report::from_shared(&self.shared, None, false)
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
