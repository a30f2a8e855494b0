//! The one place that decides whether a failed write is worth retrying.
//!
//! Transient: the database is away, restarting, overloaded or asked us to try
//! again; the same batch is retried with backoff. Poison: some row of the
//! batch was refused (data exception, constraint violation, a limit such as
//! an index row too large): the batch is split until the row is found. Fatal: retrying cannot help
//! (missing table or column, no privilege, bad credentials, unknown database)
//! and so is anything unrecognised, which stops the application rather than
//! retrying forever.
//!
//! Connection poolers (PgBouncer, ...) add errors of their own: protocol
//! violations (08P01) whose message says what the pooler saw (a wait
//! timeout, a full client list, a lost server connection), and prepared
//! statements missing (26000) or already there (42P05) when a statement made
//! on one server connection is used on another. A retry on a fresh
//! connection fixes those; a pooler refusing our credentials does not.
//!
//! A Citus coordinator passes most of its workers' troubles on with a
//! SQLSTATE (08006 for a worker it cannot reach, 58030 for a COPY it could
//! not finish, 57P01 from a worker shutting down), and those classify as
//! above. Some it reports as internal_error (XX000) with a message only: a
//! worker connection lost inside the transaction ("failure on connection
//! marked as essential", or libpq's own words), and any error a worker
//! raised during COPY, forwarded by its message without its code. For
//! XX000 alone, the message decides (see [`CITUS_TRANSIENT`]); everything
//! else with XX000 stays fatal.

use std::error::Error as _;
use std::fmt::Write as _;

use deadpool_postgres::PoolError;

use crate::report::FatalError;

/// Why writing a batch failed.
#[derive(Debug)]
pub(crate) enum WriteError {
    /// No connection could be had from the pool.
    Pool(PoolError),
    /// The driver or the server reported an error.
    Postgres(tokio_postgres::Error),
    /// The server committed a different number of rows than we sent.
    RowCount { sent: u64, committed: u64 },
    /// No answer within the write timeout (a network path that drops
    /// packets, a server that hangs): the connection is discarded and the
    /// outcome is unknown (the ledger settles it on retry).
    TimedOut(std::time::Duration),
    /// A server error by SQLSTATE alone, for the consumer's unit tests
    /// (tokio-postgres errors cannot be made outside the driver).
    #[cfg(test)]
    Server(&'static str),
}

impl From<PoolError> for WriteError {
    fn from(e: PoolError) -> WriteError {
        WriteError::Pool(e)
    }
}

impl From<tokio_postgres::Error> for WriteError {
    fn from(e: tokio_postgres::Error) -> WriteError {
        WriteError::Postgres(e)
    }
}

impl WriteError {
    /// The driver's error, if there is one.
    fn postgres(&self) -> Option<&tokio_postgres::Error> {
        match self {
            WriteError::Postgres(e) | WriteError::Pool(PoolError::Backend(e)) => Some(e),
            _ => None,
        }
    }

    pub(crate) fn sqlstate(&self) -> Option<&str> {
        match self {
            #[cfg(test)]
            WriteError::Server(code) => Some(code),
            WriteError::Postgres(e) | WriteError::Pool(PoolError::Backend(e)) => {
                e.code().map(|c| c.code())
            }
            _ => None,
        }
    }
}

impl std::fmt::Display for WriteError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WriteError::Pool(PoolError::Backend(e)) | WriteError::Postgres(e) => {
                f.write_str(&describe_postgres(e))
            }
            WriteError::Pool(PoolError::Timeout(_)) => {
                f.write_str("timed out waiting for a database connection")
            }
            WriteError::Pool(e) => write!(f, "connection pool: {e}"),
            WriteError::RowCount { sent, committed } => {
                write!(f, "COPY committed {committed} rows but {sent} were sent")
            }
            #[cfg(test)]
            WriteError::Server(code) => write!(f, "server error {code}"),
            WriteError::TimedOut(after) => write!(
                f,
                "no answer from the database within {} s; gave up on the connection",
                after.as_secs_f64()
            ),
        }
    }
}

