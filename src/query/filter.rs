//! What a reader asks for: the filters of `pglogsink logs` (and of the
//! viewer's URL), parsed and turned into SQL conditions with bound values.

use std::str::FromStr;
use std::time::{Duration, SystemTime};

use serde_json::Value;
use tokio_postgres::types::{ToSql, Type};

use crate::duration::parse_duration;
use crate::level::Level;

/// The accepted forms of a point in time, for error messages.
pub const WHEN_FORM: &str =
    "expected a duration such as 30s, 15m, 2h or 7d (or 1h30m), or a timestamp \
     such as 2026-11-23T16:19:18Z, '2026-11-23 16:19:18' (local time) or 2026-11-23";

/// The filters of a query. Every one that is set must match.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Filter {
    /// This level or more severe.
    pub level: Option<Level>,
    /// Logged at or after.
    pub since: Option<SystemTime>,
    /// Logged before.
    pub until: Option<SystemTime>,
    /// The message contains this text, ignoring case (`%` and `_` literal).
    pub grep: Option<String>,
    /// The target starts with this.
    pub target: Option<String>,
    /// The fields hold each of these.
    pub fields: Vec<FieldMatch>,
    /// The `request_id` field is exactly this: one request's rows, found
    /// through an index whatever their time.
    pub request_id: Option<String>,
    /// The `trace_id` field is exactly this (lowercase hex, as OTLP ingest
    /// stores it): one trace's rows, found through an index whatever
    /// their time.
    pub trace_id: Option<String>,
}

impl Filter {
    /// True when nothing is filtered.
    pub fn is_empty(&self) -> bool {
        matches!(self.level, None | Some(Level::Trace))
            && self.since.is_none()
            && self.until.is_none()
            && self.grep.is_none()
            && self.target.is_none()
            && self.fields.is_empty()
            && self.request_id.is_none()
            && self.trace_id.is_none()
    }

    /// Whether an index finds the rows whatever their time (no need to
    /// narrow the time range first).
    pub(crate) fn is_lookup(&self) -> bool {
        self.request_id.is_some() || self.trace_id.is_some()
    }
}

/// One `field` filter: `KEY=VALUE`.
///
/// ```
/// let m: pglogsink::admin::query::FieldMatch = "status=500".parse()?;
/// assert_eq!((m.key.as_str(), m.value.as_str()), ("status", "500"));
/// # Ok::<(), String>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldMatch {
    /// The field's name.
    pub key: String,
    /// Its value as text. A value that reads as a JSON number, `true`,
    /// `false` or `null` also matches that JSON value, so `status=500`
    /// finds 500 and "500".
    pub value: String,
}

impl FromStr for FieldMatch {
    type Err = String;

    fn from_str(s: &str) -> Result<FieldMatch, String> {
        match s.split_once('=') {
            Some((key, value)) if !key.is_empty() => Ok(FieldMatch {
                key: key.to_owned(),
                value: value.to_owned(),
            }),
            _ => Err("expected KEY=VALUE, e.g. request_id=r1 or status=500".to_owned()),
        }
    }
}

impl FieldMatch {
    /// The jsonb objects that the fields of a matching row contain.
    pub(crate) fn objects(&self) -> Vec<Value> {
        let object = |value| Value::Object([(self.key.clone(), value)].into_iter().collect());
        let mut objects = vec![object(Value::String(self.value.clone()))];
        if let Ok(native @ (Value::Number(_) | Value::Bool(_) | Value::Null)) =
            serde_json::from_str::<Value>(&self.value)
        {
            objects.push(object(native));
        }
        objects
    }
}

/// A point in time as a user writes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum When {
    /// This long before now.
    Ago(Duration),
    /// A timestamp as written; PostgreSQL reads it (a time without an offset
    /// is in the reader's time zone).
    At(String),
}

