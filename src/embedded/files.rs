//! Paths, directories and private files with the modes the server's OS user
//! needs.

use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::Error;

// The layout of a data directory (see the `embedded` module's docs).
/// Name of the connection settings file inside the data directory.
pub(super) const CONNECTION_FILE: &str = "connection.conf";
/// Name of the lock file inside the data directory.
pub(super) const LOCK_FILE: &str = "start.lock";
/// Name of the cluster directory inside the data directory.
pub(super) const PGDATA: &str = "pgdata";
/// Name of the server log inside the cluster directory.
pub(super) const SERVER_LOG: &str = "server.log";

pub(super) fn absolute(path: &Path) -> Result<PathBuf, Error> {
    if path.as_os_str().is_empty() {
        return Err(Error::embedded(
            "the PostgreSQL data directory path is empty; give a directory, e.g. --data-dir \
             ./.pglogsink.",
        ));
    }
    if path.is_absolute() {
        return Ok(path.to_path_buf());
    }
    std::env::current_dir()
        .map(|cwd| cwd.join(path))
        .map_err(|e| Error::io("resolving the relative path", path, e))
}

pub(super) fn canonical(path: &Path) -> Result<PathBuf, Error> {
    fs::canonicalize(path).map_err(|e| Error::io("resolving", path, e))
}

pub(super) fn set_mode(path: &Path, mode: u32) -> Result<(), Error> {
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .map_err(|e| Error::io(format!("setting mode {mode:o} on"), path, e))
}

/// Create `path` and its missing parents, each with mode 0755 regardless of
/// the umask (the server's OS user must be able to traverse them).
pub(super) fn create_dir_all_0755(path: &Path) -> Result<(), Error> {
    let mut missing: Vec<&Path> = path.ancestors().take_while(|a| !a.exists()).collect();
    missing.reverse();
    for dir in missing {
        match fs::DirBuilder::new().mode(0o755).create(dir) {
            Ok(()) => set_mode(dir, 0o755)?,
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists && dir.is_dir() => {}
            Err(e) => return Err(Error::io("creating directory", dir, e)),
        }
    }
    if !path.is_dir() {
        return Err(Error::embedded(format!(
            "{} exists but is not a directory; choose another --data-dir.",
            path.display()
        )));
    }
    Ok(())
}

/// Create `path` (it must not exist) readable by its owner only, write
/// `bytes` and sync: for files that hold the password.
pub(super) fn write_private_file(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}
