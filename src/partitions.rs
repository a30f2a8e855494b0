//! The Log table's time partitions: their interval, their names, and which
//! exist.
//!
//! Partitions are aligned in UTC: hours on the hour, days at midnight, weeks
//! on Monday at midnight (the same bins as PostgreSQL's
//! `date_bin(step, ts, '2000-01-03 00:00+00')`). They are named after their
//! first instant: `log_p20261203` for a day or a week, `log_p20261203_14` for
//! an hour.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use tokio_postgres::types::Type;

use crate::table::TableName;
use crate::Error;

const MICROS_PER_SECOND: i64 = 1_000_000;
/// 2000-01-03 00:00:00 UTC, a Monday: the origin of every bin.
const ORIGIN_MICROS: i64 = 946_857_600 * MICROS_PER_SECOND;

/// How much time one partition of the Log table covers.
///
/// ```
/// use pglogsink::PartitionInterval;
///
/// let daily: PartitionInterval = "1d".parse()?;
/// assert_eq!(daily, PartitionInterval::Day);
/// assert_eq!(daily.to_string(), "1d");
/// assert!("2d".parse::<PartitionInterval>().is_err());
/// # Ok::<(), pglogsink::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PartitionInterval {
    /// `1h`: for very high volumes or short retentions.
    Hour,
    /// `1d`, the default.
    #[default]
    Day,
    /// `7d`: weeks starting on Monday, for low volumes and long retentions.
    Week,
}

impl PartitionInterval {
    /// The interval's length.
    pub fn duration(self) -> Duration {
        Duration::from_secs(match self {
            PartitionInterval::Hour => 3_600,
            PartitionInterval::Day => 86_400,
            PartitionInterval::Week => 7 * 86_400,
        })
    }

    pub(crate) fn micros(self) -> i64 {
        self.duration().as_secs() as i64 * MICROS_PER_SECOND
    }

    /// As a PostgreSQL interval literal.
    pub(crate) fn sql_interval(self) -> &'static str {
        match self {
            PartitionInterval::Hour => "1 hour",
            PartitionInterval::Day => "1 day",
            PartitionInterval::Week => "7 days",
        }
    }

    /// The start of the bin holding `micros` (microseconds since the epoch).
    pub(crate) fn floor(self, micros: i64) -> i64 {
        let step = self.micros();
        ORIGIN_MICROS + (micros - ORIGIN_MICROS).div_euclid(step) * step
    }

    /// The partition starting at `start` (a bin start).
    pub(crate) fn partition_name(self, table: &TableName, start: i64) -> TableName {
        let (y, m, d, h) = utc_date(start);
        let suffix = match self {
            PartitionInterval::Hour => format!("_p{y:04}{m:02}{d:02}_{h:02}"),
            PartitionInterval::Day | PartitionInterval::Week => format!("_p{y:04}{m:02}{d:02}"),
        };
        table.sibling(&suffix)
    }
}

impl fmt::Display for PartitionInterval {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PartitionInterval::Hour => "1h",
            PartitionInterval::Day => "1d",
            PartitionInterval::Week => "7d",
        })
    }
}

impl FromStr for PartitionInterval {
    type Err = Error;

    fn from_str(s: &str) -> Result<PartitionInterval, Error> {
        match s.trim() {
            "1h" => Ok(PartitionInterval::Hour),
            "1d" | "24h" => Ok(PartitionInterval::Day),
            "7d" | "1w" => Ok(PartitionInterval::Week),
            other => Err(Error::config(
                "partition interval",
                format!("{other:?}: use 1h, 1d or 7d"),
            )),
        }
    }
}

/// The DEFAULT partition's name: `<table>_default`.
pub(crate) fn default_partition(table: &TableName) -> TableName {
    table.sibling("_default")
}

/// The id sequence's name: `<table>_id_seq`.
pub(crate) fn id_sequence(table: &TableName) -> TableName {
    table.sibling("_id_seq")
}