impl When {
    /// `Ago` as an instant by this machine's clock; `None` for `At`.
    pub fn resolve_ago(&self) -> Option<SystemTime> {
        match self {
            When::Ago(ago) => Some(
                SystemTime::now()
                    .checked_sub(*ago)
                    .unwrap_or(SystemTime::UNIX_EPOCH),
            ),
            When::At(_) => None,
        }
    }
}

impl FromStr for When {
    type Err = String;

    /// A duration ago (`15m`) or a timestamp; the error is [`WHEN_FORM`].
    fn from_str(s: &str) -> Result<When, String> {
        if let Some(ago) = parse_duration(s) {
            return Ok(When::Ago(ago));
        }
        if is_timestamp(s) {
            return Ok(When::At(s.to_owned()));
        }
        Err(WHEN_FORM.to_owned())
    }
}

/// `YYYY-MM-DD`, optionally followed by `T` or a space, `HH:MM[:SS[.frac]]`
/// and an offset (`Z`, `+HH`, `+HHMM`, `+HH:MM`). Only the shape and the
/// field ranges are checked here; PostgreSQL checks the rest (February 30).
pub(crate) fn is_timestamp(s: &str) -> bool {
    let mut p = Cursor(s.as_bytes());
    let date = p.number(4).is_some()
        && p.eat(b'-')
        && p.number(2).is_some_and(|m| (1..=12).contains(&m))
        && p.eat(b'-')
        && p.number(2).is_some_and(|d| (1..=31).contains(&d));
    if !date {
        return false;
    }
    if p.0.is_empty() {
        return true;
    }
    let time = (p.eat(b'T') || p.eat(b' '))
        && p.number(2).is_some_and(|h| h < 24)
        && p.eat(b':')
        && p.number(2).is_some_and(|m| m < 60);
    if !time {
        return false;
    }
    if p.eat(b':') {
        if !p.number(2).is_some_and(|s| s <= 60) {
            return false;
        }
        if p.eat(b'.') && p.digits() == 0 {
            return false;
        }
    }
    if p.eat(b'Z') || p.0.is_empty() {
        return p.0.is_empty();
    }
    let offset = (p.eat(b'+') || p.eat(b'-')) && p.number(2).is_some_and(|h| h < 24);
    if !offset {
        return false;
    }
    if !p.0.is_empty() {
        p.eat(b':');
        if !p.number(2).is_some_and(|m| m < 60) {
            return false;
        }
    }
    p.0.is_empty()
}

/// A little reader for [`is_timestamp`].
struct Cursor<'a>(&'a [u8]);

impl Cursor<'_> {
    fn eat(&mut self, byte: u8) -> bool {
        match self.0.split_first() {
            Some((&b, rest)) if b == byte => {
                self.0 = rest;
                true
            }
            _ => false,
        }
    }

    /// Exactly `len` digits, as a number.
    fn number(&mut self, len: usize) -> Option<u32> {
        let digits = self.0.get(..len)?;
        if !digits.iter().all(u8::is_ascii_digit) {
            return None;
        }
        self.0 = &self.0[len..];
        Some(digits.iter().fold(0, |n, d| n * 10 + u32::from(d - b'0')))
    }

    /// Skip digits; how many there were.
    fn digits(&mut self) -> usize {
        let n = self.0.iter().take_while(|b| b.is_ascii_digit()).count();
        self.0 = &self.0[n..];
        n
    }
}

type Param = Box<dyn ToSql + Sync + Send>;

/// SQL text being built, with its bound values and their types (sent with
/// the unnamed statement, so nothing outlives the transaction: safe behind
/// a transaction-mode pooler).
#[derive(Debug, Default)]
pub(crate) struct Sql {
    pub(crate) params: Vec<(Param, Type)>,
}

impl Sql {
    /// Add a parameter; its placeholder.
    pub(crate) fn bind(&mut self, value: impl ToSql + Sync + Send + 'static, ty: Type) -> String {
        self.params.push((Box::new(value), ty));
        format!("${}", self.params.len())
    }

