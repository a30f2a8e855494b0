//! The viewer's URL query string: the filters of `pglogsink logs`, with the
//! same names as its flags (`level`, `since`, `until`, `grep`, `target`,
//! `field` (repeated), `request_id`, `trace_id`), plus the page's own
//! (`limit`, `before`, `buckets`, `tz`, `live`). One parser for `/` and
//! every `/api/...` route, so a link and a script ask the same thing.

use std::time::SystemTime;

use pglogsink::admin::query::{FieldMatch, Filter, Reader, When, MAX_BUCKETS, WHEN_FORM};
use pglogsink::Level;

/// Rows per page when `limit` is not given.
pub(crate) const DEFAULT_LIMIT: i64 = 100;
/// Most rows one page may ask for.
pub(crate) const MAX_LIMIT: i64 = 1_000;
/// Histogram buckets when `buckets` is not given.
pub(crate) const DEFAULT_BUCKETS: u32 = 60;

/// A parameter with a bad value: answered with 400 and this message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct BadParam {
    /// The parameter's name.
    pub(crate) name: String,
    /// What is wrong, and what is expected.
    pub(crate) message: String,
}

impl BadParam {
    pub(crate) fn new(name: &str, message: impl Into<String>) -> BadParam {
        BadParam {
            name: name.to_owned(),
            message: message.into(),
        }
    }
}

/// A parsed query string. Times are still as written: resolving a
/// timestamp needs PostgreSQL ([`Params::filter`]).
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Params {
    pub(crate) level: Option<Level>,
    pub(crate) since: Option<When>,
    pub(crate) until: Option<When>,
    pub(crate) grep: Option<String>,
    pub(crate) target: Option<String>,
    pub(crate) fields: Vec<FieldMatch>,
    pub(crate) request_id: Option<String>,
    pub(crate) trace_id: Option<String>,
    /// Rows per page.
    pub(crate) limit: i64,
    /// The page continues below this row key (`MICROS:ID`, the `next` of
    /// the page before).
    pub(crate) before: Option<(i64, i64)>,
    /// Histogram buckets.
    pub(crate) buckets: u32,
    /// IANA time zone in which times without an offset are read.
    pub(crate) tz: Option<String>,
}

/// Parse a raw query string (`level=warn&field=status%3D500`). An empty
/// value means "not set", as an empty form field does; an unknown name is
/// an error, so that a typo does not silently show everything.
pub(crate) fn parse(query: &str) -> Result<Params, BadParam> {
    let mut p = Params {
        limit: DEFAULT_LIMIT,
        buckets: DEFAULT_BUCKETS,
        ..Params::default()
    };
    for (name, value) in form_urlencoded::parse(query.as_bytes()) {
        let value = value.trim();
        if value.is_empty() {
            continue;
        }
        let text = || Some(value.to_owned());
        match name.as_ref() {
            "level" => {
                p.level = Some(value.parse().map_err(|_| {
                    BadParam::new("level", "expected trace, debug, info, warn or error")
                })?)
            }
            "since" => p.since = Some(when("since", value)?),
            "until" => p.until = Some(when("until", value)?),
            "grep" => p.grep = text(),
            "target" => p.target = text(),
            "field" => p
                .fields
                .push(value.parse().map_err(|e| BadParam::new("field", e))?),
            "request_id" => p.request_id = text(),
            "trace_id" => {
                p.trace_id = Some(
                    crate::cli::trace_ids::parse_trace_id(value)
                        .map_err(|e| BadParam::new("trace_id", e))?,
                )
            }
            "limit" => p.limit = number("limit", value, 1, MAX_LIMIT)?,
            "before" => p.before = Some(cursor(value)?),
            "buckets" => p.buckets = number("buckets", value, 1, MAX_BUCKETS.into())? as u32,
            "tz" => p.tz = Some(zone(value)?),
            // The page's own state (the live tail toggle): not a filter.
            "live" => {}
            other => {
                return Err(BadParam::new(
                    other,
                    "unknown parameter; expected level, since, until, grep, target, field, \
                     request_id, trace_id, limit, before, buckets, tz or live",
                ))
            }
        }
    }
    Ok(p)
}

fn when(name: &str, value: &str) -> Result<When, BadParam> {
    value.parse().map_err(|e: String| BadParam::new(name, e))
}

fn number(name: &str, value: &str, min: i64, max: i64) -> Result<i64, BadParam> {
    match value.parse::<i64>() {
        Ok(n) if (min..=max).contains(&n) => Ok(n),
        _ => Err(BadParam::new(
            name,
            format!("expected a whole number from {min} to {max}"),
        )),
    }
}

/// `MICROS:ID`, as written by [`cursor_text`].
fn cursor(value: &str) -> Result<(i64, i64), BadParam> {
    value
        .split_once(':')
        .and_then(|(micros, id)| Some((micros.parse().ok()?, id.parse().ok()?)))
        .ok_or_else(|| {
            BadParam::new(
                "before",
                "expected MICROS:ID, the `next` value of the previous page",
            )
        })
}

/// The `before` value that continues after a row with this key.
pub(crate) fn cursor_text((micros, id): (i64, i64)) -> String {
    format!("{micros}:{id}")
}

