#!/usr/bin/env bash
# What each index of the Log table costs at ingest: the same 1,000,000 rows
# (binary COPY from a file, one statement) into fresh partitioned tables that
# differ only in their indexes, ROUNDS times, rows/s each. A companion to
# `cargo bench --bench pipeline` (which measures the whole sink on the chosen
# shape against the old one).
#
#   DATABASE_URL=postgres://postgres@127.0.0.1:5432/postgres benches/table_shapes.sh
#
# Needs psql and a superuser (COPY from a server-side file); writes the file
# under the server's data directory and drops everything it made.
set -euo pipefail
: "${DATABASE_URL:?set DATABASE_URL to a superuser connection}"
ROUNDS=${ROUNDS:-3}
P=(psql "$DATABASE_URL" -X -q -v ON_ERROR_STOP=1)
FILE=$("${P[@]}" -Atc "SHOW data_directory")/pglogsink_shapes.bin

"${P[@]}" <<SQL
DO \$\$ BEGIN
  IF to_regtype('pglogsink_level') IS NULL THEN
    CREATE TYPE pglogsink_level AS ENUM ('trace', 'debug', 'info', 'warn', 'error');
  END IF;
END \$\$;
DROP TABLE IF EXISTS shapes_src;
-- Like the pipeline bench's records: a sixth with a random request id.
CREATE TABLE shapes_src AS
SELECT now() + i * interval '1 microsecond' AS "timestamp",
       (CASE WHEN i % 20 = 0 THEN 'error' WHEN i % 20 < 3 THEN 'warn'
             WHEN i % 20 < 8 THEN 'debug' ELSE 'info' END)::pglogsink_level AS level,
       'app::module'::text AS target,
       'GET /api/v1/recipes/' || i || '?include=ingredients answered 200 OK in 12.3 ms for user ' || (i * 7 % 50000) AS message,
       (1000 + i % 8)::bigint AS thread_id,
       CASE WHEN i % 6 = 1 THEN jsonb_build_object('user_id', i % 50000, 'request_id', 'req-' || md5(i::text), 'cached', i % 2 = 0)
            WHEN i % 6 = 0 THEN jsonb_build_object('status', 200, 'ms', i % 900) END AS fields
FROM generate_series(1, 1000000) i;
COPY shapes_src TO '$FILE' (FORMAT binary);
DROP TABLE shapes_src;
SQL

run() { # name, index DDL
    "${P[@]}" -c "DROP TABLE IF EXISTS shapes; DROP SEQUENCE IF EXISTS shapes_seq;
        CREATE SEQUENCE shapes_seq;
        CREATE TABLE shapes (id bigint NOT NULL DEFAULT nextval('shapes_seq'), \"timestamp\" timestamptz NOT NULL,
            level pglogsink_level NOT NULL, target text NOT NULL, message text NOT NULL, thread_id bigint, fields jsonb)
            PARTITION BY RANGE (\"timestamp\");
        CREATE TABLE shapes_default PARTITION OF shapes DEFAULT; $2" -c "CHECKPOINT"
    local start end
    start=$(date +%s.%N)
    "${P[@]}" -c "COPY shapes (\"timestamp\", level, target, message, thread_id, fields) FROM '$FILE' (FORMAT binary)"
    end=$(date +%s.%N)
    printf '%-34s %9.0f rows/s\n' "$1" "$(echo "1000000 / ($end - $start)" | bc -l)"
}

BRIN='CREATE INDEX ON shapes USING brin ("timestamp", id) WITH (pages_per_range = 32, autosummarize = on);'
WARN='CREATE INDEX ON shapes ("timestamp" DESC) WHERE level >= '"'warn'"';'
REQ='CREATE INDEX ON shapes USING hash ((fields->>'"'request_id'"')) WHERE fields ? '"'request_id'"';'
for round in $(seq "$ROUNDS"); do
    echo "round $round"
    run "no index" ""
    run "brin (timestamp)" 'CREATE INDEX ON shapes USING brin ("timestamp");'
    run "brin (timestamp) + brin (id)" 'CREATE INDEX ON shapes USING brin ("timestamp"); CREATE INDEX ON shapes USING brin (id);'
    run "brin (timestamp, id)" "$BRIN"
    run "+ warn btree" "$BRIN $WARN"
    run "+ request_id hash (the default)" "$BRIN $WARN $REQ"
    run "+ request_id btree instead" "$BRIN $WARN CREATE INDEX ON shapes ((fields->>'request_id')) WHERE fields ? 'request_id';"
    run "+ request_id BRIN bloom instead" "$BRIN $WARN CREATE INDEX ON shapes USING brin ((fields->>'request_id') text_bloom_ops) WHERE fields ? 'request_id';"
    run "old shape (pk, btree time, warn)" 'DROP TABLE shapes; CREATE TABLE shapes (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, "timestamp" timestamptz NOT NULL, level pglogsink_level NOT NULL, target text NOT NULL, message text NOT NULL, thread_id bigint, fields jsonb); CREATE INDEX ON shapes ("timestamp" DESC); CREATE INDEX ON shapes ("timestamp" DESC) WHERE level >= '"'warn'"';'

done
"${P[@]}" -c "DROP TABLE IF EXISTS shapes; DROP SEQUENCE IF EXISTS shapes_seq"
rm -f "$FILE" 2>/dev/null || echo "(remove $FILE on the server)"
