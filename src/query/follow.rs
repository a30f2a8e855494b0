//! Following the Log table: new matching rows, as they are committed, none
//! missed and none twice, with several writers committing out of id order.
//!
//! Ids come from a sequence when a row is written, but the transactions
//! that hold them commit in any order: a batch with lower ids can become
//! visible after one with higher ids was shown. So the follower keeps a low
//! water mark below which every id is settled, re-reads the rows above it
//! at each poll, and skips the ids it has shown.
//!
//! A poll notes, in its own snapshot, the sequence's last value `Q` and the
//! snapshot's `xmax`. Once a later snapshot's `xmin` has passed that `xmax`,
//! every transaction that was running at the first poll has ended, so every
//! id up to `Q` is committed or gone: the mark moves to `Q`. Typically that
//! is one poll later, so a poll reads little more than the new rows (a
//! range of the BRIN index on ("timestamp", id)). The one gap: a writer that takes an id
//! before it has a transaction id (a plain `INSERT` evaluates the default
//! first) could, in the microseconds between the two, be missed; pglogsink's
//! own batches take their transaction id first (the ledger row).

use std::collections::{BTreeSet, VecDeque};

use tokio_postgres::types::Type;
use tokio_postgres::{Client, Transaction};

use super::filter::{where_clause, Sql};
use super::{Filter, LogRow, Reader};

/// Most rows one poll returns; a larger burst takes several polls.
const PAGE: i64 = 10_000;

/// What one poll saw of the writers.
#[derive(Debug, Clone, Copy)]
struct Mark {
    /// The id sequence's last value (0 before its first use).
    last_id: i64,
    /// Transactions from this one on had not started.
    xmax: i64,
    /// Every transaction before this one had ended (only transactions that
    /// write have ids: a long read-only query does not hold this back, a
    /// long-running writer does, and the re-read window grows meanwhile).
    xmin: i64,
}

/// Follows a Log table: [`Reader::follow`] makes one, [`Follower::poll`]
/// returns the rows committed since.
#[derive(Debug)]
pub struct Follower {
    reader: Reader,
    filter: Filter,
    /// Every id at or below this is settled and was shown or skipped.
    low_water: i64,
    /// Ids above `low_water` already returned.
    shown: BTreeSet<i64>,
    /// Marks of polls whose running transactions may not all have ended.
    pending: VecDeque<Mark>,
}

impl Reader {
    /// The newest `limit` rows matching `filter` (newest first), and a
    /// [`Follower`] that returns the matching rows committed after them.
    ///
    /// It first waits (up to two seconds) for the transactions writing at
    /// that moment to end, so that it knows from which id on a row that
    /// commits later is new.
    pub async fn follow(
        &self,
        client: &mut Client,
        filter: &Filter,
        limit: i64,
    ) -> Result<(Vec<LogRow>, Follower), tokio_postgres::Error> {
        let before = self.settled_mark(client).await?;
        let tx = self.begin(client).await?;
        let start = mark(&tx, self).await?;
        let newest = self.newest_in(&tx, filter, limit, None).await?;
        let mut follower = Follower {
            reader: self.clone(),
            filter: filter.clone(),
            low_water: before.last_id,
            shown: BTreeSet::new(),
            pending: VecDeque::from([start]),
        };
        // Rows above the mark already visible were either shown just now
        // or are older than the newest `limit`: neither is new.
        let visible = follower.above_low_water(&tx).await?;
        tx.commit().await?;
        follower.shown.extend(visible.iter().map(|r| r.id));
        Ok((newest, follower))
    }

