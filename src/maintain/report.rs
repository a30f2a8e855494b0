//! What a maintenance run changed, as the operator reads it.

use std::fmt;

use crate::report::human_bytes;

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

impl MaintenanceReport {
    /// True when the run changed nothing (and was not skipped).
    pub fn is_unchanged(&self) -> bool {
        !self.skipped
            && self.created.is_empty()
            && self.moved_from_default == 0
            && self.dropped.is_empty()
            && self.deleted_from_default == 0
            && self.search_indexed.is_empty()
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
