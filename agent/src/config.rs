//! The agent's inputs: the job's environment contract ([`JobInputs`]) and the settings resolved
//! from worker-context `agent_settings` with environment overrides ([`Settings`]).
//!
//! Precedence for every setting the backend also knows: a non-empty environment value wins, then
//! a non-empty `agent_settings` value, then the default. An empty backend value never clears an
//! environment value (the original let the backend clobber `AGENT_API_KEY`/`WORKER_API_KEY`).

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use terarchitect_worker_api::JobKind;
use uuid::Uuid;

use crate::prompts::DEFAULT_PROVIDER_ID;

/// A snapshot of environment variables. The agent reads its environment only through this, so
/// tests can run it in-process with their own variables.
#[derive(Clone, Default)]
pub struct Env {
    vars: BTreeMap<String, String>,
}

impl fmt::Debug for Env {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Values may be secrets: keys only.
        f.debug_struct("Env")
            .field("keys", &self.vars.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl Env {
    /// The current process environment (variables that are not valid UTF-8 are skipped).
    pub fn from_process() -> Self {
        Self {
            vars: std::env::vars_os()
                .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
                .collect(),
        }
    }

    /// An environment made of the given pairs.
    pub fn from_pairs<K: Into<String>, V: Into<String>>(
        pairs: impl IntoIterator<Item = (K, V)>,
    ) -> Self {
        Self {
            vars: pairs
                .into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
        }
    }

    /// Sets a variable.
    pub fn set(&mut self, key: &str, value: impl Into<String>) {
        self.vars.insert(key.to_owned(), value.into());
    }

    /// The trimmed value of `key`, or None when it is unset or blank.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.vars
            .get(key)
            .map(|v| v.trim())
            .filter(|v| !v.is_empty())
    }

    /// The raw (untrimmed) value of `key`, blank included.
    pub fn raw(&self, key: &str) -> Option<&str> {
        self.vars.get(key).map(String::as_str)
    }

    /// Every variable.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.vars.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }
}

/// Missing or malformed input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// A required variable is unset or blank.
    #[error("{0} is required")]
    Missing(&'static str),
    /// A variable has a value that cannot be used.
    #[error("{key} is invalid ({value:?}): {reason}")]
    Invalid {
        /// The variable.
        key: &'static str,
        /// Its value (never a secret).
        value: String,
        /// Why it was rejected.
        reason: String,
    },
    /// Several settings are missing or invalid.
    #[error("agent settings are incomplete: {}", .0.join("; "))]
    Incomplete(Vec<String>),
}

/// A secret string: never printed by `Debug`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a value.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The value.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// Review-job inputs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReviewInputs {
    /// The pull request to work on.
    pub pr_number: u64,
    /// The reviewer comment to address (may be empty).
    pub comment_body: String,
    /// GitHub id of the comment, when given (informational).
    pub github_comment_id: Option<String>,
}

/// The job's environment contract (the original runner's variables).
#[derive(Debug, Clone)]
pub struct JobInputs {
    /// `ticket` or `review`.
    pub kind: JobKind,
    /// `TICKET_ID`.
    pub ticket_id: Uuid,
    /// `PROJECT_ID`.
    pub project_id: Uuid,
    /// `TERARCHITECT_API_URL`.
    pub api_url: String,
    /// `TERARCHITECT_WORKER_API_KEY`.
    pub worker_api_key: Option<Secret>,
    /// `REPO_URL` (required unless `AGENT_WORKSPACE` is an existing git work tree).
    pub repo_url: Option<String>,
    /// `AGENT_WORKSPACE`.
    pub workspace: Option<PathBuf>,
    /// Whether `AGENT_WORKSPACE` is an existing git work tree used in place (local mode).
    pub workspace_in_place: bool,
    /// Review jobs: `PR_NUMBER`, `COMMENT_BODY`, `GITHUB_COMMENT_ID`.
    pub review: Option<ReviewInputs>,
    /// `JOB_ID` (informational).
    pub job_id: Option<String>,
}

