//! The setting keys and the sets they belong to (behaviour reference §3.1, §3.4, §2.6).

/// Every key `PUT /api/settings` accepts and `GET /api/settings` reports.
pub const ALLOWED_KEYS: [&str; 28] = [
    "github_agent_token",
    "openai_api_key",
    "anthropic_api_key",
    "AGENT_API_KEY",
    "WORKER_API_KEY",
    "EMBEDDING_API_KEY",
    "AGENT_PROVIDER",
    "AGENT_LLM_URL",
    "AGENT_MODEL",
    "EMBEDDING_PROVIDER",
    "WORKER_LLM_URL",
    "WORKER_MODEL",
    "WORKER_TIMEOUT_SEC",
    "MIDDLE_AGENT_DEBUG",
    "WORKER_MODE",
    "FRONTEND_LLM_URL",
    "FRONTEND_LLM_MODEL",
    "FRONTEND_LLM_API_KEY",
    "MEMORY_LLM_MODEL",
    "MEMORY_LLM_BASE_URL",
    "MEMORY_LLM_API_KEY",
    "MEMORY_EMBEDDING_MODEL",
    "MEMORY_EMBEDDING_BASE_URL",
    "EMBEDDING_SERVICE_URL",
    "MAX_CONCURRENT_AGENTS",
    "TERARCHITECT_WORKER_API_KEY",
    "GIT_USER_NAME",
    "GIT_USER_EMAIL",
];

/// Keys stored encrypted and reported only as set/unset.
pub const SENSITIVE_KEYS: [&str; 9] = [
    "github_agent_token",
    "openai_api_key",
    "anthropic_api_key",
    "AGENT_API_KEY",
    "WORKER_API_KEY",
    "FRONTEND_LLM_API_KEY",
    "MEMORY_LLM_API_KEY",
    "EMBEDDING_API_KEY",
    "TERARCHITECT_WORKER_API_KEY",
];

/// Keys copied into a claim's `agent_env` (besides the GitHub token and `OPENAI_API_KEY`).
pub const AGENT_ENV_KEYS: [&str; 17] = [
    "TERARCHITECT_WORKER_API_KEY",
    "AGENT_PROVIDER",
    "AGENT_LLM_URL",
    "AGENT_MODEL",
    "AGENT_API_KEY",
    "WORKER_MODE",
    "WORKER_LLM_URL",
    "WORKER_MODEL",
    "WORKER_API_KEY",
    "WORKER_TIMEOUT_SEC",
    "MIDDLE_AGENT_DEBUG",
    "GIT_USER_NAME",
    "GIT_USER_EMAIL",
    "EMBEDDING_PROVIDER",
    "EMBEDDING_SERVICE_URL",
    "EMBEDDING_API_KEY",
    "MEMORY_EMBEDDING_MODEL",
];

/// Keys of worker-context's `agent_settings` object, in the original's order, plus
/// `WORKER_MODE`: the original stores it but leaves it out (reference §9, item 28), so a mode
/// saved through the settings API never reached an agent that reads worker-context.
pub const AGENT_SETTINGS_KEYS: [&str; 20] = [
    "AGENT_PROVIDER",
    "AGENT_LLM_URL",
    "AGENT_MODEL",
    "AGENT_API_KEY",
    "WORKER_MODE",
    "WORKER_LLM_URL",
    "WORKER_MODEL",
    "WORKER_API_KEY",
    "WORKER_TIMEOUT_SEC",
    "MIDDLE_AGENT_DEBUG",
    "github_agent_token",
    "MEMORY_LLM_MODEL",
    "MEMORY_LLM_BASE_URL",
    "MEMORY_LLM_API_KEY",
    "EMBEDDING_PROVIDER",
    "EMBEDDING_SERVICE_URL",
    "EMBEDDING_API_KEY",
    "MEMORY_EMBEDDING_MODEL",
    "MEMORY_EMBEDDING_BASE_URL",
    "openai_api_key",
];

/// Env variables that stand in for `github_agent_token`, in order.
pub const GITHUB_TOKEN_ENV_FALLBACKS: [&str; 3] =
    ["GITHUB_TOKEN", "GH_TOKEN", "GITHUB_AGENT_TOKEN"];

/// Whether `key` may be stored.
pub fn is_allowed(key: &str) -> bool {
    ALLOWED_KEYS.contains(&key)
}

/// Whether `key` is stored encrypted.
pub fn is_sensitive(key: &str) -> bool {
    SENSITIVE_KEYS.contains(&key)
}

#[cfg(test)]
mod tests {
    use super::*;

    // The memberships the original's tests pin (reference §3.1).
    #[test]
    fn pinned_memberships() {
        assert!(is_allowed("WORKER_MODE") && !is_sensitive("WORKER_MODE"));
        assert!(AGENT_ENV_KEYS.contains(&"WORKER_MODE"));
        assert!(is_allowed("MAX_CONCURRENT_AGENTS") && !is_sensitive("MAX_CONCURRENT_AGENTS"));
        assert!(!AGENT_ENV_KEYS.contains(&"MAX_CONCURRENT_AGENTS"));
        assert!(is_sensitive("WORKER_API_KEY"));
        for k in [
            "WORKER_LLM_URL",
            "WORKER_MODEL",
            "WORKER_API_KEY",
            "WORKER_TIMEOUT_SEC",
        ] {
            assert!(is_allowed(k) && AGENT_ENV_KEYS.contains(&k), "{k}");
        }
        assert!(SENSITIVE_KEYS.iter().all(|k| is_allowed(k)));
        assert!(AGENT_ENV_KEYS.iter().all(|k| is_allowed(k)));
        assert!(AGENT_SETTINGS_KEYS.iter().all(|k| is_allowed(k)));
    }
}
