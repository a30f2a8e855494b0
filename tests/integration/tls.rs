//! TLS to PostgreSQL: a private cluster with `ssl = on`, a certificate for
//! `localhost` signed by a CA the test makes (openssl CLI), and a
//! pg_hba.conf that accepts TCP connections only over TLS (`hostssl`).
//! Checked: libpq's sslmodes through the library (migrate, a sink) and
//! through the binary (migrate, serve, load --verify, logs), with the
//! certificate problems named and the password never shown.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use libtest_mimic::{Failed, Trial};
use pglogsink::embedded::EmbeddedPostgres;
use pglogsink::{CancellationToken, Level, SinkConfig, TableName};

use crate::common::{block_on, check, count, fresh_table, give_to_server_user};
use crate::service::{run, text, Serve, BIN};

pub fn trials() -> Vec<Trial> {
    vec![
        Trial::test("tls::sslmodes_against_a_server_that_demands_tls", || {
            let server = TlsServer::start()?;
            block_on(sslmodes(&server))?;
            server.stop()
        }),
        Trial::test(
            "tls::the_binary_migrates_serves_and_verifies_over_verified_tls",
            the_binary,
        ),
        Trial::test(
            "tls::prefer_and_require_reach_a_server_with_a_version_1_certificate",
            version_1_certificates,
        ),
    ]
}

/// A cluster that demands TLS, and the files to reach it.
struct TlsServer {
    cluster: Option<EmbeddedPostgres>,
    dir: PathBuf,
    port: u16,
    password: String,
    /// The CA that signed the server's certificate.
    root: PathBuf,
    /// A CA that did not.
    wrong_root: PathBuf,
}

impl TlsServer {
    /// A server whose certificate is signed by the test's CA.
    fn start() -> Result<TlsServer, Failed> {
        TlsServer::start_with(make_certificates)
    }

    /// A server with certificates made in its directory by `make`, which
    /// writes at least server.crt and server.key.
    fn start_with(make: impl FnOnce(&Path) -> Result<(), Failed>) -> Result<TlsServer, Failed> {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "pglogsink-tls-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir)?;
        let started = make(&dir).and_then(|()| TlsServer::start_in(&dir));
        if started.is_err() {
            let _ = fs::remove_dir_all(&dir);
        }
        started
    }

    /// The cluster, with the certificate in `dir`.
    fn start_in(dir: &Path) -> Result<TlsServer, Failed> {
        let cluster = EmbeddedPostgres::temporary()?;
        let config = cluster.config();
        let password = String::from_utf8(config.get_password().ok_or("no password")?.to_vec())?;
        let port = *config.get_ports().first().ok_or("no port")?;
        let pgdata = cluster.data_dir().join("pgdata");
        install_certificate(dir, &pgdata)?;
        // TLS only, for TCP: a plain connection finds no pg_hba.conf line.
        fs::write(
            pgdata.join("pg_hba.conf"),
            "local all all peer\nhostssl all all 127.0.0.1/32 scram-sha-256\n",
        )?;
        crate::common::block_on(async {
            let pool = pglogsink::pool(config, 1)?;
            let client = pool.get().await?;
            // One statement each: ALTER SYSTEM refuses to share a query.
            for setting in [
                "ssl = on",
                "ssl_cert_file = 'server.crt'",
                "ssl_key_file = 'server.key'",
            ] {
                client
                    .batch_execute(&format!("ALTER SYSTEM SET {setting}"))
                    .await?;
            }
            Ok(())
        })?;
        cluster.stop_server()?;
        cluster.start_server()?;
        Ok(TlsServer {
            cluster: Some(cluster),
            root: dir.join("ca.crt"),
            wrong_root: dir.join("other-ca.crt"),
            dir: dir.to_owned(),
            port,
            password,
        })
    }