/// What to do about a failed write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Class {
    /// Retry the same batch after a backoff; the string is the reason, for
    /// logs and metrics.
    Transient(&'static str),
    /// A row of the batch was refused: isolate it.
    Poison,
    /// Stop the application.
    Fatal,
}

/// Classify a failed write.
pub(crate) fn classify(err: &WriteError) -> Class {
    match err {
        WriteError::Pool(PoolError::Timeout(_)) => Class::Transient("pool timeout"),
        WriteError::TimedOut(_) => Class::Transient("write timed out"),
        #[cfg(test)]
        WriteError::Server(code) => classify_server(code, ""),
        WriteError::Pool(PoolError::Backend(e)) | WriteError::Postgres(e) => classify_postgres(e),
        WriteError::Pool(_) | WriteError::RowCount { .. } => Class::Fatal,
    }
}

/// Whether the same statement may succeed if tried again: what
/// [`Error::is_transient`](crate::Error::is_transient) says of a driver
/// error. The sink's writes also bisect on poison; a single statement has
/// nothing to split, so poison is not worth a retry either.
pub(crate) fn retry_helps(e: &tokio_postgres::Error) -> bool {
    matches!(classify_postgres(e), Class::Transient(_))
}

fn classify_postgres(e: &tokio_postgres::Error) -> Class {
    if let Some(db) = e.as_db_error() {
        return classify_server(db.code().code(), db.message());
    }
    // A TLS handshake that failed on the certificate or the protocol will
    // fail the same way next time; rustls' errors arrive wrapped in an
    // io::Error, so this comes before the io check below.
    if tls_error(e).is_some() {
        return Class::Fatal;
    }
    // No SQLSTATE: the connection itself failed (refused, reset, closed,
    // timed out). Anything else (bad configuration, protocol errors) is fatal.
    if e.is_closed() {
        return Class::Transient("connection closed");
    }
    let mut source = e.source();
    while let Some(s) = source {
        if s.is::<std::io::Error>() {
            return Class::Transient("connection failed");
        }
        source = s.source();
    }
    Class::Fatal
}

/// Messages of PgBouncer's own 08P01 errors that retrying cannot fix: it
/// refused our credentials or does not know the database.
const POOLER_FATAL: [&str; 6] = [
    "authentication failed",
    "no such database",
    "no such user",
    "unsupported startup parameter",
    "not allowed",
    "login rejected",
];

/// What a Citus coordinator says with internal_error (XX000) when a worker
/// went away, is restarting or has failed over, as captured from Citus
/// 13.2 on a coordinator whose worker was killed, stopped and started under
/// load (the table test below quotes them). A retry reconnects, or waits
/// for the worker.
pub(crate) const CITUS_TRANSIENT: [&str; 12] = [
    // A connection to a worker failed inside the transaction (Citus'
    // remote_transaction.c).
    "failure on connection marked as essential",
    // libpq's words for a worker connection lost, passed on by Citus.
    "server closed the connection unexpectedly",
    "SSL SYSCALL error",
    "SSL connection has been closed unexpectedly",
    "connection not open",
    "no connection to the server",
    "could not receive data from server",
    "could not send data to server",
    // A worker's own 57P01, 57P02 and 57P03 and its 25006 (a worker failed
    // over to a standby), forwarded by Citus' COPY without their codes.
    "terminating connection due to administrator command",
    "terminating connection because of crash of another server process",
    "the database system is",
    "in a read-only transaction",
];

