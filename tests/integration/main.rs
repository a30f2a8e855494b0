//! Integration tests against a real PostgreSQL.
//!
//! One private cluster is started for the whole binary (or `DATABASE_URL` is
//! used when set) and stopped at the end; every test writes to a table of its
//! own. Tests that stop the server start a throw-away cluster of their own.
//! `libtest-mimic` gives us a `main` around the tests, which is what makes
//! stopping the shared cluster at the end possible.

mod citus;
mod columnar;
mod common;
mod embedded;
mod embedded_supervise;
mod faults;
mod follow;
mod ingest;
mod ingest_otel;
mod ingest_otlp_json;
mod layer;
mod lifecycle;
mod limits;
mod logs;
mod pooler;
mod pressure;
mod readme;
mod service;
mod sink;
mod tls;
mod viewer;

fn main() {
    let args = libtest_mimic::Arguments::from_args();
    let mut trials = Vec::new();
    trials.extend(sink::trials());
    trials.extend(faults::trials());
    trials.extend(service::trials());
    trials.extend(embedded::trials());
    trials.extend(embedded_supervise::trials());
    trials.extend(layer::trials());
    trials.extend(logs::trials());
    trials.extend(follow::trials());
    trials.extend(lifecycle::trials());
    trials.extend(limits::trials());
    trials.extend(pressure::trials());
    trials.extend(pooler::trials());
    trials.extend(tls::trials());
    trials.extend(ingest::trials());
    trials.extend(ingest_otel::trials());
    trials.extend(ingest_otlp_json::trials());
    trials.extend(viewer::trials());
    trials.extend(columnar::trials());
    trials.extend(readme::trials());
    trials.extend(citus::trials());
    let conclusion = libtest_mimic::run(&args, trials);
    citus::shutdown();
    common::shutdown();
    columnar::shutdown();
    conclusion.exit();
}
