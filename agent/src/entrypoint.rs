//! The container start-up (`terarchitect-agent entrypoint`), replacing the original shell
//! script: optionally start `dockerd` (`AGENT_DOCKER_MODE=dind`), start `opencode serve` with its
//! provider config in `OPENCODE_CONFIG_CONTENT` (unless `WORKER_MODE` is `claude-code` or
//! `OPENCODE_SERVER_URL` points at a running server), wait for its health endpoint, run the job
//! named by `JOB_KIND` in-process, stop the children, and return the job's result. Stop signals
//! cancel the run (the caller wires SIGTERM/SIGINT to the cancellation token).
//!
//! Children get the allowlisted environment of [`crate::sandbox`] only. The worker's provider
//! key stays in this process: OpenCode talks to a loopback [`KeyProxy`] with a dummy key.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use serde_json::json;
use terarchitect_worker_api::{AgentOutcome, JobKind};
use tokio::process::Child;
use tokio_util::sync::CancellationToken;

use crate::config::{Env, Settings, WorkerMode};
use crate::control::RunControl;
use crate::error::{Failure, RunResult};
use crate::runner::{self, WorkerSetup};
use crate::sandbox::worker_command;
use crate::worker::WorkerEndpoint;
use crate::worker::opencode::{OpenCodeWorker, log_tail, version_warning};
use crate::worker::proxy::{KeyProxy, KeyStyle};

/// Default `WORKER_LLM_URL` of the OpenCode provider config.
pub const DEFAULT_WORKER_LLM_URL: &str = "http://localhost:8080/v1";
/// Default model id of the OpenCode provider config.
pub const DEFAULT_WORKER_MODEL: &str = "Qwen/Qwen3-Coder-Next-FP8";

/// Per-request timeout of the start-up health probe: requests reaching `opencode serve` in its
/// first ~0.3 s may never be answered, so a probe must give up quickly and try again.
pub const STARTUP_PROBE_TIMEOUT: Duration = Duration::from_millis(250);
/// Pause between start-up health probes.
pub const STARTUP_PROBE_INTERVAL: Duration = Duration::from_millis(50);

/// The permission policy given to OpenCode: everything inside the workspace is allowed (edits,
/// bash, reads, web fetches); anything outside it (`external_directory`, which covers file tools
/// and paths named in bash commands) is denied, and nothing ever waits for a person (`question`,
/// `doom_loop` denied). A request that still appears is rejected by the worker client.
pub fn permission_policy() -> serde_json::Value {
    json!({
        "read": "allow",
        "edit": "allow",
        "glob": "allow",
        "grep": "allow",
        "list": "allow",
        "bash": "allow",
        "task": "allow",
        "todowrite": "allow",
        "lsp": "allow",
        "skill": "allow",
        "webfetch": "allow",
        "websearch": "allow",
        "external_directory": "deny",
        "question": "deny",
        "doom_loop": "deny",
    })
}

/// The OpenCode config (`OPENCODE_CONFIG_CONTENT`, behaviour reference §7.3): one
/// OpenAI-compatible provider with the worker model at `base_url` with `api_key` (the key proxy
/// and a dummy key when the agent holds a real key), the [`permission_policy`], no `question`
/// tool, no sharing, no auto-update, no snapshots (OpenCode's own git copy of the work tree at
/// every step: the agent commits each turn itself).
pub fn opencode_config(settings: &Settings, base_url: &str, api_key: &str) -> String {
    let provider = &settings.opencode.provider_id;
    let mut model = settings.opencode_model_id();
    if model.is_empty() {
        model = DEFAULT_WORKER_MODEL.to_owned();
    }
    json!({
        "$schema": "https://opencode.ai/config.json",
        "provider": {
            provider.clone(): {
                "npm": "@ai-sdk/openai-compatible",
                "name": "Terarchitect Proxy",
                "options": {"baseURL": base_url, "apiKey": api_key},
                "models": {model.clone(): {"name": model, "tool_call": true}},
            }
        },
        "model": format!("{provider}/{model}"),
        "permission": permission_policy(),
        "tools": {"question": false},
        "share": "disabled",
        "autoupdate": false,
        "snapshot": false,
    })
    .to_string()
}

