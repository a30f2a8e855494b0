//! Keeping the queue within its memory budget: past the budget the queue
//! moves to the on-disk spool; when the spool can take no more either, the
//! sink is marked full and `send()` hands records back until it clears.
//! Also where batches that could not be written go when delivery stops, and
//! where spooled batches come back from for replay.

use std::borrow::Cow;
use std::path::Path;
use std::sync::Arc;

use serde_json::Value;

use crate::batch::{BatchEncoder, EncodedBatch};
use crate::delivery::{Source, Stopped};
use crate::record::Record;
use crate::report::human_bytes;
use crate::spool::{Segment, Spool};
use crate::stats::Shared;

/// Records per batch whose size feeds the running average.
const SAMPLE: usize = 64;

pub(crate) struct Spill {
    spool: Option<Spool>,
    /// The memory budget of the queue, in estimated bytes.
    budget: usize,
    /// Running average of a queued record's size in memory.
    avg_record_bytes: f64,
    shared: Arc<Shared>,
}

impl Spill {
    pub(crate) fn new(spool: Option<Spool>, budget: usize, shared: Arc<Shared>) -> Spill {
        if let Some(spool) = &spool {
            Shared::add(&shared.spool_bytes, spool.bytes());
        }
        Spill {
            spool,
            budget,
            // A first guess, replaced by measurement as batches go by.
            avg_record_bytes: 512.0,
            shared,
        }
    }

    /// True when the spool holds batches waiting for replay.
    pub(crate) fn has_spooled(&self) -> bool {
        self.spool.as_ref().is_some_and(|s| !s.is_empty())
    }

    pub(crate) fn spool_dir(&self) -> Option<&Path> {
        self.spool.as_ref().map(Spool::dir)
    }

    /// Learn the size of queued records from a batch just taken.
    pub(crate) fn observe(&mut self, records: &[Record]) {
        let sample = &records[..records.len().min(SAMPLE)];
        if sample.is_empty() {
            return;
        }
        let bytes: usize = sample.iter().map(queued_bytes).sum();
        let avg = bytes as f64 / sample.len() as f64;
        self.avg_record_bytes = 0.9 * self.avg_record_bytes + 0.1 * avg;
    }

    /// Estimated bytes of `queued` records.
    fn estimate(&self, queued: usize) -> u64 {
        (queued as f64 * self.avg_record_bytes) as u64
    }

    /// Called every few milliseconds, also while a write is in flight: past
    /// the budget, move the queue to the spool; when the spool cannot take
    /// it, refuse new records until the queue is back under budget.
    pub(crate) fn keep_budget(
        &mut self,
        rx: &flume::Receiver<Record>,
        encoder: &mut BatchEncoder,
        batch_size: usize,
    ) {
        let estimated = self.estimate(rx.len());
        if estimated <= self.budget as u64 {
            self.take_records_again();
            return;
        }
        let room = match &self.spool {
            None => Err("there is no spool to move it to".to_owned()),
            Some(spool) => spool.room(),
        };
        if let Err(why) = room {
            return self.refuse_records(estimated, &why);
        }
        let (spilled, room) = self.spill_queue(rx, encoder, batch_size, true);
        self.flush();
        tracing::warn!(
            target: "pglogsink",
            records = spilled,
            estimated_bytes = estimated,
            budget = self.budget,
            "the queue passed its memory budget; moved it to the spool"
        );
        match room {
            Ok(()) => self.take_records_again(),
            Err(why) => self.refuse_records(self.estimate(rx.len()), &why),
        }
    }

    fn refuse_records(&self, estimated: u64, why: &str) {
        let reason = format!(
            "the queue holds about {} (budget {}) and {why}; records are handed back until the database catches up",
            human_bytes(estimated),
            human_bytes(self.budget as u64)
        );
        if !self.shared.full.load(std::sync::atomic::Ordering::Relaxed) {
            tracing::error!(target: "pglogsink", reason = %reason, "the sink is full: log() and send() now hand records back");
        }
        self.shared.set_full(Some(reason));
    }

    fn take_records_again(&self) {
        if self.shared.full.load(std::sync::atomic::Ordering::Relaxed) {
            tracing::warn!(target: "pglogsink", "the sink takes records again");
            self.shared.set_full(None);
        }
    }

