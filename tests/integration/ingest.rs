//! The ingest endpoints of `pglogsink serve` end to end, against a real
//! PostgreSQL: NDJSON and OTLP (JSON and protobuf, plain and gzipped) rows
//! arrive exactly; refused requests (400, 413, 415, 401) write nothing;
//! API keys reload; HTTPS with a certificate the test makes.
//!
//! Every test stops `serve` (which drains its queue) before reading the
//! table, so "nothing else was written" is checked after everything that
//! could have been written was.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use flate2::write::GzEncoder;
use libtest_mimic::{Failed, Trial};
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use opentelemetry_proto::tonic::resource::v1::Resource;
use pglogsink::TableName;
use prost::Message;
use serde_json::{json, Value};

use crate::common::{block_on, check, exit_within, fresh_table, signal, url, wait_until, Captured};
use crate::service::{free_port, text, BIN};

const FIXTURE: &str = include_str!("../fixtures/otlp_logs.json");

pub fn trials() -> Vec<Trial> {
    vec![
        Trial::test(
            "ingest::ndjson_and_otlp_rows_arrive_exactly_plain_and_gzipped",
            rows_arrive_exactly,
        ),
        Trial::test(
            "ingest::refused_requests_400_413_415_write_nothing",
            refused_requests_write_nothing,
        ),
        Trial::test(
            "ingest::api_keys_401_and_reload_on_sighup_and_on_change",
            api_keys,
        ),
        Trial::test(
            "ingest::serve_refuses_a_non_loopback_address_without_keys",
            refuses_non_loopback_without_keys,
        ),
        Trial::test(
            "ingest::https_with_keys_and_a_certificate_the_test_makes",
            https,
        ),
        Trial::test(
            "ingest::load_modes_ndjson_and_otlp_verify_every_record",
            load_modes,
        ),
        Trial::test(
            "ingest::an_upload_in_flight_when_the_sink_stops_gets_503_and_is_not_kept",
            sink_stopped_503,
        ),
        Trial::test(
            "ingest::unix_times_in_every_unit_are_stored_exactly_and_found_by_since",
            unix_times_stored_exactly,
        ),
    ]
}

/// A `pglogsink serve` of the ingest tests: its own table, no `tracing`
/// rows of its own in the table (PGLOGSINK_TABLE_FILTER=off), HTTP or
/// HTTPS.
pub(crate) struct Server {
    child: Option<Child>,
    /// Its stdout and stderr, read as they come.
    output: Option<Captured>,
    pub(crate) addr: String,
    pub(crate) table: TableName,
    spool: PathBuf,
    /// The CA to trust, for HTTPS.
    tls_root: Option<PathBuf>,
}

impl Server {
    pub(crate) fn start(extra: &[&str]) -> Result<Server, Failed> {
        Server::start_tls(extra, None)
    }

