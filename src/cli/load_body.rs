//! What one `pglogsink load` request sends, by `--mode`: the demo's
//! `GET /recipes/<n>` (one row each), or a batch of `--batch` records to
//! an ingest endpoint (`POST /ingest/ndjson`, or `POST /v1/logs` in OTLP
//! protobuf, as the OpenTelemetry SDKs send by default).
//!
//! The batch body is built once per run and shared by every request (a
//! `Bytes` clone), so that the client spends its CPU on sending rather
//! than on encoding: on a machine shared with the server that matters.
//! Every record carries the run id as the field `run_id`, which
//! `--verify` counts.

use bytes::Bytes;
use http_body_util::Full;
use hyper::{header, Method, Request};
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use opentelemetry_proto::tonic::resource::v1::Resource;
use prost::Message;

/// `--mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum LoadMode {
    /// GET /recipes/<n>: the demo handler writes one row per request.
    Recipes,
    /// POST /ingest/ndjson with --batch JSON lines per request.
    Ndjson,
    /// POST /v1/logs with --batch records per request, OTLP protobuf.
    Otlp,
}

/// The requests of one run.
#[derive(Debug)]
pub(crate) struct Payload {
    mode: LoadMode,
    body: Bytes,
    /// Rows one successful request writes.
    pub(crate) records: u64,
}

impl Payload {
    pub(crate) fn new(mode: LoadMode, batch: usize, run_id: &str) -> Payload {
        let (body, records) = match mode {
            LoadMode::Recipes => (Bytes::new(), 1),
            LoadMode::Ndjson => (ndjson(batch, run_id), batch),
            LoadMode::Otlp => (otlp(batch, run_id), batch),
        };
        Payload {
            mode,
            body,
            records: records as u64,
        }
    }

    /// Request `n` (from 1) to the server at `authority` under `prefix`.
    pub(crate) fn request(
        &self,
        prefix: &str,
        authority: &str,
        n: u64,
        run_id: &str,
    ) -> Result<Request<Full<Bytes>>, hyper::http::Error> {
        let (method, path, content_type) = match self.mode {
            LoadMode::Recipes => (Method::GET, format!("{prefix}/recipes/{n}"), None),
            LoadMode::Ndjson => (
                Method::POST,
                format!("{prefix}/ingest/ndjson"),
                Some("application/x-ndjson"),
            ),
            LoadMode::Otlp => (
                Method::POST,
                format!("{prefix}/v1/logs"),
                Some("application/x-protobuf"),
            ),
        };
        let mut request = Request::builder()
            .method(method)
            .uri(path)
            .header(header::HOST, authority)
            .header("x-run-id", run_id);
        if let Some(content_type) = content_type {
            request = request.header(header::CONTENT_TYPE, content_type);
        }
        request.body(Full::new(self.body.clone()))
    }
}

fn ndjson(batch: usize, run_id: &str) -> Bytes {
    let mut body = String::with_capacity(batch * 96);
    for i in 0..batch {
        let line = serde_json::json!({
            "level": "info",
            "target": "load",
            "message": format!("load record {i}"),
            "run_id": run_id,
            "n": i,
        });
        body.push_str(&line.to_string());
        body.push('\n');
    }
    Bytes::from(body)
}

fn otlp(batch: usize, run_id: &str) -> Bytes {
    let value = |v: any_value::Value| Some(AnyValue { value: Some(v) });
    let attribute = |key: &str, v: any_value::Value| KeyValue {
        key: key.to_owned(),
        value: value(v),
    };
    let records = (0..batch)
        .map(|i| LogRecord {
            severity_number: 9,
            body: value(any_value::Value::StringValue(format!("load record {i}"))),
            attributes: vec![
                attribute("run_id", any_value::Value::StringValue(run_id.to_owned())),
                attribute("n", any_value::Value::IntValue(i as i64)),
            ],
            ..LogRecord::default()
        })
        .collect();
    let request = ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            resource: Some(Resource {
                attributes: vec![attribute(
                    "service.name",
                    any_value::Value::StringValue("load".to_owned()),
                )],
                ..Resource::default()
            }),
            scope_logs: vec![ScopeLogs {
                log_records: records,
                ..ScopeLogs::default()
            }],
            ..ResourceLogs::default()
        }],
    };
    Bytes::from(request.encode_to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_mode_sends_what_its_endpoint_takes() {
        let recipes = Payload::new(LoadMode::Recipes, 1000, "r1");
        assert_eq!(recipes.records, 1);
        let request = recipes.request("/p", "h:1", 7, "r1").unwrap();
        assert_eq!(
            (request.method(), request.uri().path()),
            (&Method::GET, "/p/recipes/7")
        );

        let ndjson = Payload::new(LoadMode::Ndjson, 3, "r1");
        assert_eq!(ndjson.records, 3);
        let lines: Vec<serde_json::Value> = std::str::from_utf8(&ndjson.body)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 3);
        assert_eq!(lines[2]["run_id"], "r1");
        let request = ndjson.request("", "h:1", 1, "r1").unwrap();
        assert_eq!(request.uri().path(), "/ingest/ndjson");
        assert_eq!(
            request.headers()[header::CONTENT_TYPE],
            "application/x-ndjson"
        );

        let otlp = Payload::new(LoadMode::Otlp, 2, "r1");
        let decoded = ExportLogsServiceRequest::decode(&otlp.body[..]).unwrap();
        let logs = &decoded.resource_logs[0].scope_logs[0].log_records;
        assert_eq!(logs.len(), 2);
        assert_eq!(logs[1].attributes[0].key, "run_id");
        let request = otlp.request("", "h:1", 1, "r1").unwrap();
        assert_eq!(request.uri().path(), "/v1/logs");
    }
}
