#!/usr/bin/env bash
# The limits of issue 9, as an operator tries them, against the release
# build: memory while a table lock holds every COPY, memory through a long
# outage, and a spool whose disk fills up. Each scenario starts a throw-away
# PostgreSQL cluster (as the `postgres` user when run as root) in a
# temporary directory, runs `pglogsink serve` on it and drives it with
# `pglogsink load --verify`, then prints the peak RSS (VmHWM), the counters
# and the exit lines.
#
#   cargo build --release && benches/limits.sh lock       # 20 s lock, 16 MiB budget
#   benches/limits.sh outage                              # 60 s outage, 128 MiB budget
#   benches/limits.sh diskfull                            # spool on an 8 MiB tmpfs (root)
#
# Stops everything it started and removes its directory, also on Ctrl-C.
set -euo pipefail
SCENARIO=${1:?usage: benches/limits.sh lock|outage|diskfull}
BIN=${BIN:-$PWD/target/release/pglogsink}
PORT=${PORT:-18090}
PGPORT=${PGPORT:-55490}
[[ -x $BIN ]] || { echo "limits: $BIN missing; run cargo build --release" >&2; exit 1; }
PGBIN=$(dirname "$(ls /usr/lib/postgresql/*/bin/pg_ctl | tail -1)")

DIR=$(mktemp -d /tmp/pglogsink-limits.XXXXXX)
chmod 755 "$DIR"
as_pg() { if [[ $(id -u) == 0 ]]; then su postgres -c "$*"; else bash -c "$*"; fi; }
[[ $(id -u) == 0 ]] && chown postgres "$DIR"
PGCTL="$PGBIN/pg_ctl -D $DIR/pg -l $DIR/pg.log -o '-p $PGPORT -k $DIR'"
SERVE_PID=
LOAD_PID=
cleanup() {
    [[ -n $LOAD_PID ]] && kill "$LOAD_PID" 2>/dev/null || true
    [[ -n $SERVE_PID ]] && kill -TERM "$SERVE_PID" 2>/dev/null && wait "$SERVE_PID" 2>/dev/null || true
    as_pg "$PGCTL stop -m immediate" >/dev/null 2>&1 || true
    mountpoint -q "$DIR/small" 2>/dev/null && umount "$DIR/small"
    rm -rf "$DIR"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

as_pg "$PGBIN/initdb -D $DIR/pg -A trust -U postgres" >/dev/null
as_pg "$PGCTL start -w" >/dev/null
DB="postgres://postgres@127.0.0.1:$PGPORT/postgres"
ADDR=127.0.0.1:$PORT
T=limits
"$BIN" migrate --database-url "$DB" --table $T >/dev/null

serve() {
    "$BIN" serve --database-url "$DB" --table $T --listen "$ADDR" "$@" 2>"$DIR/serve.log" &
    SERVE_PID=$!
    for _ in $(seq 300); do
        (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && return
        sleep 0.1
    done
    echo "limits: serve did not start" >&2; tail "$DIR/serve.log" >&2; exit 1
}
load() {
    "$BIN" load --url "http://$ADDR" --verify --verify-timeout 300 \
        --database-url "$DB" --table $T "$@" >"$DIR/load.out" 2>&1 &
    LOAD_PID=$!
}
counters() {
    curl -s "http://$ADDR/metrics" \
        | grep -E '^pglogsink_(records_(spooled|replayed|written|lost)|full|spool_bytes)' \
        | grep -v 'lost_total.* 0$' || true
}
finish() {
    wait "$LOAD_PID" || true
    LOAD_PID=
    echo "peak RSS: $(awk '/^VmHWM:/ {printf "%.1f MB", $2 / 1024}' "/proc/$SERVE_PID/status")"
    counters
    kill -INT "$SERVE_PID"
    wait "$SERVE_PID" && echo "serve exit 0" || echo "serve exit $?"
    SERVE_PID=
    grep -E '^(requests|verify):' "$DIR/load.out" | tail -2
    grep -E 'stopped: ' "$DIR/serve.log" | tail -1
}

case $SCENARIO in
lock)
    serve --max-queue-bytes 16MiB --spool-dir "$DIR/spool"
    load --duration 30 --concurrency 32
    sleep 5
    echo "holding LOCK TABLE $T IN ACCESS EXCLUSIVE MODE for 20 s"
    "$PGBIN/psql" -q "$DB" -c "BEGIN; LOCK TABLE $T IN ACCESS EXCLUSIVE MODE; SELECT pg_sleep(20); COMMIT;" >/dev/null
    finish
    ;;
outage)
    serve --spool-dir "$DIR/spool"
    load --duration 80 --concurrency 32
    sleep 5
    as_pg "$PGCTL stop -m fast" >/dev/null
    echo "server stopped for 60 s"
    for i in 1 2 3 4 5 6; do
        sleep 10
        echo "  +${i}0 s: $(awk '/^VmRSS:/ {printf "RSS %.1f MB", $2 / 1024}' "/proc/$SERVE_PID/status"), spool $(du -sm "$DIR/spool" | cut -f1) MB"
    done
    as_pg "$PGCTL start -w" >/dev/null
    finish
    ;;
diskfull)
    mkdir "$DIR/small"
    mount -t tmpfs -o size=8m tmpfs "$DIR/small" || { echo "limits: diskfull needs root to mount a tmpfs" >&2; exit 1; }
    serve --max-queue-bytes 4MiB --spool-min-free 1MiB --spool-dir "$DIR/small/spool"
    load --duration 40 --concurrency 16
    sleep 5
    as_pg "$PGCTL stop -m fast" >/dev/null
    echo "server stopped for 20 s, spool on an 8 MiB tmpfs"
    sleep 12
    echo "readyz: $(curl -s "http://$ADDR/readyz")"
    counters
    sleep 8
    as_pg "$PGCTL start -w" >/dev/null
    finish
    ;;
*) echo "limits: unknown scenario $SCENARIO (lock, outage, diskfull)" >&2; exit 2 ;;
esac