    pub(crate) fn start_tls(extra: &[&str], tls_root: Option<&Path>) -> Result<Server, Failed> {
        let addr = format!("127.0.0.1:{}", free_port()?);
        let table = fresh_table("ingest");
        let spool = std::env::temp_dir().join(format!(
            "pglogsink-ingest-spool-{}-{}",
            std::process::id(),
            table
        ));
        let mut child = Command::new(BIN)
            .args(["serve", "--listen", &addr, "--database-url", &url()?])
            .args(["--table", &table.to_string()])
            // One COPY in flight, so that rows take their ids in the order
            // they were sent and `rows` (ORDER BY id) lists them that way;
            // with two, batches written at once may take them in either.
            .args(["--copies-in-flight", "1"])
            .args(extra)
            .env_remove("DATABASE_URL")
            .env("PGLOGSINK_SPOOL_DIR", &spool)
            .env("PGLOGSINK_TABLE_FILTER", "off")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?;
        let output = Some(Captured::of(&mut child));
        let mut server = Server {
            child: Some(child),
            output,
            addr,
            table,
            spool,
            tls_root: tls_root.map(Path::to_owned),
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        while server.get("/healthz").map(|r| r.status).ok() != Some(200) {
            if let Some(Some(status)) = server.child.as_mut().map(|c| c.try_wait().ok().flatten()) {
                let out = server.stop()?;
                return Err(format!("serve exited early ({status}): {}", text(&out.stderr)).into());
            }
            check(Instant::now() < deadline, || {
                "serve did not answer /healthz within 60 s".to_owned()
            })?;
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(server)
    }

    fn connect(&self) -> Result<Box<dyn ReadWrite>, Failed> {
        let tcp = TcpStream::connect(&self.addr)?;
        tcp.set_read_timeout(Some(Duration::from_secs(10)))?;
        match &self.tls_root {
            None => Ok(Box::new(tcp)),
            Some(root) => Ok(Box::new(tls_client(tcp, root)?)),
        }
    }

    pub(crate) fn get(&self, path: &str) -> Result<Reply, Failed> {
        request(self.connect()?, "GET", path, &[], b"", false)
    }

    pub(crate) fn get_with(&self, path: &str, headers: &[(&str, &str)]) -> Result<Reply, Failed> {
        request(self.connect()?, "GET", path, headers, b"", false)
    }

    pub(crate) fn post(
        &self,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Result<Reply, Failed> {
        request(self.connect()?, "POST", path, headers, body, false)
    }

    /// With `Expect: 100-continue`: the body goes only if the server asks.
    fn post_expecting(
        &self,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Result<Reply, Failed> {
        request(self.connect()?, "POST", path, headers, body, true)
    }

    pub(crate) fn signal(&self, sig: &str) -> Result<(), Failed> {
        signal(self.child.as_ref().ok_or("not running")?.id(), sig)
    }

    /// SIGINT, then wait (at most 30 s): the queue is drained by then.
    pub(crate) fn stop(&mut self) -> Result<Output, Failed> {
        let mut child = self.child.take().ok_or("not running")?;
        let output = self.output.take().ok_or("not running")?;
        let _ = signal(child.id(), "-INT");
        if let Some(status) = exit_within(&mut child, Duration::from_secs(30))? {
            return Ok(output.collect(status));
        }
        let _ = child.kill();
        let out = output.collect(child.wait()?);
        Err(format!("serve did not stop: {}", text(&out.stderr)).into())
    }

    /// What it has written to stderr so far.
    pub(crate) fn stderr(&self) -> String {
        self.output
            .as_ref()
            .map(Captured::stderr)
            .unwrap_or_default()
    }

    /// Every row, oldest first: (level, target, message, fields, unix µs).
    pub(crate) fn rows(&self) -> Result<Vec<Row>, Failed> {
        rows(&self.table)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.spool);
    }
}

pub(crate) type Row = (String, String, String, Value, i64);

pub(crate) fn rows(table: &TableName) -> Result<Vec<Row>, Failed> {
    let mut found = Vec::new();
    block_on(async {
        let pool = crate::common::pool()?;
        let client = pool.get().await?;
        let sql = format!(
            "SELECT level::text, target, message, coalesce(fields, '{{}}'), \
             (extract(epoch FROM \"timestamp\") * 1000000)::bigint FROM {} ORDER BY id",
            table.quoted()
        );
        for r in client.query(&sql, &[]).await? {
            found.push((r.get(0), r.get(1), r.get(2), r.get(3), r.get(4)));
        }
        Ok(())
    })
    .map_err(|e| format!("reading {table}: {e:?}"))?;
    Ok(found)
}

pub(crate) trait ReadWrite: Read + Write {}
impl<T: Read + Write> ReadWrite for T {}

/// An HTTP answer.
#[derive(Debug, PartialEq)]
pub(crate) struct Reply {
    pub(crate) status: u16,
    /// The header lines, lowercased names.
    pub(crate) headers: Vec<(String, String)>,
    pub(crate) body: Vec<u8>,
}

impl Reply {
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    pub(crate) fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }

    pub(crate) fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// One HTTP/1.1 request on its own connection (`Connection: close`).
fn request(
    mut stream: Box<dyn ReadWrite>,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
    expect_continue: bool,
) -> Result<Reply, Failed> {
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\
         Content-Length: {}\r\n",
        body.len()
    );
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    if expect_continue {
        head.push_str("Expect: 100-continue\r\n");
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes())?;
    if expect_continue {
        let first = read_head(&mut stream)?;
        if first.0 != 100 {
            return finish(stream, first);
        }
    }
    stream.write_all(body)?;
    stream.flush()?;
    let head = read_head(&mut stream)?;
    finish(stream, head)
}

type Head = (u16, Vec<(String, String)>);

/// The status line and headers, read byte by byte up to the blank line.
fn read_head(stream: &mut Box<dyn ReadWrite>) -> Result<Head, Failed> {
    let mut raw = Vec::new();
    let mut byte = [0u8; 1];
    while !raw.ends_with(b"\r\n\r\n") {
        if stream.read(&mut byte)? == 0 {
            return Err(format!("the connection closed mid-answer: {:?}", text(&raw)).into());
        }
        raw.push(byte[0]);
    }
    let raw = text(&raw);
    let mut lines = raw.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("no status line in {raw:?}"))?;
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    Ok((status, headers))
}

fn finish(mut stream: Box<dyn ReadWrite>, (status, headers): Head) -> Result<Reply, Failed> {
    let length = headers
        .iter()
        .find(|(n, _)| n == "content-length")
        .and_then(|(_, v)| v.parse::<usize>().ok());
    let mut body = Vec::new();
    match length {
        Some(n) => {
            body.resize(n, 0);
            stream.read_exact(&mut body)?;
        }
        None => {
            // Until the server closes (a TLS peer may skip close_notify).
            if let Err(e) = stream.read_to_end(&mut body) {
                if e.kind() != std::io::ErrorKind::UnexpectedEof {
                    return Err(e.into());
                }
            }
        }
    }
    Ok(Reply {
        status,
        headers,
        body,
    })
}

/// A TLS client trusting only `root`, for the name `localhost`.
fn tls_client(
    tcp: TcpStream,
    root: &Path,
) -> Result<rustls::StreamOwned<rustls::ClientConnection, TcpStream>, Failed> {
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls::pki_types::CertificateDer::pem_file_iter(root)? {
        roots.add(cert?)?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connection = rustls::ClientConnection::new(Arc::new(config), "localhost".try_into()?)?;
    Ok(rustls::StreamOwned::new(connection, tcp))
}

pub(crate) fn gzip(data: &[u8]) -> Vec<u8> {
    let mut encoder = GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(data).expect("in memory");
    encoder.finish().expect("in memory")
}

const NDJSON: (&str, &str) = ("content-type", "application/x-ndjson");
const OTLP_JSON: (&str, &str) = ("content-type", "application/json");
const OTLP_PROTOBUF: (&str, &str) = ("content-type", "application/x-protobuf");
const GZIP: (&str, &str) = ("content-encoding", "gzip");

fn expect_status(reply: &Reply, status: u16, what: &str) -> Result<(), Failed> {
    check(reply.status == status, || {
        format!(
            "{what}: expected {status}, got {} {}",
            reply.status,
            reply.text()
        )
    })
}

fn row(level: &str, target: &str, message: &str, fields: Value, micros: i64) -> Row {
    (level.into(), target.into(), message.into(), fields, micros)
}

fn sorted(mut rows: Vec<Row>) -> Vec<Row> {
    rows.sort_by(|a, b| (a.4, &a.2).cmp(&(b.4, &b.2)));
    rows
}

/// The rows the OTLP JSON fixture maps to (see src/cli/ingest/otlp.rs).
fn fixture_rows() -> Vec<Row> {
    let resource = json!({
        "service.name": "checkout",
        "service.instance.id": 7,
        "otel.scope.name": "checkout.payments",
        "otel.scope.version": "2.1.0",
    });
    let mut first = resource.clone();
    first.as_object_mut().unwrap().extend(
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
    vec![
        // Microseconds: the column's precision (…123456789 ns → …123456 µs).
        row(
            "warn",
            "checkout",
            "card declined",
            first,
            1_764_756_900_123_456,
        ),
        row(
            "error",
            "checkout",
            r#"{"order":42,"retry":false}"#,
            resource,
            1_764_756_901_000_000,
        ),
        row(
            "info",
            "otlp",
            "",
            json!({"severity_text": "CHATTY", "span_id": "0000000000000001"}),
            1_764_756_902_000_000,
        ),
    ]
}

/// One OTLP protobuf record, built with the generated types.
fn protobuf_export(message: &str, nanos: u64) -> Vec<u8> {
    let string = |s: &str| {
        Some(AnyValue {
            value: Some(any_value::Value::StringValue(s.into())),
        })
    };
    ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            resource: Some(Resource {
                attributes: vec![KeyValue {
                    key: "service.name".into(),
                    value: string("proto-svc"),
                }],
                ..Resource::default()
            }),
            scope_logs: vec![ScopeLogs {
                log_records: vec![LogRecord {
                    time_unix_nano: nanos,
                    severity_number: 5,
                    body: string(message),
                    trace_id: vec![0xa1; 16],
                    ..LogRecord::default()
                }],
                ..ScopeLogs::default()
            }],
            ..ResourceLogs::default()
        }],
    }
    .encode_to_vec()
}

