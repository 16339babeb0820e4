//! `GET /api/settings/check`: which settings an agent run still needs (reference §2.8).

use serde::Serialize;

use super::Resolved;

/// One missing setting or warning.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct CheckItem {
    /// The setting key.
    pub key: String,
    /// A human-readable name.
    pub label: String,
    /// Why it is needed.
    pub reason: String,
}

/// The check's answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct SettingsCheck {
    /// True exactly when nothing required is missing.
    pub ready: bool,
    /// Required settings that are not set.
    pub missing_required: Vec<CheckItem>,
    /// Advisory findings; they do not affect `ready`.
    pub warnings: Vec<CheckItem>,
}

fn item(key: &str, label: &str, reason: &str) -> CheckItem {
    CheckItem {
        key: key.to_owned(),
        label: label.to_owned(),
        reason: reason.to_owned(),
    }
}

impl Resolved {
    /// Runs the readiness rules. "DB" rules look only at stored settings; the others accept
    /// the environment as a fallback.
    pub fn check(&self) -> SettingsCheck {
        let db = |k: &str| self.db_value(k).map(str::trim).filter(|v| !v.is_empty());
        let any = |k: &str| self.get(k).map(str::trim).filter(|v| !v.is_empty());
        let mut missing = Vec::new();
        let mut warnings = Vec::new();

        if db("github_agent_token").is_none() {
            missing.push(item(
                "github_agent_token",
                "GitHub agent token",
                "The agent pushes branches and opens pull requests with it.",
            ));
        }
        if any("GIT_USER_NAME").is_none() {
            missing.push(item(
                "GIT_USER_NAME",
                "Git user name",
                "Author name of the agent's commits.",
            ));
        }
        if any("GIT_USER_EMAIL").is_none() {
            missing.push(item(
                "GIT_USER_EMAIL",
                "Git user email",
                "Author email of the agent's commits.",
            ));
        }

        let provider = any("AGENT_PROVIDER").unwrap_or("openai").to_lowercase();
        if provider != "openai" && any("AGENT_LLM_URL").is_none() {
            missing.push(item(
                "AGENT_LLM_URL",
                "Director LLM URL",
                "Required for any provider other than openai.",
            ));
        }
        if any("AGENT_MODEL").is_none() {
            missing.push(item(
                "AGENT_MODEL",
                "Director model",
                "The model the Director uses.",
            ));
        }
        if db("AGENT_API_KEY").is_none() {
            missing.push(item(
                "AGENT_API_KEY",
                "Director API key",
                "Key for the Director LLM (\"dummy\" is accepted).",
            ));
        }

        let worker_mode = any("WORKER_MODE").unwrap_or("claude-code").to_lowercase();
        if worker_mode == "claude-code" {
            if db("WORKER_API_KEY").is_none_or(|k| k == "dummy") {
                missing.push(item(
                    "WORKER_API_KEY",
                    "Worker API key",
                    "Claude Code needs a real Anthropic key.",
                ));
            }
        } else {
            if any("WORKER_LLM_URL").is_none() {
                missing.push(item(
                    "WORKER_LLM_URL",
                    "Worker LLM URL",
                    "OpenCode's model endpoint.",
                ));
            }
            if any("WORKER_MODEL").is_none() {
                missing.push(item("WORKER_MODEL", "Worker model", "OpenCode's model id."));
            }
            if db("WORKER_API_KEY").is_none() {
                missing.push(item(
                    "WORKER_API_KEY",
                    "Worker API key",
                    "Key for OpenCode's model endpoint (\"dummy\" is accepted).",
                ));
            }
        }

        if any("MEMORY_EMBEDDING_MODEL").is_none() {
            missing.push(item(
                "MEMORY_EMBEDDING_MODEL",
                "Memory embedding model",
                "Model used to embed memory passages.",
            ));
        }
        let embedding_provider = any("EMBEDDING_PROVIDER").unwrap_or("openai").to_lowercase();
        if embedding_provider == "openai" {
            if db("openai_api_key").is_none() {
                missing.push(item(
                    "openai_api_key",
                    "OpenAI API key",
                    "The openai embedding provider needs it.",
                ));
            }
        } else {
            if any("EMBEDDING_SERVICE_URL").is_none() {
                missing.push(item(
                    "EMBEDDING_SERVICE_URL",
                    "Embedding service URL",
                    "Required for a custom embedding provider.",
                ));
            }
            if db("EMBEDDING_API_KEY").is_none() && db("openai_api_key").is_none() {
                missing.push(item(
                    "EMBEDDING_API_KEY",
                    "Embedding API key",
                    "Required unless the OpenAI API key is set.",
                ));
            }
        }

        if any("MEMORY_LLM_BASE_URL").is_some()
            && db("MEMORY_LLM_API_KEY").is_none()
            && db("AGENT_API_KEY").is_none()
            && db("openai_api_key").is_none()
        {
            warnings.push(item(
                "MEMORY_LLM_API_KEY",
                "Memory LLM API key",
                "MEMORY_LLM_BASE_URL is set but no key is stored for it.",
            ));
        }

        SettingsCheck {
            ready: missing.is_empty(),
            missing_required: missing,
            warnings,
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::settings::test_support::resolved;

    fn missing_keys(db: &[(&str, &str)], env: &[(&str, &str)]) -> Vec<String> {
        resolved(db, env)
            .check()
            .missing_required
            .into_iter()
            .map(|i| i.key)
            .collect()
    }

    const COMPLETE_CLAUDE: [(&str, &str); 6] = [
        ("github_agent_token", "t"),
        ("AGENT_MODEL", "m"),
        ("AGENT_API_KEY", "dummy"),
        ("WORKER_API_KEY", "sk-ant"),
        ("MEMORY_EMBEDDING_MODEL", "text-embedding-3-small"),
        ("openai_api_key", "sk"),
    ];
    const GIT_ENV: [(&str, &str); 2] = [("GIT_USER_NAME", "n"), ("GIT_USER_EMAIL", "e")];

    #[test]
    fn complete_claude_code_setup_is_ready() {
        let c = resolved(&COMPLETE_CLAUDE, &GIT_ENV).check();
        assert!(c.ready, "{:?}", c.missing_required);
    }

    #[test]
    fn default_mode_is_claude_code_and_rejects_dummy_worker_key() {
        let mut db = COMPLETE_CLAUDE.to_vec();
        db[3] = ("WORKER_API_KEY", "dummy");
        assert_eq!(missing_keys(&db, &GIT_ENV), vec!["WORKER_API_KEY"]);
    }

    #[test]
    fn opencode_accepts_dummy_but_needs_url_and_model() {
        let mut db = COMPLETE_CLAUDE.to_vec();
        db[3] = ("WORKER_API_KEY", "dummy");
        db.push(("WORKER_MODE", "opencode"));
        assert_eq!(
            missing_keys(&db, &GIT_ENV),
            vec!["WORKER_LLM_URL", "WORKER_MODEL"]
        );
        db.push(("WORKER_LLM_URL", "http://llm"));
        db.push(("WORKER_MODEL", "qwen"));
        assert!(missing_keys(&db, &GIT_ENV).is_empty());
    }

    #[test]
    fn db_only_keys_ignore_env() {
        let env = [
            ("GIT_USER_NAME", "n"),
            ("GIT_USER_EMAIL", "e"),
            ("github_agent_token", "t"),
            ("AGENT_API_KEY", "k"),
        ];
        let keys = missing_keys(&[("AGENT_MODEL", "m")], &env);
        assert!(keys.contains(&"github_agent_token".to_owned()));
        assert!(keys.contains(&"AGENT_API_KEY".to_owned()));
        assert!(!keys.contains(&"GIT_USER_NAME".to_owned()));
    }

    #[test]
    fn custom_embedding_provider_accepts_openai_key_instead_of_embedding_key() {
        let mut db = COMPLETE_CLAUDE.to_vec();
        db.push(("EMBEDDING_PROVIDER", "custom"));
        assert_eq!(missing_keys(&db, &GIT_ENV), vec!["EMBEDDING_SERVICE_URL"]);
        db.retain(|(k, _)| *k != "openai_api_key");
        assert_eq!(
            missing_keys(&db, &GIT_ENV),
            vec!["EMBEDDING_SERVICE_URL", "EMBEDDING_API_KEY"]
        );
    }

    #[test]
    fn non_openai_director_needs_url_and_warnings_do_not_block() {
        let mut db = COMPLETE_CLAUDE.to_vec();
        db.push(("AGENT_PROVIDER", "vllm"));
        assert_eq!(missing_keys(&db, &GIT_ENV), vec!["AGENT_LLM_URL"]);
        let db2: Vec<_> = COMPLETE_CLAUDE
            .iter()
            .copied()
            .filter(|(k, _)| *k != "AGENT_API_KEY" && *k != "openai_api_key")
            .chain([
                ("MEMORY_LLM_BASE_URL", "http://m"),
                ("EMBEDDING_PROVIDER", "x"),
                ("EMBEDDING_SERVICE_URL", "u"),
                ("EMBEDDING_API_KEY", "k"),
            ])
            .collect();
        let c = resolved(&db2, &GIT_ENV).check();
        assert_eq!(c.warnings.len(), 1);
        assert_eq!(
            c.missing_required
                .iter()
                .map(|i| i.key.as_str())
                .collect::<Vec<_>>(),
            vec!["AGENT_API_KEY"]
        );
    }
}