fn parse_uuid(env: &Env, key: &'static str) -> Result<Uuid, ConfigError> {
    let v = env.get(key).ok_or(ConfigError::Missing(key))?;
    v.parse().map_err(|_| ConfigError::Invalid {
        key,
        value: v.to_owned(),
        reason: "not a UUID".into(),
    })
}

impl JobInputs {
    /// Reads and checks the job's variables.
    pub fn from_env(kind: JobKind, env: &Env) -> Result<Self, ConfigError> {
        let ticket_id = parse_uuid(env, "TICKET_ID")?;
        let project_id = parse_uuid(env, "PROJECT_ID")?;
        let api_url = env
            .get("TERARCHITECT_API_URL")
            .ok_or(ConfigError::Missing("TERARCHITECT_API_URL"))?;
        match url::Url::parse(api_url) {
            Ok(u) if matches!(u.scheme(), "http" | "https") => {}
            _ => {
                return Err(ConfigError::Invalid {
                    key: "TERARCHITECT_API_URL",
                    value: api_url.to_owned(),
                    reason: "not an http(s) URL".into(),
                });
            }
        }
        let workspace = env.get("AGENT_WORKSPACE").map(PathBuf::from);
        let workspace_in_place = workspace.as_ref().is_some_and(|w| w.join(".git").exists());
        let repo_url = env.get("REPO_URL").map(str::to_owned);
        if repo_url.is_none() && !workspace_in_place {
            return Err(ConfigError::Missing("REPO_URL"));
        }
        let review = match kind {
            JobKind::Ticket => None,
            JobKind::Review => {
                let raw = env
                    .get("PR_NUMBER")
                    .ok_or(ConfigError::Missing("PR_NUMBER"))?;
                let pr_number = raw.parse::<u64>().ok().filter(|n| *n > 0).ok_or_else(|| {
                    ConfigError::Invalid {
                        key: "PR_NUMBER",
                        value: raw.to_owned(),
                        reason: "not a positive integer".into(),
                    }
                })?;
                Some(ReviewInputs {
                    pr_number,
                    comment_body: env.raw("COMMENT_BODY").unwrap_or("").to_owned(),
                    github_comment_id: env.get("GITHUB_COMMENT_ID").map(str::to_owned),
                })
            }
        };
        Ok(Self {
            kind,
            ticket_id,
            project_id,
            api_url: api_url.to_owned(),
            worker_api_key: env.get("TERARCHITECT_WORKER_API_KEY").map(Secret::new),
            repo_url,
            workspace,
            workspace_in_place,
            review,
            job_id: env.get("JOB_ID").map(str::to_owned),
        })
    }

    /// The work branch of a ticket job: `ticket-<ticket uuid>`.
    pub fn ticket_branch(&self) -> String {
        format!("ticket-{}", self.ticket_id)
    }
}

/// Which worker carries out the Director's instructions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WorkerMode {
    /// `opencode serve` over HTTP.
    OpenCode,
    /// The Claude Code CLI.
    ClaudeCode,
}

impl WorkerMode {
    /// Parses `opencode` / `claude-code` (case-insensitive).
    pub fn parse(value: &str) -> Result<Self, ConfigError> {
        match value.trim().to_lowercase().as_str() {
            "opencode" => Ok(Self::OpenCode),
            "claude-code" | "claude_code" | "claude" => Ok(Self::ClaudeCode),
            _ => Err(ConfigError::Invalid {
                key: "WORKER_MODE",
                value: value.to_owned(),
                reason: "expected opencode or claude-code".into(),
            }),
        }
    }

    /// The wire spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::OpenCode => "opencode",
            Self::ClaudeCode => "claude-code",
        }
    }
}

/// OpenCode server settings.
#[derive(Debug, Clone)]
pub struct OpenCodeSettings {
    /// `OPENCODE_SERVER_URL` (default `http://127.0.0.1:4096`), without a trailing `/`.
    pub url: String,
    /// `OPENCODE_SERVER_USERNAME` (default `opencode`).
    pub username: String,
    /// `OPENCODE_SERVER_PASSWORD`: basic auth is used only when set.
    pub password: Option<Secret>,
    /// `OPENCODE_PROVIDER_ID` (default `terarchitect-proxy`), used by the config and the calls.
    pub provider_id: String,
}

