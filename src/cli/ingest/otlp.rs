//! `POST /v1/logs`: OTLP/HTTP logs, binary protobuf or JSON, decoded with
//! the `opentelemetry-proto` crate's generated types.
//!
//! How a `LogRecord` becomes a row:
//! - level: `severity_number` (1-4 trace, 5-8 debug, 9-12 info, 13-16 warn,
//!   17-24 error); when it is 0, `severity_text` read as a level name; else
//!   info (and the text kept as the field `severity_text`).
//! - message: a string `body` as is; any other body as its JSON; no body,
//!   empty.
//! - target: the resource's `service.name` (`otlp` when it has none).
//! - timestamp: `time_unix_nano`, else `observed_time_unix_nano`, else when
//!   it was received.
//! - fields, later keys winning: the resource's attributes (so
//!   `service.name` too), `otel.scope.name` and `otel.scope.version`, the
//!   record's attributes with their JSON types, `otel.event_name`, and
//!   `trace_id` and `span_id` as lowercase hex (only when valid: 16 and 8
//!   bytes, not all zero) for `pglogsink logs --trace-id`.
//!
//! Errors are `google.rpc.Status` messages in the request's encoding, as
//! the OTLP/HTTP specification asks.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::prelude::{Engine as _, BASE64_STANDARD};
use opentelemetry_proto::tonic::collector::logs::v1::{
    ExportLogsPartialSuccess, ExportLogsServiceRequest, ExportLogsServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
use opentelemetry_proto::tonic::logs::v1::LogRecord;
use pglogsink::{Fields, Level, Record, SharedFields};
use prost::Message;
use serde_json::Value;

use super::handover::{check_records, Destination, Handover};
use super::settings::IngestState;
use super::{body, decode_cost, otlp_json};
use crate::cli::http::Rejection;
use crate::cli::trace_ids::{id_text, SPAN_ID_BYTES, TRACE_ID_BYTES};

const PROTOBUF: &str = "application/x-protobuf";
const JSON: &str = "application/json";

/// The target of records whose resource has no `service.name`.
const DEFAULT_TARGET: &str = "otlp";

/// The two encodings of OTLP/HTTP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Encoding {
    Protobuf,
    Json,
}

/// `google.rpc.Status`, the body of an OTLP/HTTP error (not among the
/// generated OTLP types).
#[derive(Clone, PartialEq, prost::Message)]
struct Status {
    #[prost(int32, tag = "1")]
    code: i32,
    #[prost(string, tag = "2")]
    message: String,
}

pub(crate) async fn export(
    State(state): State<IngestState>,
    headers: HeaderMap,
    request: Body,
) -> Response {
    let Some(encoding) = encoding_of(&headers) else {
        let media_type = body::media_type(&headers);
        return body::unsupported_media_type(&media_type, &[PROTOBUF, JSON]).into_response();
    };
    match queue_request(&state, &headers, request, encoding).await {
        Ok(response) => response,
        Err(rejection) => status_response(rejection, encoding),
    }
}

/// The encoding the request's `Content-Type` names, if it is one of OTLP's.
fn encoding_of(headers: &HeaderMap) -> Option<Encoding> {
    match body::media_type(headers).as_str() {
        PROTOBUF | "application/protobuf" => Some(Encoding::Protobuf),
        JSON => Some(Encoding::Json),
        _ => None,
    }
}

/// A refusal made before the handler runs (the API-key guard's 401), as a
/// `google.rpc.Status` in the request's encoding (JSON when it names none
/// of OTLP's).
pub(crate) fn refusal(rejection: Rejection, headers: &HeaderMap) -> Response {
    status_response(rejection, encoding_of(headers).unwrap_or(Encoding::Json))
}

async fn queue_request(
    state: &IngestState,
    headers: &HeaderMap,
    request: Body,
    encoding: Encoding,
) -> Result<Response, Rejection> {
    let compression = body::encoding(headers)?;
    let mut handover = Handover::new(state);
    let bytes = body::read(headers, request, compression, state.body, &mut handover).await?;
    let export = decode(&bytes, encoding, state.max_records, &mut handover)?;
    drop(bytes);
    handover.expect(record_count(&export));
    map_records(export, &mut handover)?;
    let queued = handover.send();
    let partial = match queued.refused {
        None => None,
        // Nothing taken: the client should retry it all, later.
        Some((_, rejection)) if queued.accepted == 0 => return Err(rejection),
        // Some taken (the sink stopped while they were being queued): say
        // which part was not, so that only that is lost rather than the
        // rest duplicated (OTLP clients do not retry a 200).
        Some((refused, rejection)) => Some(ExportLogsPartialSuccess {
            rejected_log_records: i64::try_from(refused).unwrap_or(i64::MAX),
            error_message: rejection.message,
        }),
    };
    Ok(success(partial, encoding))
}

