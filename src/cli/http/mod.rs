//! What every route of `serve` shares: the HTTP server that accepts
//! connections within limits (how many at once, TLS handshakes in flight,
//! header and body read timeouts) and shuts down within a deadline, its TLS
//! settings, the API keys and the guard that asks for them, and the answer
//! to a refused request (among them "the sink took nothing": 503 with
//! `Retry-After`, or 413). The endpoint families (ingest, the viewer, the
//! demo route) bring their routes and use these; `serve` composes them.

mod api_keys;
mod args;
mod auth;
mod rejection;
mod server;
mod tls;

pub(crate) use api_keys::ApiKeys;
pub(crate) use args::{Access, HttpArgs};
pub(crate) use auth::{as_json, KeyGuard};
pub(crate) use rejection::Rejection;
pub(crate) use server::{bind, serve};