    pub(crate) fn refs(&self) -> Vec<(&(dyn ToSql + Sync), Type)> {
        self.params
            .iter()
            .map(|(p, ty)| (&**p as &(dyn ToSql + Sync), ty.clone()))
            .collect()
    }

    /// The filter as `AND`ed conditions.
    pub(crate) fn conditions(&mut self, filter: &Filter) -> Vec<String> {
        let mut conditions = Vec::new();
        if let Some(level) = filter.level.filter(|&l| l > Level::Trace) {
            // A literal from a closed set: PostgreSQL types it as the column's
            // enum, so this works whatever schema the enum lives in.
            conditions.push(format!("level >= '{}'", level.as_str()));
        }
        if let Some(since) = filter.since {
            conditions.push(format!(
                "\"timestamp\" >= {}",
                self.bind(since, Type::TIMESTAMPTZ)
            ));
        }
        if let Some(until) = filter.until {
            conditions.push(format!(
                "\"timestamp\" < {}",
                self.bind(until, Type::TIMESTAMPTZ)
            ));
        }
        if let Some(text) = &filter.grep {
            let pattern = format!("%{}%", escape_like(text));
            conditions.push(format!("message ILIKE {}", self.bind(pattern, Type::TEXT)));
        }
        if let Some(prefix) = &filter.target {
            let pattern = format!("{}%", escape_like(prefix));
            conditions.push(format!("target LIKE {}", self.bind(pattern, Type::TEXT)));
        }
        for field in &filter.fields {
            let alternatives: Vec<String> = field
                .objects()
                .into_iter()
                .map(|object| format!("fields @> {}", self.bind(object, Type::JSONB)))
                .collect();
            conditions.push(match alternatives.len() {
                1 => alternatives.join(""),
                _ => format!("({})", alternatives.join(" OR ")),
            });
        }
        if let Some(id) = &filter.request_id {
            // Both terms, so that the partial expression index applies.
            conditions.push(format!(
                "fields ? 'request_id' AND fields->>'request_id' = {}",
                self.bind(id.clone(), Type::TEXT)
            ));
        }
        if let Some(id) = &filter.trace_id {
            // As for request_id: both terms, for the partial index.
            conditions.push(format!(
                "fields ? 'trace_id' AND fields->>'trace_id' = {}",
                self.bind(id.clone(), Type::TEXT)
            ));
        }
        conditions
    }
}

