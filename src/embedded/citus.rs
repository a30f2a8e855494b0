//! A Citus cluster on this machine, for tests and benchmarks: a
//! coordinator and workers, each a [temporary](EmbeddedPostgres::temporary)
//! cluster with Citus loaded, set up as the Citus documentation says
//! (`shared_preload_libraries = 'citus'`, `CREATE EXTENSION citus`,
//! `citus_set_coordinator_host`, `citus_add_node`).
//!
//! The nodes reach each other as Citus does everywhere: over TCP on
//! 127.0.0.1, with TLS (`CREATE EXTENSION citus` turns `ssl = on` with a
//! self-signed certificate it makes, and Citus connects with
//! `sslmode=require`), as the `pglogsink` user with a password all nodes
//! share and find in `pg_dist_authinfo`.

use std::path::Path;
use std::time::{Duration, Instant};

use super::binaries::find_binaries;
use super::cluster::on_private_runtime;
use super::connection_file::ConnectionFile;
use super::files::CONNECTION_FILE;
use super::handle::EmbeddedPostgres;
use super::pid_file::running_server;
use super::process::{children, pid_alive};
use crate::Error;

/// How long a killed worker may take to start again (its orphaned backends
/// must leave first).
const RESTART_WITHIN: Duration = Duration::from_secs(60);

/// A coordinator and workers on 127.0.0.1, removed when stopped or dropped.
///
/// For the integration tests and `benches/pipeline.rs` (feature
/// `test-hooks`). Connect through [`url`](Self::url), which leaves
/// `sslmode` at its default, as an operator's URL would.
pub struct CitusCluster {
    coordinator: EmbeddedPostgres,
    workers: Vec<EmbeddedPostgres>,
}

impl CitusCluster {
    /// Why a Citus cluster cannot be started here; `None` when it can
    /// (the server binaries are found and Citus is installed for them).
    pub fn missing() -> Option<String> {
        let bins = match find_binaries() {
            Ok(bins) => bins,
            Err(e) => return Some(e.to_string()),
        };
        // PATH may hold symbolic links (/usr/local/bin/initdb): the
        // server's own directory is where its pg_config is.
        let initdb = std::fs::canonicalize(&bins.initdb).unwrap_or(bins.initdb);
        let bin_dir = initdb.parent().unwrap_or(Path::new("/"));
        let lib_dir = std::process::Command::new(bin_dir.join("pg_config"))
            .arg("--pkglibdir")
            .output()
            .ok()
            .filter(|out| out.status.success())
            .map(|out| String::from_utf8_lossy(&out.stdout).trim().into())
            .unwrap_or_else(|| bin_dir.join("../lib"));
        let library = lib_dir.join("citus.so");
        (!library.is_file()).then(|| {
            format!(
                "Citus is not installed for the PostgreSQL server in {} (no {}); install it \
                 (../shared/tools/install-citus builds Citus 13.2.2 from source)",
                bin_dir.display(),
                library.display()
            )
        })
    }

    /// Start a coordinator and `workers` workers and join them up.
    pub fn start(workers: usize) -> Result<CitusCluster, Error> {
        if let Some(why) = CitusCluster::missing() {
            return Err(Error::embedded(why));
        }
        // initdb and the first start take a while: all nodes at once.
        let mut nodes = std::thread::scope(|scope| {
            let starts: Vec<_> = (0..=workers).map(|_| scope.spawn(start_node)).collect();
            starts
                .into_iter()
                .map(|start| {
                    start.join().unwrap_or_else(|_| {
                        Err(Error::embedded(
                            "starting a Citus node: the thread panicked",
                        ))
                    })
                })
                .collect::<Result<Vec<_>, Error>>()
        })?;
        let coordinator = nodes.remove(0);
        let mut cluster = CitusCluster {
            coordinator,
            workers: nodes,
        };
        cluster.join_up()?;
        Ok(cluster)
    }

    /// One password on every node, known to every node (Citus' nodes log
    /// in to each other), then the nodes registered on the coordinator.
    fn join_up(&mut self) -> Result<(), Error> {
        let password = self.coordinator.password.clone();
        for worker in &mut self.workers {
            set_password(worker, &password)?;
        }
        // Node 0 is every node.
        let authinfo = format!(
            "INSERT INTO pg_dist_authinfo (nodeid, rolename, authinfo) VALUES (0, '{}', \
             'password={password}') ON CONFLICT DO NOTHING",
            self.coordinator.user.replace('\'', "''")
        );
        for node in self.nodes() {
            run_sql(node, "storing the nodes' password", vec![authinfo.clone()])?;
        }
        let mut statements = vec![format!(
            "SELECT citus_set_coordinator_host('127.0.0.1', {})",
            self.coordinator.port
        )];
        statements.extend(
            self.workers
                .iter()
                .map(|worker| format!("SELECT citus_add_node('127.0.0.1', {})", worker.port)),
        );
        run_sql(&self.coordinator, "adding the workers", statements)
    }