    /// A URL for `host` (`localhost` is the name in the certificate) with
    /// `query` appended.
    fn url(&self, host: &str, query: &str) -> String {
        format!(
            "postgres://pglogsink:{}@{host}:{}/pglogsink{query}",
            self.password, self.port
        )
    }

    fn stop(mut self) -> Result<(), Failed> {
        if let Some(cluster) = self.cluster.take() {
            cluster.stop()?;
        }
        Ok(())
    }
}

impl Drop for TlsServer {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// Copy `dir`'s server.crt and server.key into the data directory, for the
/// server's OS user alone (PostgreSQL refuses a key others can read).
fn install_certificate(dir: &Path, pgdata: &Path) -> Result<(), Failed> {
    for name in ["server.crt", "server.key"] {
        let to = pgdata.join(name);
        fs::copy(dir.join(name), &to)?;
        fs::set_permissions(&to, fs::Permissions::from_mode(0o600))?;
        give_to_server_user(&to)?;
    }
    Ok(())
}

/// Run the openssl CLI in `dir`.
fn openssl(dir: &Path, args: &[&str]) -> Result<(), Failed> {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .map_err(|e| format!("running openssl (apt-get install openssl): {e}"))?;
    check(out.status.success(), || {
        format!("openssl {args:?}: {}", text(&out.stderr))
    })
}

/// A self-signed X.509 version 1 certificate, as Citus makes for its
/// nodes: `openssl x509 -req` without extensions. `key` is openssl's
/// `-newkey` argument (`rsa:2048`, `ec`...), `options` its `-pkeyopt`s.
fn make_version_1_certificate(dir: &Path, key: &str, options: &[&str]) -> Result<(), Failed> {
    let mut request = vec!["req", "-newkey", key];
    for option in options {
        request.extend(["-pkeyopt", option]);
    }
    request.extend([
        "-nodes",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
        "-subj",
        "/CN=localhost",
    ]);
    openssl(dir, &request)?;
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-signkey",
            "server.key",
            "-out",
            "server.crt",
            "-days",
            "2",
        ],
    )?;
    let out = Command::new("openssl")
        .args(["x509", "-in", "server.crt", "-noout", "-text"])
        .current_dir(dir)
        .output()?;
    check(text(&out.stdout).contains("Version: 1 (0x0)"), || {
        format!(
            "openssl made no version 1 certificate: {}",
            text(&out.stdout)
        )
    })
}

/// ca.crt signs server.crt (for DNS name `localhost` only, so that
/// 127.0.0.1 does not match it); other-ca.crt signs nothing we use.
pub(crate) fn make_certificates(dir: &Path) -> Result<(), Failed> {
    let openssl = |args: &[&str]| openssl(dir, args);
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    for (name, cn) in [("ca", "pglogsink test CA"), ("other-ca", "another CA")] {
        let (key, crt, subject) = (
            format!("{name}.key"),
            format!("{name}.crt"),
            format!("/CN={cn}"),
        );
        openssl(
            &[
                &["req", "-x509"][..],
                &ec,
                &[
                    "-keyout", &key, "-out", &crt, "-days", "2", "-subj", &subject,
                ],
                &["-addext", "basicConstraints=critical,CA:TRUE"],
                &["-addext", "keyUsage=critical,keyCertSign,cRLSign"],
            ]
            .concat(),
        )?;
    }
    openssl(
        &[
            &["req"][..],
            &ec,
            &[
                "-keyout",
                "server.key",
                "-out",
                "server.csr",
                "-subj",
                "/CN=localhost",
            ],
        ]
        .concat(),
    )?;
    fs::write(
        dir.join("server.ext"),
        "subjectAltName=DNS:localhost\nbasicConstraints=critical,CA:FALSE\n\
         keyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n",
    )?;
    openssl(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.crt",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.crt",
        "-days",
        "2",
        "-extfile",
        "server.ext",
    ])
}

