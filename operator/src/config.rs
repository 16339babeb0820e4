//! Command line and environment configuration. The original coordinator's variable names and
//! defaults are kept (`TERARCHITECT_API_URL`, `PROJECT_ID`/`PROJECT_IDS`,
//! `TERARCHITECT_WORKER_API_KEY`, `GITHUB_TOKEN`, `AGENT_IMAGE`, `MAX_CONCURRENT_AGENTS`,
//! `POLL_INTERVAL_SEC`).

use std::net::SocketAddr;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};
use uuid::Uuid;

/// A secret given on the command line or in the environment (a token, a key): `Debug` never
/// shows it, so no configuration dump can log it.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretValue(String);

impl SecretValue {
    /// The secret itself, for the one place that sends it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::str::FromStr for SecretValue {
    type Err = std::convert::Infallible;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Self(s.to_owned()))
    }
}

impl From<&str> for SecretValue {
    fn from(s: &str) -> Self {
        Self(s.to_owned())
    }
}

impl std::fmt::Debug for SecretValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

/// Default retention of finished AgentJobs: 7 days.
pub const DEFAULT_AGENTJOB_TTL_SECONDS: u64 = 7 * 24 * 3600;

/// Terarchitect Kubernetes operator.
#[derive(Debug, Parser)]
#[command(name = "terarchitect-operator", version, about, long_about = None)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the operator: claim queued jobs, run them as Kubernetes Jobs, report outcomes.
    Run(Box<RunConfig>),
    /// Print the AgentJob CustomResourceDefinition as YAML.
    Crd,
}

/// Docker inside agent pods.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DockerMode {
    /// No Docker daemon in agent pods.
    None,
    /// Docker-in-Docker: a privileged agent container starts its own dockerd.
    Dind,
}

impl DockerMode {
    /// The value the agent reads from `AGENT_DOCKER_MODE`.
    pub fn as_str(self) -> &'static str {
        match self {
            DockerMode::None => "none",
            DockerMode::Dind => "dind",
        }
    }
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Options of `terarchitect-operator run`.
#[derive(Debug, Clone, Parser)]
pub struct RunConfig {
    /// Base URL of the api-server, used by the operator to claim jobs and report outcomes.
    #[arg(long, env = "TERARCHITECT_API_URL")]
    pub api_url: String,

    /// Base URL of the api-server as agent pods reach it (defaults to --api-url).
    #[arg(long, env = "AGENT_API_URL")]
    pub agent_api_url: Option<String>,

    /// Comma-separated project ids to claim jobs for (all projects when neither this nor
    /// PROJECT_ID is set).
    #[arg(long, env = "PROJECT_IDS", value_delimiter = ',')]
    pub project_ids: Vec<String>,

    /// A single project id (used when PROJECT_IDS is not set).
    #[arg(long, env = "PROJECT_ID")]
    pub project_id: Option<String>,

    /// Bearer token of the worker API. Also the agents' token when the claim carries none.
    #[arg(long, env = "TERARCHITECT_WORKER_API_KEY", hide_env_values = true)]
    pub worker_api_key: Option<SecretValue>,

    /// Admin token of the api-server (`TERARCHITECT_ADMIN_TOKEN`; of a comma-separated rotation
    /// list the first is used). Sent only to non-worker endpoints (`GET /api/settings`), never
    /// handed to agents.
    #[arg(long, env = "TERARCHITECT_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<SecretValue>,

    /// GitHub token handed to agents when the claim carries none.
    #[arg(long, env = "GITHUB_TOKEN", hide_env_values = true)]
    pub github_token: Option<SecretValue>,

    /// Alternative name of the GitHub token.
    #[arg(long, env = "GH_TOKEN", hide_env_values = true, hide = true)]
    pub gh_token: Option<SecretValue>,

    /// Agent image.
    #[arg(long, env = "AGENT_IMAGE", default_value = "terarchitect-agent")]
    pub agent_image: String,

    /// Image pull policy of agent pods.
    #[arg(long, env = "AGENT_IMAGE_PULL_POLICY", default_value = "IfNotPresent")]
    pub agent_image_pull_policy: String,

    /// Image pull secrets of agent pods (comma-separated Secret names).
    #[arg(long, env = "AGENT_IMAGE_PULL_SECRETS", value_delimiter = ',')]
    pub agent_image_pull_secrets: Vec<String>,

