//! `pglogsink logs`: read the Log table. The newest matching rows are shown
//! oldest first, like `tail`; `--follow` keeps printing new rows until
//! Ctrl-C; `--json` prints one JSON object per row (NDJSON).
//!
//! The queries are the library's query layer (`pglogsink::query`), the same
//! one the web viewer uses; this module parses the options and prints.
//! Times are shown and read in the local time zone: the query layer sets
//! PostgreSQL's `TimeZone` from `TZ` or `/etc/localtime` for each of its
//! transactions, so the binary needs no time zone database.

use std::borrow::Cow;
use std::fmt::Write as _;
use std::io::{IsTerminal, Write as _};
use std::path::Path;
use std::time::Duration;

use deadpool_postgres::Object;
use pglogsink::admin::query::{FieldMatch, Filter, Follower, LogRow, Reader, TimeFormat, When};
use pglogsink::tokio_postgres;
use pglogsink::{Error, Level, TableName};

use super::db::DatabaseArgs;
use super::db::{Database, Mode};
use super::failure::Failure;
use super::signal::shutdown_signal;
use super::trace_ids;

/// How often `--follow` asks for new rows.
const POLL_INTERVAL: Duration = Duration::from_millis(500);
/// The target column is padded to the longest target seen, up to this.
const MAX_TARGET_WIDTH: usize = 32;

#[derive(Debug, clap::Args)]
pub(crate) struct LogsArgs {
    #[command(flatten)]
    pub(crate) db: DatabaseArgs,

    /// How many of the newest matching rows to show (with --follow: before following).
    #[arg(long, env = "PGLOGSINK_LIMIT", default_value_t = 50,
          value_parser = clap::value_parser!(i64).range(1..=1_000_000), value_name = "N")]
    pub(crate) limit: i64,

    /// Only rows of this level or more severe: trace, debug, info, warn, error.
    #[arg(long, env = "PGLOGSINK_LEVEL", value_name = "LEVEL", value_parser = parse_level)]
    pub(crate) level: Option<Level>,

    /// Only rows logged at or after this time: a duration ago (30s, 15m, 2h, 7d, 1h30m) or a
    /// timestamp (2026-11-23T16:19:18Z, "2026-11-23 16:19:18" in local time, 2026-11-23).
    #[arg(long, env = "PGLOGSINK_SINCE", value_name = "WHEN", value_parser = parse_when)]
    pub(crate) since: Option<When>,

    /// Only rows logged before this time; same forms as --since.
    #[arg(long, env = "PGLOGSINK_UNTIL", value_name = "WHEN", value_parser = parse_when,
          conflicts_with = "follow")]
    pub(crate) until: Option<When>,

    /// Only rows whose message contains TEXT, ignoring case.
    #[arg(long, env = "PGLOGSINK_GREP", value_name = "TEXT")]
    pub(crate) grep: Option<String>,

    /// Only rows whose target starts with PREFIX (e.g. http, shop::orders).
    #[arg(long, env = "PGLOGSINK_TARGET", value_name = "PREFIX")]
    pub(crate) target: Option<String>,

    /// Only rows whose fields have KEY equal to VALUE; repeat for more (all must match). A VALUE
    /// that reads as a JSON number, true, false or null also matches that JSON value, so
    /// status=500 finds 500 and "500". The environment variable holds one KEY=VALUE.
    #[arg(long = "field", env = "PGLOGSINK_FIELD", value_name = "KEY=VALUE",
          value_parser = parse_field)]
    pub(crate) fields: Vec<FieldMatch>,

    /// Only rows of this request (its request_id field), found through an index whatever their
    /// time.
    #[arg(long, env = "PGLOGSINK_REQUEST_ID", value_name = "ID")]
    pub(crate) request_id: Option<String>,

    /// Only rows of this trace (the trace_id field that OTLP ingest stores: 32 hex digits, any
    /// case), found through an index whatever their time.
    #[arg(long, env = "PGLOGSINK_TRACE_ID", value_name = "ID", value_parser = trace_ids::parse_trace_id)]
    pub(crate) trace_id: Option<String>,

    /// After the newest rows, keep printing new matching rows as they are committed, until Ctrl-C.
    #[arg(long, short = 'f', env = "PGLOGSINK_FOLLOW",
          value_parser = clap::builder::BoolishValueParser::new())]
    pub(crate) follow: bool,

    /// Print one JSON object per row (NDJSON): id, timestamp (RFC 3339, UTC), level, target,
    /// message, thread_id, fields.
    #[arg(long, env = "PGLOGSINK_JSON", value_parser = clap::builder::BoolishValueParser::new())]
    pub(crate) json: bool,
}

