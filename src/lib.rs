//! pglogsink: application logs into PostgreSQL, fast, without slowing the
//! code that logs and without losing a line.
//!
//! Producers call [`Logger::log`], which never blocks and never touches the
//! network: it stamps the record and pushes it onto an unbounded channel. One
//! consumer task drains what is queued (up to the batch size, no timer wait)
//! and writes each batch with one binary `COPY`. Transient database errors
//! are retried with backoff; a fatal one cancels the application's shutdown
//! token. [`Worker::shutdown`] drains the queue within a deadline and returns
//! a [`Report`] of what was and was not written.
//!
//! ```no_run
//! use std::time::Duration;
//! use pglogsink::{Level, Record, SinkConfig, TableName};
//! use tokio_util::sync::CancellationToken;
//!
//! # async fn demo() -> Result<(), pglogsink::Error> {
//! let pool = pglogsink::pool(pglogsink::parse_url("postgres://app:pw@127.0.0.1/app")?, 4)?;
//! pglogsink::migrate(&pool, &TableName::parse("log")?).await?;
//!
//! let shutdown = CancellationToken::new();
//! let (logger, worker) = pglogsink::spawn(pool, &SinkConfig::default(), shutdown.clone())?;
//! logger.log(Level::Info, "hello").ok();
//! logger.send(Record::new(Level::Warn, "slow request").field("ms", 840)).ok();
//!
//! let report = worker.shutdown(Duration::from_secs(10)).await;
//! assert!(report.is_complete(), "{report}");
//! # Ok(()) }
//! ```
#![warn(missing_docs)]

pub mod admin;
mod backoff;
mod batch;
mod classify;
mod config;
mod consumer;
mod copy;
mod copy_format;
mod database;
mod delivery;
mod duration;
#[cfg(feature = "embedded")]
pub mod embedded;
mod error;
mod fields;
mod hex;
#[cfg(feature = "tracing-layer")]
mod layer;
mod ledger;
mod level;
mod logger;
mod maintain;
mod micros;
mod overflow;
mod partitions;
mod queue_budget;
mod random;
mod record;
mod rejected;
mod report;
mod schema;
mod sink;
mod sink_state;
mod spool;
mod stats;
mod table;
mod tls;
mod upgrade;
mod writer;

pub use config::{
    SinkConfig, DEFAULT_BATCH_SIZE, DEFAULT_COPIES_IN_FLIGHT, DEFAULT_LEDGER_RETENTION,
    DEFAULT_LOCK_TIMEOUT, DEFAULT_MAX_QUEUE_BYTES, DEFAULT_MAX_RECORD_BYTES,
    DEFAULT_MAX_SPOOL_BYTES, DEFAULT_SHUTDOWN_TIMEOUT, DEFAULT_SPOOL_MIN_FREE_BYTES, DEFAULT_TABLE,
    DEFAULT_WRITE_TIMEOUT, MAX_BATCH_SIZE, MAX_COPIES_IN_FLIGHT,
};
pub use database::{parse_url, pool, ConnectConfig, DEFAULT_POOL_SIZE};
pub use error::{Error, ErrorKind};
pub use fields::{Fields, SharedFields};
#[cfg(feature = "tracing-layer")]
pub use layer::PgLogLayer;
pub use level::{Level, ParseLevelError};
pub use logger::{Batch, Logger, SendError};
pub use maintain::{
    DroppedPartition, KeepLevels, Maintenance, MaintenanceReport, RewrittenPartition,
    DEFAULT_MAX_AGE, DEFAULT_PREMAKE,
};
pub use partitions::PartitionInterval;
pub use record::Record;
pub use report::{FatalError, Report};
pub use schema::{distribute, migrate, migrate_with, Distribution, DISTRIBUTE_SQL, SCHEMA_SQL};
pub use sink::{spawn, Worker};
pub use stats::{Lost, Stats};
pub use table::TableName;
pub use tls::{RootCert, SslMode};
pub use upgrade::{upgrade, Upgrade};

/// The README's code blocks, compiled and run as doctests (as deadpool
/// does) so that its examples keep building; blocks that are not Rust are
/// tagged with their language (`sh`, `sql`, `text`).
#[cfg(all(doctest, feature = "tracing-layer"))]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;

/// Re-exported so that users name the same versions pglogsink uses.
pub use deadpool_postgres;
pub use tokio_postgres;
pub use tokio_util::sync::CancellationToken;
