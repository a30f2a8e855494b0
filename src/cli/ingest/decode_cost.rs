//! What decoding a body will cost in memory, read off the body before it is
//! decoded, so that the cost is held in the sink's budget (or the request
//! refused) first. A few bytes on the wire can decode into a few hundred
//! bytes of structs: 16 MiB of empty OTLP log records would be millions of
//! `LogRecord`s, gigabytes once decoded.
//!
//! - OTLP protobuf: the wire format is walked with the OTLP logs schema
//!   (which fields hold which messages), counting each message and log
//!   record without allocating.
//! - JSON: objects and arrays are counted outside strings.

use std::mem::size_of;

use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{
    AnyValue, ArrayValue, EntityRef, InstrumentationScope, KeyValue, KeyValueList,
};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use opentelemetry_proto::tonic::resource::v1::Resource;

/// What a body holds and costs to decode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Cost {
    /// Log records (OTLP), or elements of a top-level JSON array.
    pub(crate) records: usize,
    /// Bytes of memory decoding takes beyond the body itself.
    pub(crate) decoded_bytes: usize,
}

/// The OTLP logs messages, and which of their fields hold messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Message {
    Request,
    ResourceLogs,
    Resource,
    EntityRef,
    ScopeLogs,
    Scope,
    LogRecord,
    KeyValue,
    AnyValue,
    ArrayValue,
    KeyValueList,
}

impl Message {
    /// The message a length-delimited field holds, if it holds one.
    fn field(self, number: u64) -> Option<Message> {
        use Message::*;
        Some(match (self, number) {
            (Request, 1) => ResourceLogs,
            (ResourceLogs, 1) => Resource,
            (ResourceLogs, 2) => ScopeLogs,
            (Resource, 1) | (Scope, 3) | (LogRecord, 6) | (KeyValueList, 1) => KeyValue,
            (Resource, 3) => EntityRef,
            (ScopeLogs, 1) => Scope,
            (ScopeLogs, 2) => LogRecord,
            (LogRecord, 5) | (KeyValue, 2) | (ArrayValue, 1) => AnyValue,
            (AnyValue, 5) => ArrayValue,
            (AnyValue, 6) => KeyValueList,
            _ => return None,
        })
    }

    /// Its decoded size, twice over for the slack of the `Vec` it grows in.
    fn decoded_size(self) -> usize {
        2 * match self {
            Message::Request => size_of::<ExportLogsServiceRequest>(),
            Message::ResourceLogs => size_of::<ResourceLogs>(),
            Message::Resource => size_of::<Resource>(),
            Message::EntityRef => size_of::<EntityRef>(),
            Message::ScopeLogs => size_of::<ScopeLogs>(),
            Message::Scope => size_of::<InstrumentationScope>(),
            Message::LogRecord => size_of::<LogRecord>(),
            Message::KeyValue => size_of::<KeyValue>(),
            Message::AnyValue => size_of::<AnyValue>(),
            Message::ArrayValue => size_of::<ArrayValue>(),
            Message::KeyValueList => size_of::<KeyValueList>(),
        }
    }
}

/// The cost of an OTLP `ExportLogsServiceRequest` in protobuf, or why the
/// body is not one. Strings and bytes are counted at their length (they
/// are copied out of the body), each message at its decoded size.
pub(crate) fn otlp_protobuf(body: &[u8]) -> Result<Cost, String> {
    let mut cost = Cost {
        records: 0,
        decoded_bytes: Message::Request.decoded_size(),
    };
    // (message, end of its bytes); a stack, not recursion: values nest.
    let mut stack = vec![(Message::Request, body.len())];
    let mut at = 0;
    while let Some(&(message, end)) = stack.last() {
        if at == end {
            stack.pop();
            continue;
        }
        let tag = varint(body, &mut at, end)?;
        let len = match tag & 7 {
            0 => {
                varint(body, &mut at, end)?;
                continue;
            }
            1 => 8,
            5 => 4,
            2 => usize::try_from(varint(body, &mut at, end)?).map_err(|_| TRUNCATED)?,
            _ => return Err(format!("wire type {} is not used by OTLP", tag & 7)),
        };
        let field_end = at.checked_add(len).filter(|&e| e <= end).ok_or(TRUNCATED)?;
        match (tag & 7, message.field(tag >> 3)) {
            (2, Some(inner)) => {
                if stack.len() > 100 {
                    return Err("values nested more than 100 deep".to_owned());
                }
                cost.decoded_bytes += inner.decoded_size();
                cost.records += usize::from(inner == Message::LogRecord);
                stack.push((inner, field_end));
            }
            (2, None) => {
                cost.decoded_bytes += len;
                at = field_end;
            }
            _ => at = field_end,
        }
    }
    Ok(cost)
}

