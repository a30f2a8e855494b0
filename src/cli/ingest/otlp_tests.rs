//! The OTLP mapping against a JSON fixture written from the OTLP/JSON
//! specification (hex ids in either case, int64 as strings and as numbers,
//! enums as numbers, lowerCamelCase keys), and the protobuf form.

use super::*;
use opentelemetry_proto::tonic::common::v1::InstrumentationScope;
use opentelemetry_proto::tonic::logs::v1::{ResourceLogs, ScopeLogs};
use opentelemetry_proto::tonic::resource::v1::Resource;
use serde_json::json;

const FIXTURE: &str = include_str!("../../../tests/fixtures/otlp_logs.json");

/// The request decoded as the endpoint does (no cap on records).
fn decode(bytes: &[u8], encoding: Encoding) -> Result<ExportLogsServiceRequest, Rejection> {
    super::decode(bytes, encoding, usize::MAX, &mut Vec::new())
}

/// Its records, as the endpoint maps them.
fn records(export: ExportLogsServiceRequest) -> Vec<Record> {
    let mut records = Vec::new();
    map_records(export, &mut records).unwrap();
    records
}

/// (level, target, message, unix nanos or 0, fields as one JSON object:
/// the shared ones, then the record's own).
fn shown(record: &Record) -> (Level, String, String, u128, Value) {
    let nanos = record
        .timestamp()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let mut fields: serde_json::Map<String, Value> = record
        .shared()
        .map(|s| serde_json::from_str(&s.to_json()).unwrap())
        .unwrap_or_default();
    fields.extend(
        record
            .field_list()
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone())),
    );
    (
        record.level(),
        target(record),
        record.message().to_owned(),
        nanos,
        Value::Object(fields),
    )
}

/// The record's target: `Record` has no getter for it, its Debug output
/// shows it.
fn target(record: &Record) -> String {
    let debug = format!("{record:?}");
    let start = debug.find("target: Some(\"").expect("a target") + "target: Some(\"".len();
    debug[start..][..debug[start..].find('"').unwrap()].to_owned()
}

fn resource_fields() -> serde_json::Map<String, Value> {
    json!({
        "service.name": "checkout",
        "service.instance.id": 7,
        "otel.scope.name": "checkout.payments",
        "otel.scope.version": "2.1.0",
    })
    .as_object()
    .unwrap()
    .clone()
}

#[test]
fn the_json_fixture_maps_to_these_records() {
    let export = decode(FIXTURE.as_bytes(), Encoding::Json).unwrap();
    let records = records(export);
    assert_eq!(records.len(), 3);

    let mut first = resource_fields();
    first.extend(
        json!({
            "string.attribute": "some string",
            "boolean.attribute": true,
            "int.attribute": 9_007_199_254_740_993_i64,
            "double.attribute": 637.704,
            "array.attribute": ["many", 2],
            "map.attribute": {"some.map.key": "some value"},
            "bytes.attribute": "AAEC/w==",
            "trace_id": "5b8efff798038103d269b633813fc60c",
            "span_id": "eee19b7ec3c1b174",
        })
        .as_object()
        .unwrap()
        .clone(),
    );
    assert_eq!(
        shown(&records[0]),
        (
            Level::Warn,
            "checkout".into(),
            "card declined".into(),
            1_764_756_900_123_456_789,
            Value::Object(first)
        )
    );
    assert_eq!(
        shown(&records[1]),
        (
            Level::Error,
            "checkout".into(),
            r#"{"order":42,"retry":false}"#.into(),
            1_764_756_901_000_000_000,
            Value::Object(resource_fields())
        )
    );
    assert_eq!(
        shown(&records[2]),
        (
            Level::Info,
            "otlp".into(),
            String::new(),
            1_764_756_902_000_000_000,
            json!({"severity_text": "CHATTY", "span_id": "0000000000000001"})
        )
    );
}