fn rows_arrive_exactly() -> Result<(), Failed> {
    let mut server = Server::start(&[])?;
    let ndjson = "{\"timestamp\":\"2025-12-03T10:15:00.5Z\",\"level\":\"warn\",\"message\":\"disk low\",\"target\":\"billing\",\"free_mb\":120}\n\
                  {\"timestamp\":1764756901250,\"msg\":\"pino line\",\"level\":30,\"pid\":7,\"nested\":{\"a\":[1,null]}}\n";
    let reply = server.post("/ingest/ndjson", &[NDJSON], ndjson.as_bytes())?;
    expect_status(&reply, 200, "ndjson")?;
    check(reply.json() == json!({"accepted": 2}), || reply.text())?;
    let gz = gzip(b"{\"timestamp\":1764756902,\"message\":\"gzipped line\"}\n");
    let reply = server.post("/ingest/ndjson", &[NDJSON, GZIP], &gz)?;
    expect_status(&reply, 200, "ndjson gzip")?;

    let reply = server.post("/v1/logs", &[OTLP_JSON], FIXTURE.as_bytes())?;
    expect_status(&reply, 200, "otlp json")?;
    check(reply.json() == json!({}), || reply.text())?;
    check(
        reply
            .header("content-type")
            .is_some_and(|t| t.starts_with("application/json")),
        || format!("{:?}", reply.headers),
    )?;
    let reply = server.post("/v1/logs", &[OTLP_JSON, GZIP], &gzip(FIXTURE.as_bytes()))?;
    expect_status(&reply, 200, "otlp json gzip")?;
    let proto = protobuf_export("from protobuf", 1_764_756_903_000_001_000);
    let reply = server.post("/v1/logs", &[OTLP_PROTOBUF, GZIP], &gzip(&proto))?;
    expect_status(&reply, 200, "otlp protobuf gzip")?;
    check(
        reply.header("content-type") == Some("application/x-protobuf") && reply.body.is_empty(),
        || format!("an empty ExportLogsServiceResponse expected: {reply:?}"),
    )?;

    let out = server.stop()?;
    check(out.status.success(), || text(&out.stderr))?;
    let mut expected = vec![
        row(
            "warn",
            "billing",
            "disk low",
            json!({"free_mb": 120}),
            1_764_756_900_500_000,
        ),
        row(
            "info",
            "ndjson",
            "pino line",
            json!({"pid": 7, "nested": {"a": [1, null]}}),
            1_764_756_901_250_000,
        ),
        row(
            "info",
            "ndjson",
            "gzipped line",
            json!({}),
            1_764_756_902_000_000,
        ),
        row(
            "debug",
            "proto-svc",
            "from protobuf",
            json!({"service.name": "proto-svc", "trace_id": "a1".repeat(16)}),
            1_764_756_903_000_001,
        ),
    ];
    expected.extend(fixture_rows());
    expected.extend(fixture_rows());
    let found = server.rows()?;
    check(sorted(found.clone()) == sorted(expected.clone()), || {
        format!("rows:\n{found:#?}\nexpected:\n{expected:#?}")
    })?;
    logs_finds_a_trace(&server.table)
}

