//! Times as other services send them: RFC 3339 text, or a Unix time in
//! seconds, milliseconds, microseconds or nanoseconds (fractions allowed),
//! told apart by size.
//!
//! A number is read from its decimal text with integer arithmetic, never
//! through a float: `1767225600123` is `...00.123` exactly, where a double
//! would make it `...00.122999`. Digits below the nanosecond are dropped;
//! the column keeps microseconds (the sink drops the rest).
//!
//! The units' ranges do not overlap for any date from 1973-03-03T09:46:40Z
//! (10^8 s) to the year 5138 (10^11 s):
//!
//! | the number       | read as      | covers                        |
//! |------------------|--------------|-------------------------------|
//! | below 10^11      | seconds      | 1970 to 5138                  |
//! | 10^11 to 10^14   | milliseconds | 1973-03-03 to 5138            |
//! | 10^14 to 10^17   | microseconds | 1973-03-03 to 5138            |
//! | 10^17 and above  | nanoseconds  | 1973-03-03 on                 |

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Where each unit starts, as a power of ten of the number, and the power
/// of ten that turns it into nanoseconds: seconds below 10^11,
/// milliseconds from 10^11, microseconds from 10^14, nanoseconds from
/// 10^17.
const UNITS: [(u32, u32); 3] = [(17, 0), (14, 3), (11, 6)];

/// The latest time the sink stores: `i64::MAX` microseconds after the epoch
/// (294247-01-10T04:00:54.775807Z), in nanoseconds. PostgreSQL goes a few
/// decades further, but a later time would be cut to this one.
const LATEST_NANOS: u128 = i64::MAX as u128 * 1_000;

/// The accepted forms, for error messages.
pub(crate) const FORMS: &str = "RFC 3339 text such as 2025-12-03T10:15:00.123Z, or a Unix time \
     in seconds, milliseconds, microseconds or nanoseconds such as 1764756900, 1764756900123 \
     or 1764756900123456789";

/// A JSON number's text as a Unix time: seconds, or milliseconds,
/// microseconds or nanoseconds by its size (see the module's table). The
/// error says why it is not one.
pub(crate) fn from_unix_text(text: &str) -> Result<SystemTime, String> {
    let number = Decimal::parse(text).ok_or("is not a number")?;
    if number.negative && !number.digits.is_empty() {
        return Err("is before 1970: a Unix time cannot be negative".to_owned());
    }
    let too_late = || "is after the latest time that can be stored (year 294247)".to_owned();
    let whole = number.scaled(0).ok_or_else(too_late)?;
    let to_nanos = UNITS
        .iter()
        .find(|(from, _)| whole >= 10u128.pow(*from))
        .map_or(9, |(_, to_nanos)| *to_nanos);
    let nanos = number
        .scaled(to_nanos)
        .filter(|&n| n <= LATEST_NANOS)
        .ok_or_else(too_late)?;
    let secs = u64::try_from(nanos / 1_000_000_000).map_err(|_| too_late())?;
    let at = Duration::new(secs, (nanos % 1_000_000_000) as u32);
    UNIX_EPOCH.checked_add(at).ok_or_else(too_late)
}

/// A decimal number as JSON writes it (`-12.5e3`): its significant digits
/// and where the decimal point falls among them.
#[derive(Debug)]
struct Decimal {
    negative: bool,
    /// The digits without leading zeros (empty for zero).
    digits: Vec<u8>,
    /// How many of `digits` come before the decimal point (may be negative,
    /// or more than there are digits).
    point: i64,
}

impl Decimal {
    /// `-?digits(.digits)?([eE][+-]?digits)?`
    fn parse(text: &str) -> Option<Decimal> {
        let (negative, rest) = match text.strip_prefix('-') {
            Some(rest) => (true, rest),
            None => (false, text),
        };
        let (mantissa, exponent) = match rest.find(['e', 'E']) {
            Some(at) => (&rest[..at], Some(&rest[at + 1..])),
            None => (rest, None),
        };
        let (whole, fraction) = mantissa.split_once('.').unwrap_or((mantissa, ""));
        let is_digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
        if whole.is_empty() || !is_digits(whole) || !is_digits(fraction) {
            return None;
        }
        if mantissa.ends_with('.') {
            return None;
        }
        let exponent: i64 = match exponent {
            None => 0,
            Some(e) => {
                let digits = e.strip_prefix(['+', '-']).unwrap_or(e);
                if digits.is_empty() || !is_digits(digits) {
                    return None;
                }
                // Any exponent this large is out of range either way.
                e.parse::<i64>()
                    .unwrap_or(if e.starts_with('-') { -1_000 } else { 1_000 })
            }
        };
        let all = whole.bytes().chain(fraction.bytes()).map(|b| b - b'0');
        let mut digits: Vec<u8> = all.skip_while(|&d| d == 0).collect();
        let leading_zeros = (whole.len() + fraction.len() - digits.len()) as i64;
        while digits.last() == Some(&0) {
            digits.pop();
        }
        Some(Decimal {
            negative,
            point: whole.len() as i64 - leading_zeros + exponent,
            digits,
        })
    }

