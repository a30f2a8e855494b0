//! Following the Log table: new matching rows as their transactions commit,
//! each once, with several writers committing out of id order and other
//! sessions holding transactions open for as long as they like.
//!
//! Ids come from a sequence when a row is written, but the transactions
//! that hold them commit in any order: a batch with lower ids can become
//! visible after one with higher ids was shown. So a poll reads, in one
//! snapshot, the rows above a cursor up to `Q`, the sequence's value read
//! first, and the cursor moves to `Q`. An id up to `Q` that the snapshot
//! cannot see was taken by a transaction still running in it, and that
//! transaction writes to the table: it holds a `ROW EXCLUSIVE` lock (or a
//! stronger one that also keeps readers out) on the table or one of its
//! partitions, taken before its first id and kept until it ends. So
//! `pg_locks`, read after `Q` and before the snapshot, lists every such
//! writer.
//!
//! Each writer is remembered with the ids the cursor passed while it ran,
//! the lowest transaction id its rows can carry (its own, or the snapshot's
//! `xmax` while it has none: a `COPY` takes ids for its first thousand rows
//! before it has one; its subtransactions' come after it), and the
//! transaction ids of the rows the cursor read in that range meanwhile.
//! Once it has ended, its range is read again for the rows from that
//! transaction id on that were not read before: its own, its
//! subtransactions' included.
//!
//! So a session that writes nothing to the table (an idle `BEGIN`, a long
//! report, `pg_dump`, `VACUUM`) holds nothing back, and what is tracked is
//! one entry per writer running across a poll, with the transactions that
//! committed in its range while it ran. A poll returns the rows of at most
//! [`SPAN`] ids above the cursor and the unread rows of each writer that
//! has ended, in id order; rows whose transaction committed late come in a
//! poll after their commit, after rows with higher ids shown before.
//!
//! One case is retried rather than guessed: a writer without a transaction
//! id just before the snapshot and gone just after (it ended meanwhile,
//! before or after the snapshot); the next try knows which.

use std::time::Duration;

use tokio_postgres::types::Type;
use tokio_postgres::{Client, GenericClient, Transaction};

use super::filter::{where_clause, Filter, Sql};
use super::reader::{LogRow, Reader};

/// Most ids one poll reads in one range (above the cursor, or an ended
/// writer's), so that a poll costs about the same however far behind the
/// follower is.
const SPAN: i64 = 10_000;

/// How long [`Reader::follow`] waits for the writers running when it starts.
const START_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// A transaction writing to the table, as `pg_locks` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Locker {
    /// Its virtual transaction id: it has one from its start.
    vxid: String,
    /// Its own transaction id (32-bit, as a row's `xmin` shows it), when
    /// it has one yet.
    xid: Option<i64>,
}

/// What a poll's snapshot could not see: the transactions running in it
/// and all that start after it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Snapshot {
    /// The first transaction id not yet assigned (64-bit).
    xmax: i64,
    /// The transactions running (32-bit).
    running: Vec<i64>,
}

impl Snapshot {
    /// Whether the transaction `xid` (32-bit), seen in a lock just before
    /// this snapshot was taken, had ended by then.
    fn saw_end_of(&self, xid: i64) -> bool {
        !self.running.contains(&xid) && precedes(xid, self.xmax)
    }
}

/// What one poll saw: the writers just before its snapshot, and the
/// snapshot.
#[derive(Debug)]
struct Seen {
    writing: Vec<Locker>,
    snapshot: Snapshot,
}

impl Seen {
    /// The writer `vxid`, if it was still running when the snapshot was
    /// taken.
    fn running(&self, vxid: &str) -> Option<&Locker> {
        self.writing
            .iter()
            .find(|l| l.vxid == vxid)
            .filter(|l| !l.xid.is_some_and(|xid| self.snapshot.saw_end_of(xid)))
    }
}

/// A writer that was running while the cursor passed ids it may hold.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Writer {
    vxid: String,
    /// Its rows carry this transaction id (32-bit) or a later one.
    lowest: i64,
    /// Transaction ids of the rows the cursor read in its range while it
    /// ran: not its.
    passed: Vec<i64>,
    /// Its rows not read yet have ids in `(from, to]`.
    from: i64,
    to: i64,
}

