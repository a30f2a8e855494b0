//! One change of the Log table at a time, each a short transaction of its
//! own that first takes the table's maintenance lock and waits at most
//! [`LOCK_TIMEOUT`] for any other lock.

use std::time::Duration;

use deadpool_postgres::Object;
use tokio_postgres::types::Type;
use tokio_postgres::SimpleQueryMessage;

use super::report::MaintenanceReport;

/// How long one DDL statement may wait for its lock before it is retried.
pub(super) const LOCK_TIMEOUT: &str = "200ms";
/// Attempts at one change before it is left for the next run.
pub(super) const ATTEMPTS: u32 = 5;

/// Applies one change at a time, each a short transaction of its own.
pub(super) struct ChangeApplier<'a> {
    pub(super) client: &'a mut Object,
    /// The table's maintenance lock, taken in each change's transaction.
    pub(super) lock: i64,
    pub(super) report: &'a mut MaintenanceReport,
}

/// How one try at a change ended.
enum ChangeTry {
    Done(Vec<u64>),
    /// Another instance holds the maintenance lock.
    Busy,
}

impl ChangeApplier<'_> {
    /// Run `statements` in one transaction that first takes the table's
    /// maintenance lock (without waiting: another instance is at it, so
    /// this run stops and says it was skipped) and may wait at most
    /// [`LOCK_TIMEOUT`] for any other lock (retried a few times, then
    /// postponed to the next run). The rows each statement affected, or
    /// `None` when nothing was done. A change another instance made first
    /// (the table exists, or is gone) counts as done by it: `None`.
    pub(super) async fn apply(
        &mut self,
        statements: &[String],
        what: impl Fn() -> String,
    ) -> Result<Option<Vec<u64>>, tokio_postgres::Error> {
        use tokio_postgres::error::SqlState;
        let mut pause = Duration::from_millis(100);
        for attempt in 1..=ATTEMPTS {
            match self.try_once(statements).await {
                Ok(ChangeTry::Done(counts)) => return Ok(Some(counts)),
                Ok(ChangeTry::Busy) => {
                    self.report.skipped = true;
                    return Ok(None);
                }
                Err(e) if e.code() == Some(&SqlState::LOCK_NOT_AVAILABLE) => {
                    tracing::debug!(
                        target: "pglogsink::maintain",
                        attempt, change = %what(), "lock busy; retrying"
                    );
                    tokio::time::sleep(pause).await;
                    pause *= 2;
                }
                Err(e)
                    if e.code() == Some(&SqlState::DUPLICATE_TABLE)
                        || e.code() == Some(&SqlState::UNDEFINED_TABLE) =>
                {
                    tracing::debug!(
                        target: "pglogsink::maintain",
                        change = %what(), "done by another instance"
                    );
                    return Ok(None);
                }
                Err(e) => return Err(e),
            }
        }
        self.report.postponed.push(what());
        Ok(None)
    }

    async fn try_once(
        &mut self,
        statements: &[String],
    ) -> Result<ChangeTry, tokio_postgres::Error> {
        let tx = self.client.transaction().await?;
        let locked: bool = tx
            .query_typed_one(
                "SELECT pg_try_advisory_xact_lock($1)",
                &[(&self.lock, Type::INT8)],
            )
            .await?
            .get(0);
        if !locked {
            return Ok(ChangeTry::Busy);
        }
        tx.batch_execute(&format!("SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'"))
            .await?;
        let mut counts = Vec::with_capacity(statements.len());
        for statement in statements {
            let messages = tx.simple_query(statement).await?;
            counts.push(
                messages
                    .iter()
                    .find_map(|m| match m {
                        SimpleQueryMessage::CommandComplete(n) => Some(*n),
                        _ => None,
                    })
                    .unwrap_or(0),
            );
        }
        tx.commit().await?;
        Ok(ChangeTry::Done(counts))
    }
}
