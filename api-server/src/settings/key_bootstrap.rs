//! The secret key at start-up. A configured `TERARCHITECT_SECRET_KEY` must be well formed (a
//! malformed one stops the server instead of failing the first `PUT /api/settings`). On the
//! embedded default (an SQLite file) without one, a key is generated once, kept beside the
//! database file (`<db>.secret-key`, mode 0600) and used; PostgreSQL never gets a generated key
//! (several replicas must share one, so it has to be configured).

use std::collections::HashMap;
use std::io::{self, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;

use rand::TryRngCore;
use sqlx::sqlite::SqliteConnectOptions;

use super::EnvVars;
use super::crypto::{KeyError, SecretBox};
use crate::config::Config;

/// The environment variable holding the key.
pub const SECRET_KEY_VAR: &str = "TERARCHITECT_SECRET_KEY";
/// Appended to the database file's name to name the generated key's file.
pub const KEY_FILE_SUFFIX: &str = ".secret-key";

/// Why the server cannot start with the key it was given or found.
#[derive(Debug, thiserror::Error)]
pub enum KeyBootstrapError {
    /// `TERARCHITECT_SECRET_KEY` is set but not 64 hex characters.
    #[error(
        "TERARCHITECT_SECRET_KEY is set but is not a 64-character hex string (32 bytes; generate one with `openssl rand -hex 32`): fix it, or unset it to use the key file beside an SQLite database"
    )]
    Malformed,
    /// The key file exists but does not hold a key.
    #[error(
        "{} does not hold a 64-character hex key: restore it from a backup, or set TERARCHITECT_SECRET_KEY (secrets stored with another key cannot be read)",
        path.display()
    )]
    BadKeyFile { path: PathBuf },
    /// The key file cannot be read or written.
    #[error("cannot use the secret key file {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// Where the key in use comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySource {
    /// `TERARCHITECT_SECRET_KEY` (the environment or the `.env` file).
    Configured,
    /// The key file beside the SQLite database; `created` on the first start.
    KeyFile { path: PathBuf, created: bool },
    /// No key: PostgreSQL (or an in-memory SQLite) without `TERARCHITECT_SECRET_KEY`; secrets
    /// cannot be stored.
    None,
}

/// The SQLite file the configuration uses; None for PostgreSQL and in-memory SQLite.
pub fn sqlite_file(config: &Config) -> Option<PathBuf> {
    let Some(url) = config.effective_database_url() else {
        return Some(config.sqlite_path.clone());
    };
    if !url.starts_with("sqlite:") || url.contains(":memory:") || url.contains("mode=memory") {
        return None;
    }
    let options = SqliteConnectOptions::from_str(&url).ok()?;
    Some(options.get_filename().to_owned()).filter(|p| !p.as_os_str().is_empty())
}

/// The key file of the SQLite database at `db`: `<db>.secret-key`.
pub fn key_file_path(db: &Path) -> PathBuf {
    let mut name = db.as_os_str().to_owned();
    name.push(KEY_FILE_SUFFIX);
    PathBuf::from(name)
}

/// Checks a configured key and, on an SQLite file without one, loads or creates the key file.
/// Returns the environment the server should use (with the key file's key added) and where the
/// key comes from.
pub fn prepare(config: &Config, env: EnvVars) -> Result<(EnvVars, KeySource), KeyBootstrapError> {
    match SecretBox::from_env_value(env.get(SECRET_KEY_VAR).map(String::as_str)) {
        Ok(_) => return Ok((env, KeySource::Configured)),
        Err(KeyError::Malformed) => return Err(KeyBootstrapError::Malformed),
        Err(KeyError::Missing) => {}
    }
    let Some(db) = sqlite_file(config) else {
        return Ok((env, KeySource::None));
    };
    let path = key_file_path(&db);
    let (key, created) = load_or_create(&path)?;
    let mut with_key: HashMap<String, String> = (*env).clone();
    with_key.insert(SECRET_KEY_VAR.to_owned(), key);
    Ok((Arc::new(with_key), KeySource::KeyFile { path, created }))
}

