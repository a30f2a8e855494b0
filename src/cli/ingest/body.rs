//! A request body as the ingest endpoints take it: its media type checked,
//! read up to a cap, and gunzipped up to the same cap.
//!
//! The cap (`--max-body-bytes`) holds for the body as sent and again for it
//! decompressed, and decompression stops one byte past the cap: a gzip bomb
//! costs at most the cap in memory, never its expanded size. Every byte
//! read or decompressed is also held in the sink's queue budget (the
//! request's [`Handover`](super::handover::Handover)) until the request ends, so that bodies in flight
//! count with the records queued: past the budget, a request is answered
//! 503 at its next chunk instead of being read on.

use std::io::Read;

use axum::body::Body;
use axum::http::{header, HeaderMap, StatusCode};
use bytes::Bytes;
use http_body_util::BodyExt;

use super::handover::Destination;
use super::settings::BodyLimits;
use crate::cli::http::Rejection;

/// How the body is compressed (`Content-Encoding`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Encoding {
    Identity,
    Gzip,
}

/// The media type of `Content-Type` without parameters, lowercased
/// (`application/json; charset=utf-8` is `application/json`).
pub(crate) fn media_type(headers: &HeaderMap) -> String {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(|v| v.trim().to_ascii_lowercase())
        .unwrap_or_default()
}

/// A 415 naming what was sent and what is accepted.
pub(crate) fn unsupported_media_type(sent: &str, accepted: &[&str]) -> Rejection {
    let sent = if sent.is_empty() {
        "no Content-Type".to_owned()
    } else {
        format!("Content-Type {sent}")
    };
    Rejection::new(
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        format!(
            "{sent} is not accepted here: send {}",
            accepted.join(" or ")
        ),
    )
}

/// `Content-Encoding`: none, `identity`, `gzip` or `x-gzip`; anything else
/// (deflate, br, zstd, a list) is a 415.
pub(crate) fn encoding(headers: &HeaderMap) -> Result<Encoding, Rejection> {
    let Some(value) = headers.get(header::CONTENT_ENCODING) else {
        return Ok(Encoding::Identity);
    };
    let value = value.to_str().unwrap_or("").trim().to_ascii_lowercase();
    match value.as_str() {
        "" | "identity" => Ok(Encoding::Identity),
        "gzip" | "x-gzip" => Ok(Encoding::Gzip),
        _ => Err(Rejection::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!("Content-Encoding {value:?} is not supported: send gzip or no encoding"),
        )),
    }
}

/// The whole body, decompressed, at most `max_bytes` either way, each byte
/// held in `into` as it is read; 408 when it does not arrive within the
/// read timeout.
pub(crate) async fn read(
    headers: &HeaderMap,
    body: Body,
    encoding: Encoding,
    limits: BodyLimits,
    into: &mut impl Destination,
) -> Result<Bytes, Rejection> {
    let max = limits.max_bytes;
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > max as u64) {
        return Err(too_large(max, "as sent"));
    }
    let raw = tokio::time::timeout(limits.read_timeout, collect(body, max, into))
        .await
        .map_err(|_| {
            Rejection::new(
                StatusCode::REQUEST_TIMEOUT,
                format!(
                    "the request body did not arrive within {} s (--body-read-timeout)",
                    limits.read_timeout.as_secs_f64()
                ),
            )
        })??;
    match encoding {
        Encoding::Identity => Ok(raw),
        Encoding::Gzip => gunzip(&raw, max, into),
    }
}

/// Read frames until the end, refusing past `max` bytes.
async fn collect(
    mut body: Body,
    max: usize,
    into: &mut impl Destination,
) -> Result<Bytes, Rejection> {
    let mut buf = bytes::BytesMut::new();
    while let Some(frame) = body.frame().await {
        let frame = frame
            .map_err(|e| Rejection::bad_request(format!("could not read the request body: {e}")))?;
        if let Ok(data) = frame.into_data() {
            if buf.len() + data.len() > max {
                return Err(too_large(max, "as sent"));
            }
            into.hold(data.len())?;
            buf.extend_from_slice(&data);
        }
    }
    Ok(buf.freeze())
}

/// Decompress, stopping one byte past `max`, holding each chunk in
/// `into`. Concatenated gzip members are one body, as `gzip -c a b` makes
/// them.
pub(crate) fn gunzip(
    compressed: &[u8],
    max: usize,
    into: &mut impl Destination,
) -> Result<Bytes, Rejection> {
    const CHUNK: usize = 64 * 1024;
    let mut decoder = flate2::read::MultiGzDecoder::new(compressed).take(max as u64 + 1);
    // Grows with what is actually decompressed, never sized by the header's
    // claim (ISIZE), which a bomb sets to whatever it likes.
    let mut out = Vec::new();
    loop {
        let start = out.len();
        out.resize(start + CHUNK, 0);
        let n = decoder
            .read(&mut out[start..])
            .map_err(|e| Rejection::bad_request(format!("the body is not valid gzip: {e}")))?;
        out.truncate(start + n);
        if n == 0 {
            break;
        }
        if out.len() > max {
            return Err(too_large(max, "decompressed"));
        }
        into.hold(n)?;
    }
    Ok(Bytes::from(out))
}

