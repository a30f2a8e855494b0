//! Reading the Log table: one query layer for `pglogsink logs`, the web
//! viewer and its JSON API.
//!
//! A [`Filter`] becomes one SQL `WHERE`, every value a bound parameter, sent
//! as an unnamed statement inside a short read-only transaction (so it works
//! behind a transaction-mode pooler; the reader's time zone and statement
//! timeout are `SET LOCAL`).
//!
//! The table has no btree on "timestamp" (a BRIN index keeps COPY cheap), so
//! "the newest N rows" is asked for a short time window first and the window
//! widens until it holds N rows: on a table of tens of millions of rows the
//! answer comes from the last minutes' block ranges. A lookup by request id
//! goes straight to its index instead. [`Follower`] reads new rows as they
//! are committed; [`Reader::histogram`] counts the matching rows per time
//! bucket and level.

mod filter;
mod follow;
mod histogram;
mod reader;

pub use filter::{FieldMatch, Filter, When, WHEN_FORM};
pub use follow::Follower;
pub use histogram::{Histogram, MAX_BUCKETS};
pub use reader::{LogRow, Reader, TimeFormat};
