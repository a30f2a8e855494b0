//! OTLP/JSON: an `ExportLogsServiceRequest` as the OTLP specification and
//! the protobuf JSON mapping write it, decoded into the same generated
//! (prost) types as the protobuf form, so that both encodings become rows
//! through one mapping (`otlp.rs`).
//!
//! What is taken (<https://opentelemetry.io/docs/specs/otlp/#json-protobuf-encoding>,
//! <https://protobuf.dev/programming-guides/json/>):
//! - keys in lowerCamelCase, or the proto field names (`time_unix_nano`);
//! - `traceId` and `spanId` as hex, in either case (OTLP's rule, where the
//!   mapping would have base64);
//! - 64- and 32-bit integers (`timeUnixNano`, `intValue`, `flags`...) as
//!   numbers or as strings;
//! - `doubleValue` as a number, or a string: `"NaN"`, `"Infinity"`,
//!   `"-Infinity"` or a number's text (`"2.5"`);
//! - `severityNumber` as a number, or its name (`"SEVERITY_NUMBER_WARN"`);
//! - `bytesValue` as base64, standard or URL-safe, padded or not;
//! - `null` for any field: its default; an empty `AnyValue` (`{}`), also
//!   inside an `arrayValue`: an empty value (stored as JSON `null`);
//! - unknown fields are ignored, as the specification asks of receivers.
//!
//! The crate's own serde derive (feature `with-serde`) is not used: in the
//! version pinned for its rust-version it refuses much of the above.
//! A refused field is named by its path
//! (`resourceLogs[0].scopeLogs[0].logRecords[3].traceId: ...`) and, when
//! there is one, its line and column.

use std::fmt;

use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{
    any_value, AnyValue, ArrayValue, InstrumentationScope, KeyValue, KeyValueList,
};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs, SeverityNumber};
use opentelemetry_proto::tonic::resource::v1::Resource;
use serde::de::{self, Deserializer, IgnoredAny, MapAccess, Visitor};
use serde::Deserialize;
use serde_json::Value;

/// The request, or the error to show (with a path and a position when
/// there are some).
pub(crate) fn decode(bytes: &[u8]) -> Result<ExportLogsServiceRequest, String> {
    let first = bytes.iter().find(|b| !b.is_ascii_whitespace());
    if first.is_some() && first != Some(&b'{') {
        return Err("expected a JSON object".to_owned());
    }
    let mut reader = serde_json::Deserializer::from_slice(bytes);
    let request: Request = serde_path_to_error::deserialize(&mut reader).map_err(explain)?;
    reader.end().map_err(|e| e.to_string())?;
    Ok(request.into())
}

/// The error with the path of the field at fault.
fn explain(error: serde_path_to_error::Error<serde_json::Error>) -> String {
    let path = error.path().to_string();
    if path == "." || path.is_empty() {
        error.into_inner().to_string()
    } else {
        format!("{path}: {}", error.into_inner())
    }
}

#[derive(Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
struct Request {
    #[serde(alias = "resource_logs", deserialize_with = "list")]
    resource_logs: Vec<ResourceLogsJson>,
}

#[derive(Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
struct ResourceLogsJson {
    resource: Option<ResourceJson>,
    #[serde(alias = "scope_logs", deserialize_with = "list")]
    scope_logs: Vec<ScopeLogsJson>,
    #[serde(alias = "schema_url", deserialize_with = "text")]
    schema_url: String,
}

#[derive(Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
struct ResourceJson {
    #[serde(deserialize_with = "list")]
    attributes: Vec<KeyValueJson>,
    #[serde(alias = "dropped_attributes_count", deserialize_with = "integer")]
    dropped_attributes_count: u32,
}

#[derive(Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
struct ScopeLogsJson {
    scope: Option<ScopeJson>,
    #[serde(alias = "log_records", deserialize_with = "list")]
    log_records: Vec<LogRecordJson>,
    #[serde(alias = "schema_url", deserialize_with = "text")]
    schema_url: String,
}

#[derive(Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
struct ScopeJson {
    #[serde(deserialize_with = "text")]
    name: String,
    #[serde(deserialize_with = "text")]
    version: String,
    #[serde(deserialize_with = "list")]
    attributes: Vec<KeyValueJson>,
    #[serde(alias = "dropped_attributes_count", deserialize_with = "integer")]
    dropped_attributes_count: u32,
}

