//! Durations as people write them on a command line or in a URL: a number
//! and a unit (`30s`, `15m`, `2h`, `7d`), or several (`1h30m`). Ages for
//! `logs --since`, `--retention`, `--max-age`, `--keep-levels-after` and
//! the maintenance interval. (Flags that take plain seconds, such as
//! `--shutdown-timeout 2.5`, are read by the binary's `cli/flag_values.rs`.)

use std::time::Duration;

/// Longest accepted duration: 100 years.
const MAX_DURATION_SECS: u64 = 100 * 365 * 86_400;

/// `30s`, `15m`, `2h`, `7d`, or several of them (`1h30m`), up to 100 years.
///
/// ```
/// use std::time::Duration;
/// assert_eq!(pglogsink::admin::parse_duration("1h30m"), Some(Duration::from_secs(5400)));
/// assert_eq!(pglogsink::admin::parse_duration("90"), None);
/// ```
pub fn parse_duration(s: &str) -> Option<Duration> {
    if s.is_empty() {
        return None;
    }
    let mut rest = s;
    let mut total: u64 = 0;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        let n: u64 = rest[..digits].parse().ok()?;
        let unit = match rest[digits..].chars().next()? {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            'd' => 86_400,
            _ => return None,
        };
        total = total.checked_add(n.checked_mul(unit)?)?;
        rest = &rest[digits + 1..];
    }
    (total <= MAX_DURATION_SECS).then(|| Duration::from_secs(total))
}

/// `d` as [`parse_duration`] reads it back: days, hours, minutes and
/// seconds, each only when not zero (`30d`, `10m`, `1h30m`; `0s`). Parts of
/// a second are dropped.
///
/// ```
/// use std::time::Duration;
/// use pglogsink::admin::format_duration;
///
/// assert_eq!(format_duration(Duration::from_secs(30 * 86_400)), "30d");
/// assert_eq!(format_duration(Duration::from_secs(5_400)), "1h30m");
/// ```
pub fn format_duration(d: Duration) -> String {
    let mut secs = d.as_secs();
    if secs == 0 {
        return "0s".to_owned();
    }
    let mut text = String::new();
    for (unit, name) in [(86_400, 'd'), (3_600, 'h'), (60, 'm'), (1, 's')] {
        if secs >= unit {
            text.push_str(&format!("{}{name}", secs / unit));
            secs %= unit;
        }
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formatted_durations_read_back() {
        for secs in [0, 1, 59, 60, 90, 3_600, 5_400, 86_400, 93_784, 30 * 86_400] {
            let d = Duration::from_secs(secs);
            assert_eq!(parse_duration(&format_duration(d)), Some(d), "{secs}");
        }
        assert_eq!(format_duration(Duration::from_secs(600)), "10m");
        assert_eq!(format_duration(Duration::from_secs(93_784)), "1d2h3m4s");
    }

    #[test]
    fn durations_take_s_m_h_d_and_combinations() {
        assert_eq!(parse_duration("30s"), Some(Duration::from_secs(30)));
        assert_eq!(parse_duration("15m"), Some(Duration::from_secs(900)));
        assert_eq!(parse_duration("2h"), Some(Duration::from_secs(7200)));
        assert_eq!(parse_duration("7d"), Some(Duration::from_secs(604_800)));
        assert_eq!(parse_duration("1h30m"), Some(Duration::from_secs(5400)));
        assert_eq!(parse_duration("0s"), Some(Duration::ZERO));
        for bad in [
            "",
            "15",
            "m",
            "15x",
            "-5m",
            "1.5h",
            "15 m",
            "15M",
            "h1",
            "36501d",
            "99999999999999999999d",
        ] {
            assert_eq!(parse_duration(bad), None, "{bad:?}");
        }
    }
}
