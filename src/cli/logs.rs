//! `pglogsink logs`: read the Log table. The newest matching rows are shown
//! oldest first, like `tail`; `--follow` keeps printing new rows until
//! Ctrl-C; `--json` prints one JSON object per row (NDJSON).
//!
//! The filters become one SQL `WHERE`, every value a bind parameter. Times
//! are shown and read in the local time zone: the session's `TimeZone` is set
//! from `TZ` or `/etc/localtime`, so PostgreSQL does the conversion and the
//! binary needs no time zone database.
//!
//! `--follow` polls twice a second for rows whose `id` is above the highest
//! `id` seen so far: a range scan of the primary key that reads only the new
//! rows, however large the table, with no trigger or extra index.

use std::borrow::Cow;
use std::fmt::Write as _;
use std::io::{IsTerminal, Write as _};
use std::path::Path;
use std::time::{Duration, SystemTime};

use deadpool_postgres::{Object, PoolError};
use pglogsink::tokio_postgres::types::ToSql;
use pglogsink::tokio_postgres::{self, Row};
use pglogsink::{Level, TableName};
use serde_json::Value;

use super::db::{Database, Mode};
use super::signal::shutdown_signal;
use super::{DatabaseArgs, Failure};

/// How often `--follow` asks for new rows.
const POLL_INTERVAL: Duration = Duration::from_millis(500);
/// Most rows `--follow` reads per query; a larger burst takes several.
const FOLLOW_PAGE: i64 = 10_000;
/// The target column is padded to the longest target seen, up to this.
const MAX_TARGET_WIDTH: usize = 32;
/// Longest accepted `--since`/`--until` duration: 100 years.
const MAX_AGO_SECS: u64 = 100 * 365 * 86_400;

const WHEN_FORM: &str =
    "expected a duration such as 30s, 15m, 2h or 7d (or 1h30m), or a timestamp \
     such as 2026-11-23T16:19:18Z, '2026-11-23 16:19:18' (local time) or 2026-11-23";

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

    /// Only rows of this request: short for --field request_id=ID.
    #[arg(long, env = "PGLOGSINK_REQUEST_ID", value_name = "ID")]
    pub(crate) request_id: Option<String>,

    /// After the newest rows, keep printing new matching rows as they arrive, until Ctrl-C.
    #[arg(long, short = 'f', env = "PGLOGSINK_FOLLOW",
          value_parser = clap::builder::BoolishValueParser::new())]
    pub(crate) follow: bool,

    /// Print one JSON object per row (NDJSON): id, timestamp (RFC 3339, UTC), level, target,
    /// message, thread_id, fields.
    #[arg(long, env = "PGLOGSINK_JSON", value_parser = clap::builder::BoolishValueParser::new())]
    pub(crate) json: bool,
}

/// A point in time given on the command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum When {
    /// This long before now.
    Ago(Duration),
    /// A timestamp as written; PostgreSQL reads it (a time without an offset
    /// is local time).
    At(String),
}

/// One `--field KEY=VALUE`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct FieldMatch {
    key: String,
    value: String,
}

impl FieldMatch {
    /// The jsonb objects that the fields of a matching row contain: the value
    /// as a string, and as a JSON number, boolean or null when it reads as one.
    fn objects(&self) -> Vec<Value> {
        let object = |value| Value::Object([(self.key.clone(), value)].into_iter().collect());
        let mut objects = vec![object(Value::String(self.value.clone()))];
        if let Ok(native @ (Value::Number(_) | Value::Bool(_) | Value::Null)) =
            serde_json::from_str::<Value>(&self.value)
        {
            objects.push(object(native));
        }
        objects
    }
}

fn parse_level(s: &str) -> Result<Level, String> {
    s.parse::<Level>().map_err(|e| e.to_string())
}

fn parse_when(s: &str) -> Result<When, String> {
    if let Some(ago) = parse_ago(s) {
        return Ok(When::Ago(ago));
    }
    if is_timestamp(s) {
        return Ok(When::At(s.to_owned()));
    }
    Err(WHEN_FORM.to_owned())
}

