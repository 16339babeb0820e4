//! Command-line and environment configuration.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, ValueEnum};

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Terarchitect api-server: projects, tickets, settings, the agent job queue, memory and the
/// worker API, on PostgreSQL or an embedded SQLite file.
#[derive(Clone, Parser)]
#[command(name = "terarchitect-api-server", version, about, long_about = None)]
pub struct Config {
    /// PostgreSQL URL (`postgres://user:pass@host/db`) or `sqlite:path`. Without it the server
    /// uses the SQLite file given by --sqlite-path. SQLALCHEMY_DATABASE_URI is honoured too.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,

    /// The original app's database variable; takes precedence over DATABASE_URL.
    #[arg(
        long,
        env = "SQLALCHEMY_DATABASE_URI",
        hide_env_values = true,
        hide = true
    )]
    pub sqlalchemy_database_uri: Option<String>,

    /// SQLite file used when no database URL is given (created if missing).
    #[arg(
        long,
        env = "TERARCHITECT_SQLITE_PATH",
        default_value = "terarchitect.db"
    )]
    pub sqlite_path: PathBuf,

    /// Address to listen on.
    #[arg(long, env = "TERARCHITECT_BIND", default_value = "0.0.0.0:5010")]
    pub bind: SocketAddr,

    /// Maximum database connections.
    #[arg(long, env = "TERARCHITECT_DB_MAX_CONNECTIONS", default_value_t = 20)]
    pub db_max_connections: u32,

    /// How long to keep retrying an unreachable PostgreSQL at start-up (seconds; 0 fails at
    /// once), so the server waits for a database that starts after it instead of crash-looping.
    #[arg(
        long,
        env = "TERARCHITECT_DB_CONNECT_TIMEOUT_SEC",
        default_value_t = 60
    )]
    pub db_connect_timeout_sec: u64,

    /// Refuse worker API calls (503) and refuse to start when no worker API key is configured
    /// in settings or TERARCHITECT_WORKER_API_KEY, instead of allowing unauthenticated calls.
    #[arg(
        long,
        env = "TERARCHITECT_REQUIRE_WORKER_API_KEY",
        default_value_t = false
    )]
    pub require_worker_api_key: bool,

    /// Admin token(s): when set, every non-worker endpoint (projects, tickets, notes, settings,
    /// …) requires `Authorization: Bearer <token>`. Several (comma-separated, or the flag
    /// repeated) allow rotation. Not a setting: `PUT /api/settings` cannot change it.
    #[arg(
        long = "admin-token",
        env = "TERARCHITECT_ADMIN_TOKEN",
        hide_env_values = true,
        value_delimiter = ','
    )]
    pub admin_tokens: Vec<String>,

    /// Refuse to start without an admin token (fail closed).
    #[arg(
        long,
        env = "TERARCHITECT_REQUIRE_ADMIN_TOKEN",
        default_value_t = false
    )]
    pub require_admin_token: bool,

    /// Lease of a claim whose claimer does not ask for one, in seconds. Long enough for
    /// clients that never heartbeat (the original coordinator): a job whose lease runs out goes
    /// back to pending.
    #[arg(long, env = "TERARCHITECT_DEFAULT_LEASE_SEC", default_value_t = 4 * 3600)]
    pub default_lease_seconds: u32,

    /// Claims per job before an expired lease fails the job instead of re-queueing it.
    #[arg(long, env = "TERARCHITECT_JOB_MAX_ATTEMPTS", default_value_t = 3)]
    pub max_attempts: i32,

    /// How often expired leases are looked for, in milliseconds.
    #[arg(long, env = "TERARCHITECT_LEASE_SWEEP_MS", default_value_t = 5000)]
    pub lease_sweep_ms: u64,

    /// How long settings read from the database may be cached, in milliseconds (writes through
    /// this process invalidate the cache at once).
    #[arg(long, env = "TERARCHITECT_SETTINGS_CACHE_MS", default_value_t = 1000)]
    pub settings_cache_ms: u64,

    /// Leave secret values out of worker-context's agent_settings (agents then need them in
    /// their environment, as the operator provides). Off by default for compatibility with the
    /// original agent runner, which reads its keys from there.
    #[arg(
        long,
        env = "TERARCHITECT_REDACT_CONTEXT_SECRETS",
        default_value_t = false
    )]
    pub redact_context_secrets: bool,

    /// Memory for cached worker-context documents, in bytes (0 disables the cache).
    #[arg(long, env = "TERARCHITECT_CONTEXT_CACHE_BYTES", default_value_t = 64 * 1024 * 1024)]
    pub context_cache_bytes: usize,

    /// Largest accepted request body, in bytes.
    #[arg(long, env = "TERARCHITECT_MAX_BODY_BYTES", default_value_t = 16 * 1024 * 1024)]
    pub max_body_bytes: usize,

    /// Log format.
    #[arg(long, env = "LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// Log filter (tracing EnvFilter syntax).
    #[arg(long, env = "RUST_LOG", default_value = "info")]
    pub log_filter: String,

    /// The review loop: GitHub API, PR poller, webhook.
    #[command(flatten)]
    pub review: crate::review::ReviewArgs,

    /// Seconds to wait for in-flight requests on shutdown.
    #[arg(long, env = "TERARCHITECT_SHUTDOWN_GRACE_SEC", default_value_t = 20)]
    pub shutdown_grace_seconds: u64,
}

