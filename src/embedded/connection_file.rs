//! `connection.conf`: how another process logs in to the running server.

use std::fs;
use std::io;
use std::path::Path;

use super::files::write_private_file;
use crate::Error;

pub(super) struct ConnectionFile {
    pub(super) port: Option<u16>,
    pub(super) user: String,
    pub(super) password: String,
    pub(super) dbname: String,
    pub(super) database_created: bool,
}

impl ConnectionFile {
    /// `Ok(None)` when the file does not exist.
    pub(super) fn read(path: &Path) -> Result<Option<ConnectionFile>, Error> {
        let text =
            match fs::read_to_string(path) {
                Ok(text) => text,
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
                Err(e) => return Err(Error::io(
                    "reading the embedded PostgreSQL connection file (run pglogsink as the user \
                     that created it)",
                    path,
                    e,
                )),
            };
        let (mut port, mut user, mut password, mut dbname, mut created) =
            (None, None, None, None, false);
        for line in text.lines() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let Some((key, value)) = line.split_once('=') else {
                continue;
            };
            let value = value.trim();
            match key.trim() {
                "port" => port = value.parse::<u16>().ok().filter(|&p| p != 0),
                "user" => user = Some(value.to_owned()),
                "password" => password = Some(value.to_owned()),
                "dbname" => dbname = Some(value.to_owned()),
                "database_created" => created = value == "true",
                _ => {}
            }
        }
        match (user, password, dbname) {
            (Some(user), Some(password), Some(dbname))
                if !user.is_empty() && !password.is_empty() && !dbname.is_empty() =>
            {
                Ok(Some(ConnectionFile {
                    port,
                    user,
                    password,
                    dbname,
                    database_created: created,
                }))
            }
            _ => Err(Error::embedded(format!(
                "the embedded PostgreSQL connection file {} is incomplete (it needs user, \
                 password and dbname lines); restore it, or remove its data directory to start \
                 afresh (this deletes its data).",
                path.display()
            ))),
        }
    }

    /// Write atomically (temporary file + rename), mode 0600.
    pub(super) fn write(&self, path: &Path) -> Result<(), Error> {
        let text = format!(
            "# pglogsink embedded PostgreSQL connection settings; private (contains the \
             password)\nport={}\nuser={}\npassword={}\ndbname={}\ndatabase_created={}\n",
            self.port.unwrap_or(0),
            self.user,
            self.password,
            self.dbname,
            self.database_created
        );
        let tmp = path.with_extension("conf.tmp");
        let _ = fs::remove_file(&tmp);
        let written =
            write_private_file(&tmp, text.as_bytes()).and_then(|()| fs::rename(&tmp, path));
        written.map_err(|e| {
            let _ = fs::remove_file(&tmp);
            Error::io("writing the embedded PostgreSQL connection file", path, e)
        })
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::super::cluster::random_hex;
    use super::super::files::CONNECTION_FILE;
    use super::*;

    #[test]
    pub(super) fn connection_file_round_trip() {
        let dir = std::env::temp_dir().join(format!(
            "pglogsink-unit-{}-{}",
            std::process::id(),
            random_hex(4).unwrap()
        ));
        fs::create_dir_all(&dir).unwrap();
        let path = dir.join(CONNECTION_FILE);
        let conn = ConnectionFile {
            port: Some(5433),
            user: "u".into(),
            password: "p=q".into(),
            dbname: "d".into(),
            database_created: true,
        };
        conn.write(&path).unwrap();
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let back = ConnectionFile::read(&path).unwrap().unwrap();
        assert_eq!(back.port, Some(5433));
        assert_eq!(back.password, "p=q");
        assert!(back.database_created);
        fs::remove_dir_all(&dir).unwrap();
        assert!(ConnectionFile::read(&path).unwrap().is_none());
    }
}