/// `30s`, `15m`, `2h`, `7d`, or several of them (`1h30m`).
fn parse_ago(s: &str) -> Option<Duration> {
    if s.is_empty() {
        return None;
    }
    let mut rest = s;
    let mut total: u64 = 0;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        let n: u64 = rest[..digits].parse().ok()?;
        let unit = match rest[digits..].chars().next()? {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            'd' => 86_400,
            _ => return None,
        };
        total = total.checked_add(n.checked_mul(unit)?)?;
        rest = &rest[digits + 1..];
    }
    (total <= MAX_AGO_SECS).then(|| Duration::from_secs(total))
}

/// `YYYY-MM-DD`, optionally followed by `T` or a space, `HH:MM[:SS[.frac]]`
/// and an offset (`Z`, `+HH`, `+HHMM`, `+HH:MM`). Only the shape and the
/// field ranges are checked here; PostgreSQL checks the rest (February 30).
fn is_timestamp(s: &str) -> bool {
    let mut p = Cursor(s.as_bytes());
    let date = p.number(4).is_some()
        && p.eat(b'-')
        && p.number(2).is_some_and(|m| (1..=12).contains(&m))
        && p.eat(b'-')
        && p.number(2).is_some_and(|d| (1..=31).contains(&d));
    if !date {
        return false;
    }
    if p.0.is_empty() {
        return true;
    }
    let time = (p.eat(b'T') || p.eat(b' '))
        && p.number(2).is_some_and(|h| h < 24)
        && p.eat(b':')
        && p.number(2).is_some_and(|m| m < 60);
    if !time {
        return false;
    }
    if p.eat(b':') {
        if !p.number(2).is_some_and(|s| s <= 60) {
            return false;
        }
        if p.eat(b'.') && p.digits() == 0 {
            return false;
        }
    }
    if p.eat(b'Z') || p.0.is_empty() {
        return p.0.is_empty();
    }
    let offset = (p.eat(b'+') || p.eat(b'-')) && p.number(2).is_some_and(|h| h < 24);
    if !offset {
        return false;
    }
    if !p.0.is_empty() {
        p.eat(b':');
        if !p.number(2).is_some_and(|m| m < 60) {
            return false;
        }
    }
    p.0.is_empty()
}

/// A little reader for [`is_timestamp`].
struct Cursor<'a>(&'a [u8]);

impl Cursor<'_> {
    fn eat(&mut self, byte: u8) -> bool {
        match self.0.split_first() {
            Some((&b, rest)) if b == byte => {
                self.0 = rest;
                true
            }
            _ => false,
        }
    }

    /// Exactly `len` digits, as a number.
    fn number(&mut self, len: usize) -> Option<u32> {
        let digits = self.0.get(..len)?;
        if !digits.iter().all(u8::is_ascii_digit) {
            return None;
        }
        self.0 = &self.0[len..];
        Some(digits.iter().fold(0, |n, d| n * 10 + u32::from(d - b'0')))
    }

    /// Skip digits; how many there were.
    fn digits(&mut self) -> usize {
        let n = self.0.iter().take_while(|b| b.is_ascii_digit()).count();
        self.0 = &self.0[n..];
        n
    }
}

fn parse_field(s: &str) -> Result<FieldMatch, String> {
    match s.split_once('=') {
        Some((key, value)) if !key.is_empty() => Ok(FieldMatch {
            key: key.to_owned(),
            value: value.to_owned(),
        }),
        _ => Err("expected KEY=VALUE, e.g. request_id=r1 or status=500".to_owned()),
    }
}

/// The filters with times resolved to instants.
#[derive(Debug, Default)]
struct Filters {
    level: Option<Level>,
    since: Option<SystemTime>,
    until: Option<SystemTime>,
    grep: Option<String>,
    target: Option<String>,
    fields: Vec<FieldMatch>,
}

impl Filters {
    fn is_empty(&self) -> bool {
        matches!(self.level, None | Some(Level::Trace))
            && self.since.is_none()
            && self.until.is_none()
            && self.grep.is_none()
            && self.target.is_none()
            && self.fields.is_empty()
    }
}