/// Migrate `table` over `url`; on success, whether the connection is
/// encrypted (pg_stat_ssl), else the error as the user sees it.
async fn migrate_over(url: &str, table: &TableName) -> Result<bool, String> {
    let pool = pglogsink::pool(pglogsink::parse_url(url).map_err(|e| e.to_string())?, 1)
        .map_err(|e| e.to_string())?;
    pglogsink::migrate(&pool, table)
        .await
        .map_err(|e| e.to_string())?;
    let client = pool.get().await.map_err(|e| e.to_string())?;
    let row = client
        .query_one(
            "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
            &[],
        )
        .await
        .map_err(|e| e.to_string())?;
    Ok(row.get(0))
}

async fn sslmodes(server: &TlsServer) -> Result<(), Failed> {
    let table = fresh_table("tls");
    let root = format!("&sslrootcert={}", server.root.display());
    let wrong = format!("&sslrootcert={}", server.wrong_root.display());
    let no_password = |what: &str, message: &str| {
        check(!message.contains(&server.password), || {
            format!("{what}: the password shows in: {message}")
        })
    };

    for (query, host) in [
        ("?sslmode=require".to_owned(), "127.0.0.1"),
        ("?sslmode=prefer".to_owned(), "127.0.0.1"),
        (format!("?sslmode=verify-full{root}"), "localhost"),
        // verify-ca checks the chain only: the name need not match.
        (format!("?sslmode=verify-ca{root}"), "127.0.0.1"),
        // require with a root certificate checks the chain, as libpq does.
        (format!("?sslmode=require{root}"), "127.0.0.1"),
    ] {
        let encrypted = migrate_over(&server.url(host, &query), &table).await;
        check(encrypted == Ok(true), || {
            format!("{query} to {host}: {encrypted:?}")
        })?;
    }

    let cases = [
        (
            format!("?sslmode=verify-full{wrong}"),
            "localhost",
            [
                "UnknownIssuer",
                "not signed by a certificate in sslrootcert",
            ],
        ),
        (
            format!("?sslmode=require{wrong}"),
            "127.0.0.1",
            [
                "UnknownIssuer",
                "not signed by a certificate in sslrootcert",
            ],
        ),
        (
            format!("?sslmode=verify-full{root}"),
            "127.0.0.1",
            ["not valid for name", "does not name the host connected to"],
        ),
        (
            "?sslmode=disable".to_owned(),
            "127.0.0.1",
            ["no encryption", "accepts this connection only with TLS"],
        ),
    ];
    for (query, host, expected) in &cases {
        let result = migrate_over(&server.url(host, query), &table).await;
        let Err(message) = result else {
            return Err(format!("{query} to {host} connected: {result:?}").into());
        };
        check(expected.iter().all(|e| message.contains(e)), || {
            format!("{query} to {host}: expected {expected:?} in: {message}")
        })?;
        no_password(query, &message)?;
    }

    // The shared test cluster has no TLS (unless DATABASE_URL names another
    // server): prefer falls back to plain text, require says why it cannot
    // connect.
    if std::env::var_os("DATABASE_URL").is_none() {
        plain_server_modes().await?;
    }

    // A sink over verify-full writes; one whose connections cannot be made
    // for a TLS reason stops at once with a hint (no retrying forever).
    let url = server.url("localhost", &format!("?sslmode=verify-full{root}"));
    let pool = pglogsink::pool(pglogsink::parse_url(&url)?, 2)?;
    let config = SinkConfig {
        table: table.to_string(),
        ..SinkConfig::default()
    };
    let (logger, worker) = pglogsink::spawn(pool.clone(), &config, CancellationToken::new())?;
    for i in 0..500 {
        logger.log(Level::Info, format!("over TLS {i}"))?;
    }
    let report = worker.shutdown(Duration::from_secs(20)).await;
    check(report.is_complete() && report.written == 500, || {
        format!("{report:?}")
    })?;
    check(count(&pool, &table).await? == 500, || {
        "row count".to_owned()
    })?;

    for (url, reason) in [
        (
            server.url("localhost", &format!("?sslmode=verify-full{wrong}")),
            "UnknownIssuer",
        ),
        (server.url("127.0.0.1", "?sslmode=disable"), "no encryption"),
    ] {
        let token = CancellationToken::new();
        let pool = pglogsink::pool(pglogsink::parse_url(&url)?, 1)?;
        let (logger, worker) = pglogsink::spawn(pool, &config, token.clone())?;
        logger.log(Level::Info, "not over TLS")?;
        tokio::time::timeout(Duration::from_secs(10), token.cancelled())
            .await
            .map_err(|_| format!("{reason}: the sink did not stop within 10 s"))?;
        let report = worker.shutdown(Duration::from_secs(5)).await;
        let fatal = report
            .fatal
            .as_ref()
            .map(ToString::to_string)
            .unwrap_or_default();
        check(
            fatal.contains(reason) && fatal.contains("sslmode") && report.retries == 0,
            || format!("{reason}: {report:?}"),
        )?;
        no_password(reason, &fatal)?;
    }
    Ok(())
}