fn too_large(max: usize, when: &str) -> Rejection {
    Rejection::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        format!(
            "the body is larger than {max} bytes {when} (--max-body-bytes): send smaller batches"
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;
    use flate2::write::GzEncoder;
    use std::io::Write;

    /// Where the bytes read are held: nowhere (no sink in these tests).
    fn held() -> Vec<pglogsink::Record> {
        Vec::new()
    }

    fn limits(max_bytes: usize) -> BodyLimits {
        BodyLimits {
            max_bytes,
            read_timeout: std::time::Duration::from_secs(5),
        }
    }

    pub(crate) fn gzip(data: &[u8]) -> Vec<u8> {
        let mut encoder = GzEncoder::new(Vec::new(), flate2::Compression::default());
        encoder.write_all(data).unwrap();
        encoder.finish().unwrap()
    }

    #[test]
    fn gzip_within_the_cap_is_decompressed() {
        let data = b"{\"message\":\"hi\"}\n".repeat(100);
        assert_eq!(
            &gunzip(&gzip(&data), data.len(), &mut held()).unwrap()[..],
            &data[..]
        );
        let two = [gzip(b"a\n"), gzip(b"b\n")].concat();
        assert_eq!(&gunzip(&two, 100, &mut held()).unwrap()[..], b"a\nb\n");
    }

    #[test]
    fn a_bomb_stops_one_byte_past_the_cap() {
        // 64 MiB of zeros compress to about 64 KiB.
        let bomb = gzip(&vec![0u8; 64 << 20]);
        assert!(bomb.len() < 1 << 20, "{}", bomb.len());
        let err = gunzip(&bomb, 1 << 20, &mut held()).unwrap_err();
        assert_eq!(err.status, StatusCode::PAYLOAD_TOO_LARGE);
        assert!(err.message.contains("decompressed"), "{}", err.message);
    }

    #[test]
    fn not_gzip_is_a_400() {
        let err = gunzip(b"plain text", 100, &mut held()).unwrap_err();
        assert_eq!(err.status, StatusCode::BAD_REQUEST);
        let mut truncated = gzip(b"some text that is long enough");
        truncated.truncate(truncated.len() - 6);
        assert_eq!(
            gunzip(&truncated, 100, &mut held()).unwrap_err().status,
            StatusCode::BAD_REQUEST
        );
    }

    #[test]
    fn encodings_and_media_types() {
        let mut headers = HeaderMap::new();
        assert_eq!(encoding(&headers).unwrap(), Encoding::Identity);
        headers.insert(header::CONTENT_ENCODING, HeaderValue::from_static("GZIP"));
        assert_eq!(encoding(&headers).unwrap(), Encoding::Gzip);
        headers.insert(header::CONTENT_ENCODING, HeaderValue::from_static("br"));
        assert_eq!(
            encoding(&headers).unwrap_err().status,
            StatusCode::UNSUPPORTED_MEDIA_TYPE
        );
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("Application/JSON; charset=utf-8"),
        );
        assert_eq!(media_type(&headers), "application/json");
    }

    #[tokio::test]
    async fn bodies_over_the_cap_are_413_before_and_after_reading() {
        let mut headers = HeaderMap::new();
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from_static("11"));
        let err = read(
            &headers,
            Body::from("x".repeat(11)),
            Encoding::Identity,
            limits(10),
            &mut held(),
        )
        .await
        .unwrap_err();
        assert_eq!(err.status, StatusCode::PAYLOAD_TOO_LARGE);
        // Chunked: no Content-Length, refused while reading.
        let err = read(
            &HeaderMap::new(),
            Body::from("x".repeat(11)),
            Encoding::Identity,
            limits(10),
            &mut held(),
        )
        .await
        .unwrap_err();
        assert_eq!(err.status, StatusCode::PAYLOAD_TOO_LARGE);
        let ok = read(
            &HeaderMap::new(),
            Body::from("x".repeat(10)),
            Encoding::Identity,
            limits(10),
            &mut held(),
        )
        .await
        .unwrap();
        assert_eq!(ok.len(), 10);
    }

    #[tokio::test(start_paused = true)]
    async fn a_body_that_stops_coming_is_a_408() {
        // One chunk, then nothing: a client that stalled mid-body.
        use futures_util::StreamExt;
        let stalled =
            futures_util::stream::iter([Ok::<_, std::io::Error>(bytes::Bytes::from("{"))])
                .chain(futures_util::stream::pending());
        let err = read(
            &HeaderMap::new(),
            Body::from_stream(stalled),
            Encoding::Identity,
            limits(100),
            &mut held(),
        )
        .await
        .unwrap_err();
        assert_eq!(err.status, StatusCode::REQUEST_TIMEOUT);
        assert!(
            err.message.contains("--body-read-timeout"),
            "{}",
            err.message
        );
    }
}
