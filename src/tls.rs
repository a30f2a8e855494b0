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
//! "No" is libpq's no: any certificate is taken (self-signed, expired, X.509
//! version 1 as Citus makes); only its public key is read, to check the
//! handshake's signature. `verify-ca` and `verify-full` check version 3
//! certificates only.
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
use rustls::pki_types::{CertificateDer, ServerName, SubjectPublicKeyInfoDer, UnixTime};
use rustls::server::ParsedCertificate;
use rustls::{
    CertificateError, DigitallySignedStruct, PeerMisbehaved, RootCertStore, SignatureScheme,
};
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
///
/// A certificate that is not checked is not parsed either, beyond finding
/// its public key for the handshake's signature, as libpq (OpenSSL) does:
/// rustls' parser takes only X.509 v3, and servers with a v1 certificate
/// (the self-signed one Citus makes, or `openssl x509 -req` without
/// extensions) must still be reachable with `prefer` and `require`.
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
        if !matches!(self.check, Check::Nothing) {
            return rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms);
        }
        let key = SubjectPublicKey::of(cert)?;
        let candidates = self
            .algorithms
            .mapping
            .iter()
            .find(|(scheme, _)| *scheme == dss.scheme)
            .map(|(_, algorithms)| *algorithms)
            .ok_or(PeerMisbehaved::SignedHandshakeWithUnadvertisedSigScheme)?;
        let algorithm = candidates
            .iter()
            .find(|algorithm| algorithm.public_key_alg_id().as_ref() == key.algorithm)
            .ok_or_else(
                || CertificateError::UnsupportedSignatureAlgorithmForPublicKeyContext {
                    signature_algorithm_id: candidates
                        .first()
                        .map(|algorithm| algorithm.signature_alg_id().as_ref().to_vec())
                        .unwrap_or_default(),
                    public_key_algorithm_id: key.algorithm.to_vec(),
                },
            )?;
        algorithm
            .verify_signature(key.bits, message, dss.signature())
            .map_err(|_| CertificateError::BadSignature)?;
        Ok(HandshakeSignatureValid::assertion())
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        if !matches!(self.check, Check::Nothing) {
            return rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms);
        }
        let key = SubjectPublicKey::of(cert)?;
        rustls::crypto::verify_tls13_signature_with_raw_key(
            message,
            &SubjectPublicKeyInfoDer::from(key.info),
            dss,
            &self.algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// The public key of a certificate, found without checking anything else
/// in it: the handshake's signature is checked with it when the
/// certificate itself is not checked.
#[derive(Debug, PartialEq)]
struct SubjectPublicKey<'a> {
    /// The whole `SubjectPublicKeyInfo` element (DER).
    info: &'a [u8],
    /// The contents of its `AlgorithmIdentifier` (what
    /// `SignatureVerificationAlgorithm::public_key_alg_id` returns).
    algorithm: &'a [u8],
    /// The key itself: the `subjectPublicKey` bit string's bytes.
    bits: &'a [u8],
}