async fn plain_server_modes() -> Result<(), Failed> {
    let url = crate::common::url()?;
    let plain = url.split('?').next().unwrap_or(&url);
    let table = fresh_table("tlsplain");
    let prefer = migrate_over(&format!("{plain}?sslmode=prefer"), &table).await;
    check(prefer == Ok(false), || {
        format!("prefer to a plain server: {prefer:?}")
    })?;
    let require = migrate_over(&format!("{plain}?sslmode=require"), &table).await;
    check(
        require
            .as_ref()
            .is_err_and(|e| e.contains("server does not support TLS")),
        || format!("require to a plain server: {require:?}"),
    )
}

fn the_binary() -> Result<(), Failed> {
    let server = TlsServer::start()?;
    let table = fresh_table("tlsbin").to_string();
    let verified = server.url(
        "localhost",
        &format!("?sslmode=verify-full&sslrootcert={}", server.root.display()),
    );

    let migrate = run(&["migrate", "--database-url", &verified, "--table", &table])?;
    check(migrate.status.success(), || {
        format!("migrate over verify-full: {}", text(&migrate.stderr))
    })?;
    for (url, expected) in [
        (
            server.url(
                "localhost",
                &format!(
                    "?sslmode=verify-full&sslrootcert={}",
                    server.wrong_root.display()
                ),
            ),
            "not signed by a certificate in sslrootcert",
        ),
        (server.url("127.0.0.1", "?sslmode=disable"), "no encryption"),
        (
            server.url(
                "localhost",
                "?sslmode=verify-full&sslrootcert=/nonexistent/ca.pem",
            ),
            "/nonexistent/ca.pem",
        ),
    ] {
        let out = run(&["migrate", "--database-url", &url, "--table", &table])?;
        let stderr = text(&out.stderr);
        check(
            !out.status.success()
                && stderr.contains(expected)
                && !stderr.contains(&server.password),
            || format!("migrate should fail naming {expected:?}: {stderr}"),
        )?;
    }

    // serve, load --verify and logs with the TLS settings in the
    // environment, as libpq reads them.
    let plain_url = server.url("localhost", "");
    let root = server.root.display().to_string();
    let env = [
        ("PGSSLMODE", "verify-full"),
        ("PGSSLROOTCERT", root.as_str()),
    ];
    let db_args = [
        "--database-url",
        plain_url.as_str(),
        "--table",
        table.as_str(),
    ];
    let mut serve = Serve::start_with_env(&db_args, &[], &env)?;
    let load = Command::new(BIN)
        .args([
            "load",
            "--url",
            &serve.url(),
            "--requests",
            "500",
            "--concurrency",
            "8",
        ])
        .args(["--verify"])
        .args(db_args)
        .env_remove("DATABASE_URL")
        .envs(env)
        .output()?;
    let stdout = text(&load.stdout);
    let logs = Command::new(BIN)
        .args(["logs", "--limit", "1"])
        .args(db_args)
        .env_remove("DATABASE_URL")
        .envs(env)
        .output()?;
    serve.signal("-INT")?;
    let served = serve.wait()?;
    check(
        load.status.success() && stdout.contains("500 ok") && stdout.contains(": OK"),
        || format!("load over TLS: {stdout}{}", text(&load.stderr)),
    )?;
    check(logs.status.success(), || {
        format!("logs over TLS: {}", text(&logs.stderr))
    })?;
    check(served.status.success(), || {
        format!("serve over TLS: {}", text(&served.stderr))
    })?;
    server.stop()
}