/// `logs --trace-id` (any case) finds the fixture's traced record, sent
/// twice, and nothing else; an id that is not one is refused at start.
fn logs_finds_a_trace(table: &TableName) -> Result<(), Failed> {
    let db = url()?;
    let table = table.to_string();
    let logs = |id: &str| {
        Command::new(BIN)
            .args(["logs", "--database-url", &db, "--table", &table, "--json"])
            .args(["--trace-id", id])
            .env_remove("DATABASE_URL")
            .output()
    };
    let out = logs("5B8EFFF798038103D269B633813FC60C")?;
    let shown: Vec<Value> = text(&out.stdout)
        .lines()
        .map(serde_json::from_str)
        .collect::<Result<_, _>>()?;
    check(
        out.status.success()
            && shown.len() == 2
            && shown.iter().all(|r| {
                r["message"] == "card declined"
                    && r["fields"]["trace_id"] == "5b8efff798038103d269b633813fc60c"
            }),
        || format!("{shown:#?} {}", text(&out.stderr)),
    )?;
    let out = logs("not-a-trace")?;
    check(
        !out.status.success() && text(&out.stderr).contains("32 hex digits"),
        || text(&out.stderr),
    )
}

fn refused_requests_write_nothing() -> Result<(), Failed> {
    let max = 256 * 1024;
    let mut server = Server::start(&["--max-body-bytes", "256KiB"])?;

    // 400: one bad line refuses the body, good lines included.
    let body = "{\"message\":\"refused good line\"}\nnot json\n{\"message\":\"refused too\",\"level\":\"loud\"}\n";
    let reply = server.post("/ingest/ndjson", &[NDJSON], body.as_bytes())?;
    expect_status(&reply, 400, "bad ndjson")?;
    let lines = reply.json()["lines"].clone();
    check(
        lines[0]["line"] == 2
            && lines[1]["line"] == 3
            && lines[1]["error"]
                .as_str()
                .is_some_and(|e| e.contains("\"level\"")),
        || reply.text(),
    )?;
    // 400: OTLP JSON with a bad span id: the field is named, in a
    // google.rpc.Status in JSON.
    let bad = FIXTURE.replace("eee19b7ec3c1b174", "not-hex");
    let reply = server.post("/v1/logs", &[OTLP_JSON], bad.as_bytes())?;
    expect_status(&reply, 400, "bad otlp json")?;
    let status = reply.json();
    check(
        status["code"] == 3
            && status["message"]
                .as_str()
                .is_some_and(|m| m.contains("resourceLogs[0].scopeLogs[0].logRecords[0].spanId")),
        || reply.text(),
    )?;
    // 400: protobuf that is not an ExportLogsServiceRequest.
    let reply = server.post("/v1/logs", &[OTLP_PROTOBUF], b"\x0a\xff\xff\xff\xff")?;
    expect_status(&reply, 400, "bad protobuf")?;
    check(
        reply.header("content-type") == Some("application/x-protobuf"),
        || format!("{:?}", reply.headers),
    )?;
    // 400: says gzip, is not.
    let reply = server.post(
        "/ingest/ndjson",
        &[NDJSON, GZIP],
        b"{\"message\":\"refused not gzip\"}\n",
    )?;
    expect_status(&reply, 400, "not gzip")?;

    // 413 by Content-Length, before the body is sent.
    let line = "{\"message\":\"refused too large\"}\n";
    let big = line.repeat(max / line.len() + 1);
    let reply = server.post_expecting("/ingest/ndjson", &[NDJSON], big.as_bytes())?;
    expect_status(&reply, 413, "too large")?;
    // 413 after decompression: 64 MiB of lines in well under the cap,
    // refused once 256 KiB are out.
    let bomb = gzip(&line.repeat((64 << 20) / line.len()).into_bytes());
    check(bomb.len() < max, || format!("bomb of {} bytes", bomb.len()))?;
    let reply = server.post("/ingest/ndjson", &[NDJSON, GZIP], &bomb)?;
    expect_status(&reply, 413, "gzip bomb")?;
    check(reply.text().contains("decompressed"), || reply.text())?;
    let reply = server.post("/v1/logs", &[OTLP_JSON, GZIP], &bomb)?;
    expect_status(&reply, 413, "gzip bomb to otlp")?;

    // 415: media type and encoding.
    let good = b"{\"message\":\"refused media type\"}\n";
    let reply = server.post("/ingest/ndjson", &[("content-type", "text/plain")], good)?;
    expect_status(&reply, 415, "text/plain")?;
    check(reply.text().contains("application/x-ndjson"), || {
        reply.text()
    })?;
    let reply = server.post("/v1/logs", &[("content-type", "application/xml")], good)?;
    expect_status(&reply, 415, "xml to otlp")?;
    let reply = server.post(
        "/ingest/ndjson",
        &[NDJSON, ("content-encoding", "br")],
        good,
    )?;
    expect_status(&reply, 415, "brotli")?;

    // The one request that is taken.
    let reply = server.post(
        "/ingest/ndjson",
        &[NDJSON],
        b"{\"message\":\"taken\",\"timestamp\":1764756900}\n",
    )?;
    expect_status(&reply, 200, "good")?;
    let out = server.stop()?;
    check(out.status.success(), || text(&out.stderr))?;
    let found = server.rows()?;
    check(
        found
            == [row(
                "info",
                "ndjson",
                "taken",
                json!({}),
                1_764_756_900_000_000,
            )],
        || format!("{found:#?}"),
    )
}