/// The provider's base URL (`WORKER_LLM_URL`, default [`DEFAULT_WORKER_LLM_URL`]).
pub fn worker_llm_url(settings: &Settings) -> String {
    settings
        .worker_llm_url
        .clone()
        .unwrap_or_else(|| DEFAULT_WORKER_LLM_URL.to_owned())
        .trim_end_matches('/')
        .to_owned()
}

/// The worker's real provider key, if any (`dummy` is none).
fn real_key(settings: &Settings) -> Option<crate::config::Secret> {
    settings
        .worker_api_key
        .clone()
        .filter(|k| k.expose() != "dummy")
}

/// How long `opencode serve` gets to exit after SIGTERM before its process group is killed.
/// Nothing needs a clean OpenCode shutdown (the agent commits the work itself), and OpenCode
/// sometimes ignores SIGTERM altogether.
pub const OPENCODE_STOP_GRACE: Duration = Duration::from_secs(2);
/// How long `dockerd` gets to stop its containers after SIGTERM.
pub const DOCKERD_STOP_GRACE: Duration = Duration::from_secs(10);

/// A child process of the entrypoint.
#[derive(Debug)]
struct Running {
    name: String,
    child: Child,
    grace: Duration,
}

impl Running {
    /// SIGTERM to its process group, SIGKILL to the group after the grace period, then SIGKILL
    /// to the group again for what the child left running in it.
    async fn stop(mut self) {
        let Some(pgid) = self.child.id().and_then(|p| i32::try_from(p).ok()) else {
            return;
        };
        // SAFETY: kill(2) with a negative pid signals the child's own process group (it was
        // started with process_group(0)).
        unsafe {
            libc::kill(-pgid, libc::SIGTERM);
        }
        match tokio::time::timeout(self.grace, self.child.wait()).await {
            Ok(_) => tracing::info!(child = %self.name, "stopped"),
            Err(_) => {
                tracing::warn!(child = %self.name, grace = ?self.grace, "did not stop in time; killing it");
                // SAFETY: as above.
                unsafe {
                    libc::kill(-pgid, libc::SIGKILL);
                }
                let _ = self.child.kill().await;
            }
        }
        // SAFETY: as above; the group outlives its leader only through what it left running
        // (background processes of the worker's tools).
        unsafe {
            libc::kill(-pgid, libc::SIGKILL);
        }
    }
}

/// Child processes started by the entrypoint; stopped (SIGTERM, then SIGKILL) at the end.
#[derive(Debug, Default)]
pub struct Children {
    list: Vec<Running>,
    logs: Vec<PathBuf>,
}

impl Children {
    /// Adds a child, stopped with `grace` between SIGTERM and SIGKILL.
    pub fn push(&mut self, name: &str, child: Child, grace: Duration) {
        self.list.push(Running {
            name: name.to_owned(),
            child,
            grace,
        });
    }

    /// Adds a log file, removed once every child is stopped.
    pub fn push_log(&mut self, log: PathBuf) {
        self.logs.push(log);
    }

    /// The pids of the running children.
    pub fn pids(&self) -> Vec<i32> {
        self.list
            .iter()
            .filter_map(|r| r.child.id().and_then(|p| i32::try_from(p).ok()))
            .collect()
    }

    /// Stops the children called `name` (see [`Children::stop_all`]).
    pub async fn stop_named(&mut self, name: &str) {
        let (matching, rest): (Vec<Running>, Vec<Running>) = std::mem::take(&mut self.list)
            .into_iter()
            .partition(|r| r.name == name);
        self.list = rest;
        for r in matching.into_iter().rev() {
            r.stop().await;
        }
    }

