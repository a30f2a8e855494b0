//! Running the server binaries (`initdb`, `pg_ctl`) as the server's OS
//! user, and turning what they print into errors a person can act on.

use std::ffi::OsStr;
use std::fs;
use std::io::{self, Read, Seek, SeekFrom};
use std::os::unix::fs::DirBuilderExt;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use super::binaries::Binaries;
use super::cluster::USER;
use super::files::SERVER_LOG;
use super::files::{set_mode, write_private_file};
use super::os_user::{OsUser, SERVER_OS_USER};
use super::pid_file::running_server;
use super::process::pid_alive;
use crate::Error;

/// How many lines of the server log go into a start error.
const LOG_TAIL_LINES: usize = 20;

/// How to run the server binaries, and as whom.
#[derive(Clone)]
pub(super) struct Runner {
    pub(super) bins: Binaries,
    /// The OS user to run as (when we are root).
    pub(super) user: Option<OsUser>,
}

pub(super) enum StartOutcome {
    Started,
    /// The start failed because the port was in use; try another.
    PortTaken(String),
    Failed(String),
}

impl Runner {
    pub(super) fn command(&self, program: &Path, cwd: &Path) -> Command {
        let mut cmd = Command::new(program);
        cmd.current_dir(cwd)
            .stdin(Stdio::null())
            .env_remove("HOME")
            .env("LC_MESSAGES", "C")
            // Own process group: a Ctrl-C in the terminal must not stop the
            // server before our process has drained its queue.
            .process_group(0);
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("PG") {
                cmd.env_remove(key);
            }
        }
        if let Some(user) = &self.user {
            cmd.uid(user.uid).gid(user.gid);
        }
        cmd
    }

    pub(super) fn run(&self, program: &Path, cwd: &Path, args: &[&OsStr]) -> Result<Output, Error> {
        self.command(program, cwd)
            .args(args)
            .output()
            .map_err(|e| Error::io("running", program, e))
    }

    /// `initdb` into `pgdata` (created here, mode 0700, owned by the server
    /// user).
    pub(super) fn initdb(
        &self,
        data_dir: &Path,
        pgdata: &Path,
        password: &str,
        no_sync: bool,
    ) -> Result<(), Error> {
        match fs::read_dir(pgdata) {
            Ok(mut entries) => {
                if entries.next().is_some() {
                    return Err(Error::embedded(format!(
                        "{} is not empty but holds no complete PostgreSQL cluster (no PG_VERSION; \
                         an earlier initialisation was probably interrupted); remove that \
                         directory and try again.",
                        pgdata.display()
                    )));
                }
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                fs::DirBuilder::new()
                    .mode(0o700)
                    .create(pgdata)
                    .map_err(|e| Error::io("creating the PostgreSQL data directory", pgdata, e))?;
            }
            Err(e) => return Err(Error::io("reading", pgdata, e)),
        }
        set_mode(pgdata, 0o700)?;
        self.give_to_server_user(pgdata)?;

        let pwfile = data_dir.join("initdb.pwfile");
        let _ = fs::remove_file(&pwfile);
        write_private_file(&pwfile, format!("{password}\n").as_bytes())
            .map_err(|e| Error::io("writing the initdb password file", &pwfile, e))?;
        let result = self.give_to_server_user(&pwfile).and_then(|()| {
            let mut args: Vec<&OsStr> = vec![
                OsStr::new("-D"),
                pgdata.as_os_str(),
                OsStr::new("-U"),
                OsStr::new(USER),
            ];
            let pwfile_arg = format!("--pwfile={}", pwfile.display());
            args.extend(
                [
                    pwfile_arg.as_str(),
                    "--auth-local=peer",
                    "--auth-host=scram-sha-256",
                    "-E",
                    "UTF8",
                    "--locale=C",
                ]
                .map(OsStr::new),
            );
            if no_sync {
                args.push(OsStr::new("--no-sync"));
            }
            self.run(&self.bins.initdb, data_dir, &args)
        });
        let _ = fs::remove_file(&pwfile);
        let output = result?;
        if !output.status.success() {
            return Err(Error::embedded(format!(
                "initdb failed for {} ({}): {}; fix the problem it reports, or set DATABASE_URL \
                 to use an existing server.",
                pgdata.display(),
                output.status,
                flatten(&output.stderr)
            )));
        }
        Ok(())
    }

    /// `pg_ctl start` on `port`.
    pub(super) fn start(&self, pgdata: &Path, port: u16) -> Result<StartOutcome, Error> {
        let log = pgdata.join(SERVER_LOG);
        let log_start = fs::metadata(&log).map(|m| m.len()).unwrap_or(0);
        let options =
            format!("-c listen_addresses=127.0.0.1 -c port={port} -c unix_socket_directories=''");
        let cwd = pgdata.parent().unwrap_or(pgdata);
        let output = self.run(
            &self.bins.pg_ctl,
            cwd,
            &[
                OsStr::new("-D"),
                pgdata.as_os_str(),
                OsStr::new("-l"),
                log.as_os_str(),
                OsStr::new("-w"),
                OsStr::new("-t"),
                OsStr::new("60"),
                OsStr::new("-o"),
                OsStr::new(&options),
                OsStr::new("start"),
            ],
        )?;
        if output.status.success() {
            return Ok(StartOutcome::Started);
        }
        let new_log = read_from(&log, log_start);
        let tail = last_lines(&new_log, LOG_TAIL_LINES);
        let message = format!(
            "the embedded PostgreSQL server in {} did not start on port {port} (pg_ctl: {}); \
             fix the problem shown in the last lines of {} below, or set DATABASE_URL to use an \
             existing server:\n{}",
            pgdata.display(),
            pg_ctl_said(&output.stderr),
            log.display(),
            if tail.is_empty() {
                "(the log is empty)"
            } else {
                &tail
            }
        );
        if new_log.contains("Address already in use") {
            Ok(StartOutcome::PortTaken(message))
        } else {
            Ok(StartOutcome::Failed(message))
        }
    }

    /// `pg_ctl stop -m fast`, waiting up to 30 s.
    pub(super) fn stop(&self, pgdata: &Path) -> Result<(), Error> {
        self.stop_mode(pgdata, "fast")
    }

    pub(super) fn stop_immediate(&self, pgdata: &Path) -> Result<(), Error> {
        self.stop_mode(pgdata, "immediate")
    }

    pub(super) fn stop_mode(&self, pgdata: &Path, mode: &str) -> Result<(), Error> {
        // The postmaster removes postmaster.pid (which is what `pg_ctl -w`
        // waits for) a moment before its process ends: wait for the process
        // too, so that "stopped" means no server process is left.
        let pid = running_server(pgdata).ok().flatten().map(|p| p.pid);
        self.pg_ctl_stop(pgdata, mode)?;
        if let Some(pid) = pid {
            let deadline = Instant::now() + Duration::from_secs(10);
            while pid_alive(pid) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        Ok(())
    }

    pub(super) fn pg_ctl_stop(&self, pgdata: &Path, mode: &str) -> Result<(), Error> {
        let cwd = pgdata.parent().unwrap_or(pgdata);
        let output = self.run(
            &self.bins.pg_ctl,
            cwd,
            &[
                OsStr::new("-D"),
                pgdata.as_os_str(),
                OsStr::new("-m"),
                OsStr::new(mode),
                OsStr::new("-w"),
                OsStr::new("-t"),
                OsStr::new("30"),
                OsStr::new("stop"),
            ],
        )?;
        if output.status.success() {
            return Ok(());
        }
        Err(Error::embedded(format!(
            "stopping the embedded PostgreSQL server in {} failed (pg_ctl: {}); see {}, and stop \
             it by hand with `pg_ctl -D {} stop` if it is still running.",
            pgdata.display(),
            pg_ctl_said(&output.stderr),
            pgdata.join(SERVER_LOG).display(),
            pgdata.display()
        )))
    }

    pub(super) fn give_to_server_user(&self, path: &Path) -> Result<(), Error> {
        if let Some(user) = &self.user {
            std::os::unix::fs::chown(path, Some(user.uid), Some(user.gid)).map_err(|e| {
                Error::io(
                    format!("changing the owner (to `{SERVER_OS_USER}`) of"),
                    path,
                    e,
                )
            })?;
        }
        Ok(())
    }
}

/// The text of `path` from byte `offset` on (lossy); empty if unreadable.
pub(super) fn read_from(path: &Path, offset: u64) -> String {
    let mut bytes = Vec::new();
    let read = fs::File::open(path).and_then(|mut f| {
        let len = f.metadata()?.len();
        f.seek(SeekFrom::Start(if offset <= len { offset } else { 0 }))?;
        f.read_to_end(&mut bytes)
    });
    match read {
        Ok(_) => String::from_utf8_lossy(&bytes).into_owned(),
        Err(_) => String::new(),
    }
}

pub(super) fn last_lines(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Command output as one line.
pub(super) fn flatten(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    let joined = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" ");
    if joined.is_empty() {
        "no output".to_owned()
    } else {
        joined
    }
}

/// `pg_ctl`'s stderr as one line, without its `pg_ctl: ` prefixes.
pub(super) fn pg_ctl_said(bytes: &[u8]) -> String {
    flatten(bytes).replace("pg_ctl: ", "")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    pub(super) fn tail_of_log() {
        assert_eq!(last_lines("a\nb\n\nc\n", 2), "b\nc");
        assert_eq!(last_lines("", 5), "");
    }
}
