//! A server process as `/proc` describes it: alive or a zombie, when it
//! started (so that a later process reusing its pid is not taken for it),
//! how it ended, and which data directory it serves.

use std::fs;
use std::io;
use std::path::Path;

/// Whether `pid` is a live (not zombie) process.
pub(super) fn pid_alive(pid: i32) -> bool {
    if pid <= 0 {
        return false;
    }
    // SAFETY: kill with signal 0 only checks for existence and permission.
    let rc = unsafe { libc::kill(pid, 0) };
    if rc != 0 && io::Error::last_os_error().raw_os_error() != Some(libc::EPERM) {
        return false;
    }
    // A zombie (dead, not yet reaped) still answers kill(0).
    match ProcStat::read(pid) {
        Some(stat) => !stat.is_dead(),
        None => true,
    }
}

/// Whether `pid` exists at all, zombies included: what PostgreSQL's own
/// check of a stale `postmaster.pid` (`kill(pid, 0)`) sees.
pub(super) fn pid_exists(pid: i32) -> bool {
    if pid <= 0 {
        return false;
    }
    // SAFETY: kill with signal 0 only checks for existence and permission.
    let rc = unsafe { libc::kill(pid, 0) };
    rc == 0 || io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

/// One postmaster: its pid, and its start time to tell it from a later
/// process that is given the same pid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Postmaster {
    pub(super) pid: i32,
    started: Option<u64>,
}

impl Postmaster {
    pub(super) fn new(pid: i32) -> Postmaster {
        Postmaster {
            pid,
            started: ProcStat::read(pid).map(|s| s.start_ticks),
        }
    }

    /// Still the same live process.
    pub(super) fn is_running(&self) -> bool {
        if !pid_alive(self.pid) {
            return false;
        }
        match (self.started, ProcStat::read(self.pid)) {
            (Some(started), Some(now)) => now.start_ticks == started,
            // Without /proc, kill(0) is all there is.
            _ => true,
        }
    }

    /// How the process ended, read while it is a zombie; a zombie that is
    /// our own child (we are the subreaper, or pid 1 in a container) is
    /// reaped here, so that it does not linger and fool PostgreSQL's
    /// stale-`postmaster.pid` check.
    pub(super) fn exit(&self) -> Option<Exit> {
        let stat = ProcStat::read(self.pid)?;
        if !stat.is_dead() || self.started.is_some_and(|s| s != stat.start_ticks) {
            return None;
        }
        // SAFETY: getpid cannot fail.
        if stat.ppid == unsafe { libc::getpid() } {
            let mut status = 0;
            // SAFETY: `status` is a valid out-pointer; WNOHANG never blocks.
            unsafe { libc::waitpid(self.pid, &mut status, libc::WNOHANG) };
        }
        stat.exit_code.map(Exit::from_wait_status)
    }
}

/// How a process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Exit {
    Code(i32),
    Signal(i32),
}

impl Exit {
    /// From a `waitpid` status word (as `/proc/<pid>/stat` gives it too).
    pub(super) fn from_wait_status(status: i32) -> Exit {
        if status & 0x7f == 0 {
            Exit::Code((status >> 8) & 0xff)
        } else {
            Exit::Signal(status & 0x7f)
        }
    }
}

impl std::fmt::Display for Exit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match *self {
            Exit::Code(code) => write!(f, "exited with status {code}"),
            Exit::Signal(signal) => match signal_name(signal) {
                Some(name) => write!(f, "was killed by signal {signal} ({name})"),
                None => write!(f, "was killed by signal {signal}"),
            },
        }
    }
}

fn signal_name(signal: i32) -> Option<&'static str> {
    Some(match signal {
        libc::SIGHUP => "SIGHUP",
        libc::SIGINT => "SIGINT",
        libc::SIGQUIT => "SIGQUIT",
        libc::SIGILL => "SIGILL",
        libc::SIGABRT => "SIGABRT",
        libc::SIGBUS => "SIGBUS",
        libc::SIGFPE => "SIGFPE",
        libc::SIGKILL => "SIGKILL",
        libc::SIGSEGV => "SIGSEGV",
        libc::SIGTERM => "SIGTERM",
        _ => return None,
    })
}

