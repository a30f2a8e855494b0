//! The Log table's name: validated once, quoted wherever it is used.

use std::fmt;

use crate::Error;

/// A validated table name, optionally schema-qualified (`log`,
/// `audit.app_log`).
///
/// Each part must be 1 to 63 characters of lowercase ASCII letters, digits
/// and underscores, not starting with a digit. Restricting to lowercase means
/// the name reads the same quoted or not, so `SELECT * FROM app_log` in psql
/// finds what pglogsink writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableName {
    schema: Option<String>,
    name: String,
}

impl TableName {
    /// Validate a table name.
    ///
    /// ```
    /// use pglogsink::TableName;
    ///
    /// let t = TableName::parse("audit.app_log")?;
    /// assert_eq!(t.quoted(), r#""audit"."app_log""#);
    /// assert!(TableName::parse("log; DROP TABLE users").is_err());
    /// # Ok::<(), pglogsink::Error>(())
    /// ```
    pub fn parse(s: &str) -> Result<TableName, Error> {
        let mut parts = s.split('.');
        let (schema, name) = match (parts.next(), parts.next(), parts.next()) {
            (Some(name), None, None) => (None, name),
            (Some(schema), Some(name), None) => (Some(schema), name),
            _ => return Err(invalid(s, "use `name` or `schema.name`")),
        };
        for part in schema.iter().chain(Some(&name)) {
            check_identifier(s, part)?;
        }
        Ok(TableName {
            schema: schema.map(str::to_owned),
            name: name.to_owned(),
        })
    }

    /// The unqualified name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The schema, when one was given.
    pub fn schema(&self) -> Option<&str> {
        self.schema.as_deref()
    }

    /// The ledger of committed batches beside this table: `<name>_batches`
    /// (the name cut to fit PostgreSQL's 63 bytes, as `sql/schema.sql` does).
    pub fn ledger_table(&self) -> TableName {
        self.sibling("_batches")
    }

    /// The table of rows PostgreSQL refused: `<name>_rejected`.
    pub fn rejected_table(&self) -> TableName {
        self.sibling("_rejected")
    }

    /// A name read from the catalog (already valid for PostgreSQL); no
    /// schema for one in the current schema.
    pub(crate) fn from_parts(schema: Option<String>, name: String) -> TableName {
        TableName { schema, name }
    }

    /// `<name><suffix>` in the same schema, the name cut to fit
    /// PostgreSQL's 63 bytes as `sql/schema.sql` does with `left(tbl, n)`.
    /// A name read from the catalog may hold multi-byte characters: the cut
    /// falls before the character it would split, as PostgreSQL cuts a
    /// long identifier.
    pub(crate) fn sibling(&self, suffix: &str) -> TableName {
        let mut keep = self.name.len().min(63_usize.saturating_sub(suffix.len()));
        while !self.name.is_char_boundary(keep) {
            keep -= 1;
        }
        TableName {
            schema: self.schema.clone(),
            name: format!("{}{suffix}", &self.name[..keep]),
        }
    }

    /// The name quoted for SQL: `"schema"."name"` or `"name"`.
    pub fn quoted(&self) -> String {
        match &self.schema {
            Some(schema) => format!(
                "{}.{}",
                quote_identifier(schema),
                quote_identifier(&self.name)
            ),
            None => quote_identifier(&self.name),
        }
    }
}

/// An identifier in double quotes (a name read from the catalog may hold
/// any character).
pub(crate) fn quote_identifier(identifier: &str) -> String {
    format!("\"{}\"", identifier.replace('"', "\"\""))
}

impl fmt::Display for TableName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.schema {
            Some(schema) => write!(f, "{schema}.{}", self.name),
            None => f.write_str(&self.name),
        }
    }
}

impl std::str::FromStr for TableName {
    type Err = Error;

    fn from_str(s: &str) -> Result<TableName, Error> {
        TableName::parse(s)
    }
}

fn check_identifier(whole: &str, part: &str) -> Result<(), Error> {
    let mut chars = part.chars();
    let first_ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c == '_');
    let rest_ok = chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if !first_ok || !rest_ok {
        return Err(invalid(
            whole,
            "use lowercase letters, digits and underscores, not starting with a digit",
        ));
    }
    if part.len() > 63 {
        return Err(invalid(whole, "each part may be at most 63 characters"));
    }
    Ok(())
}

fn invalid(s: &str, why: &str) -> Error {
    Error::config("table", format!("{s:?} is not a valid table name: {why}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_and_invalid_names() {
        for ok in ["log", "_x", "app_log2", "audit.log", &"a".repeat(63)] {
            assert!(TableName::parse(ok).is_ok(), "{ok} should be valid");
        }
        for bad in [
            "",
            "Log",
            "2log",
            "log-x",
            "a.b.c",
            ".log",
            "log.",
            "lo g",
            "log\"",
            "a;b",
            "\u{e9}t\u{e9}",
            &"a".repeat(64),
        ] {
            let err = TableName::parse(bad).unwrap_err().to_string();
            assert!(err.starts_with("invalid table:"), "{bad:?}: {err}");
        }
        assert_eq!(TableName::parse("log").unwrap().quoted(), "\"log\"");
        let long = TableName::parse(&format!("s.{}", "a".repeat(63))).unwrap();
        assert_eq!(long.ledger_table().name().len(), 63);
        assert_eq!(
            long.rejected_table().to_string(),
            format!("s.{}_rejected", "a".repeat(54))
        );
        assert_eq!(
            TableName::parse("log").unwrap().ledger_table().quoted(),
            "\"log_batches\""
        );
    }

    #[test]
    fn a_sibling_of_a_multi_byte_name_is_cut_between_characters() {
        // Catalog names may hold any character; 'é' is two bytes, so every
        // cut point from byte 45 to 58 is tried on one side or the other.
        for len in 20..=32 {
            for prefix in ["", "a"] {
                let name = format!("{prefix}{}", "\u{e9}".repeat(len));
                let table = TableName::from_parts(None, name.clone());
                for suffix in ["_message_trgm", "_default", "_p20261203_14", "_batches"] {
                    let sibling = table.sibling(suffix);
                    assert!(sibling.name().len() <= 63, "{}", sibling.name());
                    assert!(sibling.name().ends_with(suffix));
                    let kept = &sibling.name()[..sibling.name().len() - suffix.len()];
                    assert!(
                        name.starts_with(kept),
                        "{kept:?} is not a prefix of {name:?}"
                    );
                    // At most the one byte of a split character is lost.
                    assert!(kept.len() + suffix.len() >= 62.min(name.len() + suffix.len()));
                }
            }
        }
    }
}
