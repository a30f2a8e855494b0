//! Flags that take plain seconds (`--shutdown-timeout 10`,
//! `--write-timeout 2.5`): one reading, with each flag's range. (Ages with
//! units, such as `--retention 30d`, are `pglogsink::admin::parse_duration`.)

use std::time::Duration;

/// A flag's value in seconds, shown in `--help` as a plain number (`10`,
/// `2.5`), so that a default can come from a library constant such as
/// [`pglogsink::DEFAULT_SHUTDOWN_TIMEOUT`] instead of a copy of its value.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Seconds(pub(crate) Duration);

impl std::fmt::Display for Seconds {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0.as_secs_f64())
    }
}

/// Seconds, whole or fractional, up to `max`; zero only when `zero_ok`.
/// The error says the accepted range.
pub(crate) fn parse_seconds(s: &str, zero_ok: bool, max: f64) -> Result<Duration, String> {
    let min_ok = |secs: f64| if zero_ok { secs >= 0.0 } else { secs > 0.0 };
    match s.trim().parse::<f64>() {
        Ok(secs) if min_ok(secs) && secs <= max => Ok(Duration::from_secs_f64(secs)),
        _ if zero_ok => Err(format!(
            "expected a number of seconds from 0 to {max}, e.g. 10 or 2.5"
        )),
        _ => Err(format!(
            "must be a number of seconds, more than 0 and at most {max}"
        )),
    }
}
