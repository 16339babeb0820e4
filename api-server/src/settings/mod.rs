//! Global settings: storage with encryption at rest, the DB-over-env precedence, the objects
//! derived from them (`agent_settings`, `agent_env`, the readiness check) and a short-lived
//! cache so hot paths (worker auth, worker-context) do not query the table on every request.

pub mod check;
pub mod crypto;
pub mod key_bootstrap;
pub mod keys;

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Map, Value};

use crate::db::{Db, DbError};
pub use crypto::{KeyError, SecretBox};
use keys::{
    AGENT_ENV_KEYS, AGENT_SETTINGS_KEYS, ALLOWED_KEYS, GITHUB_TOKEN_ENV_FALLBACKS, is_allowed,
    is_sensitive,
};

/// The process environment the server consults for fallbacks, captured once at start-up (tests
/// pass their own).
pub type EnvVars = Arc<HashMap<String, String>>;

/// The 503 message of the original when a secret cannot be stored.
pub const ENCRYPTION_UNAVAILABLE: &str = "TERARCHITECT_SECRET_KEY must be a 64-character hex string in .env to store secrets. Generate one with: python3 -c \"import secrets; print(secrets.token_hex(32))\"";

/// Errors of a settings update.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    /// A sensitive key was sent but no usable `TERARCHITECT_SECRET_KEY` is configured.
    #[error("{ENCRYPTION_UNAVAILABLE}")]
    EncryptionUnavailable,
    /// A value had a type that cannot be stored.
    #[error("{0}")]
    InvalidValue(String),
    /// Storage failed.
    #[error(transparent)]
    Db(#[from] DbError),
}

/// The stored settings at one moment, decrypted.
#[derive(Debug, Default)]
pub struct Snapshot {
    /// Keys with a stored, non-empty value (sensitive ones whether or not they decrypt).
    stored: HashMap<String, ()>,
    /// Decrypted, non-empty values of allowed keys.
    values: HashMap<String, String>,
    /// Sensitive keys whose stored value does not decrypt with the current key.
    undecryptable: Vec<String>,
    /// Changes whenever the values change (for caches derived from settings).
    generation: u64,
}

/// Settings access for the server. Cheap to share behind an `Arc`.
pub struct Settings {
    db: Db,
    env: EnvVars,
    secret_box: Option<SecretBox>,
    ttl: Duration,
    cache: Mutex<Option<(Instant, Arc<Snapshot>)>>,
    reload: tokio::sync::Mutex<()>,
    generation: AtomicU64,
}

impl std::fmt::Debug for Settings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Settings")
            .field("encryption", &self.secret_box.is_some())
            .field("ttl", &self.ttl)
            .finish_non_exhaustive()
    }
}

impl Settings {
    /// Settings over `db`, falling back to `env`. `ttl` bounds how stale a cached read may be
    /// (writes through this process invalidate at once; other replicas see them within `ttl`).
    pub fn new(db: Db, env: EnvVars, ttl: Duration) -> Self {
        let secret_box =
            SecretBox::from_env_value(env.get("TERARCHITECT_SECRET_KEY").map(String::as_str)).ok();
        Self {
            db,
            env,
            secret_box,
            ttl,
            cache: Mutex::new(None),
            reload: tokio::sync::Mutex::new(()),
            generation: AtomicU64::new(0),
        }
    }

    /// Whether sensitive keys can be stored.
    pub fn encryption_available(&self) -> bool {
        self.secret_box.is_some()
    }

    /// The process environment used for fallbacks.
    pub fn env(&self) -> &EnvVars {
        &self.env
    }

    fn cached(&self) -> Option<Arc<Snapshot>> {
        let guard = self.cache.lock().expect("settings cache poisoned");
        guard
            .as_ref()
            .filter(|(at, _)| at.elapsed() < self.ttl)
            .map(|(_, snap)| snap.clone())
    }

