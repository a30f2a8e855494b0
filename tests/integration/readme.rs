//! The README's Layout table against the tree: every file it names exists,
//! and every source file is named (in its own row, or in the row of its
//! folder), so that the table cannot go stale unnoticed.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use libtest_mimic::{Failed, Trial};

use crate::common::check;

pub fn trials() -> Vec<Trial> {
    vec![Trial::test(
        "readme::layout_names_every_source_file",
        layout_names_every_source_file,
    )]
}

fn layout_names_every_source_file() -> Result<(), Failed> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let readme = std::fs::read_to_string(root.join("README.md"))?;
    let rows = layout_rows(&readme);
    check(rows.len() > 10, || {
        format!("no Layout table found in README.md ({} rows)", rows.len())
    })?;
    let mut named = BTreeSet::new();
    let mut missing = Vec::new();
    for (paths, what) in &rows {
        for path in paths {
            if !root.join(path).exists() {
                missing.push(path.clone());
            }
            named.insert(PathBuf::from(path));
            // A folder's row names its files in the description.
            if path.ends_with('/') {
                for file in backticked(what).filter(|f| is_source(f)) {
                    let file = Path::new(path).join(file);
                    if !root.join(&file).exists() {
                        missing.push(file.display().to_string());
                    }
                    named.insert(file);
                }
            }
        }
    }
    let mut unnamed = Vec::new();
    for dir in ["src", "sql"] {
        for file in files_under(&root.join(dir))? {
            let relative = file.strip_prefix(root)?.to_owned();
            if is_source(&relative.to_string_lossy()) && !named.contains(&relative) {
                unnamed.push(relative.display().to_string());
            }
        }
    }
    check(missing.is_empty(), || {
        format!("README.md's Layout names files that do not exist: {missing:?}")
    })?;
    check(unnamed.is_empty(), || {
        format!("README.md's Layout does not name these files: {unnamed:?}")
    })
}

/// The rows of the table under `## Layout`: the paths of the first column,
/// and the second column's text.
fn layout_rows(readme: &str) -> Vec<(Vec<String>, String)> {
    let Some(start) = readme.find("\n## Layout\n") else {
        return Vec::new();
    };
    let section = &readme[start + 1..];
    let end = section[3..].find("\n## ").map_or(section.len(), |e| e + 3);
    section[..end]
        .lines()
        .filter(|line| line.starts_with("| `"))
        .filter_map(|line| {
            let mut cells = line.trim_matches('|').splitn(2, '|');
            let paths = backticked(cells.next()?).map(str::to_owned).collect();
            Some((paths, cells.next()?.to_owned()))
        })
        .collect()
}

/// The `code spans` of `text`.
fn backticked(text: &str) -> impl Iterator<Item = &str> {
    text.split('`').skip(1).step_by(2)
}

fn is_source(name: &str) -> bool {
    name.ends_with(".rs") || name.ends_with(".sql")
}

fn files_under(dir: &Path) -> Result<Vec<PathBuf>, Failed> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            files.extend(files_under(&path)?);
        } else {
            files.push(path);
        }
    }
    Ok(files)
}
