//! The OS user the server runs as, and whether it can reach a directory.

use std::ffi::CString;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use super::files::absolute;
use crate::Error;

/// The OS user the server runs as when we are root.
pub(super) const SERVER_OS_USER: &str = "postgres";

#[derive(Clone, Copy)]
pub(super) struct OsUser {
    pub(super) uid: u32,
    pub(super) gid: u32,
}

/// The OS user the server must run as: `None` when we are not root (it runs
/// as us), the `postgres` user when we are.
pub(super) fn server_user() -> Result<Option<OsUser>, Error> {
    // SAFETY: geteuid cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        return Ok(None);
    }
    lookup_user(SERVER_OS_USER).map(Some).ok_or_else(|| {
        Error::embedded(format!(
            "pglogsink runs as root, and PostgreSQL refuses to run as root, but there is no \
             `{SERVER_OS_USER}` OS user to run it as; create one (e.g. `useradd --system \
             {SERVER_OS_USER}`), run pglogsink as another user, or set DATABASE_URL."
        ))
    })
}

pub(super) fn lookup_user(name: &str) -> Option<OsUser> {
    let cname = CString::new(name).ok()?;
    let mut buf: Vec<libc::c_char> = vec![0; 1024];
    loop {
        // SAFETY: all-zero is a valid `passwd` (null pointers, zero ids).
        let mut pwd: libc::passwd = unsafe { std::mem::zeroed() };
        let mut result: *mut libc::passwd = std::ptr::null_mut();
        // SAFETY: the pointers are valid for the stated sizes; getpwnam_r is
        // the thread-safe variant of getpwnam.
        let rc = unsafe {
            libc::getpwnam_r(
                cname.as_ptr(),
                &mut pwd,
                buf.as_mut_ptr(),
                buf.len(),
                &mut result,
            )
        };
        if rc == libc::ERANGE && buf.len() < 1 << 20 {
            buf.resize(buf.len() * 2, 0);
            continue;
        }
        if rc != 0 || result.is_null() {
            return None;
        }
        return Some(OsUser {
            uid: pwd.pw_uid,
            gid: pwd.pw_gid,
        });
    }
}

#[derive(Clone, Copy)]
pub(super) enum ReachHint {
    DataDir,
    TempDir,
}

pub(super) fn check_reachable(path: &Path, user: &OsUser, hint: ReachHint) -> Result<(), Error> {
    let Some(blocker) = unreachable_component(path, user) else {
        return Ok(());
    };
    let what = if blocker == path {
        format!(
            "the directory {} is not accessible to it",
            blocker.display()
        )
    } else {
        format!(
            "the parent directory {} is not accessible to it",
            blocker.display()
        )
    };
    let advice = match hint {
        ReachHint::DataDir => {
            "choose a --data-dir it can reach, e.g. under /var/tmp, or set DATABASE_URL"
        }
        ReachHint::TempDir => {
            "set TMPDIR to a directory it can reach, e.g. /var/tmp, or set DATABASE_URL"
        }
    };
    Err(Error::embedded(format!(
        "the PostgreSQL server runs as OS user `{SERVER_OS_USER}`, which cannot reach {} ({what}); \
         {advice}.",
        path.display()
    )))
}

/// The first directory on the way to `path` (absolute) that `user` cannot
/// search, if any.
pub(super) fn unreachable_component(path: &Path, user: &OsUser) -> Option<PathBuf> {
    if user.uid == 0 {
        return None;
    }
    let existing = path.ancestors().find(|a| fs::symlink_metadata(a).is_ok())?;
    let resolved = match fs::canonicalize(existing) {
        Ok(resolved) => resolved,
        Err(_) => return Some(existing.to_path_buf()),
    };
    let mut chain: Vec<&Path> = resolved.ancestors().collect();
    chain.reverse();
    for dir in chain {
        let searchable = match fs::metadata(dir) {
            Ok(meta) if meta.is_dir() => {
                let bit = if meta.uid() == user.uid {
                    0o100
                } else if meta.gid() == user.gid {
                    0o010
                } else {
                    0o001
                };
                meta.mode() & bit != 0
            }
            _ => false,
        };
        if !searchable {
            return Some(dir.to_path_buf());
        }
    }
    None
}

/// Whether the OS user the server will run as can reach `path`: every
/// existing directory on the way (after resolving symlinks), including `path`
/// itself when it exists, must be searchable (`x`) by that user.
///
/// When `path` does not exist yet, pglogsink creates the missing directories
/// itself (mode 0755), so only search permission on the nearest existing
/// ancestor is required, not write permission.
///
/// Always true when not running as root (the server then runs as the current
/// user). When running as root and there is no `postgres` OS user, false.
pub fn server_user_can_reach(path: &Path) -> bool {
    match server_user() {
        Ok(None) => true,
        Ok(Some(user)) => match absolute(path) {
            Ok(path) => unreachable_component(&path, &user).is_none(),
            Err(_) => false,
        },
        Err(_) => false,
    }
}
