//! How many rows match a filter, per time bucket and level: the viewer's
//! histogram (a spike of errors shows at a glance).
//!
//! One `GROUP BY` over the range, in the reader's read-only transaction and
//! under its statement timeout; the range bounds the scan (the BRIN index on
//! "timestamp" skips the block ranges outside it).

use std::time::SystemTime;

use tokio_postgres::types::Type;
use tokio_postgres::Client;

use super::filter::{where_clause, Filter, Sql};
use super::reader::Reader;
use crate::level::Level;
use crate::micros::unix_micros;

/// Most buckets one histogram has.
pub const MAX_BUCKETS: u32 = 1_000;

/// Bucket widths a histogram picks from, so that bars start on round times.
const STEPS: [u64; 20] = [
    1,
    2,
    5,
    10,
    15,
    30,
    60,
    2 * 60,
    5 * 60,
    10 * 60,
    15 * 60,
    30 * 60,
    3_600,
    2 * 3_600,
    3 * 3_600,
    6 * 3_600,
    12 * 3_600,
    86_400,
    7 * 86_400,
    30 * 86_400,
];

/// Counts of matching rows per time bucket, each split by level.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Histogram {
    /// Start of the first bucket, microseconds since the Unix epoch (a
    /// multiple of the width, so bars begin on round times).
    pub start_micros: i64,
    /// Width of every bucket in microseconds.
    pub bucket_micros: i64,
    /// Per bucket, oldest first: the count of each level, in the order of
    /// [`Level::ALL`] (trace to error).
    pub counts: Vec<[i64; 5]>,
}

impl Histogram {
    /// The rows counted, all buckets and levels.
    pub fn total(&self) -> i64 {
        self.counts.iter().flatten().sum()
    }
}

impl Reader {
    /// Count the rows matching `filter` between `since` and `until`, in
    /// about `buckets` buckets (a round width, 1 s, 5 m, 1 h..., and
    /// aligned to it, so one or two more at most). The
    /// filter's own `since`/`until` narrow the range further.
    ///
    /// ```no_run
    /// # async fn demo(mut client: tokio_postgres::Client) -> Result<(), Box<dyn std::error::Error>> {
    /// use std::time::{Duration, SystemTime};
    /// use pglogsink::admin::query::{Filter, Reader};
    ///
    /// let reader = Reader::new(pglogsink::TableName::parse("log")?);
    /// let now = SystemTime::now();
    /// let day = reader
    ///     .histogram(&mut client, &Filter::default(), now - Duration::from_secs(86_400), now, 48)
    ///     .await?;
    /// println!("{} rows in {} buckets", day.total(), day.counts.len());
    /// # Ok(()) }
    /// ```
    pub async fn histogram(
        &self,
        client: &mut Client,
        filter: &Filter,
        since: SystemTime,
        until: SystemTime,
        buckets: u32,
    ) -> Result<Histogram, tokio_postgres::Error> {
        let since = filter.since.map_or(since, |s| s.max(since));
        let until = filter.until.map_or(until, |u| u.min(until));
        let (start, width, count) = layout(unix_micros(since), unix_micros(until), buckets);
        let mut counts = vec![[0i64; 5]; count];
        if count == 0 {
            return Ok(Histogram {
                start_micros: start,
                bucket_micros: width,
                counts,
            });
        }
        let ranged = Filter {
            since: Some(since),
            until: Some(until),
            ..filter.clone()
        };
        let (sql, params) = self.histogram_sql(&ranged, start, width);
        let tx = self.begin(client).await?;
        let rows = tx.query_typed(&sql, &params.refs()).await?;
        tx.commit().await?;
        for row in rows {
            let bucket: i64 = row.try_get(0)?;
            let level: String = row.try_get(1)?;
            let n: i64 = row.try_get(2)?;
            let level = Level::ALL.iter().position(|l| l.as_str() == level);
            if let (Some(slot), Some(level)) = (counts.get_mut(bucket as usize), level) {
                slot[level] += n;
            }
        }
        Ok(Histogram {
            start_micros: start,
            bucket_micros: width,
            counts,
        })
    }