/// Escape `\`, `%` and `_` for a LIKE pattern (whose escape is `\`).
pub(crate) fn escape_like(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '\\' | '%' | '_') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// ` WHERE a AND b`, or nothing.
pub(crate) fn where_clause(conditions: &[String]) -> String {
    if conditions.is_empty() {
        String::new()
    } else {
        format!(" WHERE {}", conditions.join(" AND "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn timestamps_in_rfc_3339_or_local_forms() {
        for ok in [
            "2026-11-23",
            "2026-11-23T16:19",
            "2026-11-23 16:19:18",
            "2026-11-23T16:19:18Z",
            "2026-11-23T16:19:18.123456+01:00",
            "2026-11-23 16:19:18-0530",
            "2026-11-23T16:19:18+05",
            "2026-02-30",
        ] {
            assert!(is_timestamp(ok), "{ok:?}");
            assert_eq!(ok.parse(), Ok(When::At(ok.to_owned())));
        }
        for bad in [
            "yesterday",
            "now",
            "2026-13-01",
            "2026-11-23T25:00",
            "2026-11-23T16",
            "2026-11-23T16:19:18.",
            "2026-11-23T16:19:18+1",
            "2026-11-23T16:19:18Z ",
            "26-11-23",
            "2026/11/23",
            "2026-11-23 16:19:18; DROP TABLE log",
        ] {
            assert!(!is_timestamp(bad), "{bad:?}");
            let err = bad.parse::<When>().unwrap_err();
            assert!(
                err.contains("15m") && err.contains("2026-11-23T16:19:18Z"),
                "{err}"
            );
        }
        assert_eq!("15m".parse(), Ok(When::Ago(Duration::from_secs(900))));
    }

    #[test]
    fn fields_are_key_equals_value() {
        let parse = |s: &str| s.parse::<FieldMatch>();
        assert_eq!(
            parse("request_id=r1"),
            Ok(FieldMatch {
                key: "request_id".into(),
                value: "r1".into()
            })
        );
        assert_eq!(parse("a==b").unwrap().value, "=b");
        assert_eq!(parse("a=").unwrap().value, "");
        for bad in ["", "=x", "novalue"] {
            assert!(parse(bad).unwrap_err().contains("KEY=VALUE"), "{bad:?}");
        }
    }

    #[test]
    fn numbers_and_booleans_match_both_forms() {
        let objects = |s: &str| s.parse::<FieldMatch>().unwrap().objects();
        assert_eq!(
            objects("status=500"),
            [json!({"status": "500"}), json!({"status": 500})]
        );
        assert_eq!(
            objects("ok=true"),
            [json!({"ok": "true"}), json!({"ok": true})]
        );
        assert_eq!(
            objects("x=null"),
            [json!({"x": "null"}), json!({"x": null})]
        );
        assert_eq!(
            objects("ratio=0.5"),
            [json!({"ratio": "0.5"}), json!({"ratio": 0.5})]
        );
        assert_eq!(objects("name=ann"), [json!({"name": "ann"})]);
        assert_eq!(objects("list=[1]"), [json!({"list": "[1]"})]);
    }

    #[test]
    fn like_wildcards_are_escaped() {
        assert_eq!(escape_like(r"50%_off\now"), r"50\%\_off\\now");
        assert_eq!(escape_like("plain"), "plain");
    }

    #[test]
    fn every_filter_becomes_a_condition_with_bound_values() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000_000);
        let filter = Filter {
            level: Some(Level::Warn),
            since: Some(t),
            until: Some(t + Duration::from_secs(60)),
            grep: Some("100%".into()),
            target: Some("shop_x".into()),
            fields: vec!["status=500".parse().unwrap()],
            request_id: Some("r'1".into()),
            trace_id: Some("5b8efff798038103d269b633813fc60c".into()),
        };
        let mut sql = Sql::default();
        let conditions = sql.conditions(&filter);
        assert_eq!(
            where_clause(&conditions),
            " WHERE level >= 'warn' AND \"timestamp\" >= $1 AND \"timestamp\" < $2 \
             AND message ILIKE $3 AND target LIKE $4 AND (fields @> $5 OR fields @> $6) \
             AND fields ? 'request_id' AND fields->>'request_id' = $7 \
             AND fields ? 'trace_id' AND fields->>'trace_id' = $8"
        );
        let params: Vec<String> = sql.params.iter().map(|(p, _)| format!("{p:?}")).collect();
        assert_eq!(params[2], r#""%100\\%%""#);
        assert_eq!(params[3], r#""shop\\_x%""#);
        assert_eq!(params[4], r#"Object {"status": String("500")}"#);
        assert_eq!(params[5], r#"Object {"status": Number(500)}"#);
        assert_eq!(params[6], r#""r'1""#);
        let types: Vec<Type> = sql.params.iter().map(|(_, t)| t.clone()).collect();
        assert_eq!(types[0], Type::TIMESTAMPTZ);
        assert_eq!(types[4], Type::JSONB);
        assert_eq!(params[7], r#""5b8efff798038103d269b633813fc60c""#);
        assert_eq!(sql.refs().len(), 8);
    }

    #[test]
    fn trace_is_no_level_condition() {
        let filter = Filter {
            level: Some(Level::Trace),
            ..Filter::default()
        };
        assert!(filter.is_empty());
        assert!(Sql::default().conditions(&filter).is_empty());
    }
}
