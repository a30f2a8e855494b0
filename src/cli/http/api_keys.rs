//! API keys of `serve`'s guarded routes (ingest and the viewer): a file of
//! keys, one per line, checked in constant time and reloaded on SIGHUP or
//! when the file changes.
//!
//! Only SHA-256 digests are kept in memory, and a presented key is hashed
//! and compared with every digest (no early exit), so neither its length
//! nor which key it resembles shows in the time of the answer. A line
//! `sha256:<64 hex digits>` is a key stored hashed (`printf %s KEY |
//! sha256sum`), so the file need not hold the keys themselves. Keys never
//! reach a log line or an error message: errors name the line number.

use std::borrow::Cow;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use axum::http::{header, HeaderMap};
use pglogsink::CancellationToken;
use subtle::ConstantTimeEq;

/// How often the file is looked at for changes.
const POLL: Duration = Duration::from_secs(2);

/// Shortest key taken in clear: 16 characters (about 95 bits when random
/// base64).
const MIN_KEY_LEN: usize = 16;

type Digest = [u8; 32];

/// The keys in force, shared by every request; cheap to clone.
#[derive(Clone)]
pub(crate) struct ApiKeys {
    path: Arc<PathBuf>,
    current: Arc<RwLock<Loaded>>,
}

struct Loaded {
    digests: Vec<Digest>,
    /// What the file looked like when read, to notice a change.
    stamp: Option<(SystemTime, u64)>,
}

impl fmt::Debug for ApiKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let count = self.current.read().map_or(0, |l| l.digests.len());
        f.debug_struct("ApiKeys")
            .field("path", &self.path)
            .field("keys", &count)
            .finish()
    }
}

/// The key a request carries: `Authorization: Bearer KEY`, else
/// `X-Api-Key: KEY`.
pub(crate) fn presented(headers: &HeaderMap) -> Option<Cow<'_, str>> {
    let authorization = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().split_once(' '));
    let from_authorization = authorization.and_then(|(scheme, value)| {
        if scheme.eq_ignore_ascii_case("bearer") {
            Some(Cow::Borrowed(value.trim()))
        } else if scheme.eq_ignore_ascii_case("basic") {
            basic_password(value.trim()).map(Cow::Owned)
        } else {
            None
        }
    });
    from_authorization
        .or_else(|| {
            headers
                .get("x-api-key")
                .and_then(|v| v.to_str().ok())
                .map(|v| Cow::Borrowed(v.trim()))
        })
        .filter(|key| !key.is_empty())
}

/// The password of HTTP Basic credentials (`base64(user:password)`): how a
/// browser sends the key the viewer's prompt asked for.
fn basic_password(credentials: &str) -> Option<String> {
    use base64::Engine as _;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(credentials)
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (_user, password) = text.split_once(':')?;
    Some(password.to_owned())
}

impl ApiKeys {
    /// Read the file; an error when it cannot be read or holds no key.
    pub(crate) fn load(path: &Path) -> Result<ApiKeys, String> {
        let loaded = read(path)?;
        Ok(ApiKeys {
            path: Arc::new(path.to_owned()),
            current: Arc::new(RwLock::new(loaded)),
        })
    }

    /// Whether `key` is one of the keys, in time that does not depend on
    /// which or on how much of it matches.
    pub(crate) fn accepts(&self, key: &str) -> bool {
        let digest = sha256(key.as_bytes());
        let Ok(loaded) = self.current.read() else {
            return false;
        };
        loaded
            .digests
            .iter()
            .fold(subtle::Choice::from(0), |found, d| found | d.ct_eq(&digest))
            .into()
    }

    /// Read the file again; on an error the keys in force stay.
    pub(crate) fn reload(&self) -> Result<usize, String> {
        let loaded = read(&self.path)?;
        let count = loaded.digests.len();
        if let Ok(mut current) = self.current.write() {
            *current = loaded;
        }
        Ok(count)
    }

    /// Reload on SIGHUP, and when the file's modification time or size
    /// changes, until `token` is cancelled.
    pub(crate) async fn watch(self, token: CancellationToken) {
        let mut hangup = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        {
            Ok(signal) => Some(signal),
            Err(e) => {
                tracing::warn!("cannot watch SIGHUP ({e}); API keys reload on change only");
                None
            }
        };
        let mut poll = tokio::time::interval(POLL);
        poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let why = tokio::select! {
                () = token.cancelled() => return,
                Some(()) = async { hangup.as_mut()?.recv().await } => "SIGHUP",
                _ = poll.tick() => {
                    let seen = self.current.read().ok().and_then(|l| l.stamp);
                    if stamp(&self.path) == seen {
                        continue;
                    }
                    "the file changed"
                }
            };
            match self.reload() {
                Ok(n) => tracing::info!(
                    "API keys reloaded from {} ({why}): {n} keys",
                    self.path.display()
                ),
                Err(e) => tracing::warn!("{e}; the keys loaded before stay in force"),
            }
        }
    }
}

fn stamp(path: &Path) -> Option<(SystemTime, u64)> {
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.modified().ok()?, meta.len()))
}

