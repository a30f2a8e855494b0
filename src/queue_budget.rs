//! The queue's memory, counted exactly where records enter and leave: a
//! producer adds each record's bytes before it enqueues it (and is refused
//! when they would pass the ceiling), the consumer subtracts them when it
//! takes the record. No estimate, no average: the count is what the queued
//! records hold, so the budget holds however their sizes change.
//!
//! The same counter closes the queue: a producer that added its bytes
//! before the close will enqueue its record, so the consumer's last drain
//! waits until the count is back to zero, and no record that a producer
//! was told is taken can be left behind.

use std::borrow::Cow;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::record::Record;

/// The least margin past the budget while the queue moves to the spool.
const MIN_MARGIN: u64 = 4 << 20;

/// The bit of the counter that says the queue takes no more records.
const CLOSED: u64 = 1 << 63;

/// Why records were not let in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// The queue is closed (shutdown, or a fatal stop).
    Closed,
    /// They would take the queue past its ceiling now.
    Full,
    /// They need more than the whole budget: never.
    TooLarge,
}

/// The queue's byte count, its budget and the ceiling producers meet.
pub(crate) struct QueueBudget {
    /// Bytes of the records in the queue (and of those being added or
    /// refused right now), and the `CLOSED` bit.
    state: AtomicU64,
    budget: u64,
    /// What the queue may hold now: the budget, or the budget and a margin
    /// while the consumer moves the queue to the spool (set by the
    /// consumer, read by producers).
    ceiling: AtomicU64,
    /// Wakes the consumer when the queue passes its budget, or refuses
    /// records.
    passed: Notify,
    /// Set when records were refused for want of room; taken by the
    /// consumer, which may then move the queue to the spool.
    refused: AtomicBool,
}

impl QueueBudget {
    pub(crate) fn new(budget: usize) -> QueueBudget {
        let budget = budget as u64;
        QueueBudget {
            state: AtomicU64::new(0),
            budget,
            ceiling: AtomicU64::new(budget),
            passed: Notify::new(),
            refused: AtomicBool::new(false),
        }
    }

    /// The budget, in bytes.
    pub(crate) fn budget(&self) -> u64 {
        self.budget
    }

    /// How far past the budget the queue may go while it moves to the
    /// spool: an eighth of the budget, and at least 4 MiB, room for a burst
    /// of records while the consumer writes the queue to disk.
    pub(crate) fn margin(&self) -> u64 {
        (self.budget / 8).max(MIN_MARGIN)
    }

    /// Bytes queued now.
    pub(crate) fn bytes(&self) -> u64 {
        self.state.load(Ordering::Acquire) & !CLOSED
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.state.load(Ordering::Acquire) & CLOSED != 0
    }

    /// Take no more records; those already admitted still arrive.
    pub(crate) fn close(&self) {
        self.state.fetch_or(CLOSED, Ordering::AcqRel);
    }

    /// Let producers fill the queue up to `bytes`.
    pub(crate) fn set_ceiling(&self, bytes: u64) {
        self.ceiling.store(bytes, Ordering::Relaxed);
    }

    /// Admit records whose entry cost ([`bytes_in`]) is `bytes`, for a
    /// caller that already holds `held` bytes of the budget for records it
    /// will queue with them, or refuse them. A refused caller must hand
    /// their exit cost ([`bytes_out`]) to [`QueueBudget::release`], as if
    /// they had been queued and taken.
    #[inline]
    pub(crate) fn admit(&self, bytes: u64, held: u64) -> Result<(), Refusal> {
        let before = self.state.fetch_add(bytes, Ordering::AcqRel);
        if before & CLOSED != 0 {
            return Err(Refusal::Closed);
        }
        if held + bytes > self.budget {
            return Err(Refusal::TooLarge);
        }
        let after = before + bytes;
        if after > self.ceiling.load(Ordering::Relaxed) {
            self.refused.store(true, Ordering::Relaxed);
            self.passed.notify_one();
            return Err(Refusal::Full);
        }
        if before <= self.budget && after > self.budget {
            self.passed.notify_one();
        }
        Ok(())
    }

    /// Records whose exit cost is `bytes` left the queue (or were refused).
    #[inline]
    pub(crate) fn release(&self, bytes: u64) {
        self.state.fetch_sub(bytes, Ordering::AcqRel);
    }

    /// True if records were refused for want of room since the last call.
    pub(crate) fn refused_since_last_look(&self) -> bool {
        self.refused.swap(false, Ordering::Relaxed)
    }

    /// Resolves when the queue has passed its budget, or refused records,
    /// since the last call.
    pub(crate) async fn passed_budget(&self) {
        self.passed.notified().await;
    }
}