    /// Agents running at once. The MAX_CONCURRENT_AGENTS setting of the api-server, re-read
    /// every cycle, takes precedence; values below 1 count as 1.
    #[arg(
        long,
        env = "MAX_CONCURRENT_AGENTS",
        default_value_t = 1,
        allow_negative_numbers = true
    )]
    pub max_concurrent_agents: i64,

    /// Seconds between claim attempts against a server without long polling, and between
    /// capacity checks when all slots are busy.
    #[arg(long, env = "POLL_INTERVAL_SEC", default_value_t = 10.0)]
    pub poll_interval_sec: f64,

    /// Longest long poll of a claim, in seconds (at most 30).
    #[arg(long, env = "CLAIM_WAIT_SEC", default_value_t = 20)]
    pub claim_wait_sec: u32,

    /// Lease the operator holds on each claimed job, renewed by heartbeats, in seconds.
    #[arg(long, env = "JOB_LEASE_SEC", default_value_t = 60)]
    pub job_lease_sec: u32,

    /// Seconds between heartbeats (and cancellation checks) of running jobs.
    #[arg(long, env = "HEARTBEAT_INTERVAL_SEC", default_value_t = 5.0)]
    pub heartbeat_interval_sec: f64,

    /// Namespace of AgentJobs, Jobs and Secrets (the client's default namespace when unset).
    #[arg(long, env = "OPERATOR_NAMESPACE")]
    pub namespace: Option<String>,

    /// The agent's per-call worker timeout; a run's deadline is this plus --deadline-margin-sec
    /// unless the AgentJob sets timeoutSeconds.
    #[arg(long, env = "WORKER_TIMEOUT_SEC", default_value_t = 3600)]
    pub worker_timeout_sec: i64,

    /// Seconds added to WORKER_TIMEOUT_SEC for a run's deadline (clone, planning, finalize).
    #[arg(long, env = "DEADLINE_MARGIN_SEC", default_value_t = 1800)]
    pub deadline_margin_sec: i64,

    /// Seconds a finished Job is kept before Kubernetes deletes it.
    #[arg(long, env = "JOB_TTL_SEC", default_value_t = 3600)]
    pub job_ttl_sec: i32,

    /// Seconds a finished (and reported) AgentJob is kept before the operator deletes it, unless
    /// its spec.ttlSecondsAfterFinished says otherwise; 0 keeps finished AgentJobs forever.
    #[arg(long, env = "AGENTJOB_TTL_SECONDS", default_value_t = DEFAULT_AGENTJOB_TTL_SECONDS)]
    pub agentjob_ttl_seconds: u64,

    /// Seconds an agent pod may stay pending (image pull errors, unschedulable) before the run
    /// fails with the reason.
    #[arg(long, env = "PENDING_TIMEOUT_SEC", default_value_t = 300)]
    pub pending_timeout_sec: u64,

    /// Seconds an agent pod may wait for room in the cluster (PodScheduled=False, reason
    /// Unschedulable, while the scheduler says it could fit) before the run ends; meanwhile no
    /// new job is claimed. A pod that can never fit fails at once.
    #[arg(long, env = "UNSCHEDULABLE_TIMEOUT_SEC", default_value_t = 1800)]
    pub unschedulable_timeout_sec: u64,

    /// Agents of one project running at once (0: no per-project limit; MAX_CONCURRENT_AGENTS
    /// stays the global one). Needs PROJECT_IDS: the operator can only choose what to claim by
    /// project.
    #[arg(long, env = "MAX_CONCURRENT_AGENTS_PER_PROJECT", default_value_t = 0)]
    pub max_concurrent_agents_per_project: usize,

    /// Kueue LocalQueue (in the agents' namespace) agent Jobs wait in: they are created
    /// suspended with the label `kueue.x-k8s.io/queue-name`, and Kueue starts them when its
    /// quota admits them. Unset: Jobs start at once.
    #[arg(long, env = "KUEUE_QUEUE_NAME")]
    pub kueue_queue_name: Option<String>,

    /// Docker in agent pods (the original's AGENT_DOCKER_MODE; `dood` has no equivalent here).
    #[arg(long, env = "AGENT_DOCKER_MODE", value_enum, ignore_case = true, default_value_t = DockerMode::None)]
    pub agent_docker_mode: DockerMode,

    /// PersistentVolumeClaim mounted at /cache in agent pods (pip and npm caches); an emptyDir
    /// when unset.
    #[arg(long, env = "AGENT_CACHE_PVC")]
    pub agent_cache_pvc: Option<String>,

    /// CPU request of agent containers.
    #[arg(long, env = "AGENT_CPU_REQUEST")]
    pub agent_cpu_request: Option<String>,

    /// CPU limit of agent containers.
    #[arg(long, env = "AGENT_CPU_LIMIT")]
    pub agent_cpu_limit: Option<String>,

    /// Memory request of agent containers.
    #[arg(long, env = "AGENT_MEMORY_REQUEST")]
    pub agent_memory_request: Option<String>,

    /// Memory limit of agent containers.
    #[arg(long, env = "AGENT_MEMORY_LIMIT")]
    pub agent_memory_limit: Option<String>,

    /// YAML file with the operator-wide agent pod template (a PodTemplateSpec: nodeSelector,
    /// tolerations, runtimeClassName, extra volumes, sidecars...), merged over every agent pod
    /// before the AgentJob's own spec.podTemplate. Read at start; an invalid file stops the
    /// operator.
    #[arg(long, env = "AGENT_POD_TEMPLATE_FILE")]
    pub agent_pod_template_file: Option<std::path::PathBuf>,

    /// Service account of agent pods (its token is never mounted).
    #[arg(long, env = "AGENT_SERVICE_ACCOUNT")]
    pub agent_service_account: Option<String>,

    /// Elect a leader through a Lease, so several replicas are safe.
    #[arg(long, env = "LEADER_ELECTION", default_value_t = true, action = clap::ArgAction::Set)]
    pub leader_election: bool,

    /// Name of the leader-election Lease.
    #[arg(
        long,
        env = "LEADER_ELECTION_LEASE",
        default_value = "terarchitect-operator"
    )]
    pub lease_name: String,

    /// This replica's identity in the Lease (the pod name in a cluster).
    #[arg(long, env = "POD_NAME")]
    pub identity: Option<String>,

    /// Seconds a leader's Lease stays valid without renewal.
    #[arg(long, env = "LEADER_LEASE_SEC", default_value_t = 15)]
    pub leader_lease_sec: u64,

    /// Address of /healthz, /readyz and /metrics.
    #[arg(long, env = "OPERATOR_HTTP_BIND", default_value = "0.0.0.0:8080")]
    pub http_bind: SocketAddr,

    /// Log format.
    #[arg(long, env = "LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// Log filter (tracing EnvFilter syntax).
    #[arg(long, env = "RUST_LOG", default_value = "info")]
    pub log_filter: String,
}