/// Classify a server (or pooler) error by SQLSTATE (five characters, class
/// first) and, for 08P01 and XX000, its message.
pub(crate) fn classify_server(code: &str, message: &str) -> Class {
    match code {
        "XX000" if CITUS_TRANSIENT.iter().any(|m| message.contains(m)) => {
            Class::Transient("Citus worker unreachable")
        }
        // A worker refused a row during COPY: PostgreSQL's own words for a
        // constraint violation (class 23), without the code.
        "XX000" if message.contains(" violates ") && message.contains(" constraint ") => {
            Class::Poison
        }
        // A pooler speaks for the server with 08P01. Its own refusals (bad
        // password, unknown database) are as fatal as the server's 28P01 or
        // 3D000; everything else it says (query_wait_timeout, no more
        // connections allowed, server conn crashed?, client_idle_timeout...)
        // is fixed by a retry on a fresh connection, like the rest of 08.
        "08P01" if POOLER_FATAL.iter().any(|m| message.contains(m)) => Class::Fatal,
        "08P01" => Class::Transient("connection pooler"),
        // A named statement made on one server connection, used (26000) or
        // made again (42P05) on another: a transaction pooler moved us.
        "26000" | "42P05" => Class::Transient("prepared statement lost by a connection pooler"),
        "57P01" | "57P02" | "57P03" => Class::Transient("server restarting"),
        "57014" => Class::Transient("statement cancelled"),
        "40001" | "40P01" => Class::Transient("serialization failure or deadlock"),
        "55P03" | "55006" => Class::Transient("lock not available"),
        "25006" => Class::Transient("server is read-only"),
        _ => match code.get(..2) {
            Some("08") => Class::Transient("connection failed"),
            Some("53") => Class::Transient("server out of resources"),
            Some("58") => Class::Transient("server system error"),
            Some("22") | Some("23") | Some("54") => Class::Poison,
            _ => Class::Fatal,
        },
    }
}

/// Whether the connection a write failed on should be dropped rather than
/// go back to the pool: it is gone, or its session (or the pooler's server
/// connection behind it) holds state the next write must not meet.
pub(crate) fn needs_fresh_connection(err: &WriteError) -> bool {
    let Some(e) = err.postgres() else {
        return false;
    };
    match e.code().map(|c| c.code()) {
        Some(code) => code.starts_with("08") || code == "26000" || code == "42P05",
        None => true,
    }
}

/// What to do about a fatal SQLSTATE, as an instruction to the operator.
/// Only fatal codes come here: a type or constraint check refusing a row
/// (classes 22, 23) or a limit (54) is poison, and the refused row goes to
/// the rejected-rows table instead of stopping the sink.
fn hint(code: Option<&str>, table: &str) -> String {
    let code = code.unwrap_or("");
    match code {
        "42P01" | "42704" | "3F000" => format!(
            "create it with `pglogsink migrate --table {table}` (or psql -f sql/schema.sql), then restart"
        ),
        "42703" | "42804" | "42P10" => format!(
            "the columns of {table} do not match what pglogsink writes; apply sql/schema.sql to a new table or fix the columns"
        ),
        "42501" => format!(
            "grant the role INSERT on the table and USAGE on its id sequence (GRANT INSERT ON \
             {table} TO <role>; GRANT USAGE ON SEQUENCE {table}_id_seq TO <role>), then restart"
        ),
        "28P01" | "28000" => {
            "check the user name and password in DATABASE_URL / --database-url".to_owned()
        }
        "3D000" => {
            "create the database, or fix the database name in DATABASE_URL / --database-url"
                .to_owned()
        }
        "08P01" => "the connection pooler refused the connection: check the user name, password \
             and database name in DATABASE_URL / --database-url against the pooler's settings"
            .to_owned(),
        _ => "see the PostgreSQL server log for details".to_owned(),
    }
}

/// Build the report of a fatal write error.
pub(crate) fn fatal_error(err: &WriteError, table: &str) -> FatalError {
    let sqlstate = err.sqlstate().map(str::to_owned);
    let tls = err
        .postgres()
        .is_some_and(|e| is_tls_problem(e) || needs_tls(e));
    FatalError {
        hint: if tls {
            TLS_HINT.to_owned()
        } else {
            hint(sqlstate.as_deref(), table)
        },
        table: table.to_owned(),
        message: err.to_string(),
        sqlstate,
    }
}

