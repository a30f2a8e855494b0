//! A request body as the ingest endpoints take it: its media type checked,
//! read up to a cap, and gunzipped up to the same cap.
//!
//! The cap (`--max-body-bytes`) holds for the body as sent and again for it
//! decompressed, and decompression stops one byte past the cap: a gzip bomb
//! costs at most the cap in memory, never its expanded size.

use std::io::Read;

use axum::body::Body;
use axum::http::{header, HeaderMap, StatusCode};
use bytes::Bytes;
use http_body_util::BodyExt;

use super::Rejection;

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

/// The whole body, decompressed, at most `max` bytes either way.
pub(crate) async fn read(
    headers: &HeaderMap,
    body: Body,
    encoding: Encoding,
    max: usize,
) -> Result<Bytes, Rejection> {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > max as u64) {
        return Err(too_large(max, "as sent"));
    }
    let raw = collect(body, max).await?;
    match encoding {
        Encoding::Identity => Ok(raw),
        Encoding::Gzip => gunzip(&raw, max),
    }
}

/// Read frames until the end, refusing past `max` bytes.
async fn collect(mut body: Body, max: usize) -> Result<Bytes, Rejection> {
    let mut buf = bytes::BytesMut::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| {
            Rejection::new(
                StatusCode::BAD_REQUEST,
                format!("could not read the request body: {e}"),
            )
        })?;
        if let Ok(data) = frame.into_data() {
            if buf.len() + data.len() > max {
                return Err(too_large(max, "as sent"));
            }
            buf.extend_from_slice(&data);
        }
    }
    Ok(buf.freeze())
}

/// Decompress, stopping one byte past `max`. Concatenated gzip members are
/// one body, as `gzip -c a b` makes them.
pub(crate) fn gunzip(compressed: &[u8], max: usize) -> Result<Bytes, Rejection> {
    let decoder = flate2::read::MultiGzDecoder::new(compressed);
    // Grows with what is actually decompressed, never sized by the header's
    // claim (ISIZE), which a bomb sets to whatever it likes.
    let mut out = Vec::with_capacity(compressed.len().saturating_mul(4).min(max));
    decoder
        .take(max as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|e| {
            Rejection::new(
                StatusCode::BAD_REQUEST,
                format!("the body is not valid gzip: {e}"),
            )
        })?;
    if out.len() > max {
        return Err(too_large(max, "decompressed"));
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

    pub(crate) fn gzip(data: &[u8]) -> Vec<u8> {
        let mut encoder = GzEncoder::new(Vec::new(), flate2::Compression::default());
        encoder.write_all(data).unwrap();
        encoder.finish().unwrap()
    }

    #[test]
    fn gzip_within_the_cap_is_decompressed() {
        let data = b"{\"message\":\"hi\"}\n".repeat(100);
        assert_eq!(&gunzip(&gzip(&data), data.len()).unwrap()[..], &data[..]);
        let two = [gzip(b"a\n"), gzip(b"b\n")].concat();
        assert_eq!(&gunzip(&two, 100).unwrap()[..], b"a\nb\n");
    }

    #[test]
    fn a_bomb_stops_one_byte_past_the_cap() {
        // 64 MiB of zeros compress to about 64 KiB.
        let bomb = gzip(&vec![0u8; 64 << 20]);
        assert!(bomb.len() < 1 << 20, "{}", bomb.len());
        let err = gunzip(&bomb, 1 << 20).unwrap_err();
        assert_eq!(err.status, StatusCode::PAYLOAD_TOO_LARGE);
        assert!(err.message.contains("decompressed"), "{}", err.message);
    }

    #[test]
    fn not_gzip_is_a_400() {
        let err = gunzip(b"plain text", 100).unwrap_err();
        assert_eq!(err.status, StatusCode::BAD_REQUEST);
        let mut truncated = gzip(b"some text that is long enough");
        truncated.truncate(truncated.len() - 6);
        assert_eq!(
            gunzip(&truncated, 100).unwrap_err().status,
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
        let err = read(&headers, Body::from("x".repeat(11)), Encoding::Identity, 10)
            .await
            .unwrap_err();
        assert_eq!(err.status, StatusCode::PAYLOAD_TOO_LARGE);
        // Chunked: no Content-Length, refused while reading.
        let err = read(
            &HeaderMap::new(),
            Body::from("x".repeat(11)),
            Encoding::Identity,
            10,
        )
        .await
        .unwrap_err();
        assert_eq!(err.status, StatusCode::PAYLOAD_TOO_LARGE);
        let ok = read(
            &HeaderMap::new(),
            Body::from("x".repeat(10)),
            Encoding::Identity,
            10,
        )
        .await
        .unwrap();
        assert_eq!(ok.len(), 10);
    }
}