    /// Move queued records to the spool, batch by batch, while it has room.
    /// Returns how many were taken, and `Err` with the reason if the spool
    /// ran out of room first.
    /// With `until_full` false it takes everything, and what finds no room
    /// is counted lost (the sink is stopping).
    fn spill_queue(
        &mut self,
        rx: &flume::Receiver<Record>,
        encoder: &mut BatchEncoder,
        batch_size: usize,
        until_full: bool,
    ) -> (u64, Result<(), String>) {
        let mut records = Vec::with_capacity(batch_size);
        let mut taken = 0;
        loop {
            if until_full {
                if let Some(Err(why)) = self.spool.as_ref().map(Spool::room) {
                    return (taken, Err(why));
                }
            }
            records.extend(rx.try_iter().take(batch_size));
            if records.is_empty() {
                return (taken, Ok(()));
            }
            taken += records.len() as u64;
            Shared::add(&self.shared.received, records.len() as u64);
            self.observe(&records);
            let batch = encoder.encode(&records);
            records.clear();
            self.park(batch, false);
        }
    }

    /// A batch that will not be written now: to the spool, or counted lost
    /// (or in doubt, when its write was cut off and may have committed).
    fn park(&mut self, batch: EncodedBatch, in_flight: bool) {
        let rows = batch.rows() as u64;
        let lost = &self.shared.lost;
        let Some(spool) = self.spool.as_mut() else {
            let counter = if in_flight {
                &self.shared.in_doubt
            } else {
                &lost.no_spool
            };
            return Shared::add(counter, rows);
        };
        if let Err(why) = spool.room() {
            tracing::error!(target: "pglogsink", rows, reason = %why, "the spool is full; records lost");
            let counter = if in_flight {
                &self.shared.in_doubt
            } else {
                &lost.spool_full
            };
            return Shared::add(counter, rows);
        }
        match spool.append(&batch) {
            Ok(()) => Shared::add(&self.shared.spooled, rows),
            Err(e) => {
                tracing::error!(target: "pglogsink", error = %e, rows, "could not write to the spool; records lost");
                Shared::add(&lost.spool_error, rows);
            }
        }
    }

    /// What is left of a delivery that stopped: queue batches go to the
    /// spool (spool batches are still there).
    pub(crate) fn park_stopped(&mut self, stopped: Stopped, source: Source) {
        if source == Source::Spool {
            return;
        }
        if let Some(batch) = stopped.in_flight {
            self.park(batch, true);
        }
        for batch in stopped.unsent {
            self.park(batch, false);
        }
        self.flush();
    }

    /// At the end: whatever is still queued goes to the spool or is counted
    /// lost, and later sends fail.
    pub(crate) fn spill_everything(
        &mut self,
        rx: &flume::Receiver<Record>,
        encoder: &mut BatchEncoder,
        batch_size: usize,
    ) {
        self.shared
            .closed
            .store(true, std::sync::atomic::Ordering::Release);
        if self.spool.is_none() {
            // Nowhere to keep them: count, without encoding.
            let lost = rx.drain().count() as u64;
            Shared::add(&self.shared.received, lost);
            Shared::add(&self.shared.lost.no_spool, lost);
            return;
        }
        let (taken, _) = self.spill_queue(rx, encoder, batch_size, false);
        self.flush();
        if let (Some(spool), 1..) = (&self.spool, taken) {
            tracing::warn!(target: "pglogsink", records = taken, dir = %spool.dir().display(),
                "spooled the records that could not be written; they will be written at the next start");
        }
    }

    fn flush(&mut self) {
        if let Some(Err(e)) = self.spool.as_mut().map(Spool::flush) {
            tracing::error!(target: "pglogsink", error = %e, "could not flush the spool");
        }
        self.note_size();
    }

    fn note_size(&self) {
        if let Some(spool) = &self.spool {
            self.shared
                .spool_bytes
                .store(spool.bytes(), std::sync::atomic::Ordering::Relaxed);
        }
    }