const TLS_HINT: &str = "check sslmode and sslrootcert in DATABASE_URL / --database-url \
     (or PGSSLMODE, PGSSLROOTCERT) against the server's TLS setup";

/// The connection failed in its TLS step: a certificate that does not
/// check out, or a server that does not speak TLS.
fn is_tls_problem(e: &tokio_postgres::Error) -> bool {
    tls_error(e).is_some()
        || (e.as_db_error().is_none() && !e.is_closed() && e.to_string().contains("TLS"))
}

/// pg_hba.conf lets this client in only over TLS (`hostssl`), and the
/// connection was plain.
fn needs_tls(e: &tokio_postgres::Error) -> bool {
    e.as_db_error()
        .is_some_and(|db| db.code().code() == "28000" && db.message().ends_with("no encryption"))
}

/// Render a driver error with the server's message, detail and hint, or
/// with the chain of causes for connection errors. tokio-postgres's own
/// `Display` says only "db error" for server errors.
pub(crate) fn describe_postgres(e: &tokio_postgres::Error) -> String {
    if let Some(db) = e.as_db_error() {
        let mut s = db.message().to_owned();
        if let Some(detail) = db.detail() {
            let _ = write!(s, " ({detail})");
        }
        if needs_tls(e) {
            s.push_str(
                "; the server accepts this connection only with TLS: set sslmode=require \
                 (or verify-ca, verify-full) in the URL or PGSSLMODE",
            );
        }
        return s;
    }
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        let _ = write!(s, ": {cause}");
        source = cause.source();
    }
    if let Some(meaning) = tls_error(e).and_then(explain) {
        let _ = write!(s, " ({meaning})");
    }
    s
}