fn parse_level(s: &str) -> Result<Level, String> {
    s.parse::<Level>().map_err(|e| e.to_string())
}

fn parse_when(s: &str) -> Result<When, String> {
    s.parse()
}

fn parse_field(s: &str) -> Result<FieldMatch, String> {
    s.parse()
}

/// Renders rows as aligned (optionally coloured) text or as NDJSON. Column
/// widths only grow, so that `--follow` output stays aligned.
struct Printer {
    json: bool,
    color: bool,
    target_width: usize,
    thread_width: usize,
}

impl Printer {
    fn new(json: bool, color: bool) -> Printer {
        Printer {
            json,
            color,
            target_width: 0,
            thread_width: 1,
        }
    }

    fn render(&mut self, rows: &[LogRow]) -> String {
        let mut out = String::new();
        if self.json {
            for row in rows {
                json_line(&mut out, row);
            }
            return out;
        }
        for row in rows {
            let target = row.target.chars().count().min(MAX_TARGET_WIDTH);
            self.target_width = self.target_width.max(target);
            let thread = row.thread_id.map_or(1, |t| t.to_string().len());
            self.thread_width = self.thread_width.max(thread);
        }
        for row in rows {
            self.text_line(&mut out, row);
        }
        out
    }

    fn text_line(&self, out: &mut String, row: &LogRow) {
        let level = row.level.to_uppercase();
        let level_color = match row.level.as_str() {
            "error" => "1;31",
            "warn" => "33",
            "info" => "32",
            "debug" => "34",
            _ => "35",
        };
        let thread = row
            .thread_id
            .map_or_else(|| "-".to_owned(), |t| t.to_string());
        let _ = write!(
            out,
            "{}  {}  {}  {}  {}",
            self.paint("2", &row.timestamp),
            self.paint(level_color, &format!("{level:<5}")),
            self.paint(
                "36",
                &format!("{:<w$}", printable(&row.target), w = self.target_width)
            ),
            self.paint("2", &format!("[{thread:>w$}]", w = self.thread_width)),
            printable(&row.message),
        );
        if let Some(fields) = &row.fields {
            out.push_str("  ");
            out.push_str(&printable(fields));
        }
        out.push('\n');
    }

    fn paint<'t>(&self, code: &str, text: &'t str) -> Cow<'t, str> {
        if self.color {
            Cow::Owned(format!("\x1b[{code}m{text}\x1b[0m"))
        } else {
            Cow::Borrowed(text)
        }
    }
}

/// One NDJSON line; `fields` is jsonb's own text, which is JSON.
fn json_line(out: &mut String, row: &LogRow) {
    let string = |s: &str| serde_json::to_string(s).unwrap_or_else(|_| "null".to_owned());
    let _ = writeln!(
        out,
        r#"{{"id":{},"timestamp":{},"level":{},"target":{},"message":{},"thread_id":{},"fields":{}}}"#,
        row.id,
        string(&row.timestamp),
        string(&row.level),
        string(&row.target),
        string(&row.message),
        row.thread_id
            .map_or_else(|| "null".to_owned(), |t| t.to_string()),
        row.fields.as_deref().unwrap_or("null"),
    );
}

