//! The reader: a table, a time zone and format, a statement timeout; the
//! rows it reads ([`LogRow`]) and the newest-rows pages.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio_postgres::types::Type;
use tokio_postgres::{Client, IsolationLevel, Row, Transaction};

use crate::micros::from_unix_micros;
use crate::table::TableName;

use super::filter::{where_clause, Filter, Sql, When};

/// Time windows tried, one after the other, for "the newest N rows" (the
/// last step has no bound).
const WINDOWS: [Duration; 6] = [
    Duration::from_secs(60),
    Duration::from_secs(15 * 60),
    Duration::from_secs(3_600),
    Duration::from_secs(6 * 3_600),
    Duration::from_secs(86_400),
    Duration::from_secs(7 * 86_400),
];

/// How times are written in [`LogRow::timestamp`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TimeFormat {
    /// `2026-11-23 16:19:18.017687 +01:00`, in the reader's time zone.
    #[default]
    Local,
    /// RFC 3339 in UTC: `2026-11-23T15:19:18.017687Z`.
    Rfc3339Utc,
}

/// One row of the Log table, as read for display.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogRow {
    /// The row's id (insertion order).
    pub id: i64,
    /// Its "timestamp" in microseconds since the Unix epoch (the paging key
    /// with `id`).
    pub micros: i64,
    /// Its "timestamp" as text, in the reader's [`TimeFormat`].
    pub timestamp: String,
    /// `trace` to `error`.
    pub level: String,
    /// The target.
    pub target: String,
    /// The message.
    pub message: String,
    /// The producer's thread id.
    pub thread_id: Option<i64>,
    /// The fields as JSON text (jsonb's own rendering), `None` when empty.
    pub fields: Option<String>,
}

impl LogRow {
    pub(super) fn read(row: &Row) -> Result<LogRow, tokio_postgres::Error> {
        Ok(LogRow {
            id: row.try_get(0)?,
            micros: row.try_get(1)?,
            timestamp: row.try_get(2)?,
            level: row.try_get(3)?,
            target: row.try_get(4)?,
            message: row.try_get(5)?,
            thread_id: row.try_get(6)?,
            fields: row.try_get(7)?,
        })
    }

    /// The key to ask for the rows before this one ([`Reader::older`]).
    pub fn key(&self) -> (i64, i64) {
        (self.micros, self.id)
    }
}

/// Reads one Log table. Cheap to clone; holds no connection.
///
/// ```no_run
/// # async fn demo(mut client: tokio_postgres::Client) -> Result<(), Box<dyn std::error::Error>> {
/// use pglogsink::admin::query::{Filter, Reader};
/// use pglogsink::{Level, TableName};
///
/// let reader = Reader::new(TableName::parse("log")?).time_zone("Europe/Paris");
/// let filter = Filter { level: Some(Level::Warn), ..Filter::default() };
/// for row in reader.newest(&mut client, &filter, 20).await? {
///     println!("{} {} {}", row.timestamp, row.level, row.message);
/// }
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct Reader {
    table: TableName,
    zone: String,
    format: TimeFormat,
    statement_timeout: Option<Duration>,
}

impl Reader {
    /// A reader of `table`, showing times in UTC until told otherwise.
    pub fn new(table: TableName) -> Reader {
        Reader {
            table,
            zone: "UTC".to_owned(),
            format: TimeFormat::Local,
            statement_timeout: None,
        }
    }

    /// Show local times and read timestamps without an offset in this IANA
    /// time zone (`Europe/Paris`); PostgreSQL converts both ways.
    pub fn time_zone(mut self, zone: impl Into<String>) -> Reader {
        self.zone = zone.into();
        self
    }

    /// How [`LogRow::timestamp`] is written.
    pub fn time_format(mut self, format: TimeFormat) -> Reader {
        self.format = format;
        self
    }

    /// Cancel any query of this reader that runs longer than this.
    pub fn statement_timeout(mut self, timeout: Duration) -> Reader {
        self.statement_timeout = Some(timeout);
        self
    }

    /// The table read.
    pub fn table(&self) -> &TableName {
        &self.table
    }

