//! `pglogsink logs`: the newest rows of the Log table, oldest of them first,
//! like `tail`.

use super::db::{Database, Mode};
use super::{DatabaseArgs, Failure};

#[derive(Debug, clap::Args)]
pub(crate) struct LogsArgs {
    #[command(flatten)]
    pub(crate) db: DatabaseArgs,

    /// How many of the newest rows to show.
    #[arg(long, env = "PGLOGSINK_LIMIT", default_value_t = 50,
          value_parser = clap::value_parser!(i64).range(1..=1_000_000), value_name = "N")]
    pub(crate) limit: i64,
}

pub(crate) async fn run(args: LogsArgs) -> Result<(), Failure> {
    let db = Database::open(&args.db, Mode::Existing).await?;
    let result = print_newest(&db, &args).await;
    db.close();
    result
}

async fn print_newest(db: &Database, args: &LogsArgs) -> Result<(), Failure> {
    let client = db
        .pool
        .get()
        .await
        .map_err(|e| format!("connecting to {}: {e}", db.description))?;
    // Newest first through the "timestamp" index, then shown oldest first.
    let sql = format!(
        r#"SELECT to_char("timestamp", 'YYYY-MM-DD HH24:MI:SS.US TZH:TZM'), level::text, target,
                  message, thread_id, fields::text
             FROM {}
            ORDER BY "timestamp" DESC, id DESC
            LIMIT $1"#,
        args.db.table.quoted()
    );
    let rows = client.query(&sql, &[&args.limit]).await.map_err(|e| {
        if e.code() == Some(&pglogsink::tokio_postgres::error::SqlState::UNDEFINED_TABLE) {
            format!(
                "table {} does not exist in {}: run `pglogsink serve` or `pglogsink migrate` first",
                args.db.table, db.description
            )
        } else {
            format!(
                "reading table {}: {}",
                args.db.table,
                e.as_db_error()
                    .map_or(e.to_string(), |d| d.message().to_owned())
            )
        }
    })?;
    if rows.is_empty() {
        println!("no rows in table {} ({})", args.db.table, db.description);
        return Ok(());
    }
    let mut out = String::new();
    for row in rows.iter().rev() {
        let ts: String = row.get(0);
        let level: String = row.get(1);
        let target: String = row.get(2);
        let message: String = row.get(3);
        let thread: Option<i64> = row.get(4);
        let fields: Option<String> = row.get(5);
        out.push_str(&format!(
            "{ts}  {:<5}  {target}  [{}]  {}",
            level.to_uppercase(),
            thread.map_or_else(|| "-".to_owned(), |t| t.to_string()),
            message.escape_debug()
        ));
        if let Some(fields) = fields {
            out.push_str("  ");
            out.push_str(&fields);
        }
        out.push('\n');
    }
    print!("{out}");
    Ok(())
}
