//! The start lock: one process at a time initialises or starts a cluster.

use std::fs;
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::io::AsRawFd;
use std::path::Path;

use crate::Error;

/// An exclusive `flock` on a file, released on drop.
pub(super) struct LockFile {
    pub(super) _file: fs::File,
}

impl LockFile {
    pub(super) fn acquire(path: &Path) -> Result<LockFile, Error> {
        let file = fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(path)
            .map_err(|e| Error::io("opening the start lock", path, e))?;
        loop {
            // SAFETY: the descriptor is valid for the life of `file`.
            let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) };
            if rc == 0 {
                return Ok(LockFile { _file: file });
            }
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(Error::io("locking", path, e));
            }
        }
    }
}
