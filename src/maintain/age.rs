//! The rule of every age maintenance acts on: retention, `max_age`,
//! `columnar_after` and the per-level rules' ages.

use std::time::Duration;

/// The youngest age maintenance acts on: a partition is only dropped or
/// rewritten once its whole range is this old, away from the partition
/// being written and the rows still arriving late.
const MIN_AGE: Duration = Duration::from_secs(3_600);

/// The rule of every age maintenance acts on ([`Maintenance::retention`](super::Maintenance::retention),
/// [`max_age`](super::Maintenance::max_age),
/// [`columnar_after`](super::Maintenance::columnar_after), a
/// [`KeepLevels`](super::KeepLevels) rule's `after`): at least an hour. The binary's flags
/// check their values with it too.
pub fn check_age(age: Duration) -> Result<(), String> {
    if age >= MIN_AGE {
        Ok(())
    } else {
        Err("must be at least 1h".to_owned())
    }
}
