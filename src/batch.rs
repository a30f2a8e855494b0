//! A batch on its way to the table: its identity and its rows, already in
//! COPY format.

use std::ops::Range;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;

use crate::copy_format::{copy_stream_of, row_offsets, MalformedCopy, HEADER_LEN};
use crate::record::unix_micros;

/// The identity of a batch, recorded in the ledger table in the same
/// transaction as its rows: a retry or a replay of a batch whose key is
/// already there is known to be committed and is not written again.
///
/// `instance` is random per sink; `seq` grows with every batch; `part` is
/// the first row's index in the original batch when a batch is split around
/// a poison row (0 otherwise), so that the pieces of a batch keep stable keys
/// across retries and replays.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct BatchKey {
    pub(crate) instance: i64,
    pub(crate) seq: i64,
    pub(crate) part: i32,
}

/// Hands out batch keys for one sink.
pub(crate) struct KeySource {
    instance: i64,
    last_seq: i64,
}

impl KeySource {
    pub(crate) fn new(instance: i64) -> KeySource {
        KeySource {
            instance,
            last_seq: 0,
        }
    }

    pub(crate) fn instance(&self) -> i64 {
        self.instance
    }

    /// A new key. Sequence numbers are microseconds since the Unix epoch
    /// (kept strictly increasing), so they also say when the batch was made.
    pub(crate) fn next(&mut self) -> BatchKey {
        self.last_seq = unix_micros(SystemTime::now()).max(self.last_seq + 1);
        BatchKey {
            instance: self.instance,
            seq: self.last_seq,
            part: 0,
        }
    }
}

/// A random instance id (positive, so it reads well in SQL).
pub(crate) fn random_instance() -> i64 {
    let mut bytes = [0u8; 8];
    let from_urandom = std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut bytes))
        .is_ok();
    if !from_urandom {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        bytes = (nanos ^ u64::from(std::process::id()).rotate_left(32)).to_le_bytes();
    }
    (u64::from_le_bytes(bytes) >> 1) as i64
}

/// Rows in binary COPY format (header, rows, trailer) with the offset of each
/// row, so that the batch can be split without decoding it.
#[derive(Debug, Clone)]
pub(crate) struct EncodedBatch {
    pub(crate) key: BatchKey,
    pub(crate) data: Bytes,
    pub(crate) offsets: Vec<u32>,
}

impl EncodedBatch {
    pub(crate) fn new(key: BatchKey, data: Bytes, offsets: Vec<u32>) -> EncodedBatch {
        EncodedBatch { key, data, offsets }
    }

    /// Rebuild a batch from a COPY stream (a spooled batch), checking it.
    pub(crate) fn from_copy_stream(
        key: BatchKey,
        data: Bytes,
    ) -> Result<EncodedBatch, MalformedCopy> {
        let offsets = row_offsets(&data)?;
        Ok(EncodedBatch { key, data, offsets })
    }

    pub(crate) fn rows(&self) -> usize {
        self.offsets.len()
    }

    /// Bytes of rows `range`.
    pub(crate) fn byte_range(&self, range: Range<usize>) -> Range<usize> {
        let start = self.offsets[range.start] as usize;
        let end = self
            .offsets
            .get(range.end)
            .map_or(self.data.len() - 2, |&o| o as usize);
        start..end
    }

    /// The bytes of row `i`.
    pub(crate) fn row(&self, i: usize) -> &[u8] {
        &self.data[self.byte_range(i..i + 1)]
    }

    /// The rows `range` as a batch of their own, keyed by their position in
    /// this batch.
    pub(crate) fn sub_batch(&self, range: Range<usize>) -> EncodedBatch {
        let bytes = self.byte_range(range.clone());
        let shift = bytes.start - HEADER_LEN;
        let data = copy_stream_of(&self.data, bytes);
        let offsets = self.offsets[range.clone()]
            .iter()
            .map(|&o| o - shift as u32)
            .collect();
        EncodedBatch {
            key: BatchKey {
                part: self.key.part + range.start as i32,
                ..self.key
            },
            data,
            offsets,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::copy_format::{row_to_json, CopyEncoder};
    use crate::record::{Level, Record};

    #[test]
    fn keys_are_strictly_increasing_and_instances_random() {
        let mut keys = KeySource::new(7);
        let a = keys.next();
        let b = keys.next();
        assert!(b.seq > a.seq && a.instance == 7 && a.part == 0);
        assert_ne!(random_instance(), random_instance());
        assert!(random_instance() >= 0);
    }

    #[test]
    fn sub_batches_split_rows_and_carry_stable_keys() {
        let records: Vec<Record> = (0..5)
            .map(|i| Record::new(Level::Info, format!("m{i}")))
            .collect();
        let mut keys = KeySource::new(1);
        let (batch, _) = CopyEncoder::new(1 << 20).encode(keys.next(), &records);
        let right = batch.sub_batch(2..5);
        assert_eq!(right.rows(), 3);
        assert_eq!(right.key.part, 2);
        assert_eq!(right.key.seq, batch.key.seq);
        assert_eq!(row_offsets(&right.data).unwrap(), right.offsets);
        assert_eq!(row_to_json(right.row(0))["message"], "m2");
        let inner = right.sub_batch(1..2);
        assert_eq!(
            inner.key.part, 3,
            "parts are positions in the original batch"
        );
        assert_eq!(row_to_json(inner.row(0))["message"], "m3");
        let again = EncodedBatch::from_copy_stream(inner.key, inner.data.clone()).unwrap();
        assert_eq!(again.offsets, inner.offsets);
    }
}