impl<'a> SubjectPublicKey<'a> {
    /// Walk `Certificate -> tbsCertificate -> subjectPublicKeyInfo` (RFC
    /// 5280 4.1). Version 1 certificates have no `[0] version` field, and
    /// nothing after the key (extensions) is looked at.
    fn of(cert: &'a [u8]) -> Result<SubjectPublicKey<'a>, CertificateError> {
        Self::find(cert).ok_or(CertificateError::BadEncoding)
    }

    fn find(cert: &'a [u8]) -> Option<SubjectPublicKey<'a>> {
        const SEQUENCE: u8 = 0x30;
        const BIT_STRING: u8 = 0x03;
        const VERSION: u8 = 0xA0;
        let (certificate, _) = Der::expect(cert, SEQUENCE)?;
        let (mut fields, _) = Der::expect(certificate, SEQUENCE)?;
        if fields.first() == Some(&VERSION) {
            fields = Der::read(fields)?.rest;
        }
        // serialNumber, signature, issuer, validity, subject.
        for _ in 0..5 {
            fields = Der::read(fields)?.rest;
        }
        let info = Der::read(fields).filter(|info| info.tag == SEQUENCE)?;
        let (algorithm, rest) = Der::expect(info.contents, SEQUENCE)?;
        let (bits, _) = Der::expect(rest, BIT_STRING)?;
        // A key is whole bytes: no unused bits.
        let (0, bits) = bits.split_first()? else {
            return None;
        };
        Some(SubjectPublicKey {
            info: info.whole,
            algorithm,
            bits,
        })
    }
}

/// One DER element (tag, length, contents) at the start of a byte string.
struct Der<'a> {
    tag: u8,
    contents: &'a [u8],
    /// Tag, length and contents.
    whole: &'a [u8],
    /// The bytes after it.
    rest: &'a [u8],
}

impl<'a> Der<'a> {
    fn read(der: &'a [u8]) -> Option<Der<'a>> {
        let (&tag, after_tag) = der.split_first()?;
        let (&first, after_first) = after_tag.split_first()?;
        let (len, after_len) = if first < 0x80 {
            (usize::from(first), after_first)
        } else {
            // Long form: the low bits count the length's bytes.
            let count = usize::from(first & 0x7f);
            if count == 0 || count > 4 || after_first.len() < count {
                return None;
            }
            let (len, after_len) = after_first.split_at(count);
            let len = len
                .iter()
                .fold(0usize, |len, &byte| len << 8 | usize::from(byte));
            (len, after_len)
        };
        if after_len.len() < len {
            return None;
        }
        let header = der.len() - after_len.len();
        Some(Der {
            tag,
            contents: &after_len[..len],
            whole: &der[..header + len],
            rest: &after_len[len..],
        })
    }

    /// The contents of an element with `tag`, and the bytes after it.
    fn expect(der: &'a [u8], tag: u8) -> Option<(&'a [u8], &'a [u8])> {
        Der::read(der)
            .filter(|element| element.tag == tag)
            .map(|element| (element.contents, element.rest))
    }
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

    /// `openssl x509 -req -signkey` without extensions: X.509 version 1,
    /// which rustls' parser refuses.
    const V1_CERT: &str = "-----BEGIN CERTIFICATE-----
MIIBJTCBywIUaaDo5vJ3GVMEnFzo7G+0ojIPcB4wCgYIKoZIzj0EAwIwFDESMBAG
A1UEAwwJbG9jYWxob3N0MCAXDTI2MTIwNDIyNTM1OVoYDzIxMjYxMTEwMjI1MzU5
WjAUMRIwEAYDVQQDDAlsb2NhbGhvc3QwWTATBgcqhkjOPQIBBggqhkjOPQMBBwNC
AAQjGBKSu6Rea7VdhXcnApSUnJ94mrvdUTDHYTaBSwQE0rB7sJ04gC5LNt44vAFF
/zmOt+10Ko/S0bhQo0rRoV/iMAoGCCqGSM49BAMCA0kAMEYCIQDUsEr5i0Vw621H
T6JY9eap+0t/s1vucQ6tWtDtbiJcPAIhAJ/nya6PreMkLg7yG210yf5/mBfJexLo
msjk08Xhf1Ud
-----END CERTIFICATE-----
";
    /// Its public key as `openssl x509 -pubkey | openssl pkey -pubin
    /// -outform DER` writes it.
    const V1_SPKI_HEX: &str =
        "3059301306072a8648ce3d020106082a8648ce3d0301070342000423181292bba45e6bb55d\
        8577270294949c9f789abbdd5130c76136814b0404d2b07bb09d38802e4b36de38bc0145ff398eb7ed742a8f\
        d2d1b850a34ad1a15fe2";

    #[test]
    fn the_public_key_of_a_version_1_certificate_is_found() {
        let cert = CertificateDer::from_pem_slice(V1_CERT.as_bytes()).unwrap();
        assert!(
            ParsedCertificate::try_from(&cert).is_err(),
            "rustls parses v1 now"
        );
        let key = SubjectPublicKey::of(&cert).unwrap();
        let hex = crate::hex::encode(key.info);
        assert_eq!(hex, V1_SPKI_HEX);
        assert_eq!(
            key.algorithm,
            rustls::pki_types::alg_id::ECDSA_P256.as_ref(),
            "id-ecPublicKey on prime256v1"
        );
        // An uncompressed P-256 point.
        assert_eq!((key.bits.len(), key.bits[0]), (65, 4));
        assert_eq!(key.info.len(), 0x59 + 2);
    }

    #[test]
    fn a_certificate_that_is_not_der_is_a_bad_encoding() {
        let cert = CertificateDer::from_pem_slice(V1_CERT.as_bytes()).unwrap();
        for broken in [
            &cert[..0],
            &cert[..40],
            &[0x30, 0x84, 0xff, 0xff, 0xff, 0xff][..],
        ] {
            assert_eq!(
                SubjectPublicKey::of(broken),
                Err(CertificateError::BadEncoding)
            );
        }
    }

    #[test]
    fn a_unix_socket_host_does_not_stop_prefer() {
        let Ok(Some(mut tls)) = connector(SslMode::Prefer, None) else {
            panic!("no connector for prefer");
        };
        assert!(MakeTlsConnect::<tokio_postgres::Socket>::make_tls_connect(&mut tls, "").is_ok());
    }
}
