//! What the `pglogsink` binary needs from the library beyond the sink:
//! helpers it shares with the library so that both read and write things
//! one way. Public because the binary is a crate of its own; not part of
//! the stable surface at the crate root, and may change in any release.

pub use crate::duration::parse_duration;
pub use crate::micros::{from_unix_micros, unix_micros};