/// A configuration error.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

impl RunConfig {
    /// Parses `args` as `terarchitect-operator run <args>` (environment fallbacks still apply).
    pub fn from_args<I, T>(args: I) -> Result<Self, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        let mut all: Vec<std::ffi::OsString> = vec!["run".into()];
        all.extend(args.into_iter().map(Into::into));
        RunConfig::try_parse_from(all)
    }

    /// The projects to claim for: PROJECT_IDS, else PROJECT_ID, else all (empty).
    pub fn projects(&self) -> Result<Vec<Uuid>, ConfigError> {
        let raw: Vec<&str> = if self.project_ids.iter().any(|p| !p.trim().is_empty()) {
            self.project_ids.iter().map(String::as_str).collect()
        } else {
            self.project_id.iter().map(String::as_str).collect()
        };
        raw.into_iter()
            .map(str::trim)
            .filter(|p| !p.is_empty())
            .map(|p| {
                Uuid::parse_str(p)
                    .map_err(|_| ConfigError(format!("project id {p:?} is not a UUID")))
            })
            .collect()
    }

    /// Checks values clap cannot.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.projects()?;
        if self.api_url.trim().is_empty() {
            return Err(ConfigError("TERARCHITECT_API_URL is required".into()));
        }
        if !(0.0..=3600.0).contains(&self.poll_interval_sec) {
            return Err(ConfigError(
                "POLL_INTERVAL_SEC must be between 0 and 3600".into(),
            ));
        }
        if self.claim_wait_sec > terarchitect_worker_api::MAX_WAIT_SECONDS {
            return Err(ConfigError("CLAIM_WAIT_SEC must be at most 30".into()));
        }
        if self.heartbeat_interval_sec <= 0.0
            || self.heartbeat_interval_sec * 2.0 >= f64::from(self.job_lease_sec)
        {
            return Err(ConfigError(
                "HEARTBEAT_INTERVAL_SEC must be positive and under half of JOB_LEASE_SEC".into(),
            ));
        }
        if self.max_concurrent_agents_per_project > 0 && self.projects()?.is_empty() {
            return Err(ConfigError(
                "MAX_CONCURRENT_AGENTS_PER_PROJECT needs PROJECT_IDS (the projects to share the slots between)".into(),
            ));
        }
        if self.worker_timeout_sec <= 0 || self.deadline_margin_sec < 0 {
            return Err(ConfigError(
                "WORKER_TIMEOUT_SEC must be positive and DEADLINE_MARGIN_SEC not negative".into(),
            ));
        }
        Ok(())
    }

    /// The operator-wide agent pod template from AGENT_POD_TEMPLATE_FILE, checked (`None`
    /// without a file, or for an empty one).
    pub fn agent_pod_template(
        &self,
    ) -> Result<Option<k8s_openapi::api::core::v1::PodTemplateSpec>, ConfigError> {
        let Some(path) = self
            .agent_pod_template_file
            .as_ref()
            .filter(|p| !p.as_os_str().is_empty())
        else {
            return Ok(None);
        };
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError(format!("AGENT_POD_TEMPLATE_FILE {}: {e}", path.display())))?;
        let template = crate::pod_template::parse(&text).map_err(|e| {
            ConfigError(format!(
                "AGENT_POD_TEMPLATE_FILE {} is not a pod template: {e}",
                path.display()
            ))
        })?;
        crate::pod_template::check(&template, crate::pod_template::Origin::Default)
            .map_err(|e| ConfigError(e.to_string()))?;
        Ok((template != Default::default()).then_some(template))
    }

    /// The API URL agent pods use, without a trailing slash.
    pub fn agent_api_url(&self) -> String {
        self.agent_api_url
            .as_deref()
            .filter(|u| !u.trim().is_empty())
            .unwrap_or(&self.api_url)
            .trim()
            .trim_end_matches('/')
            .to_owned()
    }

    /// The startup fallback of MAX_CONCURRENT_AGENTS, at least 1.
    pub fn max_concurrent_fallback(&self) -> usize {
        self.max_concurrent_agents.max(1) as usize
    }

    /// POLL_INTERVAL_SEC as a duration.
    pub fn poll_interval(&self) -> Duration {
        Duration::from_secs_f64(self.poll_interval_sec)
    }

    /// HEARTBEAT_INTERVAL_SEC as a duration.
    pub fn heartbeat_interval(&self) -> Duration {
        Duration::from_secs_f64(self.heartbeat_interval_sec)
    }

    /// The GitHub token to pass on: GITHUB_TOKEN, else GH_TOKEN.
    pub fn fallback_github_token(&self) -> Option<&str> {
        [&self.github_token, &self.gh_token]
            .into_iter()
            .flatten()
            .map(|t| t.expose().trim())
            .find(|t| !t.is_empty())
    }

    /// The worker API key, when set and not blank.
    pub fn worker_api_key(&self) -> Option<&str> {
        self.worker_api_key
            .as_ref()
            .map(SecretValue::expose)
            .filter(|k| !k.trim().is_empty())
    }

    /// The admin token to send to non-worker endpoints: the first non-blank entry of
    /// `TERARCHITECT_ADMIN_TOKEN` (a comma-separated rotation list).
    pub fn admin_token(&self) -> Option<String> {
        self.admin_token
            .as_ref()?
            .expose()
            .split(',')
            .map(str::trim)
            .find(|t| !t.is_empty())
            .map(str::to_owned)
    }

    /// This replica's identity for leader election.
    pub fn identity(&self) -> String {
        self.identity
            .clone()
            .filter(|i| !i.is_empty())
            .unwrap_or_else(|| format!("terarchitect-operator-{}", Uuid::new_v4().simple()))
    }
}