/// Limits and timing knobs (environment only).
#[derive(Debug, Clone)]
pub struct Limits {
    /// `AGENT_MAX_TURNS` (default 1000): execution turns of a ticket.
    pub max_turns: u32,
    /// `AGENT_MAX_REVIEW_TURNS` (default 50): turns of a review job.
    pub max_review_turns: u32,
    /// `AGENT_MAX_PLAN_REVIEWS` (default 5): plan-review passes.
    pub max_plan_reviews: u32,
    /// `AGENT_TIME_LIMIT_SEC`: optional limit of the whole run.
    pub time_limit: Option<Duration>,
    /// `AGENT_CANCEL_POLL_SEC` (default 10): cancel-flag polling interval during long calls.
    pub cancel_poll: Duration,
    /// `AGENT_LLM_TIMEOUT_SEC` (default 300): one Director LLM request.
    pub llm_timeout: Duration,
    /// `AGENT_LLM_RETRIES` (default 3): retries of a Director request on transient errors.
    pub llm_retries: u32,
    /// `AGENT_JSON_RETRIES` (default 2): re-asks after an unusable Director answer.
    pub json_retries: u32,
    /// `AGENT_RETRY_BACKOFF_MS` (default 1000): first back-off between retries (doubles).
    pub retry_backoff: Duration,
    /// `AGENT_CONTEXT_TOKENS` (default 150000): Director history budget before compaction.
    pub context_tokens: usize,
    /// `AGENT_PLAN_REVIEW_CONTEXT_TOKENS` (default 80000): the same during plan review.
    pub plan_review_context_tokens: usize,
    /// `AGENT_STARTUP_TIMEOUT_SEC` (default 60): waiting for `opencode serve` / `dockerd`.
    pub startup_timeout: Duration,
}

/// Everything the run needs, resolved from `agent_settings` and the environment.
#[derive(Debug, Clone)]
pub struct Settings {
    /// `AGENT_PROVIDER` (default `openai`), lower-cased.
    pub agent_provider: String,
    /// The Director's chat-completions endpoint derived from `AGENT_LLM_URL` (empty if none).
    pub director_endpoint: String,
    /// `AGENT_MODEL`.
    pub agent_model: String,
    /// `AGENT_API_KEY`.
    pub agent_api_key: Option<Secret>,
    /// `WORKER_MODE` (default `claude-code`).
    pub worker_mode: WorkerMode,
    /// `WORKER_LLM_URL` (for the OpenCode config).
    pub worker_llm_url: Option<String>,
    /// `WORKER_MODEL`.
    pub worker_model: String,
    /// `WORKER_API_KEY`.
    pub worker_api_key: Option<Secret>,
    /// `WORKER_TIMEOUT_SEC` (default 3600): one worker call.
    pub worker_timeout: Duration,
    /// `MIDDLE_AGENT_DEBUG` (default on): writes trace files (outside the repository).
    pub debug: bool,
    /// `GIT_USER_NAME` (default `Terarchitect Agent`).
    pub git_user_name: String,
    /// `GIT_USER_EMAIL` (default `agent@terarchitect.local`).
    pub git_user_email: String,
    /// `GITHUB_TOKEN`, else `GH_TOKEN`, else `agent_settings.github_agent_token`.
    pub github_token: Option<Secret>,
    /// `GITHUB_API_URL` (default `https://api.github.com`).
    pub github_api_url: String,
    /// `GITHUB_REPOSITORY` (`owner/name`), overriding the slug derived from `REPO_URL`.
    pub github_repository: Option<String>,
    /// OpenCode server.
    pub opencode: OpenCodeSettings,
    /// `CLAUDE_BIN` (default `claude`).
    pub claude_bin: String,
    /// `AGENT_TRACE_DIR` (default `<temp>/terarchitect-agent`): trace files, never in the repo.
    pub trace_dir: PathBuf,
    /// Limits and timing.
    pub limits: Limits,
}

/// Parses a duration in (possibly fractional) seconds.
fn seconds(key: &'static str, value: &str) -> Result<Duration, ConfigError> {
    value
        .parse::<f64>()
        .ok()
        .filter(|s| s.is_finite() && *s > 0.0)
        .map(Duration::from_secs_f64)
        .ok_or_else(|| ConfigError::Invalid {
            key,
            value: value.to_owned(),
            reason: "expected a positive number of seconds".into(),
        })
}