const TRUNCATED: &str = "a field runs past the end of its message";

fn varint(body: &[u8], at: &mut usize, end: usize) -> Result<u64, String> {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        let byte = *body[..end].get(*at).ok_or(TRUNCATED)?;
        *at += 1;
        value |= u64::from(byte & 0x7f) << shift;
        if byte < 0x80 {
            return Ok(value);
        }
    }
    Err("a varint longer than 10 bytes".to_owned())
}

/// The most a JSON object or array costs decoded into structs or
/// `serde_json::Value`s, with its slot in its parent (the largest OTLP
/// message; a `Value` map entry is smaller).
fn json_container_size() -> usize {
    2 * size_of::<LogRecord>().max(size_of::<serde_json::Value>() + 80)
}

/// The cost of a JSON body: each object or array at the largest size it
/// decodes to, text at its length, and the elements of a top-level array.
/// Never fails: a body that is not JSON is refused by its decoder.
pub(crate) fn json(body: &[u8]) -> Cost {
    let (mut containers, mut depth, mut top_level) = (0usize, 0usize, 0usize);
    let mut in_string = false;
    let mut escaped = false;
    let mut pending_element = false;
    for &b in body {
        if in_string {
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'{' | b'[' => {
                containers += 1;
                depth += 1;
            }
            b'}' | b']' => depth = depth.saturating_sub(1),
            b',' if depth == 1 => top_level += 1,
            _ => {}
        }
        if depth == 1 && !b.is_ascii_whitespace() && b != b'[' && b != b',' {
            pending_element = true;
        }
    }
    Cost {
        records: top_level + usize::from(pending_element),
        decoded_bytes: containers * json_container_size() + body.len(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::common::v1::any_value;
    use prost::Message as _;

    fn request(records: usize, attributes: usize) -> ExportLogsServiceRequest {
        let attribute = KeyValue {
            key: "k".to_owned(),
            value: Some(AnyValue {
                value: Some(any_value::Value::ArrayValue(ArrayValue {
                    values: vec![AnyValue::default(); 2],
                })),
            }),
        };
        let record = LogRecord {
            attributes: vec![attribute; attributes],
            ..LogRecord::default()
        };
        ExportLogsServiceRequest {
            resource_logs: vec![ResourceLogs {
                resource: Some(Resource::default()),
                scope_logs: vec![ScopeLogs {
                    log_records: vec![record; records],
                    ..ScopeLogs::default()
                }],
                ..ResourceLogs::default()
            }],
        }
    }

    #[test]
    fn protobuf_records_are_counted_and_decoding_is_costed_from_the_wire() {
        let body = request(3000, 2).encode_to_vec();
        let cost = otlp_protobuf(&body).unwrap();
        assert_eq!(cost.records, 3000);
        // Each record: itself, 2 attributes, each with a value holding an
        // array of two values.
        let per_record = Message::LogRecord.decoded_size()
            + 2 * (Message::KeyValue.decoded_size()
                + 3 * Message::AnyValue.decoded_size()
                + Message::ArrayValue.decoded_size());
        assert!(cost.decoded_bytes >= 3000 * per_record, "{cost:?}");
        assert!(cost.decoded_bytes < 3000 * per_record + 100_000, "{cost:?}");
        // Empty records cost their struct, not their two wire bytes.
        let empty = request(100_000, 0).encode_to_vec();
        let cost = otlp_protobuf(&empty).unwrap();
        assert_eq!(cost.records, 100_000);
        assert!(
            cost.decoded_bytes > 100 * empty.len(),
            "{cost:?} for {} bytes",
            empty.len()
        );
    }

    #[test]
    fn a_body_that_is_not_an_otlp_request_is_an_error_not_a_panic() {
        let body = request(2, 1).encode_to_vec();
        for cut in 1..body.len() {
            let _ = otlp_protobuf(&body[..cut]);
        }
        assert!(otlp_protobuf(&body[..body.len() - 1]).is_err());
        assert!(otlp_protobuf(&[0x0b]).is_err(), "a group");
        assert_eq!(otlp_protobuf(b"").unwrap().records, 0);
    }

    #[test]
    fn json_containers_are_counted_outside_strings() {
        let body = br#"[{"a":"{[x]}","b":[1,2]},{},"s\"{"]"#;
        let cost = json(body);
        assert_eq!(cost.records, 3);
        assert_eq!(cost.decoded_bytes, 4 * json_container_size() + body.len());
        assert_eq!(json(b"[]").records, 0);
        assert_eq!(json(b" [ 1 ] ").records, 1);
    }
}