/// An IANA zone name's characters (`Europe/Paris`, `Etc/GMT+1`); whether
/// PostgreSQL knows it is checked when it is used.
fn zone(value: &str) -> Result<String, BadParam> {
    let ok = value.len() <= 64
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '/' | '_' | '+' | '-'));
    if ok {
        Ok(value.to_owned())
    } else {
        Err(BadParam::new(
            "tz",
            "expected an IANA time zone name such as Europe/Paris or UTC",
        ))
    }
}

impl Params {
    /// The filter, `since` and `until` resolved to instants (a timestamp by
    /// PostgreSQL, in `reader`'s time zone). A timestamp PostgreSQL cannot
    /// read is the parameter's fault.
    pub(crate) async fn filter(
        &self,
        client: &mut tokio_postgres::Client,
        reader: &Reader,
    ) -> Result<Result<Filter, BadParam>, tokio_postgres::Error> {
        let since = match resolve(client, reader, "since", self.since.as_ref()).await? {
            Ok(since) => since,
            Err(bad) => return Ok(Err(bad)),
        };
        let until = match resolve(client, reader, "until", self.until.as_ref()).await? {
            Ok(until) => until,
            Err(bad) => return Ok(Err(bad)),
        };
        if let (Some(since), Some(until)) = (since, until) {
            if since >= until {
                return Ok(Err(BadParam::new("since", "must be before until")));
            }
        }
        Ok(Ok(Filter {
            level: self.level,
            since,
            until,
            grep: self.grep.clone(),
            target: self.target.clone(),
            fields: self.fields.clone(),
            request_id: self.request_id.clone(),
            trace_id: self.trace_id.clone(),
        }))
    }
}

/// `when` as an instant: Ok(Err) when PostgreSQL refuses the timestamp.
async fn resolve(
    client: &mut tokio_postgres::Client,
    reader: &Reader,
    name: &str,
    when: Option<&When>,
) -> Result<Result<Option<SystemTime>, BadParam>, tokio_postgres::Error> {
    let Some(when) = when else {
        return Ok(Ok(None));
    };
    match reader.resolve(client, when).await {
        Ok(at) => Ok(Ok(Some(at))),
        // Class 22 (data exception): the text is no valid time (February 30).
        Err(e) if e.code().is_some_and(|c| c.code().starts_with("22")) => {
            let reason = e
                .as_db_error()
                .map_or_else(|| e.to_string(), |db| db.message().to_owned());
            Ok(Err(BadParam::new(name, format!("{reason}; {WHEN_FORM}"))))
        }
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn every_filter_of_the_cli_has_its_parameter() {
        let p = parse(
            "level=warn&since=1h&until=2026-11-23T16%3A19%3A18Z&grep=time+out&target=shop%3A%3Aorders\
             &field=status%3D500&field=user%3Dann&request_id=r1&trace_id=4BF92F3577B34DA6A3CE929D0E0E4736&limit=20\
             &before=123%3A45&buckets=30&tz=Europe%2FParis&live=1",
        )
        .unwrap();
        assert_eq!(p.level, Some(Level::Warn));
        assert_eq!(p.since, Some(When::Ago(Duration::from_secs(3_600))));
        assert_eq!(p.until, Some(When::At("2026-11-23T16:19:18Z".into())));
        assert_eq!(p.grep.as_deref(), Some("time out"));
        assert_eq!(p.target.as_deref(), Some("shop::orders"));
        let fields: Vec<String> = p
            .fields
            .iter()
            .map(|f| format!("{}={}", f.key, f.value))
            .collect();
        assert_eq!(fields, ["status=500", "user=ann"]);
        assert_eq!(p.request_id.as_deref(), Some("r1"));
        assert_eq!(
            p.trace_id.as_deref(),
            Some("4bf92f3577b34da6a3ce929d0e0e4736")
        );
        assert_eq!((p.limit, p.before, p.buckets), (20, Some((123, 45)), 30));
        assert_eq!(p.tz.as_deref(), Some("Europe/Paris"));
    }

    #[test]
    fn empty_values_are_unset_and_defaults_apply() {
        let p = parse("level=&grep=&since=").unwrap();
        assert_eq!(
            p,
            Params {
                limit: DEFAULT_LIMIT,
                buckets: DEFAULT_BUCKETS,
                ..Params::default()
            }
        );
        assert_eq!(parse("").unwrap(), p);
    }

    #[test]
    fn a_bad_value_names_its_parameter() {
        for (query, name, says) in [
            ("level=loud", "level", "warn"),
            ("since=yesterday", "since", "15m"),
            ("until=2026-13-01", "until", "2026-11-23T16:19:18Z"),
            ("field=novalue", "field", "KEY=VALUE"),
            ("limit=0", "limit", "1 to 1000"),
            ("limit=abc", "limit", "1 to 1000"),
            ("before=12", "before", "MICROS:ID"),
            ("buckets=100000", "buckets", "1 to 1000"),
            ("tz=Europe/Paris';--", "tz", "IANA"),
            ("colour=red", "colour", "unknown parameter"),
            ("since=1h&since=%3Cimg%3E", "since", "15m"),
        ] {
            let bad = parse(query).unwrap_err();
            assert_eq!(bad.name, name, "{query}");
            assert!(bad.message.contains(says), "{query}: {}", bad.message);
        }
    }

    #[test]
    fn the_cursor_round_trips() {
        let text = cursor_text((-5, 9));
        assert_eq!(cursor(&text), Ok((-5, 9)));
    }
}
