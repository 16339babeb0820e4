//! What runs in the agent "containers": the fake Job controller calls [`AgentRunner::run`] for each
//! pod, with the pod's resolved environment (the Secret with the claim's settings and tokens
//! included, through `envFrom`).
//!
//! [`JobCommand::Agent`] runs the real `terarchitect-agent` executable (the container's command,
//! `terarchitect-agent entrypoint`) as a local child process with that environment plus a few
//! test-only variables (a local workspace instead of `/workspace`, the termination-message file,
//! the fake OpenCode and GitHub URLs, short polling intervals), SIGTERMs it (then SIGKILLs its
//! process group) when the pod is deleted or its deadline passes, and returns its exit code.
//!
//! [`JobCommand::Fast`] does not run the agent: it completes the ticket through the worker API
//! directly (as a successful agent's last call does) and exits 0. The soak test uses it to push
//! thousands of jobs through the api-server, the operator and the fake cluster.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use secrecy::SecretString;
use terarchitect_fake_apiserver::{ContainerRun, JobOutcome};
use terarchitect_worker_api::{CompleteTicketRequest, WorkerApiClient};
use tokio::process::Command;

use crate::process::{die_with_parent, signal_group};

/// What a pod runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobCommand {
    /// The real agent executable.
    Agent,
    /// Complete the ticket through the worker API and exit 0 (no agent).
    Fast,
}

/// One finished container.
#[derive(Debug, Clone)]
pub struct Exit {
    /// `TICKET_ID` of the pod.
    pub ticket: String,
    /// `JOB_ID` of the pod (the queue job id).
    pub job: String,
    /// The pod name.
    pub pod: String,
    /// Exit code (137/143 when killed).
    pub code: i32,
    /// Whether the pod was cancelled (deleted or past its deadline) while the command ran.
    pub cancelled: bool,
    /// How long it ran.
    pub elapsed: Duration,
}

/// Called after a container's process ended and before its exit code is handed to the Job
/// controller (the pod is still running while it runs): tests use it to do something "while the
/// Job finishes".
pub type ExitHook = Arc<dyn Fn(Exit) -> BoxFuture<'static, ()> + Send + Sync>;

/// Counters of the containers.
#[derive(Debug, Default)]
pub struct RunStats {
    /// Containers started.
    pub started: AtomicUsize,
    /// Containers running now.
    pub active: AtomicUsize,
    /// Most containers running at once.
    pub peak: AtomicUsize,
    /// Finished containers.
    pub exits: Mutex<Vec<Exit>>,
    /// Resolved environments of the containers (agent mode only).
    pub envs: Mutex<Vec<BTreeMap<String, String>>>,
}

impl RunStats {
    /// Finished containers of `ticket`.
    pub fn exits_of(&self, ticket: &str) -> Vec<Exit> {
        self.exits
            .lock()
            .unwrap()
            .iter()
            .filter(|e| e.ticket == ticket)
            .cloned()
            .collect()
    }

    /// Environments of `ticket`'s containers.
    pub fn envs_of(&self, ticket: &str) -> Vec<BTreeMap<String, String>> {
        self.envs
            .lock()
            .unwrap()
            .iter()
            .filter(|e| e.get("TICKET_ID").map(String::as_str) == Some(ticket))
            .cloned()
            .collect()
    }
}

struct Active<'a>(&'a RunStats);

impl<'a> Active<'a> {
    fn enter(stats: &'a RunStats) -> Self {
        stats.started.fetch_add(1, Ordering::SeqCst);
        let now = stats.active.fetch_add(1, Ordering::SeqCst) + 1;
        stats.peak.fetch_max(now, Ordering::SeqCst);
        Self(stats)
    }
}

impl Drop for Active<'_> {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Runs the pods' commands.
pub struct AgentRunner {
    mode: JobCommand,
    bin: PathBuf,
    root: PathBuf,
    extra_env: Vec<(String, String)>,
    /// Counters and records.
    pub stats: RunStats,
    hook: Mutex<Option<ExitHook>>,
}

impl std::fmt::Debug for AgentRunner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentRunner")
            .field("mode", &self.mode)
            .field("root", &self.root)
            .finish_non_exhaustive()
    }
}

/// The executable the operator puts in the agent container's command.
pub const AGENT_EXECUTABLE: &str = "terarchitect-agent";

impl AgentRunner {
    /// A runner keeping workspaces and logs under `root`; `extra_env` is added to every agent's
    /// environment (test-only settings).
    pub fn new(
        mode: JobCommand,
        bin: PathBuf,
        root: PathBuf,
        extra_env: Vec<(String, String)>,
    ) -> Self {
        Self {
            mode,
            bin,
            root,
            extra_env,
            stats: RunStats::default(),
            hook: Mutex::new(None),
        }
    }

    /// The Job controller outcome that runs every pod through this runner.
    pub fn outcome(self: &Arc<Self>) -> JobOutcome {
        let me = self.clone();
        JobOutcome::command(move |run| {
            let me = me.clone();
            async move { me.run(run).await }
        })
    }

    /// Sets (or clears) the exit hook.
    pub fn set_exit_hook(&self, hook: Option<ExitHook>) {
        *self.hook.lock().unwrap() = hook;
    }

    /// Where the agent of `pod` logs.
    pub fn log_path(&self, pod: &str) -> PathBuf {
        self.root.join("logs").join(format!("{pod}.log"))
    }

