//! PostgreSQL binary COPY format: encoding a batch of records into one reused
//! buffer, and walking and decoding rows again (to split a batch around a
//! poison row, to replay a spooled batch, to store a rejected row as JSON).
//!
//! Format: <https://www.postgresql.org/docs/current/sql-copy.html#id-1.9.3.55.9.4>.
//! Text columns go out as raw UTF-8, `timestamptz` as microseconds since
//! 2000-01-01 UTC, `jsonb` as version byte 1 followed by JSON text, the level
//! enum as its label. PostgreSQL rejects NUL in text and `\u0000` in jsonb, so
//! NUL is replaced by U+FFFD here (and counted) instead of failing the batch.
//! A record larger than the configured maximum is truncated here, with a
//! marker, and counted.

use std::borrow::Cow;
use std::ops::Range;
use std::time::SystemTime;

use bytes::{BufMut, Bytes, BytesMut};
use serde_json::Value;

use crate::fields::{write_json, write_members, REPLACEMENT};
use crate::micros::unix_micros;
use crate::record::Record;

/// The columns written, in COPY order.
pub(crate) const COLUMNS: &str = r#""timestamp", level, target, message, thread_id, fields"#;
const COLUMN_COUNT: i16 = 6;

const SIGNATURE: &[u8] = b"PGCOPY\n\xff\r\n\0";
/// Signature, flags, header extension length.
pub(crate) const HEADER_LEN: usize = 19;
const TRAILER: [u8; 2] = [0xff, 0xff];
/// Microseconds from the Unix epoch to PostgreSQL's epoch (2000-01-01 UTC).
const PG_EPOCH_OFFSET_MICROS: i64 = 946_684_800_000_000;
const JSONB_VERSION: u8 = 1;

/// Encodes batches into binary COPY data, reusing its buffers between
/// batches so that a warm encoder allocates nothing per record.
pub(crate) struct CopyEncoder {
    buf: BytesMut,
    scratch: Vec<u8>,
    max_record_bytes: usize,
}

/// Counters of one encoded batch.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct EncodeStats {
    /// Records in which at least one NUL was replaced.
    pub(crate) nul_replaced: u64,
    /// Records cut down to the maximum record size.
    pub(crate) truncated: u64,
}

impl CopyEncoder {
    pub(crate) fn new(max_record_bytes: usize) -> CopyEncoder {
        CopyEncoder {
            buf: BytesMut::new(),
            scratch: Vec::new(),
            max_record_bytes,
        }
    }

    /// Encode `records` as one complete COPY stream (header, rows, trailer),
    /// with the offset of each row.
    pub(crate) fn encode(&mut self, records: &[Record]) -> (Bytes, Vec<usize>, EncodeStats) {
        let mut stats = EncodeStats::default();
        let mut offsets = Vec::with_capacity(records.len());
        self.buf.clear();
        put_header(&mut self.buf);
        for record in records {
            offsets.push(self.buf.len());
            let (replaced, truncated) = self.put_record(record);
            stats.nul_replaced += u64::from(replaced);
            stats.truncated += u64::from(truncated);
        }
        self.buf.put_slice(&TRAILER);
        // split() hands the bytes out and keeps the allocation for the next
        // batch once the COPY has released them.
        let data = self.buf.split().freeze();
        (data, offsets, stats)
    }

    /// Returns (NULs replaced, truncated).
    fn put_record(&mut self, record: &Record) -> (bool, bool) {
        let has_fields = record.has_fields();
        let (mut replaced, skipped) = if has_fields {
            fields_json(&mut self.scratch, record, self.max_record_bytes)
        } else {
            (false, 0)
        };
        // `scratch` is reused between records: without fields of this
        // record's own, it still holds the previous record's, so its length
        // counts only when there are fields.
        let fields_len = if has_fields {
            self.scratch.len() + skipped
        } else {
            0
        };
        let target = record.target.as_deref().unwrap_or("");
        let message: &str = &record.message;
        let size = target.len() + message.len() + fields_len;
        let truncated = size > self.max_record_bytes;
        let (target, message) = if truncated {
            self.cut_to_fit(target, message, fields_len, has_fields)
        } else {
            (Cow::Borrowed(target), Cow::Borrowed(message))
        };
        let buf = &mut self.buf;
        buf.put_i16(COLUMN_COUNT);
        buf.put_i32(8);
        buf.put_i64(pg_timestamp(record.timestamp));
        put_text(buf, record.level.as_str());
        replaced |= put_text(buf, &target);
        replaced |= put_text(buf, &message);
        buf.put_i32(8);
        buf.put_i64(record.thread_id);
        if has_fields {
            buf.put_i32(field_len(self.scratch.len()));
            buf.put_slice(&self.scratch);
        } else {
            buf.put_i32(-1);
        }
        (replaced, truncated)
    }