type Param = Box<dyn ToSql + Sync + Send>;

/// SQL text and its parameters.
struct Query {
    sql: String,
    params: Vec<Param>,
}

impl Query {
    fn param_refs(&self) -> Vec<&(dyn ToSql + Sync)> {
        self.params
            .iter()
            .map(|p| &**p as &(dyn ToSql + Sync))
            .collect()
    }

    /// Add a parameter; its placeholder.
    fn bind(&mut self, value: impl ToSql + Sync + Send + 'static) -> String {
        self.params.push(Box::new(value));
        format!("${}", self.params.len())
    }

    /// The filters as `AND`ed conditions.
    fn conditions(&mut self, filters: &Filters) -> Vec<String> {
        let mut conditions = Vec::new();
        if let Some(level) = filters.level.filter(|&l| l > Level::Trace) {
            // A literal from a closed set: PostgreSQL types it as the column's
            // enum, so this works whatever schema the enum lives in.
            conditions.push(format!("level >= '{}'", level.as_str()));
        }
        if let Some(since) = filters.since {
            conditions.push(format!("\"timestamp\" >= {}", self.bind(since)));
        }
        if let Some(until) = filters.until {
            conditions.push(format!("\"timestamp\" < {}", self.bind(until)));
        }
        if let Some(text) = &filters.grep {
            let pattern = format!("%{}%", escape_like(text));
            conditions.push(format!("message ILIKE {}", self.bind(pattern)));
        }
        if let Some(prefix) = &filters.target {
            let pattern = format!("{}%", escape_like(prefix));
            conditions.push(format!("target LIKE {}", self.bind(pattern)));
        }
        for field in &filters.fields {
            let alternatives: Vec<String> = field
                .objects()
                .into_iter()
                .map(|object| format!("fields @> {}", self.bind(object)))
                .collect();
            conditions.push(match alternatives.len() {
                1 => alternatives.join(""),
                _ => format!("({})", alternatives.join(" OR ")),
            });
        }
        conditions
    }
}

/// Escape `\`, `%` and `_` for a LIKE pattern (whose escape is `\`).
fn escape_like(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '\\' | '%' | '_') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// Columns for text output: the time in the session's (local) time zone.
const TEXT_COLUMNS: &str = r#"id, to_char("timestamp", 'YYYY-MM-DD HH24:MI:SS.US TZH:TZM'),
       level::text, target, message, thread_id, fields::text"#;
/// Columns for `--json`: the time as RFC 3339 in UTC.
const JSON_COLUMNS: &str = r#"id, to_char("timestamp" AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'),
       level::text, target, message, thread_id, fields::text"#;

/// The newest `limit` matching rows (newest first), optionally only up to
/// id `upto`. Without filters, a backward scan of the "timestamp" index that
/// stops after `limit` rows.
fn newest_query(
    table: &TableName,
    filters: &Filters,
    columns: &str,
    limit: i64,
    upto: Option<i64>,
) -> Query {
    let mut query = Query {
        sql: String::new(),
        params: Vec::new(),
    };
    let mut conditions = Vec::new();
    if let Some(upto) = upto {
        conditions.push(format!("id <= {}", query.bind(upto)));
    }
    conditions.extend(query.conditions(filters));
    let limit = query.bind(limit);
    query.sql = format!(
        "SELECT {columns} FROM {}{} ORDER BY \"timestamp\" DESC, id DESC LIMIT {limit}",
        table.quoted(),
        where_clause(&conditions)
    );
    query
}

/// Matching rows with `after < id <= upto`, in id order: a range scan of the
/// primary key.
fn follow_query(
    table: &TableName,
    filters: &Filters,
    columns: &str,
    after: i64,
    upto: i64,
) -> Query {
    let mut query = Query {
        sql: String::new(),
        params: Vec::new(),
    };
    let mut conditions = vec![
        format!("id > {}", query.bind(after)),
        format!("id <= {}", query.bind(upto)),
    ];
    conditions.extend(query.conditions(filters));
    let page = query.bind(FOLLOW_PAGE);
    query.sql = format!(
        "SELECT {columns} FROM {}{} ORDER BY id LIMIT {page}",
        table.quoted(),
        where_clause(&conditions)
    );
    query
}

