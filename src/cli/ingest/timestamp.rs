//! Times as other services send them: RFC 3339 text, or a Unix time in
//! seconds or milliseconds (fractions allowed), told apart by size.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A Unix time at or above this is in milliseconds: 1e11 seconds is the
/// year 5138, 1e11 milliseconds is March 1973.
const MILLIS_FROM: f64 = 1e11;

/// The accepted forms, for error messages.
pub(crate) const FORMS: &str = "RFC 3339 text such as 2025-12-03T10:15:00.123Z, or a Unix time \
     in seconds or milliseconds such as 1764756900 or 1764756900123";

/// A JSON number as a Unix time (seconds, or milliseconds from 1e11 up).
pub(crate) fn from_unix(n: f64) -> Option<SystemTime> {
    if !n.is_finite() || n < 0.0 {
        return None;
    }
    let secs = if n >= MILLIS_FROM { n / 1000.0 } else { n };
    Duration::try_from_secs_f64(secs)
        .ok()
        .and_then(|d| UNIX_EPOCH.checked_add(d))
}

/// `YYYY-MM-DDTHH:MM:SS[.frac](Z|+HH:MM|-HH:MM)`; `t`, `z` and a space for
/// `T` are accepted too. The offset is required: a time without one would
/// be read in some zone nobody named.
pub(crate) fn parse_rfc3339(s: &str) -> Option<SystemTime> {
    let b = s.as_bytes();
    let num = |range: std::ops::Range<usize>| -> Option<i64> {
        let digits = b.get(range)?;
        digits
            .iter()
            .all(u8::is_ascii_digit)
            .then(|| digits.iter().fold(0, |n, d| n * 10 + i64::from(d - b'0')))
    };
    let (year, month, day) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hour, minute, second) = (num(11..13)?, num(14..16)?, num(17..19)?);
    let separators = b.get(4) == Some(&b'-')
        && b.get(7) == Some(&b'-')
        && matches!(b.get(10), Some(b'T' | b't' | b' '))
        && b.get(13) == Some(&b':')
        && b.get(16) == Some(&b':');
    let in_range = (1..=12).contains(&month)
        && (1..=days_in_month(year, month)).contains(&day)
        && hour < 24
        && minute < 60
        && second <= 60;
    if !separators || !in_range {
        return None;
    }
    let mut rest = &b[19..];
    let mut nanos: u32 = 0;
    if let Some(frac) = rest.strip_prefix(b".") {
        let len = frac.iter().take_while(|c| c.is_ascii_digit()).count();
        if len == 0 {
            return None;
        }
        // Nanoseconds from the first nine digits; the rest is below them.
        for i in 0..9 {
            let digit = frac.get(i).filter(|_| i < len).map_or(0, |d| d - b'0');
            nanos = nanos * 10 + u32::from(digit);
        }
        rest = &frac[len..];
    }
    let offset_secs = match rest {
        b"Z" | b"z" => 0,
        [sign @ (b'+' | b'-'), h1, h2, b':', m1, m2] => {
            let digits = [*h1, *h2, *m1, *m2];
            if !digits.iter().all(u8::is_ascii_digit) {
                return None;
            }
            let [h1, h2, m1, m2] = digits.map(|d| i64::from(d - b'0'));
            let (h, m) = (h1 * 10 + h2, m1 * 10 + m2);
            if h > 23 || m > 59 {
                return None;
            }
            let secs = h * 3600 + m * 60;
            if *sign == b'+' {
                secs
            } else {
                -secs
            }
        }
        _ => return None,
    };
    // A leap second (:60) is read as the first second of the next minute.
    let unix = days_from_civil(year, month, day) * 86_400 + hour * 3600 + minute * 60 + second
        - offset_secs;
    let whole = Duration::from_secs(unix.unsigned_abs());
    let at = if unix >= 0 {
        UNIX_EPOCH.checked_add(whole)?
    } else {
        UNIX_EPOCH.checked_sub(whole)?
    };
    at.checked_add(Duration::from_nanos(u64::from(nanos)))
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        2 if year % 4 == 0 && (year % 100 != 0 || year % 400 == 0) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days from 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's
/// `days_from_civil`).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unix(secs: u64, nanos: u32) -> SystemTime {
        UNIX_EPOCH + Duration::new(secs, nanos)
    }

    #[test]
    fn rfc_3339_with_offsets_and_fractions() {
        // `date -u -d 2025-12-03T10:15:00Z +%s` = 1764756900
        assert_eq!(
            parse_rfc3339("2025-12-03T10:15:00Z"),
            Some(unix(1_764_756_900, 0))
        );
        assert_eq!(
            parse_rfc3339("2025-12-03T11:15:00.123456789+01:00"),
            Some(unix(1_764_756_900, 123_456_789))
        );
        assert_eq!(
            parse_rfc3339("2025-12-03 05:45:00.5-04:30"),
            Some(unix(1_764_756_900, 500_000_000))
        );
        assert_eq!(
            parse_rfc3339("2025-12-03t10:15:00.1234567891z"),
            Some(unix(1_764_756_900, 123_456_789))
        );
        assert_eq!(parse_rfc3339("1970-01-01T00:00:00Z"), Some(UNIX_EPOCH));
        assert_eq!(
            parse_rfc3339("2024-02-29T00:00:00Z"),
            Some(unix(1_709_164_800, 0))
        );
        assert_eq!(
            parse_rfc3339("1969-12-31T23:59:59Z"),
            UNIX_EPOCH.checked_sub(Duration::from_secs(1))
        );
    }

    #[test]
    fn anything_else_is_refused() {
        for bad in [
            "",
            "2025-12-03",
            "2025-12-03T10:15:00",
            "2025-12-03T10:15:00+0100",
            "2025-12-03T10:15:00.Z",
            "2026-02-29T00:00:00Z",
            "2026-13-01T00:00:00Z",
            "2025-12-03T24:00:00Z",
            "2026/12/03T10:15:00Z",
            "2025-12-03T10:15:00Z ",
            "yesterday",
        ] {
            assert_eq!(parse_rfc3339(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn unix_seconds_and_milliseconds_are_told_apart_by_size() {
        assert_eq!(from_unix(1_764_756_900.0), Some(unix(1_764_756_900, 0)));
        assert_eq!(
            from_unix(1_764_756_900_250.0),
            Some(unix(1_764_756_900, 250_000_000))
        );
        let fluent_bit = from_unix(1_764_756_900.5).unwrap();
        assert_eq!(fluent_bit, unix(1_764_756_900, 500_000_000));
        assert_eq!(from_unix(-1.0), None);
        assert_eq!(from_unix(f64::NAN), None);
    }
}