fn number<T: std::str::FromStr>(
    env: &Env,
    key: &'static str,
    default: T,
) -> Result<T, ConfigError> {
    match env.get(key) {
        None => Ok(default),
        Some(v) => v.parse().map_err(|_| ConfigError::Invalid {
            key,
            value: v.to_owned(),
            reason: "expected a non-negative integer".into(),
        }),
    }
}

fn env_seconds(env: &Env, key: &'static str, default: f64) -> Result<Duration, ConfigError> {
    match env.get(key) {
        None => Ok(Duration::from_secs_f64(default)),
        Some(v) => seconds(key, v),
    }
}

/// The Director's chat-completions endpoint for a base URL. The original expects a base without
/// `/v1`; a base that already ends in `/v1` is accepted too.
pub fn chat_completions_endpoint(provider: &str, base: Option<&str>) -> String {
    let base = match base {
        Some(b) => b.trim().trim_end_matches('/').to_owned(),
        None if provider == "openai" => "https://api.openai.com".to_owned(),
        None => return String::new(),
    };
    if base.ends_with("/chat/completions") {
        base
    } else if base.ends_with("/v1") {
        format!("{base}/chat/completions")
    } else {
        format!("{base}/v1/chat/completions")
    }
}

/// Whether a `MIDDLE_AGENT_DEBUG` value means on.
pub fn debug_enabled(value: Option<&str>) -> bool {
    !matches!(
        value.map(|v| v.trim().to_lowercase()).as_deref(),
        Some("0" | "false" | "no" | "off")
    )
}

