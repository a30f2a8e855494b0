//! `POST /ingest/ndjson`: one JSON object per line, as Vector's `http` sink
//! (codec json, newline-delimited framing), Fluent Bit's `http` output
//! (`format json_lines`) and `curl --data-binary @file` send it. A body that
//! is one JSON array of objects is taken too.
//!
//! Keys: `timestamp` (RFC 3339, or a Unix time in seconds, milliseconds,
//! microseconds or nanoseconds, read exactly from the number's text;
//! absent: when received), `level` (a name, or pino's and bunyan's numbers 10-60;
//! absent: info), `message` (or `msg`; absent: empty; not text: its JSON),
//! `target` (absent: `ndjson`). Every other key becomes a field.
//!
//! Bad lines: the whole body is refused (400) with the number and the fault
//! of each bad line, and nothing of it is taken, so that a client can fix
//! and resend the body without duplicating the good lines.

use axum::body::Body;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::Json;
use pglogsink::{Level, Record};
use serde::de::{Deserialize, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;
use serde_json::{Map, Value};

use super::handover::{check_records, Destination, Handover};
use super::settings::IngestState;
use super::{body, decode_cost, timestamp};
use crate::cli::http::Rejection;

/// The media types taken (Fluent Bit's `json_lines` says application/json).
const MEDIA_TYPES: [&str; 5] = [
    "application/x-ndjson",
    "application/ndjson",
    "application/jsonl",
    "application/json-lines",
    "application/json",
];

/// The target of records that name none.
const DEFAULT_TARGET: &str = "ndjson";

/// Bad lines listed in a 400 (all are counted).
const MAX_LISTED: usize = 20;

pub(crate) async fn ingest(
    State(state): State<IngestState>,
    headers: HeaderMap,
    request: Body,
) -> Response {
    match queue_request(&state, &headers, request).await {
        Ok(response) => response,
        Err(rejection) => rejection.into_response(),
    }
}

async fn queue_request(
    state: &IngestState,
    headers: &HeaderMap,
    request: Body,
) -> Result<Response, Rejection> {
    let media_type = body::media_type(headers);
    if !MEDIA_TYPES.contains(&media_type.as_str()) {
        return Err(body::unsupported_media_type(&media_type, &MEDIA_TYPES[..1]));
    }
    let encoding = body::encoding(headers)?;
    let mut handover = Handover::new(state);
    let bytes = body::read(headers, request, encoding, state.body, &mut handover).await?;
    let records = NdjsonBody::of(&bytes);
    check_records(records.count(), state.max_records)?;
    handover.expect(records.count());
    records.decode(&mut handover)?;
    let queued = handover.send();
    match queued.refused {
        None => Ok(Json(serde_json::json!({ "accepted": queued.accepted })).into_response()),
        Some((refused, mut rejection)) => {
            rejection
                .details
                .insert("accepted".to_owned(), queued.accepted.into());
            rejection
                .details
                .insert("refused".to_owned(), refused.into());
            Err(rejection)
        }
    }
}

/// An NDJSON body: lines, or one JSON array of objects.
pub(crate) enum NdjsonBody<'a> {
    Lines(&'a [u8]),
    Array(&'a [u8]),
}

impl<'a> NdjsonBody<'a> {
    pub(crate) fn of(bytes: &'a [u8]) -> NdjsonBody<'a> {
        match bytes.iter().find(|b| !b.is_ascii_whitespace()) {
            Some(b'[') => NdjsonBody::Array(bytes),
            _ => NdjsonBody::Lines(bytes),
        }
    }

    /// How many records it holds (lines that are not blank, or array
    /// elements), counted without decoding them.
    pub(crate) fn count(&self) -> usize {
        match self {
            NdjsonBody::Lines(bytes) => lines(bytes).count(),
            NdjsonBody::Array(bytes) => decode_cost::json(bytes).records,
        }
    }

    /// Decode every record into `handover`, or a 400 listing the bad lines
    /// (then nothing is handed over).
    pub(crate) fn decode(&self, into: &mut impl Destination) -> Result<(), Rejection> {
        let (bad, total) = match self {
            NdjsonBody::Lines(bytes) => parse_lines(bytes, into)?,
            NdjsonBody::Array(bytes) => parse_array(bytes, into)?,
        };
        if bad.is_empty() {
            return Ok(());
        }
        let what = match self {
            NdjsonBody::Array(_) => "array elements are",
            NdjsonBody::Lines(_) => "lines are",
        };
        Err(bad_lines(&bad, total, what))
    }
}

/// The 400 for a body with bad lines: how many, the first few, each with
/// its number and fault.
fn bad_lines(bad: &[(usize, String)], total: usize, what: &str) -> Rejection {
    let mut rejection = Rejection::bad_request(format!(
        "{} of {total} {what} not valid records; nothing was taken. First: {}",
        bad.len(),
        bad[0].1
    ));
    let listed: Vec<Value> = bad
        .iter()
        .take(MAX_LISTED)
        .map(|(n, e)| serde_json::json!({ "line": n, "error": e }))
        .collect();
    rejection
        .details
        .insert("bad_lines".to_owned(), bad.len().into());
    rejection.details.insert("lines".to_owned(), listed.into());
    rejection
}

/// Bad lines (number, fault) and the records counted.
type Parsed = (Vec<(usize, String)>, usize);

/// The lines that are not blank, numbered from 1 (blank ones count in the
/// numbering), without a trailing `\r`.
fn lines(bytes: &[u8]) -> impl Iterator<Item = (usize, &[u8])> {
    bytes
        .split(|&b| b == b'\n')
        .enumerate()
        .map(|(i, line)| (i + 1, line.strip_suffix(b"\r").unwrap_or(line)))
        .filter(|(_, line)| !line.iter().all(u8::is_ascii_whitespace))
}

/// Each line decoded and taken, one at a time. After the first bad line
/// nothing more is taken: the rest are only checked, for the 400.
fn parse_lines(bytes: &[u8], into: &mut impl Destination) -> Result<Parsed, Rejection> {
    let mut bad = Vec::new();
    let mut total = 0;
    for (n, line) in lines(bytes) {
        total += 1;
        let parsed = serde_json::from_slice::<Line>(line)
            .map_err(|e| format!("line {n}: not JSON: {e}"))
            .and_then(|line| record(line).map_err(|e| format!("line {n}: {e}")));
        match parsed {
            Ok(record) if bad.is_empty() => into.push(record)?,
            Ok(_) => {}
            Err(e) => bad.push((n, e)),
        }
    }
    Ok((bad, total))
}

/// A JSON array of objects, its decoded form held first; its elements are
/// numbered from 1.
fn parse_array(bytes: &[u8], into: &mut impl Destination) -> Result<Parsed, Rejection> {
    into.hold(decode_cost::json(bytes).decoded_bytes)?;
    let lines: Vec<Line> = serde_json::from_slice(bytes)
        .map_err(|e| Rejection::bad_request(format!("the body is not a JSON array: {e}")))?;
    let total = lines.len();
    let mut bad = Vec::new();
    for (i, line) in lines.into_iter().enumerate() {
        match record(line) {
            Ok(record) if bad.is_empty() => into.push(record)?,
            Ok(_) => {}
            Err(e) => bad.push((i + 1, format!("element {}: {e}", i + 1))),
        }
    }
    Ok((bad, total))
}

/// One line or array element as read: an object's members, with its
/// `timestamp` kept as written (a number is read from its decimal text, not
/// through a double); or what it is instead of an object.
enum Line<'a> {
    Object(Map<String, Value>, Option<&'a RawValue>),
    Other(&'static str),
}

impl<'de> Deserialize<'de> for Line<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Line<'de>, D::Error> {
        deserializer.deserialize_any(LineVisitor)
    }
}

struct LineVisitor;

impl<'de> Visitor<'de> for LineVisitor {
    type Value = Line<'de>;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Line<'de>, A::Error> {
        let mut members = Map::new();
        let mut timestamp = None;
        while let Some(key) = map.next_key::<String>()? {
            if key == "timestamp" {
                timestamp = Some(map.next_value()?);
            } else {
                members.insert(key, map.next_value()?);
            }
        }
        Ok(Line::Object(members, timestamp))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Line<'de>, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Line::Other("an array"))
    }

    fn visit_bool<E>(self, _: bool) -> Result<Line<'de>, E> {
        Ok(Line::Other("a boolean"))
    }

    fn visit_i64<E>(self, _: i64) -> Result<Line<'de>, E> {
        Ok(Line::Other("a number"))
    }

    fn visit_u64<E>(self, _: u64) -> Result<Line<'de>, E> {
        Ok(Line::Other("a number"))
    }

    fn visit_f64<E>(self, _: f64) -> Result<Line<'de>, E> {
        Ok(Line::Other("a number"))
    }

    fn visit_str<E>(self, _: &str) -> Result<Line<'de>, E> {
        Ok(Line::Other("text"))
    }

    fn visit_unit<E>(self) -> Result<Line<'de>, E> {
        Ok(Line::Other("null"))
    }
}

