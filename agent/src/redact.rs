//! Removes secret values (tokens, API keys, passwords) from text before it reaches a model, the
//! api-server's logs, a trace file, a pull request or the agent's own log output.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::Value;

use crate::config::Env;

/// What a secret is replaced with.
pub const PLACEHOLDER: &str = "[REDACTED]";

/// Values shorter than this are not treated as secrets (they would match ordinary text).
pub const MIN_SECRET_LEN: usize = 6;

/// Whether a variable or setting name holds a secret.
pub fn is_secret_key(key: &str) -> bool {
    let k = key.to_uppercase();
    k.contains("TOKEN")
        || k.contains("API_KEY")
        || k.contains("PASSWORD")
        || k.contains("SECRET")
        || k.ends_with("_KEY")
}

/// A set of secret values to scrub. Cheap to clone.
#[derive(Clone, Default)]
pub struct Redactor {
    secrets: Arc<Vec<String>>,
}

impl std::fmt::Debug for Redactor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Redactor({} secrets)", self.secrets.len())
    }
}

impl Redactor {
    /// A redactor for the given values (short and blank values are ignored).
    pub fn new(values: impl IntoIterator<Item = String>) -> Self {
        let mut secrets: Vec<String> = values
            .into_iter()
            .map(|v| v.trim().to_owned())
            .filter(|v| v.chars().count() >= MIN_SECRET_LEN)
            .collect();
        // Longest first, so a secret containing another is replaced whole.
        secrets.sort_by(|a, b| b.len().cmp(&a.len()).then_with(|| a.cmp(b)));
        secrets.dedup();
        Self {
            secrets: Arc::new(secrets),
        }
    }

    /// Every secret-named variable of the environment.
    pub fn from_env(env: &Env) -> Self {
        Self::new(
            env.iter()
                .filter(|(k, _)| is_secret_key(k))
                .map(|(_, v)| v.to_owned()),
        )
    }

    /// This redactor plus the secret-named entries of worker-context `agent_settings`.
    pub fn with_settings(&self, agent_settings: &BTreeMap<String, String>) -> Self {
        Self::new(
            self.secrets.iter().cloned().chain(
                agent_settings
                    .iter()
                    .filter(|(k, _)| is_secret_key(k))
                    .map(|(_, v)| v.clone()),
            ),
        )
    }

    /// This redactor plus one more value.
    pub fn with_value(&self, value: &str) -> Self {
        Self::new(self.secrets.iter().cloned().chain([value.to_owned()]))
    }

    /// Number of secrets known.
    pub fn len(&self) -> usize {
        self.secrets.len()
    }

    /// Whether no secret is known.
    pub fn is_empty(&self) -> bool {
        self.secrets.is_empty()
    }

    /// `text` with every secret replaced by [`PLACEHOLDER`].
    pub fn redact(&self, text: &str) -> String {
        let mut out = text.to_owned();
        for s in self.secrets.iter() {
            if out.contains(s.as_str()) {
                out = out.replace(s.as_str(), PLACEHOLDER);
            }
        }
        out
    }

    /// A JSON value with every string (keys included) redacted.
    pub fn redact_json(&self, value: &Value) -> Value {
        match value {
            Value::String(s) => Value::String(self.redact(s)),
            Value::Array(items) => {
                Value::Array(items.iter().map(|v| self.redact_json(v)).collect())
            }
            Value::Object(map) => Value::Object(
                map.iter()
                    .map(|(k, v)| (self.redact(k), self.redact_json(v)))
                    .collect(),
            ),
            other => other.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn redacts_env_and_settings_secrets() {
        let env = Env::from_pairs([
            ("GITHUB_TOKEN", "ghp_abcdef123"),
            ("AGENT_MODEL", "gpt-secretive"),
            ("WORKER_API_KEY", "dummy"),
        ]);
        let settings: BTreeMap<String, String> = [
            ("openai_api_key".to_owned(), "sk-live-999999".to_owned()),
            (
                "github_agent_token".to_owned(),
                "ghp_abcdef123456".to_owned(),
            ),
        ]
        .into();
        let r = Redactor::from_env(&env).with_settings(&settings);
        assert_eq!(r.len(), 3);
        let text =
            "token ghp_abcdef123456 and ghp_abcdef123 key sk-live-999999 model gpt-secretive dummy";
        assert_eq!(
            r.redact(text),
            "token [REDACTED] and [REDACTED] key [REDACTED] model gpt-secretive dummy"
        );
        let v = r.redact_json(&json!({"a": ["x sk-live-999999"], "n": 1}));
        assert_eq!(v, json!({"a": ["x [REDACTED]"], "n": 1}));
        assert!(is_secret_key("TERARCHITECT_WORKER_API_KEY") && is_secret_key("gh_token"));
        assert!(!is_secret_key("AGENT_MODEL"));
    }
}