    /// A record over the limit, made to fit: the target cut to a quarter
    /// of it, the fields (in `scratch`) replaced by a note of their size
    /// when with the target they take more than half, and the message cut
    /// to the room left. Each cut says how many bytes it dropped.
    fn cut_to_fit<'a>(
        &mut self,
        target: &'a str,
        message: &'a str,
        fields_len: usize,
        has_fields: bool,
    ) -> (Cow<'a, str>, Cow<'a, str>) {
        let max = self.max_record_bytes;
        let target = cut(target, max / 4);
        let mut kept_fields = fields_len;
        if has_fields && target.len() + fields_len > max / 2 {
            self.scratch.clear();
            self.scratch.push(JSONB_VERSION);
            write_json(
                &mut self.scratch,
                &serde_json::json!({ "pglogsink_truncated_fields_bytes": fields_len }),
            );
            kept_fields = self.scratch.len();
        }
        let room = max.saturating_sub(target.len() + kept_fields).max(64);
        (target, cut(message, room))
    }
}

/// `text` as is if it fits in `room` bytes, else its start (on a character
/// boundary) and a marker saying how much was cut, within `room`.
fn cut(text: &str, room: usize) -> Cow<'_, str> {
    if text.len() <= room {
        return Cow::Borrowed(text);
    }
    let mut end = room.saturating_sub(48).min(text.len());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    Cow::Owned(format!(
        "{}…[truncated {} bytes]",
        &text[..end],
        text.len() - end
    ))
}

fn put_header(buf: &mut BytesMut) {
    buf.put_slice(SIGNATURE);
    buf.put_i32(0); // flags
    buf.put_i32(0); // header extension length
}

/// A COPY stream holding the rows at `ranges` of `data` (byte ranges of
/// whole rows), for a sub-batch.
pub(crate) fn copy_stream_of(data: &[u8], ranges: Range<usize>) -> Bytes {
    let mut buf = BytesMut::with_capacity(HEADER_LEN + ranges.len() + TRAILER.len());
    put_header(&mut buf);
    buf.put_slice(&data[ranges]);
    buf.put_slice(&TRAILER);
    buf.freeze()
}

