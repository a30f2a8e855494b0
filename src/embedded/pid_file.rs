//! The running server, as `postmaster.pid` and `/proc` describe it.

use std::fs;
use std::io;
use std::path::Path;
use std::time::{Duration, Instant};

use super::files::SERVER_LOG;
use super::process::pid_alive;
use crate::Error;

pub(super) struct PidFile {
    pub(super) pid: i32,
    pub(super) port: Option<u16>,
    pub(super) status: Option<String>,
}

/// The server running for `pgdata`, if any (postmaster.pid present and its
/// pid alive).
pub(super) fn running_server(pgdata: &Path) -> Result<Option<PidFile>, Error> {
    let path = pgdata.join("postmaster.pid");
    let text = match fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io("reading", &path, e)),
    };
    let lines: Vec<&str> = text.lines().collect();
    let Some(pid) = lines.first().and_then(|l| l.trim().parse::<i32>().ok()) else {
        // Being written, or garbage: not a usable server.
        return Ok(None);
    };
    if !pid_alive(pid) {
        return Ok(None);
    }
    let port = lines
        .get(3)
        .and_then(|l| l.trim().parse::<u16>().ok())
        .filter(|&p| p != 0);
    let status = lines
        .get(7)
        .map(|l| l.trim().to_owned())
        .filter(|s| !s.is_empty());
    Ok(Some(PidFile { pid, port, status }))
}

/// The running server for `pgdata` once it is ready: waits while it is
/// starting (up to 60 s) and while it is stopping (then `None`).
pub(super) fn wait_for_settled_server(pgdata: &Path) -> Result<Option<PidFile>, Error> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let Some(info) = running_server(pgdata)? else {
            return Ok(None);
        };
        match info.status.as_deref() {
            Some("ready") | Some("standby") => return Ok(Some(info)),
            _ if Instant::now() >= deadline => {
                return Err(Error::embedded(format!(
                    "the PostgreSQL server (pid {}) for {} has been {} for more than 60 s; see \
                     {}, and stop it with `pg_ctl -D {} stop` if it is stuck.",
                    info.pid,
                    pgdata.display(),
                    match info.status.as_deref() {
                        Some("stopping") => "stopping",
                        _ => "starting",
                    },
                    pgdata.join(SERVER_LOG).display(),
                    pgdata.display()
                )))
            }
            _ => std::thread::sleep(Duration::from_millis(50)),
        }
    }
}