/// Shows the settings but none of the credentials (database URLs may carry a password).
impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let given = |v: &Option<String>| v.as_ref().map(|_| "<redacted>");
        f.debug_struct("Config")
            .field("database_url", &given(&self.database_url))
            .field(
                "sqlalchemy_database_uri",
                &given(&self.sqlalchemy_database_uri),
            )
            .field("sqlite_path", &self.sqlite_path)
            .field("bind", &self.bind)
            .field("db_max_connections", &self.db_max_connections)
            .field("db_connect_timeout_sec", &self.db_connect_timeout_sec)
            .field("require_worker_api_key", &self.require_worker_api_key)
            .field(
                "admin_tokens",
                &format_args!("<{} redacted>", self.admin_tokens.len()),
            )
            .field("require_admin_token", &self.require_admin_token)
            .field("default_lease_seconds", &self.default_lease_seconds)
            .field("max_attempts", &self.max_attempts)
            .field("lease_sweep_ms", &self.lease_sweep_ms)
            .field("settings_cache_ms", &self.settings_cache_ms)
            .field("redact_context_secrets", &self.redact_context_secrets)
            .field("context_cache_bytes", &self.context_cache_bytes)
            .field("max_body_bytes", &self.max_body_bytes)
            .field("log_format", &self.log_format)
            .field("log_filter", &self.log_filter)
            .field("review", &self.review)
            .field("shutdown_grace_seconds", &self.shutdown_grace_seconds)
            .finish()
    }
}
impl Config {
    /// The database URL to use: `SQLALCHEMY_DATABASE_URI` over `DATABASE_URL` (as the original),
    /// else None for the embedded SQLite default.
    pub fn effective_database_url(&self) -> Option<String> {
        [&self.sqlalchemy_database_uri, &self.database_url]
            .into_iter()
            .flatten()
            .find(|u| !u.trim().is_empty())
            .map(|u| normalise_url(u))
    }

    /// A configuration for tests and embedding: SQLite at `path`, listening on 127.0.0.1:0.
    pub fn for_tests(sqlite_path: PathBuf) -> Self {
        let mut cfg = Config::parse_from(["terarchitect-api-server"]);
        cfg.database_url = None;
        cfg.sqlalchemy_database_uri = None;
        cfg.sqlite_path = sqlite_path;
        cfg.bind = "127.0.0.1:0".parse().expect("valid address");
        cfg.lease_sweep_ms = 200;
        cfg.settings_cache_ms = 0;
        cfg.shutdown_grace_seconds = 2;
        // Tests start the PR poller explicitly, against a fake GitHub.
        cfg.review.pr_poll_sec = 0;
        cfg
    }

    /// The lease sweep interval.
    pub fn lease_sweep(&self) -> Duration {
        Duration::from_millis(self.lease_sweep_ms.max(10))
    }
}

/// Accepts SQLAlchemy-style URLs (`postgresql+psycopg2://`) as plain PostgreSQL URLs.
fn normalise_url(url: &str) -> String {
    let url = url.trim();
    match url.split_once("://") {
        Some((scheme, rest)) if scheme.starts_with("postgresql+") => format!("postgresql://{rest}"),
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_match_the_original_port() {
        let cfg = Config::parse_from(["x"]);
        assert_eq!(cfg.bind.port(), 5010);
        assert!(!cfg.require_worker_api_key);
        assert!(cfg.admin_tokens.is_empty() && !cfg.require_admin_token);
    }

    #[test]
    fn debug_output_shows_no_credential() {
        let cfg = Config::try_parse_from([
            "x",
            "--database-url",
            "postgres://u:db-password@h/d",
            "--admin-token",
            "admin-secret",
            "--github-webhook-secret",
            "hook-secret",
        ])
        .unwrap();
        let shown = format!("{cfg:?}");
        for secret in ["db-password", "admin-secret", "hook-secret"] {
            assert!(!shown.contains(secret), "{shown}");
        }
        assert!(shown.contains("<1 redacted>"), "{shown}");
    }

    #[test]
    fn admin_tokens_rotate_by_list_or_repetition() {
        let cfg = Config::parse_from(["x", "--admin-token", "a,b", "--admin-token", "c"]);
        assert_eq!(cfg.admin_tokens, ["a", "b", "c"]);
    }

    #[test]
    fn sqlalchemy_urls_are_accepted() {
        assert_eq!(
            normalise_url("postgresql+psycopg2://u:p@h/db"),
            "postgresql://u:p@h/db"
        );
        assert_eq!(normalise_url(" postgres://h/db "), "postgres://h/db");
    }
}
