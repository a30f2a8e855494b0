//! The ledger of committed batches: every batch carries a key, and the key
//! is inserted into `<table>_batches` in the same transaction as the batch's
//! rows. A retry after an unheard commit, or a replay of a batch that was in
//! fact committed, finds its key there and is not written twice.

use std::time::{Duration, SystemTime};

use tokio_postgres::types::Type;

use crate::classify::WriteError;
use crate::record::unix_micros;
use crate::table::TableName;

/// The identity of a batch in the ledger.
///
/// `instance` is random per sink; `seq` grows with every batch; `part` is
/// the first row's index in the original batch when a batch is split around
/// a poison row (0 otherwise), so that the pieces of a batch keep stable keys
/// across retries and replays.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct BatchKey {
    pub(crate) instance: i64,
    pub(crate) seq: i64,
    pub(crate) part: i32,
}

/// Hands out batch keys for one sink.
pub(crate) struct KeySource {
    instance: i64,
    last_seq: i64,
}

impl KeySource {
    pub(crate) fn new(instance: i64) -> KeySource {
        KeySource {
            instance,
            last_seq: 0,
        }
    }

    pub(crate) fn instance(&self) -> i64 {
        self.instance
    }

    /// A new key. Sequence numbers are microseconds since the Unix epoch
    /// (kept strictly increasing), so they also say when the batch was made.
    pub(crate) fn next(&mut self) -> BatchKey {
        self.last_seq = unix_micros(SystemTime::now()).max(self.last_seq + 1);
        BatchKey {
            instance: self.instance,
            seq: self.last_seq,
            part: 0,
        }
    }
}

/// A random instance id (positive, so it reads well in SQL).
pub(crate) fn random_instance() -> i64 {
    (crate::random::id() >> 1) as i64
}

/// The ledger's SQL for one Log table. Each statement runs as the unnamed
/// statement (Parse, Bind, Execute and Sync in one round trip), so the
/// ledger works through transaction-pooling PgBouncer.
pub(crate) struct Ledger {
    claim: String,
    prune: String,
}

impl Ledger {
    pub(crate) fn new(table: &TableName) -> Ledger {
        let ledger = table.ledger_table().quoted();
        Ledger {
            claim: format!(
                "INSERT INTO {ledger} (instance, seq, part, rows) VALUES ($1, $2, $3, $4) \
                 ON CONFLICT DO NOTHING"
            ),
            prune: format!(
                "DELETE FROM {ledger} WHERE committed_at < now() - make_interval(secs => $1)"
            ),
        }
    }

    /// Claim `key` inside the batch's transaction: false when the ledger
    /// already holds it (the batch is committed already).
    pub(crate) async fn claim(
        &self,
        tx: &deadpool_postgres::Transaction<'_>,
        key: BatchKey,
        rows: usize,
    ) -> Result<bool, WriteError> {
        let claimed = tx
            .execute_typed(
                &self.claim,
                &[
                    (&key.instance, Type::INT8),
                    (&key.seq, Type::INT8),
                    (&key.part, Type::INT4),
                    (&(rows as i32), Type::INT4),
                ],
            )
            .await?;
        Ok(claimed == 1)
    }

    /// Delete ledger rows older than `retention`; returns how many.
    pub(crate) async fn prune(
        &self,
        client: &deadpool_postgres::Client,
        retention: Duration,
    ) -> Result<u64, WriteError> {
        Ok(client
            .execute_typed(&self.prune, &[(&retention.as_secs_f64(), Type::FLOAT8)])
            .await?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_strictly_increasing_and_instances_random() {
        let mut keys = KeySource::new(7);
        let a = keys.next();
        let b = keys.next();
        assert!(b.seq > a.seq && a.instance == 7 && a.part == 0);
        assert_ne!(random_instance(), random_instance());
        assert!(random_instance() >= 0);
    }
}
