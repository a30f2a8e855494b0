//! Per-level retention: past an age, a closed partition keeps only the
//! levels from one up. Applied when maintenance rewrites the partition (a
//! new one filled from the old, see `rewrite`), never by `DELETE`.

use std::str::FromStr;
use std::time::Duration;

use super::age::check_age;
use crate::micros::duration_micros;
use crate::{Error, Level};

/// One rule of per-level retention: once a partition's whole range is older
/// than `after`, it keeps `level` and the levels above it only.
///
/// Written `AGE=LEVEL`, as `--keep-levels-after` takes it:
///
/// ```
/// use std::time::Duration;
/// use pglogsink::{KeepLevels, Level};
///
/// let rule: KeepLevels = "7d=info".parse()?;
/// assert_eq!(rule, KeepLevels { after: Duration::from_secs(7 * 86_400), level: Level::Info });
/// assert!("7d=trace".parse::<KeepLevels>().is_err(), "trace and above is everything");
/// # Ok::<(), pglogsink::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeepLevels {
    /// How old the whole of a partition's range must be.
    pub after: Duration,
    /// The lowest level kept.
    pub level: Level,
}

impl FromStr for KeepLevels {
    type Err = Error;

    fn from_str(s: &str) -> Result<KeepLevels, Error> {
        let invalid = |why: String| Error::config("--keep-levels-after", why);
        let (age, level) = s
            .split_once('=')
            .ok_or_else(|| invalid(format!("{s:?}: expected AGE=LEVEL, such as 7d=info")))?;
        let after = crate::duration::parse_duration(age.trim())
            .ok_or_else(|| invalid(format!("{age:?}: expected an age such as 7d, 12h or 2d12h")))?;
        check_age(after).map_err(|why| invalid(format!("{age:?}: {why}")))?;
        let level: Level = level.trim().parse().map_err(|e| invalid(format!("{e}")))?;
        if level == Level::Trace {
            return Err(invalid(format!(
                "{s:?} keeps every level: name the lowest level to keep (debug, info, warn or error)"
            )));
        }
        Ok(KeepLevels { after, level })
    }
}

/// Refuse rules that contradict each other: an older partition cannot keep
/// a level a younger one has already lost, and one age takes one level.
pub(crate) fn check(rules: &[KeepLevels]) -> Result<(), Error> {
    let mut sorted = rules.to_vec();
    sorted.sort_by_key(|r| r.after);
    for pair in sorted.windows(2) {
        let (younger, older) = (pair[0], pair[1]);
        if younger.after == older.after && younger.level != older.level {
            return Err(Error::config(
                "--keep-levels-after",
                format!(
                    "one age, two levels ({} and {})",
                    younger.level, older.level
                ),
            ));
        }
        if older.level < younger.level {
            return Err(Error::config(
                "--keep-levels-after",
                format!(
                    "the older rule keeps {} and above, but the younger one has already dropped \
                     everything below {}: give older ages higher levels",
                    older.level, younger.level
                ),
            ));
        }
    }
    Ok(())
}

/// The lowest level a partition whose range ended at `end` keeps at `now`
/// (both in microseconds since the epoch); `None` when no rule applies yet.
pub(crate) fn lowest_kept(rules: &[KeepLevels], end: i64, now: i64) -> Option<Level> {
    rules
        .iter()
        .filter(|r| end <= now.saturating_sub(duration_micros(r.after)))
        .map(|r| r.level)
        .max()
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: i64 = 86_400_000_000;

    fn rule(s: &str) -> KeepLevels {
        s.parse().unwrap()
    }

    #[test]
    fn parses_age_and_level() {
        assert_eq!(
            rule("2d12h = Warning"),
            KeepLevels {
                after: Duration::from_secs(60 * 3_600),
                level: Level::Warn
            }
        );
        for (bad, says) in [
            ("7d", "expected AGE=LEVEL"),
            ("7x=info", "expected an age"),
            ("30m=info", "at least 1h"),
            ("7d=loud", "unknown level"),
            ("7d=trace", "keeps every level"),
        ] {
            let err = bad.parse::<KeepLevels>().unwrap_err().to_string();
            assert!(err.contains(says), "{bad}: {err}");
            assert!(err.contains("--keep-levels-after"), "{err}");
        }
    }

    #[test]
    fn older_ages_must_keep_no_more() {
        assert!(check(&[rule("30d=warn"), rule("2d=info")]).is_ok());
        assert!(check(&[rule("2d=info"), rule("2d=info")]).is_ok());
        let err = check(&[rule("2d=warn"), rule("7d=info")]).unwrap_err();
        assert!(
            err.to_string().contains("give older ages higher levels"),
            "{err}"
        );
        assert!(check(&[rule("2d=warn"), rule("2d=info")]).is_err());
    }

    #[test]
    fn the_oldest_rule_passed_decides() {
        let rules = [rule("2d=info"), rule("30d=warn")];
        let now = 100 * DAY;
        assert_eq!(lowest_kept(&rules, now - DAY, now), None);
        assert_eq!(lowest_kept(&rules, now - 2 * DAY, now), Some(Level::Info));
        assert_eq!(lowest_kept(&rules, now - 31 * DAY, now), Some(Level::Warn));
        assert_eq!(lowest_kept(&[], 0, now), None);
    }
}