    /// A mark whose running transactions have ended (or the first one, if
    /// they have not within two seconds).
    async fn settled_mark(&self, client: &mut Client) -> Result<Mark, tokio_postgres::Error> {
        let tx = self.begin(client).await?;
        let first = mark(&tx, self).await?;
        tx.commit().await?;
        for _ in 0..200 {
            let tx = self.begin(client).await?;
            let now = mark(&tx, self).await?;
            tx.commit().await?;
            if now.xmin >= first.xmax {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        Ok(first)
    }
}

impl Follower {
    /// The matching rows committed since the last poll, in id order.
    pub async fn poll(
        &mut self,
        client: &mut Client,
    ) -> Result<Vec<LogRow>, tokio_postgres::Error> {
        let tx = self.reader.begin(client).await?;
        let now = mark(&tx, &self.reader).await?;
        let rows = self.above_low_water(&tx).await?;
        tx.commit().await?;
        let complete = (rows.len() as i64) < PAGE;
        let last_read = rows.last().map(|r| r.id);
        let fresh: Vec<LogRow> = rows
            .into_iter()
            .filter(|r| !self.shown.contains(&r.id))
            .collect();
        self.shown.extend(fresh.iter().map(|r| r.id));
        self.pending.push_back(now);
        self.advance(now.xmin, if complete { None } else { last_read });
        Ok(fresh)
    }

    /// Move the low water mark past every poll whose running transactions
    /// have all ended by `xmin` (not past `cap`, the last id read when a
    /// poll was cut short by its page size).
    fn advance(&mut self, xmin: i64, cap: Option<i64>) {
        while let Some(oldest) = self.pending.front() {
            if oldest.xmax > xmin {
                break;
            }
            let settled = cap.map_or(oldest.last_id, |cap| oldest.last_id.min(cap));
            self.low_water = self.low_water.max(settled);
            if settled < oldest.last_id {
                break;
            }
            self.pending.pop_front();
        }
        let low_water = self.low_water;
        self.shown.retain(|&id| id > low_water);
    }

    async fn above_low_water(
        &self,
        tx: &Transaction<'_>,
    ) -> Result<Vec<LogRow>, tokio_postgres::Error> {
        let mut sql = Sql::default();
        let mut conditions = vec![format!("id > {}", sql.bind(self.low_water, Type::INT8))];
        conditions.extend(sql.conditions(&self.filter));
        let text = format!(
            "SELECT {} FROM {}{} ORDER BY id LIMIT {PAGE}",
            self.reader.columns(),
            self.reader.table.quoted(),
            where_clause(&conditions)
        );
        let rows = tx.query_typed(&text, &sql.refs()).await?;
        rows.iter().map(LogRow::read).collect()
    }
}

/// The id sequence's last value and the snapshot's bounds, in the
/// transaction's snapshot.
async fn mark(tx: &Transaction<'_>, reader: &Reader) -> Result<Mark, tokio_postgres::Error> {
    let row = tx
        .query_typed_one(
            "SELECT coalesce(pg_sequence_last_value(pg_get_serial_sequence($1, 'id')), 0),
                    pg_snapshot_xmax(pg_current_snapshot())::text::int8,
                    pg_snapshot_xmin(pg_current_snapshot())::text::int8",
            &[(&reader.table.quoted(), Type::TEXT)],
        )
        .await?;
    Ok(Mark {
        last_id: row.try_get(0)?,
        xmax: row.try_get(1)?,
        xmin: row.try_get(2)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::table::TableName;

    fn follower() -> Follower {
        Follower {
            reader: Reader::new(TableName::parse("log").unwrap()),
            filter: Filter::default(),
            low_water: 0,
            shown: BTreeSet::new(),
            pending: VecDeque::new(),
        }
    }

    fn mark(last_id: i64, xmin: i64, xmax: i64) -> Mark {
        Mark {
            last_id,
            xmax,
            xmin,
        }
    }

    #[test]
    fn the_mark_moves_only_once_running_transactions_have_ended() {
        let mut f = follower();
        f.shown.extend([5, 9, 12]);
        f.pending.push_back(mark(10, 100, 105));
        // Transaction 103 (running at the first poll) is still running.
        f.pending.push_back(mark(14, 103, 108));
        f.advance(103, None);
        assert_eq!(f.low_water, 0, "xid 103 may still commit ids up to 10");
        // All of them ended: ids up to 10 are settled.
        f.pending.push_back(mark(20, 106, 110));
        f.advance(106, None);
        assert_eq!(f.low_water, 10);
        assert_eq!(f.shown, BTreeSet::from([12]), "settled ids are forgotten");
        assert_eq!(f.pending.len(), 2);
    }

    #[test]
    fn a_cut_short_poll_does_not_skip_unread_rows() {
        let mut f = follower();
        f.pending.push_back(mark(50_000, 100, 101));
        f.advance(200, Some(30_000));
        assert_eq!(f.low_water, 30_000);
        assert_eq!(f.pending.len(), 1, "the rest of the mark waits");
        f.advance(200, None);
        assert_eq!(f.low_water, 50_000);
        assert!(f.pending.is_empty());
    }
}
