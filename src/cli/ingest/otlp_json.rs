//! OTLP/JSON through the `opentelemetry-proto` crate's serde derive, with a
//! shim where version 0.30 (pinned for its rust-version) strays from the
//! OTLP/JSON and proto3 JSON rules:
//! - `timeUnixNano` and `observedTimeUnixNano` must be strings there, where
//!   proto3 JSON takes an int64 as a string or a number;
//! - an absent `resourceLogs`, or `values` of an `arrayValue` or
//!   `kvlistValue`, is an error there, where an absent field is its default;
//! - an empty `AnyValue` (`{}`) is an error there, where it is a valid,
//!   empty value.
//!
//! The body is first read as is (fast, and errors point at a line and
//! column); only when that fails is it rewritten into the form the crate
//! takes and read again. Hex ids, `intValue` as a string or number,
//! enums as numbers and lowerCamelCase keys the crate handles itself
//! (checked by the fixture test in `otlp_tests.rs`).

use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use serde_json::{Map, Value};

/// The request, or the error to show (with a position when there is one).
pub(crate) fn decode(bytes: &[u8]) -> Result<ExportLogsServiceRequest, String> {
    let mut reader = serde_json::Deserializer::from_slice(bytes);
    let first = match serde_path_to_error::deserialize(&mut reader) {
        Ok(request) => match reader.end() {
            Ok(()) => return Ok(request),
            Err(e) => return Err(e.to_string()),
        },
        Err(e) => e,
    };
    // Not JSON at all: nothing to rewrite.
    let Ok(mut value) = serde_json::from_slice::<Value>(bytes) else {
        return Err(explain(first));
    };
    if !normalize(&mut value) {
        return Err(explain(first));
    }
    serde_path_to_error::deserialize(value).map_err(explain)
}

/// The error with the path of the field at fault
/// (`resourceLogs[0].scopeLogs[0].logRecords[1].traceId`).
fn explain(error: serde_path_to_error::Error<serde_json::Error>) -> String {
    let path = error.path().to_string();
    if path == "." || path.is_empty() {
        error.into_inner().to_string()
    } else {
        format!("{path}: {}", error.into_inner())
    }
}

/// Rewrite `value` in place into what the crate takes; whether anything
/// changed.
fn normalize(value: &mut Value) -> bool {
    let Value::Object(top) = value else {
        return false;
    };
    let mut changed = default_list(top, "resourceLogs");
    if let Some(Value::Array(resources)) = top.get_mut("resourceLogs") {
        for resource in resources {
            changed |= walk(resource);
        }
    }
    changed
}

/// Every object below: the int64 times as strings, absent lists empty,
/// empty `AnyValue`s absent.
fn walk(value: &mut Value) -> bool {
    let mut changed = false;
    match value {
        Value::Object(object) => {
            for key in ["timeUnixNano", "observedTimeUnixNano"] {
                if let Some(n @ Value::Number(_)) = object.get_mut(key) {
                    *n = Value::String(n.to_string());
                    changed = true;
                }
            }
            for key in ["arrayValue", "kvlistValue"] {
                if let Some(Value::Object(list)) = object.get_mut(key) {
                    changed |= default_list(list, "values");
                }
            }
            // An empty AnyValue where an optional one stands: absent.
            for key in ["value", "body"] {
                if object.get(key).is_some_and(is_empty_object) {
                    object.remove(key);
                    changed = true;
                }
            }
            for child in object.values_mut() {
                changed |= walk(child);
            }
        }
        Value::Array(items) => {
            for item in items {
                changed |= walk(item);
            }
        }
        _ => {}
    }
    changed
}

fn default_list(object: &mut Map<String, Value>, key: &str) -> bool {
    if object.contains_key(key) {
        return false;
    }
    object.insert(key.to_owned(), Value::Array(Vec::new()));
    true
}

fn is_empty_object(value: &Value) -> bool {
    matches!(value, Value::Object(o) if o.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn records_of(json: &str) -> usize {
        let request = decode(json.as_bytes()).unwrap();
        request
            .resource_logs
            .iter()
            .flat_map(|r| &r.scope_logs)
            .map(|s| s.log_records.len())
            .sum()
    }

    #[test]
    fn what_the_crate_alone_refuses_and_the_spec_allows() {
        assert_eq!(records_of("{}"), 0);
        let numbers = r#"{"resourceLogs":[{"scopeLogs":[{"logRecords":[
            {"timeUnixNano":1764756900000000000,"observedTimeUnixNano":1,
             "body":{},"attributes":[{"key":"a","value":{}},
             {"key":"b","value":{"arrayValue":{}}},{"key":"c","value":{"kvlistValue":{}}}]}]}]}]}"#;
        assert_eq!(records_of(numbers), 1);
        let request = decode(numbers.as_bytes()).unwrap();
        let log = &request.resource_logs[0].scope_logs[0].log_records[0];
        assert_eq!(log.time_unix_nano, 1_764_756_900_000_000_000);
        assert_eq!(log.body, None);
        assert_eq!(log.attributes[0].value, None);
    }

    #[test]
    fn errors_keep_their_position_when_there_is_one() {
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
        // Rewritten first (a number for an int64), then refused: the path
        // still names the field.
        let err = decode(
            br#"{"resourceLogs":[{"scopeLogs":[{"logRecords":[{"timeUnixNano":1},{"spanId":"x"}]}]}]}"#,
        )
        .unwrap_err();
        assert!(
            err.starts_with("resourceLogs[0].scopeLogs[0].logRecords[1].spanId: "),
            "{err}"
        );
        assert!(decode(b"[]").is_err());
    }
}
