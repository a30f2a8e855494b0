-- pglogsink: the Log table. Idempotent: running it again changes nothing.
--
-- `pglogsink migrate` (and `pglogsink serve` at start) run this file with the
-- setting pglogsink.table set from --table. To apply it by hand:
--
--   psql "$DATABASE_URL" -f sql/schema.sql                                   -- table "log"
--   PGOPTIONS='-c pglogsink.table=audit.app_log' psql "$DATABASE_URL" -f sql/schema.sql
--
-- Columns:
--   id          identity, in insertion order
--   "timestamp" when log() was called (not when the row was written)
--   level       pglogsink_level enum: trace < debug < info < warn < error, so
--               `WHERE level >= 'warn'` works and a plain SELECT shows the name
--   target      the component that logged (module path, "http"...)
--   message     the message; NUL bytes arrive as U+FFFD
--   thread_id   OS thread id of the producer
--   fields      structured fields as a jsonb object, NULL when there are none
--
-- Beside it (names cut to 63 bytes):
--   <table>_batches   the ledger: one row per committed batch, written in the
--                     same transaction as the batch's rows, so that a batch
--                     retried after an ambiguous commit or replayed from the
--                     spool is never written twice. Pruned by age.
--   <table>_rejected  rows PostgreSQL refused (a CHECK the operator added, a
--                     column narrowed...), with the error, as JSON.
DO $migrate$
DECLARE
    qualified text[] := parse_ident(coalesce(nullif(current_setting('pglogsink.table', true), ''), 'log'));
    tbl_schema text;
    tbl text;
BEGIN
    IF array_length(qualified, 1) = 2 THEN
        tbl_schema := qualified[1];
        tbl := qualified[2];
    ELSE
        tbl_schema := current_schema();
        tbl := qualified[1];
    END IF;

    -- Two services starting at once must not race on CREATE TYPE/TABLE.
    PERFORM pg_advisory_xact_lock(hashtext('pglogsink schema'));

    IF to_regtype(format('%I.pglogsink_level', tbl_schema)) IS NULL THEN
        EXECUTE format(
            'CREATE TYPE %I.pglogsink_level AS ENUM (''trace'', ''debug'', ''info'', ''warn'', ''error'')',
            tbl_schema);
    END IF;

    EXECUTE format($ddl$
        CREATE TABLE IF NOT EXISTS %1$I.%2$I (
            id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            "timestamp" timestamptz NOT NULL,
            level       %1$I.pglogsink_level NOT NULL,
            target      text NOT NULL,
            message     text NOT NULL,
            thread_id   bigint,
            fields      jsonb
        )$ddl$, tbl_schema, tbl);

    -- Serves "newest first" (ORDER BY "timestamp" DESC LIMIT n) and time ranges.
    EXECUTE format('CREATE INDEX IF NOT EXISTS %I ON %I.%I ("timestamp" DESC)',
                   left(tbl, 49) || '_timestamp_idx', tbl_schema, tbl);
    -- Warnings and errors only: tiny (about 2 MB on 10M rows of which 1% are
    -- warnings), and turns `WHERE level >= 'error'` from a scan into a lookup.
    EXECUTE format('CREATE INDEX IF NOT EXISTS %I ON %I.%I ("timestamp" DESC) WHERE level >= ''warn''',
                   left(tbl, 54) || '_warn_idx', tbl_schema, tbl);

    EXECUTE format($ddl$
        CREATE TABLE IF NOT EXISTS %1$I.%2$I (
            instance     bigint NOT NULL,
            seq          bigint NOT NULL,
            part         integer NOT NULL,
            rows         integer NOT NULL,
            committed_at timestamptz NOT NULL DEFAULT now(),
            PRIMARY KEY (instance, seq, part)
        )$ddl$, tbl_schema, left(tbl, 55) || '_batches');
    EXECUTE format('CREATE INDEX IF NOT EXISTS %I ON %I.%I (committed_at)',
                   left(tbl, 47) || '_batches_age_idx', tbl_schema, left(tbl, 55) || '_batches');

    EXECUTE format($ddl$
        CREATE TABLE IF NOT EXISTS %1$I.%2$I (
            id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            rejected_at timestamptz NOT NULL DEFAULT now(),
            sqlstate    text,
            error       text NOT NULL,
            record      jsonb NOT NULL
        )$ddl$, tbl_schema, left(tbl, 54) || '_rejected');
END
$migrate$;
