//! `pglogsink logs` against a table of known rows: which rows each filter
//! returns, the text and JSON output, bad values, and `--follow`.

use std::io::{BufRead, BufReader};
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use libtest_mimic::{Failed, Trial};
use pglogsink::TableName;

use crate::common::{block_on, check, check_time, exit_within, fresh_table, pool, signal, url};

const BIN: &str = env!("CARGO_BIN_EXE_pglogsink");

pub fn trials() -> Vec<Trial> {
    vec![
        Trial::test(
            "logs::filters_return_exactly_the_matching_rows",
            filters_return_exactly_the_matching_rows,
        ),
        Trial::test(
            "logs::text_is_plain_when_piped_in_local_time_and_empty_results_say_so",
            text_output,
        ),
        Trial::test(
            "logs::invalid_values_name_the_option_and_the_accepted_form",
            invalid_values,
        ),
        Trial::test(
            "logs::follow_prints_new_matching_rows_until_ctrl_c",
            follow_prints_new_rows,
        ),
    ]
}

/// Six rows, ids 1 to 6 in this order; newest first by time: 5 4 3 2 1 6.
const ROWS: &str = r#"
    INSERT INTO {table} ("timestamp", level, target, message, thread_id, fields) VALUES
    (now() - interval '3 hours',    'info',  'app::db',   'connected to db',         11, '{"request_id": "r1", "status": 200}'),
    (now() - interval '2 hours',    'warn',  'app::http', 'slow request: 100% done', 12, '{"request_id": "r2", "ms": 840}'),
    (now() - interval '30 minutes', 'error', 'app::http', 'request FAILED',          12, '{"request_id": "r2", "status": "500"}'),
    (now() - interval '10 minutes', 'debug', 'other',     'cache_miss',              NULL, NULL),
    (now() - interval '1 minute',   'error', 'app',       'disk full',               13, '{"status": 500, "ok": true}'),
    ('2020-01-01 00:00:00Z',        'info',  'app',       'old row under score',     13, '{}')
"#;

fn filled_table() -> Result<TableName, Failed> {
    let table = fresh_table("logs");
    block_on(async {
        let pool = pool()?;
        pglogsink::migrate(&pool, &table).await?;
        pool.get()
            .await?
            .batch_execute(&ROWS.replace("{table}", &table.quoted()))
            .await?;
        Ok(())
    })?;
    Ok(table)
}

fn insert(table: &TableName, sql_values: &str) -> Result<(), Failed> {
    block_on(async {
        pool()?
            .get()
            .await?
            .batch_execute(&format!(
                r#"INSERT INTO {} ("timestamp", level, target, message, thread_id, fields) VALUES {sql_values}"#,
                table.quoted()
            ))
            .await?;
        Ok(())
    })
}

/// `pglogsink logs` on `table` with a clean environment of our own.
fn command(table: &TableName, args: &[&str], env: &[(&str, &str)]) -> Result<Command, Failed> {
    let mut command = Command::new(BIN);
    command
        .arg("logs")
        .args(["--database-url", &url()?, "--table", &table.to_string()])
        .args(args)
        .env_remove("DATABASE_URL")
        .env_remove("NO_COLOR");
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("PGLOGSINK_") {
            command.env_remove(key);
        }
    }
    command.envs(env.iter().copied());
    Ok(command)
}