/// Parses MAX_CONCURRENT_AGENTS from `GET /api/settings` as the original coordinator does: a
/// non-blank value is an integer clamped to at least 1; anything else (missing, null, blank,
/// not an integer) means "use the fallback".
pub fn parse_max_concurrent(value: Option<&serde_json::Value>) -> Option<usize> {
    let text = match value? {
        serde_json::Value::Null => return None,
        serde_json::Value::String(s) => s.trim().to_owned(),
        serde_json::Value::Number(n) => n.to_string(),
        _ => return None,
    };
    if text.is_empty() {
        return None;
    }
    let n: i64 = text.parse().ok()?;
    Some(n.max(1) as usize)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn max_concurrent_rules_match_the_original() {
        assert_eq!(parse_max_concurrent(Some(&json!("4"))), Some(4));
        assert_eq!(parse_max_concurrent(Some(&json!(3))), Some(3));
        assert_eq!(parse_max_concurrent(None), None);
        assert_eq!(parse_max_concurrent(Some(&json!(null))), None);
        assert_eq!(parse_max_concurrent(Some(&json!(""))), None);
        assert_eq!(parse_max_concurrent(Some(&json!("0"))), Some(1));
        assert_eq!(parse_max_concurrent(Some(&json!("-5"))), Some(1));
        assert_eq!(parse_max_concurrent(Some(&json!("not-a-number"))), None);
        assert_eq!(parse_max_concurrent(Some(&json!(" 7 "))), Some(7));
    }

    #[test]
    fn projects_prefer_project_ids() {
        let a = Uuid::new_v4();
        let b = Uuid::new_v4();
        let cfg = RunConfig::from_args([
            "--api-url",
            "http://api",
            "--project-ids",
            &format!("{a}, {b}"),
            "--project-id",
            "x",
        ])
        .unwrap();
        assert_eq!(cfg.projects().unwrap(), vec![a, b]);
        let cfg = RunConfig::from_args(["--api-url", "http://api", "--project-id", &a.to_string()])
            .unwrap();
        assert_eq!(cfg.projects().unwrap(), vec![a]);
        let cfg =
            RunConfig::from_args(["--api-url", "http://api", "--project-id", "nope"]).unwrap();
        assert!(cfg.validate().unwrap_err().0.contains("not a UUID"));
    }

    #[test]
    fn defaults_match_the_coordinator() {
        let cfg = RunConfig::from_args(["--api-url", "http://api/"]).unwrap();
        assert_eq!(cfg.agent_image, "terarchitect-agent");
        assert_eq!(cfg.max_concurrent_fallback(), 1);
        assert_eq!(cfg.poll_interval(), Duration::from_secs(10));
        assert_eq!(cfg.agent_api_url(), "http://api");
        assert!(cfg.projects().unwrap().is_empty());
        cfg.validate().unwrap();
        let cfg =
            RunConfig::from_args(["--api-url", "http://api", "--max-concurrent-agents", "-3"])
                .unwrap();
        assert_eq!(cfg.max_concurrent_fallback(), 1);
        assert!(
            RunConfig::from_args(["--api-url", "http://api", "--max-concurrent-agents", "x"])
                .is_err()
        );
        assert_eq!(cfg.agentjob_ttl_seconds, 7 * 24 * 3600);
        assert_eq!(cfg.admin_token(), None);
    }

    #[test]
    fn scheduling_settings() {
        let cfg = RunConfig::from_args(["--api-url", "http://api"]).unwrap();
        assert_eq!(cfg.unschedulable_timeout_sec, 1800);
        assert_eq!(cfg.max_concurrent_agents_per_project, 0);
        assert_eq!(cfg.agent_pod_template().unwrap(), None);
        let cfg = RunConfig::from_args([
            "--api-url",
            "http://api",
            "--max-concurrent-agents-per-project",
            "2",
        ])
        .unwrap();
        assert!(cfg.validate().unwrap_err().0.contains("needs PROJECT_IDS"));
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("t.yaml");
        std::fs::write(&file, "spec:\n  runtimeClassName: gvisor\n").unwrap();
        let path = file.to_str().unwrap();
        let cfg =
            RunConfig::from_args(["--api-url", "http://api", "--agent-pod-template-file", path])
                .unwrap();
        let template = cfg.agent_pod_template().unwrap().unwrap();
        assert_eq!(
            template.spec.unwrap().runtime_class_name.as_deref(),
            Some("gvisor")
        );
        std::fs::write(
            &file,
            "spec:\n  containers:\n    - name: agent\n      args: [x]\n",
        )
        .unwrap();
        let err = cfg.agent_pod_template().unwrap_err().0;
        assert!(
            err.contains("AGENT_POD_TEMPLATE_FILE.spec.containers[agent].args"),
            "{err}"
        );
        std::fs::write(&file, "spec: [").unwrap();
        assert!(
            cfg.agent_pod_template()
                .unwrap_err()
                .0
                .contains("is not a pod template")
        );
    }

    #[test]
    fn admin_token_takes_the_first_of_a_rotation_list() {
        let cfg = RunConfig::from_args(["--api-url", "http://api", "--admin-token", " , new, old"])
            .unwrap();
        assert_eq!(cfg.admin_token().as_deref(), Some("new"));
        let cfg = RunConfig::from_args(["--api-url", "http://api", "--admin-token", " "]).unwrap();
        assert_eq!(cfg.admin_token(), None);
    }

    #[test]
    fn debug_output_shows_no_secret() {
        let cfg = RunConfig::from_args([
            "--api-url",
            "http://api",
            "--admin-token",
            "adm-s3cret",
            "--worker-api-key",
            "wk-s3cret",
            "--github-token",
            "ghp-s3cret",
        ])
        .unwrap();
        assert_eq!(cfg.worker_api_key(), Some("wk-s3cret"));
        assert_eq!(cfg.fallback_github_token(), Some("ghp-s3cret"));
        let debug = format!("{cfg:?}");
        assert!(!debug.contains("s3cret"), "{debug}");
        assert!(debug.contains("<redacted>"), "{debug}");
    }
}