    /// The whole part of the number times 10^`power`; `None` past `u128`.
    fn scaled(&self, power: u32) -> Option<u128> {
        let whole_digits = self.point + i64::from(power);
        if whole_digits > 38 {
            return None;
        }
        let mut n: u128 = 0;
        for i in 0..whole_digits.max(0) as usize {
            n = n * 10 + u128::from(self.digits.get(i).copied().unwrap_or(0));
        }
        Some(n)
    }
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

    fn read(text: &str) -> SystemTime {
        from_unix_text(text).unwrap_or_else(|e| panic!("{text}: {e}"))
    }

    fn nanos_of(t: SystemTime) -> u128 {
        t.duration_since(UNIX_EPOCH).unwrap().as_nanos()
    }

    #[test]
    fn the_four_units_are_told_apart_by_size() {
        // 10^8 s, 10^11 ms, 10^14 µs and 10^17 ns are one instant,
        // 1973-03-03T09:46:40Z, where each unit's range begins.
        let start = unix(100_000_000, 0);
        for text in ["100000000", "100000000000", "100000000000000", "1e17"] {
            assert_eq!(read(text), start, "{text}");
        }
        assert_eq!(
            read("99999999999"),
            unix(99_999_999_999, 0),
            "year 5138 in s"
        );
        assert_eq!(read("1764756900"), unix(1_764_756_900, 0));
        assert_eq!(read("1764756900250"), unix(1_764_756_900, 250_000_000));
        assert_eq!(read("1764756900250001"), unix(1_764_756_900, 250_001_000));
        // The nanoseconds, no longer clamped to the year 294247.
        assert_eq!(
            read("1767225600123456789"),
            unix(1_767_225_600, 123_456_789)
        );
        // Fluent Bit's seconds with a fraction; exponents; digits below ns.
        assert_eq!(read("1764756900.5"), unix(1_764_756_900, 500_000_000));
        assert_eq!(read("1.7647569005E9"), unix(1_764_756_900, 500_000_000));
        assert_eq!(
            read("1764756900123456e-6"),
            unix(1_764_756_900, 123_456_000)
        );
        assert_eq!(
            read("1764756900.1234567899"),
            unix(1_764_756_900, 123_456_789)
        );
        assert_eq!(read("0"), UNIX_EPOCH);
        assert_eq!(read("-0"), UNIX_EPOCH);
        assert_eq!(read("0.000001"), unix(0, 1_000));
    }

    #[test]
    fn what_cannot_be_stored_is_refused() {
        for (text, why) in [
            ("-1", "before 1970"),
            ("-1764756900", "before 1970"),
            ("1e22", "latest time"),
            ("9223372036854775808000", "latest time"),
            ("1e400", "latest time"),
            ("123456789012345678901234567890123456789012", "latest time"),
            ("1.", "not a number"),
            ("", "not a number"),
            ("0x10", "not a number"),
        ] {
            let err = from_unix_text(text).unwrap_err();
            assert!(err.contains(why), "{text}: {err}");
        }
        // The latest that is kept: i64::MAX microseconds, in nanoseconds.
        let latest = read("9223372036854775807000");
        assert_eq!(nanos_of(latest), LATEST_NANOS);
        assert!(from_unix_text("9223372036854775807001").is_err());
    }

    /// xorshift64*: reproducible random values without a dependency.
    fn next(state: &mut u64) -> u64 {
        *state ^= *state >> 12;
        *state ^= *state << 25;
        *state ^= *state >> 27;
        state.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    #[test]
    fn random_times_are_read_exactly_against_integer_references() {
        let mut state = 0x9E37_79B9_7F4A_7C15_u64;
        for _ in 0..20_000 {
            // A nanosecond between 1973-03-04 and 2100: the reference,
            // written in each unit and form below.
            let nanos =
                100_086_400_000_000_000 + u128::from(next(&mut state) % 4_000_000_000_000_000_000);
            let (micros, millis, secs) = (nanos / 1_000, nanos / 1_000_000, nanos / 1_000_000_000);
            let cases = [
                (format!("{nanos}"), nanos),
                (format!("{micros}"), micros * 1_000),
                (format!("{millis}"), millis * 1_000_000),
                (format!("{secs}"), secs * 1_000_000_000),
                (format!("{secs}.{:06}", micros % 1_000_000), micros * 1_000),
                (format!("{secs}.{:03}", millis % 1_000), millis * 1_000_000),
                (format!("{secs}.{:09}", nanos % 1_000_000_000), nanos),
                (format!("{millis}.{:06}", nanos % 1_000_000), nanos),
                (format!("{micros}.{:03}", nanos % 1_000), nanos),
                (format!("{micros}e-6"), micros * 1_000),
            ];
            for (text, expected) in cases {
                assert_eq!(nanos_of(read(&text)), expected, "{text}");
            }
        }
    }
}