/// Control characters (newlines, escape sequences) shown escaped, so that a
/// logged message cannot break the layout or drive the terminal.
fn printable(s: &str) -> Cow<'_, str> {
    if !s.chars().any(char::is_control) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        if c.is_control() {
            out.extend(c.escape_debug());
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// Colours when stdout is a terminal, unless `NO_COLOR` is set or
/// `TERM=dumb`.
fn use_color() -> bool {
    std::io::stdout().is_terminal()
        && std::env::var_os("NO_COLOR").map_or(true, |v| v.is_empty())
        && std::env::var_os("TERM").map_or(true, |t| t != "dumb")
}

/// The local time zone's name for PostgreSQL.
fn local_time_zone() -> String {
    zone_name(
        std::env::var("TZ").ok().as_deref(),
        std::fs::read_link("/etc/localtime").ok().as_deref(),
        std::fs::read_to_string("/etc/timezone").ok().as_deref(),
    )
}

/// `TZ` (`Europe/Paris`, `:Europe/Paris`, or a path into a zoneinfo
/// directory), else the zone `/etc/localtime` links to, else
/// `/etc/timezone`, else `UTC`.
fn zone_name(
    tz: Option<&str>,
    localtime_link: Option<&Path>,
    etc_timezone: Option<&str>,
) -> String {
    if let Some(tz) = tz {
        let tz = tz.strip_prefix(':').unwrap_or(tz);
        if tz.is_empty() {
            return "UTC".to_owned();
        }
        if !tz.starts_with('/') {
            return tz.to_owned();
        }
        if let Some(name) = after_zoneinfo(Path::new(tz)) {
            return name;
        }
    }
    if let Some(name) = localtime_link.and_then(after_zoneinfo) {
        return name;
    }
    match etc_timezone.map(str::trim) {
        Some(name) if !name.is_empty() => name.to_owned(),
        _ => "UTC".to_owned(),
    }
}

fn after_zoneinfo(path: &Path) -> Option<String> {
    let (_, name) = path.to_str()?.split_once("zoneinfo/")?;
    (!name.is_empty()).then(|| name.to_owned())
}

pub(crate) async fn run(args: LogsArgs) -> Result<(), Failure> {
    let db = Database::open(&args.db, Mode::Existing).await?;
    let result = show(&db, &args).await;
    db.close();
    result
}

/// What a failed query means for the user.
fn read_error(e: &Error, table: &TableName, db: &Database) -> Failure {
    if e.sqlstate() == Some(tokio_postgres::error::SqlState::UNDEFINED_TABLE.code()) {
        format!(
            "table {table} does not exist in {}: run `pglogsink serve` or `pglogsink migrate` first",
            db.description
        )
        .into()
    } else {
        format!("reading table {table}: {e}").into()
    }
}

/// A connection; the error says whether trying again may help (a lost
/// connection, a server restarting: `--follow` waits those out).
async fn connect(db: &Database) -> Result<Object, (bool, Failure)> {
    db.pool.get().await.map_err(|e| {
        let e = Error::from(e);
        (
            e.is_transient(),
            Failure::from(format!("connecting to {}: {e}", db.description)),
        )
    })
}

/// A reader in the local time zone, or UTC when PostgreSQL does not know it.
async fn reader(client: &mut Object, args: &LogsArgs) -> Result<Reader, Failure> {
    let format = if args.json {
        TimeFormat::Rfc3339Utc
    } else {
        TimeFormat::Local
    };
    let zone = local_time_zone();
    let reader = Reader::new(args.db.table.clone())
        .time_format(format)
        .time_zone(zone.as_str());
    match reader.check_time_zone(client).await.map_err(Error::from) {
        Ok(()) => Ok(reader),
        Err(e) if e.is_transient() => Err(e.to_string().into()),
        Err(_) => {
            eprintln!("pglogsink: PostgreSQL does not know the time zone {zone:?}; showing UTC");
            Ok(reader.time_zone("UTC"))
        }
    }
}

/// The filter, with `--since`/`--until` resolved to instants.
async fn filter(client: &mut Object, reader: &Reader, args: &LogsArgs) -> Result<Filter, Failure> {
    let since = resolve(client, reader, "--since", args.since.as_ref()).await?;
    let until = resolve(client, reader, "--until", args.until.as_ref()).await?;
    if let (Some(since), Some(until)) = (since, until) {
        if since >= until {
            return Err("--since must be before --until".into());
        }
    }
    Ok(Filter {
        level: args.level,
        since,
        until,
        grep: args.grep.clone(),
        target: args.target.clone(),
        fields: args.fields.clone(),
        request_id: args.request_id.clone(),
        trace_id: args.trace_id.clone(),
    })
}

async fn resolve(
    client: &mut Object,
    reader: &Reader,
    option: &str,
    when: Option<&When>,
) -> Result<Option<std::time::SystemTime>, Failure> {
    let Some(when) = when else { return Ok(None) };
    reader.resolve(client, when).await.map(Some).map_err(|e| {
        let text = match when {
            When::At(text) => text.clone(),
            When::Ago(ago) => format!("{ago:?}"),
        };
        Failure::from(format!(
            "invalid value {text:?} for {option}: {}; {}",
            Error::from(e),
            pglogsink::admin::query::WHEN_FORM
        ))
    })
}

/// Print `text` on stdout; false once the reader has gone (`| head`).
fn emit(text: &str) -> Result<bool, Failure> {
    let mut stdout = std::io::stdout().lock();
    match stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
    {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(false),
        Err(e) => Err(format!("writing to stdout: {e}").into()),
    }
}

async fn show(db: &Database, args: &LogsArgs) -> Result<(), Failure> {
    let table = &args.db.table;
    let mut client = connect(db).await.map_err(|(_, e)| e)?;
    let reader = reader(&mut client, args).await?;
    let filter = filter(&mut client, &reader, args).await?;
    let mut printer = Printer::new(args.json, !args.json && use_color());

    let (mut rows, follower) = if args.follow {
        let (rows, follower) = reader
            .follow(&mut client, &filter, args.limit)
            .await
            .map_err(|e| read_error(&e.into(), table, db))?;
        (rows, Some(follower))
    } else {
        let rows = reader
            .newest(&mut client, &filter, args.limit)
            .await
            .map_err(|e| read_error(&e.into(), table, db))?;
        (rows, None)
    };
    rows.reverse();
    if rows.is_empty() {
        let what = if filter.is_empty() {
            format!("no rows in table {table} ({})", db.description)
        } else {
            format!("no rows in table {table} match ({})", db.description)
        };
        if args.json {
            eprintln!("{what}");
        } else {
            println!("{what}");
        }
    } else if !emit(&printer.render(&rows))? {
        return Ok(());
    }
    match follower {
        Some(follower) => follow(db, client, follower, table, &mut printer).await,
        None => Ok(()),
    }
}

/// Print matching rows as they are committed, until Ctrl-C. A lost
/// connection is retried at every poll.
async fn follow(
    db: &Database,
    client: Object,
    mut follower: Follower,
    table: &TableName,
    printer: &mut Printer,
) -> Result<(), Failure> {
    if std::io::stderr().is_terminal() {
        eprintln!("following new rows of table {table}; Ctrl-C to stop");
    }
    let signal = shutdown_signal();
    tokio::pin!(signal);
    let mut client = Some(client);
    loop {
        let pause = follower.pause(POLL_INTERVAL);
        tokio::select! {
            () = &mut signal => return Ok(()),
            () = tokio::time::sleep(pause) => {}
        }
        if client.is_none() {
            match connect(db).await {
                Ok(session) => {
                    eprintln!("pglogsink: reconnected to {}", db.description);
                    client = Some(session);
                }
                Err((true, _)) => continue,
                Err((false, e)) => return Err(e),
            }
        }
        let Some(session) = &mut client else { continue };
        match follower.poll(session).await.map_err(Error::from) {
            Ok(rows) => {
                if !rows.is_empty() && !emit(&printer.render(&rows))? {
                    return Ok(());
                }
            }
            Err(e) if e.is_transient() => {
                eprintln!("pglogsink: lost {} ({e}); retrying", db.description);
                client = None;
            }
            Err(e) => return Err(read_error(&e, table, db)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    fn row(id: i64, level: &str, target: &str, message: &str, fields: Option<&str>) -> LogRow {
        LogRow {
            id,
            micros: 0,
            timestamp: "2026-11-23 16:19:18.017687 +01:00".into(),
            level: level.into(),
            target: target.into(),
            message: message.into(),
            thread_id: Some(id * 100),
            fields: fields.map(str::to_owned),
        }
    }

    #[test]
    fn text_is_aligned_and_plain_unless_coloured() {
        let rows = [
            row(1, "info", "http", "GET /", Some(r#"{"status": 200}"#)),
            row(
                20,
                "error",
                "shop::orders",
                "line one\nline two\x1b[2J",
                None,
            ),
        ];
        let mut printer = Printer::new(false, false);
        assert_eq!(
            printer.render(&rows),
            "2026-11-23 16:19:18.017687 +01:00  INFO   http          [ 100]  GET /  {\"status\": 200}\n\
             2026-11-23 16:19:18.017687 +01:00  ERROR  shop::orders  [2000]  line one\\nline two\\u{1b}[2J\n"
        );
        let coloured = Printer::new(false, true).render(&rows[1..]);
        assert!(coloured.contains("\x1b[1;31mERROR\x1b[0m"), "{coloured:?}");
        assert_eq!(
            coloured.matches('\x1b').count(),
            8,
            "only our own escapes: {coloured:?}"
        );
    }

    #[test]
    fn json_lines_are_one_object_per_row() {
        let mut printer = Printer::new(true, false);
        let mut r = row(7, "warn", "app", "say \"hi\"\n", Some(r#"{"n": 1}"#));
        r.timestamp = "2026-11-23T15:19:18.017687Z".into();
        let mut bare = row(8, "info", "app", "", None);
        bare.thread_id = None;
        let out = printer.render(&[r, bare]);
        let lines: Vec<Value> = out
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(
            lines[0],
            json!({"id": 7, "timestamp": "2026-11-23T15:19:18.017687Z", "level": "warn",
                   "target": "app", "message": "say \"hi\"\n", "thread_id": 700, "fields": {"n": 1}})
        );
        assert_eq!(lines[1]["fields"], Value::Null);
        assert_eq!(lines[1]["thread_id"], Value::Null);
        assert!(out.starts_with(r#"{"id":7,"timestamp":"#), "{out}");
    }

    #[test]
    fn the_local_zone_comes_from_tz_then_etc_localtime() {
        let link = Path::new("../usr/share/zoneinfo/Europe/Paris");
        assert_eq!(
            zone_name(Some("Asia/Tokyo"), Some(link), None),
            "Asia/Tokyo"
        );
        assert_eq!(
            zone_name(Some(":America/New_York"), None, None),
            "America/New_York"
        );
        assert_eq!(
            zone_name(Some("/usr/share/zoneinfo/Asia/Kolkata"), None, None),
            "Asia/Kolkata"
        );
        assert_eq!(zone_name(Some(""), Some(link), None), "UTC");
        assert_eq!(zone_name(None, Some(link), None), "Europe/Paris");
        assert_eq!(
            zone_name(None, None, Some("Europe/Berlin\n")),
            "Europe/Berlin"
        );
        assert_eq!(zone_name(None, Some(Path::new("/tmp/x")), None), "UTC");
        assert_eq!(zone_name(None, None, None), "UTC");
    }
}