#[test]
fn protobuf_carries_the_same() {
    let log = LogRecord {
        time_unix_nano: 1_764_756_900_000_000_000,
        severity_number: 17,
        body: Some(AnyValue {
            value: Some(any_value::Value::ArrayValue(
                opentelemetry_proto::tonic::common::v1::ArrayValue {
                    values: vec![AnyValue {
                        value: Some(any_value::Value::DoubleValue(f64::NAN)),
                    }],
                },
            )),
        }),
        trace_id: (1..=16).collect(),
        span_id: vec![0xab; 8],
        event_name: "payment.failed".into(),
        ..LogRecord::default()
    };
    let export = ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            resource: Some(Resource {
                attributes: vec![KeyValue {
                    key: "service.name".into(),
                    value: Some(AnyValue {
                        value: Some(any_value::Value::StringValue("api".into())),
                    }),
                }],
                ..Resource::default()
            }),
            scope_logs: vec![ScopeLogs {
                scope: Some(InstrumentationScope {
                    name: "api.http".into(),
                    ..InstrumentationScope::default()
                }),
                log_records: vec![log],
                schema_url: String::new(),
            }],
            schema_url: String::new(),
        }],
    };
    let bytes = export.encode_to_vec();
    let records = records(decode(&bytes, Encoding::Protobuf).unwrap());
    assert_eq!(
        shown(&records[0]),
        (
            Level::Error,
            "api".into(),
            r#"["NaN"]"#.into(),
            1_764_756_900_000_000_000,
            json!({
                "service.name": "api",
                "otel.scope.name": "api.http",
                "otel.event_name": "payment.failed",
                "trace_id": "0102030405060708090a0b0c0d0e0f10",
                "span_id": "abababababababab",
            })
        )
    );
}

#[test]
fn malformed_bodies_are_400_naming_the_fault() {
    let bad_hex = r#"{"resourceLogs":[{"scopeLogs":[{"logRecords":[{"traceId":"zz"}]}]}]}"#;
    let err = decode(bad_hex.as_bytes(), Encoding::Json).unwrap_err();
    assert_eq!(err.status, StatusCode::BAD_REQUEST);
    assert!(err.message.contains("line 1 column"), "{}", err.message);
    let bad_int = r#"{"resourceLogs":[{"scopeLogs":[{"logRecords":[{"timeUnixNano":"soon"}]}]}]}"#;
    assert!(decode(bad_int.as_bytes(), Encoding::Json).is_err());
    let err = decode(b"\xff\xff\xff", Encoding::Protobuf).unwrap_err();
    assert!(err.message.contains("protobuf"), "{}", err.message);
    // An empty request is a valid one, with nothing in it.
    assert!(records(decode(b"{}", Encoding::Json).unwrap()).is_empty());
    assert!(records(decode(b"", Encoding::Protobuf).unwrap()).is_empty());
}

#[test]
fn severity_numbers_and_texts() {
    assert_eq!(level(1, String::new()), (Level::Trace, None));
    assert_eq!(level(8, "INFO".into()), (Level::Debug, None));
    assert_eq!(level(12, String::new()), (Level::Info, None));
    assert_eq!(level(16, String::new()), (Level::Warn, None));
    assert_eq!(level(24, String::new()), (Level::Error, None));
    assert_eq!(level(0, "Warning".into()), (Level::Warn, None));
    assert_eq!(level(0, String::new()), (Level::Info, None));
    assert_eq!(level(99, "odd".into()), (Level::Info, Some("odd".into())));
}

#[test]
fn base64_as_otlp_json_writes_bytes() {
    for (bytes, text) in [
        (&b""[..], ""),
        (b"f", "Zg=="),
        (b"fo", "Zm8="),
        (b"foo", "Zm9v"),
        (&[0, 1, 2, 255][..], "AAEC/w=="),
    ] {
        let value = to_json(any_value::Value::BytesValue(bytes.to_vec()));
        assert_eq!(value, Value::String(text.to_owned()));
    }
}

#[tokio::test]
async fn json_responses_write_int64_as_a_string() {
    let partial = ExportLogsPartialSuccess {
        rejected_log_records: 3,
        error_message: "the log sink has stopped".into(),
    };
    let response = success(Some(partial), Encoding::Json);
    let body = axum::body::to_bytes(response.into_body(), 1 << 20)
        .await
        .unwrap();
    let json: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(json["partialSuccess"]["rejectedLogRecords"], "3");
    let response = status_response(
        Rejection::new(StatusCode::SERVICE_UNAVAILABLE, "stopped"),
        Encoding::Protobuf,
    );
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(response.headers()[header::RETRY_AFTER], "5");
    let body = axum::body::to_bytes(response.into_body(), 1 << 20)
        .await
        .unwrap();
    let status = Status::decode(&body[..]).unwrap();
    assert_eq!((status.code, status.message.as_str()), (14, "stopped"));
}