fn pg_timestamp(t: SystemTime) -> i64 {
    unix_micros(t).saturating_sub(PG_EPOCH_OFFSET_MICROS)
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

/// The jsonb value of a record's fields (version byte and JSON object:
/// the shared fields, then its own) into `scratch`. Returns whether NULs
/// were replaced and the bytes of shared fields too large to be copied at
/// all (they will be replaced by a note of their size).
fn fields_json(scratch: &mut Vec<u8>, record: &Record, max: usize) -> (bool, usize) {
    scratch.clear();
    scratch.push(JSONB_VERSION);
    scratch.push(b'{');
    let (mut replaced, mut skipped) = (false, 0);
    if let Some(shared) = &record.shared {
        if shared.members().len() > max {
            skipped = shared.members().len();
        } else {
            scratch.extend_from_slice(shared.members());
            replaced = shared.nul_replaced();
        }
    }
    let comma = scratch.len() > 2;
    replaced |= write_members(scratch, &record.fields, comma);
    scratch.push(b'}');
    (replaced, skipped)
}

fn field_len(len: usize) -> i32 {
    // A single field over 1 GiB is beyond what PostgreSQL accepts anyway; the
    // server rejects it and the error is classified like any other.
    i32::try_from(len).unwrap_or(i32::MAX)
}

/// Data that is not a COPY stream this module wrote (a corrupt spool entry).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct MalformedCopy(pub(crate) &'static str);

/// Offsets of the rows of a complete COPY stream, checking its structure.
pub(crate) fn row_offsets(data: &[u8]) -> Result<Vec<usize>, MalformedCopy> {
    if data.len() < HEADER_LEN + 2 || &data[..SIGNATURE.len()] != SIGNATURE {
        return Err(MalformedCopy("no COPY header"));
    }
    let mut offsets = Vec::new();
    let mut at = HEADER_LEN;
    loop {
        let count = read_i16(data, at).ok_or(MalformedCopy("truncated row"))?;
        if count == -1 {
            if at + 2 != data.len() {
                return Err(MalformedCopy("bytes after the trailer"));
            }
            return Ok(offsets);
        }
        if count != COLUMN_COUNT {
            return Err(MalformedCopy("wrong column count"));
        }
        offsets.push(at);
        at += 2;
        for _ in 0..COLUMN_COUNT {
            let len = read_i32(data, at).ok_or(MalformedCopy("truncated field"))?;
            at += 4;
            if len > 0 {
                at = at
                    .checked_add(len as usize)
                    .filter(|&end| end <= data.len())
                    .ok_or(MalformedCopy("field beyond the end"))?;
            }
        }
    }
}

/// One row (the bytes from its column count to the next row) as the JSON
/// kept for a rejected row.
pub(crate) fn row_to_json(row: &[u8]) -> Value {
    let mut at = 2;
    let mut field = || -> Option<&[u8]> {
        let len = read_i32(row, at)?;
        at += 4;
        if len < 0 {
            return None;
        }
        let bytes = row.get(at..at + len as usize)?;
        at += len as usize;
        Some(bytes)
    };
    let ts = field()
        .and_then(|b| b.try_into().ok())
        .map(i64::from_be_bytes);
    let level = field().map(String::from_utf8_lossy);
    let target = field().map(String::from_utf8_lossy);
    let message = field().map(String::from_utf8_lossy);
    let thread = field()
        .and_then(|b| b.try_into().ok())
        .map(i64::from_be_bytes);
    let fields = field()
        .and_then(|b| b.get(1..))
        .and_then(|json| serde_json::from_slice::<Value>(json).ok());
    let timestamp = ts.map(|t| Value::from(t.saturating_add(PG_EPOCH_OFFSET_MICROS)));
    serde_json::json!({
        "timestamp_unix_micros": timestamp,
        "level": level,
        "target": target,
        "message": message,
        "thread_id": thread,
        "fields": fields,
    })
}

fn read_i16(b: &[u8], at: usize) -> Option<i16> {
    Some(i16::from_be_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

fn read_i32(b: &[u8], at: usize) -> Option<i32> {
    Some(i32::from_be_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::level::Level;
    use crate::micros::from_unix_micros;
    use std::time::{Duration, UNIX_EPOCH};

    /// A PostgreSQL timestamp as an instant.
    fn from_pg_timestamp(micros: i64) -> SystemTime {
        from_unix_micros(micros.saturating_add(PG_EPOCH_OFFSET_MICROS))
    }

    /// What `encode` returned, with the accessors the tests need.
    struct Encoded {
        data: Bytes,
        offsets: Vec<usize>,
    }

    impl Encoded {
        fn rows(&self) -> usize {
            self.offsets.len()
        }

        fn byte_range(&self, rows: Range<usize>) -> Range<usize> {
            let end = self
                .offsets
                .get(rows.end)
                .map_or(self.data.len() - TRAILER.len(), |&o| o);
            self.offsets[rows.start]..end
        }

        fn row(&self, i: usize) -> &[u8] {
            &self.data[self.byte_range(i..i + 1)]
        }
    }

    fn encoded(encoder: &mut CopyEncoder, records: &[Record]) -> (Encoded, EncodeStats) {
        let (data, offsets, stats) = encoder.encode(records);
        (Encoded { data, offsets }, stats)
    }

    fn field_at(row: &[u8], index: usize) -> Option<Vec<u8>> {
        let mut at = 2;
        for i in 0..COLUMN_COUNT as usize {
            let len = read_i32(row, at).unwrap();
            at += 4;
            let value = (len >= 0).then(|| row[at..at + len as usize].to_vec());
            at += len.max(0) as usize;
            if i == index {
                return value;
            }
        }
        unreachable!()
    }

    fn stamped(level: Level, message: &'static str) -> Record {
        let mut r = Record::new(level, message).target("t");
        r.timestamp =
            UNIX_EPOCH + Duration::from_secs(946_684_800) + Duration::from_micros(1_500_000);
        r.thread_id = 42;
        r
    }

    fn encode(records: &[Record]) -> (Encoded, EncodeStats) {
        encoded(&mut CopyEncoder::new(1 << 20), records)
    }

    #[test]
    fn rows_round_trip_through_the_binary_format() {
        let records = vec![
            stamped(Level::Warn, "disk almost full")
                .field("free_mb", 12)
                .field("ok", false),
            stamped(Level::Info, ""),
        ];
        let (batch, stats) = encode(&records);
        assert_eq!(row_offsets(&batch.data), Ok(batch.offsets.clone()));
        assert_eq!(batch.rows(), 2);
        let row = batch.row(0);
        assert_eq!(field_at(row, 0), Some(1_500_000i64.to_be_bytes().to_vec()));
        assert_eq!(field_at(row, 1).as_deref(), Some(&b"warn"[..]));
        assert_eq!(field_at(row, 2).as_deref(), Some(&b"t"[..]));
        assert_eq!(field_at(row, 3).as_deref(), Some(&b"disk almost full"[..]));
        assert_eq!(field_at(row, 4), Some(42i64.to_be_bytes().to_vec()));
        assert_eq!(
            field_at(row, 5).as_deref(),
            Some(&b"\x01{\"free_mb\":12,\"ok\":false}"[..])
        );
        assert_eq!(field_at(batch.row(1), 3).as_deref(), Some(&b""[..]));
        assert_eq!(field_at(batch.row(1), 5), None, "no fields is NULL");
        assert_eq!(stats, EncodeStats::default());
        let json = row_to_json(batch.row(0));
        assert_eq!(json["message"], "disk almost full");
        assert_eq!(
            json["fields"],
            serde_json::json!({"free_mb": 12, "ok": false})
        );
        assert_eq!(json["timestamp_unix_micros"], 946_684_801_500_000u64);
    }

    #[test]
    fn nul_bytes_are_replaced_everywhere_and_counted_once_per_record() {
        let records = vec![
            stamped(Level::Info, "a\0b\0")
                .field("k\0", "v\0")
                .field("n", serde_json::json!([{"x": "\0"}])),
            stamped(Level::Info, "clean"),
        ];
        let (batch, stats) = encode(&records);
        assert_eq!(stats.nul_replaced, 1);
        let row = batch.row(0);
        assert_eq!(
            field_at(row, 3).as_deref(),
            Some("a\u{FFFD}b\u{FFFD}".as_bytes())
        );
        let json = field_at(row, 5).unwrap();
        let parsed: Value = serde_json::from_slice(&json[1..]).unwrap();
        assert_eq!(
            parsed,
            serde_json::json!({"k\u{FFFD}": "v\u{FFFD}", "n": [{"x": "\u{FFFD}"}]})
        );
        assert!(!json.windows(6).any(|w| w == b"\\u0000"));
    }

    #[test]
    fn oversized_records_are_truncated_with_a_marker() {
        let mut encoder = CopyEncoder::new(1000);
        let big = "x".repeat(5000);
        let records = vec![
            stamped(Level::Info, "small"),
            Record::new(Level::Info, big.clone()),
            Record::new(Level::Info, "m").field("blob", big.clone()),
        ];
        let (batch, stats) = encoded(&mut encoder, &records);
        assert_eq!(stats.truncated, 2);
        let message = String::from_utf8(field_at(batch.row(1), 3).unwrap()).unwrap();
        assert!(message.len() <= 1000, "{}", message.len());
        // The whole limit is room for the message: no target, no fields.
        assert_eq!(
            message,
            format!("{}…[truncated 4048 bytes]", "x".repeat(952))
        );
        let fields = field_at(batch.row(2), 5).unwrap();
        let parsed: Value = serde_json::from_slice(&fields[1..]).unwrap();
        assert!(parsed["pglogsink_truncated_fields_bytes"].as_u64().unwrap() > 5000);
        assert_eq!(row_offsets(&batch.data).unwrap().len(), 3);
    }

    /// A record without fields after one with fields: the room for its
    /// message must not count the previous record's fields JSON.
    #[test]
    fn a_record_without_fields_is_cut_as_if_encoded_alone() {
        let big = "x".repeat(5000);
        let (alone, _) = encoded(
            &mut CopyEncoder::new(1000),
            &[Record::new(Level::Info, big.clone())],
        );
        let expected = field_at(alone.row(0), 3).unwrap();
        let records = vec![
            Record::new(Level::Info, "m").field("blob", "y".repeat(400)),
            Record::new(Level::Info, big),
        ];
        let (batch, stats) = encoded(&mut CopyEncoder::new(1000), &records);
        assert_eq!(stats.truncated, 1);
        assert_eq!(
            String::from_utf8(field_at(batch.row(1), 3).unwrap()).unwrap(),
            String::from_utf8(expected).unwrap()
        );
    }

    #[test]
    fn truncation_respects_utf8_boundaries() {
        let mut encoder = CopyEncoder::new(300);
        let records = vec![Record::new(Level::Info, "é".repeat(1000))];
        let (batch, stats) = encoded(&mut encoder, &records);
        assert_eq!(stats.truncated, 1);
        let message = field_at(batch.row(0), 3).unwrap();
        assert!(String::from_utf8(message).is_ok());
    }

    #[test]
    fn timestamps_before_2000_and_before_1970_are_negative() {
        assert_eq!(pg_timestamp(UNIX_EPOCH), -PG_EPOCH_OFFSET_MICROS);
        assert_eq!(
            pg_timestamp(UNIX_EPOCH - Duration::from_micros(1)),
            -PG_EPOCH_OFFSET_MICROS - 1
        );
        assert_eq!(
            from_pg_timestamp(-PG_EPOCH_OFFSET_MICROS - 1),
            UNIX_EPOCH - Duration::from_micros(1)
        );
    }

    #[test]
    fn malformed_streams_are_rejected_not_panicked_on() {
        let (batch, _) = encode(&[stamped(Level::Info, "hello")]);
        let data = &batch.data[..];
        assert!(row_offsets(&data[..data.len() - 1]).is_err());
        assert!(row_offsets(&data[..HEADER_LEN + 5]).is_err());
        assert!(row_offsets(b"garbage").is_err());
        let mut extra = data.to_vec();
        extra.push(0);
        assert!(row_offsets(&extra).is_err());
        for cut in 0..data.len() {
            let _ = row_offsets(&data[..cut]);
        }
    }

    #[test]
    fn sub_streams_hold_exactly_the_chosen_rows() {
        let records: Vec<Record> = ["a", "b", "c", "d"]
            .iter()
            .map(|m| stamped(Level::Info, m))
            .collect();
        let (batch, _) = encode(&records);
        let sub = copy_stream_of(&batch.data, batch.byte_range(1..3));
        let offsets = row_offsets(&sub).unwrap();
        assert_eq!(offsets.len(), 2);
        assert_eq!(row_to_json(&sub[offsets[0]..])["message"], "b");
        assert_eq!(row_to_json(&sub[offsets[1]..])["message"], "c");
    }

    #[test]
    fn the_buffer_is_reused_between_batches() {
        let mut encoder = CopyEncoder::new(1 << 20);
        let records: Vec<Record> = (0..100).map(|_| stamped(Level::Info, "hello")).collect();
        let (first, _) = encoded(&mut encoder, &records);
        let (len, ptr) = (first.data.len(), first.data.as_ptr());
        drop(first);
        let (second, _) = encoded(&mut encoder, &records);
        assert_eq!(second.data.len(), len);
        assert_eq!(
            second.data.as_ptr(),
            ptr,
            "the second batch reused the first one's allocation"
        );
    }
}