#[derive(Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
struct LogRecordJson {
    #[serde(alias = "time_unix_nano", deserialize_with = "integer")]
    time_unix_nano: u64,
    #[serde(alias = "observed_time_unix_nano", deserialize_with = "integer")]
    observed_time_unix_nano: u64,
    #[serde(alias = "severity_number", deserialize_with = "severity")]
    severity_number: i32,
    #[serde(alias = "severity_text", deserialize_with = "text")]
    severity_text: String,
    body: Option<AnyValueJson>,
    #[serde(deserialize_with = "list")]
    attributes: Vec<KeyValueJson>,
    #[serde(alias = "dropped_attributes_count", deserialize_with = "integer")]
    dropped_attributes_count: u32,
    #[serde(deserialize_with = "integer")]
    flags: u32,
    #[serde(alias = "trace_id", deserialize_with = "hex_id")]
    trace_id: Vec<u8>,
    #[serde(alias = "span_id", deserialize_with = "hex_id")]
    span_id: Vec<u8>,
    #[serde(alias = "event_name", deserialize_with = "text")]
    event_name: String,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct KeyValueJson {
    #[serde(deserialize_with = "text")]
    key: String,
    value: Option<AnyValueJson>,
}

/// An `AnyValue`: one of its value fields, or none (`{}`, an empty value).
struct AnyValueJson(Option<any_value::Value>);

#[derive(Deserialize, Default)]
#[serde(default)]
struct ArrayValueJson {
    #[serde(deserialize_with = "list")]
    values: Vec<AnyValueJson>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct KeyValueListJson {
    #[serde(deserialize_with = "list")]
    values: Vec<KeyValueJson>,
}

impl From<Request> for ExportLogsServiceRequest {
    fn from(r: Request) -> ExportLogsServiceRequest {
        ExportLogsServiceRequest {
            resource_logs: r.resource_logs.into_iter().map(Into::into).collect(),
        }
    }
}

impl From<ResourceLogsJson> for ResourceLogs {
    fn from(r: ResourceLogsJson) -> ResourceLogs {
        ResourceLogs {
            resource: r.resource.map(|r| Resource {
                attributes: key_values(r.attributes),
                dropped_attributes_count: r.dropped_attributes_count,
                entity_refs: Vec::new(),
            }),
            scope_logs: r.scope_logs.into_iter().map(Into::into).collect(),
            schema_url: r.schema_url,
        }
    }
}

impl From<ScopeLogsJson> for ScopeLogs {
    fn from(s: ScopeLogsJson) -> ScopeLogs {
        ScopeLogs {
            scope: s.scope.map(|s| InstrumentationScope {
                name: s.name,
                version: s.version,
                attributes: key_values(s.attributes),
                dropped_attributes_count: s.dropped_attributes_count,
            }),
            log_records: s.log_records.into_iter().map(Into::into).collect(),
            schema_url: s.schema_url,
        }
    }
}

impl From<LogRecordJson> for LogRecord {
    fn from(l: LogRecordJson) -> LogRecord {
        LogRecord {
            time_unix_nano: l.time_unix_nano,
            observed_time_unix_nano: l.observed_time_unix_nano,
            severity_number: l.severity_number,
            severity_text: l.severity_text,
            body: l.body.map(Into::into),
            attributes: key_values(l.attributes),
            dropped_attributes_count: l.dropped_attributes_count,
            flags: l.flags,
            trace_id: l.trace_id,
            span_id: l.span_id,
            event_name: l.event_name,
        }
    }
}

impl From<AnyValueJson> for AnyValue {
    fn from(AnyValueJson(value): AnyValueJson) -> AnyValue {
        AnyValue { value }
    }
}

fn key_values(list: Vec<KeyValueJson>) -> Vec<KeyValue> {
    list.into_iter()
        .map(|kv| KeyValue {
            key: kv.key,
            value: kv.value.map(Into::into),
        })
        .collect()
}

impl<'de> Deserialize<'de> for AnyValueJson {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<AnyValueJson, D::Error> {
        deserializer.deserialize_any(AnyValueVisitor)
    }
}

struct AnyValueVisitor;

impl<'de> Visitor<'de> for AnyValueVisitor {
    type Value = AnyValueJson;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an AnyValue object such as {\"stringValue\": \"text\"} or {}")
    }

