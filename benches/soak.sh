#!/usr/bin/env bash
# Soak: is `serve`'s memory flat under steady load when nobody scrapes
# /metrics? Starts target/release/pglogsink serve with a private cluster in a
# temporary --data-dir, drives it with `pglogsink load` for DURATION seconds,
# samples the server's RSS (VmRSS of /proc/PID/status) every INTERVAL seconds
# and never requests /metrics. Prints the samples and the growth from the
# sample at 30 s to the last one.
#
#   cargo build --release && benches/soak.sh              # 180 s
#   DURATION=300 CONCURRENCY=32 benches/soak.sh
#
# Stops everything it started (the load client, serve and with it the
# cluster) and removes the data directory, also on Ctrl-C.
set -euo pipefail
DURATION=${DURATION:-180}
CONCURRENCY=${CONCURRENCY:-32}
INTERVAL=${INTERVAL:-10}
PORT=${PORT:-18087}
BIN=${BIN:-target/release/pglogsink}
[[ -x $BIN ]] || { echo "soak: $BIN missing; run cargo build --release" >&2; exit 1; }

DIR=$(mktemp -d /tmp/pglogsink-soak.XXXXXX)
# As root the cluster runs as `postgres`, which must reach its directory.
chmod 755 "$DIR"
ADDR=127.0.0.1:$PORT
SERVE_PID=
LOAD_PID=

cleanup() {
    [[ -n $LOAD_PID ]] && kill "$LOAD_PID" 2>/dev/null && wait "$LOAD_PID" 2>/dev/null || true
    if [[ -n $SERVE_PID ]] && kill -0 "$SERVE_PID" 2>/dev/null; then
        kill -TERM "$SERVE_PID"
        wait "$SERVE_PID" 2>/dev/null || true
    fi
    rm -rf "$DIR"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

"$BIN" serve --listen "$ADDR" --data-dir "$DIR/data" 2>"$DIR/serve.log" &
SERVE_PID=$!
for _ in $(seq 300); do
    (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && break
    kill -0 "$SERVE_PID" 2>/dev/null || { echo "soak: serve exited:" >&2; tail "$DIR/serve.log" >&2; exit 1; }
    sleep 0.2
done

mb() { awk -v k="$1" 'BEGIN { printf "%.1f", k / 1024 }'; }
rss_kib() { awk '/^VmRSS:/ {print $2}' "/proc/$SERVE_PID/status"; }

"$BIN" load --url "http://$ADDR" --duration "$DURATION" --concurrency "$CONCURRENCY" \
    >"$DIR/load.out" 2>&1 &
LOAD_PID=$!
START=$SECONDS
echo "soak: serve pid $SERVE_PID, load for ${DURATION}s at concurrency $CONCURRENCY, no scrape"
printf '%6s %10s\n' "t (s)" "RSS (MB)"
AT30=
LAST=
while kill -0 "$LOAD_PID" 2>/dev/null; do
    sleep "$INTERVAL"
    kill -0 "$LOAD_PID" 2>/dev/null || break
    t=$((SECONDS - START))
    LAST=$(rss_kib)
    [[ -z $AT30 && $t -ge 30 ]] && AT30=$LAST
    printf '%6d %10.1f\n' "$t" "$(mb "$LAST")"
done
wait "$LOAD_PID" || true
LOAD_PID=
tail -n 4 "$DIR/load.out" | sed 's/^/load: /'
if [[ -n $AT30 && -n $LAST ]]; then
    printf 'soak: RSS at 30 s %.1f MB, at the end %.1f MB, growth %.1f MB\n' \
        "$(mb "$AT30")" "$(mb "$LAST")" "$(mb $((LAST - AT30)))"
fi