    /// The oldest spooled segment, for replay (`None` when the spool is
    /// empty or cannot be read).
    pub(crate) fn next_segment(&mut self) -> Option<Segment> {
        let spool = self.spool.as_mut().filter(|s| !s.is_empty())?;
        let segment = match spool.oldest() {
            Ok(segment) => segment?,
            Err(e) => {
                // Cannot read the spool: stop replaying rather than spin.
                tracing::error!(target: "pglogsink", error = %e, dir = %spool.dir().display(),
                    "cannot read the spool; replay is disabled for this run");
                self.spool = None;
                return None;
            }
        };
        if let Some(corrupt) = &segment.corrupt {
            Shared::add(&self.shared.spool_corrupt_bytes, corrupt.skipped_bytes);
            tracing::warn!(
                target: "pglogsink",
                segment = %segment.path.display(),
                offset = corrupt.offset,
                skipped_bytes = corrupt.skipped_bytes,
                reason = corrupt.reason,
                "spool segment ends in a torn or corrupt entry; replaying the entries before it and skipping the rest"
            );
        }
        let rows: usize = segment.batches.iter().map(EncodedBatch::rows).sum();
        tracing::info!(target: "pglogsink", segment = %segment.path.display(), rows, "replaying spooled records");
        Some(segment)
    }

    /// A segment whose batches are all written (or set aside) goes.
    pub(crate) fn replayed(&mut self, segment: &Segment) {
        let Some(spool) = self.spool.as_mut() else {
            return;
        };
        if let Err(e) = spool.remove(segment) {
            tracing::error!(target: "pglogsink", error = %e, segment = %segment.path.display(),
                "cannot remove a replayed spool segment; replay is disabled for this run (its batches are in the ledger and will not be written twice)");
            self.spool = None;
        }
        self.note_size();
    }
}

/// What a record costs in memory while it waits in the queue: its slot in
/// the channel's ring buffer (which grows by doubling and does not shrink,
/// so counted twice) and each heap block it owns, as the allocator hands
/// them out (the size plus 8 bytes of header, rounded up to 16, at least
/// 32). Measured against RSS for the records `serve` queues (1,000,000 in
/// `flume`'s queue): 488 bytes each; this says 560. The budget errs on the
/// safe side.
pub(crate) fn queued_bytes(record: &Record) -> usize {
    let owned = |s: &Cow<'static, str>| match s {
        Cow::Owned(s) => heap_block(s.capacity()),
        Cow::Borrowed(_) => 0,
    };
    let slots = if record.fields.is_empty() {
        0
    } else {
        record.fields.capacity().max(4)
    };
    2 * std::mem::size_of::<Record>()
        + owned(&record.message)
        + record.target.as_ref().map_or(0, owned)
        + heap_block(slots * std::mem::size_of::<(Cow<'static, str>, Value)>())
        + record
            .fields
            .iter()
            .map(|(k, v)| owned(k) + value_bytes(v))
            .sum::<usize>()
}

/// Heap bytes a JSON value owns beyond its own slot.
fn value_bytes(v: &Value) -> usize {
    match v {
        Value::Null | Value::Bool(_) | Value::Number(_) => 0,
        Value::String(s) => heap_block(s.capacity()),
        Value::Array(a) => {
            heap_block(a.capacity() * std::mem::size_of::<Value>())
                + a.iter().map(value_bytes).sum::<usize>()
        }
        // A B-tree map: about a key, a value and a few words of node per
        // entry.
        Value::Object(o) => o
            .iter()
            .map(|(k, v)| 80 + heap_block(k.capacity()) + value_bytes(v))
            .sum::<usize>(),
    }
}

/// The size of the allocator's block for `len` bytes (glibc malloc: 8
/// bytes of header, 16-byte alignment, 32 bytes at least).
fn heap_block(len: usize) -> usize {
    if len == 0 {
        0
    } else {
        ((len + 8 + 15) & !15).max(32)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::Level;

    #[test]
    fn a_queued_record_is_estimated_at_what_it_costs() {
        assert_eq!(
            (heap_block(0), heap_block(1), heap_block(24), heap_block(25)),
            (0, 32, 32, 48)
        );
        let static_only = Record::new(Level::Info, "started").target("app");
        assert_eq!(
            queued_bytes(&static_only),
            2 * std::mem::size_of::<Record>()
        );
        // What `serve` queues per request; 488 bytes each by RSS.
        let request = Record::new(Level::Debug, format!("GET /recipes/{}", 123_456))
            .target("recipes")
            .field("request_id", format!("0193a1b2-7c3d-7e4f-8a5b-{:012}", 7))
            .field("run_id", "load-1796293535995-25020");
        let estimate = queued_bytes(&request);
        assert!((488..=600).contains(&estimate), "{estimate}");
    }
}