    /// Stops every child, newest first: SIGTERM to its process group, SIGKILL after its grace
    /// period; then SIGKILL to the group, for what the child left running in it. Removes the
    /// log files.
    pub async fn stop_all(&mut self) {
        while let Some(r) = self.list.pop() {
            r.stop().await;
        }
        for log in self.logs.drain(..) {
            let _ = std::fs::remove_file(log);
        }
    }
}

fn log_file(name: &str) -> (PathBuf, Stdio, Stdio) {
    use std::os::unix::fs::OpenOptionsExt;
    let path = std::env::temp_dir().join(format!("terarchitect-{name}-{}.log", std::process::id()));
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&path);
    match file.and_then(|f| Ok((f.try_clone()?, f))) {
        Ok((a, b)) => (path, Stdio::from(a), Stdio::from(b)),
        Err(_) => (path, Stdio::null(), Stdio::null()),
    }
}

fn spawn(
    env: &Env,
    program: &str,
    args: &[&str],
    cwd: Option<&Path>,
    extra: &[(&str, &str)],
    log: &str,
) -> Result<(Child, PathBuf), String> {
    let (path, out, err) = log_file(log);
    // Allowlisted environment; dies with the agent.
    let mut cmd = worker_command(program, env);
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .process_group(0)
        .kill_on_drop(true);
    for (k, v) in extra {
        cmd.env(k, v);
    }
    if let Some(dir) = cwd {
        cmd.current_dir(dir);
    }
    cmd.spawn()
        .map(|c| (c, path))
        .map_err(|e| format!("cannot start {program}: {e}"))
}

