//! TLS to PostgreSQL with libpq's meanings of `sslmode` and `sslrootcert`.
//!
//! Connections are encrypted with rustls (through `tokio-postgres-rustls`)
//! and its `ring` crypto provider: no OpenSSL to link against and no C++ or
//! cmake step in the build. The provider is named explicitly rather than
//! taken from rustls' process-wide default, so that an application which
//! links another provider cannot make the pool panic or change crypto
//! behind our back.
//!
//! | `sslmode` | encrypted | certificate checked |
//! |---|---|---|
//! | `disable` | never | - |
//! | `prefer` (default) | when the server offers TLS | no |
//! | `require` | always | no; with a root certificate, the chain (as `verify-ca`) |
//! | `verify-ca` | always | the chain, up to `sslrootcert` |
//! | `verify-full` | always | the chain and the host name |
//!
//! The root certificate is `sslrootcert` (a PEM file, or `system` for the
//! operating system's trusted CAs, which needs `verify-full` as in libpq), or
//! else `~/.postgresql/root.crt` when that file exists, as in libpq.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::ParsedCertificate;
use rustls::{CertificateError, DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_postgres::tls::MakeTlsConnect;
use tokio_postgres_rustls::MakeRustlsConnect;

use crate::Error;

/// Whether and how to use TLS, with libpq's meanings (see the [`pool`]
/// documentation for the table).
///
/// [`pool`]: crate::pool
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SslMode {
    /// Never encrypt.
    Disable,
    /// Encrypt when the server offers TLS, without checking its certificate;
    /// connect in plain text otherwise.
    #[default]
    Prefer,
    /// Always encrypt. The certificate is not checked, unless a root
    /// certificate is given: then its chain is checked, as with
    /// [`VerifyCa`](SslMode::VerifyCa).
    Require,
    /// Always encrypt, and check that the server's certificate chains up to
    /// the root certificate.
    VerifyCa,
    /// As [`VerifyCa`](SslMode::VerifyCa), and check that the certificate
    /// names the host connected to.
    VerifyFull,
}

impl SslMode {
    /// The name as in a connection string (`verify-full`...).
    pub fn as_str(self) -> &'static str {
        match self {
            SslMode::Disable => "disable",
            SslMode::Prefer => "prefer",
            SslMode::Require => "require",
            SslMode::VerifyCa => "verify-ca",
            SslMode::VerifyFull => "verify-full",
        }
    }

    /// What tokio-postgres is told: it only knows whether to ask for TLS;
    /// the checking is done by our certificate verifier.
    pub(crate) fn driver_mode(self) -> tokio_postgres::config::SslMode {
        use tokio_postgres::config::SslMode as Driver;
        match self {
            SslMode::Disable => Driver::Disable,
            SslMode::Prefer => Driver::Prefer,
            SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull => Driver::Require,
        }
    }

    /// The mode a driver-level setting stands for.
    pub(crate) fn from_driver(mode: tokio_postgres::config::SslMode) -> SslMode {
        use tokio_postgres::config::SslMode as Driver;
        match mode {
            Driver::Disable => SslMode::Disable,
            Driver::Require => SslMode::Require,
            _ => SslMode::Prefer,
        }
    }
}

impl fmt::Display for SslMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for SslMode {
    type Err = String;

    /// Parse libpq's names. The error is a sentence for the user.
    fn from_str(s: &str) -> Result<SslMode, String> {
        match s {
            "disable" => Ok(SslMode::Disable),
            "prefer" => Ok(SslMode::Prefer),
            "require" => Ok(SslMode::Require),
            "verify-ca" => Ok(SslMode::VerifyCa),
            "verify-full" => Ok(SslMode::VerifyFull),
            // libpq's `allow` tries plain text first and TLS only when the
            // server refuses; tokio-postgres cannot do that, and quietly
            // treating it as another mode would change what is encrypted.
            "allow" => Err(
                "`allow` is not supported; use `prefer` (TLS when the server offers it) \
                 or `disable`"
                    .to_owned(),
            ),
            other => Err(format!(
                "`{other}` is not one of disable, prefer, require, verify-ca, verify-full"
            )),
        }
    }
}

/// Where the trusted root certificates come from (libpq's `sslrootcert`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RootCert {
    /// A PEM file holding one or more CA certificates.
    File(PathBuf),
    /// The operating system's trusted CAs (`sslrootcert=system`).
    System,
}

impl RootCert {
    /// libpq's spelling: `system` is the system store, anything else a path.
    pub(crate) fn parse(value: &str) -> RootCert {
        if value == "system" {
            RootCert::System
        } else {
            RootCert::File(PathBuf::from(value))
        }
    }
}

impl fmt::Display for RootCert {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RootCert::File(path) => write!(f, "{}", path.display()),
            RootCert::System => f.write_str("system"),
        }
    }
}

