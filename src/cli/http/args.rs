//! `serve`'s HTTP flags: the server's limits, the API keys every guarded
//! route asks for, and the TLS certificate.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::cli::flag_values::{parse_seconds, Seconds};

use super::api_keys::ApiKeys;
use super::server::HttpLimits;

/// Default `--max-connections`.
pub(crate) const DEFAULT_MAX_CONNECTIONS: usize = 4096;
/// Default `--max-tls-handshakes`.
pub(crate) const DEFAULT_MAX_TLS_HANDSHAKES: usize = 256;
/// Default `--header-read-timeout`, in seconds.
pub(crate) const DEFAULT_HEADER_READ_TIMEOUT: u64 = 10;
/// Default `--body-read-timeout`, in seconds.
pub(crate) const DEFAULT_BODY_READ_TIMEOUT: u64 = 30;

#[derive(Debug, Clone, clap::Args)]
pub(crate) struct HttpArgs {
    /// Most HTTP connections open at once; further clients wait to be accepted until one closes.
    #[arg(long, env = "PGLOGSINK_MAX_CONNECTIONS", default_value_t = DEFAULT_MAX_CONNECTIONS,
          value_parser = parse_connections, value_name = "N")]
    pub(crate) max_connections: usize,

    /// Seconds a request's head (request line and headers) may take to arrive; also how long a
    /// keep-alive connection may sit idle, and a TLS handshake may take. Past it the
    /// connection is closed.
    #[arg(long, env = "PGLOGSINK_HEADER_READ_TIMEOUT",
          default_value_t = Seconds(Duration::from_secs(DEFAULT_HEADER_READ_TIMEOUT)),
          value_parser = parse_timeout, value_name = "SECS")]
    pub(crate) header_read_timeout: Seconds,

    /// Seconds an ingest request's body may take to arrive after its head; a slower one is
    /// answered 408.
    #[arg(long, env = "PGLOGSINK_BODY_READ_TIMEOUT",
          default_value_t = Seconds(Duration::from_secs(DEFAULT_BODY_READ_TIMEOUT)),
          value_parser = parse_timeout, value_name = "SECS")]
    pub(crate) body_read_timeout: Seconds,

    /// Most TLS handshakes in progress at once (with --tls-cert); further connections wait
    /// their turn.
    #[arg(long, env = "PGLOGSINK_MAX_TLS_HANDSHAKES", default_value_t = DEFAULT_MAX_TLS_HANDSHAKES,
          value_parser = parse_connections, value_name = "N")]
    pub(crate) max_tls_handshakes: usize,

    /// File of API keys for the ingest endpoints and the viewer, one per line (`sha256:<hex>`
    /// for a key stored hashed; `#` starts a comment). Requests must carry one as
    /// `Authorization: Bearer KEY` or `X-Api-Key: KEY`. Reloaded on SIGHUP and when the file
    /// changes. Without it, `serve` only listens on a loopback address.
    #[arg(long, env = "PGLOGSINK_API_KEY_FILE", value_name = "PATH")]
    pub(crate) api_key_file: Option<PathBuf>,

    /// PEM certificate chain: serve HTTPS instead of HTTP (with --tls-key).
    #[arg(
        long,
        env = "PGLOGSINK_TLS_CERT",
        value_name = "PATH",
        requires = "tls_key"
    )]
    pub(crate) tls_cert: Option<PathBuf>,

    /// PEM private key of --tls-cert.
    #[arg(
        long,
        env = "PGLOGSINK_TLS_KEY",
        value_name = "PATH",
        requires = "tls_cert"
    )]
    pub(crate) tls_key: Option<PathBuf>,
}

/// Who may use the service and how it is reached, once the flags are
/// checked: the API keys asked for (`None`: none, on a loopback address
/// only) and the TLS settings (`None`: plain HTTP).
pub(crate) struct Access {
    pub(crate) keys: Option<ApiKeys>,
    pub(crate) tls: Option<tokio_rustls::TlsAcceptor>,
}

fn parse_connections(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(n) if (1..=1_000_000).contains(&n) => Ok(n),
        _ => Err("expected a whole number from 1 to 1000000".to_owned()),
    }
}

fn parse_timeout(s: &str) -> Result<Seconds, String> {
    parse_seconds(s, false, 3_600.0).map(Seconds)
}

impl HttpArgs {
    /// Check the flags against the listen address and load the keys and the
    /// certificate. A non-loopback address needs keys; without TLS there it
    /// is allowed (a TLS proxy in front is common) but said loudly.
    pub(crate) fn access(&self, listen: SocketAddr) -> Result<Access, String> {
        let keys = match &self.api_key_file {
            Some(path) => Some(ApiKeys::load(path)?),
            None if listen.ip().is_loopback() => None,
            None => {
                return Err(format!(
                    "refusing to listen on {listen} without API keys: the ingest endpoints \
                     would take logs from anyone who can reach it. Give --api-key-file FILE \
                     (one key per line), or listen on a loopback address such as 127.0.0.1"
                ))
            }
        };
        let tls = match (&self.tls_cert, &self.tls_key) {
            (Some(cert), Some(key)) => Some(super::tls::acceptor(cert, key)?),
            _ => None,
        };
        if tls.is_none() && !listen.ip().is_loopback() {
            tracing::warn!(
                "listening on {listen} over plain HTTP: API keys and logs travel in clear. Give \
                 --tls-cert and --tls-key, or put a TLS-terminating proxy in front"
            );
        }
        Ok(Access { keys, tls })
    }

    pub(crate) fn limits(&self) -> HttpLimits {
        HttpLimits {
            max_connections: self.max_connections,
            header_read_timeout: self.header_read_timeout.0,
            max_tls_handshakes: self.max_tls_handshakes,
        }
    }
}
