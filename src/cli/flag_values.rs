//! How flags' values are written: plain seconds (`--shutdown-timeout 2.5`),
//! ages with units (`--retention 30d`, read by
//! `pglogsink::admin::parse_duration`), byte sizes (`--max-queue-bytes
//! 128MiB`) and whole numbers. Each reads the text only; what a setting
//! accepts is the library's rule (`pglogsink::admin::settings`), applied
//! by the flag's parser. Each type shows in `--help` as it is written, so
//! that a default comes from a library constant rather than a copy of its
//! value.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

/// A flag's value in seconds, shown in `--help` as a plain number (`10`,
/// `2.5`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Seconds(pub(crate) Duration);

impl fmt::Display for Seconds {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
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

/// A flag's age or period with units (`30d`, `10m`, `1h30m`), shown in
/// `--help` the same way.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Age(pub(crate) Duration);

impl fmt::Display for Age {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&pglogsink::admin::format_duration(self.0))
    }
}

/// An age maintenance acts on (`--retention`, `--max-age`,
/// `--columnar-after`): the library's rule, at least an hour.
pub(crate) fn parse_age(s: &str) -> Result<Age, String> {
    let age = pglogsink::admin::parse_duration(s)
        .ok_or_else(|| "expected an age such as 30d, 12h or 2d12h".to_owned())?;
    pglogsink::admin::settings::check_age(age)?;
    Ok(Age(age))
}

/// A flag's size in bytes, written and shown with a binary suffix where one
/// fits (`128MiB`, `4GiB`; `1000`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ByteSize(pub(crate) u64);

const UNITS: [(u64, &str); 3] = [(1 << 30, "GiB"), (1 << 20, "MiB"), (1 << 10, "KiB")];

impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match UNITS
            .iter()
            .find(|(unit, _)| self.0 != 0 && self.0 % unit == 0)
        {
            Some((unit, name)) => write!(f, "{}{name}", self.0 / unit),
            None => write!(f, "{}", self.0),
        }
    }
}

/// A byte count: `1048576`, `64K`, `128MiB`, `1G`... (K = 1024); more than
/// zero.
pub(crate) fn parse_bytes(s: &str) -> Result<ByteSize, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (digits, unit) = t.split_at(split);
    let multiplier: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        _ => return Err(bytes_error(s)),
    };
    digits
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(multiplier))
        .filter(|&n| n > 0 && usize::try_from(n).is_ok())
        .map(ByteSize)
        .ok_or_else(|| bytes_error(s))
}

/// [`parse_bytes`], or `0`.
pub(crate) fn parse_bytes_or_zero(s: &str) -> Result<ByteSize, String> {
    if s.trim() == "0" {
        return Ok(ByteSize(0));
    }
    parse_bytes(s)
}

fn bytes_error(s: &str) -> String {
    format!(
        "{s:?} is not a size: use a whole number of bytes, optionally with K, M or G (e.g. 128MiB)"
    )
}

/// A whole number, then the setting's `rule`.
pub(crate) fn whole_number<T: FromStr + Copy>(
    s: &str,
    rule: fn(T) -> Result<(), String>,
) -> Result<T, String> {
    let n = s
        .trim()
        .parse::<T>()
        .map_err(|_| format!("{s:?} is not a whole number"))?;
    rule(n)?;
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_with_binary_suffixes_and_show_the_same_way() {
        assert_eq!(parse_bytes("1024"), Ok(ByteSize(1024)));
        assert_eq!(parse_bytes("64K"), Ok(ByteSize(64 << 10)));
        assert_eq!(parse_bytes("128MiB"), Ok(ByteSize(128 << 20)));
        assert_eq!(parse_bytes("2 gb"), Ok(ByteSize(2 << 30)));
        for bad in [
            "",
            "0",
            "-1",
            "12XB",
            "MiB",
            "1.5M",
            "99999999999999999999G",
        ] {
            assert!(parse_bytes(bad).is_err(), "{bad:?}");
        }
        assert_eq!(parse_bytes_or_zero("0"), Ok(ByteSize(0)));
        for (n, shown) in [
            (128 << 20, "128MiB"),
            (4 << 30, "4GiB"),
            (1000, "1000"),
            (1024, "1KiB"),
        ] {
            assert_eq!(ByteSize(n).to_string(), shown);
            assert_eq!(parse_bytes(shown), Ok(ByteSize(n)));
        }
    }

    #[test]
    fn ages_read_back_as_shown_and_keep_the_library_rule() {
        let month = Age(Duration::from_secs(30 * 86_400));
        assert_eq!(month.to_string(), "30d");
        assert_eq!(parse_age("30d"), Ok(month));
        assert_eq!(parse_age("30m"), Err("must be at least 1h".to_owned()));
        assert!(parse_age("soon").unwrap_err().contains("30d"));
    }
}