/// The request, its decoded form's memory held first: refused with 413
/// when it has more records than the cap (for protobuf, before decoding).
fn decode(
    bytes: &[u8],
    encoding: Encoding,
    max_records: usize,
    into: &mut impl Destination,
) -> Result<ExportLogsServiceRequest, Rejection> {
    let not_otlp = |e: &dyn std::fmt::Display| {
        let form = match encoding {
            Encoding::Protobuf => "protobuf",
            Encoding::Json => "JSON",
        };
        Rejection::bad_request(format!(
            "the body is not an OTLP ExportLogsServiceRequest in {form}: {e}"
        ))
    };
    let export = match encoding {
        Encoding::Protobuf => {
            let cost = decode_cost::otlp_protobuf(bytes).map_err(|e| not_otlp(&e))?;
            check_records(cost.records, max_records)?;
            into.hold(cost.decoded_bytes)?;
            ExportLogsServiceRequest::decode(bytes).map_err(|e| not_otlp(&e))?
        }
        Encoding::Json => {
            // Twice: a body the crate does not take as is is read again
            // through a `Value` (see `otlp_json`).
            into.hold(2 * decode_cost::json(bytes).decoded_bytes)?;
            otlp_json::decode(bytes).map_err(|e| not_otlp(&e))?
        }
    };
    check_records(record_count(&export), max_records)?;
    Ok(export)
}

fn record_count(export: &ExportLogsServiceRequest) -> usize {
    export
        .resource_logs
        .iter()
        .flat_map(|r| &r.scope_logs)
        .map(|s| s.log_records.len())
        .sum()
}

/// 200 with an `ExportLogsServiceResponse` in the request's encoding.
fn success(partial: Option<ExportLogsPartialSuccess>, encoding: Encoding) -> Response {
    match encoding {
        Encoding::Protobuf => {
            let response = ExportLogsServiceResponse {
                partial_success: partial,
            };
            ([(header::CONTENT_TYPE, PROTOBUF)], response.encode_to_vec()).into_response()
        }
        // Written here rather than by the crate's serde, which writes the
        // int64 as a number where OTLP/JSON wants a string.
        Encoding::Json => {
            let body = match partial {
                None => serde_json::json!({}),
                Some(p) => serde_json::json!({ "partialSuccess": {
                    "rejectedLogRecords": p.rejected_log_records.to_string(),
                    "errorMessage": p.error_message,
                }}),
            };
            axum::Json(body).into_response()
        }
    }
}

/// An error as a `google.rpc.Status` in the request's encoding.
fn status_response(rejection: Rejection, encoding: Encoding) -> Response {
    // gRPC codes: 3 INVALID_ARGUMENT, 8 RESOURCE_EXHAUSTED, 14 UNAVAILABLE,
    // 16 UNAUTHENTICATED.
    let code = match rejection.status {
        StatusCode::SERVICE_UNAVAILABLE => 14,
        StatusCode::PAYLOAD_TOO_LARGE => 8,
        StatusCode::UNAUTHORIZED => 16,
        _ => 3,
    };
    let headers = rejection.headers();
    let mut response = match encoding {
        Encoding::Protobuf => {
            let status = Status {
                code,
                message: rejection.message,
            };
            (
                rejection.status,
                [(header::CONTENT_TYPE, HeaderValue::from_static(PROTOBUF))],
                status.encode_to_vec(),
            )
                .into_response()
        }
        Encoding::Json => (
            rejection.status,
            axum::Json(serde_json::json!({ "code": code, "message": rejection.message })),
        )
            .into_response(),
    };
    response.headers_mut().extend(headers);
    response
}