/// `google.rpc.Status`, the body of an OTLP/HTTP error.
#[derive(Clone, PartialEq, prost::Message)]
struct RpcStatus {
    #[prost(int32, tag = "1")]
    code: i32,
    #[prost(string, tag = "2")]
    message: String,
}

fn api_keys() -> Result<(), Failed> {
    let dir = scratch_dir("keys")?;
    let file = dir.join("keys");
    let (first, second) = ("first-key-0123456789abcdef", "second-key-0123456789abcdef");
    let (third, fourth) = ("third-key-0123456789abcdef", "fourth-key-0123456789abcdef");
    // The second key stored hashed: `printf %s second-key-... | sha256sum`.
    let hashed = sha256_hex(second.as_bytes());
    std::fs::write(&file, format!("# test keys\n{first}\nsha256:{hashed}\n"))?;
    let file_arg = file.to_string_lossy().into_owned();
    let mut server = Server::start(&["--api-key-file", &file_arg])?;
    let line = |m: &str| format!("{{\"message\":\"{m}\"}}\n");
    let send = |server: &Server, auth: Option<(&str, String)>, message: &str| {
        let mut headers = vec![NDJSON];
        let owned;
        if let Some((name, value)) = auth {
            owned = value;
            headers.push((name, owned.as_str()));
        }
        server.post("/ingest/ndjson", &headers, line(message).as_bytes())
    };
    let bearer = |key: &str| Some(("authorization", format!("Bearer {key}")));
    let x_api_key = |key: &str| Some(("x-api-key", key.to_owned()));

    let reply = send(&server, None, "refused no key")?;
    expect_status(&reply, 401, "no key")?;
    check(reply.header("www-authenticate").is_some(), || {
        format!("{:?}", reply.headers)
    })?;
    expect_status(
        &send(
            &server,
            bearer("wrong-key-0123456789abcdef"),
            "refused wrong",
        )?,
        401,
        "wrong key",
    )?;
    // OTLP's 401 comes in the request's encoding, as every OTLP answer.
    let reply = server.post("/v1/logs", &[OTLP_JSON], FIXTURE.as_bytes())?;
    expect_status(&reply, 401, "otlp json without key")?;
    check(
        reply.json()["code"] == 16 && reply.header("www-authenticate").is_some(),
        || format!("{:?} {}", reply.headers, reply.text()),
    )?;
    let proto = protobuf_export("refused without key", 1_764_756_900_000_000_000);
    let reply = server.post("/v1/logs", &[OTLP_PROTOBUF], &proto)?;
    expect_status(&reply, 401, "otlp protobuf without key")?;
    let status = RpcStatus::decode(&reply.body[..]);
    check(
        reply.header("content-type") == Some("application/x-protobuf")
            && status
                .as_ref()
                .is_ok_and(|s| s.code == 16 && s.message.contains("API key")),
        || format!("{:?} {status:?}", reply.headers),
    )?;
    expect_status(&server.get("/healthz")?, 200, "probes need no key")?;
    // The viewer takes the same keys; a browser is asked with Basic auth.
    for path in ["/", "/api/logs?limit=1"] {
        let reply = server.get(path)?;
        expect_status(&reply, 401, "viewer without a key")?;
        check(
            reply
                .header("www-authenticate")
                .is_some_and(|c| c.starts_with("Basic")),
            || format!("{path}: {:?}", reply.headers),
        )?;
    }
    // "anyone:first-key-0123456789abcdef", as a browser sends it.
    let basic = "Basic YW55b25lOmZpcnN0LWtleS0wMTIzNDU2Nzg5YWJjZGVm";
    expect_status(
        &server.get_with("/", &[("authorization", basic)])?,
        200,
        "viewer page with the key as a Basic password",
    )?;
    expect_status(
        &server.get_with("/api/logs?limit=1", &[("x-api-key", first)])?,
        200,
        "viewer API with X-Api-Key",
    )?;
    expect_status(&send(&server, bearer(first), "taken first")?, 200, "first")?;
    expect_status(
        &send(&server, x_api_key(second), "taken second")?,
        200,
        "hashed second",
    )?;

    // SIGHUP: the third key replaces both.
    std::fs::write(&file, format!("{third}\n"))?;
    server.signal("-HUP")?;
    wait_until(
        "the third key after SIGHUP",
        Duration::from_secs(10),
        || Ok(send(&server, bearer(third), "taken third")?.status == 200),
    )?;
    expect_status(
        &send(&server, bearer(first), "refused first")?,
        401,
        "first after reload",
    )?;
    // A change of the file alone (no signal): noticed within seconds.
    std::fs::write(&file, format!("{fourth}\n# a longer file\n"))?;
    wait_until(
        "the fourth key after the file changed",
        Duration::from_secs(10),
        || Ok(send(&server, x_api_key(fourth), "taken fourth")?.status == 200),
    )?;
    // A broken file keeps the keys in force: once serve has read it (its
    // warning is the signal), the key in force still works.
    std::fs::write(&file, "short\n")?;
    server.signal("-HUP")?;
    wait_until(
        "the warning about the broken key file",
        Duration::from_secs(10),
        || {
            Ok(server
                .stderr()
                .contains("the keys loaded before stay in force"))
        },
    )?;
    expect_status(
        &send(&server, x_api_key(fourth), "taken fourth again")?,
        200,
        "fourth after a bad file",
    )?;

    let out = server.stop()?;
    let stderr = text(&out.stderr);
    check(out.status.success(), || stderr.clone())?;
    check(stderr.contains("API keys reloaded"), || stderr.clone())?;
    for key in [first, second, third, fourth, "short"] {
        check(!stderr.contains(key), || {
            format!("a key in stderr: {stderr}")
        })?;
    }
    let messages: Vec<String> = server.rows()?.into_iter().map(|r| r.2).collect();
    check(
        messages.iter().all(|m| m.starts_with("taken"))
            && messages.contains(&"taken first".to_owned())
            && messages.contains(&"taken second".to_owned())
            && messages.contains(&"taken fourth again".to_owned()),
        || format!("{messages:?}"),
    )?;
    let _ = std::fs::remove_dir_all(dir);
    Ok(())
}

