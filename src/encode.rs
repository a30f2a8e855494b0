//! PostgreSQL binary COPY encoding of a batch of records, into one reused
//! buffer.
//!
//! Format: <https://www.postgresql.org/docs/current/sql-copy.html#id-1.9.3.55.9.4>.
//! Text columns go out as raw UTF-8, `timestamptz` as microseconds since
//! 2000-01-01 UTC, `jsonb` as version byte 1 followed by JSON text, the level
//! enum as its label. PostgreSQL rejects NUL in text and `\u0000` in jsonb, so
//! NUL is replaced by U+FFFD here (and counted) instead of failing the batch.

use std::time::{SystemTime, UNIX_EPOCH};

use bytes::{BufMut, Bytes, BytesMut};
use serde_json::Value;

use crate::record::Record;

/// The columns written, in COPY order.
pub(crate) const COLUMNS: &str = r#""timestamp", level, target, message, thread_id, fields"#;
const COLUMN_COUNT: i16 = 6;

const SIGNATURE: &[u8] = b"PGCOPY\n\xff\r\n\0";
const REPLACEMENT: &str = "\u{FFFD}";
/// Microseconds from the Unix epoch to PostgreSQL's epoch (2000-01-01 UTC).
const PG_EPOCH_OFFSET_MICROS: i64 = 946_684_800_000_000;
const JSONB_VERSION: u8 = 1;

/// Encodes batches into binary COPY data, reusing its buffers between
/// batches so that a warm encoder allocates nothing per record.
#[derive(Default)]
pub(crate) struct CopyEncoder {
    buf: BytesMut,
    scratch: Vec<u8>,
}

/// The result of encoding one batch.
pub(crate) struct Encoded {
    pub(crate) data: Bytes,
    /// Records in which at least one NUL was replaced.
    pub(crate) nul_replaced: u64,
}

impl CopyEncoder {
    /// Encode `records` as one complete COPY stream (header, rows, trailer).
    pub(crate) fn encode(&mut self, records: &[Record]) -> Encoded {
        let buf = &mut self.buf;
        buf.clear();
        buf.put_slice(SIGNATURE);
        buf.put_i32(0); // flags
        buf.put_i32(0); // header extension length
        let mut nul_replaced = 0;
        for record in records {
            buf.put_i16(COLUMN_COUNT);
            buf.put_i32(8);
            buf.put_i64(pg_timestamp(record.timestamp));
            put_text(buf, record.level.as_str());
            let mut replaced = put_text(buf, record.target.as_deref().unwrap_or(""));
            replaced |= put_text(buf, &record.message);
            buf.put_i32(8);
            buf.put_i64(record.thread_id);
            replaced |= put_fields(buf, &mut self.scratch, &record.fields);
            nul_replaced += u64::from(replaced);
        }
        buf.put_i16(-1);
        Encoded {
            // split() hands the bytes out and keeps the allocation for the
            // next batch once the COPY has released them.
            data: buf.split().freeze(),
            nul_replaced,
        }
    }
}

fn pg_timestamp(t: SystemTime) -> i64 {
    let micros = match t.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_micros()).unwrap_or(i64::MAX),
        Err(before) => -i64::try_from(before.duration().as_micros()).unwrap_or(i64::MAX),
    };
    micros.saturating_sub(PG_EPOCH_OFFSET_MICROS)
}

/// Write one text field; returns true if NULs had to be replaced.
fn put_text(buf: &mut BytesMut, s: &str) -> bool {
    if !s.as_bytes().contains(&0) {
        buf.put_i32(field_len(s.len()));
        buf.put_slice(s.as_bytes());
        return false;
    }
    let nuls = s.bytes().filter(|&b| b == 0).count();
    buf.put_i32(field_len(s.len() + nuls * (REPLACEMENT.len() - 1)));
    for (i, part) in s.split('\0').enumerate() {
        if i > 0 {
            buf.put_slice(REPLACEMENT.as_bytes());
        }
        buf.put_slice(part.as_bytes());
    }
    true
}

