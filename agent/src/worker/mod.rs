//! The worker: the coding agent that carries out the Director's instructions, either an
//! `opencode serve` over HTTP ([`opencode`]) or the Claude Code CLI ([`claude`]).

pub mod claude;
pub mod opencode;
pub mod proxy;

use std::path::{Path, PathBuf};
use std::time::Duration;

use terarchitect_worker_api::AgentOutcome;

use crate::config::{Settings, WorkerMode};
use crate::error::Failure;

/// Errors of a worker call.
#[derive(Debug, Clone, thiserror::Error)]
pub enum WorkerError {
    /// The worker could not be reached or failed.
    #[error("{0}")]
    Unavailable(String),
    /// One call took longer than `WORKER_TIMEOUT_SEC`.
    #[error("the worker call exceeded WORKER_TIMEOUT_SEC ({0:?})")]
    Timeout(Duration),
    /// The worker answered, but with an error (e.g. its model call failed), or failed in a way
    /// with more to tell (`detail`: the tail of its log).
    #[error("{message}")]
    Failed {
        /// What happened (one line; may hold the provider's message).
        message: String,
        /// More detail for the final log entry.
        detail: Option<String>,
    },
}

impl From<WorkerError> for Failure {
    fn from(e: WorkerError) -> Self {
        match e {
            WorkerError::Unavailable(m) => Failure::new(AgentOutcome::WorkerUnavailable, m),
            WorkerError::Timeout(_) => Failure::new(AgentOutcome::TimeLimit, e.to_string()),
            WorkerError::Failed { message, detail } => {
                Failure::new(AgentOutcome::WorkerUnavailable, message).with_detail(detail)
            }
        }
    }
}

/// What the run's set-up prepared for the worker.
#[derive(Debug, Clone, Default)]
pub struct WorkerEndpoint {
    /// The OpenCode server to use instead of the configured one (set by the entrypoint).
    pub url: Option<String>,
    /// The log file of the `opencode serve` the entrypoint started.
    pub log: Option<PathBuf>,
    /// The environment snapshot worker processes (Claude Code) are built from (allowlisted).
    pub env: crate::config::Env,
}

/// The worker of a run.
#[derive(Debug)]
pub enum Worker {
    /// OpenCode over HTTP.
    OpenCode(opencode::OpenCodeWorker),
    /// Claude Code CLI.
    Claude(claude::ClaudeWorker),
}

impl Worker {
    /// The worker for `settings`, working in `project_dir` for Director session `session_id`.
    /// `endpoint` is what the entrypoint prepared (the OpenCode server it started, its log; the
    /// environment worker processes get).
    pub fn new(
        settings: &Settings,
        project_dir: &Path,
        session_id: &str,
        endpoint: &WorkerEndpoint,
    ) -> Self {
        match settings.worker_mode {
            WorkerMode::OpenCode => Self::OpenCode(
                opencode::OpenCodeWorker::new(
                    settings,
                    project_dir,
                    session_id,
                    endpoint.url.as_deref(),
                )
                .with_log(endpoint.log.clone()),
            ),
            WorkerMode::ClaudeCode => Self::Claude(claude::ClaudeWorker::new(
                settings,
                project_dir,
                endpoint.env.clone(),
            )),
        }
    }

    /// Checks that the worker can be used (OpenCode: its health endpoint).
    pub async fn check(&self) -> Result<(), WorkerError> {
        match self {
            Self::OpenCode(w) => w.health().await,
            Self::Claude(w) => w.check().await,
        }
    }

    /// Sends one prompt and returns the worker's answer. `resume: false` starts a new worker
    /// session.
    pub async fn send(&mut self, prompt: &str, resume: bool) -> Result<String, WorkerError> {
        match self {
            Self::OpenCode(w) => w.send(prompt, resume).await,
            Self::Claude(w) => w.send(prompt, resume).await,
        }
    }

    /// Requests of the worker that the agent rejected since the last call (OpenCode permission
    /// requests and questions that would have blocked a turn).
    pub fn take_rejected(&mut self) -> Vec<String> {
        match self {
            Self::OpenCode(w) => w.take_rejected(),
            Self::Claude(_) => Vec::new(),
        }
    }

    /// Kills what the worker left running (Claude Code: the process groups of its calls; the
    /// `opencode serve` the entrypoint started is stopped by the entrypoint).
    pub async fn release(&mut self) {
        if let Self::Claude(w) = self {
            w.kill_leftovers();
        }
    }

    /// Stops the worker's current work after an interrupted call (OpenCode: aborts the
    /// session; Claude: the process was already killed when its call was dropped).
    pub async fn abort(&mut self) {
        if let Self::OpenCode(w) = self {
            w.abort().await;
        }
    }
}
