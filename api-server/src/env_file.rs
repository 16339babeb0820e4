//! The `.env` file of the working directory, read at start-up as the original app read its
//! `.env` (python-dotenv): each `KEY=value` it holds is used unless the real environment sets
//! that variable. Parsing is `dotenvy`'s (quotes, `export`, comments, `${VAR}` substitution).

use std::collections::HashMap;
use std::io;
use std::path::{Path, PathBuf};

/// The file read from the working directory.
pub const FILE_NAME: &str = ".env";

/// Why the `.env` file could not be used. Never shows a value from the file.
#[derive(Debug, thiserror::Error)]
pub enum EnvFileError {
    /// The file exists but cannot be read.
    #[error("cannot read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// A line is not `KEY=value` (or a comment, or blank).
    #[error("{}: {}cannot parse it (expected KEY=value)", path.display(), at_line(*line))]
    Parse {
        path: PathBuf,
        /// The first line that does not parse (0: unknown).
        line: usize,
    },
}

fn at_line(line: usize) -> String {
    if line == 0 {
        String::new()
    } else {
        format!("line {line}: ")
    }
}

/// What a `.env` file contributes to the environment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EnvFile {
    /// The file read.
    pub path: PathBuf,
    /// Variables the file sets and the real environment does not, in file order (for a name
    /// given twice, the last value, as python-dotenv).
    pub applied: Vec<(String, String)>,
    /// Names the file sets but the real environment already sets (the environment wins).
    pub overridden: Vec<String>,
}

impl EnvFile {
    /// The names of the applied variables.
    pub fn applied_names(&self) -> Vec<&str> {
        self.applied.iter().map(|(k, _)| k.as_str()).collect()
    }

    /// `env` with the applied variables added (names `env` already has keep their value).
    pub fn merged_into(&self, env: &HashMap<String, String>) -> HashMap<String, String> {
        let mut merged = env.clone();
        for (k, v) in &self.applied {
            merged.entry(k.clone()).or_insert_with(|| v.clone());
        }
        merged
    }

    /// Sets the applied variables in the process environment.
    ///
    /// # Safety
    /// No other thread may read or write the environment meanwhile: call it at the start of
    /// `main`, before any runtime or thread starts.
    pub unsafe fn apply_to_process(&self) {
        for (k, v) in &self.applied {
            // SAFETY: guaranteed by the caller (single-threaded).
            unsafe { std::env::set_var(k, v) };
        }
    }

    /// Logs which variables came from the file (names only, never values).
    pub fn log(&self) {
        tracing::info!(
            path = %self.path.display(),
            keys = ?self.applied_names(),
            overridden_by_environment = ?self.overridden,
            "loaded variables from the .env file"
        );
    }
}

/// Reads the `.env` file at `path`; `Ok(None)` when there is none. `is_set` says whether the
/// real environment sets a name (those keep their value and are listed as overridden).
pub fn read(path: &Path, is_set: impl Fn(&str) -> bool) -> Result<Option<EnvFile>, EnvFileError> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(EnvFileError::Read {
                path: path.to_owned(),
                source,
            });
        }
    };
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(&bytes);
    let text = String::from_utf8_lossy(bytes);
    let pairs = parse(&text).map_err(|line| EnvFileError::Parse {
        path: path.to_owned(),
        line,
    })?;
    let mut file = EnvFile {
        path: path.to_owned(),
        ..EnvFile::default()
    };
    for (key, value) in pairs {
        file.applied.retain(|(k, _)| *k != key);
        file.overridden.retain(|k| *k != key);
        if is_set(&key) {
            file.overridden.push(key);
        } else {
            file.applied.push((key, value));
        }
    }
    Ok(Some(file))
}

/// Parses the file's text. Lines python-dotenv accepts but dotenvy does not (an unquoted value
/// with spaces: `GIT_USER_NAME=Terarchitect Bot`) are read as python-dotenv reads them. On
/// failure, the number of the first line that does not parse (0 when no single line fails).
fn parse(text: &str) -> Result<Vec<(String, String)>, usize> {
    let mut text = text.to_owned();
    loop {
        if let Ok(pairs) = collect(&text) {
            return Ok(pairs);
        }
        let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
        let bad = lines
            .iter()
            .position(|l| collect(l).is_err())
            .ok_or(0usize)?;
        lines[bad] = quote_unquoted_value(&lines[bad]).ok_or(bad + 1)?;
        text = lines.join("\n");
    }
}

fn collect(text: &str) -> Result<Vec<(String, String)>, dotenvy::Error> {
    dotenvy::from_read_iter(text.as_bytes()).collect()
}

/// `[export ]KEY=unquoted value` as python-dotenv reads it (an inline ` #` comment dropped,
/// surrounding blanks trimmed), rewritten as a double-quoted dotenvy line; None for anything
/// else.
fn quote_unquoted_value(line: &str) -> Option<String> {
    let (key, value) = line.split_once('=')?;
    let name = key
        .trim()
        .strip_prefix("export ")
        .unwrap_or(key.trim())
        .trim();
    let valid_name = !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    let value = value.trim_start();
    if !valid_name || value.starts_with(['"', '\'']) {
        return None;
    }
    let value = match value.find([' ', '\t']).and_then(|i| {
        let rest = &value[i..];
        rest.find(" #").or_else(|| rest.find("\t#")).map(|j| i + j)
    }) {
        Some(comment) => &value[..comment],
        None => value,
    };
    let escaped = value.trim().replace('\\', "\\\\").replace('"', "\\\"");
    Some(format!("{name}=\"{escaped}\""))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(content: &str) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FILE_NAME);
        std::fs::write(&path, content).unwrap();
        (dir, path)
    }

    #[test]
    fn a_missing_file_is_not_an_error() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(read(&dir.path().join(FILE_NAME), |_| false).unwrap(), None);
    }

    #[test]
    fn quotes_comments_export_and_the_last_value_win() {
        let (_dir, path) =
            write("\u{feff}# comment\nA=1\nexport B=\"two words\"\n\nC='x'\nA=3 # trailing\n");
        let f = read(&path, |_| false).unwrap().unwrap();
        assert_eq!(
            f.applied,
            vec![
                ("B".to_owned(), "two words".to_owned()),
                ("C".to_owned(), "x".to_owned()),
                ("A".to_owned(), "3".to_owned()),
            ]
        );
    }

    #[test]
    fn unquoted_values_with_spaces_read_as_python_dotenv() {
        let (_dir, path) =
            write("GIT_USER_NAME=Terarchitect Bot\nexport NOTE = a \"b\" c\\d # comment\nX=1\n");
        let f = read(&path, |_| false).unwrap().unwrap();
        assert_eq!(
            f.applied,
            vec![
                ("GIT_USER_NAME".to_owned(), "Terarchitect Bot".to_owned()),
                ("NOTE".to_owned(), "a \"b\" c\\d".to_owned()),
                ("X".to_owned(), "1".to_owned()),
            ]
        );
    }

    #[test]
    fn parse_errors_name_the_line_but_not_its_content() {
        let (_dir, path) = write("A=1\n# ok\nTOKEN secret-value\n");
        let err = read(&path, |_| false).unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.ends_with(".env: line 3: cannot parse it (expected KEY=value)"),
            "{msg}"
        );
        assert!(!msg.contains("secret-value"), "{msg}");
    }
}
