//! Microseconds, the Log table's unit of time (PostgreSQL's `timestamptz`
//! holds them): instants as microseconds since the Unix epoch and back,
//! and durations as microseconds. One conversion for the whole crate, the
//! same on both sides of the epoch (a time before 1970 is negative), and
//! saturating at what an `i64` holds rather than wrapping.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// `t` as microseconds since the Unix epoch (negative before it).
///
/// ```
/// use std::time::{Duration, UNIX_EPOCH};
/// use pglogsink::admin::{from_unix_micros, unix_micros};
///
/// assert_eq!(unix_micros(UNIX_EPOCH + Duration::from_millis(2)), 2_000);
/// assert_eq!(unix_micros(UNIX_EPOCH - Duration::from_millis(2)), -2_000);
/// assert_eq!(from_unix_micros(-2_000), UNIX_EPOCH - Duration::from_millis(2));
/// ```
pub fn unix_micros(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(after) => duration_micros(after),
        Err(before) => -duration_micros(before.duration()),
    }
}

/// Microseconds since the Unix epoch as an instant (also before it).
pub fn from_unix_micros(micros: i64) -> SystemTime {
    let magnitude = Duration::from_micros(micros.unsigned_abs());
    if micros >= 0 {
        UNIX_EPOCH + magnitude
    } else {
        UNIX_EPOCH - magnitude
    }
}

/// Now, in microseconds since the Unix epoch.
pub(crate) fn now_unix_micros() -> i64 {
    unix_micros(SystemTime::now())
}

/// `d` in whole microseconds, at most `i64::MAX`.
pub(crate) fn duration_micros(d: Duration) -> i64 {
    i64::try_from(d.as_micros()).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_sides_of_the_epoch_and_back() {
        for micros in [0, 1, -1, 1_500_000, -1_500_000, 1_767_225_600_123_456] {
            assert_eq!(unix_micros(from_unix_micros(micros)), micros);
        }
        assert_eq!(
            from_unix_micros(1_500_000),
            UNIX_EPOCH + Duration::from_millis(1_500)
        );
        assert_eq!(from_unix_micros(-1), UNIX_EPOCH - Duration::from_micros(1));
        // Sub-microsecond parts are dropped toward the epoch.
        assert_eq!(unix_micros(UNIX_EPOCH + Duration::from_nanos(1_999)), 1);
        assert_eq!(unix_micros(UNIX_EPOCH - Duration::from_nanos(1_999)), -1);
    }

    #[test]
    fn durations_saturate() {
        assert_eq!(duration_micros(Duration::from_secs(2)), 2_000_000);
        assert_eq!(duration_micros(Duration::MAX), i64::MAX);
    }
}