/// Every log record of the request, in order, into `into`. The fields of
/// a resource and its scope are written once and shared by its records.
fn map_records(
    export: ExportLogsServiceRequest,
    into: &mut impl Destination,
) -> Result<(), Rejection> {
    for resource_logs in export.resource_logs {
        let resource = resource_logs
            .resource
            .map(|r| attributes(r.attributes))
            .unwrap_or_default();
        let target = resource
            .iter()
            .rev()
            .find(|(k, _)| k == "service.name")
            .map_or(DEFAULT_TARGET.to_owned(), |(_, v)| match v {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            });
        for scope_logs in resource_logs.scope_logs {
            let mut shared = resource.clone();
            if let Some(scope) = scope_logs.scope {
                for (key, value) in [
                    ("otel.scope.name", scope.name),
                    ("otel.scope.version", scope.version),
                ] {
                    if !value.is_empty() {
                        shared.push(key, value);
                    }
                }
            }
            let shared = SharedFields::new(shared);
            for log in scope_logs.log_records {
                into.push(record(log, &target, &shared))?;
            }
        }
    }
    Ok(())
}

fn record(log: LogRecord, target: &str, shared: &SharedFields) -> Record {
    let mut fields = Fields::new();
    let (level, unmapped_text) = level(log.severity_number, log.severity_text);
    fields.extend(attributes(log.attributes));
    if !log.event_name.is_empty() {
        fields.push("otel.event_name", log.event_name);
    }
    if let Some(text) = unmapped_text {
        fields.push("severity_text", text);
    }
    if let Some(id) = id_text(&log.trace_id, TRACE_ID_BYTES) {
        fields.push("trace_id", id);
    }
    if let Some(id) = id_text(&log.span_id, SPAN_ID_BYTES) {
        fields.push("span_id", id);
    }
    let message = match log.body.and_then(|b| b.value) {
        None => String::new(),
        Some(any_value::Value::StringValue(text)) => text,
        Some(other) => to_json(other).to_string(),
    };
    let record = Record::new(level, message)
        .target(target.to_owned())
        .shared_fields(shared.clone())
        .fields(fields);
    let nanos = if log.time_unix_nano != 0 {
        log.time_unix_nano
    } else {
        log.observed_time_unix_nano
    };
    match nanos {
        0 => record,
        n => record.at(nanos_to_time(n)),
    }
}

fn nanos_to_time(nanos: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_nanos(nanos)
}

/// The level, and the severity text when it named none.
fn level(number: i32, text: String) -> (Level, Option<String>) {
    let by_number = match number {
        1..=4 => Some(Level::Trace),
        5..=8 => Some(Level::Debug),
        9..=12 => Some(Level::Info),
        13..=16 => Some(Level::Warn),
        17..=24 => Some(Level::Error),
        _ => None,
    };
    match (by_number, Level::from_any_logger(&text)) {
        (Some(level), _) => (level, None),
        (None, Some(level)) => (level, None),
        (None, None) if text.is_empty() => (Level::Info, None),
        (None, None) => (Level::Info, Some(text)),
    }
}

fn attributes(list: Vec<KeyValue>) -> Fields {
    list.into_iter()
        .map(|kv| (kv.key, value_to_json(kv.value)))
        .collect()
}

fn value_to_json(value: Option<AnyValue>) -> Value {
    value.and_then(|v| v.value).map_or(Value::Null, to_json)
}

/// An attribute or body value as JSON with its native type; bytes as
/// base64 (as OTLP/JSON writes them), non-finite doubles as text.
fn to_json(value: any_value::Value) -> Value {
    use any_value::Value as Any;
    match value {
        Any::StringValue(s) => Value::String(s),
        Any::BoolValue(b) => Value::Bool(b),
        Any::IntValue(i) => Value::from(i),
        Any::DoubleValue(d) => serde_json::Number::from_f64(d)
            .map_or_else(|| Value::String(d.to_string()), Value::Number),
        Any::ArrayValue(array) => Value::Array(
            array
                .values
                .into_iter()
                .map(|v| value_to_json(Some(v)))
                .collect(),
        ),
        Any::KvlistValue(list) => Value::Object(
            list.values
                .into_iter()
                .map(|kv| (kv.key, value_to_json(kv.value)))
                .collect(),
        ),
        Any::BytesValue(bytes) => Value::String(BASE64_STANDARD.encode(bytes)),
    }
}

#[cfg(test)]
#[path = "otlp_tests.rs"]
mod tests;