fn logs(table: &TableName, args: &[&str], env: &[(&str, &str)]) -> Result<Output, Failed> {
    Ok(command(table, args, env)?.output()?)
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The ids `logs --json <args>` prints, in order.
fn ids(table: &TableName, args: &[&str], env: &[(&str, &str)]) -> Result<Vec<i64>, Failed> {
    let out = logs(table, &[&["--json"], args].concat(), env)?;
    check(out.status.success(), || {
        format!("logs {args:?} failed: {}", text(&out.stderr))
    })?;
    text(&out.stdout)
        .lines()
        .map(|line| {
            let row: serde_json::Value = serde_json::from_str(line)?;
            row["id"]
                .as_i64()
                .ok_or_else(|| Failed::from(format!("no id in {line}")))
        })
        .collect()
}

fn filters_return_exactly_the_matching_rows() -> Result<(), Failed> {
    let table = filled_table()?;
    let cases: &[(&[&str], &[i64])] = &[
        (&[], &[6, 1, 2, 3, 4, 5]),
        (&["--limit", "3"], &[3, 4, 5]),
        (&["--level", "warn"], &[2, 3, 5]),
        (&["--level", "error"], &[3, 5]),
        (&["--level", "trace"], &[6, 1, 2, 3, 4, 5]),
        (&["--since", "1h"], &[3, 4, 5]),
        (&["--since", "15m", "--level", "error"], &[5]),
        (&["--since", "2h30m", "--until", "20m"], &[2, 3]),
        (&["--until", "2021-01-01"], &[6]),
        (
            &[
                "--since",
                "2019-12-31 00:00:00",
                "--until",
                "2020-01-02T00:00:00Z",
            ],
            &[6],
        ),
        (&["--grep", "failed"], &[3]),
        (&["--grep", "100%"], &[2]),
        (&["--grep", "_"], &[4]),
        (&["--target", "app::http"], &[2, 3]),
        (&["--target", "app"], &[6, 1, 2, 3, 5]),
        (&["--field", "status=500"], &[3, 5]),
        (&["--field", "status=200"], &[1]),
        (&["--field", "ok=true"], &[5]),
        (&["--request-id", "r2"], &[2, 3]),
        (&["--request-id", "r2", "--field", "status=500"], &[3]),
        (&["--field", "request_id=r2", "--field", "ms=840"], &[2]),
        (&["--grep", "no such text"], &[]),
    ];
    for (args, expected) in cases {
        let got = ids(&table, args, &[])?;
        check(got == *expected, || {
            format!("logs {args:?}: got {got:?}, expected {expected:?}")
        })?;
    }
    // Every flag has its environment variable.
    let env_cases: &[(&str, &str, &[i64])] = &[
        ("PGLOGSINK_LEVEL", "error", &[3, 5]),
        ("PGLOGSINK_SINCE", "1h", &[3, 4, 5]),
        ("PGLOGSINK_UNTIL", "2021-01-01", &[6]),
        ("PGLOGSINK_GREP", "FULL", &[5]),
        ("PGLOGSINK_TARGET", "other", &[4]),
        ("PGLOGSINK_FIELD", "status=200", &[1]),
        ("PGLOGSINK_REQUEST_ID", "r1", &[1]),
        ("PGLOGSINK_LIMIT", "1", &[5]),
    ];
    for (var, value, expected) in env_cases {
        let got = ids(&table, &[], &[(var, value)])?;
        check(got == *expected, || {
            format!("{var}={value}: got {got:?}, expected {expected:?}")
        })?;
    }
    let out = logs(&table, &["--limit", "1"], &[("PGLOGSINK_JSON", "true")])?;
    check(text(&out.stdout).starts_with("{\"id\":5,"), || {
        format!("PGLOGSINK_JSON: {}", text(&out.stdout))
    })
}

fn text_output() -> Result<(), Failed> {
    let table = filled_table()?;
    let out = logs(&table, &["--limit", "2"], &[("TZ", "Asia/Kolkata")])?;
    let shown = text(&out.stdout);
    check(out.status.success(), || text(&out.stderr))?;
    let lines: Vec<&str> = shown.lines().collect();
    check(lines.len() == 2 && !shown.contains('\x1b'), || {
        shown.clone()
    })?;
    // Local time with its offset; columns aligned: the messages start at the same place.
    check(lines.iter().all(|l| l.contains(" +05:30  ")), || {
        shown.clone()
    })?;
    check(
        lines[0].contains("  DEBUG  other  [ -]  cache_miss")
            && lines[1]
                .contains("  ERROR  app    [13]  disk full  {\"ok\": true, \"status\": 500}"),
        || shown.clone(),
    )?;

    let empty = logs(&table, &["--grep", "nothing like this"], &[])?;
    check(
        empty.status.success() && text(&empty.stdout).starts_with("no rows in table"),
        || format!("text: {:?} {:?}", text(&empty.stdout), text(&empty.stderr)),
    )?;
    let empty = logs(
        &table,
        &["--json", "--level", "error", "--since", "5s"],
        &[],
    )?;
    check(
        empty.status.success()
            && empty.stdout.is_empty()
            && text(&empty.stderr).contains("no rows in table"),
        || format!("json: {:?} {:?}", text(&empty.stdout), text(&empty.stderr)),
    )?;

    let json = logs(&table, &["--json", "--limit", "1"], &[])?;
    let row: serde_json::Value = serde_json::from_str(text(&json.stdout).trim())?;
    let ts = row["timestamp"].as_str().unwrap_or_default();
    check(
        row["level"] == "error"
            && row["target"] == "app"
            && row["message"] == "disk full"
            && row["thread_id"] == 13
            && row["fields"] == serde_json::json!({"status": 500, "ok": true})
            && ts.len() == "2026-11-23T16:19:18.017687Z".len()
            && ts.ends_with('Z')
            && ts.as_bytes()[10] == b'T',
        || format!("{row}"),
    )
}

fn invalid_values() -> Result<(), Failed> {
    let table = fresh_table("logs_bad");
    let cases: &[(&[&str], &[&str])] = &[
        (
            &["--since", "yesterday"],
            &["--since", "15m", "2026-11-23T16:19:18Z"],
        ),
        (&["--until", "5 minutes"], &["--until", "30s"]),
        (
            &["--level", "loud"],
            &["--level", "trace, debug, info, warn, error"],
        ),
        (&["--field", "nokey"], &["--field", "KEY=VALUE"]),
        (&["--limit", "0"], &["--limit", "1..=1000000"]),
        (&["--follow", "--until", "1h"], &["--until", "--follow"]),
    ];
    for (args, mentions) in cases {
        let out = logs(&table, args, &[])?;
        let stderr = text(&out.stderr);
        check(out.status.code() == Some(2), || {
            format!("logs {args:?} exited {:?}: {stderr}", out.status)
        })?;
        for word in *mentions {
            check(stderr.contains(word), || {
                format!("logs {args:?}: {word:?} not in {stderr}")
            })?;
        }
    }
    // Well-formed but impossible: PostgreSQL says why, naming the option.
    let table = filled_table()?;
    let out = logs(&table, &["--since", "2026-02-30"], &[])?;
    let stderr = text(&out.stderr);
    check(
        !out.status.success() && stderr.contains("--since") && stderr.contains("2026-02-30"),
        || stderr.clone(),
    )?;
    let out = logs(&table, &["--since", "1h", "--until", "2h"], &[])?;
    check(
        !out.status.success() && text(&out.stderr).contains("--since must be before --until"),
        || text(&out.stderr),
    )
}

/// The lines `child` prints on its (piped) stdout, as they come.
pub(crate) fn lines_of(child: &mut std::process::Child) -> Result<mpsc::Receiver<String>, Failed> {
    let stdout = child.stdout.take().ok_or("no stdout")?;
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    Ok(rx)
}

fn follow_prints_new_rows() -> Result<(), Failed> {
    let table = filled_table()?;
    let mut child = command(&table, &["--follow", "--json", "--level", "warn"], &[])?
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let rx = lines_of(&mut child)?;
    let result = (|| {
        let next_id = |timeout: Duration| -> Result<i64, Failed> {
            let line = rx
                .recv_timeout(timeout)
                .map_err(|e| format!("no line within {timeout:?}: {e}"))?;
            let row: serde_json::Value = serde_json::from_str(&line)?;
            row["id"]
                .as_i64()
                .ok_or_else(|| Failed::from(format!("no id in {line}")))
        };
        let initial = (0..3)
            .map(|_| next_id(Duration::from_secs(30)))
            .collect::<Result<Vec<_>, _>>()?;
        check(initial == [2, 3, 5], || format!("initial rows {initial:?}"))?;

        insert(
            &table,
            "(now(), 'info', 'app', 'quiet', 1, NULL), (now(), 'error', 'app', 'new failure', 1, NULL)",
        )?;
        let arrived = Instant::now();
        let id = next_id(Duration::from_secs(10))?;
        check(id == 8, || format!("followed row {id}, expected 8"))?;
        check_time(
            "logs --follow showing a new row",
            arrived.elapsed(),
            Duration::from_secs(3),
        )?;
        insert(&table, "(now(), 'warn', 'app', 'later', 1, NULL)")?;
        let id = next_id(Duration::from_secs(10))?;
        check(id == 9, || format!("followed row {id}, expected 9"))?;
        std::thread::sleep(Duration::from_millis(1200));
        check(rx.try_recv().is_err(), || "a row was shown twice".into())
    })();

    let _ = signal(child.id(), "-INT");
    let Some(status) = exit_within(&mut child, Duration::from_secs(10))? else {
        let _ = child.kill();
        let _ = child.wait();
        return Err("logs --follow did not stop within 10 s of Ctrl-C".into());
    };
    result?;
    check(status.success(), || {
        format!("logs --follow exited {status}")
    })
}