/// Year, month, day and hour (UTC) of an instant in microseconds since the
/// epoch (Howard Hinnant's `civil_from_days`).
fn utc_date(micros: i64) -> (i64, u32, u32, u32) {
    let secs = micros.div_euclid(MICROS_PER_SECOND);
    let days = secs.div_euclid(86_400);
    let hour = (secs.rem_euclid(86_400) / 3_600) as u32;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day, hour)
}

/// `micros` as a SQL timestamptz literal, UTC (`'2026-12-03 00:00:00+00'`).
pub(crate) fn sql_timestamp(micros: i64) -> String {
    format!("'{}'", utc_text(micros))
}

/// The origin of every bin as a SQL literal, for `date_bin`.
pub(crate) fn sql_origin() -> String {
    sql_timestamp(ORIGIN_MICROS)
}

/// `micros` in UTC as PostgreSQL reads it: `2026-12-03 00:00:00+00`, with
/// microseconds when there are any.
pub(crate) fn utc_text(micros: i64) -> String {
    let (y, m, d, h) = utc_date(micros);
    let secs_in_hour = micros.div_euclid(MICROS_PER_SECOND).rem_euclid(3_600);
    let frac = micros.rem_euclid(MICROS_PER_SECOND);
    let frac = if frac == 0 {
        String::new()
    } else {
        format!(".{frac:06}")
    };
    format!(
        "{y:04}-{m:02}-{d:02} {h:02}:{:02}:{:02}{frac}+00",
        secs_in_hour / 60,
        secs_in_hour % 60
    )
}

/// One partition of the Log table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Partition {
    pub(crate) name: TableName,
    /// Its range in microseconds since the epoch; `None` for MINVALUE or
    /// MAXVALUE. Both `None` and `is_default` for the DEFAULT partition.
    pub(crate) from: Option<i64>,
    pub(crate) to: Option<i64>,
    pub(crate) is_default: bool,
}

impl Partition {
    /// Whether the whole of this partition's range is before `cutoff`
    /// (microseconds since the epoch): what retention has passed. Never the
    /// DEFAULT partition.
    pub(crate) fn ended_by(&self, cutoff: i64) -> bool {
        !self.is_default && self.to.is_some_and(|to| to <= cutoff)
    }

    /// Whether this partition's range overlaps `[from, to)`.
    pub(crate) fn overlaps(&self, from: i64, to: i64) -> bool {
        !self.is_default && self.from.map_or(true, |f| f < to) && self.to.map_or(true, |t| t > from)
    }
}

/// How the Log table is laid out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Shape {
    /// No such table.
    Missing,
    /// A plain table: pglogsink's shape before partitioning.
    Plain,
    /// Partitioned (by `sql/schema.sql` or `pglogsink migrate`).
    Partitioned,
}

/// The table's shape.
pub(crate) async fn shape(
    client: &tokio_postgres::Client,
    table: &TableName,
) -> Result<Shape, tokio_postgres::Error> {
    let rows = client
        .query_typed(
            "SELECT c.relkind::text FROM pg_class c WHERE c.oid = to_regclass($1)",
            &[(&table.quoted(), Type::TEXT)],
        )
        .await?;
    Ok(match rows.first().map(|r| r.get::<_, String>(0)) {
        None => Shape::Missing,
        Some(kind) if kind == "p" => Shape::Partitioned,
        Some(_) => Shape::Plain,
    })
}