/// Starts `dockerd` and waits until `docker info` answers.
async fn start_dockerd(
    env: &Env,
    children: &mut Children,
    timeout: Duration,
    stop: &CancellationToken,
) -> Result<(), Failure> {
    let unavailable =
        |m: String| Failure::new(AgentOutcome::WorkerUnavailable, m).with_step("dockerd_failed");
    let dockerd = env.get("DOCKERD_BIN").unwrap_or("dockerd");
    let docker = env.get("DOCKER_BIN").unwrap_or("docker").to_owned();
    let (child, log) = spawn(
        env,
        dockerd,
        &["--host=unix:///var/run/docker.sock", "--log-level=warn"],
        None,
        &[],
        "dockerd",
    )
    .map_err(unavailable)?;
    children.push("dockerd", child, DOCKERD_STOP_GRACE);
    children.push_log(log.clone());
    let started = tokio::time::Instant::now();
    loop {
        let ok = worker_command(&docker, env)
            .arg("info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .status()
            .await
            .is_ok_and(|s| s.success());
        if ok {
            tracing::info!("dockerd is ready");
            return Ok(());
        }
        if started.elapsed() >= timeout {
            return Err(unavailable(format!(
                "dockerd did not become ready within {timeout:?}; log: {}",
                log_tail(&log, 20)
            )));
        }
        tokio::select! {
            _ = stop.cancelled() => return Err(Failure::cancelled("the agent was told to stop (termination signal)")),
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
}

/// Starts `opencode serve` for the resolved settings, unless not needed.
#[derive(Debug)]
pub struct OpenCodeLauncher<'a> {
    env: &'a Env,
    children: &'a mut Children,
    /// The key proxy OpenCode's provider points at; lives as long as the run.
    proxy: Option<KeyProxy>,
}

impl OpenCodeLauncher<'_> {
    /// Starts the key proxy when the agent holds a real provider key; returns the provider
    /// base URL and key OpenCode is configured with.
    async fn provider_endpoint(
        &mut self,
        settings: &Settings,
    ) -> Result<(String, String), Failure> {
        let upstream = worker_llm_url(settings);
        let Some(key) = real_key(settings) else {
            return Ok((upstream, "dummy".to_owned()));
        };
        let proxy = KeyProxy::start(&upstream, key, KeyStyle::Bearer)
            .await
            .map_err(|e| {
                Failure::new(
                    AgentOutcome::WorkerUnavailable,
                    format!("cannot start the provider key proxy: {e}"),
                )
            })?;
        let url = proxy.url().to_owned();
        self.proxy = Some(proxy);
        Ok((url, "dummy".to_owned()))
    }
}

impl WorkerSetup for OpenCodeLauncher<'_> {
    async fn release(&mut self) {
        // `opencode serve` and the tools it left running in its process group; the key proxy;
        // then whatever the worker detached (it came back to the agent as an orphan), sparing
        // dockerd and its containers.
        self.children.stop_named("opencode").await;
        self.proxy = None;
        crate::reaper::sweep_leftovers(&self.children.pids()).await;
    }

    async fn prepare(
        &mut self,
        settings: &Settings,
        repo_dir: &Path,
        control: &RunControl,
    ) -> Result<WorkerEndpoint, Failure> {
        if settings.worker_mode == WorkerMode::ClaudeCode {
            return Ok(WorkerEndpoint::default());
        }
        if self.env.get("OPENCODE_SERVER_URL").is_some() {
            tracing::info!(url = %settings.opencode.url, "using the running OpenCode server");
            return Ok(WorkerEndpoint::default());
        }
        let unavailable = |m: String| Failure::new(AgentOutcome::WorkerUnavailable, m);
        let port = self
            .env
            .get("OPENCODE_SERVER_PORT")
            .unwrap_or("4096")
            .to_owned();
        let port: u16 = port.parse().map_err(|_| {
            Failure::misconfigured(format!("OPENCODE_SERVER_PORT is invalid ({port:?})"))
        })?;
        let url = format!("http://127.0.0.1:{port}");
        let bin = self
            .env
            .get("OPENCODE_BIN")
            .unwrap_or("opencode")
            .to_owned();
        let (base_url, key) = self.provider_endpoint(settings).await?;
        let config = opencode_config(settings, &base_url, &key);
        let port_s = port.to_string();
        let mut extra = vec![
            ("OPENCODE_CONFIG_CONTENT", config.as_str()),
            // No download of the models.dev catalogue at start-up (the provider is configured
            // here; offline it only logs errors, with egress it is a needless download).
            ("OPENCODE_DISABLE_MODELS_FETCH", "1"),
        ];
        if let Some(p) = &settings.opencode.password {
            // OpenCode's own server password (basic auth of its API); not a platform secret.
            extra.push(("OPENCODE_SERVER_PASSWORD", p.expose()));
            extra.push(("OPENCODE_SERVER_USERNAME", &settings.opencode.username));
        }
        let (child, log) = spawn(
            self.env,
            &bin,
            &[
                "serve",
                "--port",
                &port_s,
                "--hostname",
                "127.0.0.1",
                "--print-logs",
            ],
            Some(repo_dir),
            &extra,
            "opencode",
        )
        .map_err(unavailable)?;
        self.children.push("opencode", child, OPENCODE_STOP_GRACE);
        self.children.push_log(log.clone());
        let probe = OpenCodeWorker::new(settings, repo_dir, "startup", Some(&url))
            .with_log(Some(log.clone()));
        let timeout = settings.limits.startup_timeout;
        let started = tokio::time::Instant::now();
        loop {
            match probe.health_within(STARTUP_PROBE_TIMEOUT).await {
                Ok(version) => {
                    tracing::info!(%url, elapsed = ?started.elapsed(), "opencode serve is ready");
                    match version_warning(version.as_deref()) {
                        Some(w) => tracing::warn!("{w}"),
                        None => tracing::info!(version = ?version, "OpenCode version as tested"),
                    }
                    return Ok(WorkerEndpoint {
                        url: Some(url),
                        log: Some(log),
                        env: Env::default(),
                    });
                }
                Err(e) if started.elapsed() >= timeout => {
                    return Err(unavailable(format!(
                        "opencode serve did not become healthy at {url} within {timeout:?} ({e})"
                    ))
                    .with_detail(Some(format!(
                        "Tail of the opencode serve log:\n{}",
                        log_tail(&log, 30)
                    ))));
                }
                Err(_) => {}
            }
            control
                .guard(
                    "while starting opencode",
                    tokio::time::sleep(STARTUP_PROBE_INTERVAL),
                )
                .await?;
        }
    }
}