impl Settings {
    /// Resolves the settings: environment over `agent_settings` over defaults.
    pub fn resolve(
        env: &Env,
        agent_settings: &BTreeMap<String, String>,
    ) -> Result<Self, ConfigError> {
        let backend = |key: &str| {
            agent_settings
                .get(key)
                .map(|v| v.trim())
                .filter(|v| !v.is_empty())
                .map(str::to_owned)
        };
        let pick = |key: &str| env.get(key).map(str::to_owned).or_else(|| backend(key));

        let agent_provider = pick("AGENT_PROVIDER")
            .unwrap_or_else(|| "openai".into())
            .to_lowercase();
        let director_endpoint =
            chat_completions_endpoint(&agent_provider, pick("AGENT_LLM_URL").as_deref());
        let worker_mode = match pick("WORKER_MODE") {
            Some(m) => WorkerMode::parse(&m)?,
            None => WorkerMode::ClaudeCode,
        };
        let worker_timeout = match pick("WORKER_TIMEOUT_SEC") {
            Some(v) => seconds("WORKER_TIMEOUT_SEC", &v)?,
            None => Duration::from_secs(3600),
        };
        let github_token = env
            .get("GITHUB_TOKEN")
            .or_else(|| env.get("GH_TOKEN"))
            .map(str::to_owned)
            .or_else(|| backend("github_agent_token"))
            .map(Secret::new);
        let opencode = OpenCodeSettings {
            url: env
                .get("OPENCODE_SERVER_URL")
                .unwrap_or("http://127.0.0.1:4096")
                .trim_end_matches('/')
                .to_owned(),
            username: env
                .get("OPENCODE_SERVER_USERNAME")
                .unwrap_or("opencode")
                .to_owned(),
            password: env.get("OPENCODE_SERVER_PASSWORD").map(Secret::new),
            provider_id: env
                .get("OPENCODE_PROVIDER_ID")
                .unwrap_or(DEFAULT_PROVIDER_ID)
                .to_owned(),
        };
        let limits = Limits {
            max_turns: number(env, "AGENT_MAX_TURNS", 1000u32)?,
            max_review_turns: number(env, "AGENT_MAX_REVIEW_TURNS", 50u32)?,
            max_plan_reviews: number(env, "AGENT_MAX_PLAN_REVIEWS", 5u32)?.max(1),
            time_limit: env
                .get("AGENT_TIME_LIMIT_SEC")
                .map(|v| seconds("AGENT_TIME_LIMIT_SEC", v))
                .transpose()?,
            cancel_poll: env_seconds(env, "AGENT_CANCEL_POLL_SEC", 10.0)?,
            llm_timeout: env_seconds(env, "AGENT_LLM_TIMEOUT_SEC", 300.0)?,
            llm_retries: number(env, "AGENT_LLM_RETRIES", 3u32)?,
            json_retries: number(env, "AGENT_JSON_RETRIES", 2u32)?,
            retry_backoff: Duration::from_millis(number(env, "AGENT_RETRY_BACKOFF_MS", 1000u64)?),
            context_tokens: number(env, "AGENT_CONTEXT_TOKENS", 150_000usize)?,
            plan_review_context_tokens: number(
                env,
                "AGENT_PLAN_REVIEW_CONTEXT_TOKENS",
                80_000usize,
            )?,
            startup_timeout: env_seconds(env, "AGENT_STARTUP_TIMEOUT_SEC", 60.0)?,
        };
        Ok(Self {
            agent_provider,
            director_endpoint,
            agent_model: pick("AGENT_MODEL").unwrap_or_default(),
            agent_api_key: pick("AGENT_API_KEY").map(Secret::new),
            worker_mode,
            worker_llm_url: pick("WORKER_LLM_URL").map(|u| u.trim_end_matches('/').to_owned()),
            worker_model: pick("WORKER_MODEL").unwrap_or_default(),
            worker_api_key: pick("WORKER_API_KEY").map(Secret::new),
            worker_timeout,
            debug: debug_enabled(pick("MIDDLE_AGENT_DEBUG").as_deref()),
            git_user_name: pick("GIT_USER_NAME").unwrap_or_else(|| "Terarchitect Agent".into()),
            git_user_email: pick("GIT_USER_EMAIL")
                .unwrap_or_else(|| "agent@terarchitect.local".into()),
            github_token,
            github_api_url: env
                .get("GITHUB_API_URL")
                .unwrap_or("https://api.github.com")
                .trim_end_matches('/')
                .to_owned(),
            github_repository: env.get("GITHUB_REPOSITORY").map(str::to_owned),
            opencode,
            claude_bin: env.get("CLAUDE_BIN").unwrap_or("claude").to_owned(),
            trace_dir: env
                .get("AGENT_TRACE_DIR")
                .map(PathBuf::from)
                .unwrap_or_else(|| std::env::temp_dir().join("terarchitect-agent")),
            limits,
        })
    }