    /// `null` where an `AnyValue` stands (an array's element): empty.
    fn visit_unit<E>(self) -> Result<AnyValueJson, E> {
        Ok(AnyValueJson(None))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<AnyValueJson, A::Error> {
        use any_value::Value as Any;
        let mut found: Option<(String, Any)> = None;
        while let Some(key) = map.next_key::<String>()? {
            let value = match key.as_str() {
                "stringValue" | "string_value" => {
                    map.next_value::<Option<String>>()?.map(Any::StringValue)
                }
                "boolValue" | "bool_value" => map.next_value::<Option<bool>>()?.map(Any::BoolValue),
                "intValue" | "int_value" => match map.next_value::<Value>()? {
                    Value::Null => None,
                    v => Some(Any::IntValue(from_integer(v).map_err(de::Error::custom)?)),
                },
                "doubleValue" | "double_value" => match map.next_value::<Value>()? {
                    Value::Null => None,
                    v => Some(Any::DoubleValue(double(v).map_err(de::Error::custom)?)),
                },
                "arrayValue" | "array_value" => {
                    map.next_value::<Option<ArrayValueJson>>()?.map(|a| {
                        Any::ArrayValue(ArrayValue {
                            values: a.values.into_iter().map(Into::into).collect(),
                        })
                    })
                }
                "kvlistValue" | "kvlist_value" => {
                    map.next_value::<Option<KeyValueListJson>>()?.map(|l| {
                        Any::KvlistValue(KeyValueList {
                            values: key_values(l.values),
                        })
                    })
                }
                "bytesValue" | "bytes_value" => match map.next_value::<Option<String>>()? {
                    None => None,
                    Some(text) => Some(Any::BytesValue(base64(&text).map_err(de::Error::custom)?)),
                },
                _ => {
                    map.next_value::<IgnoredAny>()?;
                    None
                }
            };
            if let Some(value) = value {
                if let Some((first, _)) = &found {
                    return Err(de::Error::custom(format!(
                        "an AnyValue holds one value, this one has {first} and {key}"
                    )));
                }
                found = Some((key, value));
            }
        }
        Ok(AnyValueJson(found.map(|(_, value)| value)))
    }
}

/// A repeated field: an array, or `null` for none.
fn list<'de, D, T>(deserializer: D) -> Result<Vec<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    Ok(Option::<Vec<T>>::deserialize(deserializer)?.unwrap_or_default())
}

/// A string field; `null` for empty.
fn text<'de, D: Deserializer<'de>>(deserializer: D) -> Result<String, D::Error> {
    Ok(Option::<String>::deserialize(deserializer)?.unwrap_or_default())
}

/// An integer field of any width: a number or a string; `null` for 0.
fn integer<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: TryFrom<i128> + Default,
{
    match Value::deserialize(deserializer)? {
        Value::Null => Ok(T::default()),
        value => from_integer(value).map_err(de::Error::custom),
    }
}

/// `severityNumber`: a number, a string of one, or the enum value's name.
fn severity<'de, D: Deserializer<'de>>(deserializer: D) -> Result<i32, D::Error> {
    match Value::deserialize(deserializer)? {
        Value::Null => Ok(0),
        Value::String(name) if name.starts_with("SEVERITY_NUMBER_") => {
            SeverityNumber::from_str_name(&name)
                .map(|s| s as i32)
                .ok_or_else(|| de::Error::custom(format!("{name:?} is not a SeverityNumber")))
        }
        value => from_integer(value).map_err(de::Error::custom),
    }
}

/// A trace or span id: hex, in either case (empty for none).
fn hex_id<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<u8>, D::Error> {
    let text = Option::<String>::deserialize(deserializer)?.unwrap_or_default();
    pglogsink::admin::hex::decode(&text)
        .ok_or_else(|| de::Error::custom(format!("{text:?} is not an id in hexadecimal")))
}

/// A JSON number or string as an integer of type `T`: `12`, `"12"`, and
/// `1.2e1` or `"1.2e1"` (exponents are allowed; fractions are not).
fn from_integer<T: TryFrom<i128>>(value: Value) -> Result<T, String> {
    let whole = match &value {
        Value::Number(n) => n
            .as_i64()
            .map(i128::from)
            .or_else(|| n.as_u64().map(i128::from))
            .or_else(|| n.as_f64().and_then(whole_f64)),
        Value::String(s) => s
            .trim()
            .parse::<i128>()
            .ok()
            .or_else(|| s.trim().parse::<f64>().ok().and_then(whole_f64)),
        _ => None,
    };
    whole
        .and_then(|n| T::try_from(n).ok())
        .ok_or_else(|| format!("{value} is not an integer of this field's size"))
}

fn whole_f64(f: f64) -> Option<i128> {
    (f.is_finite() && f.fract() == 0.0 && f.abs() < 1e38).then_some(f as i128)
}

/// A double: a number, or a string as the protobuf JSON mapping writes
/// non-finite ones (`"NaN"`, `"Infinity"`, `"-Infinity"`) and allows
/// others (`"2.5"`).
fn double(value: Value) -> Result<f64, String> {
    match &value {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => match s.as_str() {
            "NaN" => Some(f64::NAN),
            "Infinity" => Some(f64::INFINITY),
            "-Infinity" => Some(f64::NEG_INFINITY),
            text => text.trim().parse::<f64>().ok().filter(|f| f.is_finite()),
        },
        _ => None,
    }
    .ok_or_else(|| format!("{value} is not a double"))
}

/// Bytes in base64: standard or URL-safe alphabet, padded or not.
fn base64(text: &str) -> Result<Vec<u8>, String> {
    use base64::engine::{general_purpose, DecodePaddingMode, GeneralPurpose};
    use base64::{alphabet, Engine as _};
    let config = general_purpose::GeneralPurposeConfig::new()
        .with_decode_padding_mode(DecodePaddingMode::Indifferent);
    let alphabet = if text.contains(['-', '_']) {
        &alphabet::URL_SAFE
    } else {
        &alphabet::STANDARD
    };
    GeneralPurpose::new(alphabet, config)
        .decode(text)
        .map_err(|e| format!("{text:?} is not base64: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn records_of(json: &str) -> Vec<LogRecord> {
        let request = decode(json.as_bytes()).unwrap_or_else(|e| panic!("{json}: {e}"));
        request
            .resource_logs
            .into_iter()
            .flat_map(|r| r.scope_logs)
            .flat_map(|s| s.log_records)
            .collect()
    }

    fn one_attribute(value: &str) -> Option<any_value::Value> {
        let json = format!(
            r#"{{"resourceLogs":[{{"scopeLogs":[{{"logRecords":[
                {{"attributes":[{{"key":"a","value":{value}}}]}}]}}]}}]}}"#
        );
        let mut records = records_of(&json);
        records[0].attributes.remove(0).value.and_then(|v| v.value)
    }

    #[test]
    fn empty_any_values_anywhere() {
        assert!(records_of("{}").is_empty());
        assert!(records_of(r#"{"resourceLogs":null}"#).is_empty());
        let json = r#"{"resourceLogs":[{"scopeLogs":[{"logRecords":[
            {"body":{},"attributes":[{"key":"a","value":{}},
             {"key":"b","value":{"arrayValue":{}}},{"key":"c","value":{"kvlistValue":{}}}]}]}]}]}"#;
        let log = &records_of(json)[0];
        assert_eq!(log.body, Some(AnyValue { value: None }));
        assert_eq!(log.attributes[0].value, Some(AnyValue { value: None }));
        let array = one_attribute(r#"{"arrayValue":{"values":[{},{"intValue":"2"},{},null]}}"#);
        let Some(any_value::Value::ArrayValue(array)) = array else {
            panic!("{array:?}")
        };
        let values: Vec<_> = array.values.into_iter().map(|v| v.value).collect();
        assert_eq!(
            values,
            [None, Some(any_value::Value::IntValue(2)), None, None]
        );
        let list = one_attribute(r#"{"kvlistValue":{"values":[{"key":"k","value":{}}]}}"#);
        assert!(
            matches!(&list, Some(any_value::Value::KvlistValue(l)) if l.values[0].value == Some(AnyValue { value: None })),
            "{list:?}"
        );
    }

    #[test]
    fn doubles_as_numbers_and_as_the_mapping_writes_them_in_strings() {
        let double = |json: &str| match one_attribute(&format!(r#"{{"doubleValue":{json}}}"#)) {
            Some(any_value::Value::DoubleValue(d)) => d,
            other => panic!("{json}: {other:?}"),
        };
        assert!(double(r#""NaN""#).is_nan());
        assert_eq!(double(r#""Infinity""#), f64::INFINITY);
        assert_eq!(double(r#""-Infinity""#), f64::NEG_INFINITY);
        assert_eq!(double(r#""2.5""#), 2.5);
        assert_eq!(double("2.5"), 2.5);
        assert_eq!(double("-1e3"), -1000.0);
        assert_eq!(double("7"), 7.0);
        for bad in [r#""many""#, "true", "[]"] {
            let json = format!(
                r#"{{"resourceLogs":[{{"scopeLogs":[{{"logRecords":[
                {{"attributes":[{{"key":"a","value":{{"doubleValue":{bad}}}}}]}}]}}]}}]}}"#
            );
            let err = decode(json.as_bytes()).unwrap_err();
            assert!(err.contains("is not a double"), "{bad}: {err}");
        }
    }

    #[test]
    fn integers_as_strings_or_numbers_and_enums_by_number_or_name() {
        let log = &records_of(
            r#"{"resourceLogs":[{"scopeLogs":[{"logRecords":[
            {"timeUnixNano":1764756900000000000,"observedTimeUnixNano":"1764756900000000001",
             "severityNumber":"SEVERITY_NUMBER_WARN2","flags":"1","droppedAttributesCount":2},
            {"time_unix_nano":"1.5e9","severity_number":"17","trace_id":"0102030405060708090A0B0C0D0E0F10"}]}]}]}"#,
        );
        assert_eq!(log.len(), 2);
        assert_eq!(log[0].time_unix_nano, 1_764_756_900_000_000_000);
        assert_eq!(log[0].observed_time_unix_nano, 1_764_756_900_000_000_001);
        assert_eq!(log[0].severity_number, 14);
        assert_eq!((log[0].flags, log[0].dropped_attributes_count), (1, 2));
        assert_eq!(log[1].time_unix_nano, 1_500_000_000);
        assert_eq!(log[1].severity_number, 17);
        assert_eq!(log[1].trace_id, (1..=16).collect::<Vec<u8>>());
        for int in [r#""-9007199254740993""#, "-9007199254740993"] {
            assert_eq!(
                one_attribute(&format!(r#"{{"intValue":{int}}}"#)),
                Some(any_value::Value::IntValue(-9_007_199_254_740_993))
            );
        }
        for bytes in [r#""AAEC/w==""#, r#""AAEC/w""#, r#""AAEC_w""#] {
            assert_eq!(
                one_attribute(&format!(r#"{{"bytesValue":{bytes}}}"#)),
                Some(any_value::Value::BytesValue(vec![0, 1, 2, 255])),
                "{bytes}"
            );
        }
    }

    #[test]
    fn unknown_fields_and_nulls_are_ignored() {
        let log = &records_of(
            r#"{"future":1,"resourceLogs":[{"resource":{"attributes":null,"entityRefs":[{"type":"x"}]},
            "scopeLogs":[{"scope":{"name":"s","x":[]},"logRecords":[
            {"severityText":null,"body":{"stringValue":"hi","futureValue":{"a":1}},"novel":{"deep":[1,2]},
             "traceId":null}]}]}]}"#,
        );
        assert_eq!(log[0].severity_text, "");
        assert_eq!(
            log[0].body.as_ref().and_then(|b| b.value.clone()),
            Some(any_value::Value::StringValue("hi".into()))
        );
    }

    #[test]
    fn errors_name_the_field_and_keep_their_position() {
        let err = decode(b"{\"resourceLogs\": [1,").unwrap_err();
        assert!(err.contains("line 1 column"), "{err}");
        let err =
            decode(br#"{"resourceLogs":[{"scopeLogs":[{"logRecords":[{"traceId":"zz"}]}]}]}"#)
                .unwrap_err();
        assert!(err.contains("line 1 column"), "{err}");
        assert!(
            err.starts_with("resourceLogs[0].scopeLogs[0].logRecords[0].traceId: "),
            "{err}"
        );
        let err = decode(
            br#"{"resourceLogs":[{"scopeLogs":[{"logRecords":[{"timeUnixNano":1},{"timeUnixNano":-1}]}]}]}"#,
        )
        .unwrap_err();
        assert!(
            err.starts_with("resourceLogs[0].scopeLogs[0].logRecords[1].timeUnixNano: "),
            "{err}"
        );
        let err = decode(
            br#"{"resourceLogs":[{"scopeLogs":[{"logRecords":[{"body":{"stringValue":"a","intValue":1}}]}]}]}"#,
        )
        .unwrap_err();
        assert!(err.contains("holds one value"), "{err}");
        assert!(decode(b"[]").is_err());
        assert!(decode(b"{} x").is_err());
    }
}