/// One object as a record; the error names the key at fault.
fn record(line: Line) -> Result<Record, String> {
    let (mut object, timestamp) = match line {
        Line::Object(members, timestamp) => (members, timestamp),
        Line::Other(kind) => return Err(format!("expected a JSON object, found {kind}")),
    };
    let level = level(object.remove("level"))?;
    let message = match object.remove("message") {
        Some(message) => message,
        None => object.remove("msg").unwrap_or(Value::Null),
    };
    let message = match message {
        Value::String(text) => text,
        Value::Null => String::new(),
        other => other.to_string(),
    };
    let target = match object.remove("target") {
        None | Some(Value::Null) => DEFAULT_TARGET.to_owned(),
        Some(Value::String(target)) => target,
        Some(other) => return Err(format!("\"target\" must be text, found {}", kind(&other))),
    };
    let at = match timestamp.map(|raw| raw.get().trim()) {
        None | Some("null") => None,
        Some(raw) => Some(time(raw)?),
    };
    let record = Record::new(level, message)
        .target(target)
        .fields(fields(object));
    Ok(match at {
        Some(at) => record.at(at),
        None => record,
    })
}

/// A `timestamp` as written: RFC 3339 text, or a Unix time's number.
fn time(raw: &str) -> Result<std::time::SystemTime, String> {
    match raw.as_bytes().first() {
        Some(b'"') => {
            let text: String = serde_json::from_str(raw).map_err(|e| e.to_string())?;
            timestamp::parse_rfc3339(&text)
                .ok_or_else(|| format!("\"timestamp\" {text:?} is not {}", timestamp::FORMS))
        }
        Some(b'-' | b'0'..=b'9') => timestamp::from_unix_text(raw)
            .map_err(|why| format!("\"timestamp\" {raw} {why}; use {}", timestamp::FORMS)),
        _ => {
            let found: Value = serde_json::from_str(raw).unwrap_or(Value::Null);
            Err(format!(
                "\"timestamp\" must be {}, found {}",
                timestamp::FORMS,
                kind(&found)
            ))
        }
    }
}