fn where_clause(conditions: &[String]) -> String {
    if conditions.is_empty() {
        String::new()
    } else {
        format!(" WHERE {}", conditions.join(" AND "))
    }
}

/// One row as read for output.
#[derive(Debug, Clone, PartialEq)]
struct LogRow {
    id: i64,
    timestamp: String,
    level: String,
    target: String,
    message: String,
    thread_id: Option<i64>,
    fields: Option<String>,
}

impl LogRow {
    fn read(row: &Row) -> Result<LogRow, tokio_postgres::Error> {
        Ok(LogRow {
            id: row.try_get(0)?,
            timestamp: row.try_get(1)?,
            level: row.try_get(2)?,
            target: row.try_get(3)?,
            message: row.try_get(4)?,
            thread_id: row.try_get(5)?,
            fields: row.try_get(6)?,
        })
    }
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

/// The server's own message ("relation ... does not exist"), not the
/// driver's bare "db error".
fn server_message(e: &tokio_postgres::Error) -> String {
    e.as_db_error()
        .map_or_else(|| e.to_string(), |d| d.message().to_owned())
}

/// What a failed query means for the user.
fn read_error(e: &tokio_postgres::Error, table: &TableName, db: &Database) -> Failure {
    if e.code() == Some(&tokio_postgres::error::SqlState::UNDEFINED_TABLE) {
        format!(
            "table {table} does not exist in {}: run `pglogsink serve` or `pglogsink migrate` first",
            db.description
        )
        .into()
    } else {
        format!("reading table {table}: {}", server_message(e)).into()
    }
}

/// A lost connection or a server restarting: `--follow` waits it out.
fn is_transient(e: &tokio_postgres::Error) -> bool {
    let io = std::error::Error::source(e).is_some_and(|s| s.is::<std::io::Error>());
    let class = e.code().map(|c| c.code());
    e.is_closed() || io || class.is_some_and(|c| c.starts_with("08") || c.starts_with("57P"))
}

/// A connection whose session time zone is the local one.
async fn connect(db: &Database, zone: &str) -> Result<Object, (bool, Failure)> {
    let client = db.pool.get().await.map_err(|e| {
        let transient = match &e {
            PoolError::Backend(e) => is_transient(e),
            PoolError::Timeout(_) => true,
            _ => false,
        };
        (
            transient,
            Failure::from(format!("connecting to {}: {e}", db.description)),
        )
    })?;
    let set = client
        .query_one("SELECT set_config('TimeZone', $1, false)", &[&zone])
        .await;
    if let Err(e) = set {
        if is_transient(&e) {
            return Err((
                true,
                format!("connecting to {}: {e}", db.description).into(),
            ));
        }
        eprintln!("pglogsink: PostgreSQL does not know the time zone {zone:?}; showing UTC");
        client
            .batch_execute("SET TimeZone = 'UTC'")
            .await
            .map_err(|e| (is_transient(&e), Failure::from(e.to_string())))?;
    }
    Ok(client)
}

/// Resolve `--since`/`--until` to instants: durations by this machine's
/// clock, timestamps by PostgreSQL in the session (local) time zone.
async fn resolve(client: &Object, args: &LogsArgs) -> Result<Filters, Failure> {
    let since = resolve_when(client, "--since", args.since.as_ref()).await?;
    let until = resolve_when(client, "--until", args.until.as_ref()).await?;
    if let (Some(since), Some(until)) = (since, until) {
        if since >= until {
            return Err("--since must be before --until".into());
        }
    }
    let mut fields = args.fields.clone();
    if let Some(id) = &args.request_id {
        fields.push(FieldMatch {
            key: "request_id".to_owned(),
            value: id.clone(),
        });
    }
    Ok(Filters {
        level: args.level,
        since,
        until,
        grep: args.grep.clone(),
        target: args.target.clone(),
        fields,
    })
}

async fn resolve_when(
    client: &Object,
    option: &str,
    when: Option<&When>,
) -> Result<Option<SystemTime>, Failure> {
    match when {
        None => Ok(None),
        Some(When::Ago(ago)) => Ok(Some(
            SystemTime::now()
                .checked_sub(*ago)
                .unwrap_or(SystemTime::UNIX_EPOCH),
        )),
        Some(When::At(text)) => {
            let row = client
                .query_one("SELECT $1::text::timestamptz", &[text])
                .await
                .map_err(|e| {
                    let why = server_message(&e);
                    format!("invalid value {text:?} for {option}: {why}; {WHEN_FORM}")
                })?;
            Ok(Some(row.try_get(0)?))
        }
    }
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

/// The highest id now in the table (0 when empty): one probe of the
/// primary key.
async fn high_water(client: &Object, table: &TableName) -> Result<i64, tokio_postgres::Error> {
    let sql = format!("SELECT coalesce(max(id), 0) FROM {}", table.quoted());
    client.query_one(&sql, &[]).await?.try_get(0)
}

async fn show(db: &Database, args: &LogsArgs) -> Result<(), Failure> {
    let table = &args.db.table;
    let zone = local_time_zone();
    let client = connect(db, &zone).await.map_err(|(_, e)| e)?;
    let filters = resolve(&client, args).await?;
    let columns = if args.json {
        JSON_COLUMNS
    } else {
        TEXT_COLUMNS
    };
    let mut printer = Printer::new(args.json, !args.json && use_color());

    // With --follow, the newest rows are those up to the current highest
    // id, and following starts right after it: no row is shown twice.
    let upto = if args.follow {
        Some(
            high_water(&client, table)
                .await
                .map_err(|e| read_error(&e, table, db))?,
        )
    } else {
        None
    };
    let query = newest_query(table, &filters, columns, args.limit, upto);
    let rows = client
        .query(&query.sql, &query.param_refs())
        .await
        .map_err(|e| read_error(&e, table, db))?;
    let mut rows = rows
        .iter()
        .map(LogRow::read)
        .collect::<Result<Vec<_>, _>>()?;
    rows.reverse();
    if rows.is_empty() {
        let what = if filters.is_empty() {
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
    match upto {
        Some(upto) => follow(db, client, &zone, args, &filters, &mut printer, upto).await,
        None => Ok(()),
    }
}

/// Print matching rows above id `cursor` as they arrive, until Ctrl-C. A
/// lost connection is retried at every poll.
async fn follow(
    db: &Database,
    client: Object,
    zone: &str,
    args: &LogsArgs,
    filters: &Filters,
    printer: &mut Printer,
    mut cursor: i64,
) -> Result<(), Failure> {
    let table = &args.db.table;
    let columns = if args.json {
        JSON_COLUMNS
    } else {
        TEXT_COLUMNS
    };
    if std::io::stderr().is_terminal() {
        eprintln!("following new rows of table {table}; Ctrl-C to stop");
    }
    let signal = shutdown_signal();
    tokio::pin!(signal);
    let mut client = Some(client);
    loop {
        tokio::select! {
            () = &mut signal => return Ok(()),
            () = tokio::time::sleep(POLL_INTERVAL) => {}
        }
        if client.is_none() {
            match connect(db, zone).await {
                Ok(session) => {
                    eprintln!("pglogsink: reconnected to {}", db.description);
                    client = Some(session);
                }
                Err((true, _)) => continue,
                Err((false, e)) => return Err(e),
            }
        }
        let Some(session) = &client else { continue };
        match poll(session, table, filters, columns, printer, &mut cursor).await {
            Ok(true) => {}
            Ok(false) => return Ok(()),
            Err(Poll::Lost(e)) => {
                eprintln!("pglogsink: lost {} ({e}); retrying", db.description);
                client = None;
            }
            Err(Poll::Failed(e)) => return Err(read_error(&e, table, db)),
            Err(Poll::Output(e)) => return Err(e),
        }
    }
}

/// Why a poll stopped.
enum Poll {
    Lost(tokio_postgres::Error),
    Failed(tokio_postgres::Error),
    Output(Failure),
}

impl From<tokio_postgres::Error> for Poll {
    fn from(e: tokio_postgres::Error) -> Poll {
        if is_transient(&e) {
            Poll::Lost(e)
        } else {
            Poll::Failed(e)
        }
    }
}

/// Print the matching rows that arrived since `cursor` and advance it;
/// false once stdout is closed.
async fn poll(
    client: &Object,
    table: &TableName,
    filters: &Filters,
    columns: &str,
    printer: &mut Printer,
    cursor: &mut i64,
) -> Result<bool, Poll> {
    let upto = high_water(client, table).await?;
    while *cursor < upto {
        let query = follow_query(table, filters, columns, *cursor, upto);
        let rows = client.query(&query.sql, &query.param_refs()).await?;
        let rows = rows
            .iter()
            .map(LogRow::read)
            .collect::<Result<Vec<_>, _>>()?;
        *cursor = match rows.last() {
            Some(last) if rows.len() as i64 == FOLLOW_PAGE => last.id,
            _ => upto,
        };
        if !rows.is_empty() && !emit(&printer.render(&rows)).map_err(Poll::Output)? {
            return Ok(false);
        }
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn table() -> TableName {
        TableName::parse("audit.log").unwrap()
    }

    #[test]
    fn durations_take_s_m_h_d_and_combinations() {
        assert_eq!(parse_ago("30s"), Some(Duration::from_secs(30)));
        assert_eq!(parse_ago("15m"), Some(Duration::from_secs(900)));
        assert_eq!(parse_ago("2h"), Some(Duration::from_secs(7200)));
        assert_eq!(parse_ago("7d"), Some(Duration::from_secs(604_800)));
        assert_eq!(parse_ago("1h30m"), Some(Duration::from_secs(5400)));
        assert_eq!(parse_ago("0s"), Some(Duration::ZERO));
        for bad in [
            "",
            "15",
            "m",
            "15x",
            "-5m",
            "1.5h",
            "15 m",
            "15M",
            "h1",
            "36501d",
            "99999999999999999999d",
        ] {
            assert_eq!(parse_ago(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn timestamps_in_rfc_3339_or_local_forms() {
        for ok in [
            "2026-11-23",
            "2026-11-23T16:19",
            "2026-11-23 16:19:18",
            "2026-11-23T16:19:18Z",
            "2026-11-23T16:19:18.123456+01:00",
            "2026-11-23 16:19:18-0530",
            "2026-11-23T16:19:18+05",
            "2026-02-30",
        ] {
            assert!(is_timestamp(ok), "{ok:?}");
            assert_eq!(parse_when(ok), Ok(When::At(ok.to_owned())));
        }
        for bad in [
            "yesterday",
            "now",
            "2026-13-01",
            "2026-11-23T25:00",
            "2026-11-23T16",
            "2026-11-23T16:19:18.",
            "2026-11-23T16:19:18+1",
            "2026-11-23T16:19:18Z ",
            "26-11-23",
            "2026/11/23",
            "2026-11-23 16:19:18; DROP TABLE log",
        ] {
            assert!(!is_timestamp(bad), "{bad:?}");
            let err = parse_when(bad).unwrap_err();
            assert!(
                err.contains("15m") && err.contains("2026-11-23T16:19:18Z"),
                "{err}"
            );
        }
        assert_eq!(parse_when("15m"), Ok(When::Ago(Duration::from_secs(900))));
    }

    #[test]
    fn fields_are_key_equals_value() {
        assert_eq!(
            parse_field("request_id=r1"),
            Ok(FieldMatch {
                key: "request_id".into(),
                value: "r1".into()
            })
        );
        assert_eq!(parse_field("a==b").unwrap().value, "=b");
        assert_eq!(parse_field("a=").unwrap().value, "");
        for bad in ["", "=x", "novalue"] {
            assert!(
                parse_field(bad).unwrap_err().contains("KEY=VALUE"),
                "{bad:?}"
            );
        }
        assert!(parse_level("loud").unwrap_err().contains("trace, debug"));
        assert_eq!(parse_level("WARN"), Ok(Level::Warn));
    }

    #[test]
    fn numbers_and_booleans_match_both_forms() {
        let objects = |s: &str| parse_field(s).unwrap().objects();
        assert_eq!(
            objects("status=500"),
            [json!({"status": "500"}), json!({"status": 500})]
        );
        assert_eq!(
            objects("ok=true"),
            [json!({"ok": "true"}), json!({"ok": true})]
        );
        assert_eq!(
            objects("x=null"),
            [json!({"x": "null"}), json!({"x": null})]
        );
        assert_eq!(
            objects("ratio=0.5"),
            [json!({"ratio": "0.5"}), json!({"ratio": 0.5})]
        );
        assert_eq!(objects("name=ann"), [json!({"name": "ann"})]);
        assert_eq!(objects("list=[1]"), [json!({"list": "[1]"})]);
    }

    #[test]
    fn like_wildcards_are_escaped() {
        assert_eq!(escape_like(r"50%_off\now"), r"50\%\_off\\now");
        assert_eq!(escape_like("plain"), "plain");
    }

    #[test]
    fn no_filters_is_the_index_scan_of_the_newest() {
        let q = newest_query(&table(), &Filters::default(), "id", 50, None);
        assert_eq!(
            q.sql,
            r#"SELECT id FROM "audit"."log" ORDER BY "timestamp" DESC, id DESC LIMIT $1"#
        );
        assert_eq!(format!("{:?}", q.params), "[50]");
    }

    #[test]
    fn every_filter_becomes_a_condition_with_bound_values() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000_000);
        let filters = Filters {
            level: Some(Level::Warn),
            since: Some(t),
            until: Some(t + Duration::from_secs(60)),
            grep: Some("100%".into()),
            target: Some("shop_x".into()),
            fields: vec![
                parse_field("status=500").unwrap(),
                parse_field("request_id=r'1").unwrap(),
            ],
        };
        let q = newest_query(&table(), &filters, "id", 10, Some(99));
        assert_eq!(
            q.sql,
            "SELECT id FROM \"audit\".\"log\" WHERE id <= $1 AND level >= 'warn' \
             AND \"timestamp\" >= $2 AND \"timestamp\" < $3 AND message ILIKE $4 \
             AND target LIKE $5 AND (fields @> $6 OR fields @> $7) AND fields @> $8 \
             ORDER BY \"timestamp\" DESC, id DESC LIMIT $9"
        );
        let params: Vec<String> = q.params.iter().map(|p| format!("{p:?}")).collect();
        assert_eq!(params[0], "99");
        assert_eq!(params[3], r#""%100\\%%""#);
        assert_eq!(params[4], r#""shop\\_x%""#);
        assert_eq!(params[5], r#"Object {"status": String("500")}"#);
        assert_eq!(params[6], r#"Object {"status": Number(500)}"#);
        assert_eq!(params[7], r#"Object {"request_id": String("r'1")}"#);
        assert_eq!(params[8], "10");
        assert_eq!(q.param_refs().len(), 9);
    }

    #[test]
    fn trace_is_no_level_condition() {
        let filters = Filters {
            level: Some(Level::Trace),
            ..Filters::default()
        };
        assert!(filters.is_empty());
        let q = newest_query(&table(), &filters, "id", 5, None);
        assert!(!q.sql.contains("level"), "{}", q.sql);
    }

    #[test]
    fn following_is_an_id_range_in_id_order() {
        let filters = Filters {
            level: Some(Level::Error),
            ..Filters::default()
        };
        let q = follow_query(&table(), &filters, "id", 10, 20);
        assert_eq!(
            q.sql,
            "SELECT id FROM \"audit\".\"log\" WHERE id > $1 AND id <= $2 AND level >= 'error' \
             ORDER BY id LIMIT $3"
        );
        assert_eq!(
            format!("{:?}", q.params),
            format!("[10, 20, {FOLLOW_PAGE}]")
        );
    }

    fn row(id: i64, level: &str, target: &str, message: &str, fields: Option<&str>) -> LogRow {
        LogRow {
            id,
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