    /// Checks that the Director and the worker can run; returns every problem found.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let mut errors = Vec::new();
        if self.director_endpoint.is_empty() {
            errors.push(format!(
                "AGENT_LLM_URL is required for AGENT_PROVIDER={}",
                self.agent_provider
            ));
        }
        if self.agent_model.is_empty() {
            errors.push("AGENT_MODEL is required".to_owned());
        }
        match self.worker_mode {
            WorkerMode::ClaudeCode => {
                if self.worker_api_key.is_none() {
                    errors.push("WORKER_API_KEY is required in claude-code mode".to_owned());
                }
            }
            WorkerMode::OpenCode => {
                if self.worker_model.is_empty() {
                    errors.push("WORKER_MODEL is required in opencode mode".to_owned());
                }
            }
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(ConfigError::Incomplete(errors))
        }
    }

    /// The OpenCode model id: `WORKER_MODEL` without a leading `<provider id>/`.
    pub fn opencode_model_id(&self) -> String {
        let prefix = format!("{}/", self.opencode.provider_id);
        self.worker_model
            .strip_prefix(&prefix)
            .unwrap_or(&self.worker_model)
            .to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base_env() -> Env {
        Env::from_pairs([
            ("TICKET_ID", "6f1c9a9e-8d4b-4c1e-9b55-1d2f3a4b5c6d"),
            ("PROJECT_ID", "6f1c9a9e-8d4b-4c1e-9b55-1d2f3a4b5c6e"),
            ("TERARCHITECT_API_URL", "http://api:5010"),
            ("REPO_URL", "https://github.com/acme/shop"),
        ])
    }

    #[test]
    fn inputs_require_ids_and_urls() {
        let ok = JobInputs::from_env(JobKind::Ticket, &base_env()).unwrap();
        assert_eq!(
            ok.ticket_branch(),
            "ticket-6f1c9a9e-8d4b-4c1e-9b55-1d2f3a4b5c6d"
        );
        let mut env = base_env();
        env.set("TICKET_ID", "nope");
        assert!(matches!(
            JobInputs::from_env(JobKind::Ticket, &env),
            Err(ConfigError::Invalid {
                key: "TICKET_ID",
                ..
            })
        ));
        let mut env = base_env();
        env.set("REPO_URL", "  ");
        assert_eq!(
            JobInputs::from_env(JobKind::Ticket, &env).unwrap_err(),
            ConfigError::Missing("REPO_URL")
        );
        assert_eq!(
            JobInputs::from_env(JobKind::Review, &base_env()).unwrap_err(),
            ConfigError::Missing("PR_NUMBER")
        );
        let mut env = base_env();
        env.set("PR_NUMBER", "x7");
        assert!(JobInputs::from_env(JobKind::Review, &env).is_err());
        env.set("PR_NUMBER", "7");
        env.set("COMMENT_BODY", "Why?");
        let r = JobInputs::from_env(JobKind::Review, &env)
            .unwrap()
            .review
            .unwrap();
        assert_eq!((r.pr_number, r.comment_body.as_str()), (7, "Why?"));
    }

    #[test]
    fn env_wins_and_empty_backend_values_never_clobber() {
        let env = Env::from_pairs([("AGENT_API_KEY", "env-key"), ("AGENT_MODEL", "env-model")]);
        let backend: BTreeMap<String, String> = [
            ("AGENT_API_KEY", ""),
            ("AGENT_MODEL", "db-model"),
            ("WORKER_API_KEY", "db-worker"),
            ("AGENT_LLM_URL", "http://llm:8000/v1/"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        let s = Settings::resolve(&env, &backend).unwrap();
        assert_eq!(s.agent_api_key.unwrap().expose(), "env-key");
        assert_eq!(s.agent_model, "env-model");
        assert_eq!(s.worker_api_key.unwrap().expose(), "db-worker");
        assert_eq!(s.director_endpoint, "http://llm:8000/v1/chat/completions");
        assert_eq!(s.worker_mode, WorkerMode::ClaudeCode);
        assert!(s.debug);
        assert_eq!(s.worker_timeout, Duration::from_secs(3600));
    }

    #[test]
    fn endpoints_modes_and_validation() {
        assert_eq!(
            chat_completions_endpoint("openai", None),
            "https://api.openai.com/v1/chat/completions"
        );
        assert_eq!(chat_completions_endpoint("other", None), "");
        assert_eq!(
            chat_completions_endpoint("x", Some("http://h:1/")),
            "http://h:1/v1/chat/completions"
        );
        assert!(!debug_enabled(Some("Off")));
        assert!(debug_enabled(None));
        let env = Env::from_pairs([("WORKER_MODE", "bogus")]);
        assert!(Settings::resolve(&env, &BTreeMap::new()).is_err());
        let env = Env::from_pairs([("WORKER_TIMEOUT_SEC", "soon")]);
        assert!(Settings::resolve(&env, &BTreeMap::new()).is_err());
        let env = Env::from_pairs([("WORKER_MODE", "opencode"), ("AGENT_PROVIDER", "vllm")]);
        let s = Settings::resolve(&env, &BTreeMap::new()).unwrap();
        let ConfigError::Incomplete(errs) = s.validate().unwrap_err() else {
            panic!()
        };
        assert_eq!(errs.len(), 3, "{errs:?}");
        let env = Env::from_pairs([
            ("WORKER_MODE", "opencode"),
            ("WORKER_MODEL", "terarchitect-proxy/qwen"),
            ("AGENT_MODEL", "m"),
        ]);
        let s = Settings::resolve(&env, &BTreeMap::new()).unwrap();
        s.validate().unwrap();
        assert_eq!(s.opencode_model_id(), "qwen");
        assert!(format!("{s:?}").contains("redacted") || s.agent_api_key.is_none());
    }
}
