//! Supervision: a cluster this process started is started again when its
//! server dies.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use super::files::{LOCK_FILE, SERVER_LOG};
use super::pid_file::running_server;
use super::process::{pid_alive, pid_exists, serves, Postmaster};
use super::runner::{Runner, StartOutcome};
use super::start_lock::LockFile;
use crate::Error;

/// When and how often the [`Supervisor`] looks and starts again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestartPolicy {
    /// How often the postmaster is checked. Default 1 s.
    pub poll_interval: Duration,
    /// The delay before the first start after a death. Default 0.5 s.
    pub first_delay: Duration,
    /// The longest delay between starts. Default 30 s.
    pub max_delay: Duration,
    /// A restarted server that runs this long counts as recovered: the next
    /// death starts again from [`first_delay`](Self::first_delay). Default
    /// 60 s.
    pub stable_after: Duration,
    /// After this many failed starts in a row the supervisor gives up.
    /// Default 10.
    pub max_failed_starts: u32,
}

impl Default for RestartPolicy {
    fn default() -> RestartPolicy {
        RestartPolicy {
            poll_interval: Duration::from_secs(1),
            first_delay: Duration::from_millis(500),
            max_delay: Duration::from_secs(30),
            stable_after: Duration::from_secs(60),
            max_failed_starts: 10,
        }
    }
}

impl RestartPolicy {
    /// The delay before a start after `setbacks` setbacks in a row (failed
    /// starts, and deaths of a server restarted less than
    /// [`stable_after`](Self::stable_after) before): `first_delay * 2^setbacks`,
    /// at most `max_delay`. No jitter: one supervisor per cluster has no herd
    /// to spread.
    ///
    /// ```
    /// use std::time::Duration;
    /// use pglogsink::embedded::RestartPolicy;
    ///
    /// let policy = RestartPolicy::default();
    /// assert_eq!(policy.delay(0), Duration::from_millis(500));
    /// assert_eq!(policy.delay(3), Duration::from_secs(4));
    /// assert_eq!(policy.delay(20), Duration::from_secs(30));
    /// ```
    pub fn delay(&self, setbacks: u32) -> Duration {
        let factor = 1u32.checked_shl(setbacks).unwrap_or(u32::MAX);
        self.first_delay.saturating_mul(factor).min(self.max_delay)
    }
}

/// Starts the server of an [`EmbeddedPostgres`](super::EmbeddedPostgres)
/// again whenever it dies; made by
/// [`EmbeddedPostgres::supervisor`](super::EmbeddedPostgres::supervisor) and
/// driven by [`run`](Self::run).
///
/// A process that owns its database should not go on without it when the
/// kernel's OOM killer (or a `kill -9`) takes the postmaster: the sink would
/// spool and report not ready for as long as it runs. The supervisor
/// watches the postmaster and starts the server again, on the same port, so
/// the pool's connections find it where they left it; PostgreSQL's crash
/// recovery replays its WAL, and the sink's retries and spool do the rest.
///
/// * **Detection**: every [`RestartPolicy::poll_interval`] (1 s), whether the
///   postmaster this process watches is still running (`postmaster.pid`, the
///   process, and its start time, so a later process given the same pid is
///   not taken for it). pg_ctl starts the postmaster detached, so we are not
///   its parent and cannot wait for it; its exit status is read from `/proc`
///   while it is a zombie, if we look in time.
/// * **Restart**: after [`RestartPolicy::delay`] (0.5 s, doubling up to 30 s
///   while starts fail or the restarted server keeps dying within
///   [`RestartPolicy::stable_after`]), `pg_ctl start` under the data
///   directory's start lock. A `postmaster.pid` left behind is removed first
///   only when the pid it names is a zombie or a process that is not this
///   cluster's server (PostgreSQL's own check would take either for a running
///   server); when the pid is gone PostgreSQL removes the file itself, after
///   checking that no old server process still uses its shared memory.
/// * **Giving up**: after [`RestartPolicy::max_failed_starts`] starts in a row
///   fail (10: about two and a half minutes of trying), the supervisor
///   cancels the token it was given (a fatal stop, like the sink's) and
///   returns the last error. A server that starts and dies again is started
///   again, with growing delays, for as long as it starts.
/// * **Telling**: a warning when the server is found dead (how, when known),
///   one per failed start, an info line when it runs again (with the
///   attempt count and the downtime), and the counter
///   `pglogsink_embedded_restarts_total` through the `metrics` facade.
///
/// ```no_run
/// use pglogsink::embedded::EmbeddedPostgres;
/// use pglogsink::CancellationToken;
///
/// # async fn demo() -> Result<(), pglogsink::Error> {
/// let server = EmbeddedPostgres::start("/var/tmp/app-logs")?;
/// let shutdown = CancellationToken::new();
/// let supervision = tokio::spawn(server.supervisor()?.run(shutdown.clone()));
/// // ... serve; a killed postmaster is started again meanwhile ...
/// shutdown.cancel();
/// supervision.await.expect("the supervisor panicked")?;
/// server.stop()?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Supervisor {
    data_dir: PathBuf,
    pgdata: PathBuf,
    port: u16,
    runner: Runner,
    policy: RestartPolicy,
}