    fn nodes(&self) -> impl Iterator<Item = &EmbeddedPostgres> {
        std::iter::once(&self.coordinator).chain(&self.workers)
    }

    /// The coordinator's URL with `sslmode` left to its default (`prefer`):
    /// connections are encrypted with Citus' self-signed certificate. It
    /// holds the password: never print it.
    pub fn url(&self) -> String {
        self.coordinator.url_with_query("")
    }

    /// Worker `index`'s URL, `sslmode` at its default, as [`url`](Self::url).
    pub fn worker_url(&self, index: usize) -> Result<String, Error> {
        Ok(self.worker(index)?.url_with_query(""))
    }

    /// The coordinator.
    pub fn coordinator(&self) -> &EmbeddedPostgres {
        &self.coordinator
    }

    /// The workers, in the order they were added.
    pub fn workers(&self) -> &[EmbeddedPostgres] {
        &self.workers
    }

    /// Kill worker `index` as a crash of its machine would: SIGKILL to its
    /// postmaster and to every process it started, no shutdown.
    pub fn kill_worker(&self, index: usize) -> Result<(), Error> {
        let worker = self.worker(index)?;
        let Some(server) = running_server(&worker.pgdata)? else {
            return Err(Error::embedded(format!(
                "worker {index} ({}) is not running",
                worker.data_dir.display()
            )));
        };
        // Each backend is in a session of its own: the postmaster's
        // process group is the postmaster alone.
        let mut processes = children(server.pid);
        processes.push(server.pid);
        for &pid in &processes {
            // SAFETY: kill(2) with a pid read from the postmaster's family.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while let Some(&pid) = processes.iter().find(|&&pid| pid_alive(pid)) {
            if Instant::now() > deadline {
                return Err(Error::embedded(format!(
                    "worker {index}'s process {pid} outlived SIGKILL for 10 s"
                )));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        Ok(())
    }

    /// Start worker `index` again after [`kill_worker`](Self::kill_worker),
    /// on its port; tried until its orphaned backends have left and it
    /// starts (up to a minute).
    pub fn start_worker(&self, index: usize) -> Result<(), Error> {
        let worker = self.worker(index)?;
        let deadline = Instant::now() + RESTART_WITHIN;
        loop {
            match worker.start_server() {
                Ok(()) => return Ok(()),
                Err(e) if Instant::now() > deadline => return Err(e),
                Err(_) => std::thread::sleep(Duration::from_millis(200)),
            }
        }
    }

    fn worker(&self, index: usize) -> Result<&EmbeddedPostgres, Error> {
        self.workers.get(index).ok_or_else(|| {
            Error::embedded(format!(
                "no worker {index}: the cluster has {}",
                self.workers.len()
            ))
        })
    }

    /// Stop every node and remove their directories.
    pub fn stop(self) -> Result<(), Error> {
        let mut first_error = None;
        for node in std::iter::once(self.coordinator).chain(self.workers) {
            if let Err(e) = node.stop() {
                first_error.get_or_insert(e);
            }
        }
        first_error.map_or(Ok(()), Err)
    }
}

/// A temporary cluster with Citus loaded and its extension created.
fn start_node() -> Result<EmbeddedPostgres, Error> {
    let node = EmbeddedPostgres::temporary()?;
    run_sql(
        &node,
        "loading Citus",
        vec!["ALTER SYSTEM SET shared_preload_libraries = 'citus'".to_owned()],
    )?;
    node.stop_server()?;
    node.start_server()?;
    run_sql(
        &node,
        "creating the citus extension",
        vec!["CREATE EXTENSION IF NOT EXISTS citus".to_owned()],
    )?;
    Ok(node)
}

/// Run `statements` in turn on `node`'s database, over a plain connection.
fn run_sql(node: &EmbeddedPostgres, what: &str, statements: Vec<String>) -> Result<(), Error> {
    let context = format!("{what} ({})", node.data_dir.display());
    on_private_runtime(&context, node.config(), |client, context| async move {
        for statement in statements {
            client
                .batch_execute(&statement)
                .await
                .map_err(|e| Error::database(context.clone(), e))?;
        }
        Ok(())
    })
}

/// Set `node`'s password to `password`, in the server, the handle and the
/// connection file.
fn set_password(node: &mut EmbeddedPostgres, password: &str) -> Result<(), Error> {
    run_sql(
        node,
        "setting the cluster's shared password",
        vec![format!(
            "ALTER ROLE {} PASSWORD '{}'",
            crate::table::quote_identifier(&node.user),
            password.replace('\'', "''")
        )],
    )?;
    node.password = password.to_owned();
    let path = node.data_dir.join(CONNECTION_FILE);
    if let Some(mut file) = ConnectionFile::read(&path)? {
        file.password = password.to_owned();
        file.write(&path)?;
    }
    Ok(())
}
