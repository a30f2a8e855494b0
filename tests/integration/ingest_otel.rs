//! A real OpenTelemetry client that nobody here wrote: the OpenTelemetry
//! Python SDK with its OTLP/HTTP (protobuf) log exporter, configured only
//! through the standard environment variables (endpoint, headers,
//! compression), sends records with attributes, a trace context and a
//! non-string body to `serve`; the rows must be exactly these.
//!
//! The SDK comes from the Python package registry into `.ci/venv` (made by
//! `.ci/run`; `PGLOGSINK_TEST_PYTHON` names another interpreter). Without
//! it the test is ignored, and says why.

use std::path::PathBuf;
use std::process::Command;

use libtest_mimic::{Failed, Trial};
use serde_json::{json, Value};

use crate::common::{check, ToolGate};
use crate::ingest::Server;
use crate::service::text;

const SCRIPT: &str = r#"
import json, logging
from opentelemetry import trace
from opentelemetry._logs import SeverityNumber
from opentelemetry.sdk._logs import LoggerProvider, LoggingHandler
from opentelemetry.sdk._logs.export import BatchLogRecordProcessor
from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider

resource = Resource({"service.name": "py-shop", "deployment.environment": "test"})
provider = LoggerProvider(resource=resource)
# Endpoint, headers and compression from OTEL_EXPORTER_OTLP_LOGS_*.
provider.add_log_record_processor(BatchLogRecordProcessor(OTLPLogExporter()))
tracer = TracerProvider(resource=resource).get_tracer("py-shop.tracer")
logger = provider.get_logger("py-shop.orders", "1.2.3")
std = logging.getLogger("py-shop.std")
std.addHandler(LoggingHandler(logger_provider=provider))
std.setLevel(logging.INFO)
with tracer.start_as_current_span("checkout") as span:
    ctx = span.get_span_context()
    logger.emit(timestamp=1764756900123456000, severity_number=SeverityNumber.WARN,
                severity_text="WARN", body="card declined",
                attributes={"order_id": 42, "amount": 12.5, "express": True, "tags": ["a", "b"]})
    logger.emit(timestamp=1764756901000000000, severity_number=SeverityNumber.ERROR,
                body={"order": 42, "reasons": ["fraud", "limit"]}, attributes={"retry": False})
    std.info("shipped %s", 42)
flushed = provider.force_flush(10000)
provider.shutdown()
print(json.dumps({"trace_id": format(ctx.trace_id, "032x"),
                  "span_id": format(ctx.span_id, "016x"), "flushed": flushed}))
"#;

pub fn trials() -> Vec<Trial> {
    let python = python();
    let sdk = ToolGate::new("ingest_otel", python.as_ref().err().cloned());
    vec![sdk.gate(Trial::test(
        "ingest_otel::the_opentelemetry_python_sdk_writes_exact_rows",
        move || sdk_sends_exact_rows(python?),
    ))]
}

/// The interpreter with the SDK, or why there is none.
fn python() -> Result<PathBuf, String> {
    let path = std::env::var_os("PGLOGSINK_TEST_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".ci/venv/bin/python"));
    let probe = Command::new(&path)
        .args([
            "-c",
            "import opentelemetry.sdk._logs, opentelemetry.exporter.otlp.proto.http._log_exporter",
        ])
        .output();
    match probe {
        Ok(out) if out.status.success() => Ok(path),
        Ok(out) => Err(format!(
            "{} cannot import the OpenTelemetry SDK ({}); .ci/run installs it with \
             `pip install opentelemetry-sdk opentelemetry-exporter-otlp-proto-http`",
            path.display(),
            text(&out.stderr).lines().last().unwrap_or("")
        )),
        Err(e) => Err(format!(
            "no Python at {} ({e}); .ci/run makes that virtual environment",
            path.display()
        )),
    }
}

fn sdk_sends_exact_rows(python: PathBuf) -> Result<(), Failed> {
    let dir = std::env::temp_dir().join(format!("pglogsink-otel-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let key = "python-sdk-key-0123456789";
    std::fs::write(dir.join("keys"), format!("{key}\n"))?;
    std::fs::write(dir.join("send.py"), SCRIPT)?;
    let keys = dir.join("keys").to_string_lossy().into_owned();
    let mut server = Server::start(&["--api-key-file", &keys])?;

    let out = Command::new(&python)
        .arg(dir.join("send.py"))
        .env(
            "OTEL_EXPORTER_OTLP_LOGS_ENDPOINT",
            format!("http://{}/v1/logs", server.addr),
        )
        .env(
            "OTEL_EXPORTER_OTLP_LOGS_HEADERS",
            format!("x-api-key={key}"),
        )
        .env("OTEL_EXPORTER_OTLP_LOGS_COMPRESSION", "gzip")
        .output()?;
    let stderr = text(&out.stderr);
    check(out.status.success(), || format!("send.py failed: {stderr}"))?;
    // The SDK only warns on a failed export; the rows below tell.
    let sent: Value = serde_json::from_str(text(&out.stdout).trim())?;
    let (trace_id, span_id) = (sent["trace_id"].clone(), sent["span_id"].clone());
    check(sent["flushed"] == true, || format!("{sent} {stderr}"))?;

    let stopped = server.stop()?;
    check(stopped.status.success(), || text(&stopped.stderr))?;
    let rows = server.rows()?;
    check(rows.len() == 3, || format!("{rows:#?}\npython: {stderr}"))?;

    let with_resource = |scope: &str, extra: Value| {
        let mut fields = json!({
            "service.name": "py-shop",
            "deployment.environment": "test",
            "otel.scope.name": scope,
        });
        let object = fields.as_object_mut().expect("an object");
        if scope == "py-shop.orders" {
            object.insert("otel.scope.version".into(), "1.2.3".into());
        }
        object.extend(extra.as_object().expect("an object").clone());
        object.insert("trace_id".into(), trace_id.clone());
        object.insert("span_id".into(), span_id.clone());
        fields
    };
    let expected = [
        (
            "warn".to_owned(),
            "py-shop".to_owned(),
            "card declined".to_owned(),
            with_resource(
                "py-shop.orders",
                json!({"order_id": 42, "amount": 12.5, "express": true, "tags": ["a", "b"]}),
            ),
            1_764_756_900_123_456,
        ),
        (
            "error".to_owned(),
            "py-shop".to_owned(),
            r#"{"order":42,"reasons":["fraud","limit"]}"#.to_owned(),
            with_resource("py-shop.orders", json!({"retry": false})),
            1_764_756_901_000_000,
        ),
    ];
    check(rows[..2] == expected, || {
        format!("rows:\n{rows:#?}\nexpected:\n{expected:#?}")
    })?;
    // The standard `logging` bridge: its code.* attributes vary by SDK
    // version; the rest is fixed.
    let (level, target, message, fields, _) = &rows[2];
    check(
        (level.as_str(), target.as_str(), message.as_str()) == ("info", "py-shop", "shipped 42")
            && fields["otel.scope.name"] == "py-shop.std"
            && fields["trace_id"] == trace_id
            && fields["span_id"] == span_id
            && fields["service.name"] == "py-shop",
        || format!("{:#?}", rows[2]),
    )?;
    check(
        trace_id.as_str().is_some_and(|t| t.len() == 32) && span_id != Value::Null,
        || format!("{sent}"),
    )?;
    let _ = std::fs::remove_dir_all(dir);
    Ok(())
}
