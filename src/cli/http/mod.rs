//! What every route of `serve` shares: the HTTP server that accepts
//! connections within limits (how many at once, TLS handshakes in flight,
//! header and body read timeouts) and shuts down within a deadline, and its
//! TLS settings. The endpoint families (ingest, viewer, the demo route)
//! only bring their routes.

mod server;
pub(crate) mod tls;

pub(crate) use server::{bind, serve, HttpArgs};
