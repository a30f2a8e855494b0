//! How a subcommand fails.

/// The error of a subcommand: printed as one line by `main`.
pub(crate) type Failure = Box<dyn std::error::Error + Send + Sync>;