impl std::fmt::Debug for Supervisor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Supervisor")
            .field("data_dir", &self.data_dir)
            .field("port", &self.port)
            .field("policy", &self.policy)
            .finish()
    }
}

impl Supervisor {
    pub(super) fn new(data_dir: &Path, pgdata: &Path, port: u16, runner: Runner) -> Supervisor {
        Supervisor {
            data_dir: data_dir.to_owned(),
            pgdata: pgdata.to_owned(),
            port,
            runner,
            policy: RestartPolicy::default(),
        }
    }

    /// Use `policy` instead of the [default](RestartPolicy::default).
    pub fn with_policy(mut self, policy: RestartPolicy) -> Supervisor {
        self.policy = policy;
        self
    }

    /// Watch the server until `token` is cancelled (then `Ok`), starting it
    /// again each time it dies. When it cannot be started again (see
    /// [`RestartPolicy::max_failed_starts`]), cancel `token` and return the
    /// last start's error.
    ///
    /// # Cancel safety
    ///
    /// Cancelling `token` ends the watch at the next poll or backoff sleep;
    /// a start already under way is waited for (pg_ctl gives up after 60 s),
    /// so that a stop which follows finds the server it started. Dropping
    /// the future instead stops the watch at once, and a start under way
    /// finishes on its blocking thread unobserved.
    pub async fn run(self, token: CancellationToken) -> Result<(), Error> {
        let result = self.watch(&token).await;
        if let Err(e) = &result {
            tracing::error!(target: "pglogsink", data_dir = %self.data_dir.display(), error = %e,
                "the embedded PostgreSQL cannot be started again; stopping");
            token.cancel();
        }
        result
    }

    async fn watch(&self, token: &CancellationToken) -> Result<(), Error> {
        let mut watched = self.postmaster();
        let mut restarted_at: Option<Instant> = None;
        // Deaths of a server that had not yet run for `stable_after`.
        let mut crashes = 0u32;
        loop {
            if !pause(self.policy.poll_interval, token).await {
                return Ok(());
            }
            match watched {
                Some(pm) if pm.is_running() => continue,
                // Not running when we started watching (or adopted one that
                // someone else started): look again, it may be coming up.
                None => {
                    watched = self.postmaster();
                    if watched.is_some() {
                        continue;
                    }
                }
                Some(_) => {
                    // Restarted by someone else (`pg_ctl restart`): adopt it.
                    if let Some(pm) = self.postmaster() {
                        tracing::info!(target: "pglogsink", data_dir = %self.data_dir.display(),
                            pid = pm.pid, "the embedded PostgreSQL server was restarted by another process");
                        watched = Some(pm);
                        continue;
                    }
                }
            }
            let died = Instant::now();
            tracing::warn!(target: "pglogsink", data_dir = %self.data_dir.display(),
                "the embedded PostgreSQL server {}; starting it again", self.how_it_ended(watched));
            crashes = match restarted_at {
                Some(at) if at.elapsed() < self.policy.stable_after => crashes.saturating_add(1),
                _ => 0,
            };
            let Some((pm, attempts)) = self.start_again(crashes, token).await? else {
                return Ok(());
            };
            metrics::counter!("pglogsink_embedded_restarts_total").increment(1);
            tracing::info!(target: "pglogsink", data_dir = %self.data_dir.display(), pid = pm.pid,
                attempt = attempts, downtime_ms = died.elapsed().as_millis() as u64,
                "the embedded PostgreSQL server runs again (after crash recovery)");
            watched = Some(pm);
            restarted_at = Some(Instant::now());
        }
    }

