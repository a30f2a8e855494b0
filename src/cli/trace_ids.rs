//! Trace and span ids as W3C Trace Context and OTLP define them: 16 and 8
//! bytes, valid only when not all zeros, written as lowercase hex. Read
//! here from OTLP's bytes (ingest) and from text (`logs --trace-id`, the
//! viewer's `trace_id`), so that both agree on what a valid id is.

/// Bytes in a trace id.
pub(crate) const TRACE_ID_BYTES: usize = 16;
/// Bytes in a span id.
pub(crate) const SPAN_ID_BYTES: usize = 8;

/// `bytes` as lowercase hex when they are a valid id of `len` bytes (the
/// right length, not all zeros); `None` otherwise.
pub(crate) fn id_text(bytes: &[u8], len: usize) -> Option<String> {
    (bytes.len() == len && bytes.iter().any(|&b| b != 0))
        .then(|| pglogsink::admin::hex::encode(bytes))
}

/// A trace id as a user writes it: 32 hex digits in either case, not all
/// zeros; stored lowercase.
pub(crate) fn parse_trace_id(s: &str) -> Result<String, String> {
    pglogsink::admin::hex::decode(s.trim())
        .and_then(|bytes| id_text(&bytes, TRACE_ID_BYTES))
        .ok_or_else(|| {
            "expected a trace id of 32 hex digits, e.g. 5b8efff798038103d269b633813fc60c".to_owned()
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_rule_for_bytes_and_text() {
        let id = "5b8efff798038103d269b633813fc60c";
        assert_eq!(parse_trace_id(id).as_deref(), Ok(id));
        assert_eq!(parse_trace_id(&id.to_uppercase()).as_deref(), Ok(id));
        for bad in [
            "",
            "0".repeat(32).as_str(),
            &id[..30],
            "zz",
            &format!("{id}00"),
        ] {
            assert!(parse_trace_id(bad).is_err(), "{bad:?}");
        }
        assert_eq!(id_text(&[0; 8], SPAN_ID_BYTES), None);
        assert_eq!(id_text(&[1; 8], TRACE_ID_BYTES), None);
        assert_eq!(id_text(&[0, 1], 2).as_deref(), Some("0001"));
    }
}