/// libpq's default root certificate file, `~/.postgresql/root.crt`.
fn default_root_file() -> Option<PathBuf> {
    let home = std::env::var_os("HOME").filter(|h| !h.is_empty())?;
    Some(Path::new(&home).join(".postgresql").join("root.crt"))
}

/// rustls behind tokio-postgres, for every host of a configuration.
#[derive(Clone)]
pub(crate) struct Connector(MakeRustlsConnect);

impl<S> MakeTlsConnect<S> for Connector
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    type Stream = <MakeRustlsConnect as MakeTlsConnect<S>>::Stream;
    type TlsConnect = <MakeRustlsConnect as MakeTlsConnect<S>>::TlsConnect;
    type Error = <MakeRustlsConnect as MakeTlsConnect<S>>::Error;

    fn make_tls_connect(&mut self, hostname: &str) -> Result<Self::TlsConnect, Self::Error> {
        // tokio-postgres asks with "" for a Unix socket (and for a bare
        // hostaddr), and tokio-postgres-rustls 0.13 refuses "" outright,
        // which would fail even `prefer`. PostgreSQL never speaks TLS on a
        // Unix socket (it answers the TLS request with "no"), and without
        // a host name tokio-postgres refuses to start a handshake, so the
        // name below is never used: it only lets the connection go on.
        let name = if hostname.is_empty() {
            "localhost"
        } else {
            hostname
        };
        MakeTlsConnect::<S>::make_tls_connect(&mut self.0, name)
    }
}

/// The TLS connector for `mode`, or `None` when connections are plain.
///
/// Reads the root certificates now, so that a missing or unreadable
/// `sslrootcert` is reported when the pool is built, not at each connection.
pub(crate) fn connector(
    mode: SslMode,
    root: Option<&RootCert>,
) -> Result<Option<Connector>, Error> {
    if mode == SslMode::Disable {
        return Ok(None);
    }
    if root == Some(&RootCert::System) && mode != SslMode::VerifyFull {
        // As libpq: the system's CAs vouch for any name they signed, so only
        // the host-name check makes trusting them mean anything.
        return Err(Error::config(
            "sslrootcert",
            format!("`system` needs sslmode=verify-full (it is {mode})"),
        ));
    }
    let root = root.cloned().or_else(|| {
        default_root_file()
            .filter(|path| path.is_file())
            .map(RootCert::File)
    });
    let check = match (mode, &root) {
        // `prefer` would fall back to plain text on a failed check anyway,
        // so checking buys nothing: it encrypts what it can.
        (SslMode::Prefer, _) | (SslMode::Require, None) => Check::Nothing,
        (SslMode::Require | SslMode::VerifyCa, Some(root)) => Check::Chain(load_roots(root)?),
        (SslMode::VerifyFull, Some(root)) => Check::ChainAndName(load_roots(root)?),
        (SslMode::VerifyCa | SslMode::VerifyFull, None) => {
            return Err(Error::config(
                "sslrootcert",
                format!(
                    "sslmode={mode} checks the server's certificate against a root certificate, \
                     and none was given: set sslrootcert=/path/to/root.crt in the URL (or \
                     PGSSLROOTCERT){}, or use sslmode=require to encrypt without checking",
                    default_root_file()
                        .map(|path| format!(", or put it in {}", path.display()))
                        .unwrap_or_default()
                ),
            ))
        }
        (SslMode::Disable, _) => unreachable!("handled above"),
    };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = Verifier {
        check,
        algorithms: provider.signature_verification_algorithms,
    };
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::config("sslmode", format!("setting up TLS: {e}")))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth();
    Ok(Some(Connector(MakeRustlsConnect::new(config))))
}

fn load_roots(root: &RootCert) -> Result<Arc<RootCertStore>, Error> {
    let mut store = RootCertStore::empty();
    match root {
        RootCert::File(path) => {
            let certs = CertificateDer::pem_file_iter(path)
                .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
                .map_err(|e| {
                    Error::config(
                        "sslrootcert",
                        format!("cannot read {}: {}", path.display(), pem_error(&e)),
                    )
                })?;
            let (added, _ignored) = store.add_parsable_certificates(certs);
            if added == 0 {
                return Err(Error::config(
                    "sslrootcert",
                    format!(
                        "{} holds no usable certificate (expected PEM: -----BEGIN CERTIFICATE-----)",
                        path.display()
                    ),
                ));
            }
        }
        RootCert::System => {
            let found = rustls_native_certs::load_native_certs();
            let (added, _ignored) = store.add_parsable_certificates(found.certs);
            if added == 0 {
                return Err(Error::config(
                    "sslrootcert",
                    format!(
                        "`system`: no trusted CA certificates found on this system{}; install \
                         them (Debian: `apt-get install ca-certificates`) or give a file",
                        found
                            .errors
                            .first()
                            .map(|e| format!(" ({e})"))
                            .unwrap_or_default()
                    ),
                ));
            }
        }
    }
    Ok(Arc::new(store))
}

