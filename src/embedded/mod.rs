//! A private PostgreSQL cluster, started on demand.
//!
//! [`EmbeddedPostgres`] runs the PostgreSQL server binaries installed on the
//! machine (`initdb`, `pg_ctl`) against a data directory of its own. It is used
//!
//! * by the `pglogsink` binary when no `DATABASE_URL` is given, with a
//!   persistent `--data-dir` ([`EmbeddedPostgres::start`]); several pglogsink
//!   processes pointed at the same data directory share one server: the first
//!   one starts it (and stops it when it exits), the others attach to it;
//! * by integration tests and benchmarks, as a throw-away cluster under the
//!   system temporary directory ([`EmbeddedPostgres::temporary`]).
//!
//! Everything here is blocking (`std::process::Command`); call it before, or
//! outside of, the async runtime's hot paths. The exception is
//! [`Supervisor::run`], a future that watches the server and starts it again
//! when it dies (see [`Supervisor`]); `pglogsink serve` runs one for the
//! cluster it started.
//!
//! # What is public
//!
//! Behind the `embedded` feature (on with `cli`): [`EmbeddedPostgres`] (start,
//! attach, a temporary cluster, how to connect, stop, a supervisor),
//! [`Supervisor`] and its [`RestartPolicy`], and [`server_user_can_reach`].
//! The module is public because the `pglogsink` binary is a crate of its own;
//! With the `test-hooks` feature (the integration tests and benchmarks turn
//! it on; users have no need of it), `EmbeddedPostgres::stop_server` and
//! `start_server` stop and start a server by hand, and `CitusCluster` runs a
//! coordinator and workers as private clusters.
//! Everything else (running `pg_ctl`, the pid and connection files, the start
//! lock) is private to this module.
//!
//! # Layout of a data directory
//!
//! ```text
//! <data_dir>/                  created by pglogsink, mode 0755 (the server's
//!                              OS user must be able to traverse it)
//! <data_dir>/pgdata/           the cluster (PGDATA), mode 0700; owned by the
//!                              `postgres` OS user when pglogsink runs as root
//! <data_dir>/pgdata/server.log the server's log (`pg_ctl -l`)
//! <data_dir>/connection.conf   mode 0600, `key=value` lines: port, user,
//!                              password, dbname, database_created; lets another
//!                              process attach to the running server
//! <data_dir>/start.lock        held (flock) while a process initialises or
//!                              starts the cluster, so concurrent starts do not
//!                              race
//! ```
//!
//! # The cluster
//!
//! `initdb` runs once, when `pgdata/PG_VERSION` is absent, with superuser
//! `pglogsink`, a random 24-hex-digit password, `scram-sha-256` authentication
//! for TCP, `peer` for local sockets (none are created), `UTF8` and locale `C`.
//! The server listens on `127.0.0.1` only, on a free port picked at each start,
//! and creates no Unix socket.
//!
//! After the first start, a database named `pglogsink` is created (over a
//! short-lived `tokio_postgres` connection to the `postgres` database, on a
//! private thread with its own current-thread runtime, so this works from
//! inside an async context too). [`EmbeddedPostgres::config`] and
//! [`EmbeddedPostgres::url`] point at that database.
//!
//! # Running as root
//!
//! PostgreSQL refuses to run as root. When the effective uid is 0, `initdb`
//! and `pg_ctl` run as the `postgres` OS user (which must exist), so the data
//! directory must be reachable by that user: see [`server_user_can_reach`].
//!
//! # Finding the server binaries
//!
//! In order: the directory named by `PGLOGSINK_PG_BIN` (an error if it is set
//! but does not hold both binaries), the first `PATH` directory holding both
//! `initdb` and `pg_ctl`, `/usr/lib/postgresql/<version>/bin` (highest version
//! first), `/usr/local/pgsql/bin`.

mod binaries;
#[cfg(feature = "test-hooks")]
mod citus;
mod cluster;
mod connection_file;
mod files;
mod handle;
mod os_user;
mod pid_file;
mod process;
mod runner;
mod start_lock;
mod supervise;

#[cfg(feature = "test-hooks")]
pub use citus::CitusCluster;
pub use handle::EmbeddedPostgres;
pub use os_user::server_user_can_reach;
pub use supervise::{RestartPolicy, Supervisor};
