//! OTLP/JSON as the specification and the protobuf JSON mapping write it:
//! the same records sent as protobuf, as canonical OTLP/JSON and as JSON in
//! the other forms the mapping allows (int64 as numbers, doubles as
//! strings, enum names, proto field names, unpadded URL-safe base64,
//! unknown fields, empty `AnyValue`s in arrays) become identical rows.

use base64::Engine as _;
use libtest_mimic::{Failed, Trial};
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{
    any_value, AnyValue, ArrayValue, InstrumentationScope, KeyValue, KeyValueList,
};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs, SeverityNumber};
use opentelemetry_proto::tonic::resource::v1::Resource;
use prost::Message;
use serde_json::{json, Value};

use crate::common::check;
use crate::ingest::{Reply, Server};
use crate::service::text;

pub fn trials() -> Vec<Trial> {
    vec![Trial::test(
        "ingest::otlp_json_in_every_form_the_spec_allows_gives_the_rows_protobuf_gives",
        json_forms_match_protobuf,
    )]
}

/// How the JSON is written.
#[derive(Clone, Copy, PartialEq)]
enum Form {
    /// As OTLP/JSON exporters write it: int64 as strings, lowerCamelCase.
    Canonical,
    /// What the mapping also allows: int64 as numbers, doubles as strings,
    /// enum names, proto field names, URL-safe base64 without padding,
    /// upper-case hex, fields no version of OTLP has.
    Alternative,
}

fn json_forms_match_protobuf() -> Result<(), Failed> {
    let mut server = Server::start(&[])?;
    let request = request();
    let records = 5;
    let post = |content_type: &str, body: &[u8]| -> Result<Reply, Failed> {
        server.post("/v1/logs", &[("content-type", content_type)], body)
    };
    let reply = post("application/x-protobuf", &request.encode_to_vec())?;
    check(reply.status == 200, || {
        format!("protobuf: {}", reply.text())
    })?;
    for form in [Form::Canonical, Form::Alternative] {
        let body = request_json(&request, form).to_string();
        let reply = post("application/json", body.as_bytes())?;
        check(reply.status == 200, || {
            format!("json: {} {}\n{body}", reply.status, reply.text())
        })?;
    }
    let out = server.stop()?;
    check(out.status.success(), || text(&out.stderr))?;
    // One COPY in flight: rows in the order the requests came.
    let rows = server.rows()?;
    check(rows.len() == 3 * records, || format!("{rows:#?}"))?;
    let (protobuf, json) = rows.split_at(records);
    for (i, json) in json.chunks(records).enumerate() {
        check(json == protobuf, || {
            format!("JSON form {i} gave\n{json:#?}\nprotobuf gave\n{protobuf:#?}")
        })?;
    }
    // What the values became, once (the mapping is otlp.rs's, shared).
    let fields = &protobuf[0].3;
    check(
        fields["nan"] == "NaN"
            && fields["inf"] == "inf"
            && fields["min"] == i64::MIN
            && fields["array"] == json!([null, 2, "NaN", null])
            && fields["map"] == json!({"empty": null, "b": "AAEC/w=="}),
        || format!("{fields:#}"),
    )
}

fn string(s: &str) -> Option<AnyValue> {
    value(any_value::Value::StringValue(s.into()))
}

fn value(v: any_value::Value) -> Option<AnyValue> {
    Some(AnyValue { value: Some(v) })
}

fn kv(key: &str, value: Option<AnyValue>) -> KeyValue {
    KeyValue {
        key: key.into(),
        value,
    }
}

