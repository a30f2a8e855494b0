//! Durations as people write them on a command line or in a URL: a number
//! and a unit (`30s`, `15m`, `2h`, `7d`), or several (`1h30m`). Ages for
//! `logs --since`, `--retention`, `--max-age`, `--keep-levels-after` and
//! the maintenance interval. (Flags that take plain seconds, such as
//! `--shutdown-timeout 2.5`, are read by the binary's `cli/seconds.rs`.)

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

#[cfg(test)]
mod tests {
    use super::*;

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
