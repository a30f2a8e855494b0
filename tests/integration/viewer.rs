//! The web viewer of `serve`, in a real browser: headless Chromium driven
//! through chromedriver (WebDriver), against `serve` on the shared test
//! database. Plus its JSON API over plain HTTP.
//!
//! Chromium and chromedriver are Debian's `chromium` and `chromium-driver`
//! (`.ci/run` installs them); without them the browser tests are ignored,
//! and say so. With `PGLOGSINK_VIEWER_SCREENSHOT=docs/viewer.png` the first
//! test saves the screenshot the README shows.

use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use libtest_mimic::{Failed, Trial};
use pglogsink::TableName;
use serde_json::{json, Value};

use crate::common::{async_trial, check, check_time, fresh_table, pool, url, ToolGate};
use crate::service::{free_port, http_get, Serve};

/// How long the page may take to show what a test waits for.
const PATIENCE: Duration = Duration::from_secs(10);
const XSS: &str = "<img src=x onerror=alert(1)>";

pub fn trials() -> Vec<Trial> {
    let chromium = ToolGate::new(
        "viewer",
        browser().is_none().then(|| {
            "chromium or chromedriver is not installed (Debian: apt-get install chromium \
             chromium-driver; .ci/run installs them)"
                .to_owned()
        }),
    );
    vec![
        async_trial(
            "viewer::api_filters_pages_counts_and_names_bad_parameters",
            api,
        ),
        async_trial(
            "viewer::a_query_past_the_statement_timeout_is_a_503",
            statement_timeout,
        ),
        chromium.gate(async_trial(
            "viewer::browser_shows_rows_and_a_typed_filter_lives_in_the_url",
            rows_and_filters,
        )),
        chromium.gate(async_trial(
            "viewer::browser_live_tail_shows_a_new_row_within_2s",
            live_tail,
        )),
        chromium.gate(async_trial(
            "viewer::browser_live_tail_keeps_up_with_bursts_and_caps_its_rows",
            tail_burst,
        )),
        chromium.gate(async_trial(
            "viewer::browser_shows_logged_markup_as_text_and_runs_nothing",
            markup_is_text,
        )),
    ]
}

/// chromium and chromedriver, when both are installed.
fn browser() -> Option<(PathBuf, PathBuf)> {
    let find = |names: &[&str]| {
        names.iter().find_map(|name| {
            std::env::var_os("PATH").and_then(|paths| {
                std::env::split_paths(&paths)
                    .map(|dir| dir.join(name))
                    .find(|p| p.is_file())
            })
        })
    };
    Some((
        find(&["chromium", "chromium-browser"])?,
        find(&["chromedriver"])?,
    ))
}

/// chromedriver on a free loopback port, killed on drop.
struct Driver {
    child: Child,
    url: String,
}

impl Driver {
    fn start() -> Result<Driver, Failed> {
        let (_, driver) = browser().ok_or("chromium/chromedriver not installed")?;
        let port = free_port()?;
        let child = Command::new(driver)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        let driver = Driver {
            child,
            url: format!("http://127.0.0.1:{port}"),
        };
        let deadline = Instant::now() + PATIENCE;
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            check(Instant::now() < deadline, || {
                "chromedriver did not listen within 10 s".into()
            })?;
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(driver)
    }