    /// A short read-only transaction with the reader's settings.
    pub(crate) async fn begin<'c>(
        &self,
        client: &'c mut Client,
    ) -> Result<Transaction<'c>, tokio_postgres::Error> {
        let tx = client
            .build_transaction()
            .isolation_level(IsolationLevel::RepeatableRead)
            .read_only(true)
            .start()
            .await?;
        // No JIT: these are short queries whose row estimates can be far
        // too high (a request id), and compiling one took 250 ms where
        // running it takes 1 ms (50 million rows).
        let mut settings = format!(
            "SET LOCAL TimeZone = '{}'; SET LOCAL jit = off;",
            self.zone.replace('\'', "''")
        );
        if let Some(timeout) = self.statement_timeout {
            settings.push_str(&format!(
                " SET LOCAL statement_timeout = {};",
                timeout.as_millis().max(1)
            ));
        }
        tx.batch_execute(&settings).await?;
        Ok(tx)
    }

    /// Check that PostgreSQL knows the reader's time zone.
    pub async fn check_time_zone(&self, client: &mut Client) -> Result<(), tokio_postgres::Error> {
        self.begin(client).await?.commit().await
    }

    /// Read a timestamp as PostgreSQL does (a time without an offset is in
    /// the reader's time zone). The error is PostgreSQL's.
    pub async fn timestamp(
        &self,
        client: &mut Client,
        text: &str,
    ) -> Result<SystemTime, tokio_postgres::Error> {
        let tx = self.begin(client).await?;
        let row = tx
            .query_typed_one("SELECT $1::text::timestamptz", &[(&text, Type::TEXT)])
            .await?;
        let at = row.try_get(0)?;
        tx.commit().await?;
        Ok(at)
    }

    /// `when` as an instant: durations by this machine's clock, timestamps
    /// by PostgreSQL in the reader's time zone.
    pub async fn resolve(
        &self,
        client: &mut Client,
        when: &When,
    ) -> Result<SystemTime, tokio_postgres::Error> {
        match when {
            When::Ago(_) => Ok(when.resolve_ago().unwrap_or(UNIX_EPOCH)),
            When::At(text) => self.timestamp(client, text).await,
        }
    }

    /// The newest `limit` rows matching `filter`, newest first.
    pub async fn newest(
        &self,
        client: &mut Client,
        filter: &Filter,
        limit: i64,
    ) -> Result<Vec<LogRow>, tokio_postgres::Error> {
        self.page(client, filter, limit, None).await
    }

    /// The `limit` rows matching `filter` just older than `key` (a row's
    /// [`LogRow::key`]), newest first: the next page, without OFFSET.
    pub async fn older(
        &self,
        client: &mut Client,
        filter: &Filter,
        limit: i64,
        key: (i64, i64),
    ) -> Result<Vec<LogRow>, tokio_postgres::Error> {
        self.page(client, filter, limit, Some(key)).await
    }

    async fn page(
        &self,
        client: &mut Client,
        filter: &Filter,
        limit: i64,
        before: Option<(i64, i64)>,
    ) -> Result<Vec<LogRow>, tokio_postgres::Error> {
        let tx = self.begin(client).await?;
        let rows = self.newest_in(&tx, filter, limit, before).await?;
        tx.commit().await?;
        Ok(rows)
    }

    /// The newest rows in one transaction: a widening time window, unless
    /// the filter is an index lookup.
    pub(crate) async fn newest_in(
        &self,
        tx: &Transaction<'_>,
        filter: &Filter,
        limit: i64,
        before: Option<(i64, i64)>,
    ) -> Result<Vec<LogRow>, tokio_postgres::Error> {
        let anchor = [
            filter.until,
            before.map(|(micros, _)| from_unix_micros(micros + 1)),
        ]
        .into_iter()
        .flatten()
        .min()
        .unwrap_or_else(SystemTime::now);
        if filter.is_lookup() {
            // PostgreSQL guesses tens of thousands of rows per partition for
            // one request id (it has no statistics for the jsonb expression)
            // and plans parallel workers: 37 ms to start them for a lookup
            // that takes 0.2 ms in the index (50 million rows).
            tx.batch_execute("SET LOCAL max_parallel_workers_per_gather = 0")
                .await?;
        }
        let windows: &[Duration] = if filter.is_lookup() { &[] } else { &WINDOWS };
        for window in windows {
            let start = anchor.checked_sub(*window).unwrap_or(UNIX_EPOCH);
            // --since is narrower than this window, or about as wide: the
            // last query (with --since alone) is the one to run.
            if filter
                .since
                .is_some_and(|since| since + *window / 4 >= start)
            {
                break;
            }
            let windowed = Filter {
                since: Some(start),
                ..filter.clone()
            };
            let rows = self.select_newest(tx, &windowed, limit, before).await?;
            if rows.len() as i64 >= limit {
                return Ok(rows);
            }
        }
        self.select_newest(tx, filter, limit, before).await
    }

    async fn select_newest(
        &self,
        tx: &Transaction<'_>,
        filter: &Filter,
        limit: i64,
        before: Option<(i64, i64)>,
    ) -> Result<Vec<LogRow>, tokio_postgres::Error> {
        let (sql, params) = self.newest_sql(filter, limit, before);
        let rows = tx.query_typed(&sql, &params.refs()).await?;
        rows.iter().map(LogRow::read).collect()
    }

    fn newest_sql(&self, filter: &Filter, limit: i64, before: Option<(i64, i64)>) -> (String, Sql) {
        let mut sql = Sql::default();
        let mut conditions = sql.conditions(filter);
        if let Some((micros, id)) = before {
            let at = sql.bind(from_unix_micros(micros), Type::TIMESTAMPTZ);
            let id = sql.bind(id, Type::INT8);
            // The first term alone lets partitions and block ranges be skipped.
            conditions.push(format!(
                "\"timestamp\" <= {at} AND (\"timestamp\", id) < ({at}, {id})"
            ));
        }
        let limit = sql.bind(limit, Type::INT8);
        // The output columns (to_char and friends) are computed for the rows
        // kept, not for every row sorted: 4 times faster on a window of
        // tens of thousands of rows.
        let text = format!(
            "SELECT {} FROM (SELECT * FROM {}{} ORDER BY \"timestamp\" DESC, id DESC LIMIT {limit}) \
             newest ORDER BY \"timestamp\" DESC, id DESC",
            self.columns(),
            self.table.quoted(),
            where_clause(&conditions)
        );
        (text, sql)
    }

    pub(super) fn columns(&self) -> &'static str {
        match self.format {
            TimeFormat::Local => {
                r#"id, (extract(epoch FROM "timestamp") * 1000000)::int8,
                   to_char("timestamp", 'YYYY-MM-DD HH24:MI:SS.US TZH:TZM'),
                   level::text, target, message, thread_id, fields::text"#
            }
            TimeFormat::Rfc3339Utc => {
                r#"id, (extract(epoch FROM "timestamp") * 1000000)::int8,
                   to_char("timestamp" AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'),
                   level::text, target, message, thread_id, fields::text"#
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::level::Level;

    fn reader() -> Reader {
        Reader::new(TableName::parse("audit.log").unwrap())
    }

    #[test]
    fn no_filters_is_the_newest_by_time() {
        let (sql, params) = reader().newest_sql(&Filter::default(), 50, None);
        assert!(
            sql.ends_with(
                r#"FROM (SELECT * FROM "audit"."log" ORDER BY "timestamp" DESC, id DESC LIMIT $1) newest ORDER BY "timestamp" DESC, id DESC"#
            ),
            "{sql}"
        );
        assert_eq!(params.params.len(), 1);
    }

    #[test]
    fn older_pages_continue_from_a_key() {
        let filter = Filter {
            level: Some(Level::Error),
            ..Filter::default()
        };
        let (sql, params) = reader().newest_sql(&filter, 10, Some((5, 7)));
        assert!(
            sql.contains(
                "WHERE level >= 'error' AND \"timestamp\" <= $1 AND (\"timestamp\", id) < ($1, $2) \
                 ORDER BY"
            ),
            "{sql}"
        );
        assert_eq!(format!("{:?}", params.params[1].0), "7");
    }
}
