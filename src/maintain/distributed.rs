//! A rewrite on a Log table distributed by Citus: the new partition and
//! its scratch parent are distributed as the Log table is, co-located with
//! it, before anything is copied, so that the copy runs shard by shard on
//! the workers and the swap attaches shards to shards.
//!
//! Columnar refuses `CREATE INDEX ... USING brin`, and Citus makes the
//! indexes of a new distributed table with that statement on each shard;
//! so the new partition is distributed bare and gets its indexes when it is
//! attached to the scratch parent, whose `ATTACH PARTITION` Citus runs on
//! each pair of shards (PostgreSQL then clones the indexes itself, as on
//! one server).

use deadpool_postgres::Object;
use tokio_postgres::types::Type;
use tokio_postgres::Transaction;

use crate::table::TableName;
use crate::Error;

/// Where the Log table's rows live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Placement {
    /// On this server.
    Local,
    /// Distributed by Citus on this column (hash).
    Distributed { column: String },
}

impl Placement {
    /// How `table` is placed; an error for the Citus table kinds a rewrite
    /// does not handle (reference, single-shard, Citus-managed local).
    pub(super) async fn of(client: &Object, table: &TableName) -> Result<Placement, Error> {
        let db = |e| Error::database(format!("reading how {table} is distributed"), e);
        let citus = client
            .query_typed("SELECT 1 FROM pg_extension WHERE extname = 'citus'", &[])
            .await
            .map_err(db)?;
        if citus.is_empty() {
            return Ok(Placement::Local);
        }
        let found = client
            .query_typed(
                "SELECT partmethod::text, column_to_column_name(logicalrelid, partkey) \
                 FROM pg_dist_partition WHERE logicalrelid = to_regclass($1)",
                &[(&table.quoted(), Type::TEXT)],
            )
            .await
            .map_err(db)?;
        match found.first().map(|r| (r.get::<_, String>(0), r.get(1))) {
            None => Ok(Placement::Local),
            Some((method, Some(column))) if method == "h" => Ok(Placement::Distributed { column }),
            Some(_) => Err(Error::config(
                "table",
                format!(
                    "{table} is a Citus table that is not hash-distributed by a column; \
                     its partitions cannot be rewritten (columnar, per-level retention)"
                ),
            )),
        }
    }

    /// Before anything is made: Citus may not mix local execution (shards
    /// on the coordinator) with the connections a co-located copy opens.
    pub(super) async fn begin(&self, tx: &Transaction<'_>) -> Result<(), tokio_postgres::Error> {
        match self {
            Placement::Local => Ok(()),
            Placement::Distributed { .. } => {
                tx.batch_execute("SET LOCAL citus.enable_local_execution TO off")
                    .await
            }
        }
    }

    /// Distribute `relation`, just made, as `table` is, co-located with it.
    pub(super) async fn follow(
        &self,
        tx: &Transaction<'_>,
        relation: &str,
        table: &TableName,
    ) -> Result<(), tokio_postgres::Error> {
        let Placement::Distributed { column } = self else {
            return Ok(());
        };
        tx.query_typed(
            "SELECT create_distributed_table($1::text::regclass, $2, colocate_with => $3)",
            &[
                (&relation, Type::TEXT),
                (column, Type::TEXT),
                (&table.quoted(), Type::TEXT),
            ],
        )
        .await?;
        Ok(())
    }

    /// About how many rows each table of `partition` holds: the partition
    /// itself (PostgreSQL's estimate; `None` before it is analyzed), or
    /// each of its shards.
    pub(super) async fn rows_per_table(
        &self,
        tx: &Transaction<'_>,
        partition: &TableName,
    ) -> Result<Option<f64>, tokio_postgres::Error> {
        let name = partition.quoted();
        if *self == Placement::Local {
            return Ok(tx
                .query_typed_one(
                    "SELECT nullif(greatest(reltuples, -1), -1)::float8 FROM pg_class \
                     WHERE oid = to_regclass($1)",
                    &[(&name, Type::TEXT)],
                )
                .await?
                .get(0));
        }
        let shards: i64 = tx
            .query_typed_one(
                "SELECT count(*) FROM pg_dist_shard WHERE logicalrelid = to_regclass($1)",
                &[(&name, Type::TEXT)],
            )
            .await?
            .get(0);
        let rows: i64 = tx
            .query_typed_one(&format!("SELECT count(*) FROM {name}"), &[])
            .await?
            .get(0);
        Ok((shards > 0).then(|| rows as f64 / shards as f64))
    }

    /// The SQL function that gives a relation's bytes with its indexes (on
    /// the workers, for a distributed one).
    pub(super) fn size_function(&self) -> &'static str {
        match self {
            Placement::Local => "pg_total_relation_size",
            Placement::Distributed { .. } => "citus_total_relation_size",
        }
    }
}