    /// The current settings, from the cache when fresh.
    pub async fn snapshot(&self) -> Result<Arc<Snapshot>, DbError> {
        if let Some(snap) = self.cached() {
            return Ok(snap);
        }
        let _single_flight = self.reload.lock().await;
        if let Some(snap) = self.cached() {
            return Ok(snap);
        }
        let rows = self.db.list_settings().await?;
        let mut snap = Snapshot::default();
        for row in rows {
            if !is_allowed(&row.key) || row.value.is_empty() {
                continue;
            }
            snap.stored.insert(row.key.clone(), ());
            let value = if is_sensitive(&row.key) {
                match self.secret_box.as_ref().and_then(|b| b.decrypt(&row.value)) {
                    Some(v) => v,
                    None => {
                        snap.undecryptable.push(row.key.clone());
                        continue;
                    }
                }
            } else {
                row.value
            };
            if !value.is_empty() {
                snap.values.insert(row.key, value);
            }
        }
        if !snap.undecryptable.is_empty() {
            // Key names only: never the values.
            tracing::warn!(keys = ?snap.undecryptable, "stored secrets do not decrypt with TERARCHITECT_SECRET_KEY; treating them as unset");
        }
        let mut guard = self.cache.lock().expect("settings cache poisoned");
        snap.generation = match guard.as_ref() {
            Some((_, old)) if old.values == snap.values => old.generation,
            _ => self.generation.fetch_add(1, Ordering::AcqRel) + 1,
        };
        let snap = Arc::new(snap);
        *guard = Some((Instant::now(), snap.clone()));
        Ok(snap)
    }

    /// Drops the cached snapshot.
    pub fn invalidate(&self) {
        *self.cache.lock().expect("settings cache poisoned") = None;
    }

    /// A resolver over the current settings and the environment.
    pub async fn resolve(&self) -> Result<Resolved, DbError> {
        Ok(Resolved {
            snap: self.snapshot().await?,
            env: self.env.clone(),
        })
    }

    /// Applies a `PUT /api/settings` body: unknown keys are ignored, null or blank deletes,
    /// anything else is stored (encrypted for sensitive keys). Every value is validated before
    /// anything is written, and all changes commit together.
    pub async fn update(&self, body: &Map<String, Value>) -> Result<(), SettingsError> {
        let mut changes = Vec::new();
        for key in ALLOWED_KEYS {
            let Some(value) = body.get(key) else { continue };
            let text = match value {
                Value::Null => None,
                Value::String(s) => Some(s.clone()),
                Value::Bool(true) => Some("True".to_owned()),
                Value::Bool(false) => Some("False".to_owned()),
                Value::Number(n) => Some(n.to_string()),
                Value::Array(_) | Value::Object(_) => {
                    return Err(SettingsError::InvalidValue(format!(
                        "{key} must be a string, number, boolean or null"
                    )));
                }
            };
            let stored = match text.filter(|t| !t.trim().is_empty()) {
                None => None,
                Some(t) if is_sensitive(key) => {
                    let sealer = self
                        .secret_box
                        .as_ref()
                        .ok_or(SettingsError::EncryptionUnavailable)?;
                    Some(sealer.encrypt(&t))
                }
                Some(t) => Some(t),
            };
            changes.push((key.to_owned(), stored));
        }
        if !changes.is_empty() {
            self.db.write_settings(&changes).await?;
            self.invalidate();
        }
        Ok(())
    }
}

/// Settings resolved against the environment: the original's `get_setting_or_env`.
#[derive(Debug, Clone)]
pub struct Resolved {
    snap: Arc<Snapshot>,
    env: EnvVars,
}

impl Resolved {
    /// Identifies these settings' values: equal generations mean equal values.
    pub fn generation(&self) -> u64 {
        self.snap.generation
    }

    /// The decrypted DB value of an allowed key (the original's `get_value`).
    pub fn db_value(&self, key: &str) -> Option<&str> {
        self.snap.values.get(key).map(String::as_str)
    }

    /// A non-empty process environment value.
    pub fn env_value(&self, key: &str) -> Option<&str> {
        self.env
            .get(key)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    }

    /// DB value (non-empty, decryptable) over the environment.
    pub fn get(&self, key: &str) -> Option<&str> {
        if is_allowed(key)
            && let Some(v) = self.db_value(key)
        {
            return Some(v);
        }
        self.env_value(key)
    }

    /// The GitHub token for agents: the DB setting, else `GITHUB_TOKEN`, `GH_TOKEN`,
    /// `GITHUB_AGENT_TOKEN` from the environment.
    pub fn github_token(&self) -> Option<&str> {
        self.db_value("github_agent_token")
            .or_else(|| {
                GITHUB_TOKEN_ENV_FALLBACKS
                    .iter()
                    .find_map(|k| self.env_value(k))
            })
            .filter(|t| !t.trim().is_empty())
    }

    /// The worker API key, trimmed; None when unset (the worker API is then open unless the
    /// server was told to fail closed).
    pub fn worker_api_key(&self) -> Option<&str> {
        self.get("TERARCHITECT_WORKER_API_KEY")
            .map(str::trim)
            .filter(|k| !k.is_empty())
    }

    /// worker-context's `agent_settings`: every key, `""` when unset.
    pub fn agent_settings(&self) -> BTreeMap<String, String> {
        AGENT_SETTINGS_KEYS
            .iter()
            .map(|k| ((*k).to_owned(), self.get(k).unwrap_or("").to_owned()))
            .collect()
    }