fn refuses_non_loopback_without_keys() -> Result<(), Failed> {
    let out = Command::new(BIN)
        .args(["serve", "--listen", "0.0.0.0:9", "--database-url", &url()?])
        .env_remove("DATABASE_URL")
        .output()?;
    let stderr = text(&out.stderr);
    check(
        !out.status.success()
            && stderr.contains("refusing to listen on 0.0.0.0:9 without API keys")
            && stderr.contains("--api-key-file"),
        || format!("{:?}: {stderr}", out.status),
    )?;
    let out = Command::new(BIN)
        .args(["serve", "--tls-cert", "/nonexistent.pem"])
        .env_remove("DATABASE_URL")
        .output()?;
    check(
        !out.status.success() && text(&out.stderr).contains("--tls-key"),
        || text(&out.stderr),
    )
}

fn https() -> Result<(), Failed> {
    let dir = scratch_dir("https")?;
    crate::tls::make_certificates(&dir)?;
    let key = "https-key-0123456789abcdef";
    std::fs::write(dir.join("keys"), format!("{key}\n"))?;
    let arg = |name: &str| dir.join(name).to_string_lossy().into_owned();
    let (cert, private, keys) = (arg("server.crt"), arg("server.key"), arg("keys"));
    let mut server = Server::start_tls(
        &[
            "--tls-cert",
            &cert,
            "--tls-key",
            &private,
            "--api-key-file",
            &keys,
        ],
        Some(&dir.join("ca.crt")),
    )?;
    let auth = format!("Bearer {key}");
    let reply = server.post(
        "/ingest/ndjson",
        &[NDJSON, ("authorization", &auth)],
        b"{\"message\":\"over https\",\"timestamp\":1764756900}\n",
    )?;
    expect_status(&reply, 200, "https ndjson")?;
    let reply = server.post(
        "/v1/logs",
        &[OTLP_PROTOBUF, ("x-api-key", key)],
        &protobuf_export("otlp over https", 1_764_756_901_000_000_000),
    )?;
    expect_status(&reply, 200, "https otlp")?;
    // Plain HTTP to the TLS port gets no HTTP answer.
    let mut plain = TcpStream::connect(&server.addr)?;
    plain.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(plain, "GET /healthz HTTP/1.0\r\n\r\n")?;
    let mut answer = Vec::new();
    let _ = plain.read_to_end(&mut answer);
    check(!answer.starts_with(b"HTTP/"), || text(&answer))?;
    // A client that trusts another CA refuses the server.
    let other = TcpStream::connect(&server.addr)?;
    other.set_read_timeout(Some(Duration::from_secs(10)))?;
    let untrusting = tls_client(other, &dir.join("other-ca.crt"))?;
    let refused = request(Box::new(untrusting), "GET", "/healthz", &[], b"", false);
    check(refused.is_err(), || format!("{refused:?}"))?;

    let out = server.stop()?;
    check(out.status.success(), || text(&out.stderr))?;
    check(text(&out.stderr).contains("listening on https://"), || {
        text(&out.stderr)
    })?;
    let found = sorted(server.rows()?);
    let expected = vec![
        row(
            "info",
            "ndjson",
            "over https",
            json!({}),
            1_764_756_900_000_000,
        ),
        row(
            "debug",
            "proto-svc",
            "otlp over https",
            json!({"service.name": "proto-svc", "trace_id": "a1".repeat(16)}),
            1_764_756_901_000_000,
        ),
    ];
    check(found == expected, || format!("{found:#?}"))?;
    let _ = std::fs::remove_dir_all(dir);
    Ok(())
}