/// The consumer's end of the queue: takes records off it in batches
/// bounded by count and by bytes, and stops counting them against the
/// budget as it takes them.
pub(crate) struct QueueReader {
    rx: flume::Receiver<Record>,
    budget: Arc<QueueBudget>,
    batch_size: usize,
    /// Most bytes of records in one batch: their memory, and the shared
    /// text each row is written with, so that a batch's COPY data stays
    /// bounded however many records share large fields.
    batch_bytes: u64,
    /// Shared text longer than this is not written into rows (a note of
    /// its size is), so it does not count towards a batch's bytes.
    max_record_bytes: usize,
}

impl QueueReader {
    pub(crate) fn new(
        rx: flume::Receiver<Record>,
        budget: Arc<QueueBudget>,
        batch_size: usize,
        max_record_bytes: usize,
    ) -> QueueReader {
        let batch_bytes = (budget.budget() / 8).max(1 << 20);
        QueueReader {
            rx,
            budget,
            batch_size,
            batch_bytes,
            max_record_bytes,
        }
    }

    /// Wait for the next record; after `stop`, only take one already
    /// queued. `None` when there is none (or every sender is gone). Its
    /// bytes are still counted: pass it to [`QueueReader::take_batch`].
    pub(crate) async fn first(&self, stop: &CancellationToken) -> Option<Record> {
        if stop.is_cancelled() {
            return self.rx.try_recv().ok();
        }
        tokio::select! {
            biased;
            received = self.rx.recv_async() => received.ok(),
            _ = stop.cancelled() => self.rx.try_recv().ok(),
        }
    }

    /// Move records already queued into `records` (which holds only
    /// records from [`QueueReader::first`], if any), up to a batch, and
    /// stop counting all of them against the budget.
    pub(crate) fn take_batch(&self, records: &mut Vec<Record>) {
        let mut bytes: u64 = records.iter().map(bytes_out).sum();
        let mut size = bytes + records.iter().map(|r| self.shared_text(r)).sum::<u64>();
        while records.len() < self.batch_size && size < self.batch_bytes {
            let Ok(record) = self.rx.try_recv() else {
                break;
            };
            let out = bytes_out(&record);
            bytes += out;
            size += out + self.shared_text(&record);
            records.push(record);
        }
        self.budget.release(bytes);
    }

    /// The shared text a record's row will be written with (none past the
    /// record size limit: the row gets a note of its size instead).
    fn shared_text(&self, record: &Record) -> u64 {
        match record.shared.as_ref().map(|s| s.members().len()) {
            Some(len) if len <= self.max_record_bytes => len as u64,
            _ => 0,
        }
    }

    /// Close the queue, then hand every record still in it or on its way
    /// in (admitted before the close) to `each`, a batch at a time, until
    /// the count is back to zero. Gives up after `patience`, saying so, if
    /// producers still hold room (a [`Batch`](crate::Batch) being built
    /// from a request that is slow to arrive): what they queue after the
    /// consumer has ended is handed back to them, not lost.
    pub(crate) async fn drain_closed(&self, patience: Duration, mut each: impl FnMut(Vec<Record>)) {
        self.budget.close();
        let deadline = tokio::time::Instant::now() + patience;
        loop {
            let mut records = Vec::new();
            self.take_batch(&mut records);
            if !records.is_empty() {
                each(records);
                continue;
            }
            let left = self.budget.bytes();
            if left == 0 {
                return;
            }
            if tokio::time::Instant::now() >= deadline {
                tracing::warn!(target: "pglogsink", bytes = left,
                    "the sink ended while producers still held room in its queue (records being \
                     queued, or requests being read); what they queue now is handed back to them");
                return;
            }
            tokio::task::yield_now().await;
        }
    }
}

/// What a record adds to the queue's count as it enters: the memory it
/// holds (kept in the record, so that leaving costs no second look at its
/// fields), and the bytes of its shared fields when no other queued record
/// carries them.
#[inline]
pub(crate) fn bytes_in(record: &mut Record) -> u64 {
    let own = u32::try_from(own_bytes(record)).unwrap_or(u32::MAX);
    record.queued_bytes = own;
    let shared = record
        .shared
        .as_ref()
        .filter(|s| s.enter_queue())
        .map_or(0, |s| s.heap_bytes());
    u64::from(own) + shared as u64
}

/// What a record subtracts as it leaves: the same, its shared fields'
/// bytes when it was the last queued record carrying them.
#[inline]
pub(crate) fn bytes_out(record: &Record) -> u64 {
    let shared = record
        .shared
        .as_ref()
        .filter(|s| s.leave_queue())
        .map_or(0, |s| s.heap_bytes());
    u64::from(record.queued_bytes) + shared as u64
}

