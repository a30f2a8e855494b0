//! What the binary's unit tests share: a sink and a pool on a database
//! that refuses connections (127.0.0.1, port 1). Records queue up and are
//! retried, which is all a handler needs; a query fails as an unreachable
//! database does.

use pglogsink::{CancellationToken, Logger, SinkConfig, Worker};

/// A pool whose every connection attempt is refused.
pub(crate) fn unreachable_pool() -> deadpool_postgres::Pool {
    let config = pglogsink::parse_url("postgres://nobody@127.0.0.1:1/none").unwrap();
    pglogsink::pool(config, 1).unwrap()
}

/// A running sink on [`unreachable_pool`], with the default settings.
pub(crate) fn unreachable_sink() -> (Logger, Worker) {
    pglogsink::spawn(
        unreachable_pool(),
        &SinkConfig::default(),
        CancellationToken::new(),
    )
    .unwrap()
}