/// Whether the live process `pid` is a PostgreSQL server for `pgdata` (its
/// command line has `-D <pgdata>`, as `pg_ctl` starts it). True when the
/// command line cannot be read: only a process known to be something else is
/// treated as a stranger.
pub(super) fn serves(pid: i32, pgdata: &Path) -> bool {
    let Ok(cmdline) = fs::read(format!("/proc/{pid}/cmdline")) else {
        return true;
    };
    let want = pgdata.as_os_str().as_encoded_bytes();
    cmdline.split(|&b| b == 0).any(|arg| arg == want)
}

/// The live processes whose parent is `pid` (a postmaster's backends and
/// auxiliary processes), read from `/proc`.
#[cfg(feature = "test-hooks")]
pub(super) fn children(pid: i32) -> Vec<i32> {
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse::<i32>().ok())
        .filter(|&child| {
            ProcStat::read(child).is_some_and(|stat| stat.ppid == pid && !stat.is_dead())
        })
        .collect()
}

/// The fields of `/proc/<pid>/stat` we use.
struct ProcStat {
    state: char,
    ppid: i32,
    start_ticks: u64,
    /// The wait status, once the process has ended (Linux 3.5 and later).
    exit_code: Option<i32>,
}

impl ProcStat {
    fn read(pid: i32) -> Option<ProcStat> {
        let text = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        ProcStat::parse(&text)
    }

    /// After the command name (which may hold spaces and parentheses, hence
    /// the last `)`), fields 3 on: state, ppid, ... starttime is field 22 and
    /// exit_code field 52.
    fn parse(text: &str) -> Option<ProcStat> {
        let (_, rest) = text.rsplit_once(')')?;
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let state = fields.first()?.chars().next()?;
        Some(ProcStat {
            state,
            ppid: fields.get(1)?.parse().ok()?,
            start_ticks: fields.get(19)?.parse().ok()?,
            exit_code: fields
                .get(49)
                .and_then(|f| f.parse().ok())
                .filter(|_| state == 'Z' || state == 'X'),
        })
    }

    fn is_dead(&self) -> bool {
        self.state == 'Z' || self.state == 'X'
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wait_statuses_read_as_exit_codes_or_signals() {
        assert_eq!(Exit::from_wait_status(9), Exit::Signal(9));
        assert_eq!(Exit::from_wait_status(1 << 8), Exit::Code(1));
        assert_eq!(Exit::from_wait_status(0), Exit::Code(0));
        assert_eq!(
            Exit::Signal(9).to_string(),
            "was killed by signal 9 (SIGKILL)"
        );
    }

    #[test]
    fn stat_lines_parse_with_odd_command_names() {
        let zombie = "5164 (post gres) (x)) Z 1 5164 5164 0 -1 4228108 3771 491 0 0 0 1 0 0 20 \
                      0 1 0 2159374 0 0 18446744073709551615 0 0 0 0 0 0 0 0 0 0 0 0 17 1 0 0 \
                      0 0 0 0 0 0 0 0 0 0 9";
        let stat = ProcStat::parse(zombie).unwrap();
        assert_eq!((stat.state, stat.ppid, stat.start_ticks), ('Z', 1, 2159374));
        assert_eq!(stat.exit_code, Some(9));
        let running = zombie.replace(") Z ", ") S ");
        assert_eq!(ProcStat::parse(&running).unwrap().exit_code, None);
    }

    #[test]
    fn this_process_is_running_and_serves_no_cluster() {
        let me = Postmaster::new(std::process::id() as i32);
        assert!(me.is_running());
        assert_eq!(me.exit(), None);
        assert!(!serves(me.pid, Path::new("/nonexistent/pgdata")));
        assert!(!Postmaster::new(-1).is_running());
    }
}
