//! What the `pglogsink` binary needs from the library beyond the sink:
//! helpers it shares with the library so that both read and write things
//! one way. Public because the binary is a crate of its own; not part of
//! the stable surface at the crate root, and may change in any release.

pub use crate::duration::{format_duration, parse_duration};
pub use crate::micros::{from_unix_micros, unix_micros};

/// The rules of the settings the binary also takes as flags: the same
/// functions [`SinkConfig::validate`](crate::SinkConfig::validate) and
/// [`Maintenance::validate`](crate::Maintenance::validate) apply, so that a
/// flag and a field accept the same values and say so the same way. Each
/// `Err` says what the setting accepts.
pub mod settings {
    pub use crate::config::{
        check_batch_size, check_copies_in_flight, check_lock_timeout, check_max_queue_bytes,
        check_max_record_bytes, check_max_spool_bytes, check_write_timeout,
    };
    pub use crate::maintain::{check_age, check_premake};
}
