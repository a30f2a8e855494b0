//! Finding the PostgreSQL server binaries (see the [module docs](super)).

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use crate::Error;

const NOT_FOUND: &str = "PostgreSQL server binaries (initdb, pg_ctl) not found; install them \
     (Debian/Ubuntu: `apt-get install postgresql`), or set PGLOGSINK_PG_BIN to the directory \
     that holds them, or set DATABASE_URL / --database-url to use an existing server.";

#[derive(Clone)]
pub(super) struct Binaries {
    pub(super) initdb: PathBuf,
    pub(super) pg_ctl: PathBuf,
}

impl Binaries {
    pub(super) fn in_dir(dir: &Path) -> Option<Binaries> {
        let initdb = dir.join("initdb");
        let pg_ctl = dir.join("pg_ctl");
        (is_executable(&initdb) && is_executable(&pg_ctl)).then_some(Binaries { initdb, pg_ctl })
    }
}

pub(super) fn find_binaries() -> Result<Binaries, Error> {
    if let Some(dir) = std::env::var_os("PGLOGSINK_PG_BIN").filter(|d| !d.is_empty()) {
        let dir = PathBuf::from(dir);
        return Binaries::in_dir(&dir).ok_or_else(|| {
            Error::embedded(format!(
                "PGLOGSINK_PG_BIN is set to {}, but that directory does not hold both initdb and \
                 pg_ctl; point it at the directory of the PostgreSQL server binaries (e.g. \
                 /usr/lib/postgresql/15/bin), or unset it.",
                dir.display()
            ))
        });
    }
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            if dir.as_os_str().is_empty() {
                continue;
            }
            if let Some(bins) = Binaries::in_dir(&dir) {
                return Ok(bins);
            }
        }
    }
    let mut versions: Vec<(Vec<u32>, PathBuf)> = Vec::new();
    if let Ok(entries) = fs::read_dir("/usr/lib/postgresql") {
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some(version) = name
                .to_str()
                .and_then(|n| n.split('.').map(|p| p.parse::<u32>().ok()).collect())
            else {
                continue;
            };
            versions.push((version, entry.path().join("bin")));
        }
    }
    versions.sort_by(|a, b| b.0.cmp(&a.0));
    for (_, dir) in versions {
        if let Some(bins) = Binaries::in_dir(&dir) {
            return Ok(bins);
        }
    }
    Binaries::in_dir(Path::new("/usr/local/pgsql/bin")).ok_or_else(|| Error::embedded(NOT_FOUND))
}

pub(super) fn is_executable(path: &Path) -> bool {
    fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}