/// Five records with every kind of value, empty ones among them.
fn request() -> ExportLogsServiceRequest {
    use any_value::Value as Any;
    let empty = Some(AnyValue { value: None });
    let array = Any::ArrayValue(ArrayValue {
        values: vec![
            AnyValue { value: None },
            AnyValue {
                value: Some(Any::IntValue(2)),
            },
            AnyValue {
                value: Some(Any::DoubleValue(f64::NAN)),
            },
            AnyValue { value: None },
        ],
    });
    let map = Any::KvlistValue(KeyValueList {
        values: vec![
            kv("empty", empty.clone()),
            kv("b", value(Any::BytesValue(vec![0, 1, 2, 255]))),
        ],
    });
    let base = 1_764_756_900_123_456_789_u64;
    let rich = LogRecord {
        time_unix_nano: base,
        observed_time_unix_nano: base + 5,
        severity_number: SeverityNumber::Warn2 as i32,
        severity_text: "WARN".into(),
        body: string("card declined"),
        attributes: vec![
            kv("s", string("text")),
            kv("t", value(Any::BoolValue(true))),
            kv("min", value(Any::IntValue(i64::MIN))),
            kv("big", value(Any::IntValue(9_007_199_254_740_993))),
            kv("half", value(Any::DoubleValue(2.5))),
            kv("nan", value(Any::DoubleValue(f64::NAN))),
            kv("inf", value(Any::DoubleValue(f64::INFINITY))),
            kv("neg_inf", value(Any::DoubleValue(f64::NEG_INFINITY))),
            kv("array", value(array.clone())),
            kv("map", value(map.clone())),
            kv("nothing", empty.clone()),
            kv("absent", None),
        ],
        dropped_attributes_count: 1,
        flags: 1,
        trace_id: (1..=16).collect(),
        span_id: vec![0xab; 8],
        event_name: "payment.failed".into(),
    };
    let records = vec![
        rich,
        LogRecord {
            observed_time_unix_nano: base + 1_000,
            severity_text: "error".into(),
            body: value(map),
            ..LogRecord::default()
        },
        LogRecord {
            time_unix_nano: base + 2_000,
            body: value(array),
            severity_number: SeverityNumber::Fatal as i32,
            ..LogRecord::default()
        },
        LogRecord {
            time_unix_nano: base + 3_000,
            body: empty,
            severity_text: "CHATTY".into(),
            ..LogRecord::default()
        },
        LogRecord {
            time_unix_nano: base + 4_000,
            body: value(Any::DoubleValue(-0.5)),
            ..LogRecord::default()
        },
    ];
    ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            resource: Some(Resource {
                attributes: vec![
                    kv("service.name", string("forms")),
                    kv("service.instance.id", value(Any::IntValue(7))),
                ],
                ..Resource::default()
            }),
            scope_logs: vec![ScopeLogs {
                scope: Some(InstrumentationScope {
                    name: "forms.scope".into(),
                    version: "1.0".into(),
                    ..InstrumentationScope::default()
                }),
                log_records: records,
                schema_url: "https://opentelemetry.io/schemas/1.26.0".into(),
            }],
            schema_url: String::new(),
        }],
    }
}

/// A key as the form writes it: `lowerCamelCase`, or the proto name.
fn key(form: Form, camel: &str, proto: &str) -> String {
    match form {
        Form::Canonical => camel.to_owned(),
        Form::Alternative => proto.to_owned(),
    }
}

fn int64(form: Form, n: impl ToString + Into<Value>) -> Value {
    match form {
        Form::Canonical => Value::String(n.to_string()),
        Form::Alternative => n.into(),
    }
}

fn hex(form: Form, bytes: &[u8]) -> String {
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    match form {
        Form::Canonical => hex,
        Form::Alternative => hex.to_uppercase(),
    }
}

