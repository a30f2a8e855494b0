-- pglogsink: the Log table. Idempotent: running it again changes nothing,
-- and it only issues DDL for what is missing (a role that may only insert
-- can run it against an existing table).
--
-- `pglogsink migrate` (and `pglogsink serve` at start, when something is
-- missing) run this file with the setting pglogsink.table set from --table,
-- then create the time partitions ahead (`pglogsink maintain` keeps doing
-- so). To apply it by hand:
--
--   psql "$DATABASE_URL" -f sql/schema.sql                                   -- table "log"
--   PGOPTIONS='-c pglogsink.table=audit.app_log' psql "$DATABASE_URL" -f sql/schema.sql
--
-- and then run `pglogsink maintain` (or hand the table to pg_partman): until
-- a partition exists for a time range, its rows go to the DEFAULT partition.
--
-- The Log table is partitioned by range of "timestamp" (one partition per
-- day by default, named <table>_pYYYYMMDD, made ahead by maintenance), with a
-- DEFAULT partition <table>_default that takes any row no partition covers
-- (a skewed clock, a replay of old records), so no row is ever refused.
-- Retention drops whole partitions: no DELETE, no bloat.
--
-- Columns:
--   id          from the sequence <table>_id_seq, in insertion order (not a
--               key: unique only as long as nobody resets the sequence)
--   "timestamp" when log() was called (not when the row was written)
--   level       pglogsink_level enum: trace < debug < info < warn < error, so
--               `WHERE level >= 'warn'` works and a plain SELECT shows the name
--   target      the component that logged (module path, "http"...)
--   message     the message; NUL bytes arrive as U+FFFD
--   thread_id   OS thread id of the producer
--   fields      structured fields as a jsonb object, NULL when there are none
--
-- Indexes (each one costs every COPY; these are the ones the queries of
-- `pglogsink logs` need, chosen by measurement, see the README):
--   BRIN on ("timestamp", id)  time ranges ("newest N" reads a widening
--                            window) and `logs --follow` (the ids above what
--                            it saw); one index, so one summary update per row
--   btree on "timestamp" for level >= warn only (about 1% of rows)
--   hash on fields->>'request_id' for rows that carry one: one request's
--                            lines without a time bound
--   hash on fields->>'trace_id' for rows that carry one (OTLP ingest): one
--                            trace's lines (`logs --trace-id`) without a time
--                            bound; 0.1 ms instead of a 0.6-1 s scan at 3
--                            million rows. Tables made before it lack it:
--                            see the README for the statement to add it.
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
    ledger text;
    rejected text;
BEGIN
    IF array_length(qualified, 1) = 2 THEN
        tbl_schema := qualified[1];
        tbl := qualified[2];
    ELSE
        tbl_schema := current_schema();
        tbl := qualified[1];
    END IF;
    ledger := left(tbl, 55) || '_batches';
    rejected := left(tbl, 54) || '_rejected';

    IF to_regtype(format('%I.pglogsink_level', tbl_schema)) IS NOT NULL
       AND to_regclass(format('%I.%I', tbl_schema, tbl)) IS NOT NULL
       AND to_regclass(format('%I.%I', tbl_schema, ledger)) IS NOT NULL
       AND to_regclass(format('%I.%I', tbl_schema, rejected)) IS NOT NULL THEN
        RETURN;  -- all there: no lock, no DDL
    END IF;

    -- Two services starting at once must not race on CREATE TYPE/TABLE.
    PERFORM pg_advisory_xact_lock(hashtext('pglogsink schema'));

    IF to_regtype(format('%I.pglogsink_level', tbl_schema)) IS NULL THEN
        EXECUTE format(
            'CREATE TYPE %I.pglogsink_level AS ENUM (''trace'', ''debug'', ''info'', ''warn'', ''error'')',
            tbl_schema);
    END IF;

    IF to_regclass(format('%I.%I', tbl_schema, tbl)) IS NULL THEN
        EXECUTE format('CREATE SEQUENCE %I.%I AS bigint',
                       tbl_schema, left(tbl, 56) || '_id_seq');
        EXECUTE format($ddl$
            CREATE TABLE %1$I.%2$I (
                id          bigint NOT NULL DEFAULT nextval(%3$L),
                "timestamp" timestamptz NOT NULL,
                level       %1$I.pglogsink_level NOT NULL,
                target      text NOT NULL,
                message     text NOT NULL,
                thread_id   bigint,
                fields      jsonb
            ) PARTITION BY RANGE ("timestamp")$ddl$,
            tbl_schema, tbl, format('%I.%I', tbl_schema, left(tbl, 56) || '_id_seq'));
        EXECUTE format('ALTER SEQUENCE %I.%I OWNED BY %I.%I.id',
                       tbl_schema, left(tbl, 56) || '_id_seq', tbl_schema, tbl);
        EXECUTE format('CREATE TABLE %I.%I PARTITION OF %I.%I DEFAULT',
                       tbl_schema, left(tbl, 55) || '_default', tbl_schema, tbl);
        -- autosummarize: a block range is summarised (by autovacuum, within
        -- about a minute) as soon as writes move past it, instead of at the
        -- next VACUUM; an unsummarised range is read by every query, and the
        -- last, partial range of each partition always is: 32 pages (256 kB)
        -- per range keeps that read small.
        EXECUTE format('CREATE INDEX %I ON %I.%I USING brin ("timestamp", id) WITH (pages_per_range = 32, autosummarize = on)',
                       left(tbl, 58) || '_brin', tbl_schema, tbl);
        -- Warnings and errors only: tiny, and turns `WHERE level >= 'error'`
        -- from a scan into a lookup.
        EXECUTE format('CREATE INDEX %I ON %I.%I ("timestamp" DESC) WHERE level >= ''warn''',
                       left(tbl, 54) || '_warn_idx', tbl_schema, tbl);
        -- Hash, not btree: equality is all the lookup needs, and ids that
        -- arrive in random order (x-request-id, UUIDs) cost a btree a
        -- random page per insert; measured in benches/table_shapes.sh.
        EXECUTE format('CREATE INDEX %I ON %I.%I USING hash ((fields->>''request_id'')) WHERE fields ? ''request_id''',
                       left(tbl, 48) || '_request_id_idx', tbl_schema, tbl);
        EXECUTE format('CREATE INDEX %I ON %I.%I USING hash ((fields->>''trace_id'')) WHERE fields ? ''trace_id''',
                       left(tbl, 50) || '_trace_id_idx', tbl_schema, tbl);
    END IF;

    IF to_regclass(format('%I.%I', tbl_schema, ledger)) IS NULL THEN
        EXECUTE format($ddl$
            CREATE TABLE %1$I.%2$I (
                instance     bigint NOT NULL,
                seq          bigint NOT NULL,
                part         integer NOT NULL,
                rows         integer NOT NULL,
                committed_at timestamptz NOT NULL DEFAULT now(),
                PRIMARY KEY (instance, seq, part)
            )$ddl$, tbl_schema, ledger);
        EXECUTE format('CREATE INDEX %I ON %I.%I (committed_at)',
                       left(tbl, 47) || '_batches_age_idx', tbl_schema, ledger);
    END IF;

    IF to_regclass(format('%I.%I', tbl_schema, rejected)) IS NULL THEN
        EXECUTE format($ddl$
            CREATE TABLE %1$I.%2$I (
                id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
                rejected_at timestamptz NOT NULL DEFAULT now(),
                sqlstate    text,
                error       text NOT NULL,
                record      jsonb NOT NULL
            )$ddl$, tbl_schema, rejected);
    END IF;
END
$migrate$;