/// The TLS error in a connection error's chain of causes, if there is one.
/// tokio-rustls hands rustls' errors over inside an `io::Error`.
fn tls_error<'a>(e: &'a (dyn std::error::Error + 'static)) -> Option<&'a rustls::Error> {
    let mut source = Some(e);
    while let Some(s) = source {
        if let Some(tls) = s.downcast_ref::<rustls::Error>() {
            return Some(tls);
        }
        if let Some(tls) = s
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
            .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        {
            return Some(tls);
        }
        source = s.source();
    }
    None
}

/// What a certificate error means for the person who configured the
/// connection, when rustls' own words are terse.
fn explain(e: &rustls::Error) -> Option<&'static str> {
    let rustls::Error::InvalidCertificate(cert) = e else {
        return None;
    };
    Some(match cert {
        rustls::CertificateError::UnknownIssuer => {
            "the server's certificate is not signed by a certificate in sslrootcert: a wrong \
             root certificate, or the server sends an incomplete chain"
        }
        rustls::CertificateError::NotValidForName
        | rustls::CertificateError::NotValidForNameContext { .. } => {
            "the server's certificate does not name the host connected to: connect with a \
             host name the certificate lists, or use sslmode=verify-ca to check only the chain"
        }
        rustls::CertificateError::Expired | rustls::CertificateError::ExpiredContext { .. } => {
            "the server's certificate has expired"
        }
        rustls::CertificateError::NotValidYet
        | rustls::CertificateError::NotValidYetContext { .. } => {
            "the server's certificate is not valid yet (check the clocks)"
        }
        rustls::CertificateError::InvalidPurpose
        | rustls::CertificateError::InvalidPurposeContext { .. } => {
            "the server's certificate is not meant for TLS servers"
        }
        rustls::CertificateError::Other(other)
            if matches!(
                other.0.downcast_ref::<webpki::Error>(),
                Some(webpki::Error::UnsupportedCertVersion)
            ) =>
        {
            "the server's certificate is X.509 version 1 (as the one Citus makes), which \
             verify-ca and verify-full cannot check: give the server a version 3 certificate \
             (with extensions, such as subjectAltName), or use sslmode=require to encrypt \
             without checking"
        }
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One row per SQLSTATE class the sink can meet, plus the special codes.
    #[test]
    fn sqlstates_classify_as_documented() {
        use Kind::*;
        #[derive(Debug, PartialEq)]
        enum Kind {
            T,
            P,
            F,
        }
        let table: &[(&str, &str, Kind)] = &[
            // (code, name, expected class)
            ("08000", "connection_exception", T),
            ("08003", "connection_does_not_exist", T),
            ("08006", "connection_failure", T),
            ("08001", "sqlclient_unable_to_establish_sqlconnection", T),
            ("57P01", "admin_shutdown", T),
            ("57P02", "crash_shutdown", T),
            (
                "57P03",
                "cannot_connect_now (starting up / shutting down)",
                T,
            ),
            ("57014", "query_canceled", T),
            ("53300", "too_many_connections", T),
            ("53100", "disk_full", T),
            ("53200", "out_of_memory", T),
            ("58030", "io_error", T),
            ("40001", "serialization_failure", T),
            ("40P01", "deadlock_detected", T),
            ("55P03", "lock_not_available", T),
            (
                "25006",
                "read_only_sql_transaction (failover to a standby)",
                T,
            ),
            ("42P01", "undefined_table", F),
            ("42703", "undefined_column", F),
            ("42704", "undefined_object (the level type)", F),
            ("42501", "insufficient_privilege", F),
            ("42601", "syntax_error", F),
            (
                "26000",
                "invalid_sql_statement_name (statement made on another server connection)",
                T,
            ),
            (
                "42P05",
                "duplicate_prepared_statement (another client's statement on a pooled connection)",
                T,
            ),
            (
                "08P01",
                "protocol_violation (a pooler's message we do not know)",
                T,
            ),
            ("28P01", "invalid_password", F),
            ("28000", "invalid_authorization_specification", F),
            ("3D000", "invalid_catalog_name (unknown database)", F),
            ("3F000", "invalid_schema_name", F),
            ("22021", "character_not_in_repertoire", P),
            ("22001", "string_data_right_truncation", P),
            ("23514", "check_violation", P),
            ("23502", "not_null_violation", P),
            ("0A000", "feature_not_supported", F),
            ("54000", "program_limit_exceeded (index row too large)", P),
            ("XX000", "internal_error", F),
            ("P0001", "raise_exception (a trigger refused the row)", F),
            ("99999", "unknown", F),
            ("", "empty", F),
        ];
        for (code, name, expected) in table {
            let class = classify_server(code, "");
            let kind = match class {
                Class::Transient(_) => T,
                Class::Poison => P,
                Class::Fatal => F,
            };
            assert_eq!(&kind, expected, "{code} {name} classified as {class:?}");
        }
    }

    /// PgBouncer reports its own errors with 08P01 and says what happened
    /// in the message (1.18's wording; newer versions use the same words).
    #[test]
    fn pooler_messages_classify_as_documented() {
        let transient = [
            "query_wait_timeout",
            "no more connections allowed (max_client_conn)",
            "server conn crashed?",
            "server login has been failing, try again later (server_login_retry)",
            "pgbouncer cannot connect to server",
            "client_idle_timeout",
            "client_login_timeout (server down)",
            "query_timeout",
            "idle transaction timeout",
            "database configuration changed",
        ];
        for message in transient {
            assert_eq!(
                classify_server("08P01", message),
                Class::Transient("connection pooler"),
                "{message}"
            );
        }
        let fatal = [
            "password authentication failed",
            "SASL authentication failed",
            "no such database: nosuchdb",
            "no such user: nobody",
            "unsupported startup parameter: search_path",
            "not allowed",
        ];
        for message in fatal {
            assert_eq!(classify_server("08P01", message), Class::Fatal, "{message}");
        }
        assert!(hint(Some("08P01"), "log").contains("password"));
    }

    /// What a Citus 13.2 coordinator said to a writer while one of its two
    /// workers was killed (SIGKILL), stopped (`pg_ctl -m fast`) and started
    /// again under load, verbatim, and a worker's CHECK constraint refusing
    /// a row during COPY. Rows marked "source" were not seen here but read
    /// in Citus' source (adaptive_executor.c; multi_copy.c's
    /// ReportCopyError, which forwards a worker's message without its code).
    #[test]
    fn citus_errors_classify_as_documented() {
        use Class::{Fatal, Poison, Transient};
        let worker = Transient("Citus worker unreachable");
        let lost = "server closed the connection unexpectedly\n\tThis probably means the \
                    server terminated abnormally\n\tbefore or while processing the request.";
        let table: &[(&str, &str, Class)] = &[
            (
                "08006",
                "connection to the remote node pglogsink@127.0.0.1:34193 failed with the \
                 following error: Connection refused\n\tIs the server running on that host \
                 and accepting TCP/IP connections?",
                Transient("connection failed"),
            ),
            (
                "08006",
                "connection to the remote node pglogsink@127.0.0.1:34193 failed with the \
                 following error: FATAL:  the database system is starting up",
                Transient("connection failed"),
            ),
            (
                "08006",
                "connection to the remote node pglogsink@127.0.0.1:34193 failed with the \
                 following error: FATAL:  the database system is not yet accepting \
                 connections\nDETAIL:  Consistent recovery state has not been yet reached.",
                Transient("connection failed"),
            ),
            (
                "08006",
                "connection to the remote node pglogsink@127.0.0.1:35729 failed with the \
                 following error: FATAL:  the database system is shutting down",
                Transient("connection failed"),
            ),
            // source
            (
                "08006",
                "could not establish any connections to the node 127.0.0.1:35729 after 30000 ms",
                Transient("connection failed"),
            ),
            (
                "58030",
                "failed to COPY to shard 102030 on 127.0.0.1:34193",
                Transient("server system error"),
            ),
            (
                "57P01",
                "terminating connection due to administrator command",
                Transient("server restarting"),
            ),
            (
                "XX000",
                "failure on connection marked as essential: 127.0.0.1:35729",
                worker,
            ),
            ("XX000", lost, worker),
            // source: a worker's 57P01 and 25006 during COPY
            (
                "XX000",
                "terminating connection due to administrator command",
                worker,
            ),
            (
                "XX000",
                "cannot execute COPY FROM in a read-only transaction",
                worker,
            ),
            // source: libpq over TLS
            ("XX000", "SSL SYSCALL error: EOF detected", worker),
            (
                "XX000",
                "new row for relation \"t2_p20261204_102233\" violates check constraint \
                 \"no_poison\"",
                Poison,
            ),
            // source: anything else Citus calls internal is still fatal.
            (
                "XX000",
                "could not find any shards into which to copy",
                Fatal,
            ),
            ("XX000", "cache lookup failed for type 16385", Fatal),
        ];
        for (code, message, expected) in table {
            assert_eq!(
                classify_server(code, message),
                *expected,
                "{code} {message}"
            );
        }
    }

    #[test]
    fn fatal_hints_tell_the_operator_what_to_do() {
        assert!(hint(Some("42P01"), "public.log").contains("pglogsink migrate --table public.log"));
        assert!(hint(Some("42501"), "log").contains("GRANT INSERT ON log"));
        assert!(hint(Some("28P01"), "log").contains("password"));
        assert!(hint(None, "log").contains("server log"));
    }

    #[test]
    fn pool_errors_without_a_database_error() {
        use deadpool_postgres::TimeoutType;
        assert_eq!(
            classify(&WriteError::Pool(PoolError::Timeout(TimeoutType::Wait))),
            Class::Transient("pool timeout")
        );
        assert_eq!(classify(&WriteError::Pool(PoolError::Closed)), Class::Fatal);
        assert_eq!(
            classify(&WriteError::TimedOut(std::time::Duration::from_secs(35))),
            Class::Transient("write timed out")
        );
        assert_eq!(
            classify(&WriteError::RowCount {
                sent: 2,
                committed: 1
            }),
            Class::Fatal
        );
    }
}