    /// Every agent log file.
    pub fn logs(&self) -> Vec<PathBuf> {
        std::fs::read_dir(self.root.join("logs"))
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path())
            .collect()
    }

    /// Runs one pod's command; returns its exit code.
    pub async fn run(&self, run: ContainerRun) -> i32 {
        let _active = Active::enter(&self.stats);
        let started = Instant::now();
        let env_of = |k: &str| run.env.get(k).cloned().unwrap_or_default();
        let (ticket, job) = (env_of("TICKET_ID"), env_of("JOB_ID"));
        let (code, cancelled) = match self.mode {
            JobCommand::Agent => self.run_agent(&run).await,
            JobCommand::Fast => (fast_complete(&run).await, false),
        };
        let exit = Exit {
            ticket,
            job,
            pod: run.pod_name.clone(),
            code,
            cancelled,
            elapsed: started.elapsed(),
        };
        let hook = self.hook.lock().unwrap().clone();
        if let Some(hook) = hook {
            hook(exit.clone()).await;
        }
        self.stats.exits.lock().unwrap().push(exit);
        code
    }

    async fn run_agent(&self, run: &ContainerRun) -> (i32, bool) {
        self.stats.envs.lock().unwrap().push(run.env.clone());
        let term_log = run.termination_message_path.clone();
        let write_term = |line: &str| {
            let _ = std::fs::write(&term_log, format!("{line}\n"));
        };
        if run.command.first().map(String::as_str) != Some(AGENT_EXECUTABLE) {
            write_term(&format!(
                "Misconfigured: unexpected container command {:?}",
                run.command
            ));
            return (127, false);
        }
        let ticket = run.env.get("TICKET_ID").cloned().unwrap_or_default();
        let workspace = self.root.join("ws").join(&ticket).join(&run.pod_name);
        let home = self.root.join("home");
        for dir in [&workspace, &home, &self.root.join("logs")] {
            std::fs::create_dir_all(dir).expect("creating agent directories");
        }
        let log = std::fs::File::create(self.log_path(&run.pod_name)).expect("agent log");
        let mut cmd = Command::new(&self.bin);
        cmd.args(&run.command[1..])
            .args(&run.args)
            .env_clear()
            .envs(&run.env)
            // The pod's /workspace and /dev/termination-log, locally.
            .env("AGENT_WORKSPACE", &workspace)
            .env(
                "TERARCHITECT_TERMINATION_LOG",
                &run.termination_message_path,
            )
            .env(
                "AGENT_TRACE_DIR",
                self.root.join("trace").join(&run.pod_name),
            )
            .env("HOME", &home)
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .envs(self.extra_env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .current_dir(&workspace)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("cloning a file handle"))
            .stderr(log)
            .process_group(0)
            .kill_on_drop(true);
        die_with_parent(cmd.as_std_mut());
        let mut child = match cmd.spawn() {
            Ok(c) => c,
            Err(e) => {
                write_term(&format!("Failed: cannot start the agent: {e}"));
                return (128, false);
            }
        };
        let pid = child.id().expect("a running child has a pid");
        tokio::select! {
            status = child.wait() => {
                let code = status.ok().and_then(|s| s.code()).unwrap_or(137);
                // Whatever the agent left behind in its process group (git) goes with it.
                signal_group(pid, libc::SIGKILL);
                (code, false)
            }
            _ = run.cancel.cancelled() => {
                // As the kubelet: SIGTERM, then SIGKILL after a grace period.
                signal_group(pid, libc::SIGTERM);
                let code = match tokio::time::timeout(Duration::from_secs(3), child.wait()).await {
                    Ok(status) => status.ok().and_then(|s| s.code()).unwrap_or(143),
                    Err(_) => {
                        signal_group(pid, libc::SIGKILL);
                        let _ = child.wait().await;
                        137
                    }
                };
                signal_group(pid, libc::SIGKILL);
                (code, true)
            }
        }
    }
}

/// Completes the ticket through the worker API, as a successful agent's last call, with a
/// made-up pull request; writes the termination line; 0 on success, 11 (ApiUnavailable) if not.
async fn fast_complete(run: &ContainerRun) -> i32 {
    let env = |k: &str| run.env.get(k).cloned().unwrap_or_default();
    let write_term = |line: &str| {
        let _ = std::fs::write(&run.termination_message_path, format!("{line}\n"));
    };
    let (Ok(project), Ok(ticket)) = (env("PROJECT_ID").parse(), env("TICKET_ID").parse()) else {
        write_term("Misconfigured: PROJECT_ID and TICKET_ID are required");
        return 2;
    };
    let token = Some(env("TERARCHITECT_WORKER_API_KEY"))
        .filter(|t| !t.is_empty())
        .map(SecretString::from);
    let client = match WorkerApiClient::new(&env("TERARCHITECT_API_URL"), token) {
        Ok(c) => c.with_timeout(Duration::from_secs(30)),
        Err(e) => {
            write_term(&format!("Misconfigured: {e}"));
            return 2;
        }
    };
    let number = 1000 + (uuid::Uuid::as_u128(&ticket) % 1_000_000) as i64;
    let req = CompleteTicketRequest {
        pr_url: Some(format!("https://github.example/acme/shop/pull/{number}")),
        pr_number: Some(number),
        summary: Some("fast fake agent".into()),
        review_comment_body: None,
    };
    for attempt in 0..5u64 {
        match client.complete_ticket(project, ticket, &req).await {
            Ok(_) => {
                write_term(&format!("Succeeded: pull request #{number} opened"));
                return 0;
            }
            Err(e) if attempt < 4 && e.is_retryable() => {
                tokio::time::sleep(Duration::from_millis(200 * (attempt + 1))).await;
            }
            Err(e) => {
                write_term(&format!(
                    "ApiUnavailable: could not complete the ticket: {e}"
                ));
                return 11;
            }
        }
    }
    11
}

/// The workspace directories the agents of `ticket` used.
pub fn workspaces(root: &Path, ticket: &str) -> Vec<PathBuf> {
    std::fs::read_dir(root.join("ws").join(ticket))
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .collect()
}