/// The job kind named by `JOB_KIND` (default `ticket`).
pub fn job_kind(env: &Env) -> Result<JobKind, Failure> {
    match env.get("JOB_KIND") {
        None => Ok(JobKind::Ticket),
        Some(k) => k
            .to_lowercase()
            .parse()
            .map_err(|e: String| Failure::misconfigured(format!("JOB_KIND: {e}"))),
    }
}

/// Runs the container start-up and the job; returns the job's result.
pub async fn run_entrypoint(env: &Env, stop: CancellationToken) -> RunResult {
    if let Some(ws) = env.get("AGENT_WORKSPACE")
        && let Err(e) = std::fs::create_dir_all(ws)
    {
        return Failure::misconfigured(format!("cannot create AGENT_WORKSPACE {ws}: {e}")).into();
    }
    let kind = match job_kind(env) {
        Ok(k) => k,
        Err(f) => return f.into(),
    };
    let startup_timeout = env
        .get("AGENT_STARTUP_TIMEOUT_SEC")
        .and_then(|v| v.parse::<f64>().ok())
        .filter(|v| *v > 0.0)
        .map(Duration::from_secs_f64)
        .unwrap_or(Duration::from_secs(60));
    let mut children = Children::default();
    let docker_mode = env
        .get("AGENT_DOCKER_MODE")
        .unwrap_or("none")
        .to_lowercase();
    if docker_mode == "dind"
        && env.get("DOCKER_HOST").is_none()
        && let Err(f) = start_dockerd(env, &mut children, startup_timeout, &stop).await
    {
        children.stop_all().await;
        return f.into();
    }
    let result = {
        let mut launcher = OpenCodeLauncher {
            env,
            children: &mut children,
            proxy: None,
        };
        runner::run(kind, env, stop, &mut launcher).await
    };
    children.stop_all().await;
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_matches_the_original_shape() {
        let env = Env::from_pairs([
            ("WORKER_LLM_URL", "http://vllm:8000/v1/"),
            ("WORKER_MODEL", "terarchitect-proxy/qwen-coder"),
        ]);
        let s = Settings::resolve(&env, &Default::default()).unwrap();
        assert_eq!(worker_llm_url(&s), "http://vllm:8000/v1");
        assert!(real_key(&s).is_none());
        let v: serde_json::Value =
            serde_json::from_str(&opencode_config(&s, &worker_llm_url(&s), "dummy")).unwrap();
        assert_eq!(
            v,
            json!({"$schema": "https://opencode.ai/config.json",
                "provider": {"terarchitect-proxy": {"npm": "@ai-sdk/openai-compatible", "name": "Terarchitect Proxy",
                    "options": {"baseURL": "http://vllm:8000/v1", "apiKey": "dummy"},
                    "models": {"qwen-coder": {"name": "qwen-coder", "tool_call": true}}}},
                "model": "terarchitect-proxy/qwen-coder",
                "permission": permission_policy(),
                "tools": {"question": false},
                "share": "disabled",
                "autoupdate": false,
                "snapshot": false})
        );
        assert_eq!(v["permission"]["external_directory"], "deny");
        assert_eq!(v["permission"]["question"], "deny");
        let env = Env::from_pairs([
            ("OPENCODE_PROVIDER_ID", "p"),
            ("WORKER_API_KEY", "k-123456"),
        ]);
        let s = Settings::resolve(&env, &Default::default()).unwrap();
        assert_eq!(real_key(&s).unwrap().expose(), "k-123456");
        let v: serde_json::Value =
            serde_json::from_str(&opencode_config(&s, "http://127.0.0.1:1", "dummy")).unwrap();
        assert_eq!(v["model"], "p/Qwen/Qwen3-Coder-Next-FP8");
        assert_eq!(v["provider"]["p"]["options"]["apiKey"], "dummy");
    }

    #[tokio::test]
    async fn dind_start_up_waits_for_docker_info() {
        let path = std::env::var("PATH").unwrap_or_default();
        let base = [
            ("PATH", path.as_str()),
            ("AGENT_DOCKER_MODE", "dind"),
            ("DOCKERD_BIN", "true"),
            ("AGENT_STARTUP_TIMEOUT_SEC", "1"),
        ];
        let mut env = Env::from_pairs(base);
        env.set("DOCKER_BIN", "false");
        let r = run_entrypoint(&env, CancellationToken::new()).await;
        assert_eq!(r.outcome, AgentOutcome::WorkerUnavailable, "{r:?}");
        assert!(r.message.contains("dockerd did not become ready"), "{r:?}");
        // Docker ready: start-up goes on to the job (which lacks its inputs here).
        env.set("DOCKER_BIN", "true");
        let r = run_entrypoint(&env, CancellationToken::new()).await;
        assert_eq!(r.outcome, AgentOutcome::Misconfigured, "{r:?}");
        assert_eq!(r.message, "TICKET_ID is required");
    }

    /// A worker that ignores SIGTERM (as `opencode serve` sometimes does) is killed, with what
    /// it runs in its process group, after [`OPENCODE_STOP_GRACE`], not after a long grace.
    #[tokio::test]
    async fn release_kills_an_opencode_that_ignores_sigterm_quickly() {
        let path = std::env::var("PATH").unwrap_or_default();
        let env = Env::from_pairs([("PATH", path.as_str())]);
        let dir = tempfile::tempdir().unwrap();
        let pidfile = dir.path().join("bg");
        let script = format!(
            "trap '' TERM; (trap '' TERM; sleep 60) & echo $! > {}; while :; do sleep 0.1; done",
            pidfile.display()
        );
        let (child, log) = spawn(&env, "sh", &["-c", &script], None, &[], "stop-test").unwrap();
        let leader = i32::try_from(child.id().unwrap()).unwrap();
        let mut children = Children::default();
        children.push("opencode", child, OPENCODE_STOP_GRACE);
        children.push_log(log);
        let mut background = None;
        for _ in 0..200 {
            background = std::fs::read_to_string(&pidfile)
                .ok()
                .and_then(|s| s.trim().parse::<i32>().ok());
            if background.is_some() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let background = background.expect("the background process started");
        let mut launcher = OpenCodeLauncher {
            env: &env,
            children: &mut children,
            proxy: None,
        };
        let started = std::time::Instant::now();
        launcher.release().await;
        let took = started.elapsed();
        assert!(
            took >= OPENCODE_STOP_GRACE && took < OPENCODE_STOP_GRACE + Duration::from_secs(1),
            "stopped after {took:?}"
        );
        assert!(children.pids().is_empty());
        for pid in [leader, background] {
            let gone = (0..100).any(|_| {
                let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
                let dead = stat
                    .rsplit_once(')')
                    .is_none_or(|(_, r)| r.trim_start().starts_with('Z'));
                if !dead {
                    std::thread::sleep(Duration::from_millis(10));
                }
                dead
            });
            assert!(gone, "process {pid} still runs");
        }
        children.stop_all().await;
    }

    #[test]
    fn job_kinds() {
        assert_eq!(job_kind(&Env::default()).unwrap(), JobKind::Ticket);
        assert_eq!(
            job_kind(&Env::from_pairs([("JOB_KIND", "Review")])).unwrap(),
            JobKind::Review
        );
        assert!(job_kind(&Env::from_pairs([("JOB_KIND", "x")])).is_err());
    }
}