/// The partitions of `table` (none when it is not partitioned).
pub(crate) async fn list(
    client: &tokio_postgres::Client,
    table: &TableName,
) -> Result<Vec<Partition>, tokio_postgres::Error> {
    // The bound's text carries its UTC offset whatever the session's time
    // zone, so casting it back is exact.
    const SQL: &str = r#"
        SELECT nullif(n.nspname, current_schema())::text, c.relname::text,
               pg_get_expr(c.relpartbound, c.oid) = 'DEFAULT',
               (extract(epoch FROM (regexp_match(pg_get_expr(c.relpartbound, c.oid),
                   'FROM \(''([^'']+)''\)'))[1]::timestamptz) * 1000000)::int8,
               (extract(epoch FROM (regexp_match(pg_get_expr(c.relpartbound, c.oid),
                   'TO \(''([^'']+)''\)'))[1]::timestamptz) * 1000000)::int8
        FROM pg_inherits i
        JOIN pg_class c ON c.oid = i.inhrelid
        JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE i.inhparent = to_regclass($1)
        ORDER BY 4 NULLS FIRST"#;
    let rows = client
        .query_typed(SQL, &[(&table.quoted(), Type::TEXT)])
        .await?;
    Ok(rows
        .iter()
        .map(|row| Partition {
            name: TableName::from_parts(row.get(0), row.get(1)),
            is_default: row.get(2),
            from: row.get(3),
            to: row.get(4),
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn micros(secs: i64) -> i64 {
        secs * MICROS_PER_SECOND
    }

    #[test]
    fn bins_are_aligned_in_utc_and_weeks_start_on_monday() {
        // 2026-12-03 14:25:07 UTC, a Thursday.
        let t = micros(1_796_307_907);
        assert_eq!(PartitionInterval::Hour.floor(t), micros(1_796_306_400));
        assert_eq!(PartitionInterval::Day.floor(t), micros(1_796_256_000));
        // Monday 2026-11-30.
        assert_eq!(
            PartitionInterval::Week.floor(t),
            micros(1_796_256_000 - 3 * 86_400)
        );
        assert_eq!(
            PartitionInterval::Day.floor(micros(1_796_256_000)),
            micros(1_796_256_000),
            "a bin start is its own floor"
        );
        // Before the origin, and before the epoch.
        assert_eq!(PartitionInterval::Day.floor(micros(-1)), micros(-86_400));
    }

    #[test]
    fn names_and_literals() {
        let table = TableName::parse("log").unwrap();
        let day = micros(1_796_256_000);
        assert_eq!(
            PartitionInterval::Day.partition_name(&table, day).name(),
            "log_p20261203"
        );
        assert_eq!(
            PartitionInterval::Hour
                .partition_name(&table, day + micros(14 * 3_600))
                .name(),
            "log_p20261203_14"
        );
        assert_eq!(sql_timestamp(day + 1), "'2026-12-03 00:00:00.000001+00'");
        assert_eq!(utc_date(micros(951_782_400)), (2000, 2, 29, 0));
        assert_eq!(utc_date(micros(-1)), (1969, 12, 31, 23));
        let long = TableName::parse(&"a".repeat(63)).unwrap();
        assert_eq!(
            PartitionInterval::Hour
                .partition_name(&long, day)
                .name()
                .len(),
            63
        );
        assert_eq!(default_partition(&long).name().len(), 63);
    }

    #[test]
    fn intervals_parse_and_print() {
        for (text, interval) in [
            ("1h", PartitionInterval::Hour),
            ("1d", PartitionInterval::Day),
            ("7d", PartitionInterval::Week),
        ] {
            assert_eq!(text.parse::<PartitionInterval>().unwrap(), interval);
            assert_eq!(interval.to_string(), text);
        }
        let err = "30m".parse::<PartitionInterval>().unwrap_err().to_string();
        assert!(err.contains("use 1h, 1d or 7d"), "{err}");
    }

    #[test]
    fn overlap() {
        let p = |from, to| Partition {
            name: TableName::parse("p").unwrap(),
            from,
            to,
            is_default: false,
        };
        assert!(p(Some(10), Some(20)).overlaps(15, 25));
        assert!(!p(Some(10), Some(20)).overlaps(20, 30));
        assert!(p(None, Some(20)).overlaps(0, 11));
        assert!(!p(None, Some(20)).overlaps(20, 21));
    }
}