fn pem_error(e: &rustls::pki_types::pem::Error) -> String {
    match e {
        rustls::pki_types::pem::Error::Io(io) => io.to_string(),
        other => format!("not a PEM file ({other:?})"),
    }
}

/// What the verifier checks of the server's certificate.
#[derive(Debug)]
enum Check {
    Nothing,
    Chain(Arc<RootCertStore>),
    ChainAndName(Arc<RootCertStore>),
}

/// Checks the server's certificate as the mode says. The handshake's
/// signatures are always checked, so the server holds the key of the
/// certificate it shows even when the certificate itself is not checked.
#[derive(Debug)]
struct Verifier {
    check: Check,
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for Verifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let (roots, check_name) = match &self.check {
            Check::Nothing => return Ok(ServerCertVerified::assertion()),
            Check::Chain(roots) => (roots, false),
            Check::ChainAndName(roots) => (roots, true),
        };
        let cert = ParsedCertificate::try_from(end_entity)?;
        rustls::client::verify_server_cert_signed_by_trust_anchor(
            &cert,
            roots,
            intermediates,
            now,
            self.algorithms.all,
        )?;
        if check_name {
            rustls::client::verify_server_name(&cert, server_name)?;
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// The TLS error in a connection error's chain of causes, if there is one.
/// tokio-rustls hands rustls' errors over inside an `io::Error`.
pub(crate) fn tls_error<'a>(e: &'a (dyn std::error::Error + 'static)) -> Option<&'a rustls::Error> {
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
pub(crate) fn explain(e: &rustls::Error) -> Option<&'static str> {
    let rustls::Error::InvalidCertificate(cert) = e else {
        return None;
    };
    Some(match cert {
        CertificateError::UnknownIssuer => {
            "the server's certificate is not signed by a certificate in sslrootcert: a wrong \
             root certificate, or the server sends an incomplete chain"
        }
        CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. } => {
            "the server's certificate does not name the host connected to: connect with a \
             host name the certificate lists, or use sslmode=verify-ca to check only the chain"
        }
        CertificateError::Expired | CertificateError::ExpiredContext { .. } => {
            "the server's certificate has expired"
        }
        CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
            "the server's certificate is not valid yet (check the clocks)"
        }
        CertificateError::InvalidPurpose | CertificateError::InvalidPurposeContext { .. } => {
            "the server's certificate is not meant for TLS servers"
        }
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(mode: SslMode, root: Option<&RootCert>) -> String {
        match connector(mode, root) {
            Ok(_) => panic!("{mode} with {root:?} was accepted"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn modes_parse_as_libpq_names_them() {
        for mode in [
            SslMode::Disable,
            SslMode::Prefer,
            SslMode::Require,
            SslMode::VerifyCa,
            SslMode::VerifyFull,
        ] {
            assert_eq!(mode.as_str().parse::<SslMode>(), Ok(mode));
        }
        assert!("allow".parse::<SslMode>().unwrap_err().contains("prefer"));
        assert!("verify_full"
            .parse::<SslMode>()
            .unwrap_err()
            .contains("verify-full"));
    }

    #[test]
    fn the_driver_is_told_only_whether_to_ask_for_tls() {
        use tokio_postgres::config::SslMode as Driver;
        assert_eq!(SslMode::Disable.driver_mode(), Driver::Disable);
        assert_eq!(SslMode::Prefer.driver_mode(), Driver::Prefer);
        assert_eq!(SslMode::VerifyCa.driver_mode(), Driver::Require);
        assert_eq!(SslMode::VerifyFull.driver_mode(), Driver::Require);
    }

    #[test]
    fn unusable_root_certificates_are_refused_when_the_pool_is_built() {
        let err = refused(
            SslMode::VerifyFull,
            Some(&RootCert::File("/nonexistent/root.crt".into())),
        );
        assert!(err.contains("/nonexistent/root.crt"), "{err}");
        let err = refused(SslMode::Require, Some(&RootCert::System));
        assert!(err.contains("verify-full"), "{err}");
    }

    #[test]
    fn a_file_without_certificates_is_refused() {
        let path = std::env::temp_dir().join(format!("pglogsink-notacert-{}", std::process::id()));
        std::fs::write(&path, "hello\n").unwrap();
        let err = refused(SslMode::VerifyCa, Some(&RootCert::File(path.clone())));
        let _ = std::fs::remove_file(&path);
        assert!(err.contains("no usable certificate"), "{err}");
    }

    #[test]
    fn no_checking_modes_build_without_any_certificate() {
        assert!(connector(SslMode::Disable, None).unwrap().is_none());
        assert!(connector(SslMode::Prefer, None).unwrap().is_some());
    }

    #[test]
    fn a_unix_socket_host_does_not_stop_prefer() {
        let Ok(Some(mut tls)) = connector(SslMode::Prefer, None) else {
            panic!("no connector for prefer");
        };
        assert!(MakeTlsConnect::<tokio_postgres::Socket>::make_tls_connect(&mut tls, "").is_ok());
    }
}