/// Follows a Log table: [`Reader::follow`] makes one, [`Follower::poll`]
/// returns the rows committed since.
#[derive(Debug)]
pub struct Follower {
    reader: Reader,
    filter: Filter,
    /// Every id at or below this was read when it became visible, or
    /// belongs to one of `waiting`.
    cursor: i64,
    /// Writers that were running while the cursor passed their ids.
    waiting: Vec<Writer>,
    /// Transaction ids whose rows an ended writer's range gave: their rows
    /// in other writers' ranges were read then too. Kept while writers are
    /// waiting.
    shown: Vec<i64>,
    /// The last poll left rows to read.
    behind: bool,
}

impl Reader {
    /// The newest `limit` rows matching `filter` (newest first), and a
    /// [`Follower`] that returns the matching rows committed after them.
    ///
    /// It first waits (up to two seconds) for the transactions writing to
    /// the table at that moment to end, so that their rows count as shown
    /// or old; a writer still running then is taken as old too (its rows
    /// below the start are not returned when it commits).
    pub async fn follow(
        &self,
        client: &mut Client,
        filter: &Filter,
        limit: i64,
    ) -> Result<(Vec<LogRow>, Follower), tokio_postgres::Error> {
        // Every id up to `start` was taken by one of `writing` or by a
        // transaction that had ended.
        let start = last_id(client, self).await?;
        let writing = writers(client, self).await?;
        let deadline = std::time::Instant::now() + START_WAIT;
        while std::time::Instant::now() < deadline {
            let now = writers(client, self).await?;
            if !writing.iter().any(|w| now.iter().any(|n| n.vxid == w.vxid)) {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        let tx = self.begin(client).await?;
        let mut newest = self.newest_in(&tx, filter, limit, None).await?;
        tx.commit().await?;
        // Above `start`: the first poll returns them.
        newest.retain(|row| row.id <= start);
        let follower = Follower {
            reader: self.clone(),
            filter: filter.clone(),
            cursor: start,
            waiting: Vec::new(),
            shown: Vec::new(),
            behind: false,
        };
        Ok((newest, follower))
    }
}

/// What one poll read: the rows, and the transaction ids of those above the
/// cursor and of those the ended writers' ranges gave.
#[derive(Debug, Default)]
struct Read {
    rows: Vec<LogRow>,
    new: Vec<i64>,
    ended: Vec<i64>,
}

impl Follower {
    /// The matching rows committed since the last poll, in id order.
    pub async fn poll(
        &mut self,
        client: &mut Client,
    ) -> Result<Vec<LogRow>, tokio_postgres::Error> {
        let mut attempts = 0;
        loop {
            attempts += 1;
            // In this order: an id up to `last_id` that the snapshot cannot
            // see was taken by a writer that `writing` lists.
            let last_id = last_id(client, &self.reader).await?;
            let writing = writers(client, &self.reader).await?;
            let tx = self.reader.begin(client).await?;
            let snapshot = snapshot(&tx).await?;
            let seen = Seen { writing, snapshot };
            // A writer without a transaction id before the snapshot and
            // gone after it: whether it ended before the snapshot is not
            // known. It has ended now; the next try knows.
            let after = writers(&tx, &self.reader).await?;
            let unsure = seen
                .writing
                .iter()
                .any(|l| l.xid.is_none() && !after.iter().any(|a| a.vxid == l.vxid));
            if unsure && attempts < 10 {
                tx.commit().await?;
                continue;
            }
            let ended: Vec<usize> = (0..self.waiting.len())
                .filter(|&i| seen.running(&self.waiting[i].vxid).is_none())
                .collect();
            let read = self.read(&tx, last_id, &ended).await?;
            tx.commit().await?;
            self.advance(last_id, &seen, &ended, &read);
            return Ok(read.rows);
        }
    }

    /// False when the last poll left rows to read (it read as far as one
    /// poll reads): poll again at once rather than after the usual pause.
    pub fn caught_up(&self) -> bool {
        !self.behind
    }

    /// How long to wait before the next poll: `idle` once caught up, none
    /// while a burst is being read page after page.
    pub fn pause(&self, idle: Duration) -> Duration {
        if self.behind {
            Duration::ZERO
        } else {
            idle
        }
    }

    /// The new ids a poll reads: above the cursor, up to `last_id` or
    /// [`SPAN`] ids.
    fn new_ids(&self, last_id: i64) -> (i64, i64) {
        let to = last_id.min(self.cursor.saturating_add(SPAN));
        (self.cursor, to.max(self.cursor))
    }

    /// Move past what a poll read: the cursor; the ended writers, whose
    /// ranges it read; and the writers running when its snapshot was
    /// taken, given the ids the cursor passed.
    fn advance(&mut self, last_id: i64, seen: &Seen, ended: &[usize], read: &Read) {
        let previous = self.cursor;
        self.cursor = self.new_ids(last_id).1;
        let mut index = 0;
        self.waiting.retain(|_| {
            index += 1;
            !ended.contains(&(index - 1))
        });
        add(&mut self.shown, &read.ended);
        if self.cursor > previous {
            for locker in &seen.writing {
                if seen.running(&locker.vxid).is_some() {
                    self.passed(locker, &seen.snapshot, previous, &read.new);
                }
            }
        }
        if self.waiting.is_empty() {
            self.shown.clear();
        }
        self.behind = self.cursor < last_id;
    }

    /// The cursor passed the ids from `previous` on while `locker` was
    /// running (`read`: the transaction ids of the rows it read there).
    fn passed(&mut self, locker: &Locker, snapshot: &Snapshot, previous: i64, read: &[i64]) {
        let cursor = self.cursor;
        match self.waiting.iter_mut().find(|w| w.vxid == locker.vxid) {
            Some(writer) => {
                writer.to = writer.to.max(cursor);
                add(&mut writer.passed, read);
            }
            None => self.waiting.push(Writer {
                vxid: locker.vxid.clone(),
                // Without a transaction id yet, it will get one from the
                // snapshot's xmax on.
                lowest: locker.xid.unwrap_or(snapshot.xmax % (1 << 32)),
                passed: read.to_vec(),
                from: previous,
                to: cursor,
            }),
        }
    }

    /// The matching rows above the cursor up to `last_id`, and the ended
    /// writers' rows in their ranges, in id order.
    async fn read(
        &self,
        tx: &Transaction<'_>,
        last_id: i64,
        ended: &[usize],
    ) -> Result<Read, tokio_postgres::Error> {
        let (from, to) = self.new_ids(last_id);
        let mut read = Read::default();
        if from == to && ended.is_empty() {
            return Ok(read);
        }
        let mut sql = Sql::default();
        let mut ranges = vec![format!(
            "(id > {} AND id <= {})",
            sql.bind(from, Type::INT8),
            sql.bind(to, Type::INT8)
        )];
        for &i in ended {
            ranges.push(self.writer_rows(&mut sql, &self.waiting[i]));
        }
        let mut conditions = vec![format!("({})", ranges.join(" OR "))];
        conditions.extend(sql.conditions(&self.filter));
        let text = format!(
            "SELECT {}, xmin::text::int8 FROM {}{} ORDER BY id",
            self.reader.columns(),
            self.reader.table().quoted(),
            where_clause(&conditions)
        );
        for row in tx.query_typed(&text, &sql.refs()).await? {
            let found = LogRow::read(&row)?;
            let xmin: i64 = row.try_get(8)?;
            add(
                if found.id > from {
                    &mut read.new
                } else {
                    &mut read.ended
                },
                &[xmin],
            );
            read.rows.push(found);
        }
        Ok(read)
    }

    /// An ended writer's rows not read yet: in its range, from its lowest
    /// transaction id on, but none of a transaction whose rows there were
    /// read (by the cursor while it ran, or by another writer's range).
    fn writer_rows(&self, sql: &mut Sql, writer: &Writer) -> String {
        let mut shown: Vec<i64> = writer.passed.iter().chain(&self.shown).copied().collect();
        shown.sort_unstable();
        shown.dedup();
        // `xmin` has 32 bits: "from `lowest` on" is within 2^31 after it.
        format!(
            "(id > {} AND id <= {} AND (xmin::text::int8 - {} + 6442450944) % 4294967296 \
             >= 2147483648 AND NOT xmin::text::int8 = ANY({}))",
            sql.bind(writer.from, Type::INT8),
            sql.bind(writer.to, Type::INT8),
            sql.bind(writer.lowest, Type::INT8),
            sql.bind(shown, Type::INT8_ARRAY)
        )
    }
}

/// Add the transaction ids `xids` to `set` (once each).
fn add(set: &mut Vec<i64>, xids: &[i64]) {
    for xid in xids {
        if !set.contains(xid) {
            set.push(*xid);
        }
    }
}

/// Whether the 32-bit transaction id `xid` comes before `than` (64- or
/// 32-bit: compared within 2^31, as PostgreSQL compares them).
fn precedes(xid: i64, than: i64) -> bool {
    let distance = (than - xid).rem_euclid(1 << 32);
    distance > 0 && distance < 1 << 31
}

/// The id sequence's last value (0 before its first use).
async fn last_id(client: &Client, reader: &Reader) -> Result<i64, tokio_postgres::Error> {
    client
        .query_typed_one(
            "SELECT coalesce(pg_sequence_last_value(pg_get_serial_sequence($1, 'id')), 0)",
            &[(&reader.table().quoted(), Type::TEXT)],
        )
        .await?
        .try_get(0)
}

/// The transactions holding a writer's lock on the table or one of its
/// partitions, with their transaction ids.
async fn writers(
    client: &impl GenericClient,
    reader: &Reader,
) -> Result<Vec<Locker>, tokio_postgres::Error> {
    // A transaction holds an ExclusiveLock on its own id until it ends
    // (and one on each open subtransaction's, after it: the lowest is its
    // own).
    const SQL: &str = "
        WITH locks AS MATERIALIZED (
            SELECT locktype, virtualtransaction AS vxid, transactionid, database, relation,
                   mode, granted
            FROM pg_locks),
        writers AS (
            SELECT DISTINCT vxid FROM locks
            WHERE locktype = 'relation' AND granted
              AND mode IN ('RowExclusiveLock', 'ShareRowExclusiveLock', 'ExclusiveLock',
                           'AccessExclusiveLock')
              AND database = (SELECT oid FROM pg_database WHERE datname = current_database())
              AND relation IN (SELECT relid FROM pg_partition_tree($1::text::regclass)))
        SELECT w.vxid, (
            SELECT min(l.transactionid::text::int8) FROM locks l
            WHERE l.vxid = w.vxid AND l.locktype = 'transactionid'
              AND l.mode = 'ExclusiveLock' AND l.granted)
        FROM writers w";
    let rows = client
        .query_typed(SQL, &[(&reader.table().quoted(), Type::TEXT)])
        .await?;
    rows.iter()
        .map(|row| {
            Ok(Locker {
                vxid: row.try_get(0)?,
                xid: row.try_get(1)?,
            })
        })
        .collect()
}

/// What the transaction's snapshot cannot see: its first statement, so
/// that it takes the snapshot.
async fn snapshot(tx: &Transaction<'_>) -> Result<Snapshot, tokio_postgres::Error> {
    let row = tx
        .query_typed_one(
            "SELECT pg_snapshot_xmax(s)::text::int8,
                    ARRAY(SELECT x::text::int8 % 4294967296 FROM pg_snapshot_xip(s) x)
             FROM (SELECT pg_current_snapshot() s) c",
            &[],
        )
        .await?;
    Ok(Snapshot {
        xmax: row.try_get(0)?,
        running: row.try_get(1)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::table::TableName;

    fn follower(cursor: i64) -> Follower {
        Follower {
            reader: Reader::new(TableName::parse("log").unwrap()),
            filter: Filter::default(),
            cursor,
            waiting: Vec::new(),
            shown: Vec::new(),
            behind: false,
        }
    }

    fn seen(writing: &[(&str, Option<i64>)], xmax: i64, running: &[i64]) -> Seen {
        Seen {
            writing: writing
                .iter()
                .map(|(vxid, xid)| Locker {
                    vxid: (*vxid).into(),
                    xid: *xid,
                })
                .collect(),
            snapshot: Snapshot {
                xmax,
                running: running.to_vec(),
            },
        }
    }

    fn read(new: &[i64], ended: &[i64]) -> Read {
        Read {
            rows: Vec::new(),
            new: new.to_vec(),
            ended: ended.to_vec(),
        }
    }

    fn ended(f: &Follower, seen: &Seen) -> Vec<usize> {
        (0..f.waiting.len())
            .filter(|&i| seen.running(&f.waiting[i].vxid).is_none())
            .collect()
    }

    fn poll(f: &mut Follower, last_id: i64, seen: &Seen, read: &Read) {
        let ended = ended(f, seen);
        f.advance(last_id, seen, &ended, read);
    }

    #[test]
    fn a_writer_running_across_polls_keeps_the_ids_the_cursor_passed() {
        let mut f = follower(100);
        // Transaction 7 writes; 5 committed rows the cursor read.
        poll(
            &mut f,
            150,
            &seen(&[("3/1", Some(7))], 10, &[7]),
            &read(&[5], &[]),
        );
        assert_eq!(f.cursor, 150);
        let w = &f.waiting[0];
        assert_eq!((w.lowest, w.from, w.to, &w.passed), (7, 100, 150, &vec![5]));
        poll(
            &mut f,
            180,
            &seen(&[("3/1", Some(7))], 12, &[7]),
            &read(&[8, 9], &[]),
        );
        assert_eq!(
            (f.waiting[0].to, &f.waiting[0].passed),
            (180, &vec![5, 8, 9])
        );
        // Ended: this poll read its range; forgotten.
        let done = seen(&[], 13, &[]);
        assert_eq!(ended(&f, &done), [0]);
        poll(&mut f, 200, &done, &read(&[], &[7]));
        assert_eq!(f.cursor, 200);
        assert!(f.waiting.is_empty() && f.shown.is_empty());
    }

    #[test]
    fn a_writer_without_a_transaction_id_gets_one_from_the_snapshots_xmax_on() {
        let mut f = follower(100);
        poll(
            &mut f,
            150,
            &seen(&[("4/2", None)], (1 << 32) + 20, &[5]),
            &read(&[], &[]),
        );
        assert_eq!(f.waiting[0].lowest, 20, "32 bits, as xmin");
    }

    #[test]
    fn a_writer_that_ended_before_the_snapshot_is_not_tracked() {
        let mut f = follower(100);
        // Holding its lock just before the snapshot, committed before it:
        // the snapshot saw its rows.
        poll(
            &mut f,
            150,
            &seen(&[("5/3", Some(8))], 10, &[]),
            &read(&[8], &[]),
        );
        assert!(f.waiting.is_empty());
    }

    #[test]
    fn idle_transactions_are_not_writers_and_nothing_new_adds_no_range() {
        let mut f = follower(100);
        poll(
            &mut f,
            100,
            &seen(&[("3/1", Some(7))], 10, &[7, 2, 3]),
            &read(&[], &[]),
        );
        assert!(f.waiting.is_empty(), "the cursor passed no id");
        poll(&mut f, 150, &seen(&[], 10, &[2, 3]), &read(&[], &[]));
        assert!(f.waiting.is_empty() && f.caught_up());
    }

    #[test]
    fn what_ended_writers_gave_is_kept_out_of_the_others_ranges_while_they_wait() {
        let mut f = follower(100);
        let both = seen(&[("3/1", Some(7)), ("4/2", Some(9))], 10, &[7, 9]);
        poll(&mut f, 150, &both, &read(&[], &[]));
        assert_eq!(f.waiting.len(), 2);
        // 7 ended and its range gave its rows; 9 still runs.
        poll(
            &mut f,
            160,
            &seen(&[("4/2", Some(9))], 11, &[9]),
            &read(&[], &[7]),
        );
        assert_eq!((f.waiting.len(), &f.shown), (1, &vec![7]));
        let mut sql = Sql::default();
        let condition = f.writer_rows(&mut sql, &f.waiting[0]);
        assert!(
            condition.contains("NOT xmin::text::int8 = ANY($4)"),
            "{condition}"
        );
        assert_eq!(sql.params.len(), 4);
        poll(&mut f, 170, &seen(&[], 12, &[]), &read(&[], &[9]));
        assert!(f.waiting.is_empty() && f.shown.is_empty());
    }

    #[test]
    fn a_poll_reads_a_span_of_ids_at_most_and_says_it_is_behind() {
        let mut f = follower(0);
        assert_eq!(f.new_ids(25_000), (0, SPAN));
        poll(&mut f, 25_000, &seen(&[], 1, &[]), &read(&[], &[]));
        assert_eq!(f.cursor, SPAN);
        assert!(!f.caught_up());
        poll(&mut f, 25_000, &seen(&[], 1, &[]), &read(&[], &[]));
        poll(&mut f, 25_000, &seen(&[], 1, &[]), &read(&[], &[]));
        assert_eq!(f.cursor, 25_000);
        assert!(f.caught_up());
    }

    #[test]
    fn transaction_ids_compare_in_32_bits_around_the_wrap() {
        assert!(precedes(5, 10));
        assert!(!precedes(10, 10));
        assert!(!precedes(11, 10));
        assert!(precedes(4_294_967_290, (1 << 32) + 3), "before the wrap");
        assert!(!precedes(5, (1 << 32) + 3), "after the wrap");
    }
}