/// Write the jsonb column (NULL when there are no fields); returns true if
/// NULs had to be replaced.
fn put_fields(
    buf: &mut BytesMut,
    scratch: &mut Vec<u8>,
    fields: &[(std::borrow::Cow<'static, str>, Value)],
) -> bool {
    if fields.is_empty() {
        buf.put_i32(-1);
        return false;
    }
    scratch.clear();
    scratch.push(JSONB_VERSION);
    let has_nul = fields
        .iter()
        .any(|(k, v)| k.contains('\0') || value_has_nul(v));
    scratch.push(b'{');
    for (i, (key, value)) in fields.iter().enumerate() {
        if i > 0 {
            scratch.push(b',');
        }
        if has_nul {
            write_json(scratch, &Value::String(key.replace('\0', REPLACEMENT)));
            scratch.push(b':');
            write_json(scratch, &without_nul(value));
        } else {
            write_json(scratch, &**key);
            scratch.push(b':');
            write_json(scratch, value);
        }
    }
    scratch.push(b'}');
    buf.put_i32(field_len(scratch.len()));
    buf.put_slice(scratch);
    has_nul
}

fn write_json<T: serde::Serialize + ?Sized>(out: &mut Vec<u8>, value: &T) {
    // Writing a string, number or Value into a Vec cannot fail: map keys in a
    // Value are always strings and non-finite floats are stored as null.
    let _ = serde_json::to_writer(&mut *out, value);
}

fn value_has_nul(v: &Value) -> bool {
    match v {
        Value::String(s) => s.contains('\0'),
        Value::Array(a) => a.iter().any(value_has_nul),
        Value::Object(o) => o.iter().any(|(k, v)| k.contains('\0') || value_has_nul(v)),
        Value::Null | Value::Bool(_) | Value::Number(_) => false,
    }
}

fn without_nul(v: &Value) -> Value {
    match v {
        Value::String(s) => Value::String(s.replace('\0', REPLACEMENT)),
        Value::Array(a) => Value::Array(a.iter().map(without_nul).collect()),
        Value::Object(o) => Value::Object(
            o.iter()
                .map(|(k, v)| (k.replace('\0', REPLACEMENT), without_nul(v)))
                .collect(),
        ),
        other => other.clone(),
    }
}

fn field_len(len: usize) -> i32 {
    // A single field over 1 GiB is beyond what PostgreSQL accepts anyway; the
    // server rejects it and the error is classified like any other.
    i32::try_from(len).unwrap_or(i32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::Level;
    use std::time::Duration;

    fn read_i16(b: &[u8], at: &mut usize) -> i16 {
        let v = i16::from_be_bytes([b[*at], b[*at + 1]]);
        *at += 2;
        v
    }
    fn read_i32(b: &[u8], at: &mut usize) -> i32 {
        let v = i32::from_be_bytes(b[*at..*at + 4].try_into().unwrap());
        *at += 4;
        v
    }
    fn read_field<'a>(b: &'a [u8], at: &mut usize) -> Option<&'a [u8]> {
        let len = read_i32(b, at);
        if len < 0 {
            return None;
        }
        let v = &b[*at..*at + len as usize];
        *at += len as usize;
        Some(v)
    }

    /// Decode our own output back into rows of raw fields.
    fn decode(data: &[u8]) -> Vec<Vec<Option<Vec<u8>>>> {
        assert_eq!(&data[..11], SIGNATURE);
        let mut at = 19;
        let mut rows = Vec::new();
        loop {
            let n = read_i16(data, &mut at);
            if n == -1 {
                break;
            }
            assert_eq!(n, COLUMN_COUNT);
            rows.push(
                (0..n)
                    .map(|_| read_field(data, &mut at).map(<[u8]>::to_vec))
                    .collect(),
            );
        }
        assert_eq!(at, data.len(), "trailing bytes after the trailer");
        rows
    }

    fn stamped(level: Level, message: &'static str) -> Record {
        let mut r = Record::new(level, message).target("t");
        r.timestamp =
            UNIX_EPOCH + Duration::from_secs(946_684_800) + Duration::from_micros(1_500_000);
        r.thread_id = 42;
        r
    }

    #[test]
    fn rows_round_trip_through_the_binary_format() {
        let records = vec![
            stamped(Level::Warn, "disk almost full")
                .field("free_mb", 12)
                .field("ok", false),
            stamped(Level::Info, ""),
        ];
        let encoded = CopyEncoder::default().encode(&records);
        let rows = decode(&encoded.data);
        assert_eq!(rows.len(), 2);
        let row = &rows[0];
        assert_eq!(row[0].as_deref(), Some(&1_500_000i64.to_be_bytes()[..]));
        assert_eq!(row[1].as_deref(), Some(&b"warn"[..]));
        assert_eq!(row[2].as_deref(), Some(&b"t"[..]));
        assert_eq!(row[3].as_deref(), Some(&b"disk almost full"[..]));
        assert_eq!(row[4].as_deref(), Some(&42i64.to_be_bytes()[..]));
        assert_eq!(
            row[5].as_deref(),
            Some(&b"\x01{\"free_mb\":12,\"ok\":false}"[..])
        );
        assert_eq!(
            rows[1][3].as_deref(),
            Some(&b""[..]),
            "empty message is empty, not NULL"
        );
        assert_eq!(rows[1][5], None, "no fields is NULL");
        assert_eq!(encoded.nul_replaced, 0);
    }

    #[test]
    fn nul_bytes_are_replaced_everywhere_and_counted_once_per_record() {
        let records = vec![
            stamped(Level::Info, "a\0b\0")
                .field("k\0", "v\0")
                .field("n", serde_json::json!([{"x": "\0"}])),
            stamped(Level::Info, "clean"),
        ];
        let encoded = CopyEncoder::default().encode(&records);
        assert_eq!(encoded.nul_replaced, 1);
        let rows = decode(&encoded.data);
        assert_eq!(rows[0][3].as_deref(), Some("a\u{FFFD}b\u{FFFD}".as_bytes()));
        let json = &rows[0][5].as_ref().unwrap()[1..];
        let parsed: Value = serde_json::from_slice(json).unwrap();
        assert_eq!(
            parsed,
            serde_json::json!({"k\u{FFFD}": "v\u{FFFD}", "n": [{"x": "\u{FFFD}"}]})
        );
        assert!(!json.windows(6).any(|w| w == b"\\u0000"));
    }

    #[test]
    fn timestamps_before_2000_and_before_1970_are_negative() {
        assert_eq!(pg_timestamp(UNIX_EPOCH), -PG_EPOCH_OFFSET_MICROS);
        assert_eq!(
            pg_timestamp(UNIX_EPOCH - Duration::from_micros(1)),
            -PG_EPOCH_OFFSET_MICROS - 1
        );
    }

    #[test]
    fn the_buffer_is_reused_between_batches() {
        let mut encoder = CopyEncoder::default();
        let records: Vec<Record> = (0..100).map(|_| stamped(Level::Info, "hello")).collect();
        let first = encoder.encode(&records);
        let (len, ptr) = (first.data.len(), first.data.as_ptr());
        drop(first);
        let second = encoder.encode(&records);
        assert_eq!(second.data.len(), len);
        assert_eq!(
            second.data.as_ptr(),
            ptr,
            "the second batch reused the first one's allocation"
        );
    }
}