fn scratch_dir(name: &str) -> Result<PathBuf, Failed> {
    let dir = std::env::temp_dir().join(format!(
        "pglogsink-ingest-{name}-{}-{}",
        std::process::id(),
        free_port()?
    ));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

fn sha256_hex(bytes: &[u8]) -> String {
    ring::digest::digest(&ring::digest::SHA256, bytes)
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn load_modes() -> Result<(), Failed> {
    let mut server = Server::start(&[])?;
    let (db, table) = (url()?, server.table.to_string());
    for mode in ["ndjson", "otlp"] {
        let out = Command::new(BIN)
            .args(["load", "--url", &format!("http://{}", server.addr)])
            .args(["--mode", mode, "--batch", "250", "--requests", "40"])
            .args(["--concurrency", "4", "--verify"])
            .args(["--database-url", &db, "--table", &table])
            .env_remove("DATABASE_URL")
            .output()?;
        let stdout = text(&out.stdout);
        check(
            out.status.success()
                && stdout.contains("40 ok")
                && stdout.contains("records:     10000 in 40 requests of 250")
                && stdout.contains("10000 of 10000 rows"),
            || format!("{mode}: {stdout}{}", text(&out.stderr)),
        )?;
    }
    let out = server.stop()?;
    check(out.status.success(), || text(&out.stderr))?;
    let rows = server.rows()?;
    let targets = |t: &str| rows.iter().filter(|r| r.1 == t).count();
    check(rows.len() == 20_000 && targets("load") == 20_000, || {
        format!("{} rows", rows.len())
    })
}

/// The sink stops on a fatal error (its table dropped) while a body is
/// still arriving: the HTTP server finishes that request, which gets 503
/// with Retry-After, and its records are neither written nor spooled (the
/// record that was acknowledged before the stop is spooled).
fn sink_stopped_503() -> Result<(), Failed> {
    let mut server = Server::start(&["--shutdown-timeout", "20"])?;
    let body = b"{\"message\":\"refused-503 first\"}\n{\"message\":\"refused-503 second\"}\n";
    let mut slow = TcpStream::connect(&server.addr)?;
    slow.set_read_timeout(Some(Duration::from_secs(20)))?;
    write!(
        slow,
        "POST /ingest/ndjson HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\
         Content-Type: application/x-ndjson\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )?;
    slow.write_all(&body[..10])?;

    let table = server.table.clone();
    block_on(async move {
        let pool = crate::common::pool()?;
        let sql = format!("DROP TABLE {}", table.quoted());
        pool.get().await?.batch_execute(&sql).await?;
        Ok(())
    })?;
    let reply = server.post(
        "/ingest/ndjson",
        &[NDJSON],
        b"{\"message\":\"acknowledged-trigger\"}\n",
    )?;
    expect_status(&reply, 200, "the record whose COPY finds no table")?;
    // The fatal stop closes the listener once the sink has stopped.
    wait_until("the listener closed", Duration::from_secs(10), || {
        Ok(TcpStream::connect(&server.addr).is_err())
    })?;

    slow.write_all(&body[10..])?;
    let reply = finish_reading(Box::new(slow))?;
    expect_status(&reply, 503, "an upload in flight at the stop")?;
    check(reply.header("retry-after") == Some("5"), || {
        format!("{:?}", reply.headers)
    })?;
    check(
        reply.json()["accepted"] == 0 && reply.json()["refused"] == 2,
        || reply.text(),
    )?;
    let out = server.stop()?;
    check(
        !out.status.success() && text(&out.stderr).contains("fatal"),
        || text(&out.stderr),
    )?;
    let mut spooled = Vec::new();
    for entry in std::fs::read_dir(&server.spool)? {
        let path = entry?.path();
        if path.is_file() {
            spooled.extend(std::fs::read(path)?);
        }
    }
    let holds = |needle: &[u8]| spooled.windows(needle.len()).any(|w| w == needle);
    check(holds(b"acknowledged-trigger"), || {
        "the acknowledged record is not in the spool".to_owned()
    })?;
    check(!holds(b"refused-503"), || {
        "a record answered with 503 was spooled".to_owned()
    })
}

/// The answer on a connection whose request is already sent.
fn finish_reading(mut stream: Box<dyn ReadWrite>) -> Result<Reply, Failed> {
    let head = read_head(&mut stream)?;
    finish(stream, head)
}

/// xorshift64*: reproducible random values without a dependency.
fn next_random(state: &mut u64) -> u64 {
    *state ^= *state >> 12;
    *state ^= *state << 25;
    *state ^= *state >> 27;
    state.wrapping_mul(0x2545_F491_4F6C_DD1D)
}

/// NDJSON Unix times in ms, in seconds with six decimals, in µs and in ns
/// are stored to the exact microsecond their integer reference says (the
/// issue: half of them came out 1 µs early through a double), a time past
/// what can be stored is a 400 naming its line, and `/api/logs?since=` at a
/// millisecond finds the row stamped with it.
fn unix_times_stored_exactly() -> Result<(), Failed> {
    let mut server = Server::start(&[])?;
    let mut body = String::from(
        "{\"timestamp\":1767225600123,\"message\":\"stamped in ms\"}\n\
         {\"timestamp\":1767225600123456789,\"message\":\"stamped in ns\"}\n",
    );
    let mut expected = vec![
        ("stamped in ms".to_owned(), 1_767_225_600_123_000_i64),
        ("stamped in ns".to_owned(), 1_767_225_600_123_456),
    ];
    let mut state = 0x2545_F491_4F6C_DD1D_u64;
    for i in 0..2_000 {
        // A microsecond between 2001 and 2033, written four ways in turn.
        let micros =
            1_000_000_000_000_000 + (next_random(&mut state) % 1_000_000_000_000_000) as i64;
        let (text, stored) = match i % 4 {
            0 => (format!("{}", micros / 1_000), micros / 1_000 * 1_000),
            1 => (
                format!("{}.{:06}", micros / 1_000_000, micros % 1_000_000),
                micros,
            ),
            2 => (format!("{micros}"), micros),
            _ => (format!("{micros}{:03}", i % 1_000), micros),
        };
        body.push_str(&format!(
            "{{\"timestamp\":{text},\"message\":\"random {i}\"}}\n"
        ));
        expected.push((format!("random {i}"), stored));
    }
    let reply = server.post("/ingest/ndjson", &[NDJSON], body.as_bytes())?;
    expect_status(&reply, 200, "unix times")?;
    // Past what can be stored: refused with the line, never clamped.
    let reply = server.post(
        "/ingest/ndjson",
        &[NDJSON],
        b"{\"message\":\"fine\"}\n{\"message\":\"x\",\"timestamp\":1e30}\n",
    )?;
    expect_status(&reply, 400, "a time past what can be stored")?;
    check(
        reply.json()["lines"][0]["line"] == 2
            && reply.json()["lines"][0]["error"]
                .as_str()
                .is_some_and(|e| e.contains("latest time that can be stored")),
        || reply.text(),
    )?;
    // The viewer's API finds the millisecond row from its millisecond on.
    let path = "/api/logs?since=2026-01-01T00:00:00.123Z&until=2026-01-01T00:00:00.124Z";
    wait_until("both rows stamped at .123", Duration::from_secs(10), || {
        let reply = server.get(path)?;
        Ok(reply.status == 200
            && reply.json()["rows"]
                .as_array()
                .is_some_and(|r| r.len() == 2))
    })
    .map_err(|e| format!("{path} did not list both rows stamped at .123: {e:?}"))?;
    let out = server.stop()?;
    check(out.status.success(), || text(&out.stderr))?;
    let found: Vec<(String, i64)> = server.rows()?.into_iter().map(|r| (r.2, r.4)).collect();
    let wrong: Vec<_> = expected
        .iter()
        .filter(|e| !found.contains(e))
        .take(5)
        .collect();
    check(found.len() == expected.len() && wrong.is_empty(), || {
        format!(
            "{} rows; not stored as expected (first 5): {wrong:?}",
            found.len()
        )
    })
}
