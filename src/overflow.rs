//! The queue's overflow to the on-disk spool, and so the queue kept
//! within its memory budget. While the database keeps
//! up, the budget is the queue's ceiling: past it `send()` hands records
//! back (backpressure), and the spool stays out of the way. While it does
//! not (a write stalled on a lock or a dead network path, an error being
//! retried), the queue moves to the on-disk spool as soon as it passes the
//! budget, with the budget and a margin as its ceiling for the time that
//! takes; when the spool can take no more, the sink is full. Also where
//! batches that could not be written go when delivery stops, and where
//! spooled batches come back from for replay.

use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use crate::batch::{BatchEncoder, EncodedBatch};
use crate::delivery::{Source, Stopped};
use crate::queue_budget::QueueReader;
use crate::record::Record;
use crate::report::human_bytes;
use crate::sink_state::SinkState;
use crate::spool::{Segment, Spool};

/// The consumer's way to the spool and back: what the queue cannot hold,
/// what delivery could not write, and the spooled batches to replay.
pub(crate) struct Overflow {
    spool: Option<Spool>,
    state: Arc<SinkState>,
}

impl Overflow {
    pub(crate) fn new(spool: Option<Spool>, state: Arc<SinkState>) -> Overflow {
        if let Some(spool) = &spool {
            SinkState::add(&state.spool_bytes, spool.bytes());
        }
        Overflow { spool, state }
    }

    /// True when the spool holds batches waiting for replay.
    pub(crate) fn has_spooled(&self) -> bool {
        self.spool.as_ref().is_some_and(|s| !s.is_empty())
    }

    pub(crate) fn spool_dir(&self) -> Option<&Path> {
        self.spool.as_ref().map(Spool::dir)
    }

    /// Called when the queue passes its budget and every few milliseconds,
    /// also while a write is in flight. `stalled`: the database is not
    /// keeping up (no batch has ended for a while, or an error is being
    /// retried). True when it moved records to the spool.
    pub(crate) fn keep_budget(
        &mut self,
        reader: &QueueReader,
        encoder: &mut BatchEncoder,
        stalled: bool,
    ) -> bool {
        let queue = self.state.queue.clone();
        if !stalled {
            queue.set_ceiling(queue.budget());
            queue.refused_since_last_look();
            self.take_records_again();
            return false;
        }
        if let Err(why) = self.spool_room() {
            // Within a margin of the budget, with nowhere to go: full.
            queue.set_ceiling(queue.budget());
            if queue.bytes() + queue.margin() >= queue.budget() {
                self.refuse_records(&why);
            } else {
                self.take_records_again();
            }
            return false;
        }
        queue.set_ceiling(queue.budget() + queue.margin());
        self.take_records_again();
        let queued = queue.bytes();
        // Past the budget, or refusing a record that does not fit under the
        // ceiling (larger than the margin): make room on disk.
        if queued <= queue.budget() && !queue.refused_since_last_look() {
            return false;
        }
        let (spilled, room) = self.spill_queue(reader, encoder);
        self.flush();
        tracing::warn!(
            target: "pglogsink",
            records = spilled,
            queued_bytes = queued,
            budget = queue.budget(),
            "the database is not keeping up and the queue passed its memory budget; moved it to the spool"
        );
        if let Err(why) = room {
            queue.set_ceiling(queue.budget());
            self.refuse_records(&why);
        }
        true
    }

    /// Whether the spool can take more, or why not.
    fn spool_room(&self) -> Result<(), String> {
        match &self.spool {
            None => Err("there is no spool to move it to".to_owned()),
            Some(spool) => spool.room(),
        }
    }

    fn refuse_records(&self, why: &str) {
        let queue = &self.state.queue;
        let reason = format!(
            "the queue holds {} (budget {}) and {why}; records are handed back until the database catches up",
            human_bytes(queue.bytes()),
            human_bytes(queue.budget())
        );
        if !self.state.full.load(Ordering::Relaxed) {
            tracing::error!(target: "pglogsink", reason = %reason, "the sink is full: log() and send() now hand records back");
        }
        self.state.set_full(Some(reason));
    }

    fn take_records_again(&self) {
        if self.state.full.load(Ordering::Relaxed) {
            tracing::warn!(target: "pglogsink", "the sink takes records again");
            self.state.set_full(None);
        }
    }

    /// Move queued records to the spool, batch by batch, while it has room.
    /// Returns how many were taken, and `Err` with the reason if the spool
    /// ran out of room first.
    fn spill_queue(
        &mut self,
        reader: &QueueReader,
        encoder: &mut BatchEncoder,
    ) -> (u64, Result<(), String>) {
        let mut taken = 0;
        loop {
            if let Some(Err(why)) = self.spool.as_ref().map(Spool::room) {
                return (taken, Err(why));
            }
            let mut records = Vec::new();
            reader.take_batch(&mut records);
            if records.is_empty() {
                return (taken, Ok(()));
            }
            taken += records.len() as u64;
            self.spill_batch(&records, encoder);
        }
    }

    /// Records taken off the queue that go to the spool (or, without one,
    /// are counted lost) rather than to the database.
    pub(crate) fn spill_batch(&mut self, records: &[Record], encoder: &mut BatchEncoder) {
        SinkState::add(&self.state.received, records.len() as u64);
        if self.spool.is_none() {
            // Nowhere to keep them: count, without encoding.
            return SinkState::add(&self.state.lost.no_spool, records.len() as u64);
        }
        let batch = encoder.encode(records);
        self.park(batch, false);
    }

    /// A batch that will not be written now: to the spool, or counted lost
    /// (or in doubt, when its write was cut off and may have committed).
    fn park(&mut self, batch: EncodedBatch, in_flight: bool) {
        let rows = batch.rows() as u64;
        let lost = &self.state.lost;
        let Some(spool) = self.spool.as_mut() else {
            let counter = if in_flight {
                &self.state.in_doubt
            } else {
                &lost.no_spool
            };
            return SinkState::add(counter, rows);
        };
        if let Err(why) = spool.room() {
            tracing::error!(target: "pglogsink", rows, reason = %why, "the spool is full; records lost");
            let counter = if in_flight {
                &self.state.in_doubt
            } else {
                &lost.spool_full
            };
            return SinkState::add(counter, rows);
        }
        match spool.append(&batch) {
            Ok(()) => SinkState::add(&self.state.spooled, rows),
            Err(e) => {
                tracing::error!(target: "pglogsink", error = %e, rows, "could not write to the spool; records lost");
                SinkState::add(&lost.spool_error, rows);
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

    /// At the end, after the last batch went to the spool: flush it, and
    /// say how much is there for the next start.
    pub(crate) fn spilled_at_the_end(&mut self, records: u64) {
        self.flush();
        if let (Some(spool), 1..) = (&self.spool, records) {
            tracing::warn!(target: "pglogsink", records, dir = %spool.dir().display(),
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
            self.state
                .spool_bytes
                .store(spool.bytes(), Ordering::Relaxed);
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
            SinkState::add(&self.state.spool_corrupt_bytes, corrupt.skipped_bytes);
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
