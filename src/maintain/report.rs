//! What a maintenance run changed, as the operator reads it.

use std::fmt;
use std::time::Duration;

use crate::report::human_bytes;
use crate::Level;

/// What a maintenance run changed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct MaintenanceReport {
    /// Partitions created.
    pub created: Vec<String>,
    /// Rows moved from the DEFAULT partition into partitions created for them.
    pub moved_from_default: u64,
    /// Partitions dropped by retention.
    pub dropped: Vec<DroppedPartition>,
    /// Rows older than the retention deleted from the DEFAULT partition.
    pub deleted_from_default: u64,
    /// Rows the DEFAULT partition keeps because their time is outside the
    /// partition window (older than `max_age`, or past the premake
    /// horizon): not a change, what is left. Retention deletes the old
    /// ones; the window reaches the future ones in time.
    pub kept_in_default: u64,
    /// Partitions given a trigram index on `message`.
    pub search_indexed: Vec<String>,
    /// Closed partitions rewritten: to columnar storage, or without the
    /// levels per-level retention drops.
    pub rewritten: Vec<RewrittenPartition>,
    /// Changes that could not get their lock in time; the next run retries.
    pub postponed: Vec<String>,
    /// Another instance was running maintenance on this table: nothing done.
    pub skipped: bool,
}

/// A partition dropped by retention.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct DroppedPartition {
    /// Its name.
    pub name: String,
    /// The range it covered, as PostgreSQL wrote it.
    pub range: String,
    /// Rows it held (PostgreSQL's estimate when the table was analyzed, an
    /// exact count otherwise).
    pub rows: i64,
    /// Bytes it took, with its indexes.
    pub bytes: i64,
}

/// A closed partition rewritten (built beside and swapped in).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct RewrittenPartition {
    /// Its name.
    pub name: String,
    /// Stored as Citus columnar now (else heap).
    pub columnar: bool,
    /// The lowest level it keeps; `None`: every level.
    pub lowest_kept: Option<Level>,
    /// Rows before.
    pub rows_before: i64,
    /// Rows now.
    pub rows: i64,
    /// Bytes before, with its indexes.
    pub bytes_before: i64,
    /// Bytes now, with its indexes.
    pub bytes: i64,
    /// How long the rewrite took.
    pub took: Duration,
    /// How long the swap waited for and held its lock on the Log table.
    pub swap: Duration,
}

impl fmt::Display for RewrittenPartition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let storage = if self.columnar { "columnar" } else { "heap" };
        write!(f, "rewrote {} as {storage}", self.name)?;
        if let Some(level) = self.lowest_kept {
            write!(f, " keeping {level} and above")?;
        }
        let rows = if self.rows == self.rows_before {
            format!("{} rows", self.rows)
        } else {
            format!("{} of {} rows", self.rows, self.rows_before)
        };
        write!(
            f,
            " ({rows}, {} -> {}, {:.1} bytes/row; {:.0} s, swapped in {:.0} ms)",
            human_bytes(self.bytes_before.max(0) as u64),
            human_bytes(self.bytes.max(0) as u64),
            self.bytes as f64 / self.rows.max(1) as f64,
            self.took.as_secs_f64(),
            self.swap.as_secs_f64() * 1e3
        )
    }
}

impl MaintenanceReport {
    /// True when the run changed nothing (and was not skipped).
    pub fn is_unchanged(&self) -> bool {
        !self.skipped
            && self.created.is_empty()
            && self.moved_from_default == 0
            && self.dropped.is_empty()
            && self.deleted_from_default == 0
            && self.search_indexed.is_empty()
            && self.rewritten.is_empty()
            && self.postponed.is_empty()
    }
}

impl fmt::Display for MaintenanceReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.skipped {
            return f.write_str("skipped: another instance is running maintenance on this table");
        }
        let mut parts = Vec::new();
        if !self.created.is_empty() {
            parts.push(format!(
                "created {} partition(s) ({})",
                self.created.len(),
                self.created.join(", ")
            ));
        }
        if self.moved_from_default > 0 {
            parts.push(format!(
                "moved {} row(s) out of the DEFAULT partition",
                self.moved_from_default
            ));
        }
        for d in &self.dropped {
            parts.push(format!(
                "dropped {} ({}; {} rows, {})",
                d.name,
                d.range,
                d.rows,
                human_bytes(d.bytes.max(0) as u64)
            ));
        }
        if self.deleted_from_default > 0 {
            parts.push(format!(
                "deleted {} row(s) past the retention from the DEFAULT partition",
                self.deleted_from_default
            ));
        }
        if !self.search_indexed.is_empty() {
            parts.push(format!(
                "built the search index of {}",
                self.search_indexed.join(", ")
            ));
        }
        for r in &self.rewritten {
            parts.push(r.to_string());
        }
        if !self.postponed.is_empty() {
            parts.push(format!(
                "postponed (lock busy): {}",
                self.postponed.join(", ")
            ));
        }
        if parts.is_empty() {
            parts.push("nothing to do".to_owned());
        }
        if self.kept_in_default > 0 {
            parts.push(format!(
                "{} row(s) stay in the DEFAULT partition, outside the partition window",
                self.kept_in_default
            ));
        }
        f.write_str(&parts.join("; "))
    }
}