/// What a record costs in memory while it waits in the queue: its slot in
/// the channel's ring buffer (which grows by doubling and does not shrink,
/// so counted twice) and each heap block it owns, as the allocator hands
/// them out (the size plus 8 bytes of header, rounded up to 16, at least
/// 32). Measured against RSS for the records `serve` queues (1,000,000 in
/// `flume`'s queue): 488 bytes each; this says 576.
pub(crate) fn own_bytes(record: &Record) -> usize {
    let owned = |s: &Cow<'static, str>| match s {
        Cow::Owned(s) => heap_block(s.capacity()),
        Cow::Borrowed(_) => 0,
    };
    let fields = if record.fields.is_empty() {
        0
    } else {
        let slots = record.fields.0.capacity().max(4);
        heap_block(slots * std::mem::size_of::<(Cow<'static, str>, Value)>())
            + record
                .fields
                .iter()
                .map(|(k, v)| owned(k) + value_bytes(v))
                .sum::<usize>()
    };
    2 * std::mem::size_of::<Record>()
        + owned(&record.message)
        + record.target.as_ref().map_or(0, owned)
        + fields
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
    use crate::fields::SharedFields;
    use crate::level::Level;

    #[test]
    fn a_queued_record_is_counted_at_what_it_costs() {
        assert_eq!(
            (heap_block(0), heap_block(1), heap_block(24), heap_block(25)),
            (0, 32, 32, 48)
        );
        let static_only = Record::new(Level::Info, "started").target("app");
        assert_eq!(own_bytes(&static_only), 2 * std::mem::size_of::<Record>());
        // What `serve` queues per request; 488 bytes each by RSS.
        let request = Record::new(Level::Debug, format!("GET /recipes/{}", 123_456))
            .target("recipes")
            .field("request_id", format!("0193a1b2-7c3d-7e4f-8a5b-{:012}", 7))
            .field("run_id", "load-1796293535995-25020");
        let cost = own_bytes(&request);
        assert!((488..=600).contains(&cost), "{cost}");
    }

    #[test]
    fn shared_fields_count_once_while_any_record_carrying_them_is_queued() {
        let shared = SharedFields::new(vec![("service.name".into(), "x".repeat(1000).into())]);
        let mut records: Vec<Record> = (0..3)
            .map(|_| Record::new(Level::Info, "m").shared_fields(shared.clone()))
            .collect();
        let own = own_bytes(&records[0]) as u64;
        let heap = shared.heap_bytes() as u64;
        let ins: Vec<u64> = records.iter_mut().map(bytes_in).collect();
        assert_eq!(ins, [own + heap, own, own]);
        let outs: Vec<u64> = records.iter().map(bytes_out).collect();
        assert_eq!(outs, [own, own, own + heap]);
    }

    /// Queue `n` records sharing `shared`, as a producer would.
    fn queued(n: usize, shared: &SharedFields) -> QueueReader {
        let budget = Arc::new(QueueBudget::new(64 << 20));
        let (tx, rx) = flume::unbounded();
        for _ in 0..n {
            let mut record = Record::new(Level::Info, "m").shared_fields(shared.clone());
            budget.admit(bytes_in(&mut record), 0).unwrap();
            tx.send(record).unwrap();
        }
        QueueReader::new(rx, budget, 16_384, 1 << 20)
    }

    #[test]
    fn a_batch_is_bounded_by_the_shared_text_its_rows_will_carry() {
        // 300 KB of shared text each: a batch stops at 8 MiB of rows.
        let shared = SharedFields::new(vec![("k".into(), "x".repeat(300_000).into())]);
        let reader = queued(100, &shared);
        let mut batch = Vec::new();
        reader.take_batch(&mut batch);
        assert_eq!(batch.len(), 28, "{} rows", batch.len());
        // Over the record limit the text is not written into rows (a note
        // of its size is): it does not count.
        let huge = SharedFields::new(vec![("k".into(), "x".repeat(2 << 20).into())]);
        let reader = queued(100, &huge);
        let mut batch = Vec::new();
        reader.take_batch(&mut batch);
        assert_eq!(batch.len(), 100);
        assert_eq!(reader.budget.bytes(), 0, "every record taken is uncounted");
    }

    #[test]
    fn admission_holds_the_ceiling_and_closing_refuses() {
        let queue = QueueBudget::new(1000);
        assert_eq!(queue.admit(600, 0), Ok(()));
        assert_eq!(queue.admit(600, 0), Err(Refusal::Full));
        queue.release(600);
        assert_eq!(queue.bytes(), 600, "a refusal is undone by its caller");
        queue.set_ceiling(1100);
        assert_eq!(queue.admit(500, 0), Ok(()));
        assert_eq!(queue.admit(1001, 0), Err(Refusal::TooLarge));
        queue.release(1001);
        assert_eq!(
            queue.admit(10, 995),
            Err(Refusal::TooLarge),
            "with what the caller holds"
        );
        queue.release(10);
        queue.close();
        assert_eq!(queue.admit(1, 0), Err(Refusal::Closed));
        queue.release(1);
        assert!(queue.is_closed());
        assert_eq!(queue.bytes(), 1100);
        queue.release(1100);
        assert_eq!(queue.bytes(), 0);
    }
}