    /// A new browser session (a fresh profile: nothing shared with others).
    async fn session(&self) -> Result<Client, Failed> {
        let (chromium, _) = browser().ok_or("chromium not installed")?;
        let mut caps = serde_json::Map::new();
        caps.insert(
            "goog:chromeOptions".into(),
            json!({
                "binary": chromium,
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                         "--disable-dev-shm-usage", "--window-size=1280,800"],
            }),
        );
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        Ok(ClientBuilder::new(connector)
            .capabilities(caps)
            .connect(&self.url)
            .await
            .map_err(|e| format!("starting a Chromium session: {e}"))?)
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `serve` on a table of its own, and that table.
fn serve() -> Result<(Serve, TableName), Failed> {
    let db = url()?;
    let table = fresh_table("viewer");
    let serve = Serve::start(&["--database-url", &db, "--table", &table.to_string()], &[])?;
    Ok((serve, table))
}

/// Insert rows as (seconds ago, level, target, message, fields JSON).
async fn insert(table: &TableName, rows: &[(i64, &str, &str, &str, Value)]) -> Result<(), Failed> {
    let client = pool()?.get().await?;
    for (ago, level, target, message, fields) in rows {
        client
            .execute(
                &format!(
                    "INSERT INTO {} (\"timestamp\", level, target, message, thread_id, fields) \
                     VALUES (now() - make_interval(secs => $1::int8), $2::text::pglogsink_level, \
                     $3, $4, 1, $5)",
                    table.quoted()
                ),
                &[ago, level, target, message, fields],
            )
            .await?;
    }
    Ok(())
}

/// Wait until `script` (a JavaScript expression) is truthy; its last value.
async fn wait_for(browser: &Client, script: &str, what: &str) -> Result<Value, Failed> {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let value = browser
            .execute(&format!("return {script};"), vec![])
            .await?;
        if !matches!(value, Value::Null | Value::Bool(false)) {
            return Ok(value);
        }
        check(Instant::now() < deadline, || {
            format!("the page did not show {what} within {PATIENCE:?}")
        })?;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The messages in the table, top to bottom.
async fn messages(browser: &Client) -> Result<Vec<String>, Failed> {
    let value = browser
        .execute(
            "return [...document.querySelectorAll('#rows tbody tr.row td.msg')].map(td => td.textContent);",
            vec![],
        )
        .await?;
    Ok(serde_json::from_value(value)?)
}

/// Wait for the page to have loaded its rows after a (re)load.
async fn settled(browser: &Client) -> Result<(), Failed> {
    wait_for(
        browser,
        "document.body.dataset.state === 'ready'",
        "its rows",
    )
    .await?;
    Ok(())
}

async fn rows_and_filters() -> Result<(), Failed> {
    let (serve, table) = serve()?;
    let fields = |status: i64, user: &str| json!({"status": status, "user": user});
    insert(
        &table,
        &[
            (
                50,
                "info",
                "shop::orders",
                "order placed",
                fields(200, "ann"),
            ),
            (
                40,
                "warn",
                "shop::payments",
                "payment timeout after 30 s",
                fields(504, "bob"),
            ),
            (
                30,
                "error",
                "db",
                "connection pool exhausted",
                fields(500, "ann"),
            ),
            (
                20,
                "debug",
                "http",
                "GET /recipes/42 answered",
                fields(200, "cy"),
            ),
            (
                10,
                "info",
                "shop::payments",
                "payment timeout retried",
                fields(200, "bob"),
            ),
        ],
    )
    .await?;
    let driver = Driver::start()?;
    let browser = driver.session().await?;
    browser.goto(&serve.url()).await?;
    settled(&browser).await?;
    let first_render: f64 = serde_json::from_value(
        wait_for(&browser, "window.__firstRender", "a first render time").await?,
    )?;
    println!("viewer: first page rendered {first_render:.0} ms after navigation (5 rows)");
    let all = messages(&browser).await?;
    check(
        all == [
            "payment timeout retried",
            "GET /recipes/42 answered",
            "connection pool exhausted",
            "payment timeout after 30 s",
            "order placed",
        ],
        || format!("newest first, every row: {all:?}"),
    )?;

    // Typing narrows the rows and puts the filter in the URL.
    let grep = browser.find(Locator::Css("input[name=grep]")).await?;
    grep.send_keys("TIMEOUT").await?;
    wait_for(
        &browser,
        "document.querySelectorAll('#rows tbody tr.row').length === 2",
        "the two timeout rows",
    )
    .await?;
    settled(&browser).await?;
    // A field value clicked is a filter too.
    browser
        .execute(
            "[...document.querySelectorAll('.v')].find(v => v.dataset.field === 'status=504').click();",
            vec![],
        )
        .await?;
    wait_for(
        &browser,
        "document.querySelectorAll('#rows tbody tr.row').length === 1",
        "the one row with status 504",
    )
    .await?;
    settled(&browser).await?;
    let narrowed = messages(&browser).await?;
    check(narrowed == ["payment timeout after 30 s"], || {
        format!("grep=TIMEOUT and field status=504: {narrowed:?}")
    })?;
    let address = browser.current_url().await?;
    let query: Vec<(String, String)> = address.query_pairs().into_owned().collect();
    check(
        query
            == [
                ("grep".to_owned(), "TIMEOUT".to_owned()),
                ("field".to_owned(), "status=504".to_owned()),
            ],
        || format!("the URL holds the filters: {address}"),
    )?;

    // Clicking the row shows its fields as JSON.
    browser
        .find(Locator::Css("#rows tbody tr.row td.msg"))
        .await?
        .click()
        .await?;
    let detail = wait_for(
        &browser,
        "document.querySelector('tr.detail pre') && document.querySelector('tr.detail pre').textContent",
        "the row's details",
    )
    .await?;
    let detail: Value = serde_json::from_str(detail.as_str().unwrap_or(""))?;
    check(
        detail["fields"] == json!({"status": 504, "user": "bob"}),
        || format!("details: {detail}"),
    )?;

    // The same URL in a new session shows the same view.
    let other = driver.session().await?;
    other.goto(address.as_str()).await?;
    settled(&other).await?;
    let reproduced = messages(&other).await?;
    check(reproduced == narrowed, || {
        format!("a link reproduces the view: {reproduced:?}")
    })?;
    let typed: String = serde_json::from_value(
        other
            .execute(
                "return document.querySelector('input[name=grep]').value;",
                vec![],
            )
            .await?,
    )?;
    check(typed == "TIMEOUT", || format!("the grep box: {typed:?}"))?;
    other.close().await?;

    if let Ok(path) = std::env::var("PGLOGSINK_VIEWER_SCREENSHOT") {
        screenshot(&browser, &table, &path).await?;
    }
    browser.close().await?;
    Ok(())
}

/// A screenshot for the README: more rows, the histogram, one detail open.
async fn screenshot(browser: &Client, table: &TableName, path: &str) -> Result<(), Failed> {
    let mut rows = Vec::new();
    let messages = [
        "GET /recipes/42 answered",
        "order placed",
        "payment timeout after 30 s",
        "connection pool exhausted",
        "cache miss for recipe 42",
    ];
    const STATUSES: [i64; 4] = [200, 200, 404, 500];
    let levels = ["info", "debug", "info", "warn", "info", "error", "info"];
    let targets = ["http", "shop::orders", "shop::payments", "db"];
    for i in 0..400i64 {
        rows.push((
            i * 9 + (i % 7) * 60,
            levels[(i % 7) as usize],
            targets[(i % 4) as usize],
            messages[(i % 5) as usize],
            json!({"status": STATUSES[(i % 4) as usize], "user": format!("u{}", i % 5),
                   "duration_ms": (i * 37) % 250}),
        ));
    }
    insert(table, &rows).await?;
    browser
        .goto(&format!("{}/?since=1h", base(browser).await?))
        .await?;
    settled(browser).await?;
    wait_for(
        browser,
        "document.querySelectorAll('#histogram rect').length > 10",
        "a histogram",
    )
    .await?;
    browser
        .execute(
            "document.querySelectorAll('#rows tbody tr.row td.msg')[2].click();",
            vec![],
        )
        .await?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    std::fs::write(path, browser.screenshot().await?)?;
    println!("viewer: screenshot saved to {path}");
    Ok(())
}

/// `http://host:port` of the page a browser shows.
async fn base(browser: &Client) -> Result<String, Failed> {
    let url = browser.current_url().await?;
    Ok(url.origin().ascii_serialization())
}

async fn live_tail() -> Result<(), Failed> {
    let (serve, table) = serve()?;
    insert(&table, &[(5, "info", "app", "before the page", json!({}))]).await?;
    let driver = Driver::start()?;
    let browser = driver.session().await?;
    browser.goto(&format!("{}/?live=1", serve.url())).await?;
    settled(&browser).await?;
    // The tail is open once its first event (the newest rows) arrived.
    wait_for(
        &browser,
        "document.getElementById('status').textContent.includes('live')",
        "the live tail started",
    )
    .await?;
    let logged = Instant::now();
    insert(
        &table,
        &[(
            0,
            "warn",
            "app",
            "logged after the page opened",
            json!({"n": 1}),
        )],
    )
    .await?;
    wait_for(
        &browser,
        "[...document.querySelectorAll('#rows tbody td.msg')].some(td => td.textContent === 'logged after the page opened')",
        "the new row",
    )
    .await?;
    let took = logged.elapsed();
    println!(
        "viewer: live tail showed a new row {} ms after it was committed",
        took.as_millis()
    );
    check_time(
        "the live tail showing a new row",
        took,
        Duration::from_secs(2),
    )?;
    let all = messages(&browser).await?;
    check(
        all == ["logged after the page opened", "before the page"],
        || format!("newest on top, none twice: {all:?}"),
    )?;
    browser.close().await?;
    Ok(())
}

/// 5,000 rows a second for three seconds, while the page tails: it shows
/// the newest, keeps at most 2,000 (draws at most 500 a frame), and stays
/// responsive.
async fn tail_burst() -> Result<(), Failed> {
    let (serve, table) = serve()?;
    let driver = Driver::start()?;
    let browser = driver.session().await?;
    browser.goto(&format!("{}/?live=1", serve.url())).await?;
    settled(&browser).await?;
    wait_for(
        &browser,
        "document.getElementById('status').textContent.includes('live')",
        "the live tail started",
    )
    .await?;
    let client = pool()?.get().await?;
    let mut slowest = Duration::ZERO;
    for second in 0..3 {
        let started = Instant::now();
        client
            .batch_execute(&format!(
                "INSERT INTO {} (\"timestamp\", level, target, message, fields) \
                 SELECT now(), 'info', 'burst', 'burst {second} row ' || i, \
                        jsonb_build_object('i', i, 'second', {second}) \
                 FROM generate_series(1, 5000) i",
                table.quoted()
            ))
            .await?;
        // The page answers a script between bursts: it is not frozen.
        while started.elapsed() < Duration::from_secs(1) {
            let asked = Instant::now();
            browser
                .execute("return document.body.dataset.rows;", vec![])
                .await?;
            slowest = slowest.max(asked.elapsed());
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    wait_for(
        &browser,
        "document.querySelector('#rows tbody td.msg') && \
         document.querySelector('#rows tbody td.msg').textContent === 'burst 2 row 5000'",
        "the last row of the last burst on top",
    )
    .await?;
    let rows: i64 = serde_json::from_value(
        browser
            .execute(
                "return document.querySelectorAll('#rows tbody tr').length;",
                vec![],
            )
            .await?,
    )?;
    let draw: f64 = serde_json::from_value(
        browser
            .execute("return window.__slowestDraw;", vec![])
            .await?,
    )?;
    println!(
        "viewer: 15,000 rows tailed in 3 s; {rows} kept in the page; slowest draw {draw:.0} ms \
         (layout included), slowest script round trip {} ms",
        slowest.as_millis()
    );
    check((500..=2_000).contains(&rows), || {
        format!("{rows} rows kept, not 500 to 2000")
    })?;
    check_time(
        "the page's slowest answer while tailing",
        slowest,
        Duration::from_secs(1),
    )?;
    browser.close().await?;
    Ok(())
}

async fn markup_is_text() -> Result<(), Failed> {
    let (serve, table) = serve()?;
    let payload = "<script>window.__xss = 1</script>";
    insert(
        &table,
        &[
            (
                2,
                "error",
                "<b>target</b>",
                XSS,
                json!({"html": payload, "<i>k</i>": "<svg onload=window.__xss=2>"}),
            ),
            (
                1,
                "info",
                "app",
                "<img src=x onerror=\"window.__xss=3\">",
                json!({}),
            ),
        ],
    )
    .await?;
    let driver = Driver::start()?;
    let browser = driver.session().await?;
    // Any alert() would fail later WebDriver commands with "unexpected alert open".
    browser.goto(&serve.url()).await?;
    settled(&browser).await?;
    // Open the details too: they render the fields.
    for td in browser
        .find_all(Locator::Css("#rows tbody tr.row td.msg"))
        .await?
    {
        td.click().await?;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let shown = messages(&browser).await?;
    check(
        shown == ["<img src=x onerror=\"window.__xss=3\">", XSS],
        || format!("the messages as their characters: {shown:?}"),
    )?;
    let found: Value = browser
        .execute(
            "return {xss: typeof window.__xss, imgs: document.querySelectorAll('img').length, \
             scripts: document.scripts.length, svgs: document.querySelectorAll('svg').length, \
             bold: document.querySelectorAll('#rows b, #rows i').length, \
             fields: [...document.querySelectorAll('#rows td.fields')].map(td => td.textContent).join(' ')};",
            vec![],
        )
        .await?;
    check(
        found["xss"] == "undefined"
            && found["imgs"] == 0
            && found["scripts"] == 1
            && found["svgs"] == 1
            && found["bold"] == 0,
        || format!("no markup from the data, no script ran: {found}"),
    )?;
    check(
        found["fields"]
            .as_str()
            .is_some_and(|f| f.contains(payload)),
        || format!("the fields as text: {found}"),
    )?;
    let (status, _) = http_get(&serve.addr, "/")?;
    check(status == 200, || format!("GET / answered {status}"))?;
    browser.close().await?;
    Ok(())
}

/// GET `path` and parse the JSON body.
fn get_json(serve: &Serve, path: &str) -> Result<(u16, Value), Failed> {
    let (status, body) = http_get(&serve.addr, path)?;
    let json = serde_json::from_str(&body).map_err(|e| format!("{path}: {e}: {body}"))?;
    Ok((status, json))
}

fn messages_of(page: &Value) -> Vec<String> {
    page["rows"]
        .as_array()
        .map(|rows| {
            rows.iter()
                .map(|r| r["message"].as_str().unwrap_or("").to_owned())
                .collect()
        })
        .unwrap_or_default()
}

async fn api() -> Result<(), Failed> {
    let (serve, table) = serve()?;
    let names: Vec<String> = (0..25).map(|i| format!("m{i}")).collect();
    let rows: Vec<_> = (0..25i64)
        .map(|i| {
            let error = i % 5 == 0;
            (
                i * 60,
                if error { "error" } else { "info" },
                "app",
                names[i as usize].as_str(),
                json!({"i": i, "status": if error { 500 } else { 200 }}),
            )
        })
        .collect();
    insert(&table, &rows).await?;

    // Keyset paging: three pages of 10, 10, 5, newest first, no row twice.
    let mut seen = Vec::new();
    let mut path = "/api/logs?limit=10".to_owned();
    loop {
        let (status, page) = get_json(&serve, &path)?;
        check(status == 200, || format!("{path}: {status} {page}"))?;
        seen.extend(messages_of(&page));
        match page["next"].as_str() {
            Some(next) => path = format!("/api/logs?limit=10&before={}", next.replace(':', "%3A")),
            None => break,
        }
    }
    check(seen == names, || format!("pages: {seen:?}"))?;

    // The CLI's filters, by the same names.
    let (_, page) = get_json(&serve, "/api/logs?level=error&since=12m&field=status%3D500")?;
    check(messages_of(&page) == ["m0", "m5", "m10"], || {
        format!("{page}")
    })?;
    let (_, page) = get_json(&serve, "/api/logs?grep=M2&target=ap")?;
    check(
        messages_of(&page) == ["m2", "m20", "m21", "m22", "m23", "m24"],
        || format!("{page}"),
    )?;

    // The histogram counts every matching row once, by level.
    let (status, h) = get_json(&serve, "/api/histogram?since=1h&buckets=12")?;
    check(status == 200, || format!("{status} {h}"))?;
    let counts: Vec<[i64; 5]> = serde_json::from_value(h["counts"].clone())?;
    let errors: i64 = counts.iter().map(|c| c[4]).sum();
    let infos: i64 = counts.iter().map(|c| c[2]).sum();
    check(
        (errors, infos, h["total"].as_i64(), h["bucket"].as_i64())
            == (5, 20, Some(25), Some(300_000_000)),
        || format!("12 buckets over an hour are 5 minutes wide: {h}"),
    )?;

    // A bad value is a 400 that names its parameter, never a 500.
    for (query, parameter) in [
        ("level=loud", "level"),
        ("since=yesterday", "since"),
        ("since=2026-02-30", "since"),
        ("field=novalue", "field"),
        ("limit=0", "limit"),
        ("before=x", "before"),
        ("tz=Mars%2FOlympus", "tz"),
        ("since=1m&until=1h", "since"),
        ("colour=red", "colour"),
    ] {
        for route in ["/api/logs", "/api/histogram"] {
            let (status, body) = get_json(&serve, &format!("{route}?{query}"))?;
            check(status == 400 && body["parameter"] == parameter, || {
                format!("{route}?{query}: {status} {body}")
            })?;
        }
    }
    let (status, body) = get_json(&serve, "/?level=loud")?;
    check(status == 400 && body["parameter"] == "level", || {
        format!("/: {status} {body}")
    })?;
    let (status, body) = get_json(&serve, "/api/tail?until=1h")?;
    check(status == 400 && body["parameter"] == "until", || {
        format!("tail: {status} {body}")
    })?;
    Ok(())
}

async fn statement_timeout() -> Result<(), Failed> {
    let db = url()?;
    let table = fresh_table("viewer");
    let serve = Serve::start(
        &["--database-url", &db, "--table", &table.to_string()],
        &["--viewer-statement-timeout", "0.001"],
    )?;
    pool()?
        .get()
        .await?
        .batch_execute(&format!(
            "INSERT INTO {} (\"timestamp\", level, target, message) \
             SELECT now() - i * interval '1 second', 'info', 'app', 'row ' || i \
             FROM generate_series(1, 200000) i",
            table.quoted()
        ))
        .await?;
    // Counting 200,000 rows takes more than a millisecond.
    let (status, body) = get_json(&serve, "/api/histogram?since=7d")?;
    check(
        status == 503
            && body["error"]
                .as_str()
                .is_some_and(|e| e.contains("--viewer-statement-timeout")),
        || format!("{status} {body}"),
    )?;
    Ok(())
}