/// Logs where the key comes from when it is the generated one (never the key).
pub fn log_source(source: &KeySource) {
    // Configured: nothing to say. None: start_with_db warns that secrets cannot be stored.
    if let KeySource::KeyFile { path, created } = source {
        tracing::info!(
            path = %path.display(),
            created,
            "TERARCHITECT_SECRET_KEY is not set: secrets are encrypted with the generated key in this file \
             (owner-only); keep it with the database's backups. To manage the key yourself, set \
             TERARCHITECT_SECRET_KEY to the file's content (e.g. in .env) and delete the file"
        );
    }
}

/// Reads the key file, or creates it with a fresh key when there is none.
fn load_or_create(path: &Path) -> Result<(String, bool), KeyBootstrapError> {
    let io_err = |source| KeyBootstrapError::Io {
        path: path.to_owned(),
        source,
    };
    match std::fs::read_to_string(path) {
        Ok(text) => return validate(path, &text).map(|k| (k, false)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_err(e)),
    }
    let key = generate();
    match write_new(path, &key) {
        Ok(()) => Ok((key, true)),
        // Another process created it first: use theirs.
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            let text = std::fs::read_to_string(path).map_err(io_err)?;
            validate(path, &text).map(|k| (k, false))
        }
        Err(e) => Err(io_err(e)),
    }
}

fn validate(path: &Path, text: &str) -> Result<String, KeyBootstrapError> {
    let key = text.trim();
    if SecretBox::from_env_value(Some(key)).is_err() || key.len() != 64 {
        return Err(KeyBootstrapError::BadKeyFile {
            path: path.to_owned(),
        });
    }
    if let Ok(meta) = std::fs::metadata(path)
        && meta.permissions().mode() & 0o077 != 0
    {
        tracing::warn!(path = %path.display(), "the secret key file is readable by other users: chmod 600 it");
    }
    Ok(key.to_owned())
}

/// 32 bytes from the operating system's CSPRNG, as 64 hex characters.
fn generate() -> String {
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng
        .try_fill_bytes(&mut bytes)
        .expect("the operating system's random number generator is available");
    hex::encode(bytes)
}

/// Writes `key` to a new owner-only file at `path` without ever exposing a partial or
/// wider-permission file: a 0600 temporary file in the same directory is written, synced and
/// then linked into place (failing with `AlreadyExists` if `path` appeared meanwhile).
fn write_new(path: &Path, key: &str) -> io::Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let mut tmp = tempfile::Builder::new()
        .prefix(".secret-key-")
        .permissions(std::fs::Permissions::from_mode(0o600))
        .tempfile_in(dir)?;
    tmp.write_all(format!("{key}\n").as_bytes())?;
    tmp.as_file().sync_all()?;
    tmp.persist_noclobber(path).map_err(|e| e.error)?;
    // Make the new directory entry durable too.
    std::fs::File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sqlite_config(path: &Path) -> Config {
        Config::for_tests(path.to_owned())
    }

    #[test]
    fn the_key_file_sits_beside_the_database() {
        assert_eq!(
            key_file_path(Path::new("data/terarchitect.db")),
            PathBuf::from("data/terarchitect.db.secret-key")
        );
    }

    #[test]
    fn sqlite_urls_name_their_file_and_postgres_and_memory_none() {
        let mut cfg = sqlite_config(Path::new("default.db"));
        assert_eq!(sqlite_file(&cfg), Some(PathBuf::from("default.db")));
        cfg.database_url = Some("sqlite:dir/other.db".into());
        assert_eq!(sqlite_file(&cfg), Some(PathBuf::from("dir/other.db")));
        cfg.database_url = Some("sqlite::memory:".into());
        assert_eq!(sqlite_file(&cfg), None);
        cfg.database_url = Some("postgres://u@h/db".into());
        assert_eq!(sqlite_file(&cfg), None);
        cfg.sqlalchemy_database_uri = Some("sqlite:x.db".into());
        assert_eq!(sqlite_file(&cfg), Some(PathBuf::from("x.db")));
    }

    #[test]
    fn generated_keys_are_random_hex() {
        let (a, b) = (generate(), generate());
        assert_eq!(a.len(), 64);
        assert!(a.bytes().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, b);
    }

    #[test]
    fn an_existing_key_file_is_kept_and_a_broken_one_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k");
        let (key, created) = load_or_create(&path).unwrap();
        assert!(created);
        assert_eq!(load_or_create(&path).unwrap(), (key, false));
        std::fs::write(&path, "short").unwrap();
        assert!(matches!(
            load_or_create(&path),
            Err(KeyBootstrapError::BadKeyFile { .. })
        ));
    }
}