fn read(path: &Path) -> Result<Loaded, String> {
    let shown = path.display();
    // The stamp first: a change while reading is seen at the next poll.
    let stamp = stamp(path);
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read the API key file {shown}: {e}"))?;
    let digests = parse(&text).map_err(|e| format!("API key file {shown}: {e}"))?;
    if digests.is_empty() {
        return Err(format!(
            "the API key file {shown} holds no key: one key per line, or sha256:<hex>"
        ));
    }
    Ok(Loaded { digests, stamp })
}

/// The digests of the file's keys. Errors name the line, never its text.
fn parse(text: &str) -> Result<Vec<Digest>, String> {
    let mut digests = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let n = i + 1;
        if let Some(hex) = line.strip_prefix("sha256:") {
            digests.push(
                from_hex(hex.trim())
                    .ok_or_else(|| format!("line {n}: sha256: needs 64 hex digits"))?,
            );
        } else if line.chars().count() < MIN_KEY_LEN || line.contains(char::is_whitespace) {
            return Err(format!(
                "line {n}: a key must be at least {MIN_KEY_LEN} characters without spaces \
                 (e.g. `openssl rand -base64 24`)"
            ));
        } else {
            digests.push(sha256(line.as_bytes()));
        }
    }
    Ok(digests)
}

fn from_hex(hex: &str) -> Option<Digest> {
    pglogsink::admin::hex::decode(hex)?.try_into().ok()
}

fn sha256(bytes: &[u8]) -> Digest {
    let digest = ring::digest::digest(&ring::digest::SHA256, bytes);
    let mut out = [0u8; 32];
    out.copy_from_slice(digest.as_ref());
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    const KEY: &str = "k3y-0123456789abcdef";

    fn keys(text: &str) -> (ApiKeys, PathBuf) {
        let path = std::env::temp_dir().join(format!(
            "pglogsink-keys-{}-{}",
            std::process::id(),
            sha256(text.as_bytes())[0]
        ));
        std::fs::write(&path, text).unwrap();
        (ApiKeys::load(&path).unwrap(), path)
    }

    #[test]
    fn keys_in_clear_and_hashed_comments_and_blank_lines() {
        // printf %s k3y-0123456789abcdef | sha256sum
        let hashed = format!(
            "sha256:{}",
            pglogsink::admin::hex::encode(&sha256(b"another-key-0123456789"))
        );
        let (keys, path) = keys(&format!("# ops team\n{KEY}\n\n  {hashed}  \n"));
        assert!(keys.accepts(KEY));
        assert!(keys.accepts("another-key-0123456789"));
        assert!(!keys.accepts("k3y-0123456789abcde"));
        assert!(!keys.accepts(""));
        assert!(!keys.accepts(&hashed));
        std::fs::remove_file(path).unwrap();
    }

    #[test]
    fn errors_name_the_line_not_the_key() {
        let err = parse("good-key-0123456789\nshort\n").unwrap_err();
        assert!(err.starts_with("line 2:"), "{err}");
        assert!(
            !err.contains("short\n") && !err.contains("good-key"),
            "{err}"
        );
        assert!(parse("sha256:abc").unwrap_err().contains("64 hex"));
        let empty = std::env::temp_dir().join(format!("pglogsink-nokeys-{}", std::process::id()));
        std::fs::write(&empty, "# nothing\n").unwrap();
        assert!(ApiKeys::load(&empty).unwrap_err().contains("holds no key"));
        std::fs::remove_file(empty).unwrap();
    }

    #[test]
    fn a_reload_swaps_the_keys_and_a_bad_file_keeps_them() {
        let (keys, path) = keys(&format!("{KEY}\n"));
        std::fs::write(&path, "new-key-0123456789abc\n").unwrap();
        assert_eq!(keys.reload(), Ok(1));
        assert!(!keys.accepts(KEY));
        assert!(keys.accepts("new-key-0123456789abc"));
        std::fs::write(&path, "tiny\n").unwrap();
        assert!(keys.reload().is_err());
        assert!(keys.accepts("new-key-0123456789abc"));
        assert!(!format!("{keys:?}").contains("new-key"));
        std::fs::remove_file(path).unwrap();
    }

    #[test]
    fn bearer_basic_or_x_api_key() {
        let presented = |h: &HeaderMap| super::presented(h).map(|k| k.into_owned());
        let mut headers = HeaderMap::new();
        assert_eq!(presented(&headers), None);
        headers.insert("x-api-key", HeaderValue::from_static(" abc "));
        assert_eq!(presented(&headers).as_deref(), Some("abc"));
        headers.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("bearer xyz"),
        );
        assert_eq!(presented(&headers).as_deref(), Some("xyz"));
        // A browser's answer to the viewer's prompt: "anyone:s3cret".
        headers.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Basic YW55b25lOnMzY3JldA=="),
        );
        assert_eq!(presented(&headers).as_deref(), Some("s3cret"));
        // Not base64, or no colon: no key from it (X-Api-Key still counts).
        headers.insert(header::AUTHORIZATION, HeaderValue::from_static("Basic xyz"));
        assert_eq!(presented(&headers).as_deref(), Some("abc"));
    }
}
