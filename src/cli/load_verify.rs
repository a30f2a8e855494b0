//! `pglogsink load --verify`: count the rows carrying the run's id in the
//! Log table until every successful request has its rows, or the timeout.

use std::time::{Duration, Instant};

use pglogsink::admin::describe;
use pglogsink::tokio_postgres::types::Type;
use pglogsink::{CancellationToken, Error};

use super::db::DatabaseArgs;
use super::db::{Database, Mode};
use super::failure::Failure;
use super::load_progress::Progress;

/// How often the count is asked for.
const VERIFY_POLL: Duration = Duration::from_millis(250);

/// The `verify:` line for `expected` rows (one per 2xx response) given the last count (if any
/// query succeeded) and the last query error; `true` when the count matches exactly.
fn verify_line(
    run_id: &str,
    expected: u64,
    found: Option<u64>,
    last_error: Option<&str>,
    secs: f64,
    failed: u64,
) -> (String, bool) {
    let problem = match (found, last_error) {
        (Some(found), _) if found == expected => {
            let line =
                format!("{found} of {expected} rows for run {run_id} arrived in {secs:.2} s: OK");
            return (line, true);
        }
        (Some(found), _) if found > expected => format!(
            "expected {expected} rows, found {found}: {} more than successful requests ({})",
            found - expected,
            if failed == 0 {
                "duplicated"
            } else {
                "duplicated, or written by requests that failed here"
            }
        ),
        (Some(found), e) => format!(
            "expected {expected} rows, found {found} after {secs:.2} s: {} missing{}",
            expected - found,
            e.map(|e| format!(" (last error: {e})")).unwrap_or_default()
        ),
        (None, Some(e)) => {
            format!("expected {expected} rows, could not count them in {secs:.2} s: {e}")
        }
        (None, None) => {
            format!("expected {expected} rows, no answer from the database in {secs:.2} s")
        }
    };
    (format!("FAILED for run {run_id}: {problem}"), false)
}

/// `serve` side of --verify: polls the row count in the Log table of `db`
/// for up to `timeout`; `Ok(true)` when it matches exactly.
pub(crate) async fn verify(
    db: &DatabaseArgs,
    timeout: Duration,
    run_id: &str,
    expected: u64,
    failed: u64,
    cancel: &CancellationToken,
) -> Result<bool, Failure> {
    let started = Instant::now();
    let sql = format!(
        "SELECT count(*) FROM {} WHERE fields->>'run_id' = $1",
        db.table.quoted()
    );
    let db = Database::open(db, Mode::Existing).await?;
    let deadline = started + timeout;
    let mut progress = Progress::new(
        Some(expected),
        "{spinner} verify [{elapsed_precise}] {wide_bar} {pos}/{len} rows",
    );
    let mut found = None;
    let mut last_error: Option<String>;
    loop {
        let remaining = deadline
            .saturating_duration_since(Instant::now())
            .max(VERIFY_POLL);
        let query = async {
            let client = db
                .pool
                .get()
                .await
                .map_err(|e| Error::from(e).to_string())?;
            // The unnamed statement: nothing outlives the query, so this
            // works through a transaction-mode pooler.
            let row = client
                .query_typed_one(sql.as_str(), &[(&run_id, Type::TEXT)])
                .await
                .map_err(|e| describe(&e).to_string())?;
            let count: i64 = row.try_get(0).map_err(|e| describe(&e).to_string())?;
            Ok::<u64, String>(u64::try_from(count).unwrap_or(0))
        };
        match tokio::time::timeout(remaining, query).await {
            Ok(Ok(count)) => {
                found = Some(count);
                last_error = None;
                progress.update(count, String::new(), || {
                    format!("verify: {count} of {expected} rows")
                });
                if count >= expected {
                    break;
                }
            }
            Ok(Err(e)) => last_error = Some(e),
            Err(_) => last_error = Some("the query timed out".to_owned()),
        }
        if Instant::now() >= deadline {
            break;
        }
        tokio::select! {
            _ = tokio::time::sleep(VERIFY_POLL) => {}
            _ = cancel.cancelled() => {
                last_error = Some("interrupted".to_owned());
                break;
            }
        }
    }
    progress.bar.finish_and_clear();
    db.close();
    let secs = started.elapsed().as_secs_f64();
    let (line, ok) = verify_line(run_id, expected, found, last_error.as_deref(), secs, failed);
    println!("verify:      {line}");
    Ok(ok)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verify_line_tells_missing_from_duplicated() {
        let line = |found, error, failed| verify_line("load-1-2", 20, found, error, 0.42, failed);
        assert_eq!(
            line(Some(20), None, 0),
            (
                "20 of 20 rows for run load-1-2 arrived in 0.42 s: OK".to_owned(),
                true
            )
        );
        let (text, ok) = line(Some(18), Some("db error"), 0);
        assert!(!ok);
        assert_eq!(text, "FAILED for run load-1-2: expected 20 rows, found 18 after 0.42 s: 2 missing (last error: db error)");
        let (text, ok) = line(Some(21), None, 0);
        assert!(
            !ok && text.ends_with("found 21: 1 more than successful requests (duplicated)"),
            "{text}"
        );
        assert!(line(Some(21), None, 3)
            .0
            .contains("or written by requests that failed here"));
        let (text, ok) = line(None, Some("connection refused"), 0);
        assert!(
            !ok && text.ends_with("could not count them in 0.42 s: connection refused"),
            "{text}"
        );
        assert!(verify_line("r", 0, Some(0), None, 0.0, 5).1);
    }
}