    /// Start attempts with backoff until one succeeds (`Some`: the new
    /// postmaster and the attempts it took), `token` is cancelled (`None`),
    /// or too many fail (`Err`).
    async fn start_again(
        &self,
        crashes: u32,
        token: &CancellationToken,
    ) -> Result<Option<(Postmaster, u32)>, Error> {
        let mut failed = 0u32;
        loop {
            let delay = self.policy.delay(crashes.saturating_add(failed));
            if !pause(delay, token).await {
                return Ok(None);
            }
            let attempt = self.clone();
            let started = tokio::task::spawn_blocking(move || attempt.start_blocking())
                .await
                .unwrap_or_else(|e| {
                    Err(Error::embedded(format!(
                        "the thread starting PostgreSQL failed ({e}); this is a bug in \
                         pglogsink, please report it."
                    )))
                });
            match started {
                Ok(pm) => return Ok(Some((pm, failed + 1))),
                Err(e) => {
                    failed += 1;
                    if failed >= self.policy.max_failed_starts {
                        return Err(Error::embedded(format!(
                            "the embedded PostgreSQL server in {} died and {failed} starts in a \
                             row failed; the last said: {e}",
                            self.data_dir.display()
                        )));
                    }
                    let next = self.policy.delay(crashes.saturating_add(failed));
                    tracing::warn!(target: "pglogsink", data_dir = %self.data_dir.display(),
                        attempt = failed, error = %e,
                        "could not start the embedded PostgreSQL server; trying again in {next:?}");
                }
            }
        }
    }

    /// One start, under the start lock (so that another pglogsink process
    /// attaching meanwhile waits for it rather than starting a server of its
    /// own on another port).
    fn start_blocking(&self) -> Result<Postmaster, Error> {
        let _lock = LockFile::acquire(&self.data_dir.join(LOCK_FILE))?;
        if let Some(pm) = self.postmaster() {
            // Someone else (a person with pg_ctl) started it meanwhile.
            return Ok(pm);
        }
        if let Some(info) = running_server(&self.pgdata)? {
            if serves(info.pid, &self.pgdata) {
                return Err(Error::embedded(format!(
                    "another process started the PostgreSQL server in {} (pid {}) on port {}, \
                     but this process's connections go to port {}; stop that server \
                     (`pg_ctl -D {} stop`) so that it can be started here again.",
                    self.pgdata.display(),
                    info.pid,
                    info.port.map_or_else(|| "?".to_owned(), |p| p.to_string()),
                    self.port,
                    self.pgdata.display()
                )));
            }
        }
        self.remove_stale_pid_file()?;
        match self.runner.start(&self.pgdata, self.port)? {
            StartOutcome::Started => self.postmaster().ok_or_else(|| {
                Error::embedded(format!(
                    "pg_ctl said the embedded PostgreSQL server in {} started, but no server \
                     process is running for it; see {}.",
                    self.pgdata.display(),
                    self.pgdata.join(SERVER_LOG).display()
                ))
            }),
            StartOutcome::PortTaken(message) | StartOutcome::Failed(message) => {
                Err(Error::embedded(message))
            }
        }
    }