/// libpq's `prefer` (the default) and `require` encrypt without checking the
/// certificate, so a server with a self-signed version 1 certificate (as
/// Citus makes) is reachable; verify-ca cannot check such a certificate and
/// says so. With an EC key and with an RSA key (Citus uses RSA).
fn version_1_certificates() -> Result<(), Failed> {
    for (key, options) in [
        ("ec", &["ec_paramgen_curve:prime256v1"][..]),
        ("rsa:2048", &[][..]),
    ] {
        let server = TlsServer::start_with(|dir| make_version_1_certificate(dir, key, options))?;
        block_on(version_1_modes(&server))
            .map_err(|e| format!("{key} key: {}", e.message().unwrap_or_default()))?;
        // The binary with no sslmode at all, as the issue found it.
        let out = run(&[
            "migrate",
            "--database-url",
            &server.url("127.0.0.1", ""),
            "--table",
            &fresh_table("tlsv1bin").to_string(),
        ])?;
        check(out.status.success(), || {
            format!(
                "{key} key: migrate with the default sslmode: {}",
                text(&out.stderr)
            )
        })?;
        server.stop()?;
    }
    Ok(())
}

async fn version_1_modes(server: &TlsServer) -> Result<(), Failed> {
    let table = fresh_table("tlsv1");
    for query in ["", "?sslmode=prefer", "?sslmode=require"] {
        let encrypted = migrate_over(&server.url("127.0.0.1", query), &table).await;
        check(encrypted == Ok(true), || {
            format!("{query:?} to a v1 certificate: {encrypted:?}")
        })?;
    }
    let verify = format!(
        "?sslmode=verify-ca&sslrootcert={}",
        server.dir.join("server.crt").display()
    );
    let refused = migrate_over(&server.url("127.0.0.1", &verify), &table).await;
    check(
        refused
            .as_ref()
            .is_err_and(|e| e.contains("X.509 version 1") && e.contains("sslmode=require")),
        || format!("verify-ca against a v1 certificate: {refused:?}"),
    )?;

    // TLS 1.2 signs the handshake differently (rustls has no raw-key check
    // for it): the server offers nothing newer.
    let url = server.url("127.0.0.1", "?sslmode=require");
    let pool = pglogsink::pool(pglogsink::parse_url(&url)?, 1)?;
    let client = pool.get().await?;
    client
        .batch_execute("ALTER SYSTEM SET ssl_max_protocol_version = 'TLSv1.2'")
        .await?;
    client.batch_execute("SELECT pg_reload_conf()").await?;
    drop(client);
    drop(pool);
    let version = "SELECT version FROM pg_stat_ssl WHERE pid = pg_backend_pid()";
    let mut seen = String::new();
    // The postmaster applies the reload shortly after the call returns.
    for _ in 0..100 {
        let pool = pglogsink::pool(pglogsink::parse_url(&url)?, 1)?;
        seen = pool.get().await?.query_one(version, &[]).await?.get(0);
        if seen == "TLSv1.2" {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Err(format!("the server still speaks {seen} after ssl_max_protocol_version = 'TLSv1.2'").into())
}
