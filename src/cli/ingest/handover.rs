//! One request's records on their way to the sink, all or none: the
//! request's memory and then each record take their room in the sink's
//! queue budget as they come, and the records are queued together at the
//! end, so that a refused request took nothing.

use axum::http::StatusCode;
use pglogsink::{Batch, Record, SendError};

use super::settings::IngestState;
use crate::cli::http::Rejection;

/// 413 unless a request's `records` are within the per-request cap, `max`.
pub(crate) fn check_records(records: usize, max: usize) -> Result<(), Rejection> {
    if records <= max {
        return Ok(());
    }
    Err(Rejection::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        format!(
            "the request holds {records} log records, more than {max} \
             (--max-records-per-request): send smaller batches"
        ),
    ))
}

/// One request's records on their way to the sink, all or none: the
/// request's memory (body, decoding) and then each record take their room
/// in the sink's queue budget as they come, and the records are queued
/// together at the end ([`Handover::send`]). Dropped before that, it
/// queues nothing and gives the room back.
pub(crate) struct Handover<'a> {
    batch: Batch<'a>,
    /// Records the request holds, once known.
    expected: Option<usize>,
    queue_budget: u64,
}

/// Where a request's decoded records go: its [`Handover`] to the sink (a
/// `Vec`, in unit tests of the decoding).
pub(crate) trait Destination {
    /// Take a record.
    fn push(&mut self, record: Record) -> Result<(), Rejection>;
    /// Count `bytes` of memory the decoding holds.
    fn hold(&mut self, bytes: usize) -> Result<(), Rejection>;
}

impl Destination for Handover<'_> {
    fn push(&mut self, record: Record) -> Result<(), Rejection> {
        Handover::push(self, record)
    }

    fn hold(&mut self, bytes: usize) -> Result<(), Rejection> {
        Handover::hold(self, bytes)
    }
}

#[cfg(test)]
impl Destination for Vec<Record> {
    fn push(&mut self, record: Record) -> Result<(), Rejection> {
        Vec::push(self, record);
        Ok(())
    }

    fn hold(&mut self, _bytes: usize) -> Result<(), Rejection> {
        Ok(())
    }
}

/// What became of a request's records once queued.
#[derive(Debug)]
pub(crate) struct Queued {
    /// Handed to the sink.
    pub(crate) accepted: usize,
    /// Not handed over (the sink stopped while they were being queued),
    /// and why.
    pub(crate) refused: Option<(usize, Rejection)>,
}

impl<'a> Handover<'a> {
    pub(crate) fn new(state: &'a IngestState) -> Handover<'a> {
        Handover {
            batch: state.logger.batch(),
            expected: None,
            queue_budget: state.queue_budget,
        }
    }

    /// Hold `bytes` of the budget for the request's own memory. A stopped
    /// sink holds nothing and refuses nothing here: the first record is
    /// refused (a request with none is a success, as OTLP asks).
    pub(crate) fn hold(&mut self, bytes: usize) -> Result<(), Rejection> {
        let before = self.batch.bytes();
        match self.batch.hold(bytes) {
            Ok(()) => Ok(()),
            Err(e) if e.is_closed() => Ok(()),
            Err(e) => Err(self.refused(&e, before + bytes as u64)),
        }
    }

    /// How many records the request holds, once known (to tell a request
    /// the sink can never take from one it cannot take now).
    pub(crate) fn expect(&mut self, records: usize) {
        self.expected = Some(records);
    }

    /// Add a record; refused (and the request with it) when the sink has
    /// no room for it.
    pub(crate) fn push(&mut self, record: Record) -> Result<(), Rejection> {
        let (before, held, pushed) = (self.batch.bytes(), self.batch.held(), self.batch.len());
        self.batch.push(record).map_err(|e| {
            // What the whole request would hold, at the same cost per
            // record as the records so far.
            let per_record = (before - held) / (pushed as u64).max(1);
            let left = self.expected.unwrap_or(0).saturating_sub(pushed) as u64;
            self.refused(&e, before + per_record * left)
        })
    }

    /// Queue the records pushed.
    pub(crate) fn send(self) -> Queued {
        let total = self.batch.len();
        match self.batch.send() {
            Ok(()) => Queued {
                accepted: total,
                refused: None,
            },
            // The sink ended while the records were being queued (it never
            // does once they have their room, unless its task failed).
            Err(e) => {
                let refused = e.into_inner().len();
                Queued {
                    accepted: total - refused,
                    refused: Some((refused, Rejection::unavailable("the log sink has stopped"))),
                }
            }
        }
    }

    /// The answer to a refusal; `need`: about what the request needs of
    /// the budget in all.
    fn refused(&self, error: &SendError<Vec<Record>>, need: u64) -> Rejection {
        let mut rejection = if error.is_full() && need > self.queue_budget {
            too_large_for_the_budget(self.queue_budget)
        } else {
            Rejection::sink_refused(error)
        };
        // Nothing was taken; how much was refused, once counted.
        rejection.details.insert("accepted".to_owned(), 0.into());
        if let Some(records) = self.expected {
            rejection
                .details
                .insert("refused".to_owned(), records.into());
        }
        rejection
    }
}

fn too_large_for_the_budget(budget: u64) -> Rejection {
    Rejection::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        format!(
            "the request needs more memory than the log sink's whole queue budget of {budget} \
             bytes (--max-queue-bytes); nothing was queued: send smaller requests"
        ),
    )
}