    /// The live postmaster of this cluster, on our port. A server running on
    /// another port (started by hand, say) is not ours to watch: the pool's
    /// connections cannot reach it, so it counts as not running and the
    /// start that follows reports it.
    fn postmaster(&self) -> Option<Postmaster> {
        let info = running_server(&self.pgdata).ok().flatten()?;
        if !serves(info.pid, &self.pgdata) {
            return None;
        }
        if info.port.is_some_and(|port| port != self.port) {
            return None;
        }
        Some(Postmaster::new(info.pid))
    }

    /// Remove a `postmaster.pid` whose pid PostgreSQL would take for a
    /// running server: a zombie, or another program that was given the pid.
    /// A pid that is gone is left to PostgreSQL, which then also checks that
    /// no old server process still holds the shared memory.
    fn remove_stale_pid_file(&self) -> Result<(), Error> {
        let path = self.pgdata.join("postmaster.pid");
        let pid = match std::fs::read_to_string(&path) {
            Ok(text) => text
                .lines()
                .next()
                .and_then(|l| l.trim().parse::<i32>().ok()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(Error::io("reading", &path, e)),
        };
        let Some(pid) = pid else {
            return Ok(());
        };
        let stale = pid_exists(pid) && (!pid_alive(pid) || !serves(pid, &self.pgdata));
        if !stale {
            return Ok(());
        }
        tracing::info!(target: "pglogsink", pid, path = %path.display(),
            "removing the stale postmaster.pid of the dead server");
        match std::fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::io("removing the stale", &path, e)),
        }
    }

    /// "was killed by signal 9 (SIGKILL)", "was stopped (...)", ...
    fn how_it_ended(&self, watched: Option<Postmaster>) -> String {
        let pid_file = self.pgdata.join("postmaster.pid");
        let Some(pm) = watched else {
            return "is not running".to_owned();
        };
        if let Some(exit) = pm.exit() {
            return format!("(pid {}) {exit}", pm.pid);
        }
        if pid_file.exists() {
            format!(
                "(pid {}) died without cleaning up (killed, e.g. by `kill -9` or the kernel's OOM \
                 killer: see `dmesg`; or crashed: see {})",
                pm.pid,
                self.pgdata.join(SERVER_LOG).display()
            )
        } else {
            format!(
                "(pid {}) was stopped (a clean shutdown, e.g. `pg_ctl stop`: see {})",
                pm.pid,
                self.pgdata.join(SERVER_LOG).display()
            )
        }
    }
}

/// Sleep for `duration`; false when `token` was cancelled first.
async fn pause(duration: Duration, token: &CancellationToken) -> bool {
    tokio::select! {
        () = token.cancelled() => false,
        () = tokio::time::sleep(duration) => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_double_from_half_a_second_to_thirty() {
        let policy = RestartPolicy::default();
        let schedule: Vec<u64> = (0..9).map(|n| policy.delay(n).as_millis() as u64).collect();
        assert_eq!(
            schedule,
            [500, 1_000, 2_000, 4_000, 8_000, 16_000, 30_000, 30_000, 30_000]
        );
        assert_eq!(policy.delay(u32::MAX), Duration::from_secs(30));
        let total: Duration = (0..policy.max_failed_starts).map(|n| policy.delay(n)).sum();
        assert_eq!(
            total,
            Duration::from_millis(151_500),
            "the time before giving up"
        );
    }

    #[tokio::test]
    async fn a_pause_ends_early_when_cancelled() {
        let token = CancellationToken::new();
        assert!(pause(Duration::from_millis(1), &token).await);
        let cancel = token.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(20)).await;
            cancel.cancel();
        });
        let started = Instant::now();
        assert!(!pause(Duration::from_secs(30), &token).await);
        assert!(started.elapsed() < Duration::from_secs(10));
    }
}
