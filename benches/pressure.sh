#!/usr/bin/env bash
# Under pressure (issue 17), as a fleet of shippers and a hostile client try
# it, against the release build: a default `pglogsink serve` with its own
# private PostgreSQL in a temporary directory, then
#
#   load      load --mode ndjson --batch 1000 --concurrency 20 --duration 10
#             --verify: 200s and 503s, peak RSS (VmHWM), spool use, and how
#             long Ctrl-C takes
#   body      one OTLP protobuf body of 12.6 MB (a resource with three 4 MiB
#             attributes over 3,000 empty records; needs the OpenTelemetry
#             Python SDK of .ci/venv): the answer and peak RSS
#   halfsent  2,000 clients that send half a request head and stop: /healthz
#             meanwhile, and when the server has closed them all
#   shutdown  the load of `load` with the ledger table locked by another
#             session, then Ctrl-C: seconds to exit (--shutdown-timeout 10)
#
#   cargo build --release && benches/pressure.sh load|body|halfsent|shutdown
#
# Stops everything it started and removes its directory, also on Ctrl-C.
set -euo pipefail
SCENARIO=${1:?usage: benches/pressure.sh load|body|halfsent|shutdown}
BIN=${BIN:-$PWD/target/release/pglogsink}
PYTHON=${PYTHON:-$PWD/.ci/venv/bin/python}
PORT=${PORT:-18091}
URL=http://127.0.0.1:$PORT
[[ -x $BIN ]] || { echo "pressure: $BIN missing; run cargo build --release" >&2; exit 1; }

DIR=$(mktemp -d /tmp/pglogsink-pressure.XXXXXX)
chmod 755 "$DIR"
SERVE_PID=
cleanup() {
    [[ -n $SERVE_PID ]] && kill -INT "$SERVE_PID" 2>/dev/null && wait "$SERVE_PID" 2>/dev/null || true
    rm -rf "$DIR"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

"$BIN" serve --data-dir "$DIR/data" --listen "127.0.0.1:$PORT" >"$DIR/serve.log" 2>&1 &
SERVE_PID=$!
for _ in $(seq 1 300); do curl -fs "$URL/healthz" >/dev/null && break; sleep 0.2; done

peak() { grep VmHWM "/proc/$SERVE_PID/status" | awk '{printf "peak RSS %.1f MiB\n", $2 / 1024}'; }
metrics() { curl -s "$URL/metrics" | grep -E "^pglogsink_(records_spooled_total|records_written_total|queue_bytes|records_lost_total\{reason=\"sink_full\"\})"; }
stop() {
    local start end
    start=$(date +%s.%N)
    kill -INT "$SERVE_PID"
    wait "$SERVE_PID" || true
    end=$(date +%s.%N)
    SERVE_PID=
    echo "Ctrl-C to exit: $(echo "$end - $start" | bc) s"
    tail -1 "$DIR/serve.log"
}
load() {
    "$BIN" load --url "$URL" --mode ndjson --batch 1000 --concurrency 20 --duration "$1" \
        --data-dir "$DIR/data" "${@:2}"
}
psql_db() {
    local conf=$DIR/data/connection.conf
    PGPASSWORD=$(sed -n 's/^password=//p' "$conf") psql -h 127.0.0.1 \
        -p "$(sed -n 's/^port=//p' "$conf")" -U pglogsink pglogsink "$@"
}

case $SCENARIO in
load)
    load 10 --verify --verify-timeout 300 | grep -E "^(requests|records|verify)" || true
    metrics
    peak
    stop
    ;;
body)
    "$PYTHON" - "$DIR/body.pb" <<'PY'
import sys
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.logs.v1.logs_pb2 import ResourceLogs, ScopeLogs, LogRecord
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.common.v1.common_pb2 import KeyValue, AnyValue
attributes = [KeyValue(key="service.name", value=AnyValue(string_value="hostile"))]
attributes += [KeyValue(key=f"big{i}", value=AnyValue(string_value="x" * (4 << 20))) for i in range(3)]
records = [LogRecord() for _ in range(3000)]
body = ExportLogsServiceRequest(resource_logs=[ResourceLogs(
    resource=Resource(attributes=attributes), scope_logs=[ScopeLogs(log_records=records)])])
open(sys.argv[1], "wb").write(body.SerializeToString())
PY
    echo "body: $(stat -c %s "$DIR/body.pb") bytes"
    curl -s -o /dev/null -w "answer: HTTP %{http_code} in %{time_total} s\n" \
        -H 'Content-Type: application/x-protobuf' --data-binary @"$DIR/body.pb" "$URL/v1/logs"
    curl -s "$URL/healthz"; echo
    peak
    stop
    ;;
halfsent)
    python3 - "$PORT" <<'PY'
import selectors, socket, sys, time, urllib.request
port = int(sys.argv[1])
started = time.time()
clients = []
for _ in range(2000):
    s = socket.create_connection(("127.0.0.1", port))
    s.sendall(b"POST /ingest/ndjson HTTP/1.1\r\nHost: x\r\nContent-Ty")
    clients.append(s)
print(f"2000 half-sent requests open after {time.time() - started:.2f} s")
latency = []
for _ in range(20):
    t = time.time()
    urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz").read()
    latency.append((time.time() - t) * 1000)
    time.sleep(0.1)
latency.sort()
print(f"/healthz meanwhile: median {latency[10]:.1f} ms, slowest {latency[-1]:.1f} ms")
sel = selectors.DefaultSelector()
for s in clients:
    sel.register(s, selectors.EVENT_READ)
left = len(clients)
while left and time.time() - started < 60:
    for key, _ in sel.select(0.5):
        try:
            data = key.fileobj.recv(100)
        except OSError:
            data = b""
        if not data:
            sel.unregister(key.fileobj)
            left -= 1
print(f"{2000 - left} of 2000 closed by the server {time.time() - started:.1f} s after the first connected")
PY
    peak
    stop
    ;;
shutdown)
    load 30 >/dev/null 2>&1 &
    sleep 3
    psql_db -qc "BEGIN; LOCK TABLE log_batches IN ACCESS EXCLUSIVE MODE; SELECT pg_sleep(25); COMMIT;" >/dev/null 2>&1 &
    sleep 1.5
    metrics
    stop
    kill %1 2>/dev/null || true
    wait || true
    ;;
*)
    echo "pressure: unknown scenario $SCENARIO (load, body, halfsent, shutdown)" >&2
    exit 2
    ;;
esac