    /// A claim's `agent_env` (reference §3.4).
    pub fn agent_env(&self) -> BTreeMap<String, String> {
        let mut env = BTreeMap::new();
        if let Some(token) = self.github_token() {
            env.insert("GH_TOKEN".to_owned(), token.trim().to_owned());
            env.insert("GITHUB_TOKEN".to_owned(), token.trim().to_owned());
        }
        for key in AGENT_ENV_KEYS {
            if let Some(v) = self.get(key).map(str::trim).filter(|v| !v.is_empty()) {
                env.insert(key.to_owned(), v.to_owned());
            }
        }
        if let Some(v) = self
            .get("openai_api_key")
            .map(str::trim)
            .filter(|v| !v.is_empty())
        {
            env.insert("OPENAI_API_KEY".to_owned(), v.to_owned());
        }
        env
    }

    /// `GET /api/settings`: sensitive keys as "is set", plain keys as their stored value or null.
    pub fn public_view(&self) -> Map<String, Value> {
        ALLOWED_KEYS
            .iter()
            .map(|k| {
                let v = if is_sensitive(k) {
                    Value::Bool(self.snap.stored.contains_key(*k))
                } else {
                    self.db_value(k)
                        .map_or(Value::Null, |s| Value::String(s.to_owned()))
                };
                ((*k).to_owned(), v)
            })
            .collect()
    }
}

#[cfg(test)]
pub(crate) mod test_support {
    use super::*;

    /// A resolver over fixed DB values and env, for unit tests of derived objects.
    pub fn resolved(db: &[(&str, &str)], env: &[(&str, &str)]) -> Resolved {
        let mut snap = Snapshot::default();
        for (k, v) in db {
            snap.stored.insert((*k).to_owned(), ());
            snap.values.insert((*k).to_owned(), (*v).to_owned());
        }
        Resolved {
            snap: Arc::new(snap),
            env: Arc::new(
                env.iter()
                    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                    .collect(),
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::test_support::resolved;

    #[test]
    fn db_wins_over_env_and_env_fills_gaps() {
        let r = resolved(
            &[("AGENT_MODEL", "db-model")],
            &[("AGENT_MODEL", "env-model"), ("WORKER_MODEL", "w")],
        );
        assert_eq!(r.get("AGENT_MODEL"), Some("db-model"));
        assert_eq!(r.get("WORKER_MODEL"), Some("w"));
        assert_eq!(r.get("AGENT_LLM_URL"), None);
        // Keys outside ALLOWED_KEYS come from env only.
        assert_eq!(r.get("NOT_A_SETTING"), None);
    }

    #[test]
    fn agent_env_follows_the_original() {
        let r = resolved(
            &[
                ("WORKER_MODE", "opencode"),
                ("openai_api_key", "sk-1"),
                ("MAX_CONCURRENT_AGENTS", "3"),
            ],
            &[
                ("GH_TOKEN", "ghp_env"),
                ("GIT_USER_NAME", "  Bot  "),
                ("MEMORY_LLM_MODEL", "m"),
            ],
        );
        let env = r.agent_env();
        assert_eq!(env["GITHUB_TOKEN"], "ghp_env");
        assert_eq!(env["GH_TOKEN"], "ghp_env");
        assert_eq!(env["WORKER_MODE"], "opencode");
        assert_eq!(env["GIT_USER_NAME"], "Bot");
        assert_eq!(env["OPENAI_API_KEY"], "sk-1");
        assert!(!env.contains_key("MAX_CONCURRENT_AGENTS"));
        assert!(!env.contains_key("MEMORY_LLM_MODEL"));
        assert!(!env.contains_key("openai_api_key"));
    }

    #[test]
    fn agent_settings_has_every_key() {
        let r = resolved(
            &[
                ("github_agent_token", "ghp_db"),
                ("WORKER_MODE", "opencode"),
            ],
            &[],
        );
        let s = r.agent_settings();
        assert_eq!(s.len(), 20);
        assert_eq!(s["github_agent_token"], "ghp_db");
        assert_eq!(s["AGENT_MODEL"], "");
        assert_eq!(
            s["WORKER_MODE"], "opencode",
            "a saved mode reaches the agent"
        );
    }

    #[test]
    fn worker_key_is_trimmed() {
        assert_eq!(
            resolved(&[], &[("TERARCHITECT_WORKER_API_KEY", " k ")]).worker_api_key(),
            Some("k")
        );
        assert_eq!(
            resolved(&[], &[("TERARCHITECT_WORKER_API_KEY", "  ")]).worker_api_key(),
            None
        );
    }
}