fn fields(object: Map<String, Value>) -> pglogsink::Fields {
    object.into_iter().collect()
}

/// A level name, or a pino/bunyan number (10 trace ... 60 fatal).
fn level(value: Option<Value>) -> Result<Level, String> {
    let unknown = |shown: String| {
        format!(
            "\"level\" {shown} is not a level: use one of {}, or 10 to 60 as pino",
            Level::ANY_LOGGER_NAMES
        )
    };
    match value {
        None | Some(Value::Null) => Ok(Level::Info),
        Some(Value::String(name)) => {
            Level::from_any_logger(&name).ok_or_else(|| unknown(format!("{name:?}")))
        }
        Some(Value::Number(n)) => match n.as_u64() {
            Some(10) => Ok(Level::Trace),
            Some(20) => Ok(Level::Debug),
            Some(30) => Ok(Level::Info),
            Some(40) => Ok(Level::Warn),
            Some(50 | 60) => Ok(Level::Error),
            _ => Err(unknown(n.to_string())),
        },
        Some(other) => Err(unknown(kind(&other).to_owned())),
    }
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "text",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::StatusCode;
    use serde_json::json;
    use std::time::{Duration, SystemTime, UNIX_EPOCH};

    /// Every record of the body, or the 400.
    fn parse(bytes: &[u8]) -> Result<Vec<Record>, Rejection> {
        let mut records = Vec::new();
        NdjsonBody::of(bytes).decode(&mut records)?;
        Ok(records)
    }

    fn one(line: &str) -> Record {
        let mut records = parse(line.as_bytes()).unwrap();
        assert_eq!(records.len(), 1);
        records.remove(0)
    }

    fn field<'a>(record: &'a Record, key: &str) -> Option<&'a Value> {
        record
            .field_list()
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v)
    }

    #[test]
    fn recognised_keys_and_fields() {
        let r = one(
            r#"{"timestamp":"2025-12-03T10:15:00.250Z","level":"WARNING","msg":"disk low","target":"billing","free_mb":120,"tags":["a"]}"#,
        );
        assert_eq!(r.level(), Level::Warn);
        assert_eq!(r.message(), "disk low");
        assert_eq!(
            r.timestamp(),
            UNIX_EPOCH + Duration::from_millis(1_764_756_900_250)
        );
        assert_eq!(field(&r, "free_mb"), Some(&json!(120)));
        assert_eq!(field(&r, "tags"), Some(&json!(["a"])));
        assert_eq!(r.field_list().len(), 2, "{:?}", r.field_list());
    }

    #[test]
    fn defaults_and_other_shapes() {
        let before = SystemTime::now();
        let r = one(r#"{"message":{"k":1},"msg":"kept as a field"}"#);
        assert_eq!(r.level(), Level::Info);
        assert_eq!(r.message(), r#"{"k":1}"#);
        assert_eq!(field(&r, "msg"), Some(&json!("kept as a field")));
        // Without a timestamp of its own, a line is stamped when it is read.
        assert!(r.timestamp() >= before && r.timestamp() <= SystemTime::now());
        assert_eq!(one(r#"{"level":50}"#).level(), Level::Error);
        assert_eq!(one(r#"{"timestamp":1764756900.5}"#).message(), "");
        // Fluent Bit's json_lines, unchanged.
        let fb = one(r#"{"date":1764756900.5,"log":"hello"}"#);
        assert_eq!(fb.field_list().len(), 2);
    }

    #[test]
    fn blank_lines_and_crlf_are_fine() {
        let records = parse(b"\n{\"message\":\"a\"}\r\n\n  \n{\"message\":\"b\"}").unwrap();
        let messages: Vec<&str> = records.iter().map(Record::message).collect();
        assert_eq!(messages, ["a", "b"]);
        assert!(parse(b"").unwrap().is_empty());
    }

    #[test]
    fn a_bad_line_refuses_the_body_with_its_number_and_key() {
        let body = "{\"message\":\"ok\"}\nnot json\n{\"level\":\"loud\"}\n[1]\n{\"timestamp\":\"yesterday\"}\n";
        let err = parse(body.as_bytes()).unwrap_err();
        assert_eq!(err.status, StatusCode::BAD_REQUEST);
        assert!(err.message.starts_with("4 of 5 lines"), "{}", err.message);
        let lines = err.details["lines"].as_array().unwrap();
        let numbers: Vec<u64> = lines.iter().map(|l| l["line"].as_u64().unwrap()).collect();
        assert_eq!(numbers, [2, 3, 4, 5]);
        let text = |i: usize| lines[i]["error"].as_str().unwrap().to_owned();
        assert!(text(0).starts_with("line 2: not JSON"), "{}", text(0));
        assert!(text(1).contains("\"level\" \"loud\""), "{}", text(1));
        assert!(text(2).contains("expected a JSON object"), "{}", text(2));
        assert!(
            text(3).contains("\"timestamp\" \"yesterday\""),
            "{}",
            text(3)
        );
    }

    #[test]
    fn timestamps_in_every_unit_exactly_and_what_cannot_be_stored_refused() {
        let at = |line: &str| one(line).timestamp();
        assert_eq!(
            at(r#"{"message":"x","timestamp":1767225600123456789}"#),
            UNIX_EPOCH + Duration::from_nanos(1_767_225_600_123_456_789)
        );
        assert_eq!(
            at(r#"{"timestamp":1767225600123}"#),
            UNIX_EPOCH + Duration::from_millis(1_767_225_600_123)
        );
        assert_eq!(
            at(r#"{"timestamp": 1e17 }"#),
            UNIX_EPOCH + Duration::from_secs(100_000_000)
        );
        assert_eq!(
            at(r#"[{"timestamp":1767225600.000001}]"#),
            UNIX_EPOCH + Duration::from_micros(1_767_225_600_000_001)
        );
        let body = "{\"timestamp\":1e30}\n{\"timestamp\":-5}\n{\"timestamp\":true}\n{\"timestamp\":null}\n";
        let err = parse(body.as_bytes()).unwrap_err();
        let lines = err.details["lines"].as_array().unwrap();
        let text = |i: usize| lines[i]["error"].as_str().unwrap().to_owned();
        assert_eq!(lines.len(), 3, "{lines:?}");
        assert!(
            text(0).starts_with("line 1: \"timestamp\" 1e30 is after the latest time"),
            "{}",
            text(0)
        );
        assert!(text(1).contains("before 1970"), "{}", text(1));
        assert!(text(2).contains("found a boolean"), "{}", text(2));
    }

    #[test]
    fn a_json_array_of_objects() {
        let records = parse(br#" [{"message":"a"},{"message":"b","level":"debug"}]"#).unwrap();
        assert_eq!(records[1].level(), Level::Debug);
        let err = parse(br#"[{"message":"a"}, 7]"#).unwrap_err();
        assert!(err.message.contains("array elements"), "{}", err.message);
        assert_eq!(err.details["lines"][0]["line"], 2);
        assert!(parse(b"[{").is_err());
    }
}
