//! What the `pglogsink` binary shares with the library beyond the sink and
//! its table: the query layer behind `pglogsink logs` and the web viewer
//! ([`query`]), the rules of the settings the binary takes as flags
//! ([`settings`]), and the small helpers both sides read and write things
//! with (durations as written on a command line, microseconds since the
//! epoch, an error chain on one line).
//!
//! Public because the binary is a crate of its own, and usable by tools of
//! your own (a log reader, say); but unlike the crate root (the sink:
//! [`spawn`](crate::spawn), [`Logger`](crate::Logger),
//! [`Record`](crate::Record), [`SinkConfig`](crate::SinkConfig); its table:
//! [`migrate`](crate::migrate), [`Maintenance`](crate::Maintenance)...),
//! what is here may change in any release.

pub use crate::duration::{format_duration, parse_duration};

/// Bytes as lowercase hexadecimal text, and hexadecimal text (either case)
/// back to bytes.
pub mod hex {
    pub use crate::hex::{decode, encode};
}

/// Random numbers from the operating system.
pub mod random {
    pub use crate::random::{fill, id};
}
pub use crate::error::describe;
pub use crate::micros::{from_unix_micros, unix_micros};

#[path = "query/mod.rs"]
pub mod query;

/// The rules of the settings the binary also takes as flags: the same
/// functions [`SinkConfig::validate`](crate::SinkConfig::validate) and
/// [`Maintenance::validate`](crate::Maintenance::validate) apply, so that a flag and a field accept the
/// same values and say so the same way. Each `Err` says what the setting
/// accepts.
pub mod settings {
    pub use crate::config::{
        check_batch_size, check_copies_in_flight, check_lock_timeout, check_max_queue_bytes,
        check_max_record_bytes, check_max_spool_bytes, check_write_timeout,
    };
    pub use crate::maintain::{check_age, check_premake};
}
