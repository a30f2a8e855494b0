//! A batch on its way to the table: its identity and its rows, already in
//! COPY format.

use std::ops::Range;
use std::sync::Arc;

use bytes::Bytes;

use crate::copy_format::{copy_stream_of, row_offsets, CopyEncoder, MalformedCopy, HEADER_LEN};
use crate::ledger::{BatchKey, KeySource};
use crate::record::Record;
use crate::sink_state::SinkState;

/// Rows in binary COPY format (header, rows, trailer) with the offset of each
/// row, so that the batch can be split without decoding it.
#[derive(Debug, Clone)]
pub(crate) struct EncodedBatch {
    pub(crate) key: BatchKey,
    pub(crate) data: Bytes,
    pub(crate) offsets: Vec<usize>,
}

impl EncodedBatch {
    pub(crate) fn new(key: BatchKey, data: Bytes, offsets: Vec<usize>) -> EncodedBatch {
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
        let start = self.offsets[range.start];
        let end = self
            .offsets
            .get(range.end)
            .map_or(self.data.len() - 2, |&o| o);
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
            .map(|&o| o - shift)
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

/// Turns records into keyed batches, counting what encoding changed.
pub(crate) struct BatchEncoder {
    copy: CopyEncoder,
    keys: KeySource,
    state: Arc<SinkState>,
}

impl BatchEncoder {
    pub(crate) fn new(copy: CopyEncoder, keys: KeySource, state: Arc<SinkState>) -> BatchEncoder {
        BatchEncoder { copy, keys, state }
    }

    pub(crate) fn encode(&mut self, records: &[Record]) -> EncodedBatch {
        let (data, offsets, stats) = self.copy.encode(records);
        SinkState::add(&self.state.nul_replaced, stats.nul_replaced);
        SinkState::add(&self.state.truncated, stats.truncated);
        EncodedBatch::new(self.keys.next(), data, offsets)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::copy_format::row_to_json;
    use crate::level::Level;

    #[test]
    fn sub_batches_split_rows_and_carry_stable_keys() {
        let records: Vec<Record> = (0..5)
            .map(|i| Record::new(Level::Info, format!("m{i}")))
            .collect();
        let state = Arc::new(SinkState::new(crate::DEFAULT_MAX_QUEUE_BYTES));
        let mut encoder = BatchEncoder::new(CopyEncoder::new(1 << 20), KeySource::new(1), state);
        let batch = encoder.encode(&records);
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
