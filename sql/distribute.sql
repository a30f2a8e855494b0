-- pglogsink on Citus: distribute the Log table made by sql/schema.sql across
-- the cluster's workers. Run on the coordinator, after sql/schema.sql, in
-- the database that has the citus extension. Idempotent: a table that is
-- already distributed is left as it is.
--
-- `pglogsink migrate --distribute` checks first that the server is a Citus
-- coordinator with workers (and says what is missing), then runs this file
-- with the setting pglogsink.table set from --table. To apply it by hand:
--
--   psql "$DATABASE_URL" -f sql/schema.sql -f sql/distribute.sql                 -- table "log"
--   PGOPTIONS='-c pglogsink.table=audit.app_log' psql "$DATABASE_URL" -f sql/schema.sql -f sql/distribute.sql
--
-- The Log table is hash-distributed by id (see the README, "When one
-- PostgreSQL is not enough", for the measurements behind the choice): the
-- sequence hands out a new id for every row, so the rows of every batch
-- spread evenly over all shards, and no query of pglogsink's filters by a
-- column that another choice would route on. Its partitions, those made
-- later by maintenance included, are distributed with it (Citus does that
-- for a distributed parent).
--
-- The ledger (<table>_batches) and the rejected rows (<table>_rejected)
-- stay plain tables on the coordinator. A batch's transaction inserts its
-- ledger key there and COPYs its rows to the workers; Citus commits the
-- workers' parts with two-phase commit, and the decision is the
-- coordinator's own commit, the same commit that writes the ledger key. So
-- the key is committed exactly when the rows are, and a batch retried after
-- an unheard COMMIT finds its key and is not written twice.
DO $distribute$
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

    IF NOT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'citus') THEN
        RAISE EXCEPTION 'the citus extension is not created in database %', current_database()
            USING ERRCODE = 'feature_not_supported',
                  HINT = 'CREATE EXTENSION citus on the coordinator (with shared_preload_libraries = ''citus''), add the workers with citus_add_node, then run this again';
    END IF;

    IF EXISTS (SELECT 1 FROM pg_dist_partition
               WHERE logicalrelid = format('%I.%I', tbl_schema, tbl)::regclass) THEN
        RETURN;  -- distributed already: nothing to do
    END IF;

    -- Two migrations at once must not both distribute.
    PERFORM pg_advisory_xact_lock(hashtext('pglogsink schema'));
    IF NOT EXISTS (SELECT 1 FROM pg_dist_partition
                   WHERE logicalrelid = format('%I.%I', tbl_schema, tbl)::regclass) THEN
        PERFORM create_distributed_table(format('%I.%I', tbl_schema, tbl), 'id');
    END IF;
END
$distribute$;