fn request_json(request: &ExportLogsServiceRequest, form: Form) -> Value {
    let resources: Vec<Value> = request
        .resource_logs
        .iter()
        .map(|r| {
            let scopes: Vec<Value> = r
                .scope_logs
                .iter()
                .map(|s| {
                    let scope = s.scope.as_ref().map_or(
                        Value::Null,
                        |scope| json!({"name": scope.name, "version": scope.version}),
                    );
                    let records: Vec<Value> =
                        s.log_records.iter().map(|l| record_json(l, form)).collect();
                    json!({
                        "scope": scope,
                        key(form, "logRecords", "log_records"): records,
                        key(form, "schemaUrl", "schema_url"): s.schema_url,
                    })
                })
                .collect();
            let attributes = r
                .resource
                .as_ref()
                .map_or(json!([]), |res| key_values(&res.attributes, form));
            json!({
                "resource": {"attributes": attributes},
                key(form, "scopeLogs", "scope_logs"): scopes,
            })
        })
        .collect();
    let mut top = json!({ key(form, "resourceLogs", "resource_logs"): resources });
    if form == Form::Alternative {
        top["futureTopLevel"] = json!({"a": [1, 2, {"b": null}]});
    }
    top
}

fn record_json(l: &LogRecord, form: Form) -> Value {
    let severity = match form {
        Form::Canonical => json!(l.severity_number),
        Form::Alternative => SeverityNumber::try_from(l.severity_number)
            .map_or(json!(l.severity_number), |s| json!(s.as_str_name())),
    };
    let mut record = json!({
        key(form, "timeUnixNano", "time_unix_nano"): int64(form, l.time_unix_nano),
        key(form, "observedTimeUnixNano", "observed_time_unix_nano"):
            int64(form, l.observed_time_unix_nano),
        key(form, "severityNumber", "severity_number"): severity,
        key(form, "severityText", "severity_text"): l.severity_text,
        "attributes": key_values(&l.attributes, form),
        key(form, "droppedAttributesCount", "dropped_attributes_count"): l.dropped_attributes_count,
        "flags": l.flags,
        key(form, "traceId", "trace_id"): hex(form, &l.trace_id),
        key(form, "spanId", "span_id"): hex(form, &l.span_id),
        key(form, "eventName", "event_name"): l.event_name,
    });
    if let Some(body) = &l.body {
        record["body"] = any_json(body, form);
    }
    if form == Form::Alternative {
        record["futureField"] = json!({"nested": [{"x": 1}]});
    }
    record
}

fn key_values(list: &[KeyValue], form: Form) -> Value {
    Value::Array(
        list.iter()
            .map(|kv| match &kv.value {
                Some(v) => json!({"key": kv.key, "value": any_json(v, form)}),
                None => json!({"key": kv.key}),
            })
            .collect(),
    )
}

fn any_json(v: &AnyValue, form: Form) -> Value {
    use any_value::Value as Any;
    let Some(value) = &v.value else {
        return json!({});
    };
    match value {
        Any::StringValue(s) => json!({ key(form, "stringValue", "string_value"): s }),
        Any::BoolValue(b) => json!({ key(form, "boolValue", "bool_value"): b }),
        Any::IntValue(i) => json!({ key(form, "intValue", "int_value"): int64(form, *i) }),
        Any::DoubleValue(d) => {
            let written = if d.is_nan() {
                json!("NaN")
            } else if d.is_infinite() {
                json!(if *d > 0.0 { "Infinity" } else { "-Infinity" })
            } else if form == Form::Alternative {
                json!(d.to_string())
            } else {
                json!(d)
            };
            json!({ key(form, "doubleValue", "double_value"): written })
        }
        Any::ArrayValue(a) => {
            let values: Vec<Value> = a.values.iter().map(|v| any_json(v, form)).collect();
            json!({ key(form, "arrayValue", "array_value"): {"values": values} })
        }
        Any::KvlistValue(l) => {
            json!({ key(form, "kvlistValue", "kvlist_value"): {"values": key_values(&l.values, form)} })
        }
        Any::BytesValue(b) => {
            let text = match form {
                Form::Canonical => base64::engine::general_purpose::STANDARD.encode(b),
                Form::Alternative => base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b),
            };
            json!({ key(form, "bytesValue", "bytes_value"): text })
        }
    }
}