    fn histogram_sql(&self, filter: &Filter, start: i64, width: i64) -> (String, Sql) {
        let mut sql = Sql::default();
        let conditions = sql.conditions(filter);
        let start = sql.bind(start, Type::INT8);
        let width = sql.bind(width, Type::INT8);
        let text = format!(
            "SELECT ((extract(epoch FROM \"timestamp\") * 1000000)::int8 - {start}) / {width}, \
             level::text, count(*) FROM {}{} GROUP BY 1, 2",
            self.table().quoted(),
            where_clause(&conditions)
        );
        (text, sql)
    }
}

/// The first bucket's start, the bucket width and the number of buckets
/// covering `[since, until)` in at most `buckets` buckets of a round width.
fn layout(since: i64, until: i64, buckets: u32) -> (i64, i64, usize) {
    let buckets = buckets.clamp(1, MAX_BUCKETS) as i64;
    let span = until.saturating_sub(since).max(1);
    // Rounded down: a range a hair longer than an hour (it ends "now")
    // still takes 5-minute buckets for 12, and has one more.
    let wanted = span / buckets;
    let width = STEPS
        .iter()
        .map(|s| (*s as i64) * 1_000_000)
        .find(|w| *w >= wanted)
        .unwrap_or_else(|| round_up(wanted, 30 * 86_400 * 1_000_000));
    let start = since.div_euclid(width) * width;
    let count = if until <= since {
        0
    } else {
        (until - start + width - 1) / width
    };
    (
        start,
        width,
        count.clamp(0, MAX_BUCKETS as i64 * 2) as usize,
    )
}

fn round_up(n: i64, unit: i64) -> i64 {
    (n + unit - 1) / unit * unit
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::table::TableName;
    use std::time::UNIX_EPOCH;

    const S: i64 = 1_000_000;

    #[test]
    fn buckets_have_a_round_width_and_start() {
        // One day in 60 buckets: 24 min each is rounded up to 30 min.
        let since = 1_000_000_123 * S;
        let (start, width, count) = layout(since, since + 86_400 * S, 60);
        assert_eq!(width, 30 * 60 * S);
        assert_eq!(start % width, 0);
        assert!(start <= since && since - start < width);
        assert_eq!(count, 49, "48 whole buckets and one begun before since");
        // Fifteen minutes in 60 buckets: 15 s.
        assert_eq!(layout(0, 15 * 60 * S, 60), (0, 15 * S, 60));
        // An empty or inverted range has no bucket.
        assert_eq!(layout(10 * S, 10 * S, 60).2, 0);
        assert_eq!(layout(10 * S, 5 * S, 60).2, 0);
        // Ten years: widths past the table are whole 30-day months.
        let (_, width, count) = layout(0, 3_650 * 86_400 * S, 10);
        assert_eq!(width % (30 * 86_400 * S), 0);
        assert!(count <= 11, "{count}");
    }

    #[test]
    fn the_sql_counts_per_bucket_and_level_with_bound_values() {
        let reader = Reader::new(TableName::parse("audit.log").unwrap());
        let filter = Filter {
            level: Some(Level::Warn),
            grep: Some("x".into()),
            since: Some(UNIX_EPOCH),
            ..Filter::default()
        };
        let (sql, params) = reader.histogram_sql(&filter, 0, 60 * S);
        assert_eq!(
            sql,
            "SELECT ((extract(epoch FROM \"timestamp\") * 1000000)::int8 - $3) / $4, level::text, \
             count(*) FROM \"audit\".\"log\" WHERE level >= 'warn' AND \"timestamp\" >= $1 \
             AND message ILIKE $2 GROUP BY 1, 2"
        );
        assert_eq!(params.params.len(), 4);
    }
}
